// Shell, ResizeTerminal, AcquireSession and ListSessions (§5.2, §5.3, §5.8, §9.3).
import { basename } from 'node:path';
import {
  status,
  type handleBidiStreamingCall,
  type handleUnaryCall,
  type ServerDuplexStream,
} from '@grpc/grpc-js';
import {
  ResizeTerminalResponse,
  ShellResponse,
  type AcquireSessionRequest,
  type AcquireSessionResponse,
  type ListSessionsRequest,
  type ListSessionsResponse,
  type ResizeTerminalRequest,
  type ShellRequest,
  type ShellStartRequest,
} from '../gen/k8shelld/v1/k8shelld.js';
import { errText } from '../ops/log.js';
import { workDir, type AgentContext } from './context.js';
import { envBytes } from '../common/raw-text.js';
import { buildEnv, chooseLoginShell } from './launch.js';
import { sessionDefaults } from './session-env.js';
import { frames, grpcError, metadataValue, Stream, toStatus } from './rpc.js';
import { Shell } from './shell.js';

const DETACH_DISABLED = 'session detach is disabled';

export function shellHandler(ctx: AgentContext): handleBidiStreamingCall<ShellRequest, ShellResponse> {
  return (call) => void new ShellCall(ctx, call).run();
}

class ShellCall {
  private readonly s: Stream<ShellRequest, ShellResponse>;
  private shell: Shell | undefined;
  private started = false;
  private wantExit = false;

  constructor(
    private readonly ctx: AgentContext,
    private readonly call: ServerDuplexStream<ShellRequest, ShellResponse>,
  ) {
    this.s = new Stream(call);
  }

  run(): void {
    const id = metadataValue(this.call.metadata, 'session-id');
    if (!id) {
      this.s.fail(status.INVALID_ARGUMENT, 'missing session-id metadata');
      return;
    }
    const log = this.ctx.log.child({ chan: id, rpc: 'Shell' });
    this.s.onCancel(() => {
      // No detach support yet: a cancelled client destroys its shell (§5.2).
      this.shell?.destroy();
    });
    this.call.on('data', (req: ShellRequest) => {
      if (this.s.done) return;
      if (!this.started) {
        this.started = true;
        if (req.request?.$case !== 'startRequest') {
          this.s.fail(status.INVALID_ARGUMENT, 'first message must be start_request');
          return;
        }
        this.call.pause();
        this.start(id, req.request.startRequest).then(
          () => this.call.resume(),
          (err: unknown) => {
            const st = toStatus(err);
            log.info({ err: errText(err) }, 'shell start failed');
            this.s.fail(st.code, st.details);
          },
        );
        return;
      }
      this.input(req);
    });
    this.call.on('end', () => {
      if (!this.shell) {
        this.s.finish();
        return;
      }
      // A PTY cannot be half-closed: like sshd, the shell runs on until it exits (the reference daemon
      // destroys it here; our gateway never half-closes a PTY shell). Non-PTY: stdin gets EOF.
      if (!this.shell.usePty) this.shell.endInput();
    });
  }

  private async start(id: string, req: ShellStartRequest): Promise<void> {
    const { store, users } = this.ctx;
    if (req.lockId && !req.usePty) throw grpcError(status.INVALID_ARGUMENT, 'lock_id requires usePty');
    store.reserve(id, 'session');
    let shell: Shell;
    try {
      if (req.detachOnClose || req.lockId) throw grpcError(status.PERMISSION_DENIED, DETACH_DISABLED);
      const runAs = await users.resolve(req.asUser);
      const file = chooseLoginShell(runAs.user.shell, req.cmdShell);
      const { env, raw } = buildEnv(
        this.ctx.baseEnv,
        envBytes(req.setEnvVars, req.setEnvVarsRaw),
        sessionDefaults(runAs.user, file),
        { HOME: runAs.home, K8SHELL_SESSION_ID: id },
      );
      if (this.s.done) throw grpcError(status.CANCELLED, 'client went away');
      shell = new Shell({
        id,
        user: runAs.user.name,
        launch: {
          file,
          argv0: `-${basename(file)}`,
          args: [],
          cwd: workDir(runAs.home),
          env,
          rawEnv: raw,
          sshTty: req.usePty,
          creds: runAs.creds,
        },
        usePty: req.usePty,
        cols: req.width > 0 && req.height > 0 ? req.width : 0,
        rows: req.width > 0 && req.height > 0 ? req.height : 0,
        onFinished: (sh) => store.finish(sh.id),
      });
    } catch (err) {
      store.release(id);
      throw err;
    }
    store.set(shell);
    this.shell = shell;
    this.wantExit = req.wantExitStatus;
    this.ctx.log.debug({ chan: id, pid: shell.pid, pty: shell.pty, user: shell.user }, 'shell started');
    this.s.send(
      ShellResponse.fromPartial({ response: { $case: 'startResponse', startResponse: { pty: shell.pty } } }),
    );
    shell.attach({
      output: (data) => {
        let ok = true;
        for (const f of frames(data)) ok = this.s.send({ response: { $case: 'data', data: f } });
        if (!ok) this.s.whenDrained(() => shell.resumeOutput());
        return ok;
      },
      ended: (exit) => {
        if (this.wantExit && exit && !this.ctx.closing()) {
          this.s.send({ response: { $case: 'exitStatus', exitStatus: { ...exit, message: '' } } });
        }
        this.s.finish();
      },
    });
    if (this.s.cancelled) shell.destroy();
  }

  private input(req: ShellRequest): void {
    const shell = this.shell;
    if (!shell) return;
    const data = req.request?.$case === 'data' ? req.request.data : undefined;
    if (shell.usePty) {
      // Non-data messages after the start are ignored for PTY shells.
      if (data && data.length) shell.write(data);
      return;
    }
    if (!data || data.length === 0) {
      shell.destroy();
      this.s.fail(status.UNKNOWN, 'received empty data');
      return;
    }
    if (!shell.write(data)) {
      this.call.pause();
      shell.onInputDrain(() => this.call.resume());
    }
  }
}

export function resizeHandler(
  ctx: AgentContext,
): handleUnaryCall<ResizeTerminalRequest, ResizeTerminalResponse> {
  return (call, cb) => {
    const id = metadataValue(call.metadata, 'session-id');
    if (!id) return cb(grpcError(status.INVALID_ARGUMENT, 'missing session-id metadata'));
    const item = ctx.store.get(id);
    if (!(item instanceof Shell)) return cb(grpcError(status.NOT_FOUND, `session '${id}' not found`));
    const cols = Math.min(call.request.width, 0xffff);
    const rows = Math.min(call.request.height, 0xffff);
    if (cols > 0 && rows > 0) {
      try {
        item.resize(cols, rows);
      } catch (err) {
        // The daemon only logs resize failures (e.g. no PTY) and answers OK.
        ctx.log.debug({ chan: id, err: errText(err) }, 'resize failed');
      }
    }
    cb(null, ResizeTerminalResponse.fromPartial({}));
  };
}

export function acquireSessionHandler(
  _ctx: AgentContext,
): handleUnaryCall<AcquireSessionRequest, AcquireSessionResponse> {
  return (_call, cb) => cb(grpcError(status.PERMISSION_DENIED, DETACH_DISABLED));
}

export function listSessionsHandler(
  _ctx: AgentContext,
): handleUnaryCall<ListSessionsRequest, ListSessionsResponse> {
  return (_call, cb) => cb(grpcError(status.PERMISSION_DENIED, DETACH_DISABLED));
}
