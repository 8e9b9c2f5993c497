// The SSH gateway: ssh2 server, authentication, and channel dispatch for each connection.
import { createRequire } from 'node:module';
import type net from 'node:net';
import ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import { getLogger, errText, type Logger } from '../ops/log.js';
import { COMMIT, VERSION } from '../ops/version.js';
import { newConnectionId } from '../common/ids.js';
import type { Config } from '../config/load.js';
import { createIdentityClient, type IdentityBackend } from '../backends/identity.js';
import { createProvisionerClient, type ProvisionerBackend } from '../backends/provisioner.js';
import { serverAlgorithms } from './algorithms.js';
import { Authenticator } from './auth.js';
import { localAuthorizer, type LegacyAuthorizer as Authorizer } from './authorize.js';
import { GatewayConnection, type ChannelSettings } from './connection.js';
import { handleDirectTcpip } from './channels/direct-tcpip.js';
import { handleSession } from './channels/session.js';
import { handleStreamLocal } from './channels/streamlocal.js';
import { loadHostKeys } from './hostkeys.js';
import { listen, type Listener } from './listener.js';
import { fixServerSigAlgs, installUnknownChannelTypeMessage } from './ssh2-shims/index.js';
import { WorkspaceResolver, type WorkspaceSettings } from './workspace.js';

const { Server } = ssh2;
const ssh2Require = createRequire(import.meta.url);
// ssh2 treats 0 as "default"; this is how "off" is spelled.
const KEEPALIVE_OFF_MS = 2 ** 31 - 1;

export interface GatewayOptions {
  host: string;
  port: number;
  hostKeys: Buffer[];
  handshakeTimeoutMs: number;
  maxAuthTries: number;
  /** Ours (server.onboardingTimeout): longest keyboard-interactive onboarding wait; default 600 s. */
  onboardingTimeoutMs?: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  ciphers: string[];
  channels: ChannelSettings;
  workspace: WorkspaceSettings;
}

export interface GatewayBackends {
  identity: IdentityBackend;
  provisioner: ProvisionerBackend;
  authorizer?: Authorizer;
}

export interface RunningGateway {
  host: string;
  port: number;
  /** Live SSH connections. */
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

  const resolver = new WorkspaceResolver(backends.provisioner, opts.workspace, log);
  const deps = { settings: opts.channels, authorizer: backends.authorizer ?? localAuthorizer, resolver };
  const live = new Set<Connection>();

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
      const clog = log.child({ conn: id, client: `${info.ip}:${info.port}` });
      live.add(client);
      clog.info({ clientVersion: info.header.versions.software }, 'connection accepted');
      client.on('error', (e) => clog.info({ err: errText(e) }, 'connection error'));
      installUnknownChannelTypeMessage(client);

      const peer = `${info.ip}:${info.port}`;
      // [policy] Authenticator hooks: attempt limit, and the login grace timer paused while an
      // onboarding prompt waits for the user (§23.g). The dispatcher adds `evaluate` (user:auth).
      const auth = new Authenticator(
        backends.identity,
        { maxAuthTries: opts.maxAuthTries, onboardingTimeoutMs: opts.onboardingTimeoutMs },
        clog,
        {
          disconnect: () => client.end(),
          onPromptPending: (pending) => graces.get(peer)?.[pending ? 'pause' : 'resume'](),
        },
      );
      client.on('authentication', (ctx) => auth.handle(ctx));

      let conn: GatewayConnection | undefined;
      client.once('ready', () => {
        graces.get(peer)?.cancel();
        const who = auth.result;
        if (!who) {
          clog.error('authenticated without a resolved user; closing');
          return client.end();
        }
        conn = new GatewayConnection(id, client, who, deps, clog.child({ user: who.userstr.username }));
        conn.log.info({ method: who.method, userstr: who.userstr.raw }, 'user authenticated');
        const c = conn;
        client.on('session', (accept) => handleSession(c, accept));
        client.on('tcpip', (accept, reject, info) => {
          handleDirectTcpip(c, accept, reject, info).catch((e: unknown) =>
            c.log.error({ err: errText(e) }, 'direct-tcpip failed'),
          );
        });
        client.on('openssh.streamlocal', (accept, reject, info) => {
          handleStreamLocal(c, accept, reject, info).catch((e: unknown) =>
            c.log.error({ err: errText(e) }, 'direct-streamlocal failed'),
          );
        });
        // No 'request' listener: ssh2 answers every global request (tcpip-forward, streamlocal-forward,
        // …) with failure, as the reference does, so `-R` is refused.
      });
      client.once('close', () => {
        live.delete(client);
        auth.close(); // [policy] stops a running onboarding watch
        if (conn) {
          conn.close();
          conn.log.info(
            { bytesIn: conn.counters.in, bytesOut: conn.counters.out, ops: [...conn.ops].sort() },
            `Connection closed for user ${conn.user.userstr.username} from ${info.ip}:${info.port}`,
          );
        } else {
          clog.info({ failures: auth.failureInfo }, 'connection closed before authentication');
        }
      });
    },
  );

  // ssh2 has no server-side login timeout, and only reports a connection once the client's version
  // line arrived, so the grace timer is armed here, per socket: key exchange and authentication must
  // finish in time or the socket is destroyed (a silent client included).
  // [policy] The timer can be paused (onboarding prompt outstanding) and resumed with the time left.
  const graces = new Map<string, { cancel(): void; pause(): void; resume(): void }>();
  const onSocket = (socket: net.Socket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let left = opts.handshakeTimeoutMs;
    let started = Date.now();
    const expire = () => {
      log.warn({ client: peer }, `SSH handshake timed out for connection from ${peer}`);
      socket.destroy();
    };
    let timer: NodeJS.Timeout | undefined = setTimeout(expire, left);
    const cancel = () => {
      clearTimeout(timer);
      timer = undefined;
      graces.delete(peer);
    };
    const pause = () => {
      if (!timer) return;
      clearTimeout(timer);
      timer = undefined;
      left = Math.max(0, left - (Date.now() - started));
    };
    const resume = () => {
      if (timer || !graces.has(peer)) return;
      started = Date.now();
      timer = setTimeout(expire, left);
    };
    graces.set(peer, { cancel, pause, resume });
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
    connections: () => live.size,
    async stop() {
      await Promise.all([listener.close(), ...[...live].map((c) => endConnection(c))]);
    },
  };
}

function endConnection(c: Connection): Promise<void> {
  return new Promise((resolve) => {
    c.once('close', () => resolve());
    c.end();
    // A client that never answers the disconnect must not hold up shutdown.
    setTimeout(resolve, 2000).unref();
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
    onboardingTimeoutMs: s.onboardingTimeout * 1000,
    keepaliveIntervalMs: s.keepaliveInterval * 1000,
    keepaliveCountMax: s.keepaliveCountMax,
    ciphers: s.ciphers,
    channels: {
      sftpBinary: s.sftpBinary || '/usr/local/bin/sftp',
      writerOptions: s.writerOptions,
      maxDirectTcpip: s.maxDirectTCPIPConnections || 15,
    },
    workspace: {
      provisionTimeoutS: config.provisioner.timeout,
      handshakeTimeoutMs: config.k8shelld.handshakeTimeout * 1000,
      k8shelld: {
        tokenFilePath: config.k8shelld.tokenFilePath || undefined,
        caCertPath: config.k8shelld.caCertPath,
      },
    },
  };
}

/** Production entry (`ssh-proxy --config …`): real services from the config file. */
export async function startGateway(
  config: Config,
  _opts: { configPath: string; child: boolean; logtext: boolean },
): Promise<{ stop(): Promise<void> }> {
  const log = getLogger('ssh-server');
  const options = gatewayOptionsFromConfig(config);
  // Clients connect lazily: an unreachable service is reported at first use, not at start.
  const identity = createIdentityClient(config.identity);
  const provisioner = createProvisionerClient(config.provisioner);
  if (!config.identity.address) log.warn('identity.address is not set: every login will be denied');
  if (!config.provisioner.address) log.warn('provisioner.address is not set: no workspace can be reached');
  const gw = await createGateway(options, { identity, provisioner }, log);
  return {
    async stop() {
      await gw.stop();
      identity.close();
      provisioner.close();
    },
  };
}
