// The workspace agent: a k8shelld-compatible gRPC daemon (wire-protocol.md §5, §8, §9).
import { widenReceiveWindows } from './flow-control.js';
import { sweepSessions } from './procs.js';
import { FastSshService } from '../common/k8shelld-wire.js';
import { lstat, unlink } from 'node:fs/promises';
import {
  Server,
  ServerCredentials,
  status,
  type handleBidiStreamingCall,
  type handleUnaryCall,
  type ServerDuplexStream,
} from '@grpc/grpc-js';
import {
  HandshakeResponse,
  SystemServiceService,
  type HandshakeRequest,
} from '../gen/k8shelld/v1/k8shelld.js';
import { errText, getLogger, type Logger } from '../ops/log.js';
import { COMMIT, VERSION } from '../ops/version.js';
import { TokenCheck } from './auth.js';
import type { AgentContext } from './context.js';
import { execHandler } from './exec.js';
import { portForwardHandler } from './portforward.js';
import { grpcError } from './rpc.js';
import { acquireSessionHandler, listSessionsHandler, resizeHandler, shellHandler } from './shell-rpc.js';
import { SessionStore } from './store.js';
import { ListenerRegistry, unixSocketHandler } from './unixsocket.js';
import { inheritedEnv } from './session-env.js';
import { UserResolver } from './users.js';

export interface AgentOptions {
  /** 'host:port' (port 0 = ephemeral) or 'unix:/path'. */
  listen: string;
  /** When set, every RPC must carry `authorization: Bearer <trimmed file content>`. */
  tokenFile?: string;
  /** Overrides cwd and HOME of the default user's sessions (one directory per local workspace). */
  home?: string;
  /** User for an empty `as_user` (needs root when it is not the agent's own user). */
  defaultUser?: string;
  /**
   * Whether the workspace's user has sudo rights: false = sessions run only as `defaultUser`; true =
   * any existing user (root included); undefined = not configured (reference daemon behaviour).
   */
  sudo?: boolean;
  /** The workspace this agent serves; reported in the Handshake (`workspace_name`, docs/security.md). */
  workspaceName?: string;
  version?: string;
  logger?: Logger;
}

export type StreamKind = 'shell' | 'exec' | 'portforward' | 'unixsocket';

export interface RunningAgent {
  /** 'host:port' with the real port, or 'unix:/path'. */
  address: string;
  capabilities: string[];
  stats(): { open: Record<StreamKind, number> };
  /** Graceful stop: kills every session's processes, removes LISTEN sockets, stops the server. */
  close(): Promise<void>;
}

/** Project extensions this agent implements (§9.2), advertised in the Handshake. */
export const CAPABILITIES: readonly string[] = [
  'shell-exit-status',
  'exec-exit-status',
  'portforward-half-close',
  'portforward-confirm-connect',
  'unixsocket-half-close',
  'unixsocket-multiplex',
  'unixsocket-owner',
  'unixsocket-confirm-connect',
];

function majorOf(v: string): string | undefined {
  return /^v?(\d+)/.exec(v.trim())?.[1];
}

function handshakeHandler(
  version: string,
  workspaceName: string,
): handleUnaryCall<HandshakeRequest, HandshakeResponse> {
  const serverVersion = `${version}-${COMMIT}`;
  return (call, cb) => {
    const client = call.request.clientVersion;
    const cm = majorOf(client);
    const sm = majorOf(version);
    if (client && cm !== undefined && sm !== undefined && cm !== sm) {
      cb(
        null,
        HandshakeResponse.fromPartial({
          serverVersion,
          accepted: false,
          message: `client version ${client} is incompatible with agent version ${version} (major versions differ)`,
        }),
      );
      return;
    }
    cb(
      null,
      HandshakeResponse.fromPartial({
        serverVersion,
        accepted: true,
        capabilities: [...CAPABILITIES],
        workspaceName,
      }),
    );
  };
}

interface ParsedListen {
  bind: string;
  unixPath?: string;
}

function parseListen(listen: string): ParsedListen {
  if (listen.startsWith('unix:')) {
    const path = listen.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path) throw new Error(`invalid listen address '${listen}': empty unix path`);
    return { bind: `unix:${path}`, unixPath: path };
  }
  const i = listen.lastIndexOf(':');
  if (i <= 0 || !/^\d+$/.test(listen.slice(i + 1))) {
    throw new Error(`invalid listen address '${listen}': want host:port or unix:/path`);
  }
  return { bind: listen };
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch {
    // absent: nothing to do
  }
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const log = opts.logger ?? getLogger('agent');
  const version = opts.version ?? VERSION;
  const listen = parseListen(opts.listen);
  const auth = opts.tokenFile ? new TokenCheck(opts.tokenFile) : undefined;
  const open: Record<StreamKind, number> = { shell: 0, exec: 0, portforward: 0, unixsocket: 0 };
  let closing = false;
  const store = new SessionStore();
  store.startPurging();
  const ctx: AgentContext = {
    store,
    users: new UserResolver({ user: opts.defaultUser, sudo: opts.sudo }, opts.home),
    listeners: new ListenerRegistry(),
    log,
    // Sessions start from a clean environment, as under sshd (session-env.ts).
    baseEnv: inheritedEnv(process.env),
    closing: () => closing,
  };

  const unary = <Req, Res>(h: handleUnaryCall<Req, Res>): handleUnaryCall<Req, Res> => {
    return (call, cb) => {
      const why = auth?.check(call.metadata);
      if (why) return cb(grpcError(status.UNAUTHENTICATED, why));
      try {
        h(call, cb);
      } catch (err) {
        log.error({ err: errText(err) }, 'unary handler failed');
        cb(grpcError(status.INTERNAL, errText(err)));
      }
    };
  };
  const bidi = <Req, Res>(
    kind: StreamKind,
    h: handleBidiStreamingCall<Req, Res>,
  ): handleBidiStreamingCall<Req, Res> => {
    return (call: ServerDuplexStream<Req, Res>) => {
      const why = auth?.check(call.metadata);
      if (why) {
        call.emit('error', grpcError(status.UNAUTHENTICATED, why));
        return;
      }
      open[kind]++;
      let counted = true;
      const done = () => {
        if (counted) open[kind]--;
        counted = false;
      };
      call.once('finish', done);
      call.once('cancelled', done);
      call.once('close', done);
      try {
        h(call);
      } catch (err) {
        log.error({ err: errText(err), kind }, 'stream handler failed');
        call.emit('error', grpcError(status.INTERNAL, errText(err)));
      }
    };
  };

  const server = new Server({
    'grpc.max_receive_message_length': 32 * 1024 * 1024,
  });
  server.addService(SystemServiceService, {
    handshake: unary(handshakeHandler(version, opts.workspaceName ?? '')),
  });
  server.addService(FastSshService, {
    shell: bidi('shell', shellHandler(ctx)),
    resizeTerminal: unary(resizeHandler(ctx)),
    exec: bidi('exec', execHandler(ctx)),
    portForward: bidi('portforward', portForwardHandler(ctx)),
    unixSocket: bidi('unixsocket', unixSocketHandler(ctx)),
    acquireSession: unary(acquireSessionHandler(ctx)),
    listSessions: unary(listSessionsHandler(ctx)),
  });

  if (listen.unixPath) await removeStaleSocket(listen.unixPath);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen.bind, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });
  const address = listen.unixPath
    ? `unix:${listen.unixPath}`
    : `${opts.listen.slice(0, opts.listen.lastIndexOf(':'))}:${port}`;
  if (!widenReceiveWindows(server)) log.warn('could not widen HTTP/2 windows: uploads will be slower');
  log.info({ address, version, auth: Boolean(auth) }, 'agent listening');

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      for (const item of store.live()) item.kill();
      sweepSessions();
      await ctx.listeners.closeAll();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      store.stop();
      if (listen.unixPath) await removeStaleSocket(listen.unixPath);
      log.info({ address }, 'agent stopped');
    })();
    return closed;
  };

  return {
    address,
    capabilities: [...CAPABILITIES],
    stats: () => ({ open: { ...open } }),
    close,
  };
}
