// `direct-streamlocal@openssh.com` (-L local:/remote.sock) → k8shelld UnixSocket DIAL
// (reference-behaviour §13.3, §23.d). The dispatcher has checked the limit, the payload and the
// policy (unlike the reference, which never authorises it); this dials in the workspace and relays.
import { StreamEvent, UnixSocketMode, UnixSocketStartRequest } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import type { BoundWorkspace } from '../workspace.js';
import { runForward, type ForwardRun } from './forward.js';

export function runStreamLocal(
  ws: BoundWorkspace,
  id: string,
  socketPath: string,
  run: Omit<ForwardRun, 'confirm'>,
): Promise<{ failed: boolean }> {
  const caps = ws.handshake.capabilities;
  const call = ws.client.unixSocket(id);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: UnixSocketStartRequest.fromPartial({
        mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL,
        socketPath,
        halfClose: caps.has(Capability.unixSocketHalfClose),
      }),
    },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  });
  // The DIAL stream has no dial confirmation; a failed dial ends the stream (INTERNAL) right away.
  return runForward({ ...run, confirm: false }, call, (data) => ({
    request: { $case: 'data' as const, data },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  }));
}
