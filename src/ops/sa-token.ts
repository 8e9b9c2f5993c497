// Verification of Kubernetes service-account tokens for the control service (reference-behaviour §18):
// RS256/ES256 JWTs checked with node:crypto against the issuer's JWKS (`<issuer>/openid/v1/jwks`),
// then the caller (namespace, service account) checked against `grpc.allowed`.
//
// The JWKS is cached for a TTL and refetched early when a token names an unknown key id (rotation),
// at most once per `minRefreshMs` so that made-up key ids cannot turn into a fetch per call. Every
// fetch has a deadline and a size cap. When a refresh fails, the keys already known stay in use.
import { createPublicKey, verify as cryptoVerify, type KeyObject, type JsonWebKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { errText, type Logger } from './log.js';

export const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type Alg = 'RS256' | 'ES256';

interface KnownKey {
  kid: string | undefined;
  alg: Alg;
  key: KeyObject;
}

export interface JwksOptions {
  /** Full JWKS URL, e.g. `https://kubernetes.default.svc.cluster.local/openid/v1/jwks`. */
  url: string;
  /** Keys are refetched after this long (default 5 min). */
  ttlMs?: number;
  /** Earliest refetch after the previous one when an unknown key id shows up (default 10 s). */
  minRefreshMs?: number;
  /** Deadline of one fetch (default 5 s). */
  timeoutMs?: number;
  /** Largest JWKS document accepted (default 256 KiB). */
  maxBytes?: number;
  /** Extra CA bundle for https (the cluster CA), trusted besides the system roots. */
  caFile?: string;
  /** Bearer token file sent with the fetch (the gateway's own service-account token, in-cluster only). */
  tokenFile?: string;
  now?: () => number;
  log?: Logger;
}

const MAX_KEYS = 64;

/** Turns one JWK into a usable verification key, or undefined when unsuitable. */
function importJwk(jwk: Record<string, unknown>): KnownKey | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return undefined;
  const kid = typeof jwk.kid === 'string' ? jwk.kid : undefined;
  let alg: Alg;
  if (jwk.kty === 'RSA') alg = 'RS256';
  else if (jwk.kty === 'EC' && jwk.crv === 'P-256') alg = 'ES256';
  else return undefined;
  if (jwk.alg !== undefined && jwk.alg !== alg) return undefined;
  try {
    const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    if (alg === 'RS256' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return undefined;
    return { kid, alg, key };
  } catch {
    return undefined;
  }
}

export class JwksCache {
  private keys: KnownKey[] = [];
  private fetchedAt = -Infinity;
  private lastAttempt = -Infinity;
  private inflight: Promise<void> | undefined;
  private readonly now: () => number;

  constructor(private readonly o: JwksOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * Keys that may have signed a token with this `kid` and `alg`. Refreshes when stale, or early when
   * the kid is unknown. Throws only when no keys could ever be loaded.
   */
  async candidates(kid: string | undefined, alg: Alg): Promise<KnownKey[]> {
    const match = (): KnownKey[] =>
      this.keys.filter((k) => k.alg === alg && (kid === undefined || k.kid === kid));
    const stale = this.now() - this.fetchedAt >= (this.o.ttlMs ?? 300_000);
    const unknownKid =
      match().length === 0 && this.now() - this.lastAttempt >= (this.o.minRefreshMs ?? 10_000);
    if (stale || unknownKid) {
      try {
        await this.refresh();
      } catch (e) {
        if (this.keys.length === 0) throw e;
        this.o.log?.warn({ err: errText(e), url: this.o.url }, 'JWKS refresh failed; keeping the known keys');
      }
    }
    return match();
  }

  /** One fetch at a time; concurrent callers share it. */
  private refresh(): Promise<void> {
    this.inflight ??= (async () => {
      this.lastAttempt = this.now();
      try {
        const doc = await this.fetchJson();
        const list = (doc as { keys?: unknown }).keys;
        if (!Array.isArray(list)) throw new Error('JWKS has no "keys" array');
        const keys = list
          .slice(0, MAX_KEYS)
          .filter((k): k is Record<string, unknown> => typeof k === 'object' && k !== null)
          .map(importJwk)
          .filter((k): k is KnownKey => k !== undefined);
        if (keys.length === 0) throw new Error('JWKS has no usable RS256/ES256 signing keys');
        this.keys = keys;
        this.fetchedAt = this.now();
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  private fetchJson(): Promise<unknown> {
    const url = new URL(this.o.url);
    const maxBytes = this.o.maxBytes ?? 256 * 1024;
    const timeoutMs = this.o.timeoutMs ?? 5000;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.o.tokenFile) {
      try {
        const t = readFileSync(this.o.tokenFile, 'utf8').trim();
        if (t) headers.authorization = `Bearer ${t}`;
      } catch {
        // Without our own token the issuer may still serve the JWKS anonymously.
      }
    }
    const isHttps = url.protocol === 'https:';
    if (!isHttps && url.protocol !== 'http:')
      return Promise.reject(new Error(`unsupported JWKS URL ${url.href}`));
    let ca: string[] | undefined;
    if (isHttps && this.o.caFile) {
      try {
        ca = [...rootCertificates, readFileSync(this.o.caFile, 'utf8')];
      } catch {
        ca = undefined;
      }
    }
    return new Promise((resolve, reject) => {
      const req = (isHttps ? https : http).request(
        url,
        { method: 'GET', headers, ca, timeout: timeoutMs },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new Error(`JWKS fetch from ${url.href} answered HTTP ${res.statusCode ?? '?'}`));
            return;
          }
          const parts: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > maxBytes) {
              req.destroy(new Error(`JWKS from ${url.href} exceeds ${maxBytes} bytes`));
              return;
            }
            parts.push(d);
          });
          res.on('end', () => {
            try {
              resolve(JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown);
            } catch {
              reject(new Error(`JWKS from ${url.href} is not JSON`));
            }
          });
          res.on('error', reject);
        },
      );
      // `timeout` only covers idleness; bound the whole exchange as well.
      const timer = setTimeout(
        () => req.destroy(new Error(`JWKS fetch from ${url.href} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on('timeout', () =>
        req.destroy(new Error(`JWKS fetch from ${url.href} timed out after ${timeoutMs} ms`)),
      );
      req.on('error', reject);
      req.on('close', () => clearTimeout(timer));
      req.end();
    });
  }
}

// --- token verification ---

export interface Caller {
  namespace: string;
  serviceAccount: string;
}

export type TokenCheck =
  | { ok: true; caller: Caller }
  /** `unauthenticated`: the token is missing or invalid. `unavailable`: keys cannot be loaded now. */
  | { ok: false; code: 'unauthenticated' | 'unavailable'; reason: string };

export interface VerifierOptions {
  /** Expected `iss` (config `grpc.issuerURL`). */
  issuer: string;
  /** Required entry of `aud` (config `grpc.audience`). */
  audience: string;
  jwks: JwksCache;
  /** Clock skew tolerated on exp/nbf (default 60 s). */
  leewaySec?: number;
  now?: () => number;
}

const MAX_TOKEN = 16 * 1024;
const SUB_RE = /^system:serviceaccount:([a-z0-9]([-a-z0-9.]*[a-z0-9])?):([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;

function b64json(part: string): Record<string, unknown> | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(part)) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

const trimSlash = (s: string): string => s.replace(/\/+$/, '');

export class ServiceAccountVerifier {
  constructor(private readonly o: VerifierOptions) {}

  async verify(token: string): Promise<TokenCheck> {
    const bad = (reason: string): TokenCheck => ({ ok: false, code: 'unauthenticated', reason });
    if (!token) return bad('missing bearer token');
    if (token.length > MAX_TOKEN) return bad('token too long');
    const parts = token.split('.');
    if (parts.length !== 3) return bad('token is not a JWT');
    const [h = '', p = '', s = ''] = parts;
    const header = b64json(h);
    const claims = b64json(p);
    if (!header || !claims || !/^[A-Za-z0-9_-]*$/.test(s)) return bad('token is not a JWT');
    const alg = header.alg;
    if (alg !== 'RS256' && alg !== 'ES256')
      return bad(`token algorithm ${JSON.stringify(alg)} is not allowed`);
    const kid = typeof header.kid === 'string' ? header.kid : undefined;

    let keys: KnownKey[];
    try {
      keys = await this.o.jwks.candidates(kid, alg);
    } catch (e) {
      return { ok: false, code: 'unavailable', reason: `cannot load the token signing keys: ${errText(e)}` };
    }
    if (keys.length === 0) return bad('token signed by an unknown key');
    const data = Buffer.from(`${h}.${p}`);
    const sig = Buffer.from(s, 'base64url');
    if (alg === 'ES256' && sig.length !== 64) return bad('token signature is invalid');
    const valid = keys.some((k) => {
      try {
        return cryptoVerify(
          'sha256',
          data,
          alg === 'ES256' ? { key: k.key, dsaEncoding: 'ieee-p1363' } : k.key,
          sig,
        );
      } catch {
        return false;
      }
    });
    if (!valid) return bad('token signature is invalid');

    const now = (this.o.now ?? Date.now)() / 1000;
    const leeway = this.o.leewaySec ?? 60;
    if (typeof claims.iss !== 'string' || trimSlash(claims.iss) !== trimSlash(this.o.issuer)) {
      return bad('token issuer does not match');
    }
    const aud = claims.aud;
    const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    if (!auds.includes(this.o.audience)) return bad('token audience does not match');
    if (typeof claims.exp !== 'number' || claims.exp + leeway <= now) return bad('token has expired');
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf - leeway > now)) {
      return bad('token is not valid yet');
    }
    const m = typeof claims.sub === 'string' ? SUB_RE.exec(claims.sub) : null;
    if (!m?.[1] || !m[3]) return bad('token subject is not a service account');
    const caller = { namespace: m[1], serviceAccount: m[3] };
    // Kubernetes also states the identity in a private claim; it must agree with `sub`.
    const k8s = claims['kubernetes.io'] as
      { namespace?: unknown; serviceaccount?: { name?: unknown } } | undefined;
    if (k8s !== undefined) {
      if (typeof k8s !== 'object' || k8s === null) return bad('token kubernetes.io claim is malformed');
      if (k8s.namespace !== caller.namespace || k8s.serviceaccount?.name !== caller.serviceAccount) {
        return bad('token kubernetes.io claim disagrees with its subject');
      }
    }
    return { ok: true, caller };
  }
}

export interface AllowedEntry {
  namespace: string;
  serviceAccount: string;
}

/**
 * `grpc.allowed`: `*` matches anything; an empty namespace means the gateway's own namespace (which
 * matches nothing when it is unknown, i.e. outside Kubernetes); an empty list allows nobody.
 */
export function isAllowed(
  caller: Caller,
  allowed: readonly AllowedEntry[],
  ownNamespace: string | undefined,
): boolean {
  return allowed.some((a) => {
    const ns = a.namespace === '' ? ownNamespace : a.namespace;
    const nsOk = ns === '*' || (ns !== undefined && ns !== '' && ns === caller.namespace);
    const saOk =
      a.serviceAccount === '*' || (a.serviceAccount !== '' && a.serviceAccount === caller.serviceAccount);
    return nsOk && saOk;
  });
}

/** The pod's own namespace from the service-account mount, if present. */
export function ownNamespace(dir = SA_DIR): string | undefined {
  try {
    return readFileSync(`${dir}/namespace`, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
