// Every dependency patch in patches/ must be applied to node_modules (postinstall runs patch-package).
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const ROOT = new URL('../..', import.meta.url).pathname;
const patches = readdirSync(join(ROOT, 'patches')).filter((f) => f.endsWith('.patch'));

test('there is at least one patch and each one marks its code', () => {
  assert.ok(patches.length > 0);
  for (const p of patches)
    assert.match(readFileSync(join(ROOT, 'patches', p), 'utf8'), /^\+.*ssh-proxy patch:/m, p);
});

for (const p of patches) {
  test(`patch ${p} is applied`, () => {
    const text = readFileSync(join(ROOT, 'patches', p), 'utf8');
    // Per touched file: every added line carrying the marker must be in the installed file.
    for (const part of text.split(/^diff --git /m).slice(1)) {
      const file = /^a\/(\S+)/.exec(part)?.[1];
      assert.ok(file, `unparsable patch ${p}`);
      const installed = readFileSync(join(ROOT, file), 'utf8');
      const markers = part
        .split('\n')
        .filter((l) => l.startsWith('+') && !l.startsWith('+++') && l.includes('ssh-proxy patch:'))
        .map((l) => l.slice(1));
      for (const m of markers) assert.ok(installed.includes(m), `${file} lacks "${m.trim()}" (${p})`);
    }
  });
}
