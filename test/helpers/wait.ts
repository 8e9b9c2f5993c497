// Condition waiting for tests: poll a predicate until it holds or a deadline passes.
// Use this instead of fixed sleeps so tests are both fast and robust on slow machines.
import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';

export interface WaitOptions {
  /** Give up after this many milliseconds (default 5000). */
  timeoutMs?: number;
  /** Poll interval in milliseconds (default 10). */
  intervalMs?: number;
  /** Included in the timeout error to say what was awaited. */
  what?: string;
  /** Checked before each poll: a string ends the wait at once with that reason (e.g. "process exited"). */
  failIf?: () => string | undefined;
}

/**
 * Resolves with the first truthy value returned by `cond` (sync or async); rejects with an error naming
 * `what` when the deadline passes. Exceptions thrown by `cond` count as "not yet" until the deadline,
 * then the last one is reported.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  timeoutOrOpts: number | WaitOptions = {},
): Promise<NonNullable<T>> {
  const opts: WaitOptions = typeof timeoutOrOpts === 'number' ? { timeoutMs: timeoutOrOpts } : timeoutOrOpts;
  const timeoutMs = opts.timeoutMs ?? 5000;
  const intervalMs = opts.intervalMs ?? 10;
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    const fatal = opts.failIf?.();
    if (fatal) throw new Error(`${opts.what ?? 'condition'}: ${fatal}`);
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= end) {
      const suffix = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${suffix}`);
    }
    await delay(intervalMs);
  }
}

/** Rejects with a clear error if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when a process with this pid exists and is not a zombie (exited but not yet reaped). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
