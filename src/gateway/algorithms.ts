// Transport algorithms offered by the gateway (node-notes.md §4; docs/clients.md says which client needs
// what). The client's preference order decides every choice; the server's order only matters for a
// client's guessed first key-exchange packet (RFC 4253 §7.1), which is right when both lists start alike.
import type { Algorithms, CipherAlgorithm, KexAlgorithm, MacAlgorithm } from 'ssh2';

import { ProxyError } from '../common/errors.js';
import { DEFAULT_CIPHERS, KNOWN_CIPHERS } from '../config/schema.js';
import { MLKEM768X25519 } from './pq/mlkem768x25519.js';
import { registerPqKex } from './ssh2-shims/index.js';

const SUPPORTED_CIPHERS: ReadonlySet<string> = new Set<string>(KNOWN_CIPHERS);

/**
 * Key exchange: curve25519 first (what dbclient and most clients guess), the post-quantum hybrid of
 * OpenSSH 9.9+ next (chosen by every client that offers it, since the client's order wins), then
 * finite-field groups for old clients. No NIST curves: no listed client needs them. No
 * diffie-hellman-group-exchange-*: ssh2 advertises it but its server side is not implemented.
 */
export const SERVER_KEX: readonly string[] = [
  'curve25519-sha256',
  'curve25519-sha256@libssh.org',
  MLKEM768X25519,
  'diffie-hellman-group16-sha512',
  'diffie-hellman-group18-sha512',
  'diffie-hellman-group14-sha256',
];

/**
 * MACs for the CTR ciphers (AEAD ciphers carry their own): encrypt-then-MAC first; the plain
 * hmac-sha2 variants only because libssh2 1.10 (curl, many IDEs) knows no ETM MAC. No SHA-1.
 */
export const SERVER_MACS: readonly MacAlgorithm[] = [
  'hmac-sha2-256-etm@openssh.com',
  'hmac-sha2-512-etm@openssh.com',
  'hmac-sha2-256',
  'hmac-sha2-512',
];

export function serverAlgorithms(ciphers?: string[]): Algorithms {
  let cipher = [...DEFAULT_CIPHERS] as CipherAlgorithm[];
  if (ciphers !== undefined && ciphers.length > 0) {
    const unknown = ciphers.filter((c) => !SUPPORTED_CIPHERS.has(c));
    if (unknown.length > 0) {
      throw new ProxyError(
        'bad_config',
        `unsupported SSH cipher(s): ${unknown.join(', ')} (supported: ${[...SUPPORTED_CIPHERS].join(', ')})`,
      );
    }
    cipher = [...new Set(ciphers)] as CipherAlgorithm[];
  }
  // ssh2 validates the kex list against its table: the post-quantum method must be registered first.
  registerPqKex();
  return {
    kex: [...SERVER_KEX] as KexAlgorithm[],
    cipher,
    hmac: [...SERVER_MACS],
    // zlib costs CPU in JavaScript and rarely helps.
    compress: ['none'],
  };
}
