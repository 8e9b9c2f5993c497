// Smoke run of the bench's aging and cores groups (issue 15 items 1 and 5): tiny sizes and counts, with
// this checkout's own build as the A/B baseline so the aging group's baseline plumbing runs too. Asserts
// the results are well-formed and carry the figures the issue asks for, never timings. Runs the built
// production entry (dist/), like the process-model smoke test.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runProcess } from '../../bench/proc.js';
import type { BenchReport } from '../../bench/report.js';
import type { SideResult } from '../../bench/result.js';
import { makeTempDir } from '../helpers/tmp.js';
import { assertBuilt } from '../e2e/prod/harness.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);

function hasKeys(side: SideResult | null | undefined, keys: string[], what: string): void {
  assert.ok(side, what);
  for (const k of keys) assert.ok(Number.isFinite(side[k]), `${what}: ${k} = ${side[k]}`);
}

test(
  'npm run bench -- --scenarios aging,cores --quick --baseline: well-formed results for every side',
  { timeout: 300_000 },
  async () => {
    assertBuilt();
    const dir = makeTempDir('spx-bench-aging-');
    after(() => dir.cleanup());
    const json = join(dir.path, 'latest.json');
    const r = await runProcess(
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO, 'bench/run.ts'),
        '--quick',
        '--scenarios',
        'aging,cores',
        '--baseline',
        REPO,
        '--json',
        json,
      ],
      { cwd: REPO, timeoutMs: 280_000 },
    );
    assert.equal(r.code, 0, `bench exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    const rep = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    const n = rep.options.aging.connections;
    const l = rep.options.aging.loadConnections;
    const w = rep.options.aging.loadWaitS;
    const cores = `${rep.options.cores.streams}×1 MiB exec download`;
    assert.deepEqual(
      rep.scenarios.map((s) => s.name),
      [
        'aging: exec download, fresh',
        'cpu/aging: exec download, fresh',
        `aging: exec download, after ${n} connections`,
        `cpu/aging: exec download, after ${n} connections`,
        `aging: exec download after ${n} connections / fresh`,
        `aging: CPU per GiB after ${n} connections / fresh`,
        `aging: memory after ${n} connections / before`,
        `aging: memory ${w} s after a ${l}-connection load / idle`,
        `cores: ${cores}, in-process`,
        'cores: relay cores used, in-process',
        `cores: ${cores}, forking`,
        'cores: relay cores used, forking',
      ],
    );
    const by = new Map(rep.scenarios.map((s) => [s.name, s]));
    for (const s of rep.scenarios) {
      const what = `${s.name}: ${JSON.stringify(s)}`;
      assert.equal(s.error, undefined, what);
      for (const side of [s.gateway, s.sshd, ...(s.ab ? [s.ab.gateway] : [])]) {
        assert.ok(side, what);
        for (const [k, v] of Object.entries(side)) assert.ok(Number.isFinite(v) && v >= 0, `${what} ${k}`);
      }
      // Every aging figure is measured on the baseline's fresh gateway too; cores is this build only.
      assert.equal(s.ab !== undefined, s.name.startsWith('aging') || s.name.startsWith('cpu/aging'), what);
      if (s.unit === '×') assert.ok(s.gateway && s.gateway.value > 0, what);
    }
    // after/fresh is the quotient of the two throughput results, per side.
    const ratio = by.get(`aging: exec download after ${n} connections / fresh`);
    const fresh = by.get('aging: exec download, fresh');
    const aged = by.get(`aging: exec download, after ${n} connections`);
    assert.ok(ratio?.gateway && fresh?.gateway && aged?.gateway);
    assert.ok(
      Math.abs(ratio.gateway.value - aged.gateway.value / fresh.gateway.value) < 0.01 * ratio.gateway.value,
    );
    // The gateway's memory figures: RSS and heap after a GC, pending timers, the agent's RSS.
    const gwMem = ['beforeMiB', 'afterMiB', 'heapBeforeMiB', 'heapAfterMiB', 'timersBefore', 'timersAfter'];
    const mem = by.get(`aging: memory after ${n} connections / before`);
    hasKeys(
      mem?.gateway,
      [...gwMem, 'agentBeforeMiB', 'agentAfterMiB', 'failedConnections'],
      'memory after connections',
    );
    hasKeys(mem?.ab?.gateway, gwMem, 'baseline memory after connections');
    hasKeys(mem?.sshd, ['beforeMiB', 'afterMiB'], 'sshd memory after connections');
    const load = by.get(`aging: memory ${w} s after a ${l}-connection load / idle`);
    const loadKeys = ['idleMiB', 'peakMiB', 'afterMiB', 'failedConnections'];
    hasKeys(load?.gateway, [...loadKeys, 'afterGcMiB', 'heapAfterMiB', 'agentPeakMiB'], 'memory after load');
    hasKeys(load?.sshd, loadKeys, 'sshd memory after load');
    // Cores: CPU per process kind, as cores kept busy and per GiB.
    for (const model of ['in-process', 'forking']) {
      const c = by.get(`cores: relay cores used, ${model}`);
      hasKeys(
        c?.gateway,
        ['gatewayCores', 'agentCores', 'commandsCores', 'gatewayCpuPerGiB', 'relayPeakCores'],
        model,
      );
      assert.equal(c?.gateway?.value, c?.gateway?.gatewayCores, model);
      hasKeys(c?.sshd, ['totalCores', 'relayPeakCores'], `sshd beside ${model}`);
      assert.equal(c?.samples.gateway.length, rep.options.runs, model);
    }
  },
);
