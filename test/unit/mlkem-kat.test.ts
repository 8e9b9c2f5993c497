// FIPS 203 known answers in npm test: the full C2SP CCTV accumulated test of ML-KEM-768 (10 000 vectors,
// the published hash) against @noble/post-quantum, the implementation mlkem768x25519-sha256 uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cctvAccumulate, cctvExpected, nobleMlKem768 } from '../helpers/mlkem-cctv.js';

test('ML-KEM-768: the CCTV accumulated known-answer hash (FIPS 203) matches', () => {
  const want = cctvExpected();
  assert.equal(want.tests, 10_000);
  assert.equal(cctvAccumulate(nobleMlKem768, want.tests), want.sha);
});
