// PortForward (§5.5, §9.5): dial TCP from the agent's host and relay bytes.
import { connect, type Socket } from 'node:net';
import { status, type handleBidiStreamingCall } from '@grpc/grpc-js';
import {
  PortForwardResponse,
  StreamEvent,
  type Destination,
  type PortForwardRequest,
} from '../gen/k8shelld/v1/k8shelld.js';
import { errText } from '../ops/log.js';
import { SocketBridge } from './bridge.js';
import type { AgentContext } from './context.js';
import { metadataValue, Stream } from './rpc.js';

const DIAL_TIMEOUT_MS = 30_000;

export function portForwardHandler(
  ctx: AgentContext,
): handleBidiStreamingCall<PortForwardRequest, PortForwardResponse> {
  return (call) => {
    const s = new Stream(call);
    const id = metadataValue(call.metadata, 'portforward-id');
    if (!id) return s.fail(status.INVALID_ARGUMENT, 'missing portforward-id metadata');
    const log = ctx.log.child({ chan: id, rpc: 'PortForward' });
    let bridge: SocketBridge<PortForwardRequest, PortForwardResponse> | undefined;
    let started = false;

    const start = (dest: Destination) => {
      const host = dest.ip || 'localhost';
      const port = dest.port & 0xffff;
      call.pause();
      const sock: Socket = connect({ host, port, allowHalfOpen: true });
      sock.setNoDelay(true);
      const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), DIAL_TIMEOUT_MS);
      s.onCancel(() => sock.destroy());
      const onDialError = (err: Error) => {
        clearTimeout(timer);
        log.debug({ host, port, err: errText(err) }, 'dial failed');
        s.fail(status.UNAVAILABLE, `dial tcp ${host}:${port}: ${errText(err)}`);
      };
      sock.once('error', onDialError);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.off('error', onDialError);
        if (s.done) return void sock.destroy();
        if (dest.confirmConnect)
          s.send(PortForwardResponse.fromPartial({ event: StreamEvent.STREAM_EVENT_OPENED }));
        bridge = new SocketBridge({
          s,
          sock,
          halfClose: dest.halfClose,
          dataMsg: (data) => ({ data, event: StreamEvent.STREAM_EVENT_NONE }),
          eofMsg: () => PortForwardResponse.fromPartial({ event: StreamEvent.STREAM_EVENT_EOF }),
          pauseClient: () => call.pause(),
          resumeClient: () => call.resume(),
          log,
        });
        call.resume();
      });
    };

    call.on('data', (req: PortForwardRequest) => {
      if (s.done) return;
      const r = req.request;
      if (!started) {
        started = true;
        if (r?.$case !== 'destination')
          return s.fail(status.INVALID_ARGUMENT, 'first message must be destination');
        return start(r.destination);
      }
      // A second destination ends the forward, as the daemon does.
      if (r?.$case === 'destination') return bridge?.stop();
      if (r?.$case === 'data') bridge?.write(r.data);
    });
    call.on('end', () => {
      if (bridge) bridge.clientEnd();
      else if (!started) s.finish();
    });
  };
}
