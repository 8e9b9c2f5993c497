// NATS connections (reference-behaviour §17.1). A `NatsLink` is one named client connection that
// connects in the background and keeps reconnecting: a NATS outage never blocks or fails a login,
// because nothing in the login path waits for it (callers look at `connection`, which is undefined
// while disconnected, or wait with their own short deadline via `whenConnected`).
import { setTimeout as sleepMs } from 'node:timers/promises';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/schema.js';
import { errText, type Logger } from '../ops/log.js';

export type NatsSettings = Config['nats'];
export type NatsAuthAndUrl = Pick<NatsSettings, 'url' | 'username' | 'password' | 'token'>;

/** The failure publisher's own connection (§17.2). */
export const FAILURES_CONNECTION_NAME = 'ssh-proxy';
/** The shared client of the KV features (§17.1). */
export const SHARED_CONNECTION_NAME = 'nats-client';
/** Go's nats.DefaultURL, which the reference ends up with when `nats.url` is empty. */
export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
/** Per-attempt deadline of the TCP connect plus NATS handshake. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/** `nats.url` may list several servers separated by commas, as Go's nats.Connect accepts. */
export function serverList(url: string): string[] {
  const list = url
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.length > 0 ? list : [DEFAULT_NATS_URL];
}

/** A server URL fit for logs: credentials embedded in it are removed. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//[redacted]@');
}

export interface LinkSettings extends NatsAuthAndUrl {
  /** -1 = forever (config 0 is normalised to -1 by the loader). */
  maxReconnects: number;
  /** Seconds between reconnect attempts. */
  reconnectWait: number;
}

/** nats.js options for one named connection: user/password wins over a token, as only one is sent. */
export function connectionOptions(
  name: string,
  s: LinkSettings,
  connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS,
): ConnectionOptions {
  const opts: ConnectionOptions = {
    name,
    servers: serverList(s.url),
    maxReconnectAttempts: s.maxReconnects <= 0 ? -1 : s.maxReconnects,
    reconnectTimeWait: Math.max(1, Math.round((s.reconnectWait > 0 ? s.reconnectWait : 2) * 1000)),
    timeout: connectTimeoutMs,
    // Never wait forever on a first connect inside nats.js: the link's own loop retries, stoppably.
    waitOnFirstConnect: false,
  };
  if (s.username !== '') {
    opts.user = s.username;
    opts.pass = s.password;
  } else if (s.token !== '') {
    opts.token = s.token;
  }
  return opts;
}

export interface NatsLinkOptions {
  name: string;
  settings: LinkSettings;
  log: Logger;
  connectTimeoutMs?: number;
}

type Listener = (nc: NatsConnection) => void;

/**
 * One named NATS connection, connected in the background with a per-attempt deadline and retried
 * every `reconnectWait` for as long as the link runs (also after nats.js gives up reconnecting, so a
 * finite `maxReconnects` cannot switch the lock watcher off for good). Connect, disconnect, reconnect
 * and close are logged.
 */
export class NatsLink {
  readonly name: string;
  private readonly settings: LinkSettings;
  private readonly log: Logger;
  private readonly connectTimeoutMs: number;
  private nc: NatsConnection | undefined;
  private up = false;
  private started = false;
  private stopped = false;
  private readonly stop = new AbortController();
  private readonly upListeners = new Set<Listener>();
  private readonly downListeners = new Set<() => void>();
  private loop: Promise<void> | undefined;

  constructor(opts: NatsLinkOptions) {
    this.name = opts.name;
    this.settings = opts.settings;
    this.log = opts.log.child({ nats: opts.name });
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  /** Starts connecting in the background; returns at once. */
  start(): this {
    if (!this.started) {
      this.started = true;
      this.loop = this.run().catch((e: unknown) => this.log.error({ err: errText(e) }, 'NATS link stopped'));
    }
    return this;
  }

  /** The connection while it is up; undefined while connecting, reconnecting or closed. */
  get connection(): NatsConnection | undefined {
    return this.up ? this.nc : undefined;
  }

  get connected(): boolean {
    return this.up;
  }

  /** Called on every (re)connect; returns the unsubscribe function. */
  onUp(fn: Listener): () => void {
    this.upListeners.add(fn);
    return () => this.upListeners.delete(fn);
  }

  /** Called on every disconnect or close. */
  onDown(fn: () => void): () => void {
    this.downListeners.add(fn);
    return () => this.downListeners.delete(fn);
  }

  /** The connection once it is up, or undefined after `timeoutMs` (or when `signal` aborts / the link stops). */
  whenConnected(timeoutMs: number, signal?: AbortSignal): Promise<NatsConnection | undefined> {
    const now = this.connection;
    if (now || this.stopped || signal?.aborted) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (v: NatsConnection | undefined) => {
        clearTimeout(timer);
        off();
        signal?.removeEventListener('abort', onAbort);
        this.stop.signal.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const onAbort = () => done(undefined);
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const off = this.onUp((nc) => done(nc));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.stop.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Stops reconnecting and drains the connection (bounded by `timeoutMs`, then closed hard). */
  async close(timeoutMs = 2000): Promise<void> {
    this.stopped = true;
    this.stop.abort();
    const nc = this.nc;
    this.setUp(false);
    if (nc && !nc.isClosed()) {
      const drained = nc.drain().then(
        () => true,
        () => false,
      );
      const ok = await Promise.race([drained, sleepMs(timeoutMs, false, { ref: false })]);
      if (!ok) await nc.close().catch(() => undefined);
    }
    // A connect attempt in flight ends within its own deadline and is then closed by the loop.
    await Promise.race([this.loop, sleepMs(timeoutMs, undefined, { ref: false })]);
  }

  private setUp(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    if (up && this.nc) {
      const nc = this.nc;
      for (const fn of [...this.upListeners]) guard(() => fn(nc), this.log);
    } else if (!up) {
      for (const fn of [...this.downListeners]) guard(fn, this.log);
    }
  }

  private async run(): Promise<void> {
    const opts = connectionOptions(this.name, this.settings, this.connectTimeoutMs);
    const servers = (opts.servers as string[]).map(redactUrl);
    const waitMs = opts.reconnectTimeWait ?? 2000;
    let failures = 0;
    while (!this.stopped) {
      let nc: NatsConnection;
      try {
        nc = await connect(opts);
      } catch (e) {
        if (this.stopped) break;
        // The reference's text; unlike the reference we keep trying in the background.
        if (failures === 0) this.log.warn({ servers }, `failed to create NATS client: ${errText(e)}`);
        else this.log.debug({ servers, attempt: failures + 1 }, `NATS connect failed: ${errText(e)}`);
        failures += 1;
        await pause(waitMs, this.stop.signal);
        continue;
      }
      if (this.stopped) {
        await nc.close().catch(() => undefined);
        break;
      }
      failures = 0;
      this.nc = nc;
      this.log.info({ server: redactUrl(nc.getServer()) }, 'NATS connected');
      this.setUp(true);
      void this.watchStatus(nc);
      const err = await nc.closed();
      this.setUp(false);
      this.nc = undefined;
      if (this.stopped) break;
      this.log.warn({ err: err ? errText(err) : undefined }, 'NATS connection closed; connecting anew');
      await pause(waitMs, this.stop.signal);
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        switch (s.type) {
          case 'disconnect':
            this.setUp(false);
            if (!this.stopped) this.log.warn({ server: redactUrl(s.server) }, 'NATS disconnected');
            break;
          case 'reconnect':
            this.log.info({ server: redactUrl(s.server) }, 'NATS reconnected');
            this.setUp(true);
            break;
          case 'error':
            this.log.warn({ err: errText(s.error) }, 'NATS error');
            break;
          case 'close':
            return;
          default:
            break;
        }
      }
    } catch (e) {
      this.log.debug({ err: errText(e) }, 'NATS status stream ended');
    }
  }
}

/** Sleeps `ms` unless `signal` aborts first; never throws. */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleepMs(ms, undefined, { signal });
  } catch {
    // Aborted: the caller checks its own stop flag.
  }
}

function guard(fn: () => void, log: Logger): void {
  try {
    fn();
  } catch (e) {
    log.error({ err: errText(e) }, 'NATS connection listener failed');
  }
}
