// `direct-tcpip` (-L, -D, -W, ProxyJump, VS Code tunnels) → k8shelld PortForward
// (reference-behaviour §13.2, §23.d, e, j). Every check runs before the open is answered.
import type { AcceptConnection, RejectConnection, ServerChannel, TcpipRequestInfo } from 'ssh2';
import { Destination } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { describeGrpcError, isServiceError } from '../../backends/grpc.js';
import { errText } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { nullProgress } from '../progress.js';
import { OpenFailure, rejectOpen } from '../ssh2-shims/index.js';
import { dialConfirmed, relayForward } from './forward.js';

export async function handleDirectTcpip(
  conn: GatewayConnection,
  accept: AcceptConnection<ServerChannel>,
  reject: RejectConnection,
  info: TcpipRequestInfo | undefined,
): Promise<void> {
  const max = conn.deps.settings.maxDirectTcpip;
  if (conn.directTcpip >= max) {
    conn.log.warn({ max }, 'direct-tcpip limit reached');
    return rejectOpen(
      conn.ssh,
      reject,
      OpenFailure.RESOURCE_SHORTAGE,
      `maximum direct-tcpip connections exceeded (${max})`,
    );
  }
  if (!validPayload(info)) {
    // UNKNOWN_CHANNEL_TYPE is what the reference sends here (sic).
    return rejectOpen(conn.ssh, reject, OpenFailure.UNKNOWN_CHANNEL_TYPE, 'invalid payload');
  }
  conn.directTcpip++;
  conn.ops.add('pf');
  const id = conn.ids.next('pf');
  const log = conn.log.child({ chan: id });
  const host = info.destIP || 'localhost';
  const port = info.destPort;
  try {
    let ws;
    try {
      ws = await conn.workspace(nullProgress, conn.closed);
    } catch (e) {
      log.warn({ err: errText(e) }, 'direct-tcpip: workspace unavailable');
      return rejectOpen(
        conn.ssh,
        reject,
        OpenFailure.CONNECT_FAILED,
        `workspace unavailable: ${userText(e)}`,
      );
    }
    const decision = await conn.deps.authorizer.check({
      action: 'ssh:direct-tcpip',
      username: conn.user.userstr.username,
      workspace: ws.details.name,
      context: { host, port: String(port) },
    });
    if (!decision.allowed) {
      log.warn({ host, port, reason: decision.reason }, 'direct-tcpip denied');
      return rejectOpen(
        conn.ssh,
        reject,
        OpenFailure.ADMINISTRATIVELY_PROHIBITED,
        `denied: ${decision.reason}`,
      );
    }
    const caps = ws.handshake.capabilities;
    const confirm = caps.has(Capability.portForwardConfirmConnect);
    const call = ws.client.portForward(id);
    call.write({
      request: {
        $case: 'destination',
        destination: Destination.fromPartial({
          ip: host,
          port,
          halfClose: caps.has(Capability.portForwardHalfClose),
          confirmConnect: confirm,
        }),
      },
    });
    if (confirm) {
      try {
        await dialConfirmed(call);
      } catch (e) {
        const msg = isServiceError(e) ? e.details : errText(e);
        log.info({ host, port, err: describeGrpcError(e) }, 'direct-tcpip connect failed');
        return rejectOpen(conn.ssh, reject, OpenFailure.CONNECT_FAILED, msg);
      }
    }
    // Without the capability the open is accepted first, as the reference does.
    const channel = accept();
    if (!channel) {
      call.cancel();
      return;
    }
    log.info({ host, port, origin: `${info.srcIP}:${info.srcPort}` }, 'direct-tcpip opened');
    await relayForward(
      channel,
      call,
      (data) => ({ request: { $case: 'data' as const, data } }),
      conn.counters,
      log,
    );
    log.info('direct-tcpip closed');
  } finally {
    conn.directTcpip--;
  }
}

function validPayload(info: TcpipRequestInfo | undefined): info is TcpipRequestInfo {
  return (
    info !== undefined &&
    typeof info.destIP === 'string' &&
    Number.isInteger(info.destPort) &&
    info.destPort >= 0 &&
    info.destPort <= 65535
  );
}

function userText(e: unknown): string {
  const m = (e as { userMessage?: unknown }).userMessage;
  return typeof m === 'string' ? m : errText(e);
}
