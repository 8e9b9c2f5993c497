// Processes for the forwarding tests: ssh options with an optional real agent, background clients
// (`ssh -N -L …`, ControlMaster) that are always killed in `after`, and runs with their own env.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { waitFor } from '../../helpers/wait.js';
import {
  run,
  sshBaseArgs,
  type E2E,
  type RunOptions,
  type RunResult,
  type SshArgOptions,
} from '../harness.js';

export type { SshArgOptions } from '../harness.js';

/** The harness's client options with the key, agent and log level as choices. */
export function sshArgs(e: E2E, o: SshArgOptions & { key?: string } = {}): string[] {
  return sshBaseArgs(e, o.key ?? e.keys.user, o);
}

/** Runs a command to completion with a deadline; `env` is merged over this process's env. */
export function runEnv(cmd: string, argv: string[], o: RunOptions = {}): Promise<RunResult> {
  return run(cmd, argv, { timeoutMs: 30_000, ...o });
}

export interface Background {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL if it has not exited within 3 s; resolves when it is gone. */
  stop(): Promise<void>;
}

/** Background processes of one test file; `stopAll` goes into `after`. */
export class Processes {
  private readonly live = new Set<Background>();

  start(cmd: string, argv: string[], env?: NodeJS.ProcessEnv): Background {
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin?.on('error', () => undefined);
    let done = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('close', (code, signal) => {
        done = true;
        resolve({ code, signal });
      });
      child.on('error', () => {
        done = true;
        resolve({ code: null, signal: null });
      });
    });
    const bg: Background = {
      child,
      stdout: () => out,
      stderr: () => err,
      exited,
      stop: async () => {
        if (!done) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(killer);
        }
        this.live.delete(bg);
      },
    };
    this.live.add(bg);
    void exited.then(() => this.live.delete(bg));
    return bg;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.live].map((p) => p.stop()));
  }
}

/** waitFor that fails at once, with the client's stderr, if `bg` exits first. */
export function waitWhileRunning<T>(
  bg: Background,
  cond: () => T | Promise<T>,
  what: string,
  timeoutMs = 20_000,
): Promise<NonNullable<T>> {
  return waitFor(cond, {
    timeoutMs,
    what: `${what} (stderr: ${bg.stderr().slice(-2000)})`,
    failIf: () =>
      bg.child.exitCode !== null || bg.child.signalCode !== null
        ? `process exited (${bg.child.exitCode ?? bg.child.signalCode}); stderr: ${bg.stderr()}`
        : undefined,
  });
}

/** Escapes a string for use inside a RegExp. */
const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Starts `ssh -N <forward options> user@127.0.0.1` (debug log on) and resolves once ssh says every
 * listener in `listening` (local ports or socket paths) is up. No probe connection is made, so no
 * channel is opened before the test's own.
 */
export async function startForwarder(
  procs: Processes,
  e: E2E,
  forwardArgs: string[],
  listening: (number | string)[],
  o: SshArgOptions = {},
): Promise<Background> {
  const bg = procs.start('ssh', [
    ...sshArgs(e, { ...o, logLevel: 'DEBUG1' }),
    '-N',
    // A local port taken meanwhile (freePort is best effort) then fails fast instead of hanging.
    '-o',
    'ExitOnForwardFailure=yes',
    ...forwardArgs,
    `${e.user}@127.0.0.1`,
  ]);
  const res = listening.map(
    (l) =>
      new RegExp(
        typeof l === 'number'
          ? `Local forwarding listening on \\S+ port ${l}\\.`
          : `Local forwarding listening on path ${reEscape(l)}\\.`,
      ),
  );
  await waitWhileRunning(
    bg,
    () => res.every((r) => r.test(bg.stderr())),
    `ssh ${forwardArgs.join(' ')} to listen`,
  );
  return bg;
}

/** Starts an OpenSSH ControlMaster (`-N`) for `login` and waits for its control socket at `path`. */
export async function startControlMaster(
  procs: Processes,
  e: E2E,
  path: string,
  login = `${e.user}@127.0.0.1`,
): Promise<Background> {
  const m = procs.start('ssh', [
    ...sshArgs(e, { logLevel: 'INFO' }),
    '-o',
    'ControlMaster=yes',
    '-o',
    `ControlPath=${path}`,
    '-o',
    'ControlPersist=no',
    '-N',
    login,
  ]);
  await waitWhileRunning(m, () => existsSync(path), 'the control socket');
  return m;
}
