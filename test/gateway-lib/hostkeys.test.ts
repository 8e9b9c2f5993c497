import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ProxyError } from '../../src/common/errors.js';
import { generateHostKey, loadHostKeys } from '../../src/gateway/hostkeys.js';

let dir = '';
const path = (name: string): string => join(dir, name);

function keygen(name: string, ...args: string[]): string {
  execFileSync('ssh-keygen', ['-q', '-N', '', ...args, '-f', path(name)], { stdio: 'ignore' });
  return path(name);
}

function expectConfigError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProxyError, String(err));
    assert.equal(err.code, 'bad_config');
    assert.match(err.message, re);
    return true;
  });
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'hostkeys-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('loadHostKeys', () => {
  it('loads ed25519 (OpenSSH), rsa (PEM) and ecdsa (PEM and OpenSSH) keys', () => {
    const ed = keygen('ed', '-t', 'ed25519');
    const rsa = keygen('rsa', '-t', 'rsa', '-b', '2048', '-m', 'PEM');
    const ec = keygen('ec', '-t', 'ecdsa', '-b', '256', '-m', 'PEM');
    const ec384 = keygen('ec384', '-t', 'ecdsa', '-b', '384');
    assert.match(readFileSync(rsa, 'utf8'), /BEGIN RSA PRIVATE KEY/);
    assert.match(readFileSync(ec, 'utf8'), /BEGIN EC PRIVATE KEY/);
    assert.match(readFileSync(ed, 'utf8'), /BEGIN OPENSSH PRIVATE KEY/);
    const r = loadHostKeys([ed, rsa, ec, ec384]);
    assert.deepEqual(r.types, ['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384']);
    assert.equal(r.keys.length, 4);
    assert.deepEqual(r.keys[0], readFileSync(ed));
    assert.deepEqual(loadHostKeys(ed).types, ['ssh-ed25519']);
    const rsaOpenSsh = keygen('rsa-openssh', '-t', 'rsa', '-b', '2048');
    assert.deepEqual(loadHostKeys(rsaOpenSsh).types, ['ssh-rsa']);
  });

  it('no path: server key path not configured', () => {
    expectConfigError(() => loadHostKeys(''), /^server key path not configured$/);
    expectConfigError(() => loadHostKeys([]), /^server key path not configured$/);
    expectConfigError(() => loadHostKeys(['  ']), /^server key path not configured$/);
  });

  it('unreadable file', () => {
    const missing = path('does-not-exist');
    expectConfigError(
      () => loadHostKeys(missing),
      new RegExp(`^failed to read host key file '${missing}': .*ENOENT`),
    );
    expectConfigError(() => loadHostKeys(dir), /^failed to read host key file '.*': .*EISDIR/);
  });

  it('unparsable, public or encrypted key', () => {
    const junk = path('junk');
    writeFileSync(junk, 'not a key\n');
    expectConfigError(() => loadHostKeys(junk), new RegExp(`^failed to parse host key from '${junk}': .+`));
    const empty = path('empty');
    writeFileSync(empty, '');
    expectConfigError(() => loadHostKeys(empty), /^failed to parse host key from '.*empty': .+/);
    const pub = `${keygen('pubonly', '-t', 'ed25519')}.pub`;
    expectConfigError(
      () => loadHostKeys(pub),
      /^failed to parse host key from '.*pubonly\.pub': not a private key$/,
    );
    const enc = path('enc');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', enc], { stdio: 'ignore' });
    expectConfigError(() => loadHostKeys(enc), /^failed to parse host key from '.*enc': .+/);
  });

  it('two keys of one type name both files', () => {
    const a = keygen('dup-a', '-t', 'ed25519');
    const b = keygen('dup-b', '-t', 'ed25519');
    expectConfigError(() => loadHostKeys([a, b]), /'.*dup-a' and '.*dup-b' are both of type ssh-ed25519/);
  });
});

describe('generateHostKey', () => {
  it('creates an ed25519 key once and never replaces it', () => {
    const p = path('sub/dir/host_key');
    generateHostKey(p);
    const first = readFileSync(p);
    assert.equal(statSync(p).mode & 0o077, 0, 'private key is not group/world readable');
    assert.deepEqual(loadHostKeys(p).types, ['ssh-ed25519']);
    generateHostKey(p);
    assert.deepEqual(readFileSync(p), first);
  });
});
