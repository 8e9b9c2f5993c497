// Post-quantum key exchange end to end: a client that offers only `mlkem768x25519-sha256` logs in to
// the real gateway and runs a command. No client on this machine speaks it (Debian's OpenSSH 9.2 offers
// sntrup761 and curve25519 only), so the client is ssh2 with the same provider the gateway registers
// (patch 013); the provider itself is checked against FIPS 203 known answers in test/unit/mlkem*.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Client } from 'ssh2';
import { registerPqKex } from '../../src/gateway/ssh2-shims/kexProviders.js';
import { startE2E, type E2E } from '../e2e/harness.js';

let e: E2E;
before(async () => {
  registerPqKex();
  e = await startE2E();
});
after(async () => {
  await e.stop();
});

/** Logs in offering `kex`, runs `echo pq`; the negotiated method and the output. */
function loginWith(kex: string[]): Promise<{ kex: string; out: string }> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    let negotiated = '';
    const timer = setTimeout(() => {
      c.end();
      reject(new Error('no result within 60 s'));
    }, 60_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      c.end();
      reject(err);
    };
    c.on('handshake', (n: { kex: string }) => (negotiated = n.kex));
    c.on('error', fail);
    c.on('ready', () =>
      c.exec('echo pq', (err, ch) => {
        if (err) return fail(err);
        let out = '';
        ch.on('data', (d: Buffer) => (out += d.toString()));
        ch.on('close', () => {
          clearTimeout(timer);
          c.end();
          resolve({ kex: negotiated, out });
        });
      }),
    );
    c.connect({
      host: '127.0.0.1',
      port: e.port,
      username: e.user,
      privateKey: readFileSync(e.keys.user),
      algorithms: { kex: kex as never },
      readyTimeout: 60_000,
    });
  });
}

test('a client offering only mlkem768x25519-sha256 negotiates it and its session works', async () => {
  const r = await loginWith(['mlkem768x25519-sha256']);
  assert.equal(r.kex, 'mlkem768x25519-sha256');
  assert.equal(r.out, 'pq\n');
});

test('control: the negotiated method follows the client preference (curve25519 first)', async () => {
  const r = await loginWith(['curve25519-sha256', 'mlkem768x25519-sha256']);
  assert.equal(r.kex, 'curve25519-sha256');
  assert.equal(r.out, 'pq\n');
});
