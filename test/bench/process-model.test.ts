// Smoke run of the bench's process-model group (`npm run bench -- --scenarios forking`): the production
// entry in in-process and forking mode beside sshd, tiny counts; asserts the results are well-formed,
// never timings. Runs the built entry (dist/), like the production-entry e2e tests.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runProcess } from '../../bench/proc.js';
import type { BenchReport } from '../../bench/report.js';
import { makeTempDir } from '../helpers/tmp.js';
import { assertBuilt } from '../e2e/prod/harness.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);

test(
  'npm run bench -- --scenarios forking --quick: well-formed results for both models',
  { timeout: 240_000 },
  async () => {
    assertBuilt();
    const dir = makeTempDir('spx-bench-fork-');
    after(() => dir.cleanup());
    const json = join(dir.path, 'latest.json');
    const r = await runProcess(
      process.execPath,
      ['--import', 'tsx', join(REPO, 'bench/run.ts'), '--quick', '--scenarios', 'forking', '--json', json],
      { cwd: REPO, timeoutMs: 220_000 },
    );
    assert.equal(r.code, 0, `bench exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    const rep = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    const names = rep.scenarios.map((s) => s.name);
    const want = ['in-process', 'forking'].flatMap((m) => [
      `${m} entry: setup (ssh true)`,
      `${m} entry: CPU per connection`,
      `${m} entry: 3 idle connections: memory`,
    ]);
    assert.deepEqual(names, want);
    for (const s of rep.scenarios) {
      const what = `${s.name}: ${JSON.stringify(s)}`;
      assert.equal(s.error, undefined, what);
      assert.ok(s.gateway && s.sshd, what);
      for (const side of [s.gateway, s.sshd])
        for (const [k, v] of Object.entries(side)) assert.ok(Number.isFinite(v), `${what} ${k}`);
      if (s.unit === 'ms') assert.ok(s.gateway.value > 0 && s.sshd.value > 0, what);
      if (s.unit === 's') assert.ok(s.gateway.value >= 0 && s.sshd.value >= 0, what);
      assert.equal(s.samples.gateway.length, s.unit === 'KiB/connection' ? 1 : rep.options.setupRuns, what);
    }
    // A forked connection is a whole process: its memory shows in the parent's tree.
    const fork = rep.scenarios.find((s) => s.name === 'forking entry: 3 idle connections: memory');
    assert.ok((fork?.gateway?.childRssKiB ?? 0) > 0, JSON.stringify(fork));
  },
);
