// mlkem768x25519-sha256: the hybrid post-quantum key exchange of draft-ietf-sshm-mlkem-hybrid-kex, as
// OpenSSH 9.9+ implements it (its default since 10.0).
//
//   C_INIT  = ML-KEM-768 encapsulation key (1184 bytes) || X25519 public key (32 bytes)
//   S_REPLY = ML-KEM-768 ciphertext (1088 bytes)        || X25519 public key (32 bytes)
//   K       = SHA-256(K_PQ || K_CL), used as an SSH *string* in the exchange hash and key derivation
//
// ML-KEM comes from @noble/post-quantum (FIPS 203, including the encapsulation-key modulus check);
// X25519 from Node's OpenSSL. An all-zero X25519 result is refused, as OpenSSH does.
import { createHash, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';

export const MLKEM768X25519 = 'mlkem768x25519-sha256';

const MLKEM_PK = 1184;
const MLKEM_CT = 1088;
const X25519_LEN = 32;

/** The client and server halves of a hybrid KEM key exchange, in the shape ssh2's patch 013 expects. */
export interface KexProvider {
  hashName: 'sha256' | 'sha512';
  clientInit(): { publicKey: Buffer; finish(reply: Buffer): Buffer };
  serverReply(clientInit: Buffer): { reply: Buffer; secret: Buffer };
}

function x25519Keys(): { privateKey: KeyObject; publicRaw: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('X25519 key export failed');
  return { privateKey, publicRaw: Buffer.from(jwk.x, 'base64url') };
}

function x25519Shared(privateKey: KeyObject, peerRaw: Buffer): Buffer {
  const publicKey = createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: peerRaw.toString('base64url') },
    format: 'jwk',
  });
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey, publicKey });
  } catch {
    throw new Error('invalid X25519 public key');
  }
  if (shared.length !== X25519_LEN || shared.every((b) => b === 0))
    throw new Error('invalid X25519 public key (all-zero shared secret)');
  return shared;
}

function combine(kPq: Uint8Array, kCl: Buffer): Buffer {
  return createHash('sha256').update(kPq).update(kCl).digest();
}

export const mlkem768x25519: KexProvider = {
  hashName: 'sha256',

  clientInit() {
    const kem = ml_kem768.keygen();
    const x = x25519Keys();
    return {
      publicKey: Buffer.concat([kem.publicKey, x.publicRaw]),
      finish(reply: Buffer): Buffer {
        if (reply.length !== MLKEM_CT + X25519_LEN)
          throw new Error(`bad ${MLKEM768X25519} reply length ${reply.length}`);
        const kPq = ml_kem768.decapsulate(reply.subarray(0, MLKEM_CT), kem.secretKey);
        return combine(kPq, x25519Shared(x.privateKey, reply.subarray(MLKEM_CT)));
      },
    };
  },

  serverReply(clientInit: Buffer) {
    if (clientInit.length !== MLKEM_PK + X25519_LEN)
      throw new Error(`bad ${MLKEM768X25519} client key length ${clientInit.length}`);
    // Throws on an encapsulation key that fails the FIPS 203 modulus check.
    const { cipherText, sharedSecret } = ml_kem768.encapsulate(clientInit.subarray(0, MLKEM_PK));
    const x = x25519Keys();
    const kCl = x25519Shared(x.privateKey, clientInit.subarray(MLKEM_PK));
    return { reply: Buffer.concat([cipherText, x.publicRaw]), secret: combine(sharedSecret, kCl) };
  },
};
