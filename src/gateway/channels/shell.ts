// `shell` on a session channel → k8shelld Shell (reference-behaviour §13.1, §23.a).
import { ShellStartRequest, type ExitStatus, type ShellResponse } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { describeGrpcError, isCleanEnd } from '../../backends/grpc.js';
import { errText } from '../../ops/log.js';
import type { Ending } from '../relay.js';
import { callInput, callOutcome, isTransportFailure, streamFailureNote } from './call.js';
import type { SessionRun } from './session-context.js';

/** Runs the shell until it ends; returns how the channel ends. Throws only on bugs. */
export async function runShell(
  run: SessionRun,
): Promise<{ ending: Ending; note?: string; broken?: boolean }> {
  const { ws, relay, state, log } = run;
  const pty = state.pty;
  const call = ws.client.shell(state.id);
  const wantExit = ws.handshake.capabilities.has(Capability.shellExitStatus);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: ShellStartRequest.fromPartial({
        asUser: run.asUser,
        cmdShell: '/bin/sh',
        setEnvVars: run.env.envVars,
        setEnvVarsRaw: run.env.envVarsRaw,
        usePty: pty !== undefined,
        width: pty?.cols ?? 0,
        height: pty?.rows ?? 0,
        showInitScriptStatus: true,
        wantExitStatus: wantExit,
      }),
    },
  });
  log.info({ pty: pty !== undefined, workspace: ws.details.name }, 'shell started');

  state.running = {
    resize(cols, rows) {
      if (!pty) return;
      ws.client
        .resize(state.id, cols, rows)
        .catch((e: unknown) => log.warn({ err: errText(e) }, 'resize failed'));
    },
    signal: () => false, // shells take no signals (reference-behaviour §13.1)
  };

  let exit: ExitStatus | undefined;
  call.on('data', (msg: ShellResponse) => {
    const r = msg.response;
    if (r?.$case === 'data') relay.toClient(r.data);
    else if (r?.$case === 'exitStatus') exit = r.exitStatus;
  });
  const outcome = callOutcome(call, relay);
  relay.connect(
    callInput(call, (data) => ({ request: { $case: 'data' as const, data } })),
    call,
  );
  const o = await outcome;
  state.running = undefined;
  if (o.ok || isCleanEnd(o.error)) {
    log.info({ exit: exit ?? null }, 'shell ended');
    return { ending: exit ? { status: exit } : { none: true } };
  }
  log.warn({ err: describeGrpcError(o.error) }, 'shell stream failed');
  return { ending: { code: 1 }, note: streamFailureNote(o.error), broken: isTransportFailure(o.error) };
}
