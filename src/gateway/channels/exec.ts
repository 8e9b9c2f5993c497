// `exec` and `subsystem sftp` on a session channel → k8shelld Exec (reference-behaviour §13.1).
// SFTP is an exec of server.sftpBinary through /bin/sh with an empty environment, byte-exact.
import { CommandDetails, type ExecResponse, type ExitStatus } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { describeGrpcError, isCleanEnd } from '../../backends/grpc.js';
import { canWrite, type Ending } from '../relay.js';
import { callInput, callOutcome, isTransportFailure, streamFailureNote } from './call.js';
import { wireCommand, type SshText } from '../raw-text.js';
import type { SessionRun } from './session-context.js';

export type ExecKind =
  | { type: 'exec'; id: string; command: SshText; shellBinary: string }
  | { type: 'sftp'; id: string; sftpBinary: string };

/** Exit code of `sh -c` when the command is not found. */
const NOT_FOUND = 127;

export async function runExec(
  run: SessionRun,
  kind: ExecKind,
): Promise<{ ending: Ending; note?: string; broken?: boolean }> {
  const { ws, relay, state } = run;
  const log = run.log.child({ exec: kind.id });
  const pty = kind.type === 'exec' ? state.pty : undefined;
  const wantExit = ws.handshake.capabilities.has(Capability.execExitStatus);
  const details =
    kind.type === 'exec'
      ? CommandDetails.fromPartial({
          asUser: run.asUser,
          // Exact bytes (command_raw) when the command is not UTF-8.
          ...wireCommand(kind.command),
          // The daemon falls back to the passwd shell when this is empty or unusable.
          shellBinary: kind.shellBinary,
          envVars: run.env.envVars,
          envVarsRaw: run.env.envVarsRaw,
          usePty: pty !== undefined,
          width: pty?.cols ?? 0,
          height: pty?.rows ?? 0,
          wantExitStatus: wantExit,
        })
      : CommandDetails.fromPartial({
          asUser: run.asUser,
          command: kind.sftpBinary,
          // /bin/sh explicitly, so no login rc output can corrupt the binary protocol.
          shellBinary: '/bin/sh',
          envVars: [],
          wantExitStatus: wantExit,
        });
  const call = ws.client.exec(kind.id);
  call.write({ request: { $case: 'commandDetails', commandDetails: details } });
  log.info({ kind: kind.type, pty: pty !== undefined }, `${kind.type} started`);

  // Client bytes; queued ones go out before a resize or signal, in the order the client sent them.
  const input = callInput(call, (data) => ({ request: { $case: 'input' as const, input: data } }));
  // After one signal the daemon stops reading the stream (wire-protocol §5.4): later ones are moot.
  let signalled = false;
  state.running = {
    resize(cols, rows) {
      if (!pty || !canWrite(call)) return;
      input.flush();
      call.write({ request: { $case: 'resize', resize: { width: cols, height: rows } } });
    },
    signal(name) {
      if (signalled || !canWrite(call)) return false;
      signalled = true;
      input.flush();
      call.write({ request: { $case: 'signal', signal: name.replace(/^SIG/, '') } });
      return true;
    },
  };

  let exitStatus: ExitStatus | undefined;
  let exitCode: number | undefined;
  call.on('data', (msg: ExecResponse) => {
    const r = msg.response;
    switch (r?.$case) {
      case 'stdout':
        relay.toClient(r.stdout);
        break;
      case 'stderr':
        relay.toClientErr(r.stderr);
        break;
      case 'exitStatus':
        exitStatus = r.exitStatus;
        break;
      case 'exitCode':
        exitCode = r.exitCode;
        break;
      default:
        // `pty` (the tty path) and members unknown to this build are ignored (wire-protocol §4).
        break;
    }
  });
  const outcome = callOutcome(call, relay);
  // Client EOF only ends the upload; the call runs on until exit_code (reference-behaviour §12).
  relay.connect(input, call);
  const o = await outcome;
  state.running = undefined;
  const clean = o.ok || isCleanEnd(o.error);
  if (!clean) log.warn({ err: describeGrpcError(o.error) }, `${kind.type} stream failed`);

  let note: string | undefined;
  if (kind.type === 'sftp' && exitCode === NOT_FOUND && !exitStatus?.signal) {
    note =
      `the sftp server '${kind.sftpBinary}' is missing in the workspace ` +
      `(install Debian's openssh-sftp-server package there, or set server.sftpBinary)`;
  } else if (!clean && exitCode === undefined) {
    note = streamFailureNote(o.ok ? undefined : o.error);
  }
  log.info({ exitCode: exitCode ?? null, signal: exitStatus?.signal || null }, `${kind.type} ended`);
  const broken = !clean && exitCode === undefined && isTransportFailure(o.ok ? undefined : o.error);
  if (exitStatus?.signal) return { ending: { status: exitStatus }, note, broken };
  if (exitCode !== undefined) return { ending: { code: exitCode < 0 ? 1 : exitCode }, note, broken };
  // Reference rule: no exit_code → 1 after a transport error, else 0.
  return { ending: { code: clean ? 0 : 1 }, note, broken };
}
