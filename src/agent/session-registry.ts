// A record of the agent's live sessions on disk, so whoever started the agent can kill what the
// agent's sessions left running when the agent itself dies without cleaning up (SIGKILL, OOM): one
// file per session leader in the registry directory, named by its pid (= session id), holding the
// leader's start time (so a reused pid is never taken for it). See reapSessions.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

let dir: string | undefined;

/** Enables the registry (the agent's --session-registry); off when never called. */
export function useSessionRegistry(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  dir = path;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined. */
export function startTimeOf(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state): field 22 is rest[19].
    const v = Number(rest[19]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export function recordSession(pid: number | undefined): void {
  if (!dir || !pid || pid <= 0) return;
  const start = startTimeOf(pid);
  if (start === undefined) return;
  try {
    writeFileSync(join(dir, String(pid)), `${start}\n`, { mode: 0o600 });
  } catch {
    // Best effort: the agent's own cleanup still covers a normal end.
  }
}

export function forgetSession(pid: number | undefined): void {
  if (!dir || !pid) return;
  rmSync(join(dir, String(pid)), { force: true });
}

interface Member {
  pid: number;
  session: number;
  start: number;
}

function members(): Member[] {
  const out: Member[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const text = readFileSync(`/proc/${n}/stat`, 'utf8');
      const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
      out.push({ pid: Number(n), session: Number(rest[3]), start: Number(rest[19]) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * SIGKILLs every process still in a session recorded in `registry` (processes that started after the
 * recorded leader only, so a recycled session id is safe) and empties the registry. Returns how many
 * processes were signalled. Used by the local provisioner when an agent exits, and at agent start.
 */
export function reapSessions(registry: string): number {
  let files: string[];
  try {
    files = readdirSync(registry).filter((f) => /^\d+$/.test(f));
  } catch {
    return 0;
  }
  if (files.length === 0) return 0;
  const wanted = new Map<number, number>();
  for (const f of files) {
    const start = Number(readFileSync(join(registry, f), 'utf8').trim());
    if (Number.isFinite(start)) wanted.set(Number(f), start);
  }
  let killed = 0;
  for (const m of members()) {
    const since = wanted.get(m.session);
    if (since === undefined || m.start < since || m.pid === process.pid) continue;
    try {
      process.kill(m.pid, 'SIGKILL');
      killed++;
    } catch {
      // already gone
    }
  }
  for (const f of files) rmSync(join(registry, f), { force: true });
  return killed;
}
