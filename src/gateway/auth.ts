// SSH authentication through the identity service (reference-behaviour §8) and, when an authz service
// is configured, the `user:auth` policy (§8.3, §14.2).
//
// Per connection: the user string is parsed once, the user looked up once, the permitted methods
// resolved once, identity asked once per offered key (ssh2 calls back twice per key: query, then
// signed), and the signature verified here. Identity or authz unreachable means no methods:
// authentication fails closed, with a log line.
//
// Unknown users whom identity lets onboard are steered to keyboard-interactive: a device flow (§8.6)
// watched in the background (§23.g, onboarding.ts), re-prompting with the same code while it is
// valid; on success the client continues with the user's now-permitted methods (partial success).
// Unlike the reference, the method list for them also names publickey, so that clients offer their key
// first: identity learns it (a hint) and the approval page can propose it; the key attempt itself is
// answered with a partial success pointing to keyboard-interactive, as in the reference.
//
// Attempt accounting (MaxAuthTries, node-notes §3 traps 2–5): every rejected request counts except
// `none`; a partial success that records real progress (onboarding finished) does not count; a partial
// success that only steers an unknown user to keyboard-interactive does count, so no client can loop
// through partial successes for free.
import { createHash } from 'node:crypto';
import ssh2 from 'ssh2';
import type { AuthContext, KeyboardAuthContext, PasswordAuthContext, PublicKeyAuthContext } from 'ssh2';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import type { IdentityBackend, User, UserOnboardCapability } from '../backends/identity.js';
import { status } from '@grpc/grpc-js';
import { isServiceError } from '../backends/grpc.js';
import { buildRequest, type ActionRequest, type Decision } from './authorize.js';
import { DeviceFlowWatch, onboardingPrompt, type FlowOutcome } from './onboarding.js';
import { parseUserStr, UserStrError, type UserStr } from './userstr.js';

const { utils } = ssh2;

/**
 * Evaluates `user:auth` (the request is complete except `token`, which the caller fills in from the
 * user JWT). The gateway supplies `checkAction` (authorize.ts), the single caller of
 * `Authorizer.evaluate`; a deny, a `failed` verdict or a rejection means no methods (fail closed).
 */
export type EvaluateUserAuth = (
  req: ActionRequest,
  signal: AbortSignal,
) => Promise<Decision & { failed?: boolean }>;

export type PasswordOrKey = 'publickey' | 'password';
type Method = PasswordOrKey | 'keyboard-interactive';

export interface AuthSettings {
  maxAuthTries: number;
  /** Ours (server.onboardingTimeout, ms): the longest an onboarding waits; capped by expires_in. */
  onboardingTimeoutMs?: number;
  /** Background poll interval while a device flow runs (ms); default 5000. */
  onboardingPollMs?: number;
}

export interface AuthHooks {
  /** Ends the connection (attempt limit reached). */
  disconnect(): void;
  /**
   * Ends the connection with `message` for the user: the identity service failed or did not answer
   * within its deadline, so no attempt on this connection can succeed before the login grace ends.
   * Absent: the attempt is only rejected (the user sees `Permission denied`).
   */
  unavailable?(message: string): void;
  /**
   * `true` when an onboarding prompt starts waiting for the user, `false` when it was answered or
   * abandoned: the login grace timer must not run in between (§23.g); the onboarding has its own
   * deadline, after which `false` is reported even if the user never answers.
   */
  onPromptPending?(pending: boolean): void;
  /** `user:auth` through the dispatcher; absent = no authz service (publickey + password). */
  evaluate?: EvaluateUserAuth;
  /**
   * Pre-authentication backoff for this connection's source (sshd's PerSourcePenalties): a refused
   * source gets every attempt rejected; each failure returns how long to wait before answering it.
   */
  gate?: {
    /** In a forked child the parent decides: the answers may come later. */
    refused(): boolean | Promise<boolean>;
    failed(user: string): number | Promise<number>;
    succeeded(user: string): void;
  };
  /** Every decided attempt (metrics). */
  onAttempt?(method: string, result: 'success' | 'failure' | 'partial'): void;
}

/** The outcome the connection keeps once authentication succeeded. */
export interface AuthenticatedUser {
  userstr: UserStr;
  user: User;
  method: PasswordOrKey;
}

type Lookup = { kind: 'found'; user: User } | { kind: 'not_found' } | { kind: 'error' };

interface Methods {
  /** What policy permits. */
  permitted: PasswordOrKey[];
  /** What is advertised: permitted, minus password for a user known to have none. */
  offered: PasswordOrKey[];
}

const KBD: Method[] = ['keyboard-interactive'];
/** The user's message when identity failed; the operator's log line has the gRPC detail. */
export const IDENTITY_UNAVAILABLE =
  'ssh-proxy: login is unavailable right now (the identity service did not answer); try again later';
const DEFAULT_ONBOARDING_TIMEOUT_MS = 600_000;
const DEFAULT_POLL_MS = 5000;
/** Keys of an unknown user passed on to identity as onboarding hints, per connection. */
const MAX_KEY_HINTS = 8;

/**
 * The `auth_methods` obligation: a JSON array such as `["publickey","password"]`. Absent or
 * unparsable → none (fail closed); unknown entries are ignored.
 */
export function parseAuthMethods(obligation: string | undefined): PasswordOrKey[] {
  if (obligation === undefined) return [];
  let v: unknown;
  try {
    v = JSON.parse(obligation);
  } catch {
    return [];
  }
  if (!Array.isArray(v)) return [];
  const out: PasswordOrKey[] = [];
  for (const m of v) if ((m === 'publickey' || m === 'password') && !out.includes(m)) out.push(m);
  return out;
}

export class Authenticator {
  private userstr: UserStr | undefined;
  private lookup: Promise<Lookup> | undefined;
  private capability: Promise<UserOnboardCapability | undefined> | undefined;
  private methods: Promise<Methods> | undefined;
  private readonly keyVerdicts = new Map<string, Promise<boolean | 'unavailable'>>();
  private readonly keyHints = new Set<string>();
  private onboarding: DeviceFlowWatch | undefined;
  private promptPending = false;
  private failures = 0;
  private readonly closer = new AbortController();
  /** Reasons collected for the operator log (the reference's "failure info"). */
  readonly failureInfo: string[] = [];
  result: AuthenticatedUser | undefined;

  constructor(
    private readonly identity: IdentityBackend,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
    private readonly hooks: AuthHooks,
  ) {}

  handle(ctx: AuthContext): void {
    this.decide(ctx).catch((e: unknown) => {
      // Anything unexpected denies: fail closed.
      this.log.error({ err: errText(e), method: ctx.method }, 'authentication error');
      this.reject(ctx, []);
    });
  }

  /** The connection closed: stop background work. */
  close(): void {
    this.closer.abort();
    this.onboarding?.stop();
    this.setPromptPending(false);
  }

  /** The user-string username of the attempts so far (for failure events), if one parsed. */
  get attemptedUsername(): string | undefined {
    return this.userstr?.username;
  }

  private async decide(ctx: AuthContext): Promise<void> {
    const userstr = this.parse(ctx.username);
    if (!userstr) return this.reject(ctx, []);
    if (ctx.method !== 'none' && (await this.hooks.gate?.refused())) {
      this.failureInfo.push('Source refused after repeated authentication failures');
      return this.reject(ctx, []);
    }
    const found = await this.findUser(userstr);
    if (found.kind === 'found') return this.known(ctx, userstr, found.user);
    if (found.kind === 'error' && this.hooks.unavailable) return this.hooks.unavailable(IDENTITY_UNAVAILABLE);
    const cap = found.kind === 'not_found' ? await this.onboardCapability(userstr.username) : undefined;
    if (!cap?.canOnboard) {
      if (ctx.method === 'keyboard-interactive' && cap)
        this.log.info({ user: userstr.username }, `User ${userstr.username} is not allowed to onboard`);
      // An attempt (not the `none` method query) by a user nobody knows: the reference's failure info.
      if (ctx.method !== 'none') this.failureInfo.push('No available authentication methods');
      return this.reject(ctx, []);
    }
    return this.unknown(ctx, userstr, cap);
  }

  // --- Known users ---

  private async known(ctx: AuthContext, userstr: UserStr, user: User): Promise<void> {
    const m = await this.methodsFor(user, userstr);
    switch (ctx.method) {
      case 'none':
        return ctx.reject(m.offered);
      case 'publickey':
        return this.publicKey(ctx, userstr, user, m);
      case 'password':
        return this.password(ctx, userstr, user, m);
      case 'keyboard-interactive':
        this.log.info({ user: userstr.username }, `user ${userstr.username} is already onboarded`);
        return this.reject(ctx, m.offered);
      default:
        // hostbased is not offered.
        return this.reject(ctx, m.offered);
    }
  }

  private async publicKey(ctx: PublicKeyAuthContext, userstr: UserStr, user: User, m: Methods) {
    if (!m.offered.length) {
      this.log.info(
        { user: userstr.username },
        `public key authentication not available for user ${userstr.username}`,
      );
      return this.reject(ctx, m.offered);
    }
    if (!m.offered.includes('publickey')) {
      this.failureInfo.push('Public key authentication not permitted by policy');
      return this.reject(ctx, m.offered);
    }
    const line = authorizedKeyLine(ctx.key.data);
    if (!line) return this.reject(ctx, m.offered);
    let verdict = this.keyVerdicts.get(line);
    if (!verdict) {
      verdict = this.identity.authPublicKey(userstr.username, line).catch((e: unknown) => {
        this.log.warn({ err: errText(e) }, 'public key check failed: identity service error');
        // Only an outage ends the login with the message; any answer (an error status) is a failure.
        return identityDown(e) ? ('unavailable' as const) : false;
      });
      this.keyVerdicts.set(line, verdict);
    }
    const fingerprint = keyFingerprint(ctx.key.data);
    const ok = await verdict;
    if (ok === 'unavailable' && this.hooks.unavailable) return this.hooks.unavailable(IDENTITY_UNAVAILABLE);
    if (ok !== true) {
      this.failureInfo.push('Public key authentication failed');
      this.log.info({ user: userstr.username, key: fingerprint }, 'public key not accepted');
      return this.reject(ctx, m.offered);
    }
    // Query phase (no signature): tell the client this key would do (PK_OK).
    if (!ctx.signature || !ctx.blob) return ctx.accept();
    const parsed = utils.parseKey(ctx.key.data);
    if (parsed instanceof Error || parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
      this.failureInfo.push('Public key signature invalid');
      return this.reject(ctx, m.offered);
    }
    this.log.info({ user: userstr.username, key: fingerprint }, 'public key accepted');
    return this.accept(ctx, userstr, user, 'publickey');
  }

  private async password(ctx: PasswordAuthContext, userstr: UserStr, user: User, m: Methods) {
    if (!m.offered.includes('password')) {
      // Policy allows it but the user has none: an ordinary failure, without asking identity.
      this.failureInfo.push(
        m.permitted.includes('password')
          ? 'Password authentication failed'
          : 'Password authentication not permitted by policy',
      );
      return this.reject(ctx, m.offered);
    }
    let ok = false;
    try {
      ok = await this.identity.authPassword(userstr.username, ctx.password);
    } catch (e) {
      this.log.warn({ err: errText(e) }, 'password check failed: identity service error');
    }
    if (!ok) {
      this.failureInfo.push('Password authentication failed');
      return this.reject(ctx, m.offered);
    }
    return this.accept(ctx, userstr, user, 'password');
  }

  /** Permitted methods, resolved once per connection (a failed evaluation is retried later). */
  private methodsFor(user: User, userstr: UserStr): Promise<Methods> {
    if (!this.methods) {
      const p = this.resolveMethods(user, userstr);
      this.methods = p.then((r) => r.methods);
      void p.then((r) => {
        if (!r.cache) this.methods = undefined;
      });
    }
    return this.methods;
  }

  private async resolveMethods(user: User, userstr: UserStr): Promise<{ methods: Methods; cache: boolean }> {
    let permitted: PasswordOrKey[];
    let cache = true;
    if (!this.hooks.evaluate) {
      permitted = ['publickey', 'password'];
    } else {
      const req = buildRequest('user:auth', {
        username: user.username || userstr.username,
        source: user.source,
        organization: user.organization,
      });
      let d: (Decision & { failed?: boolean }) | undefined;
      try {
        d = await this.hooks.evaluate(req, this.closer.signal);
      } catch (e) {
        d = { allowed: false, reason: errText(e), obligations: {}, failed: true };
      }
      if (d.failed) {
        // The check failed (no answer, no token): no methods now, asked again by a later attempt.
        this.failureInfo.push(`Failed to resolve authentication methods: ${d.reason}`);
        this.log.warn({ user: userstr.username, err: d.reason }, 'user:auth evaluation failed');
        cache = false;
      } else if (!d.allowed) {
        this.failureInfo.push(`Failed to resolve authentication methods: user:auth denied: ${d.reason}`);
        this.log.info({ user: userstr.username, reason: d.reason }, 'user:auth denied');
      }
      permitted = d.allowed ? parseAuthMethods(d.obligations.auth_methods) : [];
    }
    // Our identity says whether the user has a password (common.v1.User.has_password, ours); a
    // reference identity does not, and then password is offered as the reference does.
    const offered = user.hasPassword === false ? permitted.filter((x) => x !== 'password') : permitted;
    if (!offered.length) this.failureInfo.push('No available authentication methods');
    return { methods: { permitted, offered }, cache };
  }

  // --- Unknown users who may onboard ---

  private async unknown(ctx: AuthContext, userstr: UserStr, cap: UserOnboardCapability): Promise<void> {
    const ended = this.onboarding && this.onboarding.outcome.kind !== 'pending' ? this.onboarding : undefined;
    switch (ctx.method) {
      case 'none':
        // publickey too, so the client offers its key (passed on to identity as a hint, then steered
        // to keyboard-interactive): the approval page can propose exactly that key.
        return ctx.reject(ended ? KBD : ['publickey', ...KBD]);
      case 'keyboard-interactive':
        // One device flow per connection: once it failed, this connection cannot onboard.
        if (ended) return this.reject(ctx, KBD);
        return this.onboard(ctx, userstr, cap);
      case 'publickey':
        if (!ended) await this.hintKey(userstr.username, ctx.key.data);
        return this.steer(ctx);
      case 'password':
        return this.steer(ctx);
      default:
        return this.reject(ctx, KBD);
    }
  }

  /**
   * Tells identity which key the not-yet-known user offered (an AuthUserPublicKey call whose answer is
   * ignored): our local identity shows it on its approval page for one-click approval. Never cached as
   * a verdict: the key is checked for real after onboarding.
   */
  private async hintKey(username: string, blob: Buffer): Promise<void> {
    const line = authorizedKeyLine(blob);
    if (!line || this.keyHints.has(line) || this.keyHints.size >= MAX_KEY_HINTS) return;
    this.keyHints.add(line);
    await this.identity.authPublicKey(username, line).catch(() => false);
  }

  private async onboard(ctx: KeyboardAuthContext, userstr: UserStr, cap: UserOnboardCapability) {
    const username = userstr.username;
    let watch = this.onboarding;
    if (!watch) {
      let flow;
      try {
        flow = await this.identity.startDeviceFlow(cap.provider, username, { signal: this.closer.signal });
        if (!flow.userCode || !flow.verificationUrl || !(flow.expiresIn > 0))
          throw new Error('identity returned an incomplete device flow');
      } catch (e) {
        this.failureInfo.push(`Onboarding failed: ${errText(e)}`);
        this.log.warn({ user: username, err: errText(e) }, 'onboarding failed');
        return this.reject(ctx, KBD);
      }
      if (this.closer.signal.aborted) return;
      const provider = flow.provider || cap.provider;
      watch = new DeviceFlowWatch(
        this.identity,
        flow,
        provider,
        username,
        {
          timeoutMs: this.settings.onboardingTimeoutMs ?? DEFAULT_ONBOARDING_TIMEOUT_MS,
          pollMs: this.settings.onboardingPollMs ?? DEFAULT_POLL_MS,
        },
        this.log,
      );
      this.onboarding = watch;
      watch.onEnd((o) => {
        // Past the deadline the login grace time runs again, even with the prompt unanswered.
        this.setPromptPending(false);
        if (o.kind === 'done') this.log.info({ user: username }, 'onboarding approved');
        else if (o.kind !== 'pending')
          this.log.info({ user: username, outcome: o.kind, err: o.why }, 'onboarding failed');
      });
      this.log.info(
        { user: username, provider, expiresIn: flow.expiresIn, validFor: watch.validForS() },
        'onboarding started',
      );
    }
    this.ask(ctx, userstr, watch);
  }

  private ask(ctx: KeyboardAuthContext, userstr: UserStr, watch: DeviceFlowWatch): void {
    if (watch.outcome.kind !== 'pending') return void this.settle(ctx, userstr, watch, watch.outcome);
    const text = onboardingPrompt({
      username: watch.flow.username || watch.username,
      provider: watch.provider,
      verificationUrl: watch.flow.verificationUrl,
      userCode: watch.flow.userCode,
      validForS: watch.validForS(),
    });
    this.setPromptPending(true);
    ctx.prompt([{ prompt: text, echo: true }], '', '', (answers: unknown) => {
      this.setPromptPending(false);
      // The client restarted authentication (or went away): this request is void.
      if (answers instanceof Error) return;
      // The answer's content is ignored (§8.6): Enter means "check now".
      watch
        .refresh()
        .then((o) => this.settle(ctx, userstr, watch, o))
        .catch((e: unknown) => {
          this.log.error({ err: errText(e) }, 'onboarding error');
          this.reject(ctx, KBD);
        });
    });
  }

  private async settle(
    ctx: KeyboardAuthContext,
    userstr: UserStr,
    watch: DeviceFlowWatch,
    o: FlowOutcome,
  ): Promise<void> {
    if (this.closer.signal.aborted) return;
    switch (o.kind) {
      case 'pending':
        // Not approved yet: the same code again while it is valid.
        return this.ask(ctx, userstr, watch);
      case 'done': {
        this.lookup = Promise.resolve({ kind: 'found', user: o.user });
        const m = await this.methodsFor(o.user, userstr);
        if (!m.offered.length) return this.reject(ctx, []);
        return this.partial(ctx, m.offered);
      }
      default: {
        // Logged when the watch ended ('onboarding failed'); the failure info goes with the attempt.
        const what = o.kind === 'denied' ? 'was denied' : o.kind === 'expired' ? 'code expired' : 'timed out';
        this.failureInfo.push(`Onboarding ${what}: ${o.why}`);
        return this.reject(ctx, KBD);
      }
    }
  }

  // --- Shared ---

  private parse(login: string): UserStr | undefined {
    if (this.userstr) return this.userstr;
    try {
      this.userstr = parseUserStr(login);
      return this.userstr;
    } catch (e) {
      const why = e instanceof UserStrError ? e.message : errText(e);
      // Logged only: as in the reference no per-connection state exists, so the failure event
      // carries just the handshake error (reference-behaviour §17.2).
      this.log.info({ login: login.slice(0, 200), err: why }, 'invalid user string');
      return undefined;
    }
  }

  private findUser(userstr: UserStr): Promise<Lookup> {
    this.lookup ??= this.identity.findUser(userstr.username).then((r): Lookup => {
      if (r.kind === 'found') return { kind: 'found', user: r.user };
      if (r.kind === 'not_found') {
        this.failureInfo.push(`Failed to get user: ${userstr.username} not found`);
        this.log.info({ user: userstr.username }, 'unknown user');
        return { kind: 'not_found' };
      }
      // Fail closed, and say why to the operator.
      this.failureInfo.push(`User lookup failed: ${r.error}`);
      this.log.error(
        { user: userstr.username, err: r.error },
        'user lookup failed: identity service unavailable',
      );
      return { kind: 'error' };
    });
    // A failed lookup is not cached, so a later attempt on the same connection can succeed.
    const p = this.lookup;
    void p.then((l) => {
      if (l.kind === 'error' && this.lookup === p) this.lookup = undefined;
    });
    return p;
  }

  /** GetUserOnboardCapability, once per connection (an error is retried by a later attempt). */
  private onboardCapability(username: string): Promise<UserOnboardCapability | undefined> {
    if (!this.capability) {
      const p = this.identity.onboardCapability(username, { signal: this.closer.signal }).then(
        (c) => c,
        (e: unknown) => {
          this.log.warn({ user: username, err: errText(e) }, 'onboarding capability lookup failed');
          if (this.capability === p) this.capability = undefined;
          return undefined;
        },
      );
      this.capability = p;
      void p.then((c) => {
        if (!c?.canOnboard) this.failureInfo.push('User is not onboarded and has no onboarding capability');
      });
    }
    return this.capability;
  }

  private setPromptPending(pending: boolean): void {
    if (pending === this.promptPending) return;
    this.promptPending = pending;
    this.hooks.onPromptPending?.(pending);
  }

  private accept(ctx: AuthContext, userstr: UserStr, user: User, method: PasswordOrKey): void {
    this.result = { userstr, user, method };
    this.hooks.gate?.succeeded(userstr.username);
    this.hooks.onAttempt?.(method, 'success');
    ctx.accept();
  }

  /** Partial success after real progress (onboarding finished): not an attempt. */
  private partial(ctx: AuthContext, methods: Method[]): void {
    ctx.reject(methods, true);
  }

  /** Partial success that only sends an unknown user to keyboard-interactive: counts as an attempt. */
  private steer(ctx: AuthContext): void {
    if (this.count()) ctx.reject(KBD, true);
  }

  private reject(ctx: AuthContext, methods: Method[]): void {
    // `none` is how clients ask for the method list; it is not an attempt (like OpenSSH).
    if (ctx.method === 'none') return ctx.reject(methods);
    this.hooks.onAttempt?.(ctx.method, 'failure');
    // Repeated failures are answered late (backoff per source and user), bounded by the grace time.
    const answer = () => {
      if (!this.closer.signal.aborted && this.count()) ctx.reject(methods);
    };
    const after = (wait: number) => {
      if (wait > 0) {
        this.log.info(
          { delayMs: wait, method: ctx.method },
          'authentication failure answered after a backoff delay',
        );
        setTimeout(answer, wait).unref();
      } else answer();
    };
    const wait = this.hooks.gate?.failed(this.userstr?.username ?? '') ?? 0;
    if (typeof wait === 'number') after(wait);
    else void wait.then(after, () => after(0));
  }

  /** Counts one attempt; false (and the connection ended) when that reached the limit. */
  private count(): boolean {
    this.failures++;
    if (this.failures < this.settings.maxAuthTries) return true;
    // Like sshd's MaxAuthTries: the last failure is answered with a disconnect, not another try.
    this.log.warn({ failures: this.failures, info: this.failureInfo }, 'too many authentication failures');
    this.hooks.disconnect();
    return false;
  }
}

/** Whether an identity call failed because the service is down or did not answer in time. */
function identityDown(e: unknown): boolean {
  const cause = e instanceof Error && e.cause !== undefined ? e.cause : e;
  return (
    isServiceError(cause) && (cause.code === status.UNAVAILABLE || cause.code === status.DEADLINE_EXCEEDED)
  );
}

/** "<type> <base64 blob>" as identity expects it; the type is read from the blob itself. */
export function authorizedKeyLine(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  if (n === 0 || n > 64 || 4 + n > blob.length) return undefined;
  return `${blob.toString('latin1', 4, 4 + n)} ${blob.toString('base64')}`;
}

function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}
