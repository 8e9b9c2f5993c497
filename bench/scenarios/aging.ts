// Aging (issue 15 item 1): does a gateway stay as fast and as small after many connections as when it
// started? Fresh gateways (the production entry, in-process, with authz and session tracking on, beside a
// fresh stack of their own) are measured with interleaved exec downloads; then every target serves N
// `ssh host true` connections and the downloads are measured again. Then each target carries a burst of
// L concurrent connections moving data both ways, and its memory is read again a while after the burst.
// sshd takes every step too: its after/fresh ratios are the machine's noise (it forks per connection, so
// it cannot age), which the gateway's ratios are read against.
import { errText } from '../../src/ops/log.js';
import { checkOk, runProcess } from '../proc.js';
import {
  scenarioResult,
  type ScenarioResult,
  type SideOutcome,
  type SideResult,
  type Sides,
} from '../result.js';
import { pool } from '../ssh2client.js';
import type { StackStats } from '../stack-process.js';
import type { Side, Target } from '../target.js';
import { execDownload } from './exec.js';
import { measureThroughput, transferTimeoutMs } from './throughput.js';

const MIB = 1024 * 1024;

export interface AgingOptions {
  /** Bytes of each exec download. */
  size: number;
  runs: number;
  /** `ssh host true` connections between the fresh and the aged downloads. */
  connections: number;
  /** How many of those run at once. */
  concurrency: number;
  /** Concurrent connections of the load burst, each moving `loadSize` up and `loadSize` down. */
  loadConnections: number;
  loadSize: number;
  /** Seconds after the burst at which memory is read again. */
  loadWaitS: number;
}

/** One measured server: a gateway with its stats (memory after GC, live handles), or sshd (no stats). */
export interface AgingSubject {
  target: Target;
  /** Resident memory of the server process (gateway) or PSS of its tree (sshd), KiB, without a GC. */
  memKiB(): number;
  /** The gateway's agent(s), KiB. */
  agentKiB(): number;
  stats?: () => Promise<StackStats>;
}

interface Snapshot {
  memKiB: number;
  agentKiB: number;
  stats: StackStats | undefined;
}

async function snapshot(s: AgingSubject): Promise<Snapshot> {
  await s.target.settle(30_000);
  // stats() collects garbage first: read the GC'd RSS from it, and the natural one before it.
  const memKiB = s.memKiB();
  const stats = s.stats ? await s.stats() : undefined;
  return { memKiB, agentKiB: s.agentKiB(), stats };
}

/** Every pending timer (ref'd or not) where the hook could count them, else the ref'd ones. */
const timers = (st: StackStats | undefined) => st?.timers ?? st?.['resource:Timeout'] ?? 0;
const handles = (st: StackStats | undefined) =>
  Object.entries(st ?? {})
    .filter(([k]) => k.startsWith('resource:'))
    .reduce((a, [, v]) => a + v, 0);

/**
 * `ssh host true`, `n` times, `concurrency` at a time; resolves with how many failed (a refusal under
 * load is a finding to report, not a reason to lose the readings after the others).
 */
async function connections(t: Target, n: number, concurrency: number): Promise<number> {
  let failed = 0;
  let first = '';
  await pool(
    Array.from({ length: n }, (_, i) => i),
    concurrency,
    async () => {
      try {
        const r = await runProcess('ssh', [...t.sshArgs(), t.destination, 'true'], { timeoutMs: 60_000 });
        checkOk(`ssh true via ${t.label}`, r);
      } catch (e) {
        failed++;
        first ||= errText(e);
      }
    },
  );
  if (failed === n) throw new Error(`every connection failed: ${first}`);
  return failed;
}

/**
 * `loadConnections` connections at once, each `head -c N` up and down at the same time. Resolves with
 * how many failed (a refusal under load is a finding, not a reason to skip the memory readings).
 */
async function burst(t: Target, o: AgingOptions, log: (s: string) => void): Promise<number> {
  const remote = `head -c ${o.loadSize} /dev/zero & cat >/dev/null; wait`;
  const ssh = ['ssh', ...t.sshArgs(), t.destination, remote];
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: o.loadConnections }, async () => {
      try {
        const r = await runProcess(
          'sh',
          ['-c', `head -c ${o.loadSize} /dev/zero | "$@" >/dev/null`, 'sh', ...ssh],
          {
            timeoutMs: transferTimeoutMs(2 * o.loadSize * o.loadConnections),
          },
        );
        checkOk(`load via ${t.label}`, r);
      } catch (e) {
        failures.push(errText(e));
      }
    }),
  );
  if (failures.length === o.loadConnections) throw new Error(`every load connection failed: ${failures[0]}`);
  if (failures.length)
    log(
      `  aging: ${failures.length} of ${o.loadConnections} load connections via ${t.label} failed: ${failures[0]}`,
    );
  return failures.length;
}

type Key = 'gateway' | 'sshd' | 'ab';
const valueOf = (r: ScenarioResult, k: Key): number | undefined =>
  (k === 'ab' ? r.ab?.gateway : r[k])?.value ?? undefined;

/** A side by side of one figure per target; `base` only in an A/B run. */
function sidesOf(subjects: AgingSubject[], f: (s: AgingSubject) => SideOutcome): Sides {
  const by = new Map<Side, SideOutcome>(subjects.map((s) => [s.target.side, f(s)]));
  const none: SideOutcome = { samples: [], summary: null, error: 'not run' };
  return {
    gateway: by.get('gateway') ?? none,
    sshd: by.get('sshd') ?? none,
    ...(by.has('base') ? { base: by.get('base') as SideOutcome } : {}),
  };
}

/** aged/fresh of a throughput result pair, per side. */
function ratioOf(
  name: string,
  unit: string,
  better: 'higher' | 'lower',
  fresh: ScenarioResult,
  aged: ScenarioResult,
) {
  const side = (k: Key): SideOutcome => {
    const f = valueOf(fresh, k);
    const a = valueOf(aged, k);
    if (f === undefined || a === undefined || !(f > 0))
      return { samples: [], summary: null, error: 'no fresh or aged figure' };
    return { samples: [a / f], summary: { value: a / f, fresh: f, aged: a } };
  };
  const sides: Sides = { gateway: side('gateway'), sshd: side('sshd') };
  if (fresh.ab) sides.base = side('ab');
  return scenarioResult(name, unit, better, sides);
}

function memOutcome(
  before: Snapshot | undefined,
  after: Snapshot | undefined,
  extra: Record<string, number> = {},
) {
  if (!before || !after) return { samples: [], summary: null, error: 'not measured' } as SideOutcome;
  // Gateways: the RSS after a forced GC on both sides; sshd: PSS of its (idle) tree.
  const b = before.stats?.rss !== undefined ? before.stats.rss / 1024 : before.memKiB;
  const a = after.stats?.rss !== undefined ? after.stats.rss / 1024 : after.memKiB;
  const summary: SideResult = { value: a / b, beforeMiB: b / 1024, afterMiB: a / 1024, ...extra };
  if (before.stats && after.stats) {
    summary.heapBeforeMiB = before.stats.heapUsed / MIB;
    summary.heapAfterMiB = after.stats.heapUsed / MIB;
    summary.externalBeforeMiB = before.stats.external / MIB;
    summary.externalAfterMiB = after.stats.external / MIB;
    summary.timersBefore = timers(before.stats);
    summary.timersAfter = timers(after.stats);
    summary.handlesBefore = handles(before.stats);
    summary.handlesAfter = handles(after.stats);
    // Durations with many pending timers: what is left behind, by its timeout.
    for (const [k, v] of Object.entries(after.stats))
      if (k.startsWith('timers:') && v >= 5) summary[`timers${k.slice(7)}msAfter`] = v;
  }
  if (before.agentKiB > 0) {
    summary.agentBeforeMiB = before.agentKiB / 1024;
    summary.agentAfterMiB = after.agentKiB / 1024;
  }
  return { samples: [a / b], summary } as SideOutcome;
}

export async function measureAging(
  subjects: AgingSubject[],
  o: AgingOptions,
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  const targets = subjects.map((s) => s.target);
  for (const t of targets)
    checkOk(
      `warm-up ssh to ${t.label}`,
      await runProcess('ssh', [...t.sshArgs(), t.destination, 'true'], { timeoutMs: 60_000 }),
    );
  // Per phase: a failed load burst must not hide the readings after the connections, and vice versa.
  const errors = { aging: new Map<AgingSubject, string>(), load: new Map<AgingSubject, string>() };
  const guarded = async (
    phase: keyof typeof errors,
    s: AgingSubject,
    what: string,
    f: () => Promise<void>,
  ) => {
    if (errors[phase].has(s)) return;
    try {
      await f();
    } catch (e) {
      errors[phase].set(s, `${what}: ${errText(e)}`);
      log(`  aging ${s.target.label} failed: ${errText(e)}`);
    }
  };

  const fresh = await measureThroughput(
    'aging: exec download, fresh',
    o.size,
    targets,
    o.runs,
    execDownload(o.size),
    log,
  );
  const before = new Map<AgingSubject, Snapshot>();
  for (const s of subjects)
    await guarded('aging', s, 'snapshot', async () => void before.set(s, await snapshot(s)));
  const failedConnections = new Map<AgingSubject, number>();
  for (const s of subjects) {
    const t0 = Date.now();
    await guarded('aging', s, `${o.connections} connections`, async () => {
      const failed = await connections(s.target, o.connections, o.concurrency);
      failedConnections.set(s, failed);
      if (failed) log(`  aging: ${failed} of ${o.connections} connections to ${s.target.label} failed`);
    });
    log(
      `  aging: ${o.connections} connections to ${s.target.label} in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    );
  }
  const after = new Map<AgingSubject, Snapshot>();
  for (const s of subjects)
    await guarded('aging', s, 'snapshot', async () => void after.set(s, await snapshot(s)));
  const aged = await measureThroughput(
    `aging: exec download, after ${o.connections} connections`,
    o.size,
    targets,
    o.runs,
    execDownload(o.size),
    log,
  );

  // The burst, one target after the other; each is read `loadWaitS` after its own burst ended.
  const idle = new Map<AgingSubject, Snapshot>();
  const peak = new Map<AgingSubject, { mem: number; agent: number; failed: number }>();
  const ended = new Map<AgingSubject, number>();
  for (const s of subjects) {
    await guarded('load', s, 'load', async () => {
      idle.set(s, await snapshot(s));
      const p = { mem: 0, agent: 0, failed: 0 };
      peak.set(s, p);
      const sample = setInterval(() => {
        p.mem = Math.max(p.mem, s.memKiB());
        p.agent = Math.max(p.agent, s.agentKiB());
      }, 250);
      try {
        p.failed = await burst(s.target, o, log);
      } finally {
        clearInterval(sample);
        ended.set(s, Date.now());
      }
      log(`  aging: ${o.loadConnections}-connection load on ${s.target.label} done`);
    });
  }
  const later = new Map<AgingSubject, Snapshot>();
  for (const s of subjects) {
    const end = ended.get(s);
    if (end === undefined) continue;
    const wait = end + o.loadWaitS * 1000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await guarded('load', s, 'snapshot', async () => void later.set(s, await snapshot(s)));
  }

  const withError = (phase: keyof typeof errors, s: AgingSubject, out: SideOutcome): SideOutcome =>
    errors[phase].has(s) ? { samples: out.samples, summary: null, error: errors[phase].get(s) } : out;
  const n = o.connections;
  const results = [...fresh, ...aged];
  const [freshTput, freshCpu] = fresh as [ScenarioResult, ScenarioResult];
  const [agedTput, agedCpu] = aged as [ScenarioResult, ScenarioResult];
  results.push(
    ratioOf(`aging: exec download after ${n} connections / fresh`, '×', 'higher', freshTput, agedTput),
    ratioOf(`aging: CPU per GiB after ${n} connections / fresh`, '×', 'lower', freshCpu, agedCpu),
    scenarioResult(
      `aging: memory after ${n} connections / before`,
      '×',
      'lower',
      sidesOf(subjects, (s) =>
        withError(
          'aging',
          s,
          memOutcome(before.get(s), after.get(s), { failedConnections: failedConnections.get(s) ?? 0 }),
        ),
      ),
    ),
    scenarioResult(
      `aging: memory ${o.loadWaitS} s after a ${o.loadConnections}-connection load / idle`,
      '×',
      'lower',
      sidesOf(subjects, (s) => {
        const i = idle.get(s);
        const l = later.get(s);
        const p = peak.get(s);
        if (!i || !l || !p)
          return withError('load', s, { samples: [], summary: null, error: 'not measured' });
        // Without a forced GC on both sides (a gateway in production gets none); the GC'd figure in details.
        const value = l.memKiB / i.memKiB;
        const summary: SideResult = {
          value,
          idleMiB: i.memKiB / 1024,
          peakMiB: p.mem / 1024,
          afterMiB: l.memKiB / 1024,
          failedConnections: p.failed,
        };
        if (l.stats) {
          summary.afterGcMiB = l.stats.rss / MIB;
          summary.heapAfterMiB = l.stats.heapUsed / MIB;
          summary.timersAfter = timers(l.stats);
        }
        if (i.agentKiB > 0) {
          summary.agentIdleMiB = i.agentKiB / 1024;
          summary.agentPeakMiB = p.agent / 1024;
          summary.agentAfterMiB = l.agentKiB / 1024;
        }
        return withError('load', s, { samples: [value], summary });
      }),
    ),
  );
  return results;
}
