// The relay: the one place where a channel's bytes move, in both directions.
//
// Every channel (shell, exec, sftp, direct-tcpip, streamlocal, agent) gets one ChannelRelay. It owns
// the byte counters, the recorder tap, backpressure both ways, the EOF policy, and how a session
// ends (exit status only after stdout and stderr are flushed, then EOF and close). Client bytes that
// arrive before the workspace is ready are kept, in order, with the client's EOF, and handed over
// once the backend is attached; past a bound the channel is paused (SSH flow control holds the rest),
// never dropped. No other module writes channel data.
import type { Writable } from 'node:stream';
import type { Channel } from 'ssh2';
import type { ExitStatus } from '../gen/k8shelld/v1/k8shelld.js';
import type { ChannelTap } from './tap.js';

export interface ByteCounters {
  /** client → workspace */
  in: number;
  /** workspace → client */
  out: number;
}

/**
 * How much a byte sink (an SSH channel) may hold before its source is paused. ssh2 channels keep
 * Node's default 16 KiB high-water mark, so write() reports "full" for every 32 KiB packet; pausing
 * the gRPC call on each of those turned the relay into a ping-pong. Nothing is unbounded: the sink's
 * buffer stays under this limit plus one frame.
 */
export const BYTE_SINK_LIMIT = 1024 * 1024;
/** Client bytes held while the backend is not attached yet; beyond it the channel is paused. */
export const EARLY_INPUT_LIMIT = 256 * 1024;

export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

interface Sink {
  once(ev: 'drain', f: () => void): unknown;
  readonly writableLength: number;
  readonly writableObjectMode: boolean;
}

/** Pauses `source` while `sink` is full; one pending 'drain' listener at most. */
export class Valve {
  private waiting = false;
  constructor(
    private readonly source: Pausable,
    private readonly sink: Sink,
  ) {}

  /** Call with the result of sink.write(). */
  wrote(ok: boolean): void {
    if (ok || this.waiting) return;
    // write() returned false, so 'drain' will come once the buffer is empty.
    if (!this.sink.writableObjectMode && this.sink.writableLength < BYTE_SINK_LIMIT) return;
    this.waiting = true;
    this.source.pause();
    this.sink.once('drain', () => {
      this.waiting = false;
      this.source.resume();
    });
  }
}

/** Writable that is still worth writing to. */
export function canWrite(w: Writable): boolean {
  return !w.destroyed && !w.writableEnded;
}

/**
 * Resolves once everything written to `w` so far has been handed to the SSH layer (so an exit-status
 * sent next cannot overtake output), or when the channel closes (writes then never complete).
 */
export function flushed(w: Writable, closed: { once(ev: 'close', f: () => void): unknown }): Promise<void> {
  if (!canWrite(w) || w.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    closed.once('close', resolve);
    w.write(Buffer.alloc(0), () => resolve());
  });
}

/** The channel side of a relay: an ssh2 channel (session channels also have stderr and exit()). */
export type RelayChannel = Channel & {
  exit?(statusOrSignal: number | string, coreDumped?: boolean, msg?: string): void;
};

/** Where client bytes go once the backend is ready (a gRPC call plus its frame encoder). */
export interface BackendInput {
  /** Writes one chunk; false means "full": wait for 'drain'. */
  write(data: Buffer): boolean;
  /** Client EOF (half-close toward the workspace). */
  end(): void;
  once(ev: 'drain', f: () => void): unknown;
  readonly writableLength: number;
  readonly writableObjectMode: boolean;
}

/**
 * What client EOF means: `half-close` passes it to the backend (non-PTY sessions, forwards);
 * `keep-open` keeps the backend's input open, as sshd does for PTY sessions (the shell runs on until
 * it exits; `printf 'cmd\nexit 7\n' | ssh -tt host` works).
 */
export type EofPolicy = 'half-close' | 'keep-open';

/** How a session channel ends (RFC 4254 §6.10). */
export type Ending = { code: number } | { status: ExitStatus } | { none: true };

export const USER_PREFIX = 'ssh-proxy: ';

export class ChannelRelay {
  /** Set by the dispatcher when the channel is recorded. */
  tap: ChannelTap | undefined;
  /** This channel's own bytes (the connection's counters are updated as well). */
  readonly bytes: ByteCounters = { in: 0, out: 0 };
  private input: BackendInput | undefined;
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private clientEof = false;
  private eofDelivered = false;
  private finished = false;
  private closedFlag = false;
  private readonly closedPromise: Promise<void>;
  private earlyWatcher: ((d: Buffer) => void) | undefined;
  private inValve: Valve | undefined;
  private outValve: Valve | undefined;
  private errValve: Valve | undefined;
  private onClientEof: (() => void) | undefined;
  /** The channel's stderr when it is a server session channel (extended data toward the client). */
  private readonly stderr: Writable | undefined;

  constructor(
    readonly channel: RelayChannel,
    private readonly counters: ByteCounters,
    private eofPolicy: EofPolicy,
  ) {
    const err = channel.stderr as Partial<Writable> | undefined;
    this.stderr = typeof err?.write === 'function' ? (err as Writable) : undefined;
    this.closedPromise = new Promise((resolve) =>
      channel.once('close', () => {
        this.closedFlag = true;
        resolve();
      }),
    );
    channel.on('data', (d: Buffer) => this.fromClient(d));
    channel.once('end', () => {
      this.clientEof = true;
      this.deliverEof();
    });
    // ssh2 emits 'error' on channels in rare cases; an unhandled one would kill the process.
    channel.on('error', () => undefined);
    // Flowing from the start: early bytes are collected (bounded) so Ctrl+C can be seen and nothing
    // typed while the workspace starts is lost.
    channel.resume();
  }

  /** Resolves when the channel is closed (by either side). */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Whether the client has sent EOF. */
  get clientEnded(): boolean {
    return this.clientEof;
  }

  setEofPolicy(p: EofPolicy): void {
    this.eofPolicy = p;
  }

  /** Sees every byte that arrives before the backend is attached (Ctrl+C during a start). */
  watchEarlyInput(f: ((d: Buffer) => void) | undefined): void {
    this.earlyWatcher = f;
  }

  /** Called when the client sends EOF after the backend was attached (forwards use it for half-close). */
  onEof(f: () => void): void {
    this.onClientEof = f;
  }

  /**
   * Attaches the backend: the bytes kept so far go first, in order, then live input; `source` is
   * paused while the client's window is full. Client EOF follows the EOF policy.
   */
  connect(input: BackendInput, source: Pausable): void {
    this.input = input;
    this.inValve = new Valve(this.channel, input);
    this.outValve = new Valve(source, this.channel);
    if (this.stderr) this.errValve = new Valve(source, this.stderr);
    const kept = this.early;
    this.early = [];
    this.earlyBytes = 0;
    for (const d of kept) this.pass(d);
    this.channel.resume();
    this.deliverEof();
  }

  private fromClient(d: Buffer): void {
    if (this.input) return this.pass(d);
    this.earlyWatcher?.(d);
    this.early.push(d);
    this.earlyBytes += d.length;
    if (this.earlyBytes >= EARLY_INPUT_LIMIT) this.channel.pause();
  }

  private pass(d: Buffer): void {
    const input = this.input;
    if (!input || d.length === 0) return;
    this.counters.in += d.length;
    this.bytes.in += d.length;
    this.tap?.data('in', d);
    this.inValve?.wrote(input.write(d));
  }

  private deliverEof(): void {
    if (!this.clientEof || !this.input || this.eofDelivered) return;
    this.eofDelivered = true;
    if (this.eofPolicy === 'half-close') this.input.end();
    this.onClientEof?.();
  }

  /** Workspace → client stdout (or the forwarded stream). */
  toClient(data: Buffer): void {
    if (data.length === 0 || !canWrite(this.channel)) return;
    this.counters.out += data.length;
    this.bytes.out += data.length;
    this.tap?.data('out', data);
    const ok = this.channel.write(data);
    this.outValve?.wrote(ok);
  }

  /** Workspace → client stderr (extended data), with the same flow control as stdout. */
  toClientErr(data: Buffer): void {
    const err = this.stderr;
    if (data.length === 0 || !err || !canWrite(err)) return;
    this.counters.out += data.length;
    this.bytes.out += data.length;
    this.tap?.data('err', data);
    const ok = err.write(data);
    this.errValve?.wrote(ok);
  }

  /** Gateway text on stdout (workspace progress): not workspace bytes, so neither counted nor tapped. */
  text(s: string): void {
    if (canWrite(this.channel)) this.channel.write(Buffer.from(s));
  }

  /** One `ssh-proxy: …` line on stderr (session channels only). */
  notice(message: string, pty: boolean): void {
    const err = this.stderr;
    if (err && canWrite(err)) err.write(Buffer.from(`${USER_PREFIX}${message}${pty ? '\r\n' : '\n'}`));
  }

  /** A PTY resize, for the recording. */
  resized(cols: number, rows: number): void {
    this.tap?.resize(cols, rows);
  }

  /** Half-close toward the client once the queued bytes went out (ssh2 drops writes after eof()). */
  async eofToClient(): Promise<void> {
    await flushed(this.channel, this.channel);
    if (this.stderr) await flushed(this.stderr, this.channel);
    if (canWrite(this.channel)) this.channel.eof();
  }

  /**
   * Ends the channel exactly once: stdout and stderr flushed, then exit-status or exit-signal (session
   * channels), then EOF and close (node-notes §3 traps 7 and 8).
   */
  async finish(ending: Ending): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (!this.closedFlag && canWrite(this.channel)) {
      await flushed(this.channel, this.channel);
      if (this.stderr) await flushed(this.stderr, this.channel);
      if (!this.closedFlag && canWrite(this.channel)) {
        if ('code' in ending) this.channel.exit?.(ending.code);
        else if ('status' in ending) this.sendExitStatus(ending.status);
        this.channel.end();
      } else this.channel.close();
    } else if (!this.closedFlag) this.channel.close();
    await this.tap?.close().catch(() => undefined);
  }

  /** Closes without an exit status (forwards; or a session whose client is gone). */
  async close(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (!this.closedFlag) {
      if (canWrite(this.channel)) {
        await flushed(this.channel, this.channel);
        if (canWrite(this.channel)) this.channel.end();
        else this.channel.close();
      } else this.channel.close();
    }
    await this.tap?.close().catch(() => undefined);
  }

  get isFinished(): boolean {
    return this.finished;
  }

  private sendExitStatus(s: ExitStatus): void {
    if (!s.signal) return this.channel.exit?.(s.code);
    try {
      this.channel.exit?.(s.signal, s.coreDumped, s.message);
    } catch {
      // ssh2 throws on signal names outside its table (trap 14): report the conventional 128+n code.
      this.channel.exit?.(s.code > 0 ? s.code : 1);
    }
  }
}
