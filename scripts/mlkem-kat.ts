// `npm run test:pq-kat`: the full C2SP CCTV accumulated known-answer test of ML-KEM-768 (FIPS 203 final)
// against @noble/post-quantum, the implementation the gateway's mlkem768x25519-sha256 uses (~30-60 s).
// npm test runs the same check (test/unit/mlkem-kat.test.ts); this prints the hash on its own.
import { cctvAccumulate, cctvExpected, nobleMlKem768 } from '../test/helpers/mlkem-cctv.js';

const want = cctvExpected();
const got = cctvAccumulate(nobleMlKem768, want.tests);
if (got !== want.sha) {
  console.error(`ML-KEM-768 CCTV accumulated (${want.tests} tests): got ${got}, want ${want.sha}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log(`ML-KEM-768 CCTV accumulated (${want.tests} tests): ${got} matches`);
console.log('1 passed, 0 failed');
