// The forward runner shared by direct-tcpip (PortForward) and direct-streamlocal (UnixSocket DIAL):
// dial first when the agent confirms dials, answer the open exactly once, then relay both ways with
// half-close in both directions. Nothing but destination bytes is ever written onto the channel.
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { StreamEvent } from '../../gen/k8shelld/v1/k8shelld.js';
import { describeGrpcError, isCleanEnd, isServiceError } from '../../backends/grpc.js';
import { errText, type Logger } from '../../ops/log.js';
import type { ChannelRelay } from '../relay.js';
import { OpenFailure, type OpenFailureReason } from '../ssh2-shims/index.js';
import { callInput, callOutcome } from './call.js';

interface ForwardResponse {
  data: Buffer;
  event: StreamEvent;
}

/** The pending channel open of a forward, answered exactly once (by the runner or the dispatcher). */
export interface PendingOpen {
  /** Confirms the open; undefined when it was already answered or the client is gone. */
  accept(): ChannelRelay | undefined;
  reject(reason: OpenFailureReason, message: string): void;
}

export interface ForwardRun {
  open: PendingOpen;
  log: Logger;
  /** The agent sends STREAM_EVENT_OPENED after dialling (wire-protocol §9.5): answer the open after it. */
  confirm: boolean;
  dialTimeoutMs: number;
}

/**
 * Waits for the agent's dial confirmation: resolves on OPENED, rejects with the call's error (e.g.
 * UNAVAILABLE "dial tcp …: connection refused") or when the deadline passes.
 */
export function dialConfirmed<Req>(
  call: ClientDuplexStream<Req, ForwardResponse>,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`the workspace did not connect within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
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
      clearTimeout(timer);
      call.off('data', onData);
      call.off('error', onError);
      call.off('end', onEnd);
    };
    call.on('data', onData);
    call.on('error', onError);
    call.on('end', onEnd);
  });
}

/** Runs one forward to its end. Returns whether the stream failed (the workspace may be gone). */
export async function runForward<Req>(
  f: ForwardRun,
  call: ClientDuplexStream<Req, ForwardResponse>,
  frame: (data: Buffer) => Req,
): Promise<{ failed: boolean }> {
  // Until the relay listens, an error must not go unhandled.
  call.on('error', () => undefined);
  if (f.confirm) {
    try {
      await dialConfirmed(call, f.dialTimeoutMs);
    } catch (e) {
      const msg = isServiceError(e) ? e.details : errText(e);
      f.log.info({ err: describeGrpcError(e) }, 'forward connect failed');
      call.cancel();
      f.open.reject(OpenFailure.CONNECT_FAILED, msg);
      return { failed: false };
    }
  }
  // Without the capability the open is accepted first, as the reference does.
  const relay = f.open.accept();
  if (!relay) {
    call.cancel();
    return { failed: false };
  }
  call.on('data', (r: ForwardResponse) => {
    if (r.data.length) relay.toClient(r.data);
    // Destination EOF: half-close toward the client, which may still send.
    if (r.event === StreamEvent.STREAM_EVENT_EOF) void relay.eofToClient();
  });
  const outcome = callOutcome(call, relay);
  // Client EOF half-closes the call (CloseSend): with half-close support the agent shuts down only the
  // write side toward the destination, otherwise it ends the forward (the reference behaviour).
  relay.connect(callInput(call, frame), call);
  call.resume();
  const o = await outcome;
  const failed = !o.ok && !isCleanEnd(o.error);
  if (failed) f.log.info({ err: describeGrpcError(o.error) }, 'forward ended with an error');
  // EOF (if not yet sent) and close: a forward is never left half-open.
  await relay.close();
  return { failed };
}
