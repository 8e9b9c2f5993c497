#!/usr/bin/env node
// Runs every test file under test/ with node:test through tsx (Node 20's --test has no glob support).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);
const all = readdirSync(join(root, 'test'), { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.ts'))
  .sort()
  .map((f) => join('test', f));
const selected = only.length ? all.filter((f) => only.some((o) => f.includes(o))) : all;
if (selected.length === 0) {
  console.error(`no test files match ${only.join(' ')}`);
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=2',
    '--test-timeout=600000',
    '--test-reporter=spec',
    ...selected,
  ],
  { cwd: root, stdio: 'inherit' },
);
process.exit(r.status ?? 1);
