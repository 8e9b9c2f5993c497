// authorized_keys lines: parsing and comparison by key blob.
//
// Stored lines may carry options (`from="…",no-pty ssh-ed25519 AAAA… comment`); requests carry
// `<type> <base64 blob>`. Keys are equal when their decoded wire blobs are equal: the blob names its
// own type, so an `ssh-rsa` key matches whichever RSA signature algorithm the client used.

export interface PublicKey {
  /** Key type as written inside the blob, e.g. `ssh-ed25519`. */
  type: string;
  blob: Buffer;
}

const RSA_SIG_ALGOS = new Set(['rsa-sha2-256', 'rsa-sha2-512']);

/** Reads the type string at the start of an SSH public-key blob; undefined when malformed. */
function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  const t = blob.subarray(4, 4 + len).toString('latin1');
  return /^[\x21-\x7e]+$/.test(t) ? t : undefined;
}

/** Splits on whitespace outside double quotes (option values such as `command="a b"`). */
function tokens(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line.charAt(i);
    if (c === '\\' && quoted && i + 1 < line.length) {
      cur += c + line.charAt(++i);
    } else if (c === '"') {
      quoted = !quoted;
      cur += c;
    } else if (!quoted && (c === ' ' || c === '\t')) {
      if (cur) out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  if (cur) out.push(cur);
  return out;
}

function decodeKey(typeToken: string, b64: string): PublicKey | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, 'base64');
  const type = blobType(blob);
  if (!type) return undefined;
  if (type !== typeToken && !(type === 'ssh-rsa' && RSA_SIG_ALGOS.has(typeToken))) return undefined;
  return { type, blob };
}

/**
 * Parses one authorized_keys line (options and comment allowed). Returns undefined for blank lines,
 * comments and anything that is not a well-formed key.
 */
export function parseAuthorizedKeyLine(line: string): PublicKey | undefined {
  const trimmed = line.trim();
  if (!trimmed || trimmed.startsWith('#')) return undefined;
  const t = tokens(trimmed);
  // The key is the first `<type> <base64>` pair; anything before it is the options field.
  for (let i = 0; i + 1 < t.length && i < 2; i++) {
    const k = decodeKey(t[i] ?? '', t[i + 1] ?? '');
    if (k) return k;
  }
  return undefined;
}

/** Parses a request's `<type> <base64 blob>`; undefined when malformed. */
export function parseRequestKey(s: string): PublicKey | undefined {
  const t = s.trim().split(/\s+/);
  if (t.length < 2 || t.length > 3) return undefined;
  return decodeKey(t[0] ?? '', t[1] ?? '');
}

/** Every key in an authorized_keys-format text (malformed lines are skipped). */
export function parseAuthorizedKeys(text: string): PublicKey[] {
  const out: PublicKey[] = [];
  for (const line of text.split('\n')) {
    const k = parseAuthorizedKeyLine(line);
    if (k) out.push(k);
  }
  return out;
}

export function keyMatches(candidate: PublicKey, keys: readonly PublicKey[]): boolean {
  return keys.some((k) => k.type === candidate.type && k.blob.equals(candidate.blob));
}
