// The SSH login name ("user string", reference-behaviour.md §7): USER[~WS_SPEC].
// Pure parsing and formatting; no I/O.
import { createHash } from 'node:crypto';

export type UserStrErrorKind = 'malformed' | 'invalid' | 'too_long' | 'base64_invalid';

const KIND_TEXT: Record<UserStrErrorKind, string> = {
  malformed: 'userstr malformed',
  invalid: 'userstr invalid',
  too_long: 'identifier too long',
  base64_invalid: 'base64 userstr invalid',
};

export class UserStrError extends Error {
  readonly kind: UserStrErrorKind;

  constructor(kind: UserStrErrorKind, detail?: string) {
    super(detail ? `${KIND_TEXT[kind]}: ${detail}` : KIND_TEXT[kind]);
    this.name = 'UserStrError';
    this.kind = kind;
  }
}

export interface UserStr {
  /** The login name as received (trimmed; still base64 when it was). */
  raw: string;
  username: string;
  form: 'implicit' | 'explicit' | 'named' | 'repo';
  blueprint: string;
  blueprintKind: 'implicit' | 'explicit' | 'custom';
  /** OS user to run as in the workspace (`user=`), '' when absent. */
  asUser: string;
  pod: string;
  namespace: string;
  workloadKind: string;
  workloadName: string;
  repoOwner: string;
  repoName: string;
  ref: string;
}

export const MAX_USERSTR_RUNES = 128;

const B64_PREFIX = /^(?:b64|base64)-/i;
const B64_PAYLOAD = /^[A-Za-z0-9_-]*$/;
const EXPLICIT_KEYS = new Set(['user', 'ns', 'workload']);
const PARAM_KEYS = new Set(['repo', 'ref', 'user', 'pod', 'ns', 'workload']);
const NAMED_KEYS = new Set(['user', 'pod', 'ns']);
// C0 controls and DEL never belong in a login name; refusing them keeps logs and names clean.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

export function parseUserStr(login: string): UserStr {
  if (typeof login !== 'string') throw new UserStrError('malformed', 'not a string');
  return parseAt(login.trim(), login.trim());
}

function parseAt(s: string, raw: string): UserStr {
  if (runeCount(s) > MAX_USERSTR_RUNES) throw new UserStrError('too_long');

  const prefix = B64_PREFIX.exec(s);
  if (prefix) return parseAt(decodeB64(s.slice(prefix[0].length)).trim(), raw);

  const tilde = s.indexOf('~');
  const userPart = tilde === -1 ? s : s.slice(0, tilde);
  const spec = tilde === -1 ? '' : s.slice(tilde + 1);
  const username = userPart.toLowerCase();
  if (username === '') throw new UserStrError('malformed', 'empty username');
  if (CONTROL.test(username)) throw new UserStrError('malformed', 'control character in username');
  // The username is also the default repo owner inside a parameter value and is sent unescaped in the
  // canonical form; keep it free of separators and whitespace.
  if (/[\s+=/]/.test(username)) {
    throw new UserStrError('invalid', "username must not contain whitespace, '+', '=' or '/'");
  }

  const u: UserStr = {
    raw,
    username,
    form: 'implicit',
    blueprint: '',
    blueprintKind: 'implicit',
    asUser: '',
    pod: '',
    namespace: '',
    workloadKind: '',
    workloadName: '',
    repoOwner: '',
    repoName: '',
    ref: '',
  };
  if (spec === '') return u;

  const segments = spec.split('+');
  const first = segments[0] ?? '';
  if (first === '') throw new UserStrError('malformed', 'empty segment');
  if (!first.includes('=')) {
    u.form = 'explicit';
    u.blueprintKind = 'explicit';
    u.blueprint = value(first, false);
    const params = parseParams(segments.slice(1), EXPLICIT_KEYS);
    applyCommon(u, params);
    return u;
  }

  const params = parseParams(segments, PARAM_KEYS);
  if (params.has('pod')) {
    for (const key of params.keys()) {
      if (!NAMED_KEYS.has(key)) throw new UserStrError('invalid', `'${key}' cannot be combined with 'pod'`);
    }
    u.form = 'named';
    u.pod = params.get('pod') ?? '';
    u.namespace = params.get('ns') ?? '';
    u.asUser = params.get('user') ?? '';
    return u;
  }

  const repo = params.get('repo');
  if (repo === undefined) throw new UserStrError('invalid', "'repo' or 'pod' is required");
  const parts = repo.split('/');
  if (parts.length > 2 || parts.some((p) => p === '')) {
    throw new UserStrError('invalid', "'repo' must be 'owner/name' or 'name'");
  }
  u.form = 'repo';
  u.blueprintKind = 'custom';
  u.repoOwner = parts.length === 2 ? (parts[0] ?? '') : username;
  u.repoName = parts[parts.length - 1] ?? '';
  u.blueprint = `repo-${u.repoOwner}-${u.repoName}`;
  u.ref = params.get('ref') ?? '';
  applyCommon(u, params);
  return u;
}

/** `user`, and `workload` + `ns` (which must come together), shared by the explicit and repo forms. */
function applyCommon(u: UserStr, params: Map<string, string>): void {
  u.asUser = params.get('user') ?? '';
  const workload = params.get('workload');
  const ns = params.get('ns');
  if ((workload === undefined) !== (ns === undefined)) {
    throw new UserStrError('invalid', "'workload' and 'ns' must be given together");
  }
  if (workload === undefined || ns === undefined) return;
  const wl = workload.split('/');
  if (wl.length !== 2 || wl.some((p) => p === '')) {
    throw new UserStrError('invalid', "'workload' must be 'kind/name'");
  }
  u.workloadKind = wl[0] ?? '';
  u.workloadName = wl[1] ?? '';
  u.namespace = ns;
}

function parseParams(segments: string[], allowed: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const seg of segments) {
    if (seg === '') throw new UserStrError('malformed', 'empty segment');
    const eq = seg.indexOf('=');
    if (eq === -1) throw new UserStrError('malformed', `segment '${seg}' is not key=value`);
    const key = seg.slice(0, eq).toLowerCase();
    const rawValue = seg.slice(eq + 1);
    if (key === '') throw new UserStrError('malformed', 'empty key');
    if (rawValue.includes('=')) throw new UserStrError('malformed', `unescaped '=' in the value of '${key}'`);
    if (!allowed.has(key)) throw new UserStrError('invalid', `key '${key}' not allowed here`);
    if (out.has(key)) throw new UserStrError('invalid', `key '${key}' given twice`);
    if (rawValue === '') throw new UserStrError('malformed', `empty value for '${key}'`);
    out.set(key, value(rawValue, true));
  }
  return out;
}

/**
 * URL-path-unescapes one value. Values whose decoded form contains '+' or '=' are refused: the canonical
 * form leaves those characters unescaped (Go's url.PathEscape), so they would smuggle extra parameters into
 * the user string the provisioner parses (e.g. a blueprint `dev%2Buser%3Droot`).
 */
function value(rawValue: string, lower: boolean): string {
  const decoded = pathUnescape(rawValue);
  if (decoded === '') throw new UserStrError('malformed', 'empty value');
  if (decoded.includes('+') || decoded.includes('=')) {
    throw new UserStrError('invalid', "a value must not contain '+' or '='");
  }
  if (CONTROL.test(decoded)) throw new UserStrError('malformed', 'control character in a value');
  return lower ? decoded.toLowerCase() : decoded;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function pathUnescape(s: string): string {
  if (!s.includes('%')) return s;
  const bytes: number[] = [];
  const src = Buffer.from(s, 'utf8');
  for (let i = 0; i < src.length; i++) {
    const c = src[i] ?? 0;
    if (c !== 0x25) {
      bytes.push(c);
      continue;
    }
    const hex = src.subarray(i + 1, i + 3).toString('latin1');
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new UserStrError('malformed', 'bad percent escape');
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  try {
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    throw new UserStrError('malformed', 'escaped value is not UTF-8');
  }
}

function decodeB64(payload: string): string {
  // Unpadded URL-safe base64: a length of 1 mod 4 cannot be produced by any input.
  if (payload === '' || !B64_PAYLOAD.test(payload) || payload.length % 4 === 1) {
    throw new UserStrError('base64_invalid');
  }
  try {
    return utf8.decode(Buffer.from(payload, 'base64url'));
  } catch {
    throw new UserStrError('base64_invalid', 'not UTF-8');
  }
}

function runeCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// Go url.PathEscape: unreserved characters and `$&+:=@` stay, everything else is %XX (upper-case hex).
const PATH_SAFE = /[A-Za-z0-9\-_.~$&+:=@]/;

export function pathEscape(s: string): string {
  let out = '';
  for (const ch of s) {
    if (ch.length === 1 && PATH_SAFE.test(ch)) {
      out += ch;
      continue;
    }
    for (const b of Buffer.from(ch, 'utf8')) out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** The canonical user string sent to the provisioner (§7.3). */
export function canonicalUserStr(u: UserStr): string {
  const workload = u.workloadKind ? `${u.workloadKind}/${u.workloadName}` : '';
  switch (u.form) {
    case 'implicit':
      return u.username;
    case 'explicit': {
      let s = `${u.username}~${pathEscape(u.blueprint)}`;
      if (workload) s += `+workload=${pathEscape(workload)}+ns=${pathEscape(u.namespace)}`;
      if (u.asUser) s += `+user=${pathEscape(u.asUser)}`;
      return s;
    }
    case 'named': {
      let s = `${u.username}~pod=${pathEscape(u.pod)}`;
      if (u.namespace) s += `+ns=${pathEscape(u.namespace)}`;
      if (u.asUser) s += `+user=${pathEscape(u.asUser)}`;
      return s;
    }
    case 'repo': {
      // Already in key order: ns, ref, repo, user, workload.
      const params: [string, string][] = [
        ['ns', workload ? u.namespace : ''],
        ['ref', u.ref],
        ['repo', `${u.repoOwner}/${u.repoName}`],
        ['user', u.asUser],
        ['workload', workload],
      ];
      const parts = params.filter(([, v]) => v !== '').map(([k, v]) => `${k}=${pathEscape(v)}`);
      return `${u.username}~${parts.join('+')}`;
    }
  }
}

/** Provisioner-side name of a new workspace (§7.3, last paragraph); a named workspace keeps its pod name. */
export function workspaceNameFor(u: UserStr): string {
  if (u.form === 'named') return u.pod;
  let key = `u=${u.username}`;
  if (u.form === 'repo') key += `|r=${u.repoOwner}/${u.repoName}`;
  if (u.ref) key += `|ref=${u.ref}`;
  if (u.blueprint) key += `|bp=${u.blueprint}`;
  if (u.workloadKind) key += `|workload=${u.workloadKind}/${u.workloadName}`;
  return `${u.username}-${createHash('sha256').update(key).digest('hex').slice(0, 7)}`;
}
