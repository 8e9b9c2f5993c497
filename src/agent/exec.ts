// Exec (§5.4, §4 PTY fields, §9.4 exit detail): `<shell> -c <command>` with pipes or a PTY.
import { isUtf8 } from 'node:buffer';
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { status, type handleBidiStreamingCall, type ServerDuplexStream } from '@grpc/grpc-js';
import type { IPty } from 'node-pty';
import { ExecResponse, type CommandDetails, type ExecRequest } from '../gen/k8shelld/v1/k8shelld.js';
import { errText } from '../ops/log.js';
import { workDir, type AgentContext } from './context.js';
import { buildEnv, chooseExecShell, ptsName, spawnPipes, spawnPty, type LaunchSpec } from './launch.js';
import { FrameGatherer } from '../common/k8shelld-wire.js';
import { commandBytes, envBytes } from '../common/raw-text.js';
import { sessionDefaults } from './session-env.js';
import { killGroup, killSession, normaliseSignal, signalNumber } from './procs.js';
import { frames, grpcError, metadataValue, Stream, toStatus } from './rpc.js';
import { exitFromNumbers, type ExitInfo } from './shell.js';
import type { StoreItem } from './store.js';

/**
 * After the process exited, how long its output pipes may stay open *and idle* before they are
 * closed (a background child may hold them open forever, as `sleep 30 &` does). Only idle time
 * counts: every read restarts it and time spent paused by a slow consumer (backpressure) does not
 * count, so output already written is never dropped however slow the client reads.
 */
export const OUTPUT_GRACE_MS = 1000;

export function execHandler(ctx: AgentContext): handleBidiStreamingCall<ExecRequest, ExecResponse> {
  return (call) => new ExecCall(ctx, call).run();
}

class ExecItem implements StoreItem {
  readonly kind = 'exec';
  running = true;
  constructor(
    readonly id: string,
    readonly user: string,
    readonly pid: number,
  ) {}
  kill(): void {
    if (this.running) killSession(this.pid, 'SIGKILL');
  }
}

class ExecCall {
  private readonly s: Stream<ExecRequest, ExecResponse>;
  private started = false;
  private signalled = false;
  private item: ExecItem | undefined;
  private term: IPty | undefined;
  private child: ChildProcess | undefined;
  private wantExit = false;
  private exited = false;

  constructor(
    private readonly ctx: AgentContext,
    private readonly call: ServerDuplexStream<ExecRequest, ExecResponse>,
  ) {
    this.s = new Stream(call);
  }

  run(): void {
    const id = metadataValue(this.call.metadata, 'exec-id');
    if (!id) {
      this.s.fail(status.INVALID_ARGUMENT, 'missing exec-id metadata');
      return;
    }
    this.s.onCancel(() => this.cancelled());
    this.call.on('data', (req: ExecRequest) => {
      if (this.s.done) return;
      if (!this.started) {
        this.started = true;
        if (req.request?.$case !== 'commandDetails') {
          this.s.fail(status.INVALID_ARGUMENT, 'first message must be command_details');
          return;
        }
        this.call.pause();
        this.start(id, req.request.commandDetails).then(
          () => this.call.resume(),
          (err: unknown) => {
            const st = toStatus(err);
            this.ctx.log.info({ chan: id, rpc: 'Exec', err: errText(err) }, 'exec start failed');
            this.s.fail(st.code, st.details);
          },
        );
        return;
      }
      this.input(req);
    });
    this.call.on('end', () => {
      if (!this.item) this.s.finish();
      // Non-PTY: stdin EOF. A PTY cannot be half-closed, so its input simply stays open.
      else this.child?.stdin?.end();
    });
  }

  private async start(id: string, cd: CommandDetails): Promise<void> {
    if (!commandBytes(cd).toString('latin1').trim())
      throw grpcError(status.INVALID_ARGUMENT, 'empty command');
    const { store, users } = this.ctx;
    store.reserve(id, 'exec');
    let launch: LaunchSpec;
    try {
      const runAs = await users.resolve(cd.asUser);
      const file = chooseExecShell(cd.shellBinary, runAs.user.shell);
      // Raw bytes (command_raw, env_vars_raw) win over the lossy strings when present.
      const { env, raw } = buildEnv(
        this.ctx.baseEnv,
        envBytes(cd.envVars, cd.envVarsRaw),
        sessionDefaults(runAs.user, file),
        { HOME: runAs.home },
      );
      const command = commandBytes(cd);
      launch = {
        file,
        argv0: file,
        args: ['-c', isUtf8(command) ? command.toString('utf8') : command],
        cwd: workDir(runAs.home),
        env,
        rawEnv: raw,
        sshTty: cd.usePty,
        creds: runAs.creds,
      };
      if (this.s.done) throw grpcError(status.CANCELLED, 'client went away');
      this.wantExit = cd.wantExitStatus;
      const pid = cd.usePty ? this.startPty(launch, cd) : await this.startPipes(launch);
      if (pid === undefined) {
        store.release(id);
        return;
      }
      this.item = new ExecItem(id, runAs.user.name, pid);
      store.set(this.item);
    } catch (err) {
      store.release(id);
      throw err;
    }
    if (this.s.cancelled) this.cancelled();
  }

  private startPty(launch: LaunchSpec, cd: CommandDetails): number {
    let t: IPty;
    try {
      t = spawnPty(
        launch,
        cd.width > 0 && cd.height > 0 ? cd.width : 0,
        cd.width > 0 && cd.height > 0 ? cd.height : 0,
      );
    } catch (err) {
      throw grpcError(status.INTERNAL, `cannot create pty: ${errText(err)}`);
    }
    this.term = t;
    this.s.send(ExecResponse.fromPartial({ response: { $case: 'pty', pty: ptsName(t) } }));
    t.onData((d: string | Buffer) => {
      const buf = typeof d === 'string' ? Buffer.from(d) : d;
      let ok = true;
      for (const f of frames(buf)) ok = this.s.send({ response: { $case: 'stdout', stdout: f } });
      if (!ok) {
        t.pause();
        this.s.whenDrained(() => t.resume());
      }
    });
    // node-pty emits exit after the PTY drained (or after its own 200 ms cap).
    t.onExit(({ exitCode, signal }) => this.finish(exitFromNumbers(exitCode, signal)));
    return t.pid;
  }

  /** Resolves with the pid, or undefined when the program could not start (already reported). */
  private async startPipes(launch: LaunchSpec): Promise<number | undefined> {
    let c: ChildProcess;
    try {
      c = spawnPipes(launch);
    } catch (err) {
      throw grpcError(status.INTERNAL, `cannot start process: ${errText(err)}`);
    }
    this.child = c;
    if (c.pid === undefined) {
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => c.once('error', resolve));
      this.s.send({ response: { $case: 'stderr', stderr: Buffer.from(`${launch.file}: ${err.message}\n`) } });
      this.sendExit({ code: err.code === 'ENOENT' ? 127 : 126, signal: '', coreDumped: false });
      return undefined;
    }
    c.on('error', (err) => this.ctx.log.debug({ err: errText(err) }, 'exec child error'));
    c.stdin?.on('error', () => undefined); // EPIPE once the command stopped reading
    const pipes: Readable[] = [];
    let open = 0;
    let reads = 0;
    let onAllClosed: (() => void) | undefined;
    const gatherers: FrameGatherer[] = [];
    const relay = (r: Readable | null, kind: 'stdout' | 'stderr') => {
      if (!r) return;
      pipes.push(r);
      open++;
      // Reads of one turn go out as one frame (one copy); flushed before the exit status.
      const g = new FrameGatherer(
        (payload) =>
          this.s.send(
            kind === 'stdout'
              ? { response: { $case: 'stdout', stdout: payload } }
              : { response: { $case: 'stderr', stderr: payload } },
          ),
        () => this.s.needsDrain,
      );
      gatherers.push(g);
      r.on('error', () => undefined);
      r.on('data', (d: Buffer) => {
        reads++;
        if (!g.push(d)) {
          r.pause();
          this.s.whenDrained(() => r.resume());
        }
      });
      r.on('close', () => {
        g.flush();
        if (--open === 0) onAllClosed?.();
      });
    };
    relay(c.stdout, 'stdout');
    relay(c.stderr, 'stderr');
    // A consumer that went away never drains: its paused pipes must not hold the grace open.
    this.s.onCancel(() => {
      for (const p of pipes) p.resume();
    });
    c.on('exit', (code, sig) => {
      const exit = exitFromNumbers(code, sig);
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        for (const g of gatherers) g.flush();
        for (const p of pipes) p.destroy();
        c.stdin?.destroy();
        this.finish(exit);
      };
      if (open === 0) return done();
      onAllClosed = done;
      const arm = () => {
        const seen = reads;
        timer = setTimeout(() => {
          // One poll phase first: after a stall of the event loop (CPU load) the timer can fire
          // before the reads already waiting on the pipes were delivered.
          setImmediate(() => {
            if (settled) return;
            const waiting = !this.s.done && pipes.some((p) => p.isPaused() && !p.destroyed);
            if (reads !== seen || waiting) arm();
            else done();
          });
        }, OUTPUT_GRACE_MS);
      };
      arm();
    });
    return c.pid;
  }

  private input(req: ExecRequest): void {
    // After one signal the daemon stops reading the client stream (§5.4).
    if (this.signalled || !this.item || this.exited) return;
    const r = req.request;
    if (!r) return;
    switch (r.$case) {
      case 'input': {
        if (r.input.length === 0) return;
        if (this.term) this.term.write(r.input);
        else if (this.child?.stdin && !this.child.stdin.write(r.input)) {
          this.call.pause();
          this.child.stdin.once('drain', () => this.call.resume());
        }
        return;
      }
      case 'signal': {
        this.signalled = true;
        const sig = normaliseSignal(r.signal);
        if (!killGroup(this.item.pid, sig)) killGroup(this.item.pid, 'SIGKILL');
        this.child?.stdin?.end();
        return;
      }
      case 'resize': {
        const cols = Math.min(r.resize.width, 0xffff);
        const rows = Math.min(r.resize.height, 0xffff);
        if (this.term && cols > 0 && rows > 0) {
          try {
            this.term.resize(cols, rows);
          } catch (err) {
            this.ctx.log.debug({ err: errText(err) }, 'exec resize failed');
          }
        }
        return;
      }
      default:
        return;
    }
  }

  private cancelled(): void {
    if (!this.item || this.exited) return;
    // PTY: SIGHUP the group, as a closing terminal would. Pipes: kill the session outright.
    if (this.term) killGroup(this.item.pid, 'SIGHUP');
    else killSession(this.item.pid, 'SIGKILL');
  }

  private finish(exit: ExitInfo): void {
    if (this.exited) return;
    this.exited = true;
    if (this.item) {
      this.item.running = false;
      this.ctx.store.finish(this.item.id);
    }
    this.sendExit(exit);
  }

  private sendExit(exit: ExitInfo): void {
    if (this.wantExit)
      this.s.send({ response: { $case: 'exitStatus', exitStatus: { ...exit, message: '' } } });
    const code = exit.signal ? 128 + signalNumber(exit.signal) : exit.code;
    this.s.send({ response: { $case: 'exitCode', exitCode: code } });
    this.s.finish();
  }
}
