// Device flows of the local identity service (onboarding of unknown users, reference-behaviour §8.6):
// user codes, their state, and the public keys not-yet-known users offered over SSH (so the approval
// page can offer one-click approval of the key the person's client actually uses). All bounded.
import { createHash, randomInt } from 'node:crypto';
import type { PublicKey } from './keys.js';

// RFC 8628 §6.1: consonants only (no vowels: no words; no look-alikes), 8 characters ≈ 34 bits.
const CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';

export type FlowState = 'pending' | 'approved' | 'denied';

export interface DeviceFlowRecord {
  username: string;
  provider: string;
  /** `ABCD-EFGH` */
  userCode: string;
  createdAt: number;
  expiresAt: number;
  state: FlowState;
}

export interface DeviceFlowsOptions {
  /** Validity of a code in seconds. */
  expiresInS: number;
  /** Flows kept at most (pending and recently finished). */
  maxFlows?: number;
  now?: () => number;
}

/** A fresh user code: 8 letters as `XXXX-XXXX`. */
export function newUserCode(): string {
  let s = '';
  for (let i = 0; i < 8; i++) s += CODE_ALPHABET.charAt(randomInt(CODE_ALPHABET.length));
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

/** What a person typed, in canonical form (case, spaces and dashes do not matter). */
export function normaliseUserCode(input: string): string {
  const s = input.toUpperCase().replace(/[^A-Z]/g, '');
  return s.length === 8 ? `${s.slice(0, 4)}-${s.slice(4)}` : s;
}

export class DeviceFlows {
  private readonly byCode = new Map<string, DeviceFlowRecord>();
  private readonly byUser = new Map<string, DeviceFlowRecord>();
  private readonly now: () => number;
  private readonly maxFlows: number;

  constructor(private readonly opts: DeviceFlowsOptions) {
    this.now = opts.now ?? Date.now;
    this.maxFlows = opts.maxFlows ?? 1000;
  }

  get expiresInS(): number {
    return this.opts.expiresInS;
  }

  /**
   * Starts a flow for `username`. A new flow replaces the user's previous one: its code stops working,
   * so whoever saw an older code cannot approve it.
   */
  start(username: string, provider: string): DeviceFlowRecord | undefined {
    this.sweep();
    const old = this.byUser.get(username);
    if (old) this.byCode.delete(old.userCode);
    if (this.byCode.size >= this.maxFlows) return undefined;
    let userCode = newUserCode();
    while (this.byCode.has(userCode)) userCode = newUserCode();
    const t = this.now();
    const f: DeviceFlowRecord = {
      username,
      provider,
      userCode,
      createdAt: t,
      expiresAt: t + this.opts.expiresInS * 1000,
      state: 'pending',
    };
    this.byCode.set(userCode, f);
    this.byUser.set(username, f);
    return f;
  }

  /** The flow a typed code names, if any (expired ones included: the page says so). */
  find(code: string): DeviceFlowRecord | undefined {
    return this.byCode.get(normaliseUserCode(code));
  }

  expired(f: DeviceFlowRecord): boolean {
    return this.now() >= f.expiresAt;
  }

  /** The current flow of a user. */
  forUser(username: string): DeviceFlowRecord | undefined {
    return this.byUser.get(username);
  }

  /** Marks a pending, unexpired flow decided; false when it was not in that state. */
  decide(f: DeviceFlowRecord, state: 'approved' | 'denied'): boolean {
    if (f.state !== 'pending' || this.expired(f) || this.byCode.get(f.userCode) !== f) return false;
    f.state = state;
    return true;
  }

  /** Forgets a finished flow (CompleteUserDeviceFlow after approval). */
  remove(f: DeviceFlowRecord): void {
    if (this.byCode.get(f.userCode) === f) this.byCode.delete(f.userCode);
    if (this.byUser.get(f.username) === f) this.byUser.delete(f.username);
  }

  /** Drops flows that expired more than one validity period ago (until then the page can say "expired"). */
  private sweep(): void {
    const t = this.now();
    for (const f of this.byCode.values()) if (t >= f.expiresAt + this.opts.expiresInS * 1000) this.remove(f);
  }
}

/** SHA256 fingerprint as ssh-keygen -l prints it. */
export function fingerprint(key: PublicKey): string {
  return `SHA256:${createHash('sha256').update(key.blob).digest('base64').replace(/=+$/, '')}`;
}

/**
 * Public keys offered for user names that do not exist yet (seen through AuthUserPublicKey), newest
 * last; at most `perUser` per name, `maxUsers` names, each remembered for `ttlMs`.
 */
export class OfferedKeys {
  private readonly keys = new Map<string, Array<{ key: PublicKey; at: number }>>();
  private readonly now: () => number;

  constructor(
    private readonly opts: { perUser?: number; maxUsers?: number; ttlMs?: number; now?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  note(username: string, key: PublicKey): void {
    const t = this.now();
    const list = (this.keys.get(username) ?? []).filter(
      (e) => !(e.key.type === key.type && e.key.blob.equals(key.blob)),
    );
    list.push({ key, at: t });
    while (list.length > (this.opts.perUser ?? 4)) list.shift();
    this.keys.delete(username);
    this.keys.set(username, list);
    for (const name of this.keys.keys()) {
      if (this.keys.size <= (this.opts.maxUsers ?? 1000)) break;
      this.keys.delete(name);
    }
  }

  /** Keys recently offered for `username`, newest first. */
  recent(username: string): PublicKey[] {
    const cutoff = this.now() - (this.opts.ttlMs ?? 30 * 60_000);
    return (this.keys.get(username) ?? [])
      .filter((e) => e.at >= cutoff)
      .reverse()
      .map((e) => e.key);
  }

  forget(username: string): void {
    this.keys.delete(username);
  }
}
