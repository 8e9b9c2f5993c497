// Connection set-up: wall time of `ssh host true`, a new connection every run, interleaved; plus sshd through
// an OpenSSH ProxyJump (sshd → sshd), the bastion a user would otherwise pick.
import { errText } from '../../src/ops/log.js';
import { checkOk, runProcess } from '../proc.js';
import { scenarioResult, type ScenarioResult, type SideOutcome } from '../result.js';
import { median, percentile } from '../stats.js';
import type { Target } from '../target.js';

interface Series {
  ms: number[];
  error?: string;
}

function outcome(s: Series): SideOutcome {
  return {
    samples: s.ms,
    summary: s.error ? null : { value: median(s.ms), p95: percentile(s.ms, 95), min: Math.min(...s.ms) },
    error: s.error,
  };
}

export async function measureSetup(
  gateway: Target,
  sshd: Target,
  runs: number,
  log: (s: string) => void,
  /** The A/B baseline's gateway (--baseline). */
  base?: Target,
): Promise<ScenarioResult[]> {
  const jump = ['-J', `${sshd.user}@127.0.0.2:${sshd.port}`];
  const variants: { name: string; target: Target; extra: string[]; series: Series }[] = [
    { name: 'gateway', target: gateway, extra: [], series: { ms: [] } },
    ...(base ? [{ name: 'baseline', target: base, extra: [], series: { ms: [] } }] : []),
    { name: 'sshd', target: sshd, extra: [], series: { ms: [] } },
    { name: 'sshd via ProxyJump', target: sshd, extra: jump, series: { ms: [] } },
  ];
  for (let i = 0; i < runs; i++) {
    for (const v of variants) {
      if (v.series.error) continue;
      try {
        const args = [...v.target.sshArgs(), ...v.extra, v.target.destination, 'true'];
        const r = checkOk(`ssh true via ${v.name}`, await runProcess('ssh', args, { timeoutMs: 30_000 }));
        v.series.ms.push(r.ms);
      } catch (e) {
        v.series.error = errText(e);
        log(`  setup ${v.name} failed: ${v.series.error}`);
      }
    }
  }
  log(`  setup: ${runs} runs each`);
  const of = (name: string) => outcome((variants.find((v) => v.name === name) as { series: Series }).series);
  const g = of('gateway');
  const b = base ? { base: of('baseline') } : {};
  return [
    scenarioResult('setup (ssh true)', 'ms', 'lower', { gateway: g, sshd: of('sshd'), ...b }),
    scenarioResult('setup vs sshd ProxyJump', 'ms', 'lower', {
      gateway: g,
      sshd: of('sshd via ProxyJump'),
      ...b,
    }),
  ];
}
