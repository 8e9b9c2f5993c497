// Smoke run of the benchmark harness (issue 5): tiny sizes, every scenario against both the gateway and the
// baseline sshd; asserts the results are well-formed, never timings.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SCENARIO_GROUPS } from '../../bench/options.js';
import { runProcess } from '../../bench/proc.js';
import type { BenchReport } from '../../bench/report.js';
import { makeTempDir } from '../helpers/tmp.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);
const EXPECTED = [
  'setup (ssh true)',
  'setup vs sshd ProxyJump',
  'interactive echo p99',
  'exec upload',
  'exec download',
  '-L upload (to sink)',
  '-L download (from source)',
  'sftp put',
  'sftp get',
  'exec download (recorded)',
  '-L download (recorded)',
  '5 idle PTY sessions: memory',
  'connection rate (c=20)',
];
const THROUGHPUT = [
  'exec upload',
  'exec download',
  '-L upload (to sink)',
  '-L download (from source)',
  'sftp put',
  'sftp get',
  'exec download (recorded)',
  '-L download (recorded)',
];
/** Recorded scenarios and the unrecorded ones of the same runs they are reported against. */
const RECORDED: Record<string, string> = {
  'exec download (recorded)': 'exec download',
  '-L download (recorded)': '-L download (from source)',
  'cpu/exec download (recorded)': 'cpu/exec download',
  'cpu/-L download (recorded)': 'cpu/-L download (from source)',
};

test(
  'npm run bench --quick: every scenario has a well-formed result for both sides',
  { timeout: 120_000 },
  async () => {
    const dir = makeTempDir('spx-bench-smoke-');
    after(() => dir.cleanup());
    const json = join(dir.path, 'latest.json');
    const r = await runProcess(
      process.execPath,
      // Every group but those with a smoke test of their own (test/bench/process-model.test.ts,
      // test/bench/aging-cores.test.ts).
      [
        '--import',
        'tsx',
        join(REPO, 'bench/run.ts'),
        '--quick',
        '--tsx-agent',
        '--scenarios',
        SCENARIO_GROUPS.filter((g) => !['forking', 'aging', 'cores'].includes(g)).join(','),
        '--json',
        json,
      ],
      { cwd: REPO, timeoutMs: 110_000 },
    );
    const out = r.stdout;
    assert.equal(r.code, 0, `bench exited ${r.code}\n${out}\n${r.stderr}`);
    assert.match(out, /ratio g\/s/);

    const rep = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    assert.ok(rep.machine.cores >= 1 && rep.machine.cpuModel && rep.machine.node.startsWith('v'));
    assert.match(rep.machine.opensshClient, /OpenSSH/);
    assert.match(rep.machine.opensshServer, /OpenSSH/);
    const names = rep.scenarios.map((s) => s.name);
    const expected = [...EXPECTED, ...THROUGHPUT.map((n) => `cpu/${n}`)];
    assert.deepEqual([...names].sort(), [...expected].sort());

    for (const s of rep.scenarios) {
      const what = `${s.name}: ${JSON.stringify(s)}`;
      assert.equal(s.error, undefined, what);
      assert.ok(s.unit.length > 0 && (s.better === 'higher' || s.better === 'lower'), what);
      assert.ok(s.gateway && s.sshd, what);
      // CPU is read in clock ticks (10 ms); a 1 MiB transfer may cost the sshd side less than one tick.
      // Memory is RSS above an idle baseline: with a handful of sessions, a garbage collection in
      // between can make it negative, so only finiteness is a property of a well-formed result there.
      const min = s.unit === 'KiB/session' ? -Infinity : s.name.startsWith('cpu/') ? 0 : Number.MIN_VALUE;
      for (const side of [s.gateway, s.sshd]) {
        for (const [k, v] of Object.entries(side)) assert.ok(Number.isFinite(v), `${what} ${k}`);
        assert.ok(side.value >= min, `${what}: value ${side.value}`);
      }
      if (s.sshd.value > 0) {
        assert.ok(s.ratio !== null, what);
        assert.ok(
          Math.abs(s.ratio - s.gateway.value / s.sshd.value) <= 0.01 * Math.abs(s.ratio) + 1e-3,
          what,
        );
      } else assert.equal(s.ratio, null, what);
      for (const xs of [s.samples.gateway, s.samples.sshd]) {
        assert.ok(xs.length > 0, what);
        for (const x of xs) assert.ok(Number.isFinite(x) && x >= min, `${what}: sample ${x}`);
      }
    }
    // Recorded scenarios carry the unrecorded gateway of the same runs as their baseline.
    for (const [rec, plain] of Object.entries(RECORDED)) {
      const r = rep.scenarios.find((x) => x.name === rec);
      const p = rep.scenarios.find((x) => x.name === plain);
      assert.ok(r?.gateway && r.baseline && p?.gateway, `${rec}: ${JSON.stringify(r)}`);
      assert.equal(r.baseline.name, plain);
      assert.equal(r.baseline.value, p.gateway.value);
      if (p.gateway.value > 0)
        assert.ok(
          Math.abs(r.baseline.ratio - r.gateway.value / p.gateway.value) <= 0.01 * r.baseline.ratio + 1e-3,
        );
      if (r.unit === 'MB/s') {
        const share = r.gateway.recordedShare;
        assert.ok(share !== undefined && share >= 0 && share <= 1, `${rec}: recordedShare ${share}`);
      }
    }
    assert.match(out, /exec download \(recorded\): [\d.]+ × unrecorded/);
    // Throughput scenarios ran the requested number of interleaved runs on both sides.
    for (const n of THROUGHPUT) {
      const s = rep.scenarios.find((x) => x.name === n);
      assert.equal(s?.samples.gateway.length, rep.options.runs, n);
      assert.equal(s?.samples.sshd.length, rep.options.runs, n);
    }
  },
);
