// Everything NATS in one gateway process (reference-behaviour §17): the failure publisher on its own
// `ssh-proxy` connection, and with `nats.enabled` the shared `nats-client` connection with the
// locked-users watcher and the recording overrides. Every process (forked children included) calls
// startNats once; nothing here waits for NATS.
import type { Config } from '../config/schema.js';
import { getLogger, type Logger } from '../ops/log.js';
import { FAILURES_CONNECTION_NAME, NatsLink, SHARED_CONNECTION_NAME } from './nats.js';
import { FailurePublisher } from './nats-failures.js';
import { LockedUsersWatcher } from './nats-locks.js';
import { NatsRecordingOverrides } from './nats-overrides.js';

export interface NatsConfig {
  nats: Config['nats'];
  server: { publishSshFailures: Config['server']['publishSshFailures'] };
}

export interface StartNatsOptions {
  /** What a lock does (the gateway: closeLockedUserConnections over its ConnectionRegistry). */
  onLocked: (username: string) => void;
  log?: Logger;
  proxyId?: string;
  /** Test hooks; production uses the reference's fixed values. */
  lockRetryMs?: number;
  lockInactiveThresholdMs?: number;
  overrideTimeoutMs?: number;
}

export interface NatsServices {
  /** Always present; with publishing disabled it filters every event. */
  publisher: FailurePublisher;
  /** The shared client, when `nats.enabled`. */
  client: NatsLink | undefined;
  watcher: LockedUsersWatcher | undefined;
  /** Give to the recording decision; undefined when `nats.enabled` is false. */
  overrides: NatsRecordingOverrides | undefined;
  /** Stops the watcher (deleting its consumer) and drains both connections; bounded. */
  stop(): Promise<void>;
}

export function startNats(cfg: NatsConfig, opts: StartNatsOptions): NatsServices {
  const log = opts.log ?? getLogger('nats');
  const pub = cfg.server.publishSshFailures;
  // The reference always opens the `ssh-proxy` connection and then drops every event when publishing
  // is disabled; we do not connect at all then (the events are dropped the same way).
  let failuresLink: NatsLink | undefined;
  if (pub.enabled) {
    failuresLink = new NatsLink({
      name: FAILURES_CONNECTION_NAME,
      // The reference's publisher reconnects forever every 2 s whatever nats.* says.
      settings: { ...cfg.nats, maxReconnects: -1, reconnectWait: 2 },
      log,
    }).start();
    log.info(
      { subject: pub.subject, publicIPOnly: pub.publicIPOnly },
      'NATS SSH failures publishing is enabled',
    );
  } else {
    log.info('NATS SSH failures publishing is disabled');
  }
  const publisher = new FailurePublisher({ settings: pub, link: failuresLink, log, proxyId: opts.proxyId });

  let client: NatsLink | undefined;
  let watcher: LockedUsersWatcher | undefined;
  let overrides: NatsRecordingOverrides | undefined;
  if (cfg.nats.enabled) {
    client = new NatsLink({ name: SHARED_CONNECTION_NAME, settings: cfg.nats, log }).start();
    watcher = new LockedUsersWatcher({
      link: client,
      onLocked: opts.onLocked,
      log,
      proxyId: opts.proxyId,
      retryMs: opts.lockRetryMs,
      inactiveThresholdMs: opts.lockInactiveThresholdMs,
    }).start();
    overrides = new NatsRecordingOverrides({ link: client, log, timeoutMs: opts.overrideTimeoutMs }).start();
  } else {
    log.warn(
      'NATS client is not configured, userstr cache, user lock watching and recording overrides disabled',
    );
  }

  return {
    publisher,
    client,
    watcher,
    overrides,
    async stop() {
      overrides?.stop();
      await watcher?.stop();
      await Promise.all([client?.close(), failuresLink?.close()]);
    },
  };
}
