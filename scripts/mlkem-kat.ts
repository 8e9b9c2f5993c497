// `npm run test:pq-kat`: the full C2SP CCTV accumulated known-answer test of ML-KEM-768 (FIPS 203 final)
// against @noble/post-quantum, the implementation the gateway's mlkem768x25519-sha256 uses (~30-60 s).
import { readFileSync } from 'node:fs';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { cctvAccumulate } from '../test/helpers/mlkem-cctv.js';

const fixture = JSON.parse(
  readFileSync(new URL('../test/fixtures/mlkem/cctv-accumulated.json', import.meta.url), 'utf8'),
) as { 'ML-KEM-768': { tests: number; sha: string } };
const want = fixture['ML-KEM-768'];
const got = cctvAccumulate(
  {
    keygen: (d, z) => {
      const k = ml_kem768.keygen(new Uint8Array([...d, ...z]));
      return { ek: k.publicKey, dk: k.secretKey };
    },
    encaps: (ek, m) => {
      const e = ml_kem768.encapsulate(ek, m);
      return { ct: e.cipherText, k: e.sharedSecret };
    },
    decaps: (ct, dk) => ml_kem768.decapsulate(ct, dk),
  },
  want.tests,
);
if (got !== want.sha) {
  console.error(`ML-KEM-768 CCTV accumulated (${want.tests} tests): got ${got}, want ${want.sha}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log(`ML-KEM-768 CCTV accumulated (${want.tests} tests): ${got} matches`);
console.log('1 passed, 0 failed');
