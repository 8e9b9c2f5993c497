// curl's sftp:// and scp:// (libssh2 1.10, as used by git tooling and many IDEs): it has neither AES-GCM
// nor chacha20 nor ETM MACs, so it needs aes*-ctr with hmac-sha2. Upload and download, checked by SHA-256.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { run } from '../e2e/harness.js';
import { randomPayload, sha256, startClientsE2E, type ClientsE2E } from './harness.js';

let e: ClientsE2E;
before(async () => {
  e = await startClientsE2E();
});
after(async () => {
  await e.stop();
});

function curl(url: string, extra: string[] = []) {
  // -k: no known_hosts check (a throwaway host key); `user:` with an empty password = key only.
  return run('curl', [
    '-sS',
    '-k',
    '--key',
    e.keys.user,
    '--pubkey',
    `${e.keys.user}.pub`,
    '-u',
    `${e.user}:`,
    ...extra,
    url,
  ]);
}

describe('curl (libssh2)', () => {
  test('curl lists sftp and scp', async () => {
    const r = await run('curl', ['-V']);
    assert.match(r.stdout.toString(), /^Protocols:.*\bscp\b.*\bsftp\b/m);
    assert.match(r.stdout.toString(), /libssh2/);
  });

  for (const proto of ['sftp', 'scp']) {
    test(`${proto}: upload and download keep every byte`, async () => {
      const data = randomPayload(1024 * 1024 + 3);
      const src = e.dir.join(`curl-${proto}.bin`);
      writeFileSync(src, data);
      const url = `${proto}://127.0.0.1:${e.port}/~/curl-${proto}.bin`;
      const up = await curl(url, ['-T', src]);
      assert.equal(up.code, 0, up.stderr);
      const down = await curl(url);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(sha256(down.stdout), sha256(data));
    });
  }
});
