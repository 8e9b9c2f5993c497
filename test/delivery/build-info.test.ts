// VERSION and COMMIT: fixed at build time by scripts/build-info.mjs, read at run time by src/ops/version.ts.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { fileURLToPath } from 'node:url';
import { DEFAULT_BUILD_INFO, readBuildInfo } from '../../src/ops/version.js';
import { tempDirFor } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const tmp = tempDirFor(after, 'ssh-proxy-build-info-');

function buildInfo(out: string, env: NodeJS.ProcessEnv): { version: string; commit: string } {
  const r = spawnSync(process.execPath, ['scripts/build-info.mjs', '--out', out], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(readFileSync(out, 'utf8')) as { version: string; commit: string };
}

describe('scripts/build-info.mjs', () => {
  test('takes SSH_PROXY_VERSION and SSH_PROXY_COMMIT from the environment (image builds have no .git)', () => {
    const info = buildInfo(tmp.join('env.json'), {
      SSH_PROXY_VERSION: 'v1.2.3-4-gabcdef0',
      SSH_PROXY_COMMIT: 'abcdef0',
    });
    assert.deepEqual(info, { version: 'v1.2.3-4-gabcdef0', commit: 'abcdef0' });
  });

  test('falls back to 0.0.0 and 0000000 without git metadata', () => {
    const info = buildInfo(tmp.join('nogit.json'), { GIT_DIR: tmp.join('no-such-git-dir') });
    assert.deepEqual(info, { version: '0.0.0', commit: '0000000' });
  });

  test('takes the commit from git in a checkout', () => {
    const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(head.status, 0, 'this test runs in a git checkout');
    const info = buildInfo(tmp.join('git.json'), {});
    assert.equal(info.commit, head.stdout.trim());
    const tags = spawnSync('git', ['describe', '--tags', '--match', 'v*'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(info.version, tags.status === 0 ? tags.stdout.trim() : '0.0.0');
  });

  test('rejects values that do not belong in a log line or a gRPC answer', () => {
    const info = buildInfo(tmp.join('bad.json'), {
      SSH_PROXY_VERSION: 'v1\nInjected: yes',
      SSH_PROXY_COMMIT: 'x'.repeat(500),
      GIT_DIR: tmp.join('no-such-git-dir'),
    });
    assert.deepEqual(info, { version: '0.0.0', commit: '0000000' });
  });
});

describe('readBuildInfo (src/ops/version.ts)', () => {
  const at = (name: string, content: string | undefined): URL => {
    const file = tmp.join(name);
    if (content !== undefined) writeFileSync(file, content);
    return pathToFileURL(file);
  };

  test('reads version and commit', () => {
    assert.deepEqual(readBuildInfo(at('ok.json', '{"version":"v2.0.0","commit":"1234567"}')), {
      version: 'v2.0.0',
      commit: '1234567',
    });
  });

  test('falls back field by field on a missing, malformed or partial file', () => {
    assert.deepEqual(readBuildInfo(at('absent.json', undefined)), DEFAULT_BUILD_INFO);
    assert.deepEqual(readBuildInfo(at('torn.json', '{"version":')), DEFAULT_BUILD_INFO);
    assert.deepEqual(readBuildInfo(at('null.json', 'null')), DEFAULT_BUILD_INFO);
    assert.deepEqual(readBuildInfo(at('partial.json', '{"version":"v3.0.0","commit":7}')), {
      version: 'v3.0.0',
      commit: DEFAULT_BUILD_INFO.commit,
    });
  });
});
