// UnixSocket (§5.6 DIAL, §5.7 LISTEN, §9.6–9.8): dial an existing socket, or listen on a path inside
// the workspace and relay local connections — one at a time without boundaries (reference) or
// concurrently with numbered connections (multiplex extension).
import { chmod, chown, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { status, type handleBidiStreamingCall, type ServerDuplexStream } from '@grpc/grpc-js';
import {
  StreamEvent,
  UnixSocketMode,
  UnixSocketResponse,
  type UnixSocketRequest,
  type UnixSocketStartRequest,
} from '../gen/k8shelld/v1/k8shelld.js';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import { SocketBridge } from './bridge.js';
import type { AgentContext } from './context.js';
import { peerInTree } from './peercred.js';
import { mayConnect, resolveDialPath } from './socket-path.js';
import { frames, metadataValue, Stream } from './rpc.js';

/** LISTEN sockets currently open, so agent shutdown can close them and remove their files. */
export class ListenerRegistry {
  private readonly open = new Map<string, () => Promise<void>>();
  add(path: string, close: () => Promise<void>): void {
    this.open.set(path, close);
  }
  remove(path: string): void {
    this.open.delete(path);
  }
  async closeAll(): Promise<void> {
    await Promise.all([...this.open.values()].map((c) => c().catch(() => undefined)));
    this.open.clear();
  }
}

/** Daemon "base" of an id: `<part2>-<part3>-<first two chars of part4>` (§7); undefined if not 4 parts. */
export function idBase(id: string): string | undefined {
  const p = id.split('-');
  if (p.length < 4 || !p[1] || !p[2] || !p[3]) return undefined;
  return `${p[1]}-${p[2]}-${p[3].slice(0, 2)}`;
}

async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

export function unixSocketHandler(
  ctx: AgentContext,
): handleBidiStreamingCall<UnixSocketRequest, UnixSocketResponse> {
  return (call) => {
    const s = new Stream(call);
    const id = metadataValue(call.metadata, 'unixsocket-id');
    if (!id) return s.fail(status.INVALID_ARGUMENT, 'missing unixsocket-id metadata');
    const log = ctx.log.child({ chan: id, rpc: 'UnixSocket' });
    let onFrame: ((req: UnixSocketRequest) => void) | undefined;
    let onClientEnd: (() => void) | undefined;
    let started = false;

    call.on('data', (req: UnixSocketRequest) => {
      if (s.done) return;
      if (started) return onFrame?.(req);
      started = true;
      const r = req.request;
      if (r?.$case !== 'startRequest')
        return s.fail(status.INVALID_ARGUMENT, 'first message must be start_request');
      const st = r.startRequest;
      if (!st.socketPath) return s.fail(status.INVALID_ARGUMENT, 'empty socketPath');
      if (st.mode === UnixSocketMode.UNIX_SOCKET_MODE_DIAL) {
        const h = dial(ctx, call, s, st, log);
        onFrame = h.frame;
        onClientEnd = h.end;
      } else if (st.mode === UnixSocketMode.UNIX_SOCKET_MODE_LISTEN) {
        const l = new Listener(ctx, call, s, st, id, log);
        onFrame = (f) => l.frame(f);
        onClientEnd = () => void l.close();
        void l.start();
      } else {
        s.fail(status.INVALID_ARGUMENT, `unknown unix socket mode ${st.mode}`);
      }
    });
    call.on('end', () => {
      if (onClientEnd) onClientEnd();
      else s.finish();
    });
  };
}

type Call = ServerDuplexStream<UnixSocketRequest, UnixSocketResponse>;

function dial(
  ctx: AgentContext,
  call: Call,
  s: Stream<UnixSocketRequest, UnixSocketResponse>,
  st: UnixSocketStartRequest,
  log: Logger,
): { frame: (r: UnixSocketRequest) => void; end: () => void } {
  let bridge: SocketBridge<UnixSocketRequest, UnixSocketResponse> | undefined;
  let ended = false;
  let sock: Socket | undefined;
  call.pause();
  s.onCancel(() => sock?.destroy());
  const connectTo = (path: string) => {
    const c = connect({ path, allowHalfOpen: true });
    sock = c;
    const onDialError = (err: Error) =>
      s.fail(status.INTERNAL, `dial unix ${st.socketPath}: ${errText(err)}`);
    c.once('error', onDialError);
    c.once('connect', () => {
      c.off('error', onDialError);
      if (s.done) return void c.destroy();
      // Our extension: say the socket is reached, so the gateway confirms the channel only now.
      if (st.confirmConnect)
        s.send(UnixSocketResponse.fromPartial({ event: StreamEvent.STREAM_EVENT_OPENED }));
      bridge = new SocketBridge({
        s,
        sock: c,
        halfClose: st.halfClose,
        errorStatus: status.INTERNAL,
        dataMsg: (data) => UnixSocketResponse.fromPartial({ data }),
        eofMsg: () => UnixSocketResponse.fromPartial({ event: StreamEvent.STREAM_EVENT_EOF }),
        pauseClient: () => call.pause(),
        resumeClient: () => call.resume(),
        log,
      });
      call.resume();
      if (ended) bridge.clientEnd();
    });
  };
  void (async () => {
    let runAs: Awaited<ReturnType<AgentContext['users']['resolve']>>;
    try {
      runAs = await ctx.users.resolve('');
    } catch (e) {
      return s.fail(status.PERMISSION_DENIED, `dial unix ${st.socketPath}: ${errText(e)}`);
    }
    const target = resolveDialPath(st.socketPath, runAs.home);
    if ('problem' in target) {
      log.warn({ path: st.socketPath.slice(0, 256) }, 'streamlocal path refused');
      return s.fail(status.PERMISSION_DENIED, `dial unix ${st.socketPath}: ${target.problem}`);
    }
    if (runAs.creds) {
      const problem = await mayConnect(target.path, runAs.creds);
      if (problem) {
        log.warn(
          { path: target.path.slice(0, 256), problem },
          'streamlocal dial refused for the workspace user',
        );
        return s.fail(status.PERMISSION_DENIED, `dial unix ${st.socketPath}: ${problem}`);
      }
    }
    if (s.done) return;
    connectTo(target.path);
  })();
  return {
    frame: (r) => {
      if (r.request?.$case === 'data') bridge?.write(r.request.data);
    },
    end: () => {
      ended = true;
      bridge?.clientEnd();
    },
  };
}

interface LocalConn {
  id: number;
  sock: Socket;
  /** The gateway closed it; do not report CLOSED back. */
  closedByClient: boolean;
}

/** Local agent clients served at once (multiplexed) or waiting their turn (plain mode). */
const MAX_LOCAL_CONNECTIONS = 64;
const MAX_QUEUED = 16;

class Listener {
  private server: Server | undefined;
  private closed = false;
  private nextId = 0;
  private readonly conns = new Map<number, LocalConn>();
  /** Plain mode: connections waiting for their turn, and the one being served. */
  private readonly queue: Socket[] = [];
  private active: Socket | undefined;

  constructor(
    private readonly ctx: AgentContext,
    private readonly call: Call,
    private readonly s: Stream<UnixSocketRequest, UnixSocketResponse>,
    private readonly st: UnixSocketStartRequest,
    private readonly streamId: string,
    private readonly log: Logger,
  ) {
    s.onCancel(() => void this.close());
  }

  async start(): Promise<void> {
    const path = this.st.socketPath;
    try {
      await unlinkQuiet(path);
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
      this.server = server;
      // Clients may connect as soon as the path exists; they wait (paused) until set-up is done.
      let setUp!: () => void;
      const ready = new Promise<void>((r) => (setUp = r));
      server.on('connection', (sock: Socket) => void ready.then(() => this.accept(sock)));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        // bind() runs synchronously inside listen(), so the umask covers exactly this socket file.
        const old = process.umask(0o177);
        try {
          server.listen(path, () => {
            server.off('error', reject);
            resolve();
          });
        } finally {
          process.umask(old);
        }
      });
      server.on('error', (err) => this.log.warn({ err: errText(err) }, 'listener error'));
      this.ctx.listeners.add(path, () => this.close());
      await chmod(path, 0o700);
      const runAs = await this.ctx.users.resolve('').catch(() => undefined);
      if (process.getuid?.() === 0 && runAs?.user && runAs.user.uid !== 0) {
        await chown(path, runAs.user.uid, runAs.user.gid);
      }
      setUp();
      // Multiplexed listeners (our extension) say when the socket is ready, as connection 0 (never a
      // real connection), so a gateway can start the session only once SSH_AUTH_SOCK works.
      if (this.st.multiplex)
        this.s.send(
          UnixSocketResponse.fromPartial({ connectionId: 0, event: StreamEvent.STREAM_EVENT_OPENED }),
        );
      if (this.s.done) await this.close();
    } catch (err) {
      this.log.info({ path, err: errText(err) }, 'listen failed');
      this.s.fail(status.INTERNAL, `listen unix ${path}: ${errText(err)}`);
      await this.close();
    }
  }

  /** Ends the listener: closes every local connection and removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ctx.listeners.remove(this.st.socketPath);
    for (const c of this.conns.values()) c.sock.destroy();
    for (const q of this.queue.splice(0)) q.destroy();
    this.active?.destroy();
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await unlinkQuiet(this.st.socketPath).catch(() => undefined);
    }
    this.s.finish();
  }

  /** A frame from the gateway after the start request. */
  frame(req: UnixSocketRequest): void {
    const data = req.request?.$case === 'data' ? req.request.data : undefined;
    if (!this.st.multiplex) {
      // Reference mode: bytes go to the connection being served, or are dropped.
      if (data && data.length && this.active && !this.active.destroyed) this.writeTo(this.active, data);
      return;
    }
    const c = this.conns.get(req.connectionId);
    if (!c) return; // unknown or closed connection: dropped (§9.7)
    if (data && data.length) this.writeTo(c.sock, data);
    if (req.event === StreamEvent.STREAM_EVENT_EOF) c.sock.end();
    else if (req.event === StreamEvent.STREAM_EVENT_CLOSED) {
      c.closedByClient = true;
      c.sock.destroy();
    }
  }

  private writeTo(sock: Socket, data: Buffer): void {
    if (!sock.write(data)) {
      this.call.pause();
      const resume = () => {
        sock.off('close', resume);
        sock.off('drain', resume);
        this.call.resume();
      };
      sock.once('drain', resume);
      sock.once('close', resume);
    }
  }

  private async accept(sock: Socket): Promise<void> {
    sock.on('error', (err) => this.log.debug({ err: errText(err) }, 'local connection error'));
    if (this.closed) return void sock.destroy();
    let allowed: boolean;
    try {
      allowed = await this.peerAllowed(sock);
    } catch (err) {
      this.log.info({ err: errText(err) }, 'cannot identify local client; refused');
      allowed = false;
    }
    if (!allowed || this.closed || sock.destroyed) return void sock.destroy();
    if (this.st.multiplex) {
      if (this.conns.size >= MAX_LOCAL_CONNECTIONS) {
        this.log.warn({ max: MAX_LOCAL_CONNECTIONS }, 'too many local connections; refused');
        return void sock.destroy();
      }
      this.serveMultiplexed(sock);
    } else {
      if (this.queue.length >= MAX_QUEUED) {
        this.log.warn({ max: MAX_QUEUED }, 'too many local connections waiting; refused');
        return void sock.destroy();
      }
      this.queue.push(sock);
      this.serveNext();
    }
  }

  /** §9.8 owner restriction, or the reference's base matching (§5.7) when no owner is given. */
  private async peerAllowed(sock: Socket): Promise<boolean> {
    let ownerPid: number;
    if (this.st.ownerId) {
      const owner = this.ctx.store.get(this.st.ownerId);
      if (!owner || owner.pid <= 0) {
        this.log.info({ owner: this.st.ownerId }, 'socket owner is not running; local client refused');
        return false;
      }
      ownerPid = owner.pid;
    } else {
      const base = idBase(this.streamId);
      const shell = base
        ? this.ctx.store.live().find((i) => i.kind === 'shell' && i.pid > 0 && idBase(i.id) === base)
        : undefined;
      if (!shell) return true;
      ownerPid = shell.pid;
    }
    const ok = await peerInTree(sock, this.st.socketPath, ownerPid);
    if (!ok) this.log.info({ ownerPid }, 'local client is not a descendant of the socket owner; refused');
    return ok;
  }

  private serveNext(): void {
    if (this.active || this.closed) return;
    const sock = this.queue.shift();
    if (!sock) return;
    if (sock.destroyed) return this.serveNext();
    this.active = sock;
    sock.on('data', (d: Buffer) => {
      let ok = true;
      for (const f of frames(d)) ok = this.s.send(UnixSocketResponse.fromPartial({ data: f }));
      if (!ok) {
        sock.pause();
        this.s.whenDrained(() => sock.resume());
      }
    });
    // No boundaries in reference mode: a local EOF ends this connection, then the next one is served.
    sock.on('end', () => sock.destroy());
    sock.on('close', () => {
      if (this.active === sock) this.active = undefined;
      this.serveNext();
    });
    sock.resume();
  }

  private serveMultiplexed(sock: Socket): void {
    const c: LocalConn = { id: ++this.nextId, sock, closedByClient: false };
    this.conns.set(c.id, c);
    const frame = (p: Partial<UnixSocketResponse>) =>
      this.s.send(UnixSocketResponse.fromPartial({ connectionId: c.id, ...p }));
    frame({ event: StreamEvent.STREAM_EVENT_OPENED });
    sock.on('data', (d: Buffer) => {
      let ok = true;
      for (const f of frames(d)) ok = frame({ data: f });
      if (!ok) {
        sock.pause();
        this.s.whenDrained(() => sock.resume());
      }
    });
    sock.on('end', () => {
      frame({ event: StreamEvent.STREAM_EVENT_EOF });
      if (sock.writableEnded) sock.destroy();
    });
    sock.on('finish', () => {
      if (sock.readableEnded) sock.destroy();
    });
    sock.on('close', () => {
      this.conns.delete(c.id);
      if (!c.closedByClient && !this.closed) frame({ event: StreamEvent.STREAM_EVENT_CLOSED });
    });
    sock.resume();
  }
}
