// Small helpers shared by the agent's RPC handlers: ids from metadata, status mapping, framing, and a
// wrapper around a server bidi stream that ends it exactly once.
import { status, type Metadata, type ServerDuplexStream, type ServerErrorResponse } from '@grpc/grpc-js';
import { isProxyError } from '../common/errors.js';
import { MAX_DATA_FRAME } from '../common/k8shelld-wire.js';
import { errText } from '../ops/log.js';

/**
 * Largest data frame the agent sends. The reference reads 32 KiB at a time; bulk data goes in larger
 * frames (fewer per-message costs), within what the reference daemon and the gateway accept.
 */
export const MAX_FRAME = MAX_DATA_FRAME;

export function grpcError(code: status, details: string): ServerErrorResponse {
  const e = new Error(details) as ServerErrorResponse;
  e.code = code;
  e.details = details;
  return e;
}

/** Maps a thrown value to a status: ProxyError codes where known, UNKNOWN otherwise (as the daemon). */
export function toStatus(err: unknown, fallback: status = status.UNKNOWN): { code: status; details: string } {
  if (isProxyError(err)) {
    const map: Partial<Record<typeof err.code, status>> = {
      denied: status.PERMISSION_DENIED,
      bad_input: status.INVALID_ARGUMENT,
      already_exists: status.ALREADY_EXISTS,
      unauthenticated: status.UNAUTHENTICATED,
      unavailable: status.UNAVAILABLE,
      internal: status.INTERNAL,
    };
    return { code: map[err.code] ?? fallback, details: err.message };
  }
  if (err instanceof Error && typeof (err as Partial<ServerErrorResponse>).code === 'number') {
    const e = err as ServerErrorResponse;
    return { code: e.code ?? fallback, details: e.details ?? e.message };
  }
  return { code: fallback, details: errText(err) };
}

/** First value of a metadata key as a trimmed string; undefined when absent or empty. */
export function metadataValue(md: Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  const s = typeof v === 'string' ? v : v instanceof Buffer ? v.toString('utf8') : '';
  return s.trim() || undefined;
}

/** Splits a buffer into frames of at most MAX_FRAME bytes (no copies). */
export function* frames(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += MAX_FRAME) yield buf.subarray(i, Math.min(i + MAX_FRAME, buf.length));
}

export class Stream<Req, Res> {
  private ended = false;
  private wasCancelled = false;
  private readonly cancelHandlers: (() => void)[] = [];

  constructor(readonly call: ServerDuplexStream<Req, Res>) {
    call.on('cancelled', () => {
      this.wasCancelled = true;
      this.ended = true;
      for (const h of this.cancelHandlers.splice(0)) h();
    });
    // grpc-js installs its own 'error' listener; this one only keeps late errors from being unhandled.
    call.on('error', () => undefined);
  }

  get done(): boolean {
    return this.ended;
  }

  get cancelled(): boolean {
    return this.wasCancelled;
  }

  /** Registers cleanup for a client cancel or disconnect (runs at once if that already happened). */
  onCancel(fn: () => void): void {
    if (this.wasCancelled) fn();
    else this.cancelHandlers.push(fn);
  }

  /** Writes a message; false means "slow down" (wait for whenDrained). No-op after the end. */
  send(msg: Res): boolean {
    if (this.ended) return true;
    return this.call.write(msg);
  }

  /** Whether the outgoing buffer is over its mark ('drain' will follow). */
  get needsDrain(): boolean {
    return !this.ended && this.call.writableNeedDrain;
  }

  /** Runs fn once the outgoing buffer has drained (or at once when the stream is over). */
  whenDrained(fn: () => void): void {
    if (this.ended || !this.call.writableNeedDrain) {
      fn();
      return;
    }
    this.call.once('drain', fn);
  }

  /** Ends the call with OK after all queued messages. */
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.call.end();
  }

  /** Ends the call with an error status. */
  fail(code: status, details: string): void {
    if (this.ended) return;
    this.ended = true;
    this.call.emit('error', grpcError(code, details));
  }
}
