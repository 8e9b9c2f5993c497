// Interleaved A/B throughput runs (gateway, sshd, gateway, sshd, …) with server-side CPU per GiB.
import { errText } from '../../src/ops/log.js';
import { scenarioResult, type ScenarioResult, type SideOutcome } from '../result.js';
import { median, round } from '../stats.js';
import type { Target } from '../target.js';

const GIB = 1024 ** 3;

/** One transfer of `bytes` against a target; resolves with its wall time in milliseconds. */
export type Transfer = (t: Target) => Promise<number>;

interface SideRuns {
  mbps: number[];
  cpu: number[];
  parts: Record<string, number[]>;
  error?: string;
}

/** Deadline for one transfer: generous (10 MB/s) so a slow machine still finishes, bounded all the same. */
export function transferTimeoutMs(bytes: number): number {
  return 30_000 + bytes / 10_000;
}

/**
 * Runs `transfer` against every target in turn, `runs` times (interleaved). Results: `name` and
 * `cpu/<name>` for the gateway against sshd, and, when a recorded gateway is among the targets,
 * `<name> (recorded)` and `cpu/<name> (recorded)` (without a parenthesised suffix of `name`) for it
 * against sshd, with the unrecorded gateway of the same runs as the baseline.
 */
export async function measureThroughput(
  name: string,
  bytes: number,
  targets: Target[],
  runs: number,
  transfer: Transfer,
  log: (s: string) => void,
  /** Wait for per-connection processes to exit around each run (not for a persistent connection). */
  settle = true,
): Promise<ScenarioResult[]> {
  const by = new Map<string, SideRuns>(targets.map((t) => [t.label, { mbps: [], cpu: [], parts: {} }]));
  for (let i = 0; i < runs; i++) {
    for (const t of targets) {
      const r = by.get(t.label) as SideRuns;
      if (r.error) continue;
      try {
        if (settle) await t.settle();
        const c0 = t.cpu();
        const ms = await transfer(t);
        if (settle) await t.settle();
        const c1 = t.cpu();
        const gib = bytes / GIB;
        r.mbps.push(bytes / 1e6 / (ms / 1000));
        r.cpu.push((c1.total - c0.total) / gib);
        for (const [k, v] of Object.entries(c1.parts))
          (r.parts[k] ??= []).push((v - (c0.parts[k] ?? 0)) / gib);
        log(`  ${name} ${t.label} run ${i + 1}/${runs}: ${(bytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s`);
      } catch (e) {
        r.error = errText(e);
        log(`  ${name} ${t.label} failed: ${r.error}`);
      }
    }
  }
  const side = (label: string, pick: (r: SideRuns) => SideOutcome): SideOutcome =>
    by.has(label) ? pick(by.get(label) as SideRuns) : { samples: [], summary: null, error: 'not run' };
  const tput = (r: SideRuns): SideOutcome => ({
    samples: r.mbps,
    summary: r.error ? null : { value: median(r.mbps), min: Math.min(...r.mbps), max: Math.max(...r.mbps) },
    error: r.error,
  });
  const cpu = (r: SideRuns): SideOutcome => {
    if (r.error) return { samples: r.cpu, summary: null, error: r.error };
    const summary: Record<string, number> = { value: median(r.cpu) };
    for (const [k, v] of Object.entries(r.parts)) summary[k] = median(v);
    return { samples: r.cpu, summary: summary as { value: number } };
  };
  // The A/B baseline's gateway (--baseline), when it is among the targets.
  const base = (pick: (r: SideRuns) => SideOutcome) =>
    by.has('baseline') ? { base: side('baseline', pick) } : {};
  const results = [
    scenarioResult(name, 'MB/s', 'higher', {
      gateway: side('gateway', tput),
      sshd: side('sshd', tput),
      ...base(tput),
    }),
    scenarioResult(`cpu/${name}`, 'CPU s/GiB', 'lower', {
      gateway: side('gateway', cpu),
      sshd: side('sshd', cpu),
      ...base(cpu),
    }),
  ];
  const recorded = targets.find((t) => t.recorded);
  if (!recorded) return results;
  const [plain, plainCpu] = results as [ScenarioResult, ScenarioResult];
  // `-L download (from source)` → `-L download (recorded)`.
  const recName = `${name.replace(/ \(.*\)$/, '')} (recorded)`;
  const withBaseline = (r: ScenarioResult, base: ScenarioResult): ScenarioResult => {
    const b = base.gateway?.value;
    if (r.gateway && b !== undefined && b > 0)
      r.baseline = { name: base.name, value: b, ratio: round(r.gateway.value / b, 4) };
    return r;
  };
  return [
    ...results,
    withBaseline(
      scenarioResult(recName, 'MB/s', 'higher', {
        gateway: side(recorded.label, tput),
        sshd: side('sshd', tput),
      }),
      plain,
    ),
    withBaseline(
      scenarioResult(`cpu/${recName}`, 'CPU s/GiB', 'lower', {
        gateway: side(recorded.label, cpu),
        sshd: side('sshd', cpu),
      }),
      plainCpu,
    ),
  ];
}
