// Every backend collaborator of the gateway, built from the configuration: identity, provisioner,
// authz with the user-token cache, the session service (tracking and recordings), NATS (failure
// events, user locks, recording overrides). The production entry, forked children and the local
// stack all assemble the gateway through this one function, so tests exercise the production wiring.
import type { Config } from '../config/load.js';
import { getLogger, type Logger } from '../ops/log.js';
import type { GatewayMetrics } from '../ops/metrics.js';
import type { Probe } from '../ops/health.js';
import { createAuthorizer } from '../backends/authz.js';
import { createIdentityClient, identityDeadlineMs } from '../backends/identity.js';
import { createProvisionerClient } from '../backends/provisioner.js';
import { sessionClientFromConfig } from '../backends/session.js';
import { createUserTokenCache } from '../backends/user-token.js';
import { startNats, type NatsServices } from '../backends/nats-services.js';
import { closeLockedUserConnections } from '../backends/nats-locks.js';
import { recordersFromConfig, recordersObserver, recordingConfigWarning } from './recorder.js';
import { sessionTrackerFromConfig } from './session-tracking.js';
import type { ConnectionRegistry, ConnectionObserver } from './registry.js';
import type { GatewayBackends } from './server.js';
import type { TestHooks } from './dispatcher.js';

export interface GatewayServices {
  backends: GatewayBackends;
  /** Readiness probes of the essential backends (identity, provisioner). */
  probes: Record<string, Probe>;
  /** Connects what needs the live gateway (the lock watcher closes connections of its registry). */
  attach(registry: ConnectionRegistry): void;
  /** Closes every client; call after the gateway stopped (EndSession calls are done by then). */
  close(): Promise<void>;
}

export function createServices(
  config: Config,
  opts: { log?: Logger; metrics?: GatewayMetrics; hooks?: TestHooks } = {},
): GatewayServices {
  const log = opts.log ?? getLogger('ssh-server');
  if (!config.identity.address) log.warn('identity.address is not set: every login will be denied');
  if (!config.provisioner.address) log.warn('provisioner.address is not set: no workspace can be reached');
  // Clients connect lazily: an unreachable service is reported at first use, never by a crash. An
  // unset address gets a target that can never connect, so every call fails (closed) as warned above.
  const identity = createIdentityClient(
    orUnreachable(config.identity),
    identityDeadlineMs(config.server.SSHHandshakeTimeout),
  );
  const provisioner = createProvisionerClient(orUnreachable(config.provisioner));
  const authorizer = createAuthorizer(config.authz);
  const tokens = authorizer.configured ? createUserTokenCache(identity) : undefined;
  const sessionClient = sessionClientFromConfig(config);
  const recorders = recordersFromConfig(config, sessionClient, getLogger('recorder'), opts.metrics);
  const warning = recordingConfigWarning(config);
  if (warning) log.warn(warning);
  const observers: ConnectionObserver[] = [recordersObserver(recorders)];
  const tracker = sessionTrackerFromConfig(config, sessionClient, getLogger('session'));
  if (tracker) observers.push(tracker);

  let registry: ConnectionRegistry | undefined;
  const natsLog = getLogger('nats');
  const nats: NatsServices = startNats(config, {
    log: natsLog,
    onLocked: (username) => {
      if (registry) closeLockedUserConnections(registry, username, natsLog);
    },
  });

  const backends: GatewayBackends = {
    identity,
    provisioner,
    authorizer,
    userToken: tokens
      ? (u) =>
          withAbortDeadline(USER_TOKEN_DEADLINE_MS, (signal) =>
            tokens.get(u.user.username || u.userstr.username, u.user.source, signal),
          )
      : undefined,
    userTokenFor: tokens ? (username, source, signal) => tokens.get(username, source, signal) : undefined,
    recorders,
    overrides: nats.overrides,
    observers,
    onLoginFailed: (f) => nats.publisher.publish(f),
    metrics: opts.metrics,
    hooks: opts.hooks,
  };
  return {
    backends,
    probes: {
      identity: () => identity.ready(1000),
      provisioner: () => provisioner.ready(1000),
    },
    attach(r) {
      registry = r;
    },
    async close() {
      await nats.stop();
      identity.close();
      provisioner.close();
      authorizer.close();
      sessionClient?.close();
    },
  };
}

const USER_TOKEN_DEADLINE_MS = 15_000;

/**
 * Runs `f` with a signal aborted after `ms`, and clears the timer as soon as `f` settles. Not
 * AbortSignal.timeout: its timer stays pending for the whole `ms` after the call is long done, one per
 * authorization, so a busy gateway carried hundreds of them (issue 15).
 */
export function withAbortDeadline<T>(ms: number, f: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`deadline of ${ms} ms passed`)), ms);
  timer.unref();
  try {
    return f(ac.signal).finally(() => clearTimeout(timer));
  } catch (e) {
    clearTimeout(timer);
    throw e;
  }
}

/** A client config whose address, when unset, is a unix socket path that cannot exist. */
function orUnreachable<T extends { address: string }>(c: T): T {
  return c.address ? c : { ...c, address: 'unix:/dev/null/ssh-proxy-address-not-configured' };
}
