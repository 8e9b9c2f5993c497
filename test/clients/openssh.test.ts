// OpenSSH (Debian's 9.2 client) through the gateway: exec with exit status, a PTY command with piped
// input, sftp and scp (SFTP and -O legacy) put/get with checksums, -W/direct-tcpip, and the negotiated
// algorithms. (PTY shells fed from a pipe: piped-and-raw.test.ts.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { copyToolArgs, run, ssh } from '../e2e/harness.js';
import {
  randomPayload,
  sha256,
  sha256File,
  startClientsE2E,
  startEcho,
  type ClientsE2E,
  type EchoServer,
} from './harness.js';

let e: ClientsE2E;
let echo: EchoServer;
before(async () => {
  e = await startClientsE2E();
  echo = await startEcho();
});
after(async () => {
  await echo.close();
  await e.stop();
});

describe('OpenSSH client', () => {
  test('exec: stdout, stderr and the exit status; algorithms as negotiated', async () => {
    const r = await ssh(e, e.user, ['echo out; echo err >&2; exit 7'], { options: ['-v'] });
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout.toString(), 'out\n');
    assert.match(r.stderr, /^err$/m);
    // OpenSSH 9.2 prefers sntrup761 (not offered), then curve25519; chacha20 is its first cipher.
    assert.match(r.stderr, /kex: algorithm: curve25519-sha256\b/);
    assert.match(r.stderr, /server->client cipher: chacha20-poly1305@openssh.com/);
  });

  test('each offered cipher works when the client insists on it (AES-CTR with ETM and plain MACs)', async () => {
    for (const [cipher, mac] of [
      ['aes128-gcm@openssh.com', undefined],
      ['aes256-gcm@openssh.com', undefined],
      ['aes128-ctr', 'hmac-sha2-256-etm@openssh.com'],
      ['aes192-ctr', 'hmac-sha2-512'],
      ['aes256-ctr', 'hmac-sha2-256'],
    ] as const) {
      const opts = ['-c', cipher, ...(mac ? ['-m', mac] : [])];
      const r = await ssh(e, e.user, ['echo', cipher], { options: opts });
      assert.equal(r.code, 0, `${cipher}: ${r.stderr}`);
      assert.equal(r.stdout.toString(), `${cipher}\n`);
    }
  });

  test('PTY command with piped input: the input reaches it, the exit status comes back', async () => {
    const r = await ssh(e, e.user, ['read x; echo "got-$x"; exit 6'], { options: ['-tt'], input: 'abc\n' });
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stdout.toString(), /got-abc\r?\n/);
  });

  test('sftp and scp (SFTP and legacy -O) put/get keep every byte', async () => {
    const data = randomPayload(3 * 1024 * 1024 + 13);
    const src = e.dir.join('ossh-src.bin');
    writeFileSync(src, data);
    const batch = e.dir.join('ossh.batch');
    writeFileSync(batch, `put ${src} ossh-sftp.bin\nget ossh-sftp.bin ${e.dir.join('ossh-sftp.back')}\n`);
    const s = await run('sftp', [...copyToolArgs(e, e.keys.user), '-b', batch, `${e.user}@127.0.0.1`]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(sha256File(e.dir.join('ossh-sftp.back')), sha256(data));
    for (const legacy of [false, true]) {
      const name = legacy ? 'ossh-scp-O.bin' : 'ossh-scp.bin';
      const flags = [...copyToolArgs(e, e.keys.user), ...(legacy ? ['-O'] : [])];
      const up = await run('scp', [...flags, src, `${e.user}@127.0.0.1:${name}`]);
      assert.equal(up.code, 0, up.stderr);
      const back = e.dir.join(`${name}.back`);
      const down = await run('scp', [...flags, `${e.user}@127.0.0.1:${name}`, back]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(sha256File(back), sha256(data), name);
    }
  });

  test('-W (direct-tcpip) reaches a loopback service', async () => {
    const r = await ssh(e, e.user, [], {
      options: ['-W', `127.0.0.1:${echo.port}`],
      input: 'through-the-forward\n',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'through-the-forward\n');
  });
});
