// The local policy language (`<data-dir>/policy.yaml`, docs/policy.md): parsing and evaluation.
//
// A policy is an ordered list of rules plus a default. The first rule whose conditions all hold decides
// (allow or deny, with a reason and optional obligations); no match → the default (allow unless the
// file says otherwise). Conditions are globs (`*`, `?`, `[a-z]`, `\` escapes) over the action, the
// user, the workspace, the blueprint and the request context, plus port ranges and flags.
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Action } from '../gateway/authorize.js';

export const ACTIONS: readonly Action[] = [
  'user:auth',
  'workspace:create',
  'ssh:shell',
  'ssh:exec',
  'ssh:sftp',
  'ssh:direct-tcpip',
  'ssh:direct-streamlocal',
  'ssh:agent-forward',
  'session:record',
];

const RECORD_KINDS = [
  'shell',
  'exec',
  'direct-tcpip',
  'sftp',
  'vscode-terminals',
  'vscode-input',
  'none',
] as const;
const SESSION_TYPES = ['shell', 'exec', 'sftp', 'tcpip'] as const;
/** Methods a `user:auth` allow offers when its rule names none (the reference without authz). */
export const DEFAULT_AUTH_METHODS = '["publickey","password"]';

/** One Evaluate request as the policy sees it (the authz.v1 fields). */
export interface PolicyRequest {
  action: string;
  resource?: { type: string; id: string; attributes: Record<string, string> };
  context: Record<string, string>;
}

export interface PolicyDecision {
  allowed: boolean;
  reason: string;
  obligations: Record<string, string>;
  /** Which rule decided (`name` or `#<n>`), or `default`. */
  rule: string;
}

// --- globs ---

/** Compiles a glob to an anchored RegExp; `*` crosses `/` (commands and paths alike). */
export function globToRegExp(glob: string, caseInsensitive = false): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob.charAt(i);
    if (c === '\\' && i + 1 < glob.length) re += escapeRe(glob.charAt(++i));
    else if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = glob.slice(i + 1, end);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = end;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, caseInsensitive ? 'is' : 's');
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const isGlob = (s: string) => /[*?[]/.test(s);

// --- schema ---

const one = z.string().min(1, 'must not be empty');
const globList = z.union([one, z.array(one).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]));
const portItem = z.union([z.number(), z.string()]);
const portList = z.union([portItem, z.array(portItem).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]));

const ruleSchema = z
  .object({
    name: z.string().optional(),
    action: globList.optional(),
    user: globList.optional(),
    workspace: globList.optional(),
    blueprint: globList.optional(),
    command: globList.optional(),
    host: globList.optional(),
    port: portList.optional(),
    socketPath: globList.optional(),
    asUser: globList.optional(),
    pty: z.boolean().optional(),
    sessionType: z
      .union([z.enum(SESSION_TYPES), z.array(z.enum(SESSION_TYPES)).min(1)])
      .transform((v) => (Array.isArray(v) ? v : [v]))
      .optional(),
    context: z.record(z.string(), globList).optional(),
    effect: z.enum(['allow', 'deny']),
    reason: z.string().optional(),
    authMethods: z.array(z.enum(['publickey', 'password'])).optional(),
    record: z.array(z.enum(RECORD_KINDS)).min(1).optional(),
    obligations: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const fileSchema = z
  .object({
    default: z.enum(['allow', 'deny']).optional(),
    rules: z.array(ruleSchema).nullish(),
  })
  .strict();

type RuleInput = z.output<typeof ruleSchema>;

// --- compiled form ---

type Matcher = (v: string | undefined) => boolean;

interface Rule {
  label: string;
  conditions: Array<{ what: keyof RequestView | string; test: (r: RequestView) => boolean }>;
  effect: 'allow' | 'deny';
  reason?: string;
  obligations: Record<string, string>;
}

export interface Policy {
  rules: Rule[];
  defaultEffect: 'allow' | 'deny';
}

/** No file: allow everything (the reference without authz). */
export const ALLOW_ALL: Policy = { rules: [], defaultEffect: 'allow' };

interface RequestView {
  action: string;
  user: string | undefined;
  workspace: string | undefined;
  blueprint: string | undefined;
  context: Record<string, string>;
}

function globs(list: string[], ci = false): Matcher {
  const res = list.map((g) => globToRegExp(g, ci));
  return (v) => v !== undefined && res.some((r) => r.test(v));
}

/** `22`, `3000-3999`, or a list of them. Throws naming the bad entry. */
export function parsePorts(items: Array<string | number>): Array<[number, number]> {
  return items.map((it) => {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(String(it));
    const lo = Number(m?.[1]);
    const hi = m?.[2] === undefined ? lo : Number(m[2]);
    if (!m || lo < 1 || hi > 65535 || lo > hi)
      throw new Error(`port "${String(it)}" is not a port or range like 3000-3999 (1-65535)`);
    return [lo, hi];
  });
}

function compileRule(r: RuleInput, index: number): Rule {
  const label = r.name ? `"${r.name}"` : `#${index + 1}`;
  const at = (what: string) => `rules[${index}]${r.name ? ` (${r.name})` : ''}.${what}`;
  const conditions: Rule['conditions'] = [];
  const add = (what: string, test: (rv: RequestView) => boolean) => conditions.push({ what, test });

  if (r.action) {
    for (const a of r.action)
      if (!isGlob(a) && !(ACTIONS as readonly string[]).includes(a))
        throw new Error(`${at('action')}: unknown action "${a}" (known: ${ACTIONS.join(', ')})`);
    const m = globs(r.action);
    add('action', (rv) => m(rv.action));
  }
  if (r.user) {
    const m = globs(r.user, true);
    add('user', (rv) => m(rv.user));
  }
  if (r.workspace) {
    const m = globs(r.workspace);
    add('workspace', (rv) => m(rv.workspace));
  }
  if (r.blueprint) {
    const m = globs(r.blueprint);
    add('blueprint', (rv) => m(rv.blueprint));
  }
  const ctx = (key: string, list: string[] | undefined, ci = false) => {
    if (!list) return;
    const m = globs(list, ci);
    add(key, (rv) => m(rv.context[key]));
  };
  ctx('command', r.command);
  ctx('host', r.host, true);
  ctx('socket_path', r.socketPath);
  ctx('as_user', r.asUser);
  if (r.port) {
    let ranges: Array<[number, number]>;
    try {
      ranges = parsePorts(r.port);
    } catch (e) {
      throw new Error(`${at('port')}: ${(e as Error).message}`);
    }
    add('port', (rv) => {
      const p = rv.context.port;
      if (p === undefined || !/^\d+$/.test(p)) return false;
      const n = Number(p);
      return ranges.some(([lo, hi]) => n >= lo && n <= hi);
    });
  }
  if (r.pty !== undefined) {
    const want = r.pty;
    add('pty', (rv) => (rv.context.pty === 'true') === want);
  }
  if (r.sessionType) {
    const types: readonly string[] = r.sessionType;
    add(
      'session_type',
      (rv) => rv.context.session_type !== undefined && types.includes(rv.context.session_type),
    );
  }
  for (const [key, list] of Object.entries(r.context ?? {})) ctx(key, list);

  const obligations: Record<string, string> = { ...(r.obligations ?? {}) };
  if (r.authMethods) obligations.auth_methods = JSON.stringify(r.authMethods);
  if (r.record) obligations.record = r.record.join(',');
  return { label, conditions, effect: r.effect, reason: r.reason, obligations };
}

/** Parses and compiles policy.yaml text; throws an Error naming the problem and where it is. */
export function parsePolicy(text: string): Policy {
  const doc: unknown = parseYaml(text, { uniqueKeys: true }) ?? {};
  const r = fileSchema.safeParse(doc);
  if (!r.success) throw new Error(z.prettifyError(r.error).replace(/\n+/g, '; '));
  return {
    rules: (r.data.rules ?? []).map((rule, i) => compileRule(rule, i)),
    defaultEffect: r.data.default ?? 'allow',
  };
}

function view(req: PolicyRequest): RequestView {
  const res = req.resource;
  const user = res?.type === 'user' ? res.id : res?.attributes.owner;
  return {
    action: req.action,
    user: user || undefined,
    workspace: res?.type === 'workspace' && res.id ? res.id : undefined,
    blueprint: res?.attributes.blueprint || undefined,
    context: req.context,
  };
}

/** First matching rule wins; no match → the policy default. */
export function evaluatePolicy(policy: Policy, req: PolicyRequest): PolicyDecision {
  const rv = view(req);
  let decision: PolicyDecision | undefined;
  for (const rule of policy.rules) {
    if (!rule.conditions.every((c) => c.test(rv))) continue;
    decision = {
      allowed: rule.effect === 'allow',
      reason: rule.reason ?? (rule.effect === 'deny' ? `denied by policy rule ${rule.label}` : ''),
      obligations: { ...rule.obligations },
      rule: rule.label,
    };
    break;
  }
  decision ??= {
    allowed: policy.defaultEffect === 'allow',
    reason: policy.defaultEffect === 'allow' ? '' : `no policy rule allows ${req.action}`,
    obligations: {},
    rule: 'default',
  };
  // An allowed login needs its methods (absent would mean none): default to the reference's two.
  if (req.action === 'user:auth' && decision.allowed && decision.obligations.auth_methods === undefined)
    decision.obligations.auth_methods = DEFAULT_AUTH_METHODS;
  return decision;
}
