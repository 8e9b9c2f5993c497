// mlkem768x25519-sha256 (src/gateway/pq/mlkem768x25519.ts) and the ML-KEM-768 it is built on.
// The full FIPS 203 known-answer run (C2SP CCTV, 10 000 accumulated vectors) is `npm run test:pq-kat`;
// here: byte-for-byte agreement with a second, independent ML-KEM implementation (the `mlkem` package,
// a port of the pq-crystals reference) on the first CCTV vectors, and the hybrid's own rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { MlKem768 } from 'mlkem';
import { mlkem768x25519 } from '../../src/gateway/pq/mlkem768x25519.js';
import { cctvInputs } from '../helpers/mlkem-cctv.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('noble ML-KEM-768 and the independent `mlkem` package agree byte for byte on 40 CCTV vectors', async () => {
  const other = new MlKem768();
  for (const c of cctvInputs(40)) {
    const seed = new Uint8Array([...c.d, ...c.z]);
    const a = ml_kem768.keygen(seed);
    const [ek, dk] = await other.deriveKeyPair(seed);
    assert.equal(hex(a.publicKey), hex(ek));
    assert.equal(hex(a.secretKey), hex(dk));
    const enc = ml_kem768.encapsulate(a.publicKey, c.m);
    const [ct, k] = await other.encap(ek, c.m);
    assert.equal(hex(enc.cipherText), hex(ct));
    assert.equal(hex(enc.sharedSecret), hex(k));
    // Each side decapsulates the other's ciphertext, and both reject the random one the same way.
    assert.equal(hex(ml_kem768.decapsulate(ct, a.secretKey)), hex(await other.decap(enc.cipherText, dk)));
    assert.equal(hex(ml_kem768.decapsulate(c.badCt, a.secretKey)), hex(await other.decap(c.badCt, dk)));
  }
});

test('hybrid: client and server derive the same 32-byte secret = SHA-256(K_PQ || K_CL)', () => {
  for (let i = 0; i < 3; i++) {
    const client = mlkem768x25519.clientInit();
    assert.equal(client.publicKey.length, 1184 + 32);
    const { reply, secret } = mlkem768x25519.serverReply(client.publicKey);
    assert.equal(reply.length, 1088 + 32);
    assert.equal(secret.length, 32);
    assert.equal(hex(client.finish(reply)), hex(secret));
  }
});

test('hybrid: K is SHA-256 of the ML-KEM secret then the X25519 secret (checked with a hand-made client)', async () => {
  // Client half written without src/: `mlkem` for ML-KEM, Node for X25519.
  const other = new MlKem768();
  const [ek, dk] = await other.generateKeyPair();
  const { generateKeyPairSync, diffieHellman, createPublicKey } = await import('node:crypto');
  const x = generateKeyPairSync('x25519');
  const xPub = Buffer.from(x.publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
  const { reply, secret } = mlkem768x25519.serverReply(Buffer.concat([ek, xPub]));
  const kPq = await other.decap(reply.subarray(0, 1088), dk);
  const serverX = createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: reply.subarray(1088).toString('base64url') },
    format: 'jwk',
  });
  const kCl = diffieHellman({ privateKey: x.privateKey, publicKey: serverX });
  assert.equal(hex(secret), hex(createHash('sha256').update(kPq).update(kCl).digest()));
});

test('hybrid: malformed client keys are refused', () => {
  const good = mlkem768x25519.clientInit().publicKey;
  assert.throws(() => mlkem768x25519.serverReply(good.subarray(1)), /client key length/);
  // FIPS 203 §7.2 modulus check: a coefficient of 4095 (> q) in the encapsulation key.
  const badModulus = Buffer.from(good);
  badModulus[0] = 0xff;
  badModulus[1] = 0x0f | (badModulus[1] ?? 0);
  assert.throws(() => mlkem768x25519.serverReply(badModulus), /modulus/);
  // An X25519 key that forces an all-zero shared secret (the identity point) is refused, as OpenSSH does.
  const zeroX = Buffer.concat([good.subarray(0, 1184), Buffer.alloc(32)]);
  assert.throws(() => mlkem768x25519.serverReply(zeroX), /X25519/);
  const client = mlkem768x25519.clientInit();
  assert.throws(() => client.finish(Buffer.alloc(10)), /reply length/);
});
