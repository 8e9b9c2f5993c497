// The user JWT (reference-behaviour §8.7): IssueUserToken{username, source} through identity, cached
// process-wide per username+source until 2 minutes before its `exp` (read from the unverified claims;
// a token whose claims cannot be read is used once and not cached). Concurrent requests for one key
// share one call; the cache is bounded; every call has a deadline. A rejected promise means "identity
// cannot issue a token", which the caller treats as a deny.
import { ProxyError } from '../common/errors.js';
import type { IdentityBackend } from './identity.js';

export interface UserTokenProvider {
  /** The user's JWT for authz (`EvaluateRequest.token`) and recording headers. */
  get(username: string, source: string, signal?: AbortSignal): Promise<string>;
}

export interface UserTokenCacheOptions {
  /** Cached tokens kept at most (oldest dropped first); default 10 000. */
  maxEntries?: number;
  /** Deadline of one IssueUserToken call; default 10 s. */
  timeoutMs?: number;
  /** A token is reused until this long before its `exp`; default 2 minutes (the reference). */
  marginMs?: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export interface UserTokenCache extends UserTokenProvider {
  /** Cached entries (tests and metrics). */
  size(): number;
}

const DEFAULTS = { maxEntries: 10_000, timeoutMs: 10_000, marginMs: 2 * 60_000 };

/** `exp` (seconds) from a JWT's claims without verifying it; undefined when unreadable. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof claims !== 'object' || claims === null) return undefined;
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

export function createUserTokenCache(
  identity: Pick<IdentityBackend, 'issueUserToken'>,
  options: UserTokenCacheOptions = {},
): UserTokenCache {
  const o = { ...DEFAULTS, ...options };
  const now = options.now ?? Date.now;
  const cache = new Map<string, { token: string; reuseUntil: number }>();
  const inflight = new Map<string, Promise<string>>();

  function remember(key: string, token: string): void {
    const exp = jwtExpiry(token);
    if (exp === undefined) return;
    const reuseUntil = exp * 1000 - o.marginMs;
    if (reuseUntil <= now()) return;
    cache.delete(key);
    if (cache.size >= o.maxEntries) {
      const t = now();
      for (const [k, v] of cache) if (v.reuseUntil <= t) cache.delete(k);
      // Still full: drop the oldest insertions (Map iterates in insertion order).
      for (const k of cache.keys()) {
        if (cache.size < o.maxEntries) break;
        cache.delete(k);
      }
    }
    cache.set(key, { token, reuseUntil });
  }

  function issue(key: string, username: string, source: string): Promise<string> {
    let p = inflight.get(key);
    if (p) return p;
    p = identity
      .issueUserToken(username, source, { timeoutMs: o.timeoutMs })
      .then((token) => {
        if (!token) throw new ProxyError('denied', `identity issued an empty token for user ${username}`);
        remember(key, token);
        return token;
      })
      .finally(() => inflight.delete(key));
    inflight.set(key, p);
    return p;
  }

  return {
    get(username, source, signal) {
      const key = `${username}\u0000${source}`;
      const hit = cache.get(key);
      if (hit) {
        if (hit.reuseUntil > now()) return Promise.resolve(hit.token);
        cache.delete(key);
      }
      const shared = issue(key, username, source);
      if (!signal) return shared;
      // One caller giving up must not cancel the call the others wait for.
      return new Promise<string>((resolve, reject) => {
        const onAbort = () =>
          reject(new ProxyError('cancelled', `user token for ${username}: request cancelled`));
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        shared.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    },
    size: () => cache.size,
  };
}
