// The SSH gateway: the accept path (pre-authentication limits, PROXY header, login grace time), the
// ssh2 server and authentication, and one Dispatcher per authenticated connection. It serves sockets
// from its own listener (in-process mode) or handed to it (a forked child's fd 3).
import { createRequire } from 'node:module';
import type net from 'node:net';
import ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import { getLogger, errText, type Logger } from '../ops/log.js';
import { withConnectionContext } from '../ops/context.js';
import type { GatewayMetrics } from '../ops/metrics.js';
import { sshIdent } from '../ops/version.js';
import { newConnectionId } from '../common/ids.js';
import type { Config } from '../config/load.js';
import type { IdentityBackend } from '../backends/identity.js';
import type { ProvisionerBackend } from '../backends/provisioner.js';
import { serverAlgorithms } from './algorithms.js';
import { Authenticator, type AuthenticatedUser, type EvaluateUserAuth } from './auth.js';
import { allowAll, checkAction, type Authorizer } from './authorize.js';
import { GatewayConnection } from './connection.js';
import { Dispatcher, type ChannelSettings, type TestHooks } from './dispatcher.js';
import { loadHostKeys } from './hostkeys.js';
import { listen, type Listener } from './listener.js';
import { armLoginGrace, type LoginGrace } from './login-grace.js';
import {
  PreauthLimiter,
  preauthOptionsFromConfig,
  refusalMessage,
  type GateTicket,
  type PreauthGate,
  type PreauthOptions,
} from './preauth.js';
import { readProxyHeader, TrustedSources } from './proxy-protocol.js';
import { refuseSsh } from './refuse.js';
import { ConnectionRegistry, type ConnectionObserver } from './registry.js';
import {
  DisconnectReason,
  disconnectWithMessage,
  fixServerSigAlgs,
  installUnknownChannelTypeMessage,
} from './ssh2-shims/index.js';
import type { Recorders, RecordingOverrides } from './tap.js';
import { WorkspaceResolver, type WorkspaceSettings } from './workspace.js';

const { Server } = ssh2;
const ssh2Require = createRequire(import.meta.url);
// ssh2 treats 0 as "default"; this is how "off" is spelled.
const KEEPALIVE_OFF_MS = 2 ** 31 - 1;
/** How long stop() waits for clients to take their disconnect before cutting the sockets. */
const STOP_GRACE_MS = 2000;
/** What a client still connected when a drain ends is told. */
export const RESTART_MESSAGE = 'ssh-proxy is restarting; reconnect';
export { PENALTY_MESSAGE } from './preauth.js';

/** What the accept path learned about one socket, for the ssh2 connection callback. */
interface AcceptedSocket {
  id: string;
  grace: LoginGrace;
  ticket?: GateTicket;
  /** Where the client connected to (the PROXY header's destination when there was one). */
  server?: { ip: string; port: number };
  /** Frees the pre-authentication slot (authenticated or closed); idempotent. */
  release(): void;
  /** ssh2 reported the connection (its version line arrived). */
  claimed: boolean;
}

export interface GatewayOptions {
  host: string;
  port: number;
  hostKeys: Buffer[];
  /** Key type of each host key (for the start-up log line), e.g. `ssh-ed25519`. */
  hostKeyTypes?: string[];
  handshakeTimeoutMs: number;
  maxAuthTries: number;
  /** Ours (server.onboardingTimeout): longest keyboard-interactive onboarding wait. */
  onboardingTimeoutMs?: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  ciphers: string[];
  channels: ChannelSettings;
  workspace: WorkspaceSettings;
  /** Deadline of one authz evaluation. */
  authzTimeoutMs: number;
  /** PROXY protocol (v1/v2) in front of SSH; off when undefined. */
  proxy?: { timeoutMs: number; trustedCidrs: string[] };
  /** Pre-authentication caps and backoff; none when undefined. */
  preauth?: PreauthOptions;
}

/** A failed login, for the failure publisher (NATS, reference §17.2). */
export interface FailedLogin {
  clientIp: string;
  clientPort: number;
  username: string;
  failureInfo: string[];
  handshakeError: string;
}

export interface GatewayBackends {
  identity: IdentityBackend;
  provisioner: ProvisionerBackend;
  authorizer?: Authorizer;
  /** The user JWT for authz and recordings (§8.7); default: none needed. */
  userToken?: (user: AuthenticatedUser) => Promise<string>;
  /** Token for `user:auth` (before a user is authenticated): username and identity source. */
  userTokenFor?: (username: string, source: string, signal: AbortSignal) => Promise<string>;
  recorders?: Recorders;
  overrides?: RecordingOverrides;
  /** Connection lifecycle observers (session tracking, recordings, …). */
  observers?: ConnectionObserver[];
  /** Where failed logins go (NATS failure events). */
  onLoginFailed?: (f: FailedLogin) => void;
  metrics?: GatewayMetrics;
  /** Where pre-authentication decisions are made instead of a limiter of our own (a forked child: the parent). */
  preauth?: PreauthGate;
  /** Test-only fault injection. */
  hooks?: TestHooks;
}

export interface RunningGateway {
  /** Where the listener is (undefined in a forked child, which serves one handed-over socket). */
  host: string;
  port: number;
  registry: ConnectionRegistry;
  /** Serves one accepted TCP socket; resolves when it closed. */
  serve(socket: net.Socket, connectionId?: string): Promise<void>;
  /** Live SSH connections (authenticated or not). */
  connections(): number;
  readonly listening: boolean;
  readonly draining: boolean;
  /** Stops accepting (the listener closes; established connections go on). */
  stopAccepting(): Promise<void>;
  /**
   * Graceful drain: stop accepting, let connections end on their own for up to `timeoutMs` (new
   * channels on them are still served), then disconnect the rest with `message`.
   */
  drain(timeoutMs: number, message?: string): Promise<void>;
  /**
   * A forked child's drain: no new channels; each connection is ended (with `message`) once its
   * channels have, and whatever remains when `timeoutMs` passes.
   */
  finishChannels(timeoutMs: number, message?: string): Promise<void>;
  stop(): Promise<void>;
}

export { sshIdent };

export async function createGateway(
  opts: GatewayOptions,
  backends: GatewayBackends,
  log: Logger = getLogger('ssh-server'),
  mode: { listen: boolean } = { listen: true },
): Promise<RunningGateway> {
  fixServerSigAlgs();
  if (!nativeCryptoAvailable())
    log.warn(
      'ssh2 native crypto binding is not available: throughput will be about half (run npm rebuild ssh2)',
    );

  const metrics = backends.metrics;
  const registry = new ConnectionRegistry();
  for (const o of backends.observers ?? []) registry.observe(o);
  const resolver = new WorkspaceResolver(backends.provisioner, opts.workspace, log);
  const authorizer = backends.authorizer ?? allowAll;
  const deps = {
    settings: opts.channels,
    authorizer,
    authzTimeoutMs: opts.authzTimeoutMs,
    userToken: backends.userToken ?? (() => Promise.resolve('')),
    resolver,
    registry,
    recorders: backends.recorders,
    overrides: backends.overrides,
    metrics,
    acceptingChannels: () => acceptingChannels,
    hooks: backends.hooks,
  };
  const limiter: PreauthGate | undefined =
    backends.preauth ?? (opts.preauth ? new PreauthLimiter(opts.preauth) : undefined);
  const trusted = opts.proxy ? new TrustedSources(opts.proxy.trustedCidrs) : undefined;
  const live = new Set<Connection>();
  const closing = new Set<Promise<void>>();
  /** Per accepted socket: what the accept path learned, for the ssh2 connection callback. */
  const sockets = new WeakMap<net.Socket, AcceptedSocket>();
  let draining = false;
  let acceptingChannels = true;

  /** `user:auth` through the one check (token first, a deadline, every failure a deny: fail closed). */
  const evaluateUserAuth = (log: Logger): EvaluateUserAuth | undefined =>
    authorizer.configured
      ? (req, signal) =>
          checkAction(authorizer, req, {
            timeoutMs: opts.authzTimeoutMs,
            userToken: () =>
              backends.userTokenFor
                ? backends.userTokenFor(req.resource.id, req.resource.attributes.idp ?? '', signal)
                : Promise.resolve(''),
            log,
            signal,
            observe: metrics ? (a, outcome, seconds) => metrics.authz(a, outcome, seconds) : undefined,
          })
      : undefined;

  const server = new Server(
    {
      hostKeys: opts.hostKeys,
      algorithms: serverAlgorithms(opts.ciphers),
      ident: sshIdent(),
      keepaliveInterval: opts.keepaliveIntervalMs > 0 ? opts.keepaliveIntervalMs : KEEPALIVE_OFF_MS,
      keepaliveCountMax: opts.keepaliveCountMax,
    },
    (client, info) => {
      const sock = (client as unknown as { _sock?: net.Socket })._sock;
      const accepted = sock ? sockets.get(sock) : undefined;
      const id = accepted?.id ?? newConnectionId();
      withConnectionContext(id, client, () => onClient(client, info, id, accepted));
    },
  );

  function onClient(
    client: Connection,
    info: ssh2.ClientInfo,
    id: string,
    accepted: AcceptedSocket | undefined,
  ): void {
    if (accepted) accepted.claimed = true;
    const peer = `${info.ip}:${info.port}`;
    const clog = log.child({ conn: id, client: peer });
    live.add(client);
    // The whole identification line (e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6`), as Go's
    // ConnMetadata.ClientVersion(): session tracking reports it as the session's `client`.
    const version = info.header.identRaw;
    clog.info({ clientVersion: version }, 'connection accepted');
    let lastError: string | undefined;
    client.on('error', (e) => {
      lastError = errText(e);
      clog.info({ err: lastError }, 'connection error');
    });
    installUnknownChannelTypeMessage(client);
    const ticket = accepted?.ticket;
    /** Why the gateway itself ended authentication (the failure event's handshake error). */
    let endedBecause: string | undefined;

    const auth = new Authenticator(
      backends.identity,
      { maxAuthTries: opts.maxAuthTries, onboardingTimeoutMs: opts.onboardingTimeoutMs },
      clog,
      {
        // Like sshd's MaxAuthTries: the last failure is answered with a disconnect that says why.
        disconnect: () => {
          endedBecause = 'too many authentication failures';
          disconnectWithMessage(client, DisconnectReason.PROTOCOL_ERROR, 'Too many authentication failures');
        },
        // Identity failed or hung past its deadline (within the grace): say so instead of `Permission denied`.
        unavailable: (message) => {
          endedBecause = 'identity service unavailable';
          disconnectWithMessage(client, DisconnectReason.BY_APPLICATION, message);
        },
        onPromptPending: (pending) => (pending ? accepted?.grace.pause() : accepted?.grace.resume()),
        evaluate: evaluateUserAuth(clog),
        gate: ticket,
        onAttempt: (method, result) => metrics?.auth(method, result),
      },
    );
    client.on('authentication', (ctx) => auth.handle(ctx));
    // A user lock also closes a connection still authenticating as that user (reference §17.3).
    const doneAuthenticating = registry.authenticating({
      id,
      get username() {
        return auth.attemptedUsername;
      },
      end(message) {
        endedBecause = `connection closed by the gateway: ${message}`;
        disconnectWithMessage(client, DisconnectReason.BY_APPLICATION, message);
      },
    });

    let conn: GatewayConnection | undefined;
    client.once('ready', () => {
      accepted?.grace.cancel();
      doneAuthenticating();
      // Authenticated: no longer counts against the pre-authentication caps.
      accepted?.release();
      const who = auth.result;
      if (!who) {
        clog.error('authenticated without a resolved user; closing');
        return client.end();
      }
      const c = new GatewayConnection(
        id,
        client,
        who,
        { ip: info.ip, port: info.port, version, server: accepted?.server },
        clog.child({ user: who.userstr.username }),
        (message) => disconnectWithMessage(client, DisconnectReason.BY_APPLICATION, message),
        () => registry.workspaceBound(c),
      );
      conn = c;
      c.log.info({ method: who.method, userstr: who.userstr.raw }, 'user authenticated');
      registry.add(c);
      registry.authenticated(c);
      new Dispatcher(c, deps).attach();
    });
    client.once('close', () => {
      live.delete(client);
      doneAuthenticating();
      auth.close();
      if (!conn) {
        const grace = accepted?.grace.expired;
        const handshakeError = grace
          ? 'SSH handshake timed out'
          : (endedBecause ?? lastError ?? 'connection closed during authentication');
        clog.info(
          { failures: auth.failureInfo, err: handshakeError },
          `Failed to perform SSH handshake: ${handshakeError}`,
        );
        backends.onLoginFailed?.({
          clientIp: info.ip,
          clientPort: info.port,
          username: auth.attemptedUsername ?? '',
          failureInfo: auth.failureInfo,
          handshakeError,
        });
        return;
      }
      const c = conn;
      c.close();
      c.log.info(
        { bytesIn: c.counters.in, bytesOut: c.counters.out, ops: c.operations() },
        `Connection closed for user ${c.user.userstr.username} from ${peer}`,
      );
      const done = registry.closed(c);
      closing.add(done);
      void done.finally(() => closing.delete(done));
    });
  }

  /**
   * The accept path of one socket: PROXY header, pre-authentication limits, grace timer, then SSH.
   * Everything that runs for this socket (its events, timers and promises) carries the connection id,
   * so even the process's last-resort handlers can name the connection.
   */
  function serve(socket: net.Socket, connectionId?: string): Promise<void> {
    const id = connectionId ?? newConnectionId();
    return withConnectionContext(id, socket, () => accept(socket, id));
  }

  function accept(socket: net.Socket, id: string): Promise<void> {
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    let socketError: string | undefined;
    socket.on('error', (e) => (socketError ??= errText(e)));
    let slog = log.child({ conn: id, client: `${socket.remoteAddress}:${socket.remotePort}` });
    void (async () => {
      // Where the client connected to (SSH_CONNECTION); the PROXY header's destination replaces it.
      let dest =
        socket.localAddress && socket.localPort
          ? { ip: socket.localAddress, port: socket.localPort }
          : undefined;
      if (opts.proxy && trusted) {
        const o = await readProxyHeader(socket, { timeoutMs: opts.proxy.timeoutMs, trusted, log: slog });
        if (!o.ok) {
          if (o.reason !== 'closed')
            metrics?.preauthRejected(
              o.reason === 'timeout'
                ? 'proxy-timeout'
                : o.reason === 'truncated'
                  ? 'proxy-truncated'
                  : 'proxy-malformed',
            );
          return;
        }
        if (o.kind === 'proxied') {
          if (o.header.addresses)
            dest = { ip: o.header.addresses.destination.ip, port: o.header.addresses.destination.port };
          // From here on the socket reports the client the balancer saw.
          slog = log.child({ conn: id, client: `${o.remote.ip}:${o.remote.port}`, via: o.version });
        }
      }
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      // Admission by the real client's address (behind a balancer every socket comes from the balancer).
      const admission = limiter ? await limiter.admit(socket.remoteAddress ?? '') : undefined;
      if (admission && !admission.ok) {
        slog.warn(
          { reason: admission.reason, why: admission.message },
          'connection refused before key exchange',
        );
        metrics?.preauthRejected(admission.reason);
        refuseSsh(socket, {
          ident: sshIdent(),
          reason: DisconnectReason.TOO_MANY_CONNECTIONS,
          message: refusalMessage(admission.reason),
        });
        return;
      }
      const ticket = admission?.ticket;
      const doneUnauth = metrics?.unauthenticated();
      const doneConn = metrics?.connectionOpened();
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        ticket?.release();
        doneUnauth?.();
      };
      const grace = armLoginGrace(opts.handshakeTimeoutMs, () => {
        slog.warn(`SSH handshake timed out for connection from ${peer}`);
        metrics?.preauthRejected('handshake-timeout');
        socket.destroy();
      });
      const entry: AcceptedSocket = { id, grace, ticket, server: dest, release, claimed: false };
      socket.once('close', () => {
        grace.cancel();
        release();
        doneConn?.();
        // ssh2 never reported this connection: it ended before (or during) the version exchange.
        if (!entry.claimed) handshakeFailedEarly(socket, entry, slog, socketError);
      });
      sockets.set(socket, entry);
      server.injectSocket(socket);
    })().catch((e: unknown) => {
      slog.error({ err: errText(e) }, 'Failed to accept connection');
      socket.destroy();
    });
    return closed;
  }

  /** The reference's handshake-failure line and failure event for a socket ssh2 never reported. */
  function handshakeFailedEarly(
    socket: net.Socket,
    entry: AcceptedSocket,
    slog: Logger,
    socketError: string | undefined,
  ): void {
    const handshakeError = entry.grace.expired
      ? 'SSH handshake timed out'
      : (socketError ??
        (socket.bytesRead > 0
          ? `connection closed during the SSH version exchange (${socket.bytesRead} bytes received)`
          : 'connection closed before the SSH version exchange'));
    slog.info({ err: handshakeError }, `Failed to perform SSH handshake: ${handshakeError}`);
    backends.onLoginFailed?.({
      clientIp: socket.remoteAddress ?? '',
      clientPort: socket.remotePort ?? 0,
      username: '',
      failureInfo: [],
      handshakeError,
    });
  }

  let listener: Listener | undefined;
  if (mode.listen) {
    // The reference's start-up lines (§4.4, §6); a forked child logs them at debug for each connection.
    log.info('Starting SSH proxy server');
  }
  const level = mode.listen ? 'info' : 'debug';
  log[level]({ ident: `SSH-2.0-${sshIdent()}` }, `SSH server version: SSH-2.0-${sshIdent()}`);
  if (opts.hostKeyTypes?.length)
    log[level](
      { hostKeyTypes: opts.hostKeyTypes },
      `SSH server initialized with server key: ${opts.hostKeyTypes.join(', ')}`,
    );
  if (mode.listen) {
    listener = await listen(opts.host, opts.port, (s) => void serve(s), log);
    log.info(
      { address: `${listener.host}:${listener.port}`, ident: `SSH-2.0-${sshIdent()}` },
      'SSH proxy server listening',
    );
  }

  async function stopAccepting(): Promise<void> {
    const l = listener;
    listener = undefined;
    await l?.close();
  }

  async function endAll(message?: string): Promise<void> {
    await Promise.all([...live].map((c) => endConnection(c, message)));
    // EndSession and recording ends of the connections just closed, bounded.
    await Promise.race([Promise.allSettled([...closing]), delay(STOP_GRACE_MS)]);
  }

  const host = listener?.host ?? '';
  const port = listener?.port ?? 0;
  return {
    host,
    port,
    registry,
    serve,
    connections: () => live.size,
    get listening() {
      return listener !== undefined;
    },
    get draining() {
      return draining;
    },
    stopAccepting,
    async drain(timeoutMs, message = RESTART_MESSAGE) {
      draining = true;
      await stopAccepting();
      log.info({ connections: live.size, timeoutMs }, 'draining: waiting for connections to end');
      const deadline = Date.now() + timeoutMs;
      while (live.size > 0 && Date.now() < deadline) await delay(Math.min(200, deadline - Date.now()));
      if (live.size > 0) log.info({ connections: live.size }, 'drain timeout: disconnecting the rest');
      await endAll(message);
    },
    async finishChannels(timeoutMs, message = RESTART_MESSAGE) {
      draining = true;
      acceptingChannels = false;
      await stopAccepting();
      const deadline = Date.now() + timeoutMs;
      while (live.size > 0 && Date.now() < deadline) {
        for (const c of registry.list()) if (c.openChannels() === 0) c.end(message);
        await delay(Math.min(200, deadline - Date.now()));
      }
      await endAll(message);
    },
    async stop() {
      await stopAccepting();
      await endAll();
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)).unref());
}

function endConnection(c: Connection, message?: string): Promise<void> {
  return new Promise((resolve) => {
    c.once('close', () => resolve());
    if (message) disconnectWithMessage(c, DisconnectReason.BY_APPLICATION, message);
    else c.end();
    // A client that never answers the disconnect must not hold up shutdown.
    setTimeout(() => {
      const sock = (c as unknown as { _sock?: { destroy(): void } })._sock;
      sock?.destroy();
      resolve();
    }, STOP_GRACE_MS).unref();
  });
}

function nativeCryptoAvailable(): boolean {
  try {
    return (
      (ssh2Require('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean }).bindingAvailable === true
    );
  } catch {
    return false;
  }
}

/** Gateway settings from the reference config file (with our additions). */
export function gatewayOptionsFromConfig(config: Config): GatewayOptions {
  const s = config.server;
  const hostKeys = loadHostKeys(s.serverKey);
  return {
    host: s.bindAddress,
    port: s.port,
    hostKeys: hostKeys.keys,
    hostKeyTypes: hostKeys.types,
    handshakeTimeoutMs: (s.SSHHandshakeTimeout || 30) * 1000,
    maxAuthTries: s.maxAuthTries,
    onboardingTimeoutMs: s.onboardingTimeout * 1000,
    keepaliveIntervalMs: s.keepaliveInterval * 1000,
    keepaliveCountMax: s.keepaliveCountMax,
    ciphers: s.ciphers,
    authzTimeoutMs: config.authz.timeout * 1000,
    proxy: s.proxyProtocol
      ? { timeoutMs: s.proxyProtocolTimeout * 1000, trustedCidrs: s.proxyProtocolTrustedCIDRs }
      : undefined,
    preauth: preauthOptionsFromConfig(s),
    channels: {
      sftpBinary: s.sftpBinary || '/usr/local/bin/sftp',
      writerOptions: s.writerOptions,
      maxDirectTcpip: s.maxDirectTCPIPConnections || 15,
      maxStreamLocal: s.maxStreamLocalConnections,
      maxSessions: s.maxSessions,
      acceptEnv: s.acceptEnv,
      maxEnvCount: s.maxEnvCount,
      maxEnvBytes: s.maxEnvBytes,
      dialTimeoutMs: config.k8shelld.dialTimeout * 1000,
      logCommands: config.log.commands,
    },
    workspace: {
      provisionTimeoutS: config.provisioner.timeout,
      handshakeTimeoutMs: config.k8shelld.handshakeTimeout * 1000,
      k8shelld: {
        tokenFilePath: config.k8shelld.tokenFilePath || undefined,
        caCertPath: config.k8shelld.caCertPath,
        keepaliveMs: config.k8shelld.keepaliveTime * 1000,
        keepaliveTimeoutMs: config.k8shelld.keepaliveTimeout * 1000,
      },
    },
  };
}

/**
 * Fault injection for the production-entry tests, only when SSH_PROXY_TEST_HOOKS=1: exec commands
 * `ssh-proxy-test:throw`, `…:throw-async` and `…:reject` throw in the handler, throw from a timer,
 * or leave a rejection unhandled.
 */
export function testHooksFromEnv(log: Logger): TestHooks | undefined {
  if (process.env.SSH_PROXY_TEST_HOOKS !== '1') return undefined;
  log.warn('SSH_PROXY_TEST_HOOKS=1: test fault injection is enabled');
  return {
    beforeSessionHandler(kind, detail) {
      if (kind !== 'exec') return;
      if (detail === 'ssh-proxy-test:throw') throw new Error('injected handler failure');
      if (detail === 'ssh-proxy-test:throw-async')
        setImmediate(() => {
          throw new Error('injected uncaught exception');
        });
      if (detail === 'ssh-proxy-test:reject') void Promise.reject(new Error('injected unhandled rejection'));
    },
  };
}
