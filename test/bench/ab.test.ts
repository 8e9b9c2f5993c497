// The bench's A/B tooling (issue 15 item 6): `--baseline DIR` runs a second gateway stack from another
// checkout's build interleaved with this one and sshd; `--compare OLD.json` prints the change per
// scenario; every run writes a Markdown table beside its JSON. Shapes only, never timings. The
// baseline here is this checkout's own dist/ (any built tree will do: the point is the plumbing).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runProcess } from '../../bench/proc.js';
import { compareReports, type BenchReport } from '../../bench/report.js';
import type { ScenarioResult } from '../../bench/result.js';
import { makeTempDir } from '../helpers/tmp.js';
import { assertBuilt } from '../e2e/prod/harness.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);

test(
  'npm run bench -- --baseline DIR: every scenario reports the baseline gateway and current/baseline',
  { timeout: 180_000 },
  async () => {
    assertBuilt();
    const dir = makeTempDir('spx-bench-ab-');
    after(() => dir.cleanup());
    const json = join(dir.path, 'ab.json');
    const bench = (args: string[]) =>
      runProcess(process.execPath, ['--import', 'tsx', join(REPO, 'bench/run.ts'), ...args], {
        cwd: REPO,
        timeoutMs: 160_000,
      });
    const r = await bench([
      '--quick',
      '--no-recording',
      '--scenarios',
      'setup,exec',
      '--baseline',
      REPO,
      '--json',
      json,
    ]);
    assert.equal(r.code, 0, `bench exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /cur\/base/);
    const rep = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    assert.equal(rep.options.baseline, REPO);
    assert.deepEqual(
      rep.scenarios.map((s) => s.name),
      [
        'setup (ssh true)',
        'setup vs sshd ProxyJump',
        'exec upload',
        'cpu/exec upload',
        'exec download',
        'cpu/exec download',
      ],
    );
    for (const s of rep.scenarios) {
      const what = `${s.name}: ${JSON.stringify(s)}`;
      assert.equal(s.error, undefined, what);
      const ab = s.ab;
      assert.ok(ab?.gateway && s.gateway && s.sshd, what);
      for (const [k, v] of Object.entries(ab.gateway)) assert.ok(Number.isFinite(v), `${what} ${k}`);
      // Interleaved: the baseline ran as many rounds as the others.
      assert.equal(ab.samples.length, s.samples.gateway.length, what);
      assert.equal(ab.samples.length, s.samples.sshd.length, what);
      if (ab.gateway.value > 0) {
        assert.ok(ab.ratio !== null, what);
        assert.ok(Math.abs(ab.ratio - s.gateway.value / ab.gateway.value) <= 0.01 * ab.ratio + 1e-3, what);
      }
      if (s.sshd.value > 0) {
        assert.ok(ab.sshdRatio !== null, what);
        assert.ok(
          Math.abs(ab.sshdRatio - ab.gateway.value / s.sshd.value) <= 0.01 * ab.sshdRatio + 1e-3,
          what,
        );
      }
    }
    // The Markdown table beside the JSON has a row per scenario and the A/B columns.
    const md = readFileSync(join(dir.path, 'ab.md'), 'utf8');
    assert.match(md, /\| scenario \| ratio g\/s \| gateway \| sshd \| baseline \| cur\/base \| unit \|/);
    for (const s of rep.scenarios) assert.ok(md.includes(`| ${s.name} |`), `${s.name} in\n${md}`);
    assert.ok(existsSync(join(dir.path, `${rep.startedAt.replace(/[:.]/g, '-')}.md`)));

    // --compare against itself: every scenario, no change.
    const c = await bench(['--compare', json, '--json', json]);
    assert.equal(c.code, 0, c.stderr);
    for (const s of rep.scenarios) {
      const row = c.stdout.split('\n').find((l) => l.startsWith(`${s.name} `));
      assert.ok(row, `${s.name} in\n${c.stdout}`);
      assert.match(row, /\+0\.0 %/);
    }
  },
);

function scenario(name: string, better: 'higher' | 'lower', gateway: number, sshd: number): ScenarioResult {
  return {
    name,
    unit: better === 'higher' ? 'MB/s' : 'CPU s/GiB',
    better,
    gateway: { value: gateway },
    sshd: { value: sshd },
    ratio: gateway / sshd,
    samples: { gateway: [gateway], sshd: [sshd] },
  };
}

test('--compare: the gain is signed so that + is better, whichever way the scenario counts', () => {
  const report = (scenarios: ScenarioResult[]) => ({ scenarios }) as BenchReport;
  const changes = compareReports(
    report([
      scenario('tput', 'higher', 100, 400),
      scenario('cpu', 'lower', 4, 1),
      scenario('gone', 'higher', 1, 1),
    ]),
    report([
      scenario('tput', 'higher', 150, 400),
      scenario('cpu', 'lower', 5, 1),
      scenario('new', 'lower', 1, 1),
    ]),
  );
  const by = new Map(changes.map((c) => [c.name, c]));
  assert.equal(by.get('tput')?.gain, 0.5);
  assert.equal(by.get('cpu')?.gain, 4 / 5 - 1);
  assert.deepEqual([by.get('tput')?.oldRatio, by.get('tput')?.newRatio], [0.25, 0.375]);
  // A scenario in only one file is listed with no gain.
  assert.equal(by.get('gone')?.new, null);
  assert.equal(by.get('gone')?.gain, null);
  assert.equal(by.get('new')?.old, null);
  assert.deepEqual(
    changes.map((c) => c.name),
    ['tput', 'cpu', 'new', 'gone'],
  );
});
