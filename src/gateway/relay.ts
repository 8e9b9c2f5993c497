// The data path between an SSH channel and a gRPC stream, in one place.
//
// Backpressure holds end to end: when the gRPC call's write buffer is full the SSH channel is paused
// (ssh2 then stops granting window to the client), and when the SSH client's window is exhausted the
// gRPC call is paused (HTTP/2 flow control then stops the agent). Nothing is buffered without bound.
// `Tap` is the single place where a session recorder will observe the bytes (a later issue).
import type { Readable, Writable } from 'node:stream';

export type Direction = 'in' | 'out' | 'err';
/** Observes relayed bytes; must not keep references to `data` beyond the call unless it copies. */
export type Tap = (direction: Direction, data: Buffer) => void;

export interface ByteCounters {
  /** client → workspace */
  in: number;
  /** workspace → client */
  out: number;
}

/**
 * How much a byte-stream sink (an SSH channel) may hold before its source is paused. ssh2 channels
 * keep Node's default 16 KiB high-water mark, so write() reports "full" for every 32 KiB packet;
 * pausing the gRPC call on each of those turned the relay into a ping-pong (half the time idle).
 * Nothing is unbounded: the sink's buffer stays under this limit plus one frame.
 */
export const BYTE_SINK_LIMIT = 1024 * 1024;

interface Sink {
  once(ev: 'drain', f: () => void): unknown;
  readonly writableLength: number;
  readonly writableObjectMode: boolean;
}

/** Pauses `source` while `sink` is full; one pending 'drain' listener at most. */
export class Valve {
  private waiting = false;
  constructor(
    private readonly source: { pause(): unknown; resume(): unknown },
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
 * Client bytes → gRPC frames. Resumes the channel (it may have been paused while the workspace was
 * being resolved). Returns a function that detaches the listener.
 */
export function pumpClientToCall(
  channel: Readable,
  call: Writable,
  frame: (data: Buffer) => unknown,
  counters: ByteCounters,
  tap?: Tap,
): () => void {
  const valve = new Valve(channel, call);
  const onData = (data: Buffer) => {
    counters.in += data.length;
    tap?.('in', data);
    if (canWrite(call)) valve.wrote(call.write(frame(data)));
  };
  channel.on('data', onData);
  channel.resume();
  return () => channel.off('data', onData);
}

/** One workspace → client write with backpressure onto the gRPC call. */
export function forward(valve: Valve, out: Writable, data: Buffer): void {
  if (data.length === 0 || !canWrite(out)) return;
  valve.wrote(out.write(data));
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
