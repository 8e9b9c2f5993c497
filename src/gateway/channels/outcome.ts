// How a gRPC data stream ends, and the client side of every channel ↔ stream bridge.
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { ServerChannel } from 'ssh2';
import { canWrite, pumpClientToCall, type ByteCounters } from '../relay.js';

export type CallOutcome = { ok: true } | { ok: false; error: unknown };

export function callOutcome<Req, Res>(call: ClientDuplexStream<Req, Res>): Promise<CallOutcome> {
  return new Promise((resolve) => {
    // 'end' comes after the last 'data'; a failed status arrives as 'error'. The error listener
    // stays attached: an unhandled 'error' (e.g. a late write failure) would kill the process.
    call.once('end', () => resolve({ ok: true }));
    call.on('error', (error: unknown) => resolve({ ok: false, error }));
  });
}

/**
 * Feeds client bytes into the call until it ends: client EOF half-closes the call (CloseSend), a
 * closed channel cancels it. Resolves once every response has been delivered. The caller handles the
 * responses ('data' listener) before calling this.
 */
export async function bridgeChannel<Req, Res>(
  channel: ServerChannel,
  call: ClientDuplexStream<Req, Res>,
  frame: (data: Buffer) => Req,
  counters: ByteCounters,
): Promise<CallOutcome> {
  const outcome = callOutcome(call);
  const detach = pumpClientToCall(channel, call, frame, counters);
  channel.once('end', () => canWrite(call) && call.end());
  channel.once('close', () => call.cancel());
  const o = await outcome;
  detach();
  return o;
}
