// Where recordings live: `<data-dir>/recordings/<username>/<connection id>/…`, every segment made
// path-safe (names come from the network: a token claim, a channel id, a destination host).
import { join, resolve, sep } from 'node:path';

export function recordingsRoot(dataDir: string): string {
  return join(dataDir, 'recordings');
}

/** A single safe path segment: [A-Za-z0-9._@-], no leading dot, at most 80 characters. */
export function safeSegment(s: string, fallback = 'unknown'): string {
  const cleaned = s
    .replace(/[^A-Za-z0-9._@-]/g, '_')
    .replace(/^\.+/, '')
    .slice(0, 80);
  return cleaned === '' ? fallback : cleaned;
}

/**
 * The `sub` claim of a JWT, read without verifying it: the name only chooses a directory (the
 * session service is not where tokens are checked), and the value is sanitised like any other.
 */
export function tokenSubject(token: string): string | undefined {
  const body = token.split('.')[1];
  if (!body || body.length > 16 * 1024) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as unknown;
    if (typeof claims !== 'object' || claims === null) return undefined;
    const sub = (claims as { sub?: unknown }).sub;
    return typeof sub === 'string' && sub !== '' ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** Resolves `rel` under `root`; undefined when it would leave it (a crafted path in the store). */
export function inside(root: string, rel: string): string | undefined {
  const base = resolve(root);
  const p = resolve(base, rel);
  return p.startsWith(base + sep) ? p : undefined;
}
