// Password hashes for users.yaml: `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const DEFAULTS = { N: 16384, r: 8, p: 1 };
const KEYLEN = 32;
// Bounds for hashes read from a file, so a hand-edited entry cannot make a login burn minutes of CPU.
const MAX_N = 1 << 20;
const MAX_RP = 32;

function derive(plain: string, salt: Buffer, o: { N: number; r: number; p: number }, keylen: number) {
  const opts: ScryptOptions = { N: o.N, r: o.r, p: o.p, maxmem: 256 * o.N * o.r + 1024 * 1024 };
  return new Promise<Buffer>((resolve, reject) =>
    scrypt(plain.normalize('NFC'), salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** Hashes a password for the `password` field of users.yaml. */
export async function hashPassword(plain: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(plain, salt, DEFAULTS, KEYLEN);
  return `scrypt$${DEFAULTS.N}$${DEFAULTS.r}$${DEFAULTS.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

interface ParsedHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

/** Parses a stored hash; returns an error text naming the problem when it is not usable. */
export function parsePasswordHash(s: string): ParsedHash | string {
  const parts = s.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt')
    return 'not a scrypt hash (expected scrypt$N$r$p$salt$hash)';
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (!Number.isInteger(N) || N < 2 || N > MAX_N || (N & (N - 1)) !== 0)
    return 'scrypt N must be a power of 2';
  if (!Number.isInteger(r) || r < 1 || r > MAX_RP || !Number.isInteger(p) || p < 1 || p > MAX_RP) {
    return 'scrypt r and p must be between 1 and 32';
  }
  const salt = Buffer.from(parts[4] ?? '', 'base64');
  const key = Buffer.from(parts[5] ?? '', 'base64');
  if (salt.length < 8 || key.length < 16) return 'scrypt salt or hash too short';
  return { N, r, p, salt, key };
}

const DUMMY = { ...DEFAULTS, salt: Buffer.alloc(16), key: Buffer.alloc(KEYLEN) };

/**
 * Checks `plain` against a stored hash in constant time. With no usable hash it still runs one scrypt,
 * so unknown users and users without a password take as long as a wrong password.
 */
export async function verifyPassword(plain: string, stored: string | undefined): Promise<boolean> {
  const parsed = stored ? parsePasswordHash(stored) : undefined;
  const h = parsed && typeof parsed !== 'string' ? parsed : undefined;
  const target = h ?? DUMMY;
  const key = await derive(plain, target.salt, target, target.key.length);
  return timingSafeEqual(key, target.key) && h !== undefined && plain.length > 0;
}
