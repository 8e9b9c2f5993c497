// Agent forwarding (reference-behaviour §13.4, §23.f): a UnixSocket LISTEN stream in the workspace at
// the reference's SSH_AUTH_SOCK path, bridged to `auth-agent@openssh.com` channels toward the client.
// With `unixsocket-multiplex` each local agent connection gets its own channel (as OpenSSH's sshd
// does), so parallel requests are served concurrently; otherwise one channel is opened up front.
import type { Channel } from 'ssh2';
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
import { canWrite } from '../relay.js';
import { openAgentChannel } from '../ssh2-shims/index.js';
import type { BoundWorkspace } from '../workspace.js';
import type { SessionState } from './common.js';

/**
 * Agent forwarding for a session channel that asked for it: the forward (if allowed) and the
 * session's environment with SSH_AUTH_SOCK added. Failures only cost the agent, never the session.
 */
export async function sessionAgent(
  conn: GatewayConnection,
  ws: BoundWorkspace,
  state: SessionState,
  ownerId: string,
): Promise<{ agent: AgentForward | undefined; env: Array<[string, string]> }> {
  if (!state.agentRequested) return { agent: undefined, env: state.env };
  const agent = await startAgentForward(conn, ws, ownerId, state.log).catch((e: unknown) => {
    state.log.warn({ err: errText(e) }, 'agent forwarding failed');
    return undefined;
  });
  return { agent, env: agent ? [...state.env, ['SSH_AUTH_SOCK', agent.socketPath]] : state.env };
}

export interface AgentForward {
  /** SSH_AUTH_SOCK inside the workspace. */
  socketPath: string;
  /** Ends the listener (the agent removes the socket) and closes every agent channel. */
  stop(): void;
}

/**
 * Starts forwarding for one session (shell or exec) whose processes are identified by `ownerId`.
 * Returns undefined when policy denies it: then no SSH_AUTH_SOCK is exported (fail closed, §23.d).
 */
export async function startAgentForward(
  conn: GatewayConnection,
  ws: BoundWorkspace,
  ownerId: string,
  parentLog: Logger,
): Promise<AgentForward | undefined> {
  const decision = await conn.deps.authorizer.check({
    action: 'ssh:agent-forward',
    username: conn.user.userstr.username,
    workspace: ws.details.name,
  });
  if (!decision.allowed) {
    parentLog.warn({ reason: decision.reason }, 'agent forwarding denied');
    return undefined;
  }
  const id = conn.ids.next('ux');
  const log = parentLog.child({ agentSocket: id });
  const socketPath = agentSocketPath(id);
  const caps = ws.handshake.capabilities;
  const multiplex = caps.has(Capability.unixSocketMultiplex);
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
  const channels = new Set<Channel>();
  call.on('error', (e: unknown) => {
    if (!isCleanEnd(e)) log.warn({ err: describeGrpcError(e) }, 'agent forwarding stream failed');
  });
  call.on('end', () => closeAll(channels));
  if (multiplex) {
    // Start the session only once the socket listens, so its first `ssh-add` finds it.
    const ready = await listening(call, serveMultiplexed(conn, call, channels, log));
    if (!ready.ok) {
      log.warn({ err: ready.why }, 'agent socket not available; SSH_AUTH_SOCK withheld');
      if (canWrite(call)) call.end();
      return undefined;
    }
  } else await serveSingle(conn, call, channels, log);
  log.info({ socketPath, multiplex }, 'agent forwarding started');
  return {
    socketPath,
    stop() {
      if (canWrite(call)) call.end();
      closeAll(channels);
    },
  };
}

function closeAll(channels: Set<Channel>): void {
  for (const ch of channels) ch.close();
  channels.clear();
}

function frame(
  connectionId: number,
  data?: Buffer,
  event = StreamEvent.STREAM_EVENT_NONE,
): UnixSocketRequest {
  return { request: data ? { $case: 'data', data } : undefined, connectionId, event };
}

/** One local connection ↔ one agent channel, numbered by the agent (wire-protocol §9.7). */
interface Local {
  channel?: Channel;
  /** Bytes and events that arrived while the channel was being opened. */
  pending: Buffer[];
  pendingBytes: number;
  eof: boolean;
  closed: boolean;
}

const LISTEN_READY_TIMEOUT_MS = 10_000;
/** Agent requests are small; this bounds what waits for a channel that is still opening. */
const MAX_PENDING_BYTES = 256 * 1024;

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

/** Serves the multiplexed stream; the promise resolves when the agent reports the socket listening. */
function serveMultiplexed(
  conn: GatewayConnection,
  call: UnixSocketCall,
  channels: Set<Channel>,
  log: Logger,
): Promise<void> {
  let isReady!: () => void;
  const ready = new Promise<void>((r) => (isReady = r));
  const locals = new Map<number, Local>();
  const send = (f: UnixSocketRequest) => {
    if (canWrite(call)) call.write(f);
  };
  const attach = (n: number, local: Local, ch: Channel) => {
    // Dropped while the channel was opening (flood guard): close it unused.
    if (locals.get(n) !== local && !local.closed) return ch.close();
    local.channel = ch;
    channels.add(ch);
    for (const b of local.pending) ch.write(b);
    local.pending = [];
    if (local.eof) ch.eof();
    if (local.closed) ch.close();
    ch.on('data', (d: Buffer) => send(frame(n, d)));
    ch.on('end', () => send(frame(n, undefined, StreamEvent.STREAM_EVENT_EOF)));
    ch.on('error', (e: Error) => log.debug({ err: e.message, local: n }, 'agent channel error'));
    ch.on('close', () => {
      channels.delete(ch);
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
        (ch) => attach(n, local, ch),
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
    const ch = local.channel;
    if (r.data.length) {
      if (ch) ch.write(r.data);
      else if ((local.pendingBytes += r.data.length) > MAX_PENDING_BYTES) {
        // A client that floods before its channel is even open is not an agent client: drop it.
        locals.delete(n);
        send(frame(n, undefined, StreamEvent.STREAM_EVENT_CLOSED));
        return;
      } else local.pending.push(r.data);
    }
    if (r.event === StreamEvent.STREAM_EVENT_EOF) {
      if (ch) ch.eof();
      else local.eof = true;
    } else if (r.event === StreamEvent.STREAM_EVENT_CLOSED) {
      locals.delete(n);
      if (ch) ch.close();
      else local.closed = true;
    }
  });
  return ready;
}

/** Reference mode: one channel up front carries every local connection back to back. */
async function serveSingle(
  conn: GatewayConnection,
  call: UnixSocketCall,
  channels: Set<Channel>,
  log: Logger,
) {
  let ch: Channel;
  try {
    ch = await openAgentChannel(conn.ssh);
  } catch (e) {
    log.info({ err: errText(e) }, 'client refused the agent channel');
    if (canWrite(call)) call.end();
    return;
  }
  channels.add(ch);
  call.on('data', (r: UnixSocketResponse) => {
    if (r.data.length) ch.write(r.data);
  });
  ch.on('data', (d: Buffer) => {
    if (canWrite(call)) call.write(frame(0, d));
  });
  ch.on('error', (e: Error) => log.debug({ err: e.message }, 'agent channel error'));
  ch.on('close', () => {
    channels.delete(ch);
    if (canWrite(call)) call.end();
  });
}
