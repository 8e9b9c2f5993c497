// Cores (issue 15 item 5): S concurrent exec downloads of N bytes each, aggregate throughput, through the
// production entry in-process (one process for every connection), the same entry forking (one process per
// connection), and sshd (which forks per connection). With the CPU of each process kind over the run:
// CPU seconds / wall seconds is the number of cores it kept busy, so an in-process gateway pinned at 1.0
// while the machine has more is the single-core limit this scenario exists to show.
import { errText } from '../../src/ops/log.js';
import type { BenchEnv } from '../env.js';
import { checkOk, childrenOf, rssKiB, runProcess, selfCpu, settle, treeCpu, treePssKiB } from '../proc.js';
import type { ProductionGateway } from '../production.js';
import { scenarioResult, type ScenarioResult, type SideOutcome, type SideResult } from '../result.js';
import { median } from '../stats.js';
import type { CpuReading, Target } from '../target.js';
import { transferTimeoutMs } from './throughput.js';

const GIB = 1024 ** 3;

export interface CoresOptions {
  streams: number;
  size: number;
  runs: number;
}

/** A production gateway (either model) reaching the agents of the stack process `agentParent`. */
export function productionGatewayTarget(env: BenchEnv, g: ProductionGateway, agentParent: number): Target {
  const agents = () => childrenOf(agentParent);
  return {
    side: 'gateway',
    recorded: false,
    label: `gateway ${g.model}`,
    port: g.port,
    user: env.user,
    env,
    destination: `${env.user}@127.0.0.1`,
    sshArgs: () => ['-F', env.sshConfig, '-p', String(g.port), '-c', env.cipher],
    cpu: () => {
      // Forking: the connection processes, live and reaped, are in the parent's tree.
      const gateway = treeCpu(g.pid);
      let agent = 0;
      let tree = 0;
      for (const a of agents()) {
        agent += selfCpu(a);
        tree += treeCpu(a);
      }
      return { total: gateway + tree, parts: { gateway, agent, commands: tree - agent } };
    },
    memory: () => ({ treePss: treePssKiB(g.pid), parts: { gatewayRss: rssKiB(g.pid) } }),
    settle: async (timeoutMs = 10_000) => {
      await settle(
        () => childrenOf(g.pid).length === 0 && agents().every((a) => childrenOf(a).length === 0),
        timeoutMs,
      );
    },
  };
}

interface Runs {
  mbps: number[];
  /** Per part (and `total`): CPU seconds / wall seconds of each run. */
  cores: Record<string, number[]>;
  /** The busiest 0.5 s of the gateway's (or sshd's) own CPU, in cores. */
  peak: number[];
  cpuPerGiB: Record<string, number[]>;
  error?: string;
}

/** The figure of the process kind that relays (gateway, or the sshd tree). */
function relayCpu(c: CpuReading): number {
  return c.parts.gateway ?? c.total;
}

async function oneRun(t: Target, o: CoresOptions, r: Runs): Promise<void> {
  await t.settle(30_000);
  const c0 = t.cpu();
  let last = { at: process.hrtime.bigint(), cpu: relayCpu(c0) };
  let peak = 0;
  const sampler = setInterval(() => {
    const now = { at: process.hrtime.bigint(), cpu: relayCpu(t.cpu()) };
    const dt = Number(now.at - last.at) / 1e9;
    if (dt > 0) peak = Math.max(peak, (now.cpu - last.cpu) / dt);
    last = now;
  }, 500);
  const t0 = process.hrtime.bigint();
  try {
    await Promise.all(
      Array.from({ length: o.streams }, async () => {
        const res = await runProcess('ssh', [...t.sshArgs(), t.destination, `head -c ${o.size} /dev/zero`], {
          timeoutMs: transferTimeoutMs(o.size * o.streams),
          stdout: 'ignore',
        });
        checkOk(`exec download via ${t.label}`, res);
      }),
    );
  } finally {
    clearInterval(sampler);
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  await t.settle(30_000);
  const c1 = t.cpu();
  const bytes = o.size * o.streams;
  r.mbps.push(bytes / 1e6 / wall);
  r.peak.push(peak);
  const parts: Record<string, number> = { total: c1.total - c0.total };
  for (const [k, v] of Object.entries(c1.parts)) parts[k] = v - (c0.parts[k] ?? 0);
  for (const [k, v] of Object.entries(parts)) {
    (r.cores[k] ??= []).push(v / wall);
    (r.cpuPerGiB[k] ??= []).push(v / (bytes / GIB));
  }
}

export async function measureCores(
  variants: { name: string; target: Target }[],
  sshd: Target,
  o: CoresOptions,
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  const all = [...variants, { name: 'sshd', target: sshd }];
  const runs = new Map<string, Runs>(
    all.map((v) => [v.name, { mbps: [], cores: {}, peak: [], cpuPerGiB: {} }]),
  );
  for (let i = 0; i < o.runs; i++) {
    for (const v of all) {
      const r = runs.get(v.name) as Runs;
      if (r.error) continue;
      try {
        await oneRun(v.target, o, r);
        log(
          `  cores: ${o.streams} streams via ${v.name} run ${i + 1}/${o.runs}: ${(r.mbps.at(-1) ?? 0).toFixed(0)} MB/s, ` +
            `relay ${(r.cores.gateway ?? r.cores.total)?.at(-1)?.toFixed(2)} cores`,
        );
      } catch (e) {
        r.error = errText(e);
        log(`  cores: ${v.name} failed: ${r.error}`);
      }
    }
  }
  const summary = (r: Runs, value: number): SideResult => {
    const out: SideResult = { value };
    for (const [k, v] of Object.entries(r.cores)) out[`${k}Cores`] = median(v);
    for (const [k, v] of Object.entries(r.cpuPerGiB)) out[`${k}CpuPerGiB`] = median(v);
    out.relayPeakCores = median(r.peak);
    return out;
  };
  const tput = (r: Runs): SideOutcome =>
    r.error
      ? { samples: r.mbps, summary: null, error: r.error }
      : { samples: r.mbps, summary: summary(r, median(r.mbps)) };
  const cores = (r: Runs): SideOutcome => {
    const xs = r.cores.gateway ?? r.cores.total ?? [];
    return r.error
      ? { samples: xs, summary: null, error: r.error }
      : { samples: xs, summary: summary(r, median(xs)) };
  };
  const s = runs.get('sshd') as Runs;
  const label = `${o.streams}×${Math.round(o.size / 1024 ** 2)} MiB exec download`;
  return variants.flatMap((v) => {
    const r = runs.get(v.name) as Runs;
    return [
      scenarioResult(`cores: ${label}, ${v.name}`, 'MB/s', 'higher', { gateway: tput(r), sshd: tput(s) }),
      scenarioResult(`cores: relay cores used, ${v.name}`, 'cores', 'higher', {
        gateway: cores(r),
        sshd: cores(s),
      }),
    ];
  });
}
