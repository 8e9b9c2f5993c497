// Authorization requests (reference-behaviour §14, wire-protocol §5.13) and the Authorizer seam.
//
// The dispatcher builds one complete ActionRequest per action (and the Authenticator the `user:auth`
// one); `checkAction` below is the only caller of `Authorizer.evaluate`: every error, timeout or
// malformed answer there is a deny (fail closed). Without an authz service `allowAll` answers, and the
// dispatcher's local rules (root guard, as-user) still apply.
import { errText, type Logger } from '../ops/log.js';

export type Action =
  | 'user:auth'
  | 'workspace:create'
  | 'ssh:shell'
  | 'ssh:exec'
  | 'ssh:sftp'
  | 'ssh:direct-tcpip'
  | 'ssh:direct-streamlocal'
  | 'ssh:agent-forward'
  | 'session:record';

/** The authz.v1 EvaluateRequest fields, exactly as sent (token filled in by the dispatcher). */
export interface ActionRequest {
  action: Action;
  package: 'user' | 'workspace' | 'ssh' | 'session';
  resource: { type: 'user' | 'workspace'; id: string; attributes: Record<string, string> };
  /** Only keys that have a value (wire-protocol §5.13). */
  context: Record<string, string>;
  /** The user JWT (§8.7); empty until the dispatcher fills it. */
  token: string;
}

export interface Decision {
  allowed: boolean;
  /** Why it was denied (authz's reason, or ours for local rules and failures). */
  reason: string;
  obligations: Record<string, string>;
}

export interface Authorizer {
  /** True when an authz service is configured (then a user token is needed for every call). */
  readonly configured: boolean;
  /**
   * Evaluates one action. May throw or hang: the dispatcher bounds it with a deadline and turns any
   * failure into a deny.
   */
  evaluate(req: ActionRequest, signal: AbortSignal): Promise<Decision>;
}

/** A decision of `checkAction`; `failed` when the check itself failed (denied, fail closed). */
export type Verdict = Decision & { failed: boolean };

export interface CheckContext {
  /** Deadline of one evaluation (config `authz.timeout`), in ms. */
  timeoutMs: number;
  /** The user JWT for `token`, asked only when an authz service is configured; a rejection denies. */
  userToken: () => Promise<string>;
  /** The connection's logger (failures are logged with their cause). */
  log: Logger;
  /** Ends the evaluation early (the connection went away); counts as a failure. */
  signal?: AbortSignal;
  /** Outcome and duration of every evaluation (metrics). */
  observe?: (action: Action, outcome: 'allowed' | 'denied' | 'error', seconds: number) => void;
}

/**
 * The one place `Authorizer.evaluate` is called. The user token is fetched first, the evaluation is
 * bounded by `timeoutMs` whatever the authorizer does, and a throw, a timeout or an answer without a
 * boolean `allowed` is a deny with `failed` set.
 */
export async function checkAction(
  authorizer: Authorizer,
  req: ActionRequest,
  c: CheckContext,
): Promise<Verdict> {
  const { action } = req;
  const failed = (reason: string): Verdict => ({ allowed: false, reason, obligations: {}, failed: true });
  let full = req;
  if (authorizer.configured) {
    try {
      full = { ...req, token: await c.userToken() };
    } catch (e) {
      c.log.warn({ action, err: errText(e) }, 'no user token; action denied');
      return failed('the user token could not be issued');
    }
  }
  // Ends the wait whatever the authorizer does with its signal: at the deadline, or when the caller
  // gives up (the connection closed).
  const abort = new AbortController();
  let stop: (why: string) => void = () => undefined;
  const stopped = new Promise<never>((_, reject) => {
    stop = (why) => {
      abort.abort();
      reject(new Error(why));
    };
  });
  const timer = setTimeout(() => stop(`no answer within authz.timeout (${c.timeoutMs} ms)`), c.timeoutMs);
  const onCancel = () => stop('cancelled: the connection closed');
  if (c.signal?.aborted) onCancel();
  else c.signal?.addEventListener('abort', onCancel, { once: true });
  const started = process.hrtime.bigint();
  const observe = (v: Verdict): Verdict => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    c.observe?.(action, v.failed ? 'error' : v.allowed ? 'allowed' : 'denied', seconds);
    return v;
  };
  try {
    const d = await Promise.race([
      stopped,
      Promise.resolve().then(() => authorizer.evaluate(full, abort.signal)),
    ]);
    if (typeof d?.allowed !== 'boolean') {
      c.log.warn({ action }, `authz: evaluate ${action}: malformed answer; denied`);
      return observe(failed('authz: malformed answer'));
    }
    return observe({
      allowed: d.allowed,
      reason: d.reason ?? '',
      obligations: d.obligations ?? {},
      failed: false,
    });
  } catch (e) {
    c.log.warn({ action, err: errText(e) }, `authz: evaluate ${action} failed; denied`);
    return observe(failed(`authz: evaluate ${action}: ${errText(e)}`));
  } finally {
    clearTimeout(timer);
    c.signal?.removeEventListener('abort', onCancel);
  }
}

/** No authz service: the reference allows every action (local rules still apply). */
export const allowAll: Authorizer = {
  configured: false,
  evaluate: () => Promise.resolve({ allowed: true, reason: '', obligations: {} }),
};

/** What the dispatcher knows when it builds a request; each action uses the fields §14 lists. */
export interface Subject {
  username: string;
  /** Identity source (IdP) and organization, for user:auth. */
  source?: string;
  organization?: string;
  workspace?: string;
  /** Workspace blueprint (ssh:shell, session:record). */
  blueprint?: string;
  pty?: boolean;
  asUser?: string;
  command?: string;
  host?: string;
  port?: number;
  socketPath?: string;
  /** workspace:create: `inject` with a namespace and workload, else `standalone`. */
  mode?: 'standalone' | 'inject';
  /** workspace:create: the user-string blueprint kind (implicit / explicit / custom). */
  blueprintKind?: string;
  /** session:record: shell / exec / sftp / tcpip. */
  sessionType?: 'shell' | 'exec' | 'sftp' | 'tcpip';
}

const PACKAGE: Record<Action, ActionRequest['package']> = {
  'user:auth': 'user',
  'workspace:create': 'workspace',
  'ssh:shell': 'ssh',
  'ssh:exec': 'ssh',
  'ssh:sftp': 'ssh',
  'ssh:direct-tcpip': 'ssh',
  'ssh:direct-streamlocal': 'ssh',
  'ssh:agent-forward': 'ssh',
  'session:record': 'session',
};

function compact(m: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) if (v !== undefined && v !== '') out[k] = v;
  return out;
}

/** Builds the request of reference-behaviour §14.2 for `action`, field by field. */
export function buildRequest(action: Action, s: Subject): ActionRequest {
  const pkg = PACKAGE[action];
  const owner = { owner: s.username };
  switch (action) {
    case 'user:auth':
      return {
        action,
        package: pkg,
        resource: {
          type: 'user',
          id: s.username,
          attributes: compact({ idp: s.source, org: s.organization }),
        },
        context: { surface: 'ssh' },
        token: '',
      };
    case 'workspace:create':
      return {
        action,
        package: pkg,
        resource: { type: 'workspace', id: '', attributes: owner },
        // The reference's source key is not known for certain (reference-behaviour §22.2 item 3).
        context: compact({ mode: s.mode ?? 'standalone', source: s.blueprintKind }),
        token: '',
      };
    default: {
      const attributes: Record<string, string> =
        action === 'ssh:shell' || action === 'session:record'
          ? compact({ ...owner, blueprint: s.blueprint })
          : { ...owner };
      let context: Record<string, string> = {};
      if (action === 'ssh:shell') context = compact({ pty: s.pty ? 'true' : undefined, as_user: s.asUser });
      else if (action === 'ssh:exec') context = compact({ command: s.command });
      else if (action === 'ssh:direct-tcpip')
        context = compact({ host: s.host, port: s.port === undefined ? undefined : String(s.port) });
      else if (action === 'ssh:direct-streamlocal') context = compact({ socket_path: s.socketPath });
      else if (action === 'session:record')
        context = compact({ session_type: s.sessionType, session_source: 'ssh-proxy' });
      return {
        action,
        package: pkg,
        resource: { type: 'workspace', id: s.workspace ?? '', attributes },
        context,
        token: '',
      };
    }
  }
}

/**
 * Local validation before sending (§14.1): a request that fails it is denied with
 * `authz: invalid request: …`. Returns the problem, or undefined when the request is well formed.
 */
export function invalidRequest(req: ActionRequest): string | undefined {
  if (!req.resource.attributes.owner && req.resource.type === 'workspace') return 'missing owner';
  if (req.resource.type === 'user' && !req.resource.id) return 'missing user';
  if (req.resource.type === 'workspace' && req.action !== 'workspace:create' && !req.resource.id)
    return 'missing workspace name';
  return undefined;
}

// --- Legacy per-channel check, replaced by the dispatcher (issue: channel pipeline). ---
export type LegacyAction = Exclude<Action, 'user:auth' | 'workspace:create' | 'session:record'>;
export interface LegacyActionRequest {
  action: LegacyAction;
  username: string;
  workspace: string;
  blueprint?: string;
  context?: Record<string, string>;
  asUser?: string;
  sudo?: boolean;
}
export interface LegacyAuthorizer {
  check(req: LegacyActionRequest): Promise<{ allowed: true } | { allowed: false; reason: string }>;
}
export const localAuthorizer: LegacyAuthorizer = {
  check(req) {
    if (req.action === 'ssh:shell' && req.asUser === 'root' && !req.sudo)
      return Promise.resolve({
        allowed: false,
        reason: `user ${req.username} may not open a root shell (no sudo rights)`,
      });
    return Promise.resolve({ allowed: true });
  },
};
