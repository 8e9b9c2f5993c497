// Process-tree helpers on /proc: parent chains (for socket-owner checks) and killing whole sessions.
import { readFileSync, readdirSync } from 'node:fs';
import { constants } from 'node:os';

export interface ProcStat {
  pid: number;
  ppid: number;
  pgrp: number;
  session: number;
}

/** Parses /proc/<pid>/stat; undefined when the process is gone or unreadable. */
export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // `comm` (field 2) may contain spaces and parentheses, so split only after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const rest = text
    .slice(close + 2)
    .split(' ')
    .map((s) => Number(s));
  const [, ppid, pgrp, session] = rest;
  if (ppid === undefined || pgrp === undefined || session === undefined) return undefined;
  return { pid, ppid, pgrp, session };
}

/** True when `pid` is `ancestor` or one of its descendants. */
export function isSelfOrDescendant(pid: number, ancestor: number): boolean {
  if (ancestor <= 0) return false;
  let cur = pid;
  // The depth bound protects against a corrupted or racing chain.
  for (let i = 0; i < 4096 && cur > 0; i++) {
    if (cur === ancestor) return true;
    const st = readStat(cur);
    if (!st) return false;
    cur = st.ppid;
  }
  return false;
}

function tryKill(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Signals a process group; falls back to the single pid when the group is gone. */
export function killGroup(pgid: number, sig: NodeJS.Signals): boolean {
  if (pgid <= 0) return false;
  return tryKill(-pgid, sig) || tryKill(pgid, sig);
}

// Sessions whose remaining members still have to be found in /proc, swept together: one scan of
// /proc per batch instead of one per session (ending 1000 shells at once took ~15 s of CPU otherwise).
const pendingSweeps = new Map<number, NodeJS.Signals>();
let sweepScheduled = false;

/**
 * Signals the group led by `sid` at once, and every other process still in that session (jobs that
 * an interactive shell moved to groups of their own) in a batched /proc sweep right after.
 */
export function killSession(sid: number, sig: NodeJS.Signals): void {
  if (sid <= 0) return;
  killGroup(sid, sig);
  pendingSweeps.set(sid, sig);
  if (!sweepScheduled) {
    sweepScheduled = true;
    setImmediate(sweepSessions);
  }
}

/** Runs the pending session sweep now (shutdown calls it before the process exits). */
export function sweepSessions(): void {
  sweepScheduled = false;
  if (pendingSweeps.size === 0) return;
  const batch = new Map(pendingSweeps);
  pendingSweeps.clear();
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    const st = readStat(Number(n));
    const sig = st && batch.get(st.session);
    if (sig) tryKill(st.pid, sig);
  }
}

/** Signal names the daemon accepts (without SIG); anything else becomes TERM (§5.4). */
const ALLOWED = new Set([
  'ABRT',
  'ALRM',
  'FPE',
  'HUP',
  'ILL',
  'INT',
  'KILL',
  'PIPE',
  'QUIT',
  'SEGV',
  'TERM',
  'USR1',
  'USR2',
  'CHLD',
  'CONT',
  'STOP',
  'TSTP',
  'TTIN',
  'TTOU',
  'URG',
  'XCPU',
  'XFSZ',
]);

export function normaliseSignal(name: string): NodeJS.Signals {
  const bare = name.trim().toUpperCase().replace(/^SIG/, '');
  return (ALLOWED.has(bare) ? `SIG${bare}` : 'SIGTERM') as NodeJS.Signals;
}

const byNumber = new Map<number, string>();
for (const [n, v] of Object.entries(constants.signals)) {
  if (!byNumber.has(v)) byNumber.set(v, n.replace(/^SIG/, ''));
}

/** Signal number → name without SIG (e.g. 9 → KILL); numeric text when unknown. */
export function signalName(sig: number): string {
  return byNumber.get(sig) ?? String(sig);
}

/** Signal name (with or without SIG) → number; 0 when unknown. */
export function signalNumber(name: string): number {
  const key = `SIG${name.replace(/^SIG/, '')}` as keyof typeof constants.signals;
  return constants.signals[key] ?? 0;
}
