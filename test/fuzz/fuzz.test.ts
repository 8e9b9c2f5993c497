// The short fuzz run inside npm test: every property of the fuzz suite with a few hundred cases from
// a fresh seed (printed when it fails), and every recorded regression replayed exactly. The full run
// is `npm run fuzz` (≥ 1,000,000 cases; docs/security.md).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FUZZ_PROPERTIES, type FuzzProperty } from './properties.js';
import { loadRegressions, replay, runProperty } from './runner.js';

const SHORT_RUNS = Number(process.env.FUZZ_SHORT_RUNS ?? 150);

describe('fuzz (short run)', () => {
  for (const p of FUZZ_PROPERTIES) {
    test(p.name, async () => {
      const seed = Date.now() ^ (Math.random() * 0x7fffffff);
      const r = await runProperty(p, Math.max(1, Math.round(SHORT_RUNS * p.weight)), seed);
      assert.equal(
        r.failure,
        undefined,
        r.failure && `seed ${r.failure.seed} path "${r.failure.path}": ${r.failure.error}`,
      );
    });
  }
  test('a failure is reported with a seed and path that replay it exactly', async () => {
    const seen: number[] = [];
    const broken: FuzzProperty = {
      name: 'synthetic: numbers below 1000',
      weight: 1,
      run: (numRuns) =>
        fc.assert(
          fc.property(fc.nat(), (n) => {
            seen.push(n);
            assert.ok(n < 1000);
          }),
          { numRuns },
        ),
    };
    const r = await runProperty(broken, 1000, 42);
    assert.ok(r.failure, 'the synthetic property fails');
    seen.length = 0;
    await assert.rejects(replay(broken, r.failure));
    // Exactly the shrunk counterexample, once: the seed and the path were both applied.
    assert.deepEqual(seen, [1000]);
  });
  test('recorded regressions still pass', async () => {
    for (const r of loadRegressions()) {
      const p = FUZZ_PROPERTIES.find((x) => x.name === r.property);
      assert.ok(p, `regression for an unknown property "${r.property}"`);
      await replay(p, r);
    }
  });
});
