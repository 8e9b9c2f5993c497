// The SSH gateway: the ssh2 server, authentication, and one Dispatcher per authenticated connection.
import { createRequire } from 'node:module';
import type net from 'node:net';
import ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import { getLogger, errText, type Logger } from '../ops/log.js';
import { withConnectionContext } from '../ops/context.js';
import { COMMIT, VERSION } from '../ops/version.js';
import { newConnectionId } from '../common/ids.js';
import type { Config } from '../config/load.js';
import { unsupportedFeatures } from '../config/unsupported.js';
import { createIdentityClient, type IdentityBackend } from '../backends/identity.js';
import { createProvisionerClient, type ProvisionerBackend } from '../backends/provisioner.js';
import { serverAlgorithms } from './algorithms.js';
import { Authenticator, type AuthenticatedUser } from './auth.js';
import { allowAll, type Authorizer } from './authorize.js';
import { GatewayConnection } from './connection.js';
import { Dispatcher, type ChannelSettings, type TestHooks } from './dispatcher.js';
import { loadHostKeys } from './hostkeys.js';
import { listen, type Listener } from './listener.js';
import { ConnectionRegistry } from './registry.js';
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

export interface GatewayOptions {
  host: string;
  port: number;
  hostKeys: Buffer[];
  handshakeTimeoutMs: number;
  maxAuthTries: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  ciphers: string[];
  channels: ChannelSettings;
  workspace: WorkspaceSettings;
  /** Deadline of one authz evaluation. */
  authzTimeoutMs: number;
}

export interface GatewayBackends {
  identity: IdentityBackend;
  provisioner: ProvisionerBackend;
  authorizer?: Authorizer;
  /** The user JWT for authz and recordings (§8.7); default: none needed. */
  userToken?: (user: AuthenticatedUser) => Promise<string>;
  recorders?: Recorders;
  overrides?: RecordingOverrides;
  /** Test-only fault injection. */
  hooks?: TestHooks;
}

export interface RunningGateway {
  host: string;
  port: number;
  registry: ConnectionRegistry;
  /** Live SSH connections (authenticated or not). */
  connections(): number;
  stop(): Promise<void>;
}

export function sshIdent(): string {
  return `ssh-proxy_${VERSION}/${COMMIT}_k8shell.io`;
}

export async function createGateway(
  opts: GatewayOptions,
  backends: GatewayBackends,
  log: Logger = getLogger('ssh-server'),
): Promise<RunningGateway> {
  fixServerSigAlgs();
  if (!nativeCryptoAvailable())
    log.warn(
      'ssh2 native crypto binding is not available: throughput will be about half (run npm rebuild ssh2)',
    );

  const registry = new ConnectionRegistry();
  const resolver = new WorkspaceResolver(backends.provisioner, opts.workspace, log);
  const deps = {
    settings: opts.channels,
    authorizer: backends.authorizer ?? allowAll,
    authzTimeoutMs: opts.authzTimeoutMs,
    userToken: backends.userToken ?? (() => Promise.resolve('')),
    resolver,
    registry,
    recorders: backends.recorders,
    overrides: backends.overrides,
    hooks: backends.hooks,
  };
  const live = new Set<Connection>();
  const closing = new Set<Promise<void>>();

  const server = new Server(
    {
      hostKeys: opts.hostKeys,
      algorithms: serverAlgorithms(opts.ciphers),
      ident: sshIdent(),
      keepaliveInterval: opts.keepaliveIntervalMs > 0 ? opts.keepaliveIntervalMs : KEEPALIVE_OFF_MS,
      keepaliveCountMax: opts.keepaliveCountMax,
    },
    (client, info) => {
      const id = newConnectionId();
      withConnectionContext(id, client, () => onClient(client, info, id));
    },
  );

  function onClient(client: Connection, info: ssh2.ClientInfo, id: string): void {
    const peer = `${info.ip}:${info.port}`;
    const clog = log.child({ conn: id, client: peer });
    live.add(client);
    const version = info.header.versions.software;
    clog.info({ clientVersion: version }, 'connection accepted');
    client.on('error', (e) => clog.info({ err: errText(e) }, 'connection error'));
    installUnknownChannelTypeMessage(client);

    const auth = new Authenticator(backends.identity, { maxAuthTries: opts.maxAuthTries }, clog, () =>
      // Like sshd's MaxAuthTries: the last failure is answered with a disconnect that says why.
      disconnectWithMessage(client, DisconnectReason.PROTOCOL_ERROR, 'Too many authentication failures'),
    );
    client.on('authentication', (ctx) => auth.handle(ctx));

    let conn: GatewayConnection | undefined;
    client.once('ready', () => {
      graces.get(peer)?.();
      const who = auth.result;
      if (!who) {
        clog.error('authenticated without a resolved user; closing');
        return client.end();
      }
      const c = new GatewayConnection(
        id,
        client,
        who,
        { ip: info.ip, port: info.port, version },
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
      if (!conn) {
        clog.info({ failures: auth.failureInfo }, 'connection closed before authentication');
        return;
      }
      const c = conn;
      c.close();
      c.log.info(
        { bytesIn: c.counters.in, bytesOut: c.counters.out, ops: c.operations() },
        `Connection closed for user ${c.user.userstr.username} from ${peer}`,
      );
      const done = Promise.allSettled([registry.closed(c), backends.recorders?.connectionClosed(c.id)]).then(
        () => undefined,
      );
      closing.add(done);
      void done.finally(() => closing.delete(done));
    });
  }

  // ssh2 has no server-side login timeout, and only reports a connection once the client's version
  // line arrived, so the grace timer is armed here, per socket: key exchange and authentication must
  // finish in time or the socket is destroyed (a silent client included).
  const graces = new Map<string, () => void>();
  const onSocket = (socket: net.Socket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const timer = setTimeout(() => {
      log.warn({ client: peer }, `SSH handshake timed out for connection from ${peer}`);
      socket.destroy();
    }, opts.handshakeTimeoutMs);
    const cancel = () => {
      clearTimeout(timer);
      graces.delete(peer);
    };
    graces.set(peer, cancel);
    socket.once('close', cancel);
    server.injectSocket(socket);
  };
  const listener: Listener = await listen(opts.host, opts.port, onSocket, log);
  log.info(
    { address: `${listener.host}:${listener.port}`, ident: `SSH-2.0-${sshIdent()}` },
    'SSH proxy server listening',
  );

  return {
    host: listener.host,
    port: listener.port,
    registry,
    connections: () => live.size,
    async stop() {
      await Promise.all([listener.close(), ...[...live].map((c) => endConnection(c))]);
      // EndSession and recording ends of the connections just closed, bounded.
      await Promise.race([Promise.allSettled([...closing]), delay(STOP_GRACE_MS)]);
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function endConnection(c: Connection): Promise<void> {
  return new Promise((resolve) => {
    c.once('close', () => resolve());
    c.end();
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
  return {
    host: s.bindAddress,
    port: s.port,
    hostKeys: loadHostKeys(s.serverKey).keys,
    handshakeTimeoutMs: (s.SSHHandshakeTimeout || 30) * 1000,
    maxAuthTries: s.maxAuthTries,
    keepaliveIntervalMs: s.keepaliveInterval * 1000,
    keepaliveCountMax: s.keepaliveCountMax,
    ciphers: s.ciphers,
    authzTimeoutMs: config.authz.timeout * 1000,
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

/** Refuses to start when the config enables a feature this build does not have (never ignore it). */
export function assertSupported(config: Config): void {
  const missing = unsupportedFeatures(config);
  if (missing.length)
    throw new Error(
      missing.map((m) => `${m.key} is set (${m.feature}) but not supported by this build yet`).join('; ') +
        '; remove it from the configuration or use a build that has it',
    );
}

/** Production entry (`ssh-proxy --config …`): real services from the config file. */
export async function startGateway(
  config: Config,
  _opts: { configPath: string; child: boolean; logtext: boolean },
): Promise<{ stop(): Promise<void> }> {
  const log = getLogger('ssh-server');
  assertSupported(config);
  const options = gatewayOptionsFromConfig(config);
  // Clients connect lazily: an unreachable service is reported at first use, not at start.
  const identity = createIdentityClient(config.identity);
  const provisioner = createProvisionerClient(config.provisioner);
  if (!config.identity.address) log.warn('identity.address is not set: every login will be denied');
  if (!config.provisioner.address) log.warn('provisioner.address is not set: no workspace can be reached');
  const gw = await createGateway(options, { identity, provisioner, hooks: testHooksFromEnv(log) }, log);
  return {
    async stop() {
      await gw.stop();
      identity.close();
      provisioner.close();
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
