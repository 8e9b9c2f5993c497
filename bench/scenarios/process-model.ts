// The cost of a connection in each process model of the production entry (in-process vs forking, issue 12):
// set-up time of `ssh host true` (new connection each run, interleaved with sshd), the gateway's CPU per
// connection in those runs, and the memory N idle authenticated connections hold (PSS of the gateway's
// process tree above its idle baseline, per connection). sshd forks per connection too, which makes it
// the natural baseline for the forking figures.
import { errText } from '../../src/ops/log.js';
import type { Client } from 'ssh2';
import type { BenchEnv } from '../env.js';
import type { BenchServices } from '../gateway.js';
import { childrenOf, checkOk, rssKiB, runProcess, settle, treeCpu, treePssKiB } from '../proc.js';
import { startProduction, type ProcessModel, type ProductionGateway } from '../production.js';
import { scenarioResult, type ScenarioResult, type SideOutcome } from '../result.js';
import { connectClient, pool } from '../ssh2client.js';
import { median, percentile } from '../stats.js';
import type { Target } from '../target.js';

interface Variant {
  name: string;
  target: Target;
  setupMs: number[];
  cpuS: number[];
  error?: string;
}

/** A Target for a production gateway process (its children, in forking mode, are the connections). */
function productionTarget(env: BenchEnv, g: ProductionGateway, sshd: Target): Target {
  return {
    ...sshd,
    side: 'gateway',
    port: g.port,
    sshArgs: () => ['-F', env.sshConfig, '-p', String(g.port), '-c', env.cipher],
    cpu: () => ({ total: treeCpu(g.pid), parts: {} }),
    memory: () => {
      const kids = childrenOf(g.pid);
      return {
        treePss: treePssKiB(g.pid),
        parts: { processes: 1 + kids.length, childRss: kids.reduce((s, k) => s + rssKiB(k), 0) },
      };
    },
    settle: async (timeoutMs = 10_000) => {
      await settle(() => childrenOf(g.pid).length === 0, timeoutMs);
    },
    env,
  };
}

function outcome(xs: number[], error?: string): SideOutcome {
  return {
    samples: xs,
    summary:
      error || xs.length === 0 ? null : { value: median(xs), p95: percentile(xs, 95), min: Math.min(...xs) },
    error,
  };
}

async function setupRuns(variants: Variant[], runs: number, log: (s: string) => void): Promise<void> {
  for (let i = 0; i < runs; i++) {
    for (const v of variants) {
      if (v.error) continue;
      try {
        const cpu0 = v.target.cpu().total;
        const args = [...v.target.sshArgs(), v.target.destination, 'true'];
        const r = checkOk(`ssh true via ${v.name}`, await runProcess('ssh', args, { timeoutMs: 60_000 }));
        // A forked child is reaped (and its CPU counted in the parent's) shortly after the client exits.
        await v.target.settle(10_000);
        v.setupMs.push(r.ms);
        v.cpuS.push(v.target.cpu().total - cpu0);
      } catch (e) {
        v.error = errText(e);
        log(`  process model: ${v.name} failed: ${v.error}`);
      }
    }
  }
}

/** Holds `n` idle authenticated connections (no channel) and reads the memory they cost. */
async function memoryPerConnection(t: Target, n: number): Promise<SideOutcome> {
  await t.settle(30_000);
  const base = t.memory();
  const clients: Client[] = [];
  try {
    await pool(
      Array.from({ length: n }, (_, i) => i),
      5,
      async () => {
        clients.push(await connectClient(t));
      },
    );
    const m = t.memory();
    const value = (m.treePss - base.treePss) / n;
    const summary: Record<string, number> = { value, treePssKiB: m.treePss };
    const kids = (m.parts.processes ?? 1) - 1;
    if (kids > 0) summary.childRssKiB = (m.parts.childRss ?? 0) / kids;
    return { samples: [value], summary: summary as { value: number } };
  } catch (e) {
    return { samples: [], summary: null, error: `${clients.length} of ${n} connections: ${errText(e)}` };
  } finally {
    for (const c of clients) c.end();
    await t.settle(60_000);
  }
}

export async function measureProcessModels(
  env: BenchEnv,
  sshd: Target,
  services: BenchServices,
  o: { setupRuns: number; connections: number; tsx: boolean },
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  const started: ProductionGateway[] = [];
  try {
    const variants: Variant[] = [];
    for (const model of ['in-process', 'forking'] as ProcessModel[]) {
      const g = await startProduction(env, { model, services, tsx: o.tsx });
      started.push(g);
      variants.push({
        name: model,
        target: productionTarget(env, g, sshd),
        setupMs: [],
        cpuS: [],
      });
    }
    const sshdVariant: Variant = { name: 'sshd', target: sshd, setupMs: [], cpuS: [] };
    // Warm-up: module caches, the workspace connection of each gateway.
    await setupRuns(variants, 1, log);
    for (const v of variants) {
      v.setupMs = [];
      v.cpuS = [];
    }
    await setupRuns([...variants, sshdVariant], o.setupRuns, log);
    log(`  process model: ${o.setupRuns} set-up runs each`);
    const sshdMem = await memoryPerConnection(sshd, o.connections);
    const out: ScenarioResult[] = [];
    for (const v of variants) {
      const mem = await memoryPerConnection(v.target, o.connections);
      log(
        `  ${v.name}: ${mem.summary ? `${mem.summary.value.toFixed(0)} KiB/connection` : mem.error}, set-up median ${median(v.setupMs).toFixed(0)} ms`,
      );
      out.push(
        scenarioResult(`${v.name} entry: setup (ssh true)`, 'ms', 'lower', {
          gateway: outcome(v.setupMs, v.error),
          sshd: outcome(sshdVariant.setupMs, sshdVariant.error),
        }),
        scenarioResult(`${v.name} entry: CPU per connection`, 's', 'lower', {
          gateway: outcome(v.cpuS, v.error),
          sshd: outcome(sshdVariant.cpuS, sshdVariant.error),
        }),
        scenarioResult(
          `${v.name} entry: ${o.connections} idle connections: memory`,
          'KiB/connection',
          'lower',
          {
            gateway: mem,
            sshd: sshdMem,
          },
        ),
      );
    }
    return out;
  } finally {
    for (const g of started) await g.stop().catch(() => undefined);
  }
}
