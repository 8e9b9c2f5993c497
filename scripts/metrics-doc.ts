// Rewrites the metrics table in docs/operating.md from src/ops/metrics.ts (between the
// `<!-- metrics:begin -->` and `<!-- metrics:end -->` markers). Run: npx tsx scripts/metrics-doc.ts
import { readFileSync, writeFileSync } from 'node:fs';
import { metricsMarkdownTable } from '../src/ops/metrics.js';

const file = new URL('../docs/operating.md', import.meta.url);
const doc = readFileSync(file, 'utf8');
const re = /(<!-- metrics:begin -->\n)[\s\S]*?(<!-- metrics:end -->)/;
if (!re.test(doc)) throw new Error('docs/operating.md has no metrics markers');
const table = await metricsMarkdownTable();
writeFileSync(
  file,
  doc.replace(re, (_m, a: string, b: string) => `${a}${table}${b}`),
);
console.log('docs/operating.md: metrics table updated');
