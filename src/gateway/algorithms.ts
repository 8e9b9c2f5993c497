// Transport algorithms offered by the gateway (node-notes.md §4).
import type { Algorithms, CipherAlgorithm } from 'ssh2';

import { ProxyError } from '../common/errors.js';
import { DEFAULT_CIPHERS } from '../config/schema.js';

const SUPPORTED_CIPHERS: ReadonlySet<string> = new Set<CipherAlgorithm>([
  'chacha20-poly1305@openssh.com',
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
]);

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
  return {
    // No diffie-hellman-group-exchange-*: ssh2 advertises it but its server side is not implemented.
    kex: [
      'curve25519-sha256',
      'curve25519-sha256@libssh.org',
      'ecdh-sha2-nistp256',
      'ecdh-sha2-nistp384',
      'ecdh-sha2-nistp521',
      'diffie-hellman-group16-sha512',
      'diffie-hellman-group18-sha512',
      'diffie-hellman-group14-sha256',
    ],
    cipher,
    hmac: [
      'hmac-sha2-256-etm@openssh.com',
      'hmac-sha2-512-etm@openssh.com',
      'hmac-sha2-256',
      'hmac-sha2-512',
    ],
    // zlib costs CPU in JavaScript and rarely helps.
    compress: ['none'],
  };
}
