// The Recorders behind the relay's tap (reference-behaviour.md §15.5, wire-protocol.md §5.12, §23.h):
// one session.v1 client stream per recorded channel, header first, then DataChunk frames of at most
// 32 KiB flushed every 50 ms, resizes for shells. The send queue is bounded by `bufferBytes`; beyond it
// data is dropped and counted, never waited for, so recording cannot slow the user down.
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import type { GatewayMetrics } from '../ops/metrics.js';
import { RateLimitedLog } from '../ops/log-limit.js';
import { describeGrpcError } from '../backends/grpc.js';
import type { Config } from '../config/load.js';
import type {
  RecordingHeader,
  RecordingPayload,
  RecordingStream,
  SessionBackend,
} from '../backends/session.js';
import { Direction, type DataChunk, type RecordingOptions } from '../gen/session/v1/session.js';
import { decideRecording, type RecordingDecisionConfig } from './recording-decision.js';
import type { ConnectionObserver } from './registry.js';
import {
  RecordingRefused,
  type ChannelTap,
  type RecordedKind,
  type RecordingContext,
  type Recorders,
  type TapDirection,
} from './tap.js';

/** The reference's message when recording is asked for without a session client (§15.5). */
export const NO_SESSION_CLIENT = 'session recording requested but session client is not set';
/** The reference also fails a recording without ids (§15.5); ours names what is missing. */
export const NO_RECORDING_IDS = 'session recording requested without a connection id or channel id';
/** failPolicy closed: the stream could not be opened. */
export const RECORDING_UNAVAILABLE =
  'this session must be recorded, but the recording service is unavailable';
/** failPolicy closed: the stream broke while the channel ran. */
export const RECORDING_BROKEN =
  'this session must be recorded, but its recording failed; the session was ended';

/** Wire limits of §15.5: chunk size and flush interval. */
export const MAX_CHUNK_BYTES = 32 * 1024;
export const FLUSH_INTERVAL_MS = 50;
/** What a resize frame counts against the queue limit. */
const RESIZE_COST = 16;

export type FailPolicy = 'open' | 'closed';

/** The recording metrics of the gateway (src/ops/metrics.ts). */
export type RecorderMetrics = Pick<GatewayMetrics, 'recordingOpened' | 'recordingDropped'>;

/** Time source and timers; tests inject a manual clock, production uses the real one (unref'd). */
export interface RecorderClock {
  now(): number;
  /** Runs `f` once after `ms`; returns the cancel function. */
  timer(ms: number, f: () => void): () => void;
}

export const realClock: RecorderClock = {
  now: () => Date.now(),
  timer(ms, f) {
    const t = setTimeout(f, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

export interface RecordersOptions {
  /** undefined = no session service configured: recording requests fail with NO_SESSION_CLIENT. */
  client: SessionBackend | undefined;
  decision: RecordingDecisionConfig;
  /** Per-recording send-queue limit (server.recording.bufferBytes, defaulted to 8 MiB). */
  bufferBytes: number;
  failPolicy: FailPolicy;
  log: Logger;
  clock?: RecorderClock;
  /** After half-close, how long to wait for the service's answer (and for the queue to drain); 10 s. */
  closeTimeoutMs?: number;
  /** failPolicy closed: how long `open` waits for the service connection; 5 s. */
  openTimeoutMs?: number;
  /** How long to wait for the user token; 10 s (then '' is sent). */
  tokenTimeoutMs?: number;
  /** Streams open, and data lost (overflow, broken streams, refusals). */
  metrics?: RecorderMetrics;
}

export interface RecorderStats {
  /** Recording streams not finished yet. */
  active: number;
  /** Bytes dropped because a queue was full, since start. */
  droppedBytes: number;
  /** Streams that failed (could not open or broke), since start. */
  failures: number;
}

export interface SessionRecorders extends Recorders {
  stats(): RecorderStats;
}

/** Builds the Recorders from the loaded configuration (the gateway's one instance). */
export function recordersFromConfig(
  cfg: Config,
  client: SessionBackend | undefined,
  log: Logger,
  metrics?: RecorderMetrics,
): SessionRecorders {
  return createRecorders({
    client,
    decision: { recording: cfg.server.recording, sessionAddress: cfg.session.address },
    bufferBytes: cfg.server.recording.bufferBytes,
    failPolicy: cfg.server.recording.failPolicy,
    log,
    metrics,
  });
}

/**
 * A start-up warning when the static flags ask for recordings but no session service is configured:
 * every such channel will then fail with NO_SESSION_CLIENT (the reference's behaviour, §15.5).
 */
export function recordingConfigWarning(cfg: Config): string | undefined {
  if (cfg.session.address !== '') return undefined;
  const r = cfg.server.recording;
  const on = (
    [
      ['recordShell', r.recordShell],
      ['recordExec', r.recordExec],
      ['recordSFTP', r.recordSFTP],
      ['recordDirectTCPIP', r.recordDirectTCPIP],
    ] as const
  )
    .filter(([, v]) => v)
    .map(([k]) => `server.recording.${k}`);
  if (on.length === 0) return undefined;
  return `${on.join(', ')} set but session.address is empty: those channels will fail with "${NO_SESSION_CLIENT}"`;
}

/**
 * The Recorders' connection hook as a registry observer: when a connection closes, its remaining
 * recordings are finished and EndRecordingSession is called once if it recorded anything (§23.h).
 */
export function recordersObserver(r: Recorders): ConnectionObserver {
  return { closed: (c) => r.connectionClosed(c.id) };
}

interface ConnectionRecordings {
  readonly channels: Set<ChannelRecording>;
  /** At least one stream was opened toward the service (then EndRecordingSession is due, §23.h). */
  streamed: boolean;
}

export function createRecorders(o: RecordersOptions): SessionRecorders {
  const clock = o.clock ?? realClock;
  const limited = new RateLimitedLog(o.log);
  const connections = new Map<string, ConnectionRecordings>();
  const totals = { active: 0, droppedBytes: 0, failures: 0 };
  const env: RecordingEnv = {
    clock,
    limited,
    bufferBytes: o.bufferBytes > 0 ? o.bufferBytes : 8 * 1024 * 1024,
    failPolicy: o.failPolicy,
    closeTimeoutMs: o.closeTimeoutMs ?? 10_000,
    openTimeoutMs: o.openTimeoutMs ?? 5_000,
    tokenTimeoutMs: o.tokenTimeoutMs ?? 10_000,
    totals,
    metrics: o.metrics,
  };

  return {
    async open(ctx) {
      const d = decideRecording(ctx.kind, ctx.obligation, o.decision);
      if (!d.record) return undefined;
      const log = o.log.child({ conn: ctx.connectionId, chan: ctx.channelId });
      if (!o.client) {
        o.metrics?.recordingDropped(ctx.kind, 'refused');
        limited.error({ kind: ctx.kind }, `Refusing channel: ${NO_SESSION_CLIENT}`, log);
        throw new RecordingRefused(NO_SESSION_CLIENT);
      }
      if (!ctx.connectionId || !ctx.channelId) {
        o.metrics?.recordingDropped(ctx.kind, 'refused');
        limited.error({ kind: ctx.kind }, `Refusing channel: ${NO_RECORDING_IDS}`, log);
        throw new RecordingRefused(NO_RECORDING_IDS);
      }
      let conn = connections.get(ctx.connectionId);
      if (!conn) {
        conn = { channels: new Set(), streamed: false };
        connections.set(ctx.connectionId, conn);
      }
      const c = conn;
      const rec = new ChannelRecording(ctx, d.options, o.client, env, log, () => (c.streamed = true));
      c.channels.add(rec);
      totals.active++;
      void rec.finished.then(() => {
        totals.active--;
        c.channels.delete(rec);
      });
      if (o.failPolicy === 'open') {
        // Nothing to wait for: data queues (bounded) while the stream opens in the background.
        void rec.start();
        return rec;
      }
      try {
        await rec.start();
      } catch (e) {
        void rec.close();
        throw e;
      }
      return rec;
    },

    async connectionClosed(connectionId) {
      const conn = connections.get(connectionId);
      if (!conn) return;
      connections.delete(connectionId);
      // The channels are gone with the connection: finish what the relays have not closed yet.
      await Promise.allSettled([...conn.channels].map((r) => r.close()));
      if (!conn.streamed || !o.client) return;
      try {
        await o.client.endRecordingSession({ connectionId, endTime: Math.floor(clock.now() / 1000) });
      } catch (e) {
        limited.warn({ err: errText(e) }, 'EndRecordingSession failed', o.log.child({ conn: connectionId }));
      }
    },

    stats: () => ({ ...totals }),
  };
}

interface RecordingEnv {
  clock: RecorderClock;
  limited: RateLimitedLog;
  bufferBytes: number;
  failPolicy: FailPolicy;
  closeTimeoutMs: number;
  openTimeoutMs: number;
  tokenTimeoutMs: number;
  totals: { droppedBytes: number; failures: number };
  metrics: RecorderMetrics | undefined;
}

/** Where each tap direction goes, per kind (§15.5 "Captured"); undefined = not recorded. */
function directionOf(kind: RecordedKind, d: TapDirection): Direction | undefined {
  if (kind === 'shell' || kind === 'exec') return d === 'in' ? undefined : Direction.DIRECTION_OUTPUT;
  if (d === 'err') return undefined; // sftp-server's log and tcpip have no stderr in the byte stream
  return d === 'in' ? Direction.DIRECTION_INPUT : Direction.DIRECTION_OUTPUT;
}

interface OpenChunk {
  direction: Direction;
  /** MAX_CHUNK_BYTES, filled from the front: each tapped byte is copied once, here. */
  buf: Buffer;
  length: number;
  offsetMs: number;
  droppedBytes: number;
}

/**
 * Sealed chunks shorter than this get a buffer of their own, so a queue never holds more than twice
 * the bytes it counts against `bufferBytes` (a short chunk must not pin 32 KiB).
 */
const SHRINK_BELOW = MAX_CHUNK_BYTES / 2;

interface QueuedFrame {
  payload: RecordingPayload;
  cost: number;
}

type State = 'opening' | 'open' | 'closing' | 'done' | 'failed';

class ChannelRecording implements ChannelTap {
  private state: State = 'opening';
  private stream: RecordingStream | undefined;
  private current: OpenChunk | undefined;
  private readonly outq: QueuedFrame[] = [];
  /** Bytes held: the open chunk, the out queue and frames handed to gRPC but not yet sent. */
  private queued = 0;
  /** Dropped bytes not yet reported, per direction (index = Direction value). */
  private readonly pendingDrops = [0, 0];
  private blocked = false;
  /** Bytes dropped in the current gap (reported to the metrics as one loss when the gap ends). */
  private gapBytes = 0;
  /** Ends the open-streams gauge entry of this recording. */
  private closeGauge: (() => void) | undefined;
  private cancelFlush: (() => void) | undefined;
  private onDrained: (() => void) | undefined;
  private started: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private readonly startMs: number;
  private resolveFinished!: () => void;
  /** Settles once the stream is over, whichever way. */
  readonly finished = new Promise<void>((r) => (this.resolveFinished = r));

  constructor(
    private readonly ctx: RecordingContext,
    private readonly options: RecordingOptions | undefined,
    private readonly client: SessionBackend,
    private readonly env: RecordingEnv,
    private readonly log: Logger,
    private readonly markStreamed: () => void,
  ) {
    this.startMs = env.clock.now();
  }

  /** Opens the stream. Rejects with RecordingRefused only under failPolicy closed. */
  start(): Promise<void> {
    return (this.started ??= this.doStart());
  }

  private async doStart(): Promise<void> {
    try {
      const token = await this.userToken();
      if (this.env.failPolicy === 'closed') await this.client.waitForReady(this.env.openTimeoutMs);
      if (this.state !== 'opening') return; // closed or failed meanwhile
      const affinity =
        this.ctx.kind === 'sftp' || this.ctx.kind === 'tcpip' ? this.ctx.connectionId : undefined;
      this.stream = this.client.openRecording(this.header(token), affinity);
      this.markStreamed();
      this.closeGauge = this.env.metrics?.recordingOpened(this.ctx.kind);
      this.stream.done.then(
        () => this.answered(),
        (e: unknown) => this.broke(e),
      );
      this.state = 'open';
      this.log.debug({ kind: this.ctx.kind }, 'recording stream opened');
      this.pump();
    } catch (e) {
      this.env.totals.failures++;
      this.env.metrics?.recordingDropped(
        this.ctx.kind,
        this.env.failPolicy === 'closed' ? 'refused' : 'stream_error',
        this.queued,
      );
      this.discard('failed');
      if (this.env.failPolicy === 'closed') {
        this.env.limited.error(
          { kind: this.ctx.kind, err: describeGrpcError(e) },
          'Recording stream could not be opened; refusing the channel (failPolicy closed)',
          this.log,
        );
        throw new RecordingRefused(RECORDING_UNAVAILABLE);
      }
      this.env.limited.warn(
        { kind: this.ctx.kind, err: describeGrpcError(e) },
        'Recording stream could not be opened; continuing without recording',
        this.log,
      );
    }
  }

  private async userToken(): Promise<string> {
    let cancel: (() => void) | undefined;
    const timeout = new Promise<string>((resolve) => {
      cancel = this.env.clock.timer(this.env.tokenTimeoutMs, () => resolve(''));
    });
    try {
      return await Promise.race([this.ctx.userToken().catch(() => ''), timeout]);
    } finally {
      cancel?.();
    }
  }

  private header(userToken: string): RecordingHeader {
    const c = this.ctx;
    const base = {
      sessionId: c.channelId,
      userToken,
      startedAt: Math.floor(this.startMs / 1000),
      connectionId: c.connectionId,
      options: this.options,
    };
    switch (c.kind) {
      case 'shell':
        // The reference's default terminal size when no PTY was requested (§19).
        return { kind: 'shell', header: { ...base, width: c.pty?.cols ?? 80, height: c.pty?.rows ?? 24 } };
      case 'exec':
        return { kind: 'exec', header: { ...base, command: c.command ?? '' } };
      case 'sftp':
        return { kind: 'sftp', header: base };
      case 'tcpip': {
        const t = c.tcpip ?? { srcHost: '', srcPort: 0, dstHost: '', dstPort: 0 };
        return { kind: 'tcpip', header: { ...base, ...t } };
      }
    }
  }

  // --- the tap (synchronous, never throws into the relay) ---

  data(d: TapDirection, data: Buffer): void {
    if (this.state !== 'opening' && this.state !== 'open') return;
    const direction = directionOf(this.ctx.kind, d);
    if (direction === undefined || data.length === 0) return;
    try {
      this.add(direction, data);
    } catch (e) {
      this.log.error({ err: errText(e) }, 'recorder bug; recording stopped');
      this.discard('failed');
    }
  }

  resize(cols: number, rows: number): void {
    if (this.ctx.kind !== 'shell' || (this.state !== 'opening' && this.state !== 'open')) return;
    // Pending output first, so a player redraws at the right moment (§15.5).
    this.seal();
    if (this.queued + RESIZE_COST > this.env.bufferBytes) return; // a full queue has no room for it either
    this.queued += RESIZE_COST;
    this.outq.push({
      payload: { $case: 'resize', resize: { timeOffsetMs: this.offset(), width: cols, height: rows } },
      cost: RESIZE_COST,
    });
    this.pump();
  }

  close(): Promise<void> {
    return (this.closing ??= this.doClose());
  }

  // --- queueing ---

  private offset(): number {
    return Math.max(0, this.env.clock.now() - this.startMs);
  }

  private add(direction: Direction, data: Buffer): void {
    const room = this.env.bufferBytes - this.queued;
    if (data.length > this.env.bufferBytes && room > 0 && this.gapBytes === 0) {
      // A relay read (up to 256 KiB) larger than the whole queue would never fit: keep what fits now.
      this.add(direction, data.subarray(0, room));
      this.add(direction, data.subarray(room));
      return;
    }
    if (this.queued + data.length > this.env.bufferBytes) {
      this.pendingDrops[direction] = (this.pendingDrops[direction] ?? 0) + data.length;
      this.env.totals.droppedBytes += data.length;
      this.gapBytes += data.length;
      // A gap: what follows starts a new chunk carrying the count (§15.5).
      this.seal();
      return;
    }
    this.endGap();
    if (this.current && this.current.direction !== direction) this.seal();
    // Copied into the chunk: the caller may reuse `data` after this call.
    this.queued += data.length;
    let at = 0;
    while (at < data.length) {
      const c = (this.current ??= this.newChunk(direction));
      const take = Math.min(data.length - at, MAX_CHUNK_BYTES - c.length);
      data.copy(c.buf, c.length, at, at + take);
      c.length += take;
      at += take;
      if (c.length >= MAX_CHUNK_BYTES) this.seal();
    }
    if (this.current && !this.cancelFlush) {
      this.cancelFlush = this.env.clock.timer(FLUSH_INTERVAL_MS, () => {
        this.cancelFlush = undefined;
        this.seal();
      });
    }
  }

  /** A run of dropped data ended (or the recording did): one loss for the metrics. */
  private endGap(): void {
    if (this.gapBytes === 0) return;
    this.env.metrics?.recordingDropped(this.ctx.kind, 'overflow', this.gapBytes);
    this.gapBytes = 0;
  }

  private newChunk(direction: Direction): OpenChunk {
    const droppedBytes = this.pendingDrops[direction] ?? 0;
    this.pendingDrops[direction] = 0;
    const buf = Buffer.allocUnsafe(MAX_CHUNK_BYTES);
    return { direction, buf, length: 0, offsetMs: this.offset(), droppedBytes };
  }

  /** Ends the open chunk and queues it for sending. */
  private seal(): void {
    const c = this.current;
    if (!c) return;
    this.current = undefined;
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    const filled = c.buf.subarray(0, c.length);
    const data = c.length < SHRINK_BELOW ? Buffer.from(filled) : filled;
    this.outq.push({ payload: { $case: 'chunk', chunk: chunkOf(c, data) }, cost: c.length });
    this.pump();
  }

  /** Hands queued frames to gRPC while it accepts them; resumes on 'drain'. */
  private pump(): void {
    const s = this.stream;
    if (!s || (this.state !== 'open' && this.state !== 'closing')) return;
    while (!this.blocked && this.outq.length > 0) {
      const f = this.outq.shift() as QueuedFrame;
      const ok = s.write(f.payload, () => {
        // Sent (or the call is gone): either way the bytes no longer occupy the queue.
        this.queued = Math.max(0, this.queued - f.cost);
      });
      if (!ok) {
        this.blocked = true;
        s.onDrain(() => {
          this.blocked = false;
          this.pump();
        });
      }
    }
    if (this.outq.length === 0 && this.onDrained) {
      const f = this.onDrained;
      this.onDrained = undefined;
      f();
    }
  }

  // --- ending ---

  private async doClose(): Promise<void> {
    if (this.state === 'opening') await this.start().catch(() => undefined);
    if (this.state !== 'open') {
      this.discard(this.state === 'failed' ? 'failed' : 'done');
      return;
    }
    this.state = 'closing';
    this.seal();
    // A trailing gap is counted now, before the stream ends and the store can be read.
    this.endGap();
    // Trailing drops travel as empty chunks (§15.5).
    for (const direction of [Direction.DIRECTION_OUTPUT, Direction.DIRECTION_INPUT]) {
      const dropped = this.pendingDrops[direction] ?? 0;
      if (dropped > 0) {
        this.pendingDrops[direction] = 0;
        this.outq.push({
          payload: {
            $case: 'chunk',
            chunk: { timeOffsetMs: this.offset(), data: Buffer.alloc(0), direction, droppedBytes: dropped },
          },
          cost: 0,
        });
      }
    }
    const s = this.stream as RecordingStream;
    let cancelDeadline: (() => void) | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      cancelDeadline = this.env.clock.timer(this.env.closeTimeoutMs, () => resolve('timeout'));
    });
    const drained = new Promise<void>((resolve) => {
      this.onDrained = resolve;
      this.pump();
    });
    try {
      const r = await Promise.race([
        drained.then(() => {
          s.end();
          return s.done.then(() => 'ok' as const);
        }),
        deadline,
      ]);
      if (r === 'timeout') {
        this.env.limited.warn(
          { kind: this.ctx.kind, timeoutMs: this.env.closeTimeoutMs },
          'Recording stream did not finish in time; cancelled',
          this.log,
        );
        s.cancel();
      }
    } catch {
      // broke() has reported it.
    } finally {
      cancelDeadline?.();
      // broke() may have run meanwhile (TypeScript cannot see it change the state).
      this.discard((this.state as State) === 'failed' ? 'failed' : 'done');
    }
  }

  private answered(): void {
    if (this.state === 'open') {
      // The service answered before we half-closed: it will not take more.
      this.broke(new Error('the session service ended the recording stream early'));
    }
  }

  private broke(e: unknown): void {
    if (this.state !== 'open' && this.state !== 'closing') return;
    const wasClosing = this.state === 'closing';
    this.env.totals.failures++;
    this.env.metrics?.recordingDropped(this.ctx.kind, 'stream_error', this.queued);
    this.discard('failed');
    const fields = { kind: this.ctx.kind, err: describeGrpcError(e) };
    if (this.env.failPolicy === 'closed' && !wasClosing) {
      this.env.limited.error(
        fields,
        'Recording stream broke; ending the channel (failPolicy closed)',
        this.log,
      );
      try {
        this.ctx.onFailure?.(new RecordingRefused(RECORDING_BROKEN));
      } catch (err) {
        this.log.error({ err: errText(err) }, 'recording failure handler threw');
      }
    } else {
      this.env.limited.warn(fields, 'Recording stream broke; continuing without recording', this.log);
    }
    this.stream?.cancel();
  }

  /** Frees everything and settles `finished`. */
  private discard(state: 'done' | 'failed'): void {
    this.state = state;
    this.endGap();
    this.closeGauge?.();
    this.closeGauge = undefined;
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    this.current = undefined;
    this.outq.length = 0;
    this.queued = 0;
    const f = this.onDrained;
    this.onDrained = undefined;
    f?.();
    this.resolveFinished();
  }
}

function chunkOf(c: OpenChunk, data: Buffer): DataChunk {
  return { timeOffsetMs: c.offsetMs, data, direction: c.direction, droppedBytes: c.droppedBytes };
}
