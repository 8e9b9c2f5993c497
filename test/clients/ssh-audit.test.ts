// ssh-audit (Debian's 2.5.0) against the gateway: no `[fail]` line except the exceptions listed, with a
// reason, in docs/clients.md ("ssh-audit exceptions" table: first column = the algorithm).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../e2e/harness.js';
import { REPO, startClientsE2E, type ClientsE2E } from './harness.js';

let e: ClientsE2E;
before(async () => {
  e = await startClientsE2E();
});
after(async () => {
  await e.stop();
});

function listedExceptions(): Set<string> {
  const doc = readFileSync(join(REPO, 'docs/clients.md'), 'utf8');
  const section = doc.split(/^## /m).find((s) => s.startsWith('ssh-audit exceptions'));
  assert.ok(section, 'docs/clients.md has an "ssh-audit exceptions" section');
  const names = new Set<string>();
  for (const line of section.split('\n')) {
    const m = /^\|\s*`([^`]+)`\s*\|/.exec(line);
    if (m?.[1]) names.add(m[1]);
  }
  return names;
}

test('ssh-audit reports no failure outside the documented exceptions', async () => {
  const r = await run('ssh-audit', ['-n', '-p', String(e.port), '127.0.0.1'], { timeoutMs: 120_000 });
  const out = r.stdout.toString();
  assert.match(out, /\(kex\) curve25519-sha256/, `ssh-audit did not audit: ${out}${r.stderr}`);
  assert.match(out, /\(kex\) mlkem768x25519-sha256/);
  const allowed = listedExceptions();
  const fails = out
    .split('\n')
    .filter((l) => /\[fail\]/.test(l))
    .map((l) => /^\((?:kex|key|enc|mac|gen|cmp)\)\s+(\S+)/.exec(l)?.[1] ?? l.trim());
  const unexpected = fails.filter((f) => !allowed.has(f));
  assert.deepEqual(unexpected, [], out);
});
