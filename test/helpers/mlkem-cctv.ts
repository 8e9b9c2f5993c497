// The C2SP CCTV accumulated ML-KEM-768 test (test/fixtures/mlkem/cctv-accumulated.json): deterministic
// inputs from a SHAKE-128 stream, every output absorbed into a second SHAKE-128.
import { readFileSync } from 'node:fs';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { shake128 } from '@noble/hashes/sha3.js';

export const CT_768 = 1088;

export interface KemOps {
  keygen(d: Uint8Array, z: Uint8Array): { ek: Uint8Array; dk: Uint8Array };
  encaps(ek: Uint8Array, m: Uint8Array): { ct: Uint8Array; k: Uint8Array };
  decaps(ct: Uint8Array, dk: Uint8Array): Uint8Array;
}

export interface CctvCase {
  d: Uint8Array;
  z: Uint8Array;
  m: Uint8Array;
  badCt: Uint8Array;
}

/** Yields the inputs of the first `n` tests. */
export function* cctvInputs(n: number): Generator<CctvCase> {
  const rng = shake128.create({});
  for (let i = 0; i < n; i++)
    yield { d: rng.xof(32), z: rng.xof(32), m: rng.xof(32), badCt: rng.xof(CT_768) };
}

/** Runs `n` tests through `ops` and returns the accumulated hash (hex); throws if encaps/decaps disagree. */
export function cctvAccumulate(ops: KemOps, n: number): string {
  const acc = shake128.create({});
  for (const c of cctvInputs(n)) {
    const { ek, dk } = ops.keygen(c.d, c.z);
    const { ct, k } = ops.encaps(ek, c.m);
    if (Buffer.compare(Buffer.from(ops.decaps(ct, dk)), Buffer.from(k)) !== 0)
      throw new Error('decaps ≠ encaps');
    acc.update(ek).update(dk).update(ct).update(k).update(ops.decaps(c.badCt, dk));
  }
  return Buffer.from(acc.xof(32)).toString('hex');
}

/** @noble/post-quantum's ML-KEM-768 (what the gateway's hybrid key exchange uses) as KemOps. */
export const nobleMlKem768: KemOps = {
  keygen: (d, z) => {
    const k = ml_kem768.keygen(new Uint8Array([...d, ...z]));
    return { ek: k.publicKey, dk: k.secretKey };
  },
  encaps: (ek, m) => {
    const e = ml_kem768.encapsulate(ek, m);
    return { ct: e.cipherText, k: e.sharedSecret };
  },
  decaps: (ct, dk) => ml_kem768.decapsulate(ct, dk),
};

/** The published answer: test count and hash of the accumulated run. */
export function cctvExpected(): { tests: number; sha: string } {
  const fixture = JSON.parse(
    readFileSync(new URL('../fixtures/mlkem/cctv-accumulated.json', import.meta.url), 'utf8'),
  ) as { 'ML-KEM-768': { tests: number; sha: string } };
  return fixture['ML-KEM-768'];
}
