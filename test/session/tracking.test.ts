// Session tracking (reference-behaviour §16) as a connection observer, through the real registry:
// against a capturing server for the exact fields, and against the local session service.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { createSessionClient, type SessionBackend } from '../../src/backends/session.js';
import { ConnectionRegistry, type LiveConnectionInfo } from '../../src/gateway/registry.js';
import {
  createSessionTracker,
  sessionTrackerFromConfig,
  type TrackingClock,
} from '../../src/gateway/session-tracking.js';
import { startLocalSessionService, type LocalSessionService } from '../../src/local/sessions/service.js';
import { applyDefaults, decodeConfig } from '../../src/config/validate.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogger } from '../local/helpers.js';
import { startCaptureServer, type CaptureServer } from './helpers.js';

class ManualIntervals implements TrackingClock {
  t = 1_700_000_000_000;
  readonly live = new Map<number, { ms: number; f: () => void }>();
  private seq = 0;
  now(): number {
    return this.t;
  }
  every(ms: number, f: () => void): () => void {
    const id = ++this.seq;
    this.live.set(id, { ms, f });
    return () => void this.live.delete(id);
  }
  /** One heartbeat period passes. */
  tick(ms: number): void {
    this.t += ms;
    for (const { f } of [...this.live.values()]) f();
  }
}

/** A connection as the gateway would show it, with mutable counters. */
function fakeConnection(id: string) {
  const state = {
    bytes: { in: 0, out: 0 },
    ops: ['sh', 'pt'],
    workspace: undefined as LiveConnectionInfo['workspace'],
    ended: '',
  };
  const info: LiveConnectionInfo = {
    id,
    clientIp: '192.0.2.7',
    clientPort: 50123,
    clientVersion: 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6',
    startedAt: new Date(),
    username: 'alice',
    userstrBlueprint: 'dev',
    get workspace() {
      return state.workspace;
    },
    get bytes() {
      return state.bytes;
    },
    operations: () => [...state.ops],
    openChannels: () => 1,
    end: (m) => void (state.ended = m),
  };
  return { info, state };
}

const quiet = pino({ level: 'silent' });

describe('session tracking against a capturing server', () => {
  let cap: CaptureServer;
  let client: SessionBackend;
  before(async () => {
    cap = await startCaptureServer();
    client = createSessionClient({ address: cap.address });
  });
  after(async () => {
    client.close();
    await cap.close();
  });

  test('Upsert at bind with start_time, heartbeats without, EndSession with the final counts', async () => {
    const clock = new ManualIntervals();
    const registry = new ConnectionRegistry();
    const tracker = createSessionTracker({ client, heartbeatMs: 10_000, log: quiet, clock });
    registry.observe(tracker);
    const { info, state } = fakeConnection('local-1-trackaaaaaaaaaaaaaaaaaaaaaa');
    registry.add(info);
    registry.authenticated(info);
    assert.equal(cap.upserts.length, 0, 'nothing before the workspace is bound');
    state.workspace = { name: 'ws-alice', blueprint: 'default', appVersion: 'agent-1.4.0' };
    state.bytes = { in: 10, out: 20 };
    registry.workspaceBound(info);
    registry.workspaceBound(info); // a second bind does not start a second reporter
    assert.equal(clock.live.size, 1);
    await waitFor(() => cap.upserts.length === 1, { what: 'the first Upsert' });
    const startSec = Math.floor(clock.t / 1000);
    assert.deepEqual(cap.upserts[0], {
      sessionId: info.id,
      username: 'alice',
      k8shelldVer: 'agent-1.4.0',
      client: 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6',
      clientIp: '192.0.2.7',
      startTime: startSec,
      endTime: 0,
      workspace: 'ws-alice',
      bytesIn: 10,
      bytesOut: 20,
      operations: ['pt', 'sh'],
      blueprint: 'dev',
      updatedAt: startSec,
      recordings: [],
      execRecordings: 0,
    });
    state.bytes = { in: 100, out: 2000 };
    state.ops = ['ex', 'sh', 'pt', 'sh'];
    await waitFor(() => tracker.inflight() === 0, { what: 'the first call to settle' });
    clock.tick(10_000);
    await waitFor(() => cap.upserts.length === 2, { what: 'the heartbeat' });
    const hb = cap.upserts[1];
    assert.equal(hb?.startTime, 0, 'heartbeats carry no start_time');
    assert.equal(hb?.updatedAt, startSec + 10);
    assert.deepEqual([hb?.bytesIn, hb?.bytesOut], [100, 2000]);
    assert.deepEqual(hb?.operations, ['ex', 'pt', 'sh'], 'sorted and unique');
    state.bytes = { in: 123, out: 4567 };
    clock.tick(5_000);
    await registry.closed(info);
    assert.equal(clock.live.size, 0, 'the heartbeat is cleared');
    assert.deepEqual(cap.endSessions.at(-1), {
      sessionId: info.id,
      endTime: startSec + 15,
      bytesIn: 123,
      bytesOut: 4567,
    });
    assert.equal(tracker.tracked(), 0);
    assert.equal(state.ended, '', 'the connection is never touched');
  });

  test('a connection that never bound a workspace sends nothing', async () => {
    const tracker = createSessionTracker({
      client,
      heartbeatMs: 10_000,
      log: quiet,
      clock: new ManualIntervals(),
    });
    const { info } = fakeConnection('local-1-unboundaaaaaaaaaaaaaaaaaaaa');
    const before = cap.events.length;
    tracker.authenticated?.(info);
    await tracker.closed?.(info);
    assert.equal(cap.events.length, before);
  });

  test('service errors never reach the connection; they are logged, rate-limited; start_time is resent', async () => {
    const clock = new ManualIntervals();
    const log = captureLogger();
    const tracker = createSessionTracker({ client, heartbeatMs: 1_000, log: log.logger, clock });
    const { info, state } = fakeConnection('local-1-failingaaaaaaaaaaaaaaaaaaaa');
    state.workspace = { name: 'ws', blueprint: 'b', appVersion: 'v' };
    cap.failUnary = true;
    const base = cap.refused;
    try {
      tracker.workspaceBound?.(info);
      await waitFor(() => cap.refused === base + 1, { what: 'the first refusal' });
      for (let i = 2; i <= 9; i++) {
        // A beat is skipped while the previous call runs (no pile-up): let it settle first.
        await waitFor(() => tracker.inflight() === 0, { what: 'the call to settle' });
        clock.tick(1_000);
        await waitFor(() => cap.refused === base + i, { what: `refusal ${i}` });
      }
      await tracker.closed?.(info);
      const lines = log.lines();
      const upsertLines = lines.filter((l) => l.msg === 'UpsertSession failed');
      assert.equal(upsertLines.length, 5, 'nine failures, five lines per minute');
      assert.equal(upsertLines[0]?.conn, info.id, 'the line names the connection');
      assert.equal(lines.filter((l) => l.msg === 'EndSession failed').length, 1);
      assert.equal(state.ended, '');
    } finally {
      cap.failUnary = false;
    }
    assert.equal(
      cap.upserts.filter((u) => u.sessionId === info.id).length,
      0,
      'nothing was accepted while the service refused',
    );

    // Recovery: the first accepted Upsert still carries start_time.
    const clock2 = new ManualIntervals();
    const log2 = captureLogger();
    const t2 = createSessionTracker({ client, heartbeatMs: 1_000, log: log2.logger, clock: clock2 });
    const c2 = fakeConnection('local-1-recoveraaaaaaaaaaaaaaaaaaaa');
    c2.state.workspace = { name: 'ws', blueprint: 'b', appVersion: 'v' };
    cap.failUnary = true;
    t2.workspaceBound?.(c2.info);
    await waitFor(() => log2.lines().some((l) => l.msg === 'UpsertSession failed') && t2.inflight() === 0, {
      what: 'the failed Upsert',
    });
    cap.failUnary = false;
    clock2.tick(1_000);
    await waitFor(() => cap.upserts.some((u) => u.sessionId === c2.info.id) && t2.inflight() === 0, {
      what: 'the accepted Upsert',
    });
    clock2.tick(1_000);
    await waitFor(() => cap.upserts.filter((u) => u.sessionId === c2.info.id).length === 2, {
      what: 'the next beat',
    });
    const mine = cap.upserts.filter((u) => u.sessionId === c2.info.id);
    assert.equal(mine[0]?.startTime, Math.floor(1_700_000_000_000 / 1000));
    assert.equal(mine[1]?.startTime, 0);
    await t2.closed?.(c2.info);
  });

  test('from config: only with session.address; the interval is session.heartbeatInterval', () => {
    const off = applyDefaults(decodeConfig({ server: { port: 1 } }));
    assert.equal(sessionTrackerFromConfig(off, client, quiet), undefined);
    const on = applyDefaults(
      decodeConfig({ server: { port: 1 }, session: { address: cap.address, heartbeatInterval: '2s' } }),
    );
    assert.equal(on.session.heartbeatInterval, 2);
    assert.ok(sessionTrackerFromConfig(on, client, quiet));
  });
});

describe('session tracking against the local session service', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-track-');
  let svc: LocalSessionService;
  let client: SessionBackend;
  before(async () => {
    svc = await startLocalSessionService({ dataDir: tmp.path, logger: quiet });
    client = createSessionClient({ address: svc.address });
  });
  after(async () => {
    client.close();
    await svc.close();
  });

  test('live while connected, ended with exact byte counts', async () => {
    const clock = new ManualIntervals();
    const tracker = createSessionTracker({ client, heartbeatMs: 10_000, log: quiet, clock });
    const { info, state } = fakeConnection('local-1-localsvcaaaaaaaaaaaaaaaaaaa');
    state.workspace = { name: 'ws-alice', blueprint: 'default', appVersion: 'agent-1' };
    tracker.workspaceBound?.(info);
    const live = await waitFor(() => svc.store.sessions.get(info.id), { what: 'the session in the store' });
    assert.equal(live.endTime, 0);
    assert.equal(live.client, info.clientVersion);
    state.bytes = { in: 4096, out: 1_048_576 };
    await waitFor(() => tracker.inflight() === 0, { what: 'the first call to settle' });
    clock.tick(10_000);
    await waitFor(() => svc.store.sessions.get(info.id)?.bytesOut === 1_048_576, { what: 'the heartbeat' });
    state.bytes = { in: 4097, out: 1_048_577 };
    await tracker.closed?.(info);
    const ended = svc.store.sessions.get(info.id);
    assert.ok(ended && ended.endTime > 0);
    assert.deepEqual([ended.bytesIn, ended.bytesOut], [4097, 1_048_577]);
  });
});
