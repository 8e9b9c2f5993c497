// SSH authentication through the identity service (reference-behaviour §8).
//
// Per connection: the user string is parsed once, the user looked up once, identity asked once per
// offered key (ssh2 calls back twice per key: query, then signed), and the signature verified here.
// Identity unreachable or erroring means no methods: authentication fails closed, with a log line.
// Keyboard-interactive onboarding and authz-driven method lists plug into `methodsFor`.
import { createHash } from 'node:crypto';
import ssh2 from 'ssh2';
import type { AuthContext, AuthenticationType, PublicKeyAuthContext } from 'ssh2';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import type { IdentityBackend, User } from '../backends/identity.js';
import { parseUserStr, UserStrError, type UserStr } from './userstr.js';

const { utils } = ssh2;

export interface AuthSettings {
  maxAuthTries: number;
}

/** The outcome the connection keeps once authentication succeeded. */
export interface AuthenticatedUser {
  userstr: UserStr;
  user: User;
  method: 'publickey' | 'password';
}

type Lookup = { kind: 'found'; user: User } | { kind: 'unknown'; why: string };

export class Authenticator {
  private userstr: UserStr | undefined;
  private lookup: Promise<Lookup> | undefined;
  private readonly keyVerdicts = new Map<string, Promise<boolean>>();
  private failures = 0;
  /** Reasons collected for the operator log (the reference's "failure info"). */
  readonly failureInfo: string[] = [];
  result: AuthenticatedUser | undefined;

  constructor(
    private readonly identity: IdentityBackend,
    private readonly settings: AuthSettings,
    private readonly log: Logger,
    /** Called when the attempt limit is reached; the connection is then ended. */
    private readonly onTooManyFailures: () => void,
  ) {}

  handle(ctx: AuthContext): void {
    this.decide(ctx).catch((e: unknown) => {
      // Anything unexpected denies: fail closed.
      this.log.error({ err: errText(e), method: ctx.method }, 'authentication error');
      this.reject(ctx, []);
    });
  }

  private async decide(ctx: AuthContext): Promise<void> {
    const userstr = this.parse(ctx.username);
    if (!userstr) return this.reject(ctx, []);
    const found = await this.findUser(userstr);
    const methods = this.methodsFor(found);
    if (found.kind !== 'found') return this.reject(ctx, methods);

    switch (ctx.method) {
      case 'none':
        return ctx.reject(methods);
      case 'publickey':
        return this.publicKey(ctx, userstr, found.user, methods);
      case 'password': {
        if (!methods.includes('password')) {
          this.failureInfo.push('Password authentication not permitted by policy');
          return this.reject(ctx, methods);
        }
        let ok = false;
        try {
          ok = await this.identity.authPassword(userstr.username, ctx.password);
        } catch (e) {
          this.log.warn({ err: errText(e) }, 'password check failed: identity service error');
        }
        if (!ok) {
          this.failureInfo.push('Password authentication failed');
          return this.reject(ctx, methods);
        }
        return this.accept(ctx, userstr, found.user, 'password');
      }
      default:
        // keyboard-interactive is for onboarding only (a later issue); hostbased is not offered.
        return this.reject(ctx, methods);
    }
  }

  private async publicKey(
    ctx: PublicKeyAuthContext,
    userstr: UserStr,
    user: User,
    methods: AuthenticationType[],
  ) {
    if (!methods.includes('publickey')) {
      this.failureInfo.push('Public key authentication not permitted by policy');
      return this.reject(ctx, methods);
    }
    const line = authorizedKeyLine(ctx.key.data);
    if (!line) return this.reject(ctx, methods);
    let verdict = this.keyVerdicts.get(line);
    if (!verdict) {
      verdict = this.identity.authPublicKey(userstr.username, line).catch((e: unknown) => {
        this.log.warn({ err: errText(e) }, 'public key check failed: identity service error');
        return false;
      });
      this.keyVerdicts.set(line, verdict);
    }
    const fingerprint = keyFingerprint(ctx.key.data);
    if (!(await verdict)) {
      this.failureInfo.push('Public key authentication failed');
      this.log.info({ user: userstr.username, key: fingerprint }, 'public key not accepted');
      return this.reject(ctx, methods);
    }
    // Query phase (no signature): tell the client this key would do (PK_OK).
    if (!ctx.signature || !ctx.blob) return ctx.accept();
    const parsed = utils.parseKey(ctx.key.data);
    if (parsed instanceof Error || !parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) {
      this.failureInfo.push('Public key signature invalid');
      return this.reject(ctx, methods);
    }
    this.log.info({ user: userstr.username, key: fingerprint }, 'public key accepted');
    return this.accept(ctx, userstr, user, 'publickey');
  }

  private parse(login: string): UserStr | undefined {
    if (this.userstr) return this.userstr;
    try {
      this.userstr = parseUserStr(login);
      return this.userstr;
    } catch (e) {
      const why = e instanceof UserStrError ? e.message : errText(e);
      this.failureInfo.push(`Invalid user string: ${why}`);
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
        return { kind: 'unknown', why: 'not found' };
      }
      // Fail closed, and say why to the operator.
      this.failureInfo.push(`User lookup failed: ${r.error}`);
      this.log.error(
        { user: userstr.username, err: r.error },
        'user lookup failed: identity service unavailable',
      );
      return { kind: 'unknown', why: r.error };
    });
    // A failed lookup is not cached, so a later attempt on the same connection can succeed.
    void this.lookup.then((l) => {
      if (l.kind === 'unknown' && l.why !== 'not found') this.lookup = undefined;
    });
    return this.lookup;
  }

  /** Methods advertised for this user without authz (reference-behaviour §8.3). */
  private methodsFor(found: Lookup): AuthenticationType[] {
    return found.kind === 'found' ? ['publickey', 'password'] : [];
  }

  private accept(ctx: AuthContext, userstr: UserStr, user: User, method: 'publickey' | 'password'): void {
    this.result = { userstr, user, method };
    ctx.accept();
  }

  private reject(ctx: AuthContext, methods: AuthenticationType[]): void {
    // `none` is how clients ask for the method list; it is not an attempt (like OpenSSH).
    if (ctx.method !== 'none') this.failures++;
    if (this.failures >= this.settings.maxAuthTries) {
      // Like sshd's MaxAuthTries: the last failure is answered with a disconnect, not another try.
      this.log.warn({ failures: this.failures, info: this.failureInfo }, 'too many authentication failures');
      this.onTooManyFailures();
      return;
    }
    ctx.reject(methods);
  }
}

/** "<type> <base64 blob>" as identity expects it; the type is read from the blob itself. */
export function authorizedKeyLine(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  if (n === 0 || n > 64 || 4 + n > blob.length) return undefined;
  return `${blob.toString('latin1', 4, 4 + n)} ${blob.toString('base64')}`;
}

function keyFingerprint(blob: Buffer): string {
  return `SHA256:${ssh2Hash(blob)}`;
}

function ssh2Hash(blob: Buffer): string {
  return createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}
