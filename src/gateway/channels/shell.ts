// `shell` on a session channel → k8shelld Shell (reference-behaviour §13.1, §23.a).
import type { ServerChannel } from 'ssh2';
import { ShellStartRequest, type ExitStatus, type ShellResponse } from '../../gen/k8shelld/v1/k8shelld.js';
import { Capability } from '../../backends/k8shelld.js';
import { isCleanEnd, describeGrpcError } from '../../backends/grpc.js';
import { errText } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { loginEnv } from '../env.js';
import { createProgressWriter, nullProgress } from '../progress.js';
import { canWrite, forward, Valve } from '../relay.js';
import { WorkspaceError, type BoundWorkspace } from '../workspace.js';
import { sessionAgent } from './agent-forward.js';
import { finish, refuse, type SessionState } from './common.js';
import { bridgeChannel } from './outcome.js';

const CTRL_C = 0x03;
const EARLY_INPUT_LIMIT = 64 * 1024;

export async function runShell(
  conn: GatewayConnection,
  state: SessionState,
  channel: ServerChannel,
): Promise<void> {
  const { log } = state;
  const pty = state.pty;
  const wo = conn.deps.settings.writerOptions;
  // Progress goes only to interactive PTY shells, on stdout (never to exec, sftp or forwards).
  const progress = pty
    ? createProgressWriter({ write: (s) => void (canWrite(channel) && channel.write(s)) }, wo)
    : nullProgress;

  // Ctrl+C while the workspace starts cancels the start. Other keys typed meanwhile are kept and
  // handed to the shell afterwards, as a terminal would (the reference drops them); past a bound the
  // channel is paused and SSH flow control holds the rest.
  const start = new AbortController();
  const early: Buffer[] = [];
  let earlyBytes = 0;
  const onStartInput = (d: Buffer) => {
    if (d.includes(CTRL_C)) return start.abort();
    early.push(d);
    earlyBytes += d.length;
    if (earlyBytes >= EARLY_INPUT_LIMIT) channel.pause();
  };
  const onClose = () => start.abort();
  channel.once('close', onClose);
  if (pty) channel.on('data', onStartInput);

  let ws: BoundWorkspace;
  try {
    ws = await conn.workspace(progress, start.signal);
  } catch (e) {
    const err = e instanceof WorkspaceError ? e : new WorkspaceError('system', 'internal', errText(e));
    log.warn({ err: err.message, code: err.code }, 'shell: workspace unavailable');
    const shown = pty !== undefined && (err.category === 'user' ? wo.showErrors : wo.showSystemErrors);
    return refuse(channel, shown ? undefined : err.userMessage, pty !== undefined);
  } finally {
    channel.off('data', onStartInput);
    channel.off('close', onClose);
    channel.pause();
    if (early.length && !channel.readableEnded) channel.unshift(Buffer.concat(early));
    progress.close();
  }

  const { userstr, user } = conn.user;
  const decision = await conn.deps.authorizer.check({
    action: 'ssh:shell',
    username: userstr.username,
    workspace: ws.details.name,
    blueprint: ws.details.blueprint,
    context: { ...(pty ? { pty: 'true' } : {}), ...(userstr.asUser ? { as_user: userstr.asUser } : {}) },
    asUser: userstr.asUser,
    sudo: user.sudo,
  });
  if (!decision.allowed) {
    log.warn({ reason: decision.reason }, 'SSH shell denied');
    return refuse(channel, `shell denied: ${decision.reason}`, pty !== undefined);
  }

  // Agent forwarding is checked separately: a refusal only withholds SSH_AUTH_SOCK (§23.d).
  const { agent, env } = await sessionAgent(conn, ws, state, state.id);

  const call = ws.client.shell(state.id);
  const wantExit = ws.handshake.capabilities.has(Capability.shellExitStatus);
  call.write({
    request: {
      $case: 'startRequest',
      startRequest: ShellStartRequest.fromPartial({
        asUser: userstr.asUser,
        cmdShell: '/bin/sh',
        setEnvVars: loginEnv({ shell: user.shell, asUser: userstr.asUser || userstr.username }, env),
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
  const valve = new Valve(call, channel);
  call.on('data', (msg: ShellResponse) => {
    const r = msg.response;
    if (r?.$case === 'data') {
      conn.counters.out += r.data.length;
      forward(valve, channel, r.data);
    } else if (r?.$case === 'exitStatus') {
      exit = r.exitStatus;
    }
  });
  // Client EOF half-closes the call: a non-PTY shell then sees stdin EOF and its output keeps flowing.
  const outcome = await bridgeChannel(
    channel,
    call,
    (data) => ({ request: { $case: 'data' as const, data } }),
    conn.counters,
  );
  agent?.stop();
  state.running = undefined;
  if (outcome.ok || isCleanEnd(outcome.error)) {
    log.info({ exit: exit ?? null }, 'shell ended');
    return finish(channel, exit ? { status: exit } : { none: true });
  }
  log.warn({ err: describeGrpcError(outcome.error) }, 'shell stream failed');
  return finish(channel, { code: 1 }, 'the connection to the workspace was lost', pty !== undefined);
}
