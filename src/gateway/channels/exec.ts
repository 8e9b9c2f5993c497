// `exec` and `subsystem sftp` on a session channel → k8shelld Exec (reference-behaviour §13.1).
// SFTP is an exec of server.sftpBinary through /bin/sh with an empty environment, byte-exact.
import type { ServerChannel } from 'ssh2';
import { CommandDetails, type ExecResponse, type ExitStatus } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { describeGrpcError, isCleanEnd } from '../../backends/grpc.js';
import { errText } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { loginEnv } from '../env.js';
import { nullProgress } from '../progress.js';
import { canWrite, forward, Valve } from '../relay.js';
import { WorkspaceError, type BoundWorkspace } from '../workspace.js';
import { sessionAgent } from './agent-forward.js';
import { finish, refuse, type SessionState } from './common.js';
import { bridgeChannel } from './outcome.js';

export type ExecKind = { type: 'exec'; command: string } | { type: 'sftp' };

/** Exit code of `sh -c` when the command is not found. */
const NOT_FOUND = 127;

export async function runExec(
  conn: GatewayConnection,
  state: SessionState,
  channel: ServerChannel,
  kind: ExecKind,
): Promise<void> {
  const { log } = state;
  const pty = kind.type === 'exec' ? state.pty : undefined;
  const closed = new AbortController();
  const onClose = () => closed.abort();
  channel.once('close', onClose);

  let ws: BoundWorkspace;
  try {
    ws = await conn.workspace(nullProgress, closed.signal);
  } catch (e) {
    const err = e instanceof WorkspaceError ? e : new WorkspaceError('system', 'internal', errText(e));
    log.warn({ err: err.message, code: err.code }, `${kind.type}: workspace unavailable`);
    return refuse(channel, err.userMessage, pty !== undefined);
  } finally {
    channel.off('close', onClose);
  }

  const { userstr, user } = conn.user;
  const settings = conn.deps.settings;
  const decision = await conn.deps.authorizer.check({
    action: kind.type === 'exec' ? 'ssh:exec' : 'ssh:sftp',
    username: userstr.username,
    workspace: ws.details.name,
    context: kind.type === 'exec' ? { command: kind.command } : {},
    asUser: userstr.asUser,
    sudo: user.sudo,
  });
  if (!decision.allowed) {
    log.warn({ reason: decision.reason }, `${kind.type} denied`);
    return refuse(channel, `${kind.type} denied: ${decision.reason}`, pty !== undefined);
  }

  const id = conn.ids.next(kind.type === 'exec' ? 'ex' : 'sf');
  // Unlike the reference, exec sessions get agent forwarding too (§23.f); sftp never does.
  const { agent, env } =
    kind.type === 'exec' ? await sessionAgent(conn, ws, state, id) : { agent: undefined, env: state.env };
  const wantExit = ws.handshake.capabilities.has(Capability.execExitStatus);
  const details =
    kind.type === 'exec'
      ? CommandDetails.fromPartial({
          asUser: userstr.asUser,
          command: kind.command,
          // The daemon falls back to the passwd shell when this is empty or unusable.
          shellBinary: user.shell,
          envVars: loginEnv({ shell: user.shell, asUser: userstr.asUser || userstr.username }, env),
          usePty: pty !== undefined,
          width: pty?.cols ?? 0,
          height: pty?.rows ?? 0,
          wantExitStatus: wantExit,
        })
      : CommandDetails.fromPartial({
          asUser: userstr.asUser,
          command: settings.sftpBinary,
          // /bin/sh explicitly, so no login rc output can corrupt the binary protocol.
          shellBinary: '/bin/sh',
          envVars: [],
          wantExitStatus: wantExit,
        });
  const call = ws.client.exec(id);
  const chanLog = log.child({ exec: id });
  call.write({ request: { $case: 'commandDetails', commandDetails: details } });
  chanLog.info({ kind: kind.type, pty: pty !== undefined }, `${kind.type} started`);

  // After one signal the daemon stops reading the stream (wire-protocol §5.4): later ones are moot.
  let signalled = false;
  state.running = {
    resize(cols, rows) {
      if (pty && canWrite(call))
        call.write({ request: { $case: 'resize', resize: { width: cols, height: rows } } });
    },
    signal(name) {
      if (signalled || !canWrite(call)) return false;
      signalled = true;
      call.write({ request: { $case: 'signal', signal: name.replace(/^SIG/, '') } });
      return true;
    },
  };

  let exitStatus: ExitStatus | undefined;
  let exitCode: number | undefined;
  const outValve = new Valve(call, channel);
  const errValve = new Valve(call, channel.stderr);
  call.on('data', (msg: ExecResponse) => {
    const r = msg.response;
    switch (r?.$case) {
      case 'stdout':
        conn.counters.out += r.stdout.length;
        forward(outValve, channel, r.stdout);
        break;
      case 'stderr':
        conn.counters.out += r.stderr.length;
        forward(errValve, channel.stderr, r.stderr);
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
  // Client EOF only ends the upload; the call runs on until exit_code (reference-behaviour §12).
  const outcome = await bridgeChannel(
    channel,
    call,
    (input) => ({ request: { $case: 'input' as const, input } }),
    conn.counters,
  );
  agent?.stop();
  state.running = undefined;
  const clean = outcome.ok || isCleanEnd(outcome.error);
  if (!clean) chanLog.warn({ err: describeGrpcError(outcome.error) }, `${kind.type} stream failed`);

  let note: string | undefined;
  if (kind.type === 'sftp' && exitCode === NOT_FOUND && !exitStatus?.signal) {
    note =
      `the sftp server '${settings.sftpBinary}' is missing in the workspace ` +
      `(install Debian's openssh-sftp-server package there, or set server.sftpBinary)`;
  } else if (!clean && exitCode === undefined) {
    note = 'the connection to the workspace was lost';
  }
  chanLog.info({ exitCode: exitCode ?? null, signal: exitStatus?.signal || null }, `${kind.type} ended`);
  if (exitStatus?.signal) return finish(channel, { status: exitStatus }, note, pty !== undefined);
  if (exitCode !== undefined)
    return finish(channel, { code: exitCode < 0 ? 1 : exitCode }, note, pty !== undefined);
  // Reference rule: no exit_code → 1 after a transport error, else 0.
  return finish(channel, { code: clean ? 0 : 1 }, note, pty !== undefined);
}
