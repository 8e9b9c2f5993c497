// /proc readings (CPU ticks, RSS, PSS, process trees) and child processes with deadlines.
import { execFileSync, spawn, type StdioOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  /** utime + stime, seconds. */
  self: number;
  /** cutime + cstime (children already waited for), seconds. */
  children: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const n = (i: number) => Number(f[i - 3]);
  return { ppid: n(4), self: (n(14) + n(15)) / CLK_TCK, children: (n(16) + n(17)) / CLK_TCK };
}

/** CPU seconds the process itself used (utime + stime); 0 once it is gone. */
export function selfCpu(pid: number): number {
  return readStat(pid)?.self ?? 0;
}

/** Direct children of a process. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    if (readStat(Number(e))?.ppid === pid) out.push(Number(e));
  }
  return out;
}

/** The process and all its live descendants. */
export function treeOf(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (!st) continue;
    const l = byParent.get(st.ppid) ?? [];
    l.push(Number(e));
    byParent.set(st.ppid, l);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop() as number;
    out.push(p);
    todo.push(...(byParent.get(p) ?? []));
  }
  return out;
}

/**
 * CPU seconds of a whole process tree: the root's own and reaped children's time plus the same for every
 * live descendant (a live child's time is not yet in its parent's cutime).
 */
export function treeCpu(pid: number): number {
  let total = 0;
  for (const p of treeOf(pid)) {
    const st = readStat(p);
    if (st) total += st.self + st.children;
  }
  return total;
}

function statusField(pid: number, file: string, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/${file}`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resident set size in KiB (0 if the process is gone). */
export function rssKiB(pid: number): number {
  return statusField(pid, 'status', 'VmRSS');
}

/** Proportional set size of a process tree in KiB: shared pages split between sharers, so sums are fair. */
export function treePssKiB(pid: number): number {
  return treeOf(pid).reduce((a, p) => a + statusField(p, 'smaps_rollup', 'Pss'), 0);
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, milliseconds. */
  ms: number;
}

export interface RunOptions {
  timeoutMs: number;
  /** 'ignore' sends stdout to /dev/null (no copy through this process). */
  stdout?: 'ignore' | 'pipe';
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Runs a command to completion; it is killed (and the promise rejects) when the deadline passes. */
export function runProcess(cmd: string, args: string[], o: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = ['ignore', o.stdout ?? 'pipe', 'pipe'];
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio, env: o.env ?? process.env, cwd: o.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} did not finish within ${o.timeoutMs} ms`));
    }, o.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      resolve({
        code,
        signal,
        ms,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
  });
}

/** Throws an error naming the command and its stderr unless it exited 0. */
export function checkOk(what: string, r: RunResult): RunResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code ?? r.signal}: ${r.stderr.trim().slice(0, 400)}`);
  return r;
}

/** A loopback port that was free a moment ago (for servers that cannot report an ephemeral port). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (addr === null || typeof addr === 'string') throw new Error('no port from the kernel');
  return addr.port;
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Polls `cond` until it holds or `timeoutMs` passes (then throws naming `what`). */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(20);
  }
}

/** Like waitFor, but gives up quietly: used to let processes settle before a reading. */
export async function settle(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  try {
    await waitFor(cond, timeoutMs, 'settle');
    return true;
  } catch {
    return false;
  }
}
