// Agent forwarding (reference-behaviour §13.4, §23.f): a UnixSocket LISTEN stream in the workspace at
// the reference's SSH_AUTH_SOCK path, bridged to `auth-agent@openssh.com` channels toward the client.
// With `unixsocket-multiplex` each local agent connection gets its own channel (as OpenSSH's sshd
// does), so parallel requests are served concurrently; otherwise one channel is opened up front.
// The dispatcher has authorised it; every channel's bytes go through a relay (bounded both ways).
import {
  StreamEvent,
  UnixSocketMode,
  UnixSocketStartRequest,
  type UnixSocketRequest,
  type UnixSocketResponse,
} from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability, type UnixSocketCall } from '../../backends/k8shelld.js';
import { describeGrpcError, isCleanEnd } from '../../backends/grpc.js';
import { agentSocketPath } from '../../common/ids.js';
import { errText, type Logger } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { canWrite, ChannelRelay, type BackendInput } from '../relay.js';
import { openAgentChannel } from '../ssh2-shims/index.js';
import type { BoundWorkspace } from '../workspace.js';

export interface AgentForward {
  /** SSH_AUTH_SOCK inside the workspace. */
  socketPath: string;
  /** Ends the listener (the agent removes the socket) and closes every agent channel. */
  stop(): void;
}

const LISTEN_READY_TIMEOUT_MS = 10_000;
/** Agent requests are small; this bounds what waits for a channel that is still opening. */
const MAX_PENDING_BYTES = 256 * 1024;

/**
 * Starts forwarding for one session (shell or exec) whose processes are identified by `ownerId`.
 * Returns undefined when the socket cannot be provided: then no SSH_AUTH_SOCK is exported.
 */
export async function startAgentForward(
  conn: GatewayConnection,
  ws: BoundWorkspace,
  id: string,
  ownerId: string,
  parentLog: Logger,
): Promise<AgentForward | undefined> {
  const log = parentLog.child({ agentSocket: id });
  const socketPath = agentSocketPath(id);
  const caps = ws.handshake.capabilities;
  const multiplex = caps.has(Capability.unixSocketMultiplex);
  // Multiplexed channels open only when a workspace process connects, so ask the client once up front
  // whether it will take agent channels at all (`ssh -A` without a local agent refuses them): no
  // SSH_AUTH_SOCK is exported for an agent nobody can reach.
  if (multiplex) {
    try {
      (await openAgentChannel(conn.ssh)).close();
    } catch (e) {
      log.info({ err: errText(e) }, 'client refused the agent channel; SSH_AUTH_SOCK withheld');
      return undefined;
    }
  }
  const call = ws.client.unixSocket(id);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: UnixSocketStartRequest.fromPartial({
        mode: UnixSocketMode.UNIX_SOCKET_MODE_LISTEN,
        socketPath,
        multiplex,
        ownerId: caps.has(Capability.unixSocketOwner) ? ownerId : '',
      }),
    },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  });
  const relays = new Set<ChannelRelay>();
  call.on('error', (e: unknown) => {
    if (!isCleanEnd(e)) log.warn({ err: describeGrpcError(e) }, 'agent forwarding stream failed');
  });
  call.on('end', () => closeAll(relays));
  if (multiplex) {
    // Start the session only once the socket listens, so its first `ssh-add` finds it.
    const ready = await listening(call, serveMultiplexed(conn, call, relays, log));
    if (!ready.ok) {
      log.warn({ err: ready.why }, 'agent socket not available; SSH_AUTH_SOCK withheld');
      if (canWrite(call)) call.end();
      return undefined;
    }
  } else if (!(await serveSingle(conn, call, relays, log))) return undefined;
  log.info({ socketPath, multiplex }, 'agent forwarding started');
  return {
    socketPath,
    stop() {
      if (canWrite(call)) call.end();
      closeAll(relays);
    },
  };
}

function closeAll(relays: Set<ChannelRelay>): void {
  for (const r of relays) void r.close();
  relays.clear();
}

function frame(
  connectionId: number,
  data?: Buffer,
  event = StreamEvent.STREAM_EVENT_NONE,
): UnixSocketRequest {
  return { request: data ? { $case: 'data', data } : undefined, connectionId, event };
}

/** Bytes of one agent channel → frames of connection `n` on the shared stream (with its backpressure). */
function inputFor(call: UnixSocketCall, n: number): BackendInput {
  return {
    write: (d) => (canWrite(call) ? call.write(frame(n, d)) : true),
    end: () => {
      if (canWrite(call)) call.write(frame(n, undefined, StreamEvent.STREAM_EVENT_EOF));
    },
    once: (ev, f) => call.once(ev, f),
    get writableLength() {
      return call.writableLength;
    },
    get writableObjectMode() {
      return call.writableObjectMode;
    },
  };
}

function listening(
  call: UnixSocketCall,
  ready: Promise<void>,
): Promise<{ ok: true } | { ok: false; why: string }> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, why: 'timed out' }), LISTEN_READY_TIMEOUT_MS);
    const done = (r: { ok: true } | { ok: false; why: string }) => {
      clearTimeout(timer);
      resolve(r);
    };
    void ready.then(() => done({ ok: true }));
    call.once('error', (e: unknown) => done({ ok: false, why: describeGrpcError(e) }));
    call.once('end', () => done({ ok: false, why: 'the listener ended' }));
  });
}

/** One local connection ↔ one agent channel, numbered by the agent (wire-protocol §9.7). */
interface Local {
  relay?: ChannelRelay;
  /** Bytes and events that arrived while the channel was being opened (bounded). */
  pending: Buffer[];
  pendingBytes: number;
  eof: boolean;
  closed: boolean;
}

/** Serves the multiplexed stream; the promise resolves when the agent reports the socket listening. */
function serveMultiplexed(
  conn: GatewayConnection,
  call: UnixSocketCall,
  relays: Set<ChannelRelay>,
  log: Logger,
): Promise<void> {
  let isReady!: () => void;
  const ready = new Promise<void>((r) => (isReady = r));
  const locals = new Map<number, Local>();
  const send = (f: UnixSocketRequest) => {
    if (canWrite(call)) call.write(f);
  };
  const attach = (n: number, local: Local, relay: ChannelRelay) => {
    // Dropped while the channel was opening (flood guard): close it unused.
    if (locals.get(n) !== local && !local.closed) return void relay.close();
    local.relay = relay;
    relays.add(relay);
    conn.open.agent++;
    relay.connect(inputFor(call, n), call);
    for (const b of local.pending) relay.toClient(b);
    local.pending = [];
    if (local.eof) void relay.eofToClient();
    if (local.closed) void relay.close();
    void relay.closed.then(() => {
      conn.open.agent--;
      relays.delete(relay);
      if (locals.delete(n)) send(frame(n, undefined, StreamEvent.STREAM_EVENT_CLOSED));
    });
  };
  call.on('data', (r: UnixSocketResponse) => {
    const n = r.connectionId;
    if (n === 0) {
      if (r.event === StreamEvent.STREAM_EVENT_OPENED) isReady();
      return;
    }
    if (r.event === StreamEvent.STREAM_EVENT_OPENED) {
      const local: Local = { pending: [], pendingBytes: 0, eof: false, closed: false };
      locals.set(n, local);
      openAgentChannel(conn.ssh).then(
        (ch) => attach(n, local, new ChannelRelay(ch, conn.counters, 'half-close')),
        (e: unknown) => {
          log.info({ err: errText(e), local: n }, 'client refused an agent channel');
          locals.delete(n);
          send(frame(n, undefined, StreamEvent.STREAM_EVENT_CLOSED));
        },
      );
      return;
    }
    const local = locals.get(n);
    if (!local) return;
    const relay = local.relay;
    if (r.data.length) {
      if (relay) relay.toClient(r.data);
      else if ((local.pendingBytes += r.data.length) > MAX_PENDING_BYTES) {
        // A client that floods before its channel is even open is not an agent client: drop it.
        locals.delete(n);
        send(frame(n, undefined, StreamEvent.STREAM_EVENT_CLOSED));
        return;
      } else local.pending.push(r.data);
    }
    if (r.event === StreamEvent.STREAM_EVENT_EOF) {
      if (relay) void relay.eofToClient();
      else local.eof = true;
    } else if (r.event === StreamEvent.STREAM_EVENT_CLOSED) {
      locals.delete(n);
      if (relay) void relay.close();
      else local.closed = true;
    }
  });
  return ready;
}

/** Reference mode: one channel up front carries every local connection back to back. */
async function serveSingle(
  conn: GatewayConnection,
  call: UnixSocketCall,
  relays: Set<ChannelRelay>,
  log: Logger,
): Promise<boolean> {
  let relay: ChannelRelay;
  try {
    relay = new ChannelRelay(await openAgentChannel(conn.ssh), conn.counters, 'half-close');
  } catch (e) {
    log.info({ err: errText(e) }, 'client refused the agent channel');
    if (canWrite(call)) call.end();
    return false;
  }
  relays.add(relay);
  conn.open.agent++;
  call.on('data', (r: UnixSocketResponse) => relay.toClient(r.data));
  relay.connect(
    {
      write: (d) => (canWrite(call) ? call.write(frame(0, d)) : true),
      end: () => undefined,
      once: (ev, f) => call.once(ev, f),
      get writableLength() {
        return call.writableLength;
      },
      get writableObjectMode() {
        return call.writableObjectMode;
      },
    },
    call,
  );
  void relay.closed.then(() => {
    conn.open.agent--;
    relays.delete(relay);
    if (canWrite(call)) call.end();
  });
  return true;
}
