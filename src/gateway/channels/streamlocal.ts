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
  // With our agent the channel is confirmed only once the socket is reached (docs/security.md).
  const confirmConnect = caps.has(Capability.unixSocketConfirmConnect);
  const call = ws.client.unixSocket(id);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: UnixSocketStartRequest.fromPartial({
        mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL,
        socketPath,
        halfClose: caps.has(Capability.unixSocketHalfClose),
        confirmConnect,
      }),
    },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  });
  // Without the extension the DIAL stream has no confirmation; a failed dial ends it (INTERNAL) at once.
  return runForward({ ...run, confirm: confirmConnect }, call, (data) => ({
    request: { $case: 'data' as const, data },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  }));
}
