// One keyboard-interactive onboarding (OAuth device flow) of one connection, watched in the background
// (reference-behaviour §8.6, our §23.g): every few seconds FindUser, and CompleteUserDeviceFlow, so the
// outcome is known the moment the user presses Enter. The watch ends at the first of: the user exists
// (then CompleteUserDeviceFlow is called once more; its error is only logged), the identity reports a
// denial, or the deadline = min(onboarding timeout, the code's expires_in) passes.
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import type { IdentityBackend, OnboardUserDeviceFlow, User } from '../backends/identity.js';

export type FlowOutcome =
  | { kind: 'pending' }
  | { kind: 'done'; user: User }
  | { kind: 'denied'; why: string }
  | { kind: 'expired'; why: string }
  | { kind: 'timeout'; why: string };

export interface FlowWatchOptions {
  /** Our onboarding timeout in ms (config server.onboardingTimeout). */
  timeoutMs: number;
  /** Interval between background polls. */
  pollMs: number;
  /** Deadline of one identity call. */
  callTimeoutMs?: number;
  now?: () => number;
}

/** The reference's prompt (§8.6), each line ending in "\n". */
export function onboardingPrompt(f: {
  username: string;
  provider: string;
  verificationUrl: string;
  userCode: string;
  validForS: number;
}): string {
  return (
    `Onboarding user ${f.username} via ${f.provider}.\n` +
    `To continue, visit: ${f.verificationUrl}\n` +
    `and enter the code: ${f.userCode}\n` +
    `(Valid for ${f.validForS} seconds).\n` +
    `\n` +
    `After onboarding, you will authenticate using your SSH key only.\n` +
    `Press <Enter> to continue or <Ctrl+C> to cancel.\n`
  );
}

export class DeviceFlowWatch {
  outcome: FlowOutcome = { kind: 'pending' };
  /** When the code stops being valid at the identity service (ms). */
  readonly codeExpiresAt: number;
  /** When this watch gives up (ms): never after the code's expiry. */
  readonly deadline: number;
  private readonly now: () => number;
  private readonly stopper = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private lastPoll = 0;
  private readonly ended: Array<(o: FlowOutcome) => void> = [];

  constructor(
    private readonly identity: Pick<IdentityBackend, 'findUser' | 'completeDeviceFlow'>,
    readonly flow: OnboardUserDeviceFlow,
    /** The provider the device flow runs with. */
    readonly provider: string,
    /** The user being onboarded (as looked up). */
    readonly username: string,
    private readonly opts: FlowWatchOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? Date.now;
    const start = this.now();
    this.codeExpiresAt = start + flow.expiresIn * 1000;
    this.deadline = Math.min(this.codeExpiresAt, start + opts.timeoutMs);
    this.deadlineTimer = setTimeout(() => this.expire(), this.deadline - start);
    this.deadlineTimer.unref();
    this.schedule();
  }

  /** Seconds the prompt may honestly promise: the code's validity, bounded by our own deadline. */
  validForS(): number {
    return Math.max(0, Math.ceil((this.deadline - this.now()) / 1000));
  }

  /** Called once when the outcome leaves `pending`. */
  onEnd(fn: (o: FlowOutcome) => void): void {
    if (this.outcome.kind !== 'pending') fn(this.outcome);
    else this.ended.push(fn);
  }

  /**
   * A fresh answer for a user who pressed Enter: waits for a poll in flight (it may have started before
   * the approval), then polls again, but never sooner than `minGapMs` after the previous poll, so a
   * client answering in a loop cannot hammer the identity service.
   */
  async refresh(minGapMs = 1000): Promise<FlowOutcome> {
    try {
      if (this.polling) await this.polling;
      if (this.outcome.kind !== 'pending') return this.outcome;
      const wait = this.lastPoll + minGapMs - this.now();
      if (wait > 0) await delay(wait, undefined, { signal: this.stopper.signal });
      await this.poll();
    } catch {
      // Stopped (connection closed or outcome reached): the outcome stands.
    }
    return this.outcome;
  }

  stop(): void {
    this.stopper.abort();
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
  }

  private schedule(): void {
    if (this.outcome.kind !== 'pending' || this.stopper.signal.aborted) return;
    this.timer = setTimeout(() => void this.poll().then(() => this.schedule()), this.opts.pollMs);
    this.timer.unref();
  }

  private poll(): Promise<void> {
    this.polling ??= this.pollOnce()
      .catch((e: unknown) => this.log.warn({ err: errText(e) }, 'onboarding poll failed'))
      .finally(() => {
        this.polling = undefined;
        this.lastPoll = this.now();
      });
    return this.polling;
  }

  private callOpts() {
    const left = Math.max(1, this.deadline - this.now());
    return { timeoutMs: Math.min(this.opts.callTimeoutMs ?? 10_000, left), signal: this.stopper.signal };
  }

  private async pollOnce(): Promise<void> {
    if (this.outcome.kind !== 'pending') return;
    if (await this.userAppeared()) return;
    const c = await this.identity.completeDeviceFlow(this.provider, this.username, this.callOpts());
    if (this.outcome.kind !== 'pending') return;
    if (c.kind === 'denied') return this.end({ kind: 'denied', why: c.error });
    // The identity finished the flow: the user should exist now.
    if (c.kind === 'done') await this.userAppeared();
  }

  /** FindUser; when found, CompleteUserDeviceFlow (errors only logged) and the watch is done. */
  private async userAppeared(): Promise<boolean> {
    const r = await this.identity.findUser(this.username, this.callOpts());
    if (this.outcome.kind !== 'pending') return true;
    if (r.kind === 'error') {
      this.log.info({ err: r.error }, 'onboarding poll: user lookup failed; retrying');
      return false;
    }
    if (r.kind !== 'found') return false;
    const c = await this.identity.completeDeviceFlow(this.provider, this.username, this.callOpts());
    if (c.kind !== 'done') this.log.info({ err: c.error }, 'CompleteUserDeviceFlow failed (ignored)');
    if (this.outcome.kind === 'pending') this.end({ kind: 'done', user: r.user });
    return true;
  }

  private expire(): void {
    if (this.outcome.kind !== 'pending') return;
    this.end(
      this.deadline >= this.codeExpiresAt
        ? { kind: 'expired', why: `the code expired after ${this.flow.expiresIn} s` }
        : { kind: 'timeout', why: `no approval within ${Math.round(this.opts.timeoutMs / 1000)} s` },
    );
  }

  private end(o: Exclude<FlowOutcome, { kind: 'pending' }>): void {
    this.outcome = o;
    this.stop();
    for (const fn of this.ended.splice(0)) fn(o);
  }
}
