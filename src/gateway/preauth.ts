// Pre-authentication limits and authentication-failure backoff (our §23.l). The model is OpenSSH:
// MaxStartups (a cap on unauthenticated connections) and PerSourcePenalties (sources that keep failing
// are slowed, then refused for a while).
//
// - admit(ip) runs on accept, before any key-exchange CPU is spent: global cap, per-source cap, and
//   refusal of penalised sources. It hands out a ticket that the connection keeps until it is
//   authenticated or closed.
// - ticket.failed(user) counts one authentication failure against the source and the user and returns
//   how long to wait before answering it; past a threshold the source is refused for a while.
// - ticket.succeeded(user) forgives the failures this connection made *for that user* (a client with
//   several keys in its agent is rejected for each wrong key before the right one), then frees the slot.
//
// Users are slowed but never refused: refusing a user would let anyone lock a victim out by failing
// on purpose. Sources are refused. IPv6 sources are grouped by /64 (what one subscriber usually gets).
// All decisions are O(1); failure counters live in capped LRU maps, so memory is bounded whatever the
// number of sources or user names an attacker invents.

export type PreauthRejectReason = 'max-startups' | 'max-startups-per-source' | 'penalty';

/** What a source refused after repeated authentication failures is told (before key exchange). */
export const PENALTY_MESSAGE = 'too many authentication failures from your address; try again later';

/** The refusal message a client gets for `reason`. */
export function refusalMessage(reason: PreauthRejectReason): string {
  return reason === 'penalty' ? PENALTY_MESSAGE : 'too many connections';
}

export type Admission =
  | { readonly ok: true; readonly ticket: PreauthTicket }
  | { readonly ok: false; readonly reason: PreauthRejectReason; readonly message: string };

export interface BackoffOptions {
  /** Failures a key may make before answers are delayed. */
  freeFailures: number;
  /** Delay of the first delayed failure; doubles with each further one. */
  baseDelayMs: number;
  /** Ceiling of the per-source delay. */
  maxDelayMs: number;
  /** Ceiling of the per-user delay (kept small: an attacker can raise it for a victim). */
  maxUserDelayMs: number;
  /** Failures after which a source is refused. */
  refuseAfter: number;
  /** How long a source is refused. */
  refuseMs: number;
  /** A key with no failure for this long starts again from zero. */
  forgetMs: number;
}

export interface PreauthOptions {
  /** Cap on unauthenticated connections (config `server.maxStartups`). */
  maxStartups: number;
  /** Cap on unauthenticated connections per source (config `server.maxStartupsPerSource`). */
  maxStartupsPerSource: number;
  backoff?: Partial<BackoffOptions>;
  /** Entries kept per counter map (sources, users); the least recently used is dropped beyond it. */
  maxTracked?: number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  freeFailures: 10,
  baseDelayMs: 250,
  maxDelayMs: 8_000,
  maxUserDelayMs: 2_000,
  refuseAfter: 30,
  refuseMs: 10 * 60_000,
  forgetMs: 30 * 60_000,
};

export const DEFAULT_MAX_TRACKED = 65_536;

export interface PreauthTicket {
  /** The source key counters use (IPv4, or the IPv6 /64). */
  readonly source: string;
  /** True while the source is refused: reject authentication without checking credentials. */
  refused(): boolean;
  /** Counts a failure for `user`; returns milliseconds to wait before sending the failure. */
  failed(user: string): number;
  /** Authenticated as `user`: forgives this connection's failures for that user and frees the slot. */
  succeeded(user: string): void;
  /** Frees the slot (authenticated or closed). Safe to call more than once. */
  release(): void;
  /**
   * Attributes a ticket from admitPending() to the client address of the PROXY header: the penalty
   * and the per-source cap are checked for it now, and on refusal the slot is freed. Only the first
   * call decides; a ticket admitted by address answers ok.
   */
  attribute(ip: string): { ok: true } | { ok: false; reason: PreauthRejectReason; message: string };
}

/**
 * Where the accept path asks: the in-process PreauthLimiter, or (in a forked child) the parent's
 * limiter over the child's link, whose answers arrive asynchronously.
 */
export interface PreauthGate {
  admit(ip: string): GateAdmission | Promise<GateAdmission>;
}

export type GateAdmission =
  | { readonly ok: true; readonly ticket: GateTicket }
  | { readonly ok: false; readonly reason: PreauthRejectReason; readonly message: string };

/** A PreauthTicket whose questions may be answered later (by the forking parent). */
export interface GateTicket {
  readonly source: string;
  refused(): boolean | Promise<boolean>;
  failed(user: string): number | Promise<number>;
  succeeded(user: string): void;
  release(): void;
}

interface Counter {
  failures: number;
  last: number;
  refusedUntil: number;
}

/** A Map kept in least-recently-used order with a size cap; every operation is O(1). */
class LruMap<V> {
  private readonly m = new Map<string, V>();
  constructor(private readonly cap: number) {}

  get size(): number {
    return this.m.size;
  }

  get(k: string): V | undefined {
    const v = this.m.get(k);
    if (v !== undefined) {
      this.m.delete(k);
      this.m.set(k, v);
    }
    return v;
  }

  /** Looks without refreshing (admission checks must not keep an entry alive). */
  peek(k: string): V | undefined {
    return this.m.get(k);
  }

  set(k: string, v: V): void {
    this.m.delete(k);
    this.m.set(k, v);
    if (this.m.size > this.cap) {
      const oldest = this.m.keys().next();
      if (!oldest.done) this.m.delete(oldest.value);
    }
  }

  delete(k: string): void {
    this.m.delete(k);
  }
}

/** The key a source is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function sourceKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1]) return mapped[1];
  if (!ip.includes(':')) return ip;
  // Expand "::" just enough to take the first four groups.
  const [head = '', tail] = ip.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

export class PreauthLimiter {
  private readonly backoff: BackoffOptions;
  private readonly now: () => number;
  private readonly sources: LruMap<Counter>;
  private readonly users: LruMap<Counter>;
  /** Unauthenticated connections per source; entries exist only while such connections do. */
  private readonly open = new Map<string, number>();
  private unauthenticated = 0;

  constructor(private readonly opts: PreauthOptions) {
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.now = opts.now ?? Date.now;
    const cap = opts.maxTracked ?? DEFAULT_MAX_TRACKED;
    this.sources = new LruMap(cap);
    this.users = new LruMap(cap);
  }

  /** Decides on a new connection from `ip` (the socket's or the PROXY header's address). */
  admit(ip: string): Admission {
    const source = sourceKey(ip);
    const no = this.sourceCheck(source) ?? this.globalCheck();
    if (no) return no;
    this.open.set(source, (this.open.get(source) ?? 0) + 1);
    this.unauthenticated++;
    return { ok: true, ticket: this.ticket(source) };
  }

  /**
   * A socket from a trusted PROXY relay (forking parent): only the global cap is checked now; the
   * source is known once the child has read the header (PendingTicket.attribute).
   */
  admitPending(): Admission {
    const no = this.globalCheck();
    if (no) return no;
    this.unauthenticated++;
    return { ok: true, ticket: this.ticket(undefined) };
  }

  private globalCheck(): Extract<Admission, { ok: false }> | undefined {
    if (this.unauthenticated < this.opts.maxStartups) return undefined;
    return {
      ok: false,
      reason: 'max-startups',
      message: `${this.unauthenticated} unauthenticated connections (maxStartups)`,
    };
  }

  private sourceCheck(source: string): Extract<Admission, { ok: false }> | undefined {
    if (this.sourceRefused(source)) {
      return {
        ok: false,
        reason: 'penalty',
        message: `source ${source} is refused after repeated authentication failures`,
      };
    }
    const n = this.open.get(source) ?? 0;
    if (n >= this.opts.maxStartupsPerSource) {
      return {
        ok: false,
        reason: 'max-startups-per-source',
        message: `${n} unauthenticated connections from ${source} (maxStartupsPerSource)`,
      };
    }
    return undefined;
  }

  /** True while the source of `ip` is refused. */
  refused(ip: string): boolean {
    return this.sourceRefused(sourceKey(ip));
  }

  /** Counts a failure (without a ticket); returns the delay before answering it. */
  failed(ip: string, user: string): number {
    return this.recordFailure(sourceKey(ip), user);
  }

  stats(): { unauthenticated: number; trackedSources: number; trackedUsers: number } {
    return {
      unauthenticated: this.unauthenticated,
      trackedSources: this.sources.size,
      trackedUsers: this.users.size,
    };
  }

  /** A ticket for `source`, or a pending one (global slot only) when `source` is undefined. */
  private ticket(source: string | undefined): PreauthTicket {
    let held = true;
    // Set once: the source the slot is counted under (a pending ticket has none until attributed).
    let src = source;
    let attributed: ReturnType<PreauthTicket['attribute']> | undefined = source ? { ok: true } : undefined;
    const mine = new Map<string, number>(); // failures per user made on this connection (≤ MaxAuthTries entries)
    const release = (): void => {
      if (!held) return;
      held = false;
      this.unauthenticated--;
      if (src === undefined || attributed?.ok !== true) return;
      const n = (this.open.get(src) ?? 1) - 1;
      if (n <= 0) this.open.delete(src);
      else this.open.set(src, n);
    };
    const key = (): string => src ?? '';
    return {
      get source() {
        return key();
      },
      refused: () => src !== undefined && this.sourceRefused(src),
      failed: (user) => {
        mine.set(user, (mine.get(user) ?? 0) + 1);
        return this.recordFailure(key(), user);
      },
      succeeded: (user) => {
        const n = mine.get(user) ?? 0;
        if (n > 0) {
          this.forgive(this.sources.peek(key()), n);
          this.forgive(this.users.peek(user), n);
          mine.delete(user);
        }
        release();
      },
      release,
      attribute: (ip) => {
        if (attributed) return attributed;
        src = sourceKey(ip);
        // A ticket released before its header arrived holds nothing to attribute.
        const no = held ? this.sourceCheck(src) : undefined;
        if (no) {
          attributed = no;
          release();
          return no;
        }
        attributed = { ok: true };
        if (held) this.open.set(src, (this.open.get(src) ?? 0) + 1);
        return attributed;
      },
    };
  }

  private fresh(c: Counter | undefined, now: number): Counter | undefined {
    if (!c) return undefined;
    if (c.refusedUntil <= now && now - c.last >= this.backoff.forgetMs) return undefined;
    return c;
  }

  private sourceRefused(source: string): boolean {
    const c = this.sources.peek(source);
    return c !== undefined && c.refusedUntil > this.now();
  }

  private bump(map: LruMap<Counter>, key: string, now: number): Counter {
    const c = this.fresh(map.get(key), now) ?? { failures: 0, last: now, refusedUntil: 0 };
    if (c.refusedUntil !== 0 && c.refusedUntil <= now) {
      // The refusal is over: start again on a short leash (delayed at once, refused again sooner).
      c.failures = this.backoff.freeFailures;
      c.refusedUntil = 0;
    }
    c.failures++;
    c.last = now;
    map.set(key, c);
    return c;
  }

  private delayFor(failures: number, ceiling: number): number {
    const over = failures - this.backoff.freeFailures;
    if (over <= 0) return 0;
    // 2^over overflows to Infinity long before it matters; min() keeps it at the ceiling.
    return Math.min(ceiling, this.backoff.baseDelayMs * 2 ** (over - 1));
  }

  private recordFailure(source: string, user: string): number {
    const now = this.now();
    const s = this.bump(this.sources, source, now);
    const u = this.bump(this.users, user, now);
    if (s.failures >= this.backoff.refuseAfter && s.refusedUntil <= now) {
      s.refusedUntil = now + this.backoff.refuseMs;
    }
    return Math.max(
      this.delayFor(s.failures, this.backoff.maxDelayMs),
      this.delayFor(u.failures, this.backoff.maxUserDelayMs),
    );
  }

  private forgive(c: Counter | undefined, n: number): void {
    if (!c) return;
    c.failures = Math.max(0, c.failures - n);
  }
}

/** The limiter's options from the `server` config section (seconds → milliseconds). */
export function preauthOptionsFromConfig(server: {
  maxStartups: number;
  maxStartupsPerSource: number;
  authBackoff: {
    freeFailures: number;
    baseDelay: number;
    maxDelay: number;
    maxUserDelay: number;
    refuseAfter: number;
    refuseFor: number;
    forgetAfter: number;
  };
}): PreauthOptions {
  const b = server.authBackoff;
  return {
    maxStartups: server.maxStartups,
    maxStartupsPerSource: server.maxStartupsPerSource,
    backoff: {
      freeFailures: b.freeFailures,
      baseDelayMs: b.baseDelay * 1000,
      maxDelayMs: b.maxDelay * 1000,
      maxUserDelayMs: b.maxUserDelay * 1000,
      refuseAfter: b.refuseAfter,
      refuseMs: b.refuseFor * 1000,
      forgetMs: b.forgetAfter * 1000,
    },
  };
}
