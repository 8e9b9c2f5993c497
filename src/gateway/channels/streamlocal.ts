// `direct-streamlocal@openssh.com` (-L local:/remote.sock) → k8shelld UnixSocket DIAL
// (reference-behaviour §13.3). Unlike the reference it is authorised (§23.d) and refusals are explained.
import type { AcceptConnection, RejectConnection, ServerChannel, SocketRequestInfo } from 'ssh2';
import { UnixSocketMode, UnixSocketStartRequest, StreamEvent } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { errText } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { nullProgress } from '../progress.js';
import { OpenFailure, rejectOpen } from '../ssh2-shims/index.js';
import { relayForward } from './forward.js';

export async function handleStreamLocal(
  conn: GatewayConnection,
  accept: AcceptConnection<ServerChannel>,
  reject: RejectConnection,
  info: SocketRequestInfo | undefined,
): Promise<void> {
  const socketPath = info?.socketPath;
  if (typeof socketPath !== 'string' || socketPath === '') {
    return rejectOpen(
      conn.ssh,
      reject,
      OpenFailure.ADMINISTRATIVELY_PROHIBITED,
      'bad direct-streamlocal payload',
    );
  }
  conn.ops.add('ux');
  const id = conn.ids.next('ux');
  const log = conn.log.child({ chan: id });
  let ws;
  try {
    ws = await conn.workspace(nullProgress, conn.closed);
  } catch (e) {
    log.warn({ err: errText(e) }, 'direct-streamlocal: workspace unavailable');
    return rejectOpen(conn.ssh, reject, OpenFailure.CONNECT_FAILED, 'workspace unavailable');
  }
  const decision = await conn.deps.authorizer.check({
    action: 'ssh:direct-streamlocal',
    username: conn.user.userstr.username,
    workspace: ws.details.name,
    context: { socket_path: socketPath },
  });
  if (!decision.allowed) {
    log.warn({ socketPath, reason: decision.reason }, 'direct-streamlocal denied');
    return rejectOpen(
      conn.ssh,
      reject,
      OpenFailure.ADMINISTRATIVELY_PROHIBITED,
      `denied: ${decision.reason}`,
    );
  }
  const call = ws.client.unixSocket(id);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: UnixSocketStartRequest.fromPartial({
        mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL,
        socketPath,
        halfClose: ws.handshake.capabilities.has(Capability.unixSocketHalfClose),
      }),
    },
    connectionId: 0,
    event: StreamEvent.STREAM_EVENT_NONE,
  });
  const channel = accept();
  if (!channel) {
    call.cancel();
    return;
  }
  log.info({ socketPath }, 'direct-streamlocal opened');
  await relayForward(
    channel,
    call,
    (data) => ({
      request: { $case: 'data' as const, data },
      connectionId: 0,
      event: StreamEvent.STREAM_EVENT_NONE,
    }),
    conn.counters,
    log,
  );
  log.info('direct-streamlocal closed');
}
