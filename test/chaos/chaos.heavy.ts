// `npm run chaos`: every fault of the chaos suite; the outcomes table is printed at the end and written
// to bench/results/chaos-<date>.json (docs/security.md keeps a full run's).
import { after } from 'node:test';
import { mkdirSync, writeFileSync } from 'node:fs';
import { ALL_CASES, chaosSuite, type Outcome } from './cases.js';

const outcomes: Outcome[] = [];
chaosSuite(ALL_CASES, outcomes);
after(() => {
  const dir = new URL('../../bench/results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    new URL(`chaos-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, dir),
    JSON.stringify(outcomes, null, 2),
  );
  for (const o of outcomes)
    console.log(`| ${o.case} | ${o.userSees} | ${(o.afterMs / 1000).toFixed(1)} s | ${o.next} |`);
});
