// Concurrency: N idle PTY sessions held open at once (one connection each, ssh2 client in this process);
// memory per session above the idle baseline. Connection rate: sessions per second at concurrency C,
// each connecting, running `true` and disconnecting.
import type { Client } from 'ssh2';
import { errText } from '../../src/ops/log.js';
import { scenarioResult, type ScenarioResult, type SideOutcome, type Sides } from '../result.js';
import { median, percentile } from '../stats.js';
import { connectClient, execOnce, openShell, pool } from '../ssh2client.js';
import type { MemReading, Side, Target } from '../target.js';

const OPEN_CONCURRENCY = 25;

function closeAll(clients: Client[]): Promise<void> {
  return Promise.all(
    clients.map(
      (c) =>
        new Promise<void>((resolve) => {
          const t = setTimeout(() => (c.destroy(), resolve()), 10_000);
          c.once('close', () => (clearTimeout(t), resolve()));
          c.end();
        }),
    ),
  ).then(() => undefined);
}

/** Every side of these targets, marked not run until measured (`base` only when it is a target). */
function notRun(targets: Target[]): Sides {
  const none = (): SideOutcome => ({ samples: [], summary: null, error: 'not run' });
  return {
    gateway: none(),
    sshd: none(),
    ...(targets.some((t) => t.side === 'base') ? { base: none() } : {}),
  };
}

async function holdSessions(t: Target, n: number, base: MemReading): Promise<SideOutcome> {
  const clients: Client[] = [];
  try {
    const t0 = Date.now();
    await pool(
      Array.from({ length: n }, (_, i) => i),
      OPEN_CONCURRENCY,
      async () => {
        const c = await connectClient(t);
        clients.push(c);
        await openShell(c);
      },
    );
    const openSeconds = (Date.now() - t0) / 1000;
    const m = t.memory();
    const per = (now: number, was: number) => (now - was) / n;
    const value = per(m.treePss, base.treePss);
    const summary: Record<string, number> = { value, openSeconds, treePssKiB: m.treePss };
    for (const [k, v] of Object.entries(m.parts)) summary[`${k}PerSession`] = per(v, base.parts[k] ?? 0);
    return { samples: [value], summary: summary as { value: number } };
  } catch (e) {
    return { samples: [], summary: null, error: `${clients.length} of ${n} sessions opened: ${errText(e)}` };
  } finally {
    await closeAll(clients);
    await t.settle(60_000);
  }
}

export async function measureSessions(
  targets: Target[],
  counts: number[],
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  // The idle baseline: after earlier scenarios, with no session open.
  const base = new Map<Side, MemReading>();
  for (const t of targets) {
    await t.settle(30_000);
    base.set(t.side, t.memory());
  }
  const out: ScenarioResult[] = [];
  for (const n of counts) {
    const sides = notRun(targets);
    for (const t of targets) {
      const s = await holdSessions(t, n, base.get(t.side) as MemReading);
      sides[t.side] = s;
      log(
        `  ${n} idle sessions on ${t.side}: ${s.summary ? `${s.summary.value.toFixed(0)} KiB/session` : s.error}`,
      );
    }
    out.push(scenarioResult(`${n} idle PTY sessions: memory`, 'KiB/session', 'lower', sides));
  }
  return out;
}

async function rate(t: Target, n: number, concurrency: number): Promise<SideOutcome> {
  const ms: number[] = [];
  try {
    const t0 = process.hrtime.bigint();
    await pool(
      Array.from({ length: n }, (_, i) => i),
      concurrency,
      async () => {
        const s0 = process.hrtime.bigint();
        const c = await connectClient(t, 30_000);
        try {
          const code = await execOnce(c, 'true');
          if (code !== 0) throw new Error(`"true" exited ${code}`);
        } finally {
          await closeAll([c]);
        }
        ms.push(Number(process.hrtime.bigint() - s0) / 1e6);
      },
    );
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return {
      samples: ms,
      summary: { value: n / seconds, p50: median(ms), p99: percentile(ms, 99), seconds },
    };
  } catch (e) {
    return { samples: ms, summary: null, error: `after ${ms.length} of ${n} sessions: ${errText(e)}` };
  }
}

export async function measureRate(
  targets: Target[],
  n: number,
  concurrency: number,
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  const sides = notRun(targets);
  for (const t of targets) {
    await t.settle(30_000);
    const s = await rate(t, n, concurrency);
    sides[t.side] = s;
    log(`  rate on ${t.side}: ${s.summary ? `${s.summary.value.toFixed(1)} sessions/s` : s.error}`);
  }
  return [scenarioResult(`connection rate (c=${concurrency})`, 'sessions/s', 'higher', sides)];
}
