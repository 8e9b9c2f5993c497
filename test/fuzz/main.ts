// `npm run fuzz`: the full fuzz run. FUZZ_CASES (default 1,000,000) cases shared by weight over every
// property; each failure is printed with its seed and path and added to regressions.json.
import { FUZZ_PROPERTIES } from './properties.js';
import { runProperty, saveRegression } from './runner.js';

const total = Number(process.env.FUZZ_CASES ?? 1_000_000);
const weights = FUZZ_PROPERTIES.reduce((a, p) => a + p.weight, 0);
let cases = 0;
let failures = 0;
const started = Date.now();
for (const p of FUZZ_PROPERTIES) {
  const runs = Math.max(1, Math.round((total * p.weight) / weights));
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() ^ (Math.random() * 0x7fffffff));
  const r = await runProperty(p, runs, seed);
  cases += runs;
  const rate = Math.round((runs / Math.max(1, r.ms)) * 1000);
  if (r.failure) {
    failures++;
    saveRegression(r.failure);
    console.log(
      `FAIL ${p.name}\n     seed ${r.failure.seed} path "${r.failure.path}"\n     ${r.failure.error}`,
    );
  } else {
    console.log(`ok   ${p.name}: ${runs} cases in ${(r.ms / 1000).toFixed(1)} s (${rate}/s, seed ${seed})`);
  }
}
console.log(
  `\n${cases} cases, ${failures} failing properties, ${((Date.now() - started) / 1000).toFixed(1)} s` +
    (failures ? ' (failures kept in test/fuzz/regressions.json)' : ''),
);
process.exit(failures ? 1 : 0);
