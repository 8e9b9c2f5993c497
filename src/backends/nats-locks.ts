// The locked-users watcher (reference-behaviour §17.3 with §23.k). Each process watches the KV bucket
// `locked-users` through its own EPHEMERAL pull consumer (the server removes it when the process is
// gone; the reference leaves one durable consumer per process behind forever), with the reference's
// settings: deliver-new, explicit ack, ack wait 30 s, max ack pending 1024, fetch batch 64, fetch
// wait 2 s. `locked: true` for key = username calls `onLocked(username)`; unlocks and deletes are
// ignored; bad JSON is NAKed. When anything fails, the warning of the reference is logged and the
// watcher starts over every 10 s; a re-created consumer continues at the stream sequence after the
// last message seen, so a lock written during an outage is still delivered.
//
// Why a plain ephemeral pull consumer and not an ordered consumer / KV watch: ordered consumers have
// no acks (bad JSON could not be NAKed) and their settings are fixed by the client; a plain consumer
// takes every setting of the reference as is, and `inactive_threshold` makes it ephemeral.
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { localProxyId } from '../common/ids.js';
import type { LiveConnectionInfo } from '../gateway/registry.js';
import { errText, type Logger } from '../ops/log.js';
import { pause, type NatsLink } from './nats.js';
import { LOCKED_USERS_BUCKET, streamName } from './nats-kv.js';

/** The reference's fixed consumer settings (reference-behaviour §19). */
export const LOCK_CONSUMER = {
  ackWaitMs: 30_000,
  maxAckPending: 1024,
  fetchBatch: 64,
  fetchExpiresMs: 2000,
} as const;
export const DEFAULT_LOCK_RETRY_MS = 10_000;
/** How long the server keeps a consumer nobody pulls from (the process died or lost NATS). */
export const DEFAULT_INACTIVE_THRESHOLD_MS = 60_000;
/** Ours: a NAKed (bad) entry is redelivered after this delay, at most DEFAULT_MAX_DELIVER times in all. */
export const DEFAULT_NAK_DELAY_MS = 10_000;
export const DEFAULT_MAX_DELIVER = 5;
/** Deadline of each JetStream API request (stream info, consumer create/delete). */
export const DEFAULT_LOCK_REQUEST_TIMEOUT_MS = 5000;

const SUBJECT_PREFIX = `$KV.${LOCKED_USERS_BUCKET}.`;

/** The value written by the API server: `{"locked": bool, "sessionsInvalidBefore": int}`. */
export interface LockValue {
  locked: boolean;
  sessionsInvalidBefore?: number;
}

/** Parses a non-empty value as Go's json.Unmarshal into the reference's struct would (null = zero value). */
export function parseLockValue(data: Uint8Array): LockValue | Error {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch (e) {
    return new Error(`bad JSON: ${errText(e)}`);
  }
  if (v === null) return { locked: false };
  if (typeof v !== 'object' || Array.isArray(v)) return new Error('not a JSON object');
  const o = v as Record<string, unknown>;
  if (o.locked !== undefined && o.locked !== null && typeof o.locked !== 'boolean') {
    return new Error('"locked" is not a boolean');
  }
  const sib = o.sessionsInvalidBefore;
  if (sib !== undefined && sib !== null && !(typeof sib === 'number' && Number.isInteger(sib))) {
    return new Error('"sessionsInvalidBefore" is not an integer');
  }
  return { locked: o.locked === true, ...(typeof sib === 'number' ? { sessionsInvalidBefore: sib } : {}) };
}

export interface LockedUsersWatcherOptions {
  /** The shared `nats-client` connection. */
  link: NatsLink;
  /** Called for `locked: true` (synchronously, from the message handler; must not block). */
  onLocked: (username: string) => void;
  log: Logger;
  proxyId?: string;
  retryMs?: number;
  inactiveThresholdMs?: number;
  nakDelayMs?: number;
  maxDeliver?: number;
  requestTimeoutMs?: number;
}

/** The reference's warning (`…retrying in 10s: …` with the default interval). */
export function unavailableText(retryMs: number, e: unknown): string {
  const secs = Math.round(retryMs / 100) / 10;
  return `locked-users subscription unavailable, retrying in ${secs}s: ${errText(e)}`;
}

function nanos(ms: number): number {
  return ms * 1_000_000;
}

export class LockedUsersWatcher {
  private readonly link: NatsLink;
  private readonly onLocked: (username: string) => void;
  private readonly log: Logger;
  private readonly baseName: string;
  private readonly retryMs: number;
  private readonly inactiveThresholdMs: number;
  private readonly nakDelayMs: number;
  private readonly maxDeliver: number;
  private readonly requestTimeoutMs: number;
  private readonly abort = new AbortController();
  private stopped = false;
  private loop: Promise<void> | undefined;
  private generation = 0;
  /** Stream sequence of the last message handled (or the stream's end when first subscribed). */
  private lastSeq: number | undefined;
  private iter: ConsumerMessages | undefined;
  private active: { jsm: JetStreamManager; name: string } | undefined;
  private counts = { locks: 0, ignored: 0, naks: 0 };

  constructor(opts: LockedUsersWatcherOptions) {
    this.link = opts.link;
    this.onLocked = opts.onLocked;
    this.log = opts.log;
    // Unique per process and per start; the random part keeps two processes with the same pid
    // (containers) apart.
    this.baseName = `ssh-proxy-${opts.proxyId ?? localProxyId()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.retryMs = opts.retryMs ?? DEFAULT_LOCK_RETRY_MS;
    this.inactiveThresholdMs = opts.inactiveThresholdMs ?? DEFAULT_INACTIVE_THRESHOLD_MS;
    this.nakDelayMs = opts.nakDelayMs ?? DEFAULT_NAK_DELAY_MS;
    this.maxDeliver = opts.maxDeliver ?? DEFAULT_MAX_DELIVER;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_LOCK_REQUEST_TIMEOUT_MS;
  }

  start(): this {
    this.loop ??= this.run().catch((e: unknown) =>
      this.log.error({ err: errText(e) }, 'locked-users watcher stopped unexpectedly'),
    );
    return this;
  }

  /** The consumer in use now (undefined while unsubscribed). */
  get consumerName(): string | undefined {
    return this.active?.name;
  }

  get stats(): { locks: number; ignored: number; naks: number } {
    return { ...this.counts };
  }

  /** Stops watching and deletes this process's consumer (bounded by the request timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.iter?.stop();
    await this.loop;
  }

  private warnUnavailable(e: unknown): void {
    this.log.warn(unavailableText(this.retryMs, e));
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const nc = await this.link.whenConnected(this.retryMs, this.abort.signal);
      if (this.stopped) break;
      if (!nc) {
        this.warnUnavailable(new Error('NATS is not connected'));
        continue;
      }
      try {
        await this.serve(nc);
      } catch (e) {
        if (this.stopped) break;
        this.warnUnavailable(e);
        await pause(this.retryMs, this.abort.signal);
      }
    }
  }

  /** Creates this process's consumer and pulls until stopped; throws on any failure. */
  private async serve(nc: NatsConnection): Promise<void> {
    const js = jetstream(nc, { timeout: this.requestTimeoutMs });
    const jsm = await js.jetstreamManager();
    const stream = streamName(LOCKED_USERS_BUCKET);
    const info = await jsm.streams.info(stream);
    const resume = this.lastSeq !== undefined && info.state.last_seq >= this.lastSeq;
    this.generation += 1;
    const name = `${this.baseName}-${this.generation}`;
    const config: Partial<ConsumerConfig> = {
      name,
      filter_subject: `${SUBJECT_PREFIX}>`,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(LOCK_CONSUMER.ackWaitMs),
      max_ack_pending: LOCK_CONSUMER.maxAckPending,
      max_deliver: this.maxDeliver,
      inactive_threshold: nanos(this.inactiveThresholdMs),
      ...(resume
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: (this.lastSeq ?? 0) + 1 }
        : { deliver_policy: DeliverPolicy.New }),
    };
    const ci = await jsm.consumers.add(stream, config);
    if (!resume) this.lastSeq = ci.delivered.stream_seq;
    this.active = { jsm, name };
    this.log.info(
      { consumer: name, resumeAt: resume ? (this.lastSeq ?? 0) + 1 : undefined },
      'watching locked-users',
    );
    const offDown = this.link.onDown(() => this.iter?.stop(new Error('NATS disconnected')));
    try {
      const consumer = js.consumers.getConsumerFromInfo(ci);
      while (!this.stopped) {
        const it = await consumer.fetch({
          max_messages: LOCK_CONSUMER.fetchBatch,
          expires: LOCK_CONSUMER.fetchExpiresMs,
        });
        this.iter = it;
        // nats.js pauses its heartbeat check while disconnected; never wait on a pull for long.
        const stall = setTimeout(
          () => it.stop(new Error('pull request stalled')),
          LOCK_CONSUMER.fetchExpiresMs * 5,
        );
        try {
          for await (const m of it) this.handle(m);
        } finally {
          clearTimeout(stall);
          this.iter = undefined;
        }
        if (!this.link.connected && !this.stopped) throw new Error('NATS disconnected');
      }
    } finally {
      offDown();
      this.active = undefined;
      const del = jsm.consumers.delete(stream, name).catch(() => false);
      // On stop wait (bounded by the request timeout); otherwise the server drops it when inactive.
      if (this.stopped) await del;
    }
  }

  private handle(m: JsMsg): void {
    const username = m.subject.startsWith(SUBJECT_PREFIX)
      ? m.subject.slice(SUBJECT_PREFIX.length)
      : m.subject;
    const op = m.headers?.get('KV-Operation') ?? '';
    if (op === 'DEL' || op === 'PURGE' || m.data.length === 0) {
      this.done(m);
      this.counts.ignored += 1;
      return;
    }
    const v = parseLockValue(m.data);
    if (v instanceof Error) {
      this.counts.naks += 1;
      this.log.warn(
        { user: username, err: v.message, delivery: m.info.deliveryCount },
        'invalid locked-users entry; NAKed',
      );
      m.nak(this.nakDelayMs);
      return;
    }
    if (v.locked) {
      this.counts.locks += 1;
      try {
        this.onLocked(username);
      } catch (e) {
        this.log.error({ user: username, err: errText(e) }, 'locked-user handler failed');
      }
    } else {
      this.counts.ignored += 1;
    }
    this.done(m);
  }

  private done(m: JsMsg): void {
    m.ack();
    this.lastSeq = Math.max(this.lastSeq ?? 0, m.info.streamSequence);
  }
}

/** The SSH disconnect message of a lock-driven close (the catalogue's locked-account text). */
export const LOCKED_USER_MESSAGE = 'User account is locked. Please contact the system administrator.';

/**
 * The gateway's `onLocked`: ends every live connection of `username` in this process (also those
 * still authenticating as that user), logging the reference's line with each connection's id (normal
 * clean-up, EndSession included, follows).
 */
export function closeLockedUserConnections(
  registry: { byUser(username: string): Array<Pick<LiveConnectionInfo, 'id' | 'end'>> },
  username: string,
  log: Logger,
): number {
  let n = 0;
  for (const c of registry.byUser(username)) {
    log.info({ conn: c.id, user: username }, `Closing SSH connection for locked user ${username}`);
    try {
      c.end(LOCKED_USER_MESSAGE);
      n += 1;
    } catch (e) {
      log.error({ conn: c.id, err: errText(e) }, 'failed to close the connection of a locked user');
    }
  }
  return n;
}
