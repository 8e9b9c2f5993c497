// Recording overrides (reference-behaviour §15.1 step 1, §23.k): the NATS KV bucket
// `recording-overrides`, key = workspace name, value JSON `{record, setBy, setAt}` written by the API
// server. Read fresh for every recorded-channel decision with a short deadline; any failure (NATS
// down, bucket missing, KV error, bad JSON) is logged and answers "no override", so policy decides.
import { jetstreamManager } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';
import type { RecordingOverrides } from '../gateway/tap.js';
import { errText, type Logger } from '../ops/log.js';
import type { NatsLink } from './nats.js';
import { isStreamNotFound, openOrCreateBucket, RECORDING_OVERRIDES_BUCKET, streamName } from './nats-kv.js';

export interface RecordingOverride {
  /** Comma-separated obligation tokens (`shell,exec`, `none`, …), parsed by the recording decision. */
  record: string;
  setBy: string;
}

/** The stored value; `record` must be a string (a value without one is treated as bad JSON). */
export function parseOverride(data: Uint8Array): RecordingOverride | Error {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch (e) {
    return new Error(`bad JSON: ${errText(e)}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return new Error('not a JSON object');
  const o = v as Record<string, unknown>;
  if (typeof o.record !== 'string') return new Error('"record" is not a string');
  if (o.setBy !== undefined && typeof o.setBy !== 'string') return new Error('"setBy" is not a string');
  return { record: o.record, setBy: o.setBy ?? '' };
}

export const DEFAULT_OVERRIDE_TIMEOUT_MS = 1000;
/**
 * Deadline of each JetStream request while opening or creating the bucket in the background (nobody
 * waits for it; a read waits at most its own deadline). Creating a file-backed stream on a busy server
 * can take longer than a read may.
 */
export const DEFAULT_OPEN_TIMEOUT_MS = 5000;
/** How often a bucket that could not be opened is tried again (in the background, and from `get`). */
export const DEFAULT_REOPEN_MS = 10_000;

export interface NatsRecordingOverridesOptions {
  /** The shared `nats-client` connection. */
  link: NatsLink;
  log: Logger;
  /** Deadline of one read (and of a read's wait for the bucket to open). */
  timeoutMs?: number;
  /** Deadline of each request while opening or creating the bucket. */
  openTimeoutMs?: number;
  /** A bucket that could not be opened is tried again after this long (while connected). */
  reopenMs?: number;
}

export class NatsRecordingOverrides implements RecordingOverrides {
  private readonly link: NatsLink;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly openTimeoutMs: number;
  private readonly reopenMs: number;
  private retry: NodeJS.Timeout | undefined;
  private kv: KV | undefined;
  private opening: Promise<KV | undefined> | undefined;
  private lastOpenAttempt = 0;
  private checking = false;
  private offUp: (() => void) | undefined;

  constructor(opts: NatsRecordingOverridesOptions) {
    this.link = opts.link;
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_OVERRIDE_TIMEOUT_MS;
    this.openTimeoutMs = opts.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
    this.reopenMs = opts.reopenMs ?? DEFAULT_REOPEN_MS;
  }

  /** Opens (or creates) the bucket now and after every reconnect while it is not open. */
  start(): this {
    this.offUp ??= this.link.onUp(() => {
      if (!this.kv) void this.open();
    });
    if (this.link.connected) void this.open();
    return this;
  }

  stop(): void {
    this.offUp?.();
    this.offUp = undefined;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  get isOpen(): boolean {
    return this.kv !== undefined;
  }

  /**
   * The override for `workspace`, read fresh; undefined when there is none or it cannot be read.
   * `log` should be the channel's logger (it carries `conn` and `chan`).
   */
  async get(workspace: string, log: Logger = this.log): Promise<RecordingOverride | undefined> {
    if (!this.link.connected) {
      log.debug({ workspace }, 'NATS unavailable: recording override not consulted');
      return undefined;
    }
    let kv = this.kv;
    if (!kv && (this.opening || Date.now() - this.lastOpenAttempt >= this.reopenMs)) {
      // Wait for the bucket no longer than for a read; the open itself carries on.
      kv = await withDeadline(this.open(), this.timeoutMs, 'opening the recording overrides bucket').catch(
        () => undefined,
      );
    }
    if (!kv) {
      log.debug({ workspace }, 'recording overrides bucket not open: override not consulted');
      return undefined;
    }
    let entry: KvEntry | null;
    try {
      entry = await withDeadline(kv.get(workspace), this.timeoutMs, 'recording override read');
    } catch (e) {
      this.checkBucket(kv);
      log.warn({ workspace, err: errText(e) }, 'Recording override lookup failed; using the policy');
      return undefined;
    }
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return undefined;
    const parsed = parseOverride(entry.value);
    if (parsed instanceof Error) {
      log.warn({ workspace, err: parsed.message }, 'Invalid recording override; using the policy');
      return undefined;
    }
    log.info({ workspace, record: parsed.record, setBy: parsed.setBy }, 'Applying recording override');
    return parsed;
  }

  /**
   * After a failed read: is the bucket still there? (A read from a deleted bucket just times out.)
   * When it is gone it is forgotten, so a later read opens or creates it again. One check at a time.
   */
  private checkBucket(kv: KV): void {
    const nc = this.link.connection;
    if (this.checking || !nc) return;
    this.checking = true;
    jetstreamManager(nc, { timeout: this.timeoutMs })
      .then((jsm) => jsm.streams.info(streamName(RECORDING_OVERRIDES_BUCKET)))
      .then(
        () => undefined,
        (e: unknown) => {
          if (isStreamNotFound(e) && this.kv === kv) {
            this.kv = undefined;
            this.lastOpenAttempt = 0;
            this.log.warn(
              { bucket: RECORDING_OVERRIDES_BUCKET },
              'recording overrides bucket is gone; reopening',
            );
          }
        },
      )
      .finally(() => {
        this.checking = false;
      });
  }

  /** Tries again later while started and connected (a reconnect also tries, via onUp). */
  private scheduleRetry(): void {
    if (!this.offUp || this.retry) return;
    this.retry = setTimeout(
      () => {
        this.retry = undefined;
        if (this.offUp && !this.kv && this.link.connected) void this.open();
      },
      Math.max(this.reopenMs, 1000),
    );
    this.retry.unref();
  }

  private open(): Promise<KV | undefined> {
    this.opening ??= this.doOpen().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async doOpen(): Promise<KV | undefined> {
    this.lastOpenAttempt = Date.now();
    const nc = this.link.connection;
    if (!nc) return undefined;
    try {
      const b = await withDeadline(
        openOrCreateBucket(nc, RECORDING_OVERRIDES_BUCKET, this.openTimeoutMs),
        this.openTimeoutMs * 3,
        'opening the recording overrides bucket',
      );
      this.kv = b.kv;
      this.log.info(
        { bucket: RECORDING_OVERRIDES_BUCKET, created: b.created, replicas: b.replicas },
        b.created ? 'created the recording overrides bucket' : 'opened the recording overrides bucket',
      );
      return b.kv;
    } catch (e) {
      // The reference's text (fatal there); here overrides are just off until the bucket opens.
      this.log.warn({ retryInMs: this.reopenMs }, `open recording overrides bucket: ${errText(e)}`);
      this.scheduleRetry();
      return undefined;
    }
  }
}

/** Rejects when `p` has not settled after `ms` (the operation itself is left to finish or fail). */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
