// `npm run load`: the full load run (docs/security.md). LOAD_CONNECTIONS (100) connections moving
// LOAD_GIB (10) GiB in LOAD_OP_MIB (8) MiB operations. Exits 1 on any failure or mismatch.
import { mkdirSync, writeFileSync } from 'node:fs';
import { formatReport, runLoad } from './load/run.js';

const connections = Number(process.env.LOAD_CONNECTIONS ?? 100);
const gib = Number(process.env.LOAD_GIB ?? 10);
const opMib = Number(process.env.LOAD_OP_MIB ?? 8);
const report = await runLoad({
  connections,
  totalBytes: Math.round(gib * 2 ** 30),
  opBytes: opMib * 2 ** 20,
  log: (l) => console.log(l),
});
console.log(formatReport(report));
const dir = new URL('./results/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(
  new URL(`load-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, dir),
  JSON.stringify(report, null, 2),
);
process.exit(report.failures || report.mismatches ? 1 : 0);
