// The forking parent's light host-key check (src/gateway/hostkey-type.ts) against keys made by
// ssh-keygen and openssl in every format the gateway accepts, and the failures it must report.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { hostKeyType, hostKeyTypes } from '../../src/gateway/hostkey-type.js';
import { loadHostKeys } from '../../src/gateway/hostkeys.js';
import { tempDirFor } from '../helpers/tmp.js';

describe('hostKeyType', () => {
  const dir = tempDirFor(after, 'hostkey-type-');
  const keygen = (name: string, args: string[]): string => {
    const p = dir.join(name);
    execFileSync('ssh-keygen', ['-q', '-N', '', '-C', 'test', '-f', p, ...args]);
    return p;
  };

  const cases: [string, string[], string][] = [
    ['ed25519', ['-t', 'ed25519'], 'ssh-ed25519'],
    ['ecdsa256', ['-t', 'ecdsa', '-b', '256'], 'ecdsa-sha2-nistp256'],
    ['ecdsa384', ['-t', 'ecdsa', '-b', '384'], 'ecdsa-sha2-nistp384'],
    ['rsa', ['-t', 'rsa', '-b', '2048'], 'ssh-rsa'],
    ['rsa-pem', ['-t', 'rsa', '-b', '2048', '-m', 'PEM'], 'ssh-rsa'],
    ['ecdsa-pem', ['-t', 'ecdsa', '-b', '521', '-m', 'PEM'], 'ecdsa-sha2-nistp521'],
  ];
  for (const [name, args, want] of cases) {
    it(`${name}: ${want}, as ssh2 reads it`, () => {
      const p = keygen(name, args);
      assert.equal(hostKeyType(p), want);
      // The same type the children's full loader (ssh2) reports.
      assert.deepEqual(loadHostKeys(p).types, [want]);
    });
  }

  it('a list of keys gives one type each; an empty list is an error', () => {
    const a = keygen('list-a', ['-t', 'ed25519']);
    const b = keygen('list-b', ['-t', 'ecdsa', '-b', '256']);
    assert.deepEqual(hostKeyTypes([a, b]), ['ssh-ed25519', 'ecdsa-sha2-nistp256']);
    assert.throws(() => hostKeyTypes(['', ' ']), /server key path not configured/);
  });

  it('names the file and the problem: missing, encrypted, PKCS#8 (ssh2 cannot read it), not a key, truncated', () => {
    const pkcs8 = keygen('pkcs8', ['-t', 'ecdsa', '-b', '256', '-m', 'PKCS8']);
    assert.throws(() => loadHostKeys(pkcs8), /Unsupported key format/);
    assert.throws(() => hostKeyType(pkcs8), /cannot parse server key '.*pkcs8': unsupported key format/);
    assert.throws(() => hostKeyType(dir.join('absent')), /cannot read server key '.*absent': ENOENT/);
    const enc = dir.join('encrypted');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-C', 'x', '-f', enc]);
    assert.throws(
      () => hostKeyType(enc),
      /cannot parse server key '.*encrypted': encrypted keys are not supported/,
    );
    writeFileSync(dir.join('junk'), 'hello\n');
    assert.throws(() => hostKeyType(dir.join('junk')), /cannot parse server key '.*junk'/);
    writeFileSync(
      dir.join('truncated'),
      '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n',
    );
    assert.throws(
      () => hostKeyType(dir.join('truncated')),
      /cannot parse server key '.*truncated': truncated OpenSSH key/,
    );
  });
});
