// The byte relay shared by direct-tcpip (PortForward) and direct-streamlocal (UnixSocket DIAL):
// data both ways with backpressure, half-close both ways when the agent supports it, and nothing
// but destination bytes ever written onto the channel (never stderr, never progress).
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { ServerChannel } from 'ssh2';
import { StreamEvent } from '../../gen/k8shelld/v1/k8shelld.js';
import { describeGrpcError, isCleanEnd } from '../../backends/grpc.js';
import type { Logger } from '../../ops/log.js';
import { canWrite, flushed, forward, Valve, type ByteCounters } from '../relay.js';
import { bridgeChannel } from './outcome.js';

interface ForwardResponse {
  data: Buffer;
  event: StreamEvent;
}

/**
 * Waits for the agent's dial confirmation (wire-protocol §9.5): resolves on OPENED, rejects with the
 * call's error (e.g. UNAVAILABLE "dial tcp …: connection refused") when the dial fails.
 */
export function dialConfirmed<Req>(call: ClientDuplexStream<Req, ForwardResponse>): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = (r: ForwardResponse) => {
      if (r.event !== StreamEvent.STREAM_EVENT_OPENED) return;
      cleanup();
      // Later frames must wait for the relay's listener.
      call.pause();
      resolve();
    };
    const onError = (e: unknown) => {
      cleanup();
      reject(e instanceof Error ? e : new Error(String(e)));
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('the workspace ended the forward before connecting'));
    };
    const cleanup = () => {
      call.off('data', onData);
      call.off('error', onError);
      call.off('end', onEnd);
    };
    call.on('data', onData);
    call.on('error', onError);
    call.on('end', onEnd);
  });
}

export async function relayForward<Req>(
  channel: ServerChannel,
  call: ClientDuplexStream<Req, ForwardResponse>,
  frame: (data: Buffer) => Req,
  counters: ByteCounters,
  log: Logger,
): Promise<void> {
  const valve = new Valve(call, channel);
  call.on('data', (r: ForwardResponse) => {
    if (r.data.length) {
      counters.out += r.data.length;
      forward(valve, channel, r.data);
    }
    // Destination EOF: half-close toward the client, which may still send. Only after the bytes
    // already queued on the channel went out: ssh2 drops (and never acknowledges) writes after eof().
    if (r.event === StreamEvent.STREAM_EVENT_EOF)
      void flushed(channel, channel).then(() => canWrite(channel) && channel.eof());
  });
  channel.on('error', (e: Error) => log.debug({ err: e.message }, 'forward channel error'));
  call.resume();
  // Client EOF half-closes the call (CloseSend): with half-close support the agent shuts down only
  // the write side toward the destination, otherwise it ends the forward (the reference behaviour).
  const o = await bridgeChannel(channel, call, frame, counters);
  if (!o.ok && !isCleanEnd(o.error))
    log.info({ err: describeGrpcError(o.error) }, 'forward ended with an error');
  // EOF (if not yet sent) and close: a forward is never left half-open.
  if (canWrite(channel)) channel.end();
  else channel.close();
}
