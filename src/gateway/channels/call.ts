// A gRPC data stream seen from a relay: client bytes in as frames, and how the stream ends.
import { status, type ClientDuplexStream } from '@grpc/grpc-js';
import { isServiceError } from '../../backends/grpc.js';
import { canWrite, type BackendInput, type ChannelRelay } from '../relay.js';

export type CallOutcome = { ok: true } | { ok: false; error: unknown };

/** Client bytes → `frame(data)` on the call; client EOF → CloseSend. */
export function callInput<Req, Res>(
  call: ClientDuplexStream<Req, Res>,
  frame: (data: Buffer) => Req,
): BackendInput {
  return {
    write: (data) => (canWrite(call) ? call.write(frame(data)) : true),
    end: () => {
      if (canWrite(call)) call.end();
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
