// How a gRPC data stream ended, once all of its messages have been delivered.
import type { ClientDuplexStream } from '@grpc/grpc-js';

export type CallOutcome = { ok: true } | { ok: false; error: unknown };

export function callOutcome<Req, Res>(call: ClientDuplexStream<Req, Res>): Promise<CallOutcome> {
  return new Promise((resolve) => {
    // 'end' comes after the last 'data'; a failed status arrives as 'error'. The error listener
    // stays attached: an unhandled 'error' (e.g. a late write failure) would kill the process.
    call.once('end', () => resolve({ ok: true }));
    call.on('error', (error: unknown) => resolve({ ok: false, error }));
  });
}
