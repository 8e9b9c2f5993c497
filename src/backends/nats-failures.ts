// Failed-login events for SSH Shield (reference-behaviour §17.2): one JSON message per failed SSH
// handshake, core-published on `publishSshFailures.subject` over the `ssh-proxy` connection.
// `publish` is synchronous and never throws: while NATS is down events wait in a bounded queue
// (oldest kept, newest dropped and counted beyond the bound) and go out on reconnect.
import type { NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/schema.js';
import { localProxyId } from '../common/ids.js';
import { isPublicIp, unmapIPv4 } from '../common/ip.js';
import { errText, type Logger } from '../ops/log.js';
import type { NatsLink } from './nats.js';

export type PublishSettings = Config['server']['publishSshFailures'];

/** What the gateway knows about one failed handshake. */
export interface FailedLogin {
  /** The PROXY header's source, else the socket peer. */
  clientIp: string;
  clientPort: number;
  /** The parsed user-string username; '' when no per-connection state existed. */
  username: string;
  /** The failure-info strings collected during authentication ([] when no state existed). */
  failureInfo: readonly string[];
  /** The handshake error text (becomes the last `failure_info` element). */
  handshakeError: string;
}

/** The wire payload; field names and types are the reference's. */
export interface FailureEvent {
  client_ip: string;
  client_port: number;
  username: string;
  /** UTC RFC 3339 with seconds precision (`2024-05-01T12:00:00Z`). */
  timestamp: string;
  failure_info: string[];
  proxy_id: string;
}

export function rfc3339Seconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function buildFailureEvent(f: FailedLogin, now: Date, proxyId: string): FailureEvent {
  return {
    // Go prints IPv4-mapped peers of a dual-stack listener as plain IPv4; so do we.
    client_ip: unmapIPv4(f.clientIp),
    client_port: f.clientPort,
    username: f.username,
    timestamp: rfc3339Seconds(now),
    failure_info: [...f.failureInfo, f.handshakeError],
    proxy_id: proxyId,
  };
}

export type PublishOutcome = 'published' | 'queued' | 'filtered' | 'dropped';

/** Counters for metrics (monotonic except `queued`, the current queue length). */
export interface FailurePublisherStats {
  published: number;
  filtered: number;
  dropped: number;
  queued: number;
}

/** Events kept while the connection is down; beyond it new events are dropped and counted. */
export const DEFAULT_MAX_QUEUED = 1000;

export interface FailurePublisherOptions {
  settings: PublishSettings;
  /** The `ssh-proxy` connection; undefined when publishing is disabled. */
  link: NatsLink | undefined;
  log: Logger;
  proxyId?: string;
  maxQueued?: number;
  now?: () => Date;
}

export class FailurePublisher {
  private readonly settings: PublishSettings;
  private readonly link: NatsLink | undefined;
  private readonly log: Logger;
  private readonly proxyId: string;
  private readonly maxQueued: number;
  private readonly now: () => Date;
  private readonly queue: string[] = [];
  private readonly counts = { published: 0, filtered: 0, dropped: 0 };
  /** Log the first drop of an outage only; reset when the queue drains. */
  private dropLogged = false;

  constructor(opts: FailurePublisherOptions) {
    this.settings = opts.settings;
    this.link = opts.link;
    this.log = opts.log;
    this.proxyId = opts.proxyId ?? localProxyId();
    this.maxQueued = Math.max(0, opts.maxQueued ?? DEFAULT_MAX_QUEUED);
    this.now = opts.now ?? (() => new Date());
    this.link?.onUp((nc) => this.flush(nc));
    if (this.settings.enabled && this.settings.subject === '') {
      this.log.warn('publishSshFailures.subject is empty: failed-login events will be dropped');
    }
  }

  get stats(): FailurePublisherStats {
    return { ...this.counts, queued: this.queue.length };
  }

  /** Publishes (or queues) the event for one failed handshake. Never blocks, never throws. */
  publish(f: FailedLogin): PublishOutcome {
    try {
      return this.publishUnsafe(f);
    } catch (e) {
      this.counts.dropped += 1;
      this.log.warn({ err: errText(e) }, 'failed to publish SSH failure event');
      return 'dropped';
    }
  }

  private publishUnsafe(f: FailedLogin): PublishOutcome {
    if (!this.settings.enabled || !this.link) {
      this.counts.filtered += 1;
      return 'filtered';
    }
    if (this.settings.publicIPOnly && !isPublicIp(f.clientIp)) {
      this.counts.filtered += 1;
      this.log.debug({ clientIp: f.clientIp }, 'not publishing SSH failure event for a non-public address');
      return 'filtered';
    }
    if (this.settings.subject === '') {
      this.counts.dropped += 1;
      return 'dropped';
    }
    const payload = JSON.stringify(buildFailureEvent(f, this.now(), this.proxyId));
    const nc = this.link.connection;
    // Whatever is still queued goes first (normally the reconnect already sent it).
    if (nc && this.queue.length > 0) this.flush(nc);
    if (nc && this.queue.length === 0) {
      nc.publish(this.settings.subject, payload);
      this.counts.published += 1;
      return 'published';
    }
    if (this.queue.length >= this.maxQueued) {
      this.counts.dropped += 1;
      if (!this.dropLogged) {
        this.dropLogged = true;
        this.log.warn(
          { maxQueued: this.maxQueued },
          'NATS unavailable and the failure event queue is full: dropping SSH failure events',
        );
      }
      return 'dropped';
    }
    this.queue.push(payload);
    return 'queued';
  }

  private flush(nc: NatsConnection): void {
    let sent = 0;
    try {
      while (this.queue.length > 0 && this.link?.connection === nc) {
        nc.publish(this.settings.subject, this.queue[0] as string);
        this.queue.shift();
        sent += 1;
      }
    } catch (e) {
      this.log.warn(
        { err: errText(e), left: this.queue.length },
        'failed to publish queued SSH failure events',
      );
    }
    this.counts.published += sent;
    if (this.queue.length === 0) this.dropLogged = false;
    if (sent > 0) this.log.info({ count: sent }, 'published queued SSH failure events');
  }
}
