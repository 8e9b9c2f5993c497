// Session tracking (reference-behaviour.md §16, wire-protocol.md §5.11) as a connection observer:
// UpsertSession as soon as the workspace is bound (with start_time), again every heartbeat interval,
// EndSession with the final byte counts when the connection closes. Session-service failures never
// touch the SSH connection; they are logged, rate-limited. Connections that never bound a workspace
// send nothing.
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import { RateLimitedLog } from '../ops/log-limit.js';
import type { Config } from '../config/load.js';
import type { Session, SessionBackend } from '../backends/session.js';
import type { ConnectionObserver, LiveConnectionInfo } from './registry.js';

export interface TrackingClock {
  now(): number;
  /** Calls `f` every `ms` until the returned function is called. */
  every(ms: number, f: () => void): () => void;
}

export const realTrackingClock: TrackingClock = {
  now: () => Date.now(),
  every(ms, f) {
    const t = setInterval(f, ms);
    // A heartbeat must never keep the process alive.
    t.unref();
    return () => clearInterval(t);
  },
};

export interface SessionTrackingOptions {
  client: SessionBackend;
  /** Heartbeat interval (session.heartbeatInterval; the reference's fixed 10 s). */
  heartbeatMs: number;
  log: Logger;
  clock?: TrackingClock;
}

export interface SessionTracker extends ConnectionObserver {
  /** Connections being reported now. */
  tracked(): number;
  /** Upsert calls in flight (a heartbeat is skipped while its connection's call still runs). */
  inflight(): number;
}

interface Tracked {
  stop: () => void;
  /** Unix seconds of the workspace bind, the session's start_time. */
  readonly startTime: number;
  /** Until one Upsert succeeded, every Upsert carries start_time (ours: a failed first call is not lost). */
  announced: boolean;
  inflight: Promise<void> | undefined;
}

/** The tracker when `session.address` is set, else undefined (the reference reports nothing then). */
export function sessionTrackerFromConfig(
  cfg: Config,
  client: SessionBackend | undefined,
  log: Logger,
): SessionTracker | undefined {
  if (!client || cfg.session.address === '') return undefined;
  return createSessionTracker({ client, heartbeatMs: cfg.session.heartbeatInterval * 1000, log });
}

export function createSessionTracker(o: SessionTrackingOptions): SessionTracker {
  const clock = o.clock ?? realTrackingClock;
  const limited = new RateLimitedLog(o.log);
  const live = new Map<string, Tracked>();
  const sec = () => Math.floor(clock.now() / 1000);

  function upsert(c: LiveConnectionInfo, t: Tracked): void {
    const ws = c.workspace;
    // A slow service must not pile up calls: skip a beat while one is still running.
    if (!ws || t.inflight) return;
    const now = sec();
    const session: Session = {
      sessionId: c.id,
      username: c.username ?? '',
      k8shelldVer: ws.appVersion,
      // Ours: the reference leaves this empty although the field is meant for the SSH client version.
      client: c.clientVersion,
      clientIp: c.clientIp,
      startTime: t.announced ? 0 : t.startTime,
      endTime: 0,
      workspace: ws.name,
      bytesIn: c.bytes.in,
      bytesOut: c.bytes.out,
      operations: [...new Set(c.operations())].sort(),
      // The user-string blueprint, not the workspace's (§16).
      blueprint: c.userstrBlueprint,
      updatedAt: now,
      recordings: [],
      execRecordings: 0,
    };
    t.inflight = o.client.upsertSession(session).then(
      () => {
        t.announced = true;
        t.inflight = undefined;
      },
      (e: unknown) => {
        t.inflight = undefined;
        limited.warn({ err: errText(e) }, 'UpsertSession failed', o.log.child({ conn: c.id }));
      },
    );
  }

  return {
    workspaceBound(c) {
      if (live.has(c.id) || !c.workspace) return;
      const t: Tracked = { stop: () => undefined, startTime: sec(), announced: false, inflight: undefined };
      live.set(c.id, t);
      upsert(c, t);
      t.stop = clock.every(o.heartbeatMs, () => upsert(c, t));
    },

    async closed(c) {
      const t = live.get(c.id);
      if (!t) return;
      live.delete(c.id);
      t.stop();
      // A late Upsert after EndSession could revive the session on the service: let it land first
      // (it is bounded by its own deadline).
      await t.inflight;
      try {
        await o.client.endSession({
          sessionId: c.id,
          endTime: sec(),
          bytesIn: c.bytes.in,
          bytesOut: c.bytes.out,
        });
      } catch (e) {
        limited.warn({ err: errText(e) }, 'EndSession failed', o.log.child({ conn: c.id }));
      }
    },

    tracked: () => live.size,
    inflight: () => [...live.values()].filter((t) => t.inflight).length,
  };
}
