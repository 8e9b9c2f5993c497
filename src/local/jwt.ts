// Minimal HS256 JWTs for the local identity service, and the secret they are signed with.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LOCAL_ISSUER = 'ssh-proxy-local';

export type JwtClaims = Record<string, unknown>;

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

export function signJwtHs256(claims: JwtClaims, secret: Buffer): string {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

/**
 * Verifies signature, algorithm and expiry. Returns the claims, or an error text naming the problem.
 */
export function verifyJwtHs256(
  token: string,
  secret: Buffer,
  nowSec = Date.now() / 1000,
): JwtClaims | string {
  const parts = token.split('.');
  if (parts.length !== 3) return 'token is not a JWT';
  const [head, body, sig] = parts as [string, string, string];
  let header: unknown;
  let claims: unknown;
  try {
    header = JSON.parse(Buffer.from(head, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return 'token is not valid JSON';
  }
  if (typeof header !== 'object' || header === null || (header as { alg?: unknown }).alg !== 'HS256') {
    return 'token algorithm is not HS256';
  }
  const want = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) return 'token signature is invalid';
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims))
    return 'token claims are not an object';
  const exp = (claims as { exp?: unknown }).exp;
  if (typeof exp !== 'number' || exp <= nowSec) return 'token has expired';
  return claims as JwtClaims;
}

/** Path of the signing secret inside a data directory. */
export function secretPath(dataDir: string): string {
  return join(dataDir, 'identity-secret');
}

/**
 * Loads `<dataDir>/identity-secret`, creating it (0600, 32 random bytes, base64url) the first time.
 * Creation uses O_EXCL so two processes starting together agree on one secret.
 */
export function loadOrCreateSecret(dataDir: string): Buffer {
  const file = secretPath(dataDir);
  try {
    writeFileSync(file, randomBytes(32).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  // Tighten permissions of a file someone created by hand.
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  const text = readFileSync(file, 'utf8').trim();
  if (text.length < 16) throw new Error(`identity secret ${file} is too short (need at least 16 characters)`);
  return Buffer.from(text, 'utf8');
}
