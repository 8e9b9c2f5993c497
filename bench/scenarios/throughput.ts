// Interleaved A/B throughput runs (gateway, sshd, gateway, sshd, …) with server-side CPU per GiB.
import { errText } from '../../src/ops/log.js';
import { scenarioResult, type ScenarioResult, type SideOutcome } from '../result.js';
import { median } from '../stats.js';
import type { Side, Target } from '../target.js';

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
  const by = new Map<Side, SideRuns>(targets.map((t) => [t.side, { mbps: [], cpu: [], parts: {} }]));
  for (let i = 0; i < runs; i++) {
    for (const t of targets) {
      const r = by.get(t.side) as SideRuns;
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
        log(`  ${name} ${t.side} run ${i + 1}/${runs}: ${(bytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s`);
      } catch (e) {
        r.error = errText(e);
        log(`  ${name} ${t.side} failed: ${r.error}`);
      }
    }
  }
  const side = (s: Side, pick: (r: SideRuns) => SideOutcome): SideOutcome =>
    by.has(s) ? pick(by.get(s) as SideRuns) : { samples: [], summary: null, error: 'not run' };
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
  return [
    scenarioResult(name, 'MB/s', 'higher', { gateway: side('gateway', tput), sshd: side('sshd', tput) }),
    scenarioResult(`cpu/${name}`, 'CPU s/GiB', 'lower', {
      gateway: side('gateway', cpu),
      sshd: side('sshd', cpu),
    }),
  ];
}
