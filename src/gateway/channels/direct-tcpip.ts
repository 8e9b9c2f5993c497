// `direct-tcpip` (-L, -D, -W, ProxyJump, VS Code tunnels) → k8shelld PortForward
// (reference-behaviour §13.2, §23.d, e, j). The dispatcher has checked the limit, the payload and the
// policy; this dials through the workspace and relays.
import { Destination } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import type { BoundWorkspace } from '../workspace.js';
import { runForward, type ForwardRun } from './forward.js';

export function runDirectTcpip(
  ws: BoundWorkspace,
  id: string,
  dest: { host: string; port: number },
  run: Omit<ForwardRun, 'confirm'>,
): Promise<{ failed: boolean }> {
  const caps = ws.handshake.capabilities;
  const confirm = caps.has(Capability.portForwardConfirmConnect);
  const call = ws.client.portForward(id);
  call.write({
    request: {
      $case: 'destination',
      destination: Destination.fromPartial({
        ip: dest.host,
        port: dest.port,
        halfClose: caps.has(Capability.portForwardHalfClose),
        confirmConnect: confirm,
      }),
    },
  });
  return runForward({ ...run, confirm }, call, (data) => ({ request: { $case: 'data' as const, data } }));
}
