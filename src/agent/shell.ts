// A running shell: owns its process (PTY or pipes), its scrollback ring, and at most one attached
// stream. The RPC handler attaches on start; detach/re-attach can later attach a different stream
// to the same object without touching process handling.
import type { ChildProcess } from 'node:child_process';
import type { IPty } from 'node-pty';
import { ByteRing } from './ring.js';
import { spawnPipes, spawnPty, ptsName, type LaunchSpec } from './launch.js';
import { killSession, signalName } from './procs.js';
import type { StoreItem } from './store.js';

export interface ExitInfo {
  code: number;
  /** Signal name without SIG; empty for a normal exit. */
  signal: string;
  coreDumped: boolean;
}

/** What a shell talks to while a client is attached. */
export interface ShellAttachment {
  /** Output bytes; return false to pause the shell's output until resumeOutput(). */
  output(data: Buffer): boolean;
  /** The process is gone and all output was delivered; `exit` is undefined when unknowable. */
  ended(exit: ExitInfo | undefined): void;
}

export interface ShellOptions {
  id: string;
  user: string;
  launch: LaunchSpec;
  usePty: boolean;
  cols: number;
  rows: number;
  /** Called once when the process is gone (the store marks the id finished). */
  onFinished: (shell: Shell) => void;
}

export function exitFromNumbers(code: number | null, signal: number | string | null | undefined): ExitInfo {
  if (typeof signal === 'string' && signal)
    return { code: 0, signal: signal.replace(/^SIG/, ''), coreDumped: false };
  if (typeof signal === 'number' && signal > 0)
    return { code: 0, signal: signalName(signal), coreDumped: false };
  return { code: code ?? 0, signal: '', coreDumped: false };
}

export class Shell implements StoreItem {
  readonly kind = 'shell';
  readonly id: string;
  readonly user: string;
  readonly cmdShell: string;
  readonly created = new Date();
  readonly usePty: boolean;
  /** tty path for PTY shells, '' otherwise. */
  readonly pty: string;
  readonly pid: number;
  /** Last 256 KiB of PTY output, for re-attach. */
  readonly scrollback: ByteRing | undefined;
  exit: ExitInfo | undefined;
  private attachment: ShellAttachment | undefined;
  private term: IPty | undefined;
  private child: ChildProcess | undefined;
  private alive = true;
  private finished = false;
  private pipesOpen = 0;
  private outputPaused = false;

  constructor(private readonly opts: ShellOptions) {
    this.id = opts.id;
    this.user = opts.user;
    this.cmdShell = opts.launch.file;
    this.usePty = opts.usePty;
    if (opts.usePty) {
      const t = spawnPty(opts.launch, opts.cols, opts.rows);
      this.term = t;
      this.pid = t.pid;
      this.pty = ptsName(t);
      this.scrollback = new ByteRing();
      t.onData((d: string | Buffer) => this.onOutput(typeof d === 'string' ? Buffer.from(d) : d));
      // node-pty reports exit only after the PTY has been drained (or 200 ms later).
      t.onExit(({ exitCode, signal }) => this.onExit(exitFromNumbers(exitCode, signal)));
    } else {
      const c = spawnPipes(opts.launch);
      this.child = c;
      this.pty = '';
      this.scrollback = undefined;
      c.on('error', (err: NodeJS.ErrnoException) => {
        // Spawn failure: report it like the shell would have, then end.
        this.onOutput(Buffer.from(`${opts.launch.file}: ${err.message}\n`));
        this.onExit({ code: err.code === 'ENOENT' ? 127 : 126, signal: '', coreDumped: false });
      });
      if (c.pid === undefined) throw new Error(`cannot start ${opts.launch.file}`);
      this.pid = c.pid;
      c.stdin?.on('error', () => undefined); // EPIPE after the shell exited is expected
      for (const s of [c.stdout, c.stderr]) {
        if (!s) continue;
        this.pipesOpen++;
        s.on('data', (d: Buffer) => this.onOutput(d));
        s.on('error', () => undefined);
        s.on('close', () => {
          this.pipesOpen--;
          this.maybeFinish();
        });
      }
      c.on('exit', (code, sig) => this.onExit(exitFromNumbers(code, sig)));
    }
  }

  get running(): boolean {
    return this.alive;
  }

  attach(a: ShellAttachment): void {
    this.attachment = a;
  }

  detach(): void {
    this.attachment = undefined;
    // Without a reader the ring keeps the latest output; never block the shell on a missing client.
    this.resumeOutput();
  }

  /** Input to the shell; false means "wait for onInputDrain" (pipes only). */
  write(data: Buffer): boolean {
    if (!this.alive) return true;
    if (this.term) {
      this.term.write(data);
      return true;
    }
    return this.child?.stdin?.write(data) ?? true;
  }

  onInputDrain(fn: () => void): void {
    const s = this.child?.stdin;
    if (!s || !s.writableNeedDrain) fn();
    else s.once('drain', fn);
  }

  /** Closes stdin (non-PTY shells; a PTY cannot be half-closed). */
  endInput(): void {
    this.child?.stdin?.end();
  }

  /** Throws when the shell has no PTY. */
  resize(cols: number, rows: number): void {
    if (!this.term) throw new Error('shell has no PTY');
    this.term.resize(cols, rows);
  }

  pauseOutput(): void {
    if (this.outputPaused) return;
    this.outputPaused = true;
    if (this.term) this.term.pause();
    this.child?.stdout?.pause();
    this.child?.stderr?.pause();
  }

  resumeOutput(): void {
    if (!this.outputPaused) return;
    this.outputPaused = false;
    if (this.term) this.term.resume();
    this.child?.stdout?.resume();
    this.child?.stderr?.resume();
  }

  /** SIGKILLs the shell's whole session (client half-close/cancel, agent shutdown). */
  kill(): void {
    if (this.pid > 0 && this.alive) killSession(this.pid, 'SIGKILL');
  }

  /** Kills and forgets the attachment: no exit status is reported for a destroyed session. */
  destroy(): void {
    this.attachment = undefined;
    this.kill();
    this.resumeOutput();
  }

  private onOutput(d: Buffer): void {
    this.scrollback?.push(d);
    if (this.attachment && !this.attachment.output(d)) this.pauseOutput();
  }

  private onExit(exit: ExitInfo): void {
    if (this.exit) return;
    this.exit = exit;
    this.alive = false;
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.finished || this.alive || this.pipesOpen > 0) return;
    this.finished = true;
    this.child?.stdin?.destroy();
    this.opts.onFinished(this);
    const a = this.attachment;
    this.attachment = undefined;
    a?.ended(this.exit);
  }
}
