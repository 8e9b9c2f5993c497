// scripts/smoke.mjs (`make test-self`) accepts a clean, explained refusal to start as well as a running
// gateway (bundle.test.ts runs the running case on the bundle); here the refusal case, on dist/.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDirFor } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const tmp = tempDirFor(after, 'ssh-proxy-smoke-test-');

function smoke(config: string) {
  return spawnSync(process.execPath, [join(ROOT, 'scripts', 'smoke.mjs'), '--config', config], {
    cwd: tmp.path,
    encoding: 'utf8',
    timeout: 180_000,
  });
}

describe('smoke script', () => {
  test('passes when the gateway refuses to start with an explained error (here: no host key)', () => {
    const sample = readFileSync(join(ROOT, 'config', 'config.yaml'), 'utf8');
    const broken = sample.replace(
      'serverKey: ${SECRET_FILES}/server_key',
      'serverKey: ${SECRET_FILES}/absent_key',
    );
    assert.notEqual(broken, sample, 'the sample names ${SECRET_FILES}/server_key');
    const file = tmp.join('refusing.yaml');
    writeFileSync(file, broken);
    const r = smoke(file);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /refused to start with exit code 1/);
    assert.match(
      r.stdout,
      /the refusal is explained in an error log line: Failed to start server: .*absent_key/,
    );
    assert.match(r.stdout, /^smoke: passed$/m);
  });

  test('fails when the sample changed so that a line it adapts is gone', () => {
    const file = tmp.join('other.yaml');
    writeFileSync(file, 'server:\n  port: 2222\n');
    const r = smoke(file);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /sample config has no line "port: 2022"; update scripts\/smoke\.mjs/);
  });
});
