// A gRPC data stream seen from a relay: client bytes in as frames, and how the stream ends.
import { status, type ClientDuplexStream } from '@grpc/grpc-js';
import { isServiceError } from '../../backends/grpc.js';
import { FrameGatherer } from '../../common/k8shelld-wire.js';
import { canWrite, type BackendInput, type ChannelRelay } from '../relay.js';

export type CallOutcome = { ok: true } | { ok: false; error: unknown };

/** A BackendInput whose queued client bytes can be sent at once (before a signal or resize). */
export interface CallInput extends BackendInput {
  flush(): void;
}

/**
 * Client bytes → `frame(data)` on the call; client EOF → CloseSend. The SSH packets of one turn of
 * the event loop (ssh2 parses a whole socket read at once) go as one frame of up to 256 KiB, joined
 * with one copy; anything else written on the call must flush() first, so order is kept.
 */
export function callInput<Req, Res>(
  call: ClientDuplexStream<Req, Res>,
  frame: (data: Buffer) => Req,
): CallInput {
  const g = new FrameGatherer(
    (data) => {
      if (canWrite(call)) call.write(frame(data));
    },
    () => canWrite(call) && call.writableNeedDrain,
  );
  return {
    write: (data) => (canWrite(call) ? g.push(data) : true),
    flush: () => void g.flush(),
    end: () => {
      g.flush();
      if (canWrite(call)) call.end();
    },
    once: (ev, f) => call.once(ev, f),
    get writableLength() {
      return call.writableLength + g.pending;
    },
    get writableObjectMode() {
      return call.writableObjectMode;
    },
  };
}

/**
 * Resolves when the call ends ('end' after the last 'data', or 'error' with the status). The call is
 * cancelled when the channel closes first. The error listener stays attached: a late error without
 * one would kill the process.
 */
export function callOutcome<Req, Res>(
  call: ClientDuplexStream<Req, Res>,
  relay: ChannelRelay,
): Promise<CallOutcome> {
  return new Promise((resolve) => {
    call.once('end', () => resolve({ ok: true }));
    call.on('error', (error: unknown) => resolve({ ok: false, error }));
    void relay.closed.then(() => call.cancel());
  });
}

/** The stream failed because the workspace connection did (not because the daemon refused). */
export function isTransportFailure(e: unknown): boolean {
  if (!isServiceError(e)) return true;
  return e.code === status.UNAVAILABLE || e.code === status.DEADLINE_EXCEEDED || e.code === status.INTERNAL;
}

/** What the user is told when a session's stream failed without an exit status. */
export function streamFailureNote(e: unknown): string {
  if (isServiceError(e) && !isTransportFailure(e) && e.details)
    return `the workspace refused the session: ${e.details.replace(/\s+/g, ' ').slice(0, 300)}`;
  return 'the connection to the workspace was lost';
}
