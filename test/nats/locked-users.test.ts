// The locked-users watcher (reference-behaviour §17.3, §23.k) against a real nats-server: two
// watchers on two connections (as two processes would be) both see a lock (latency reported); unlocks,
// deletes and empty values are ignored; bad JSON is NAKed and redelivered; consumers are ephemeral
// and removed on stop; after a server restart the watchers resubscribe and see new locks; the
// onLocked mapping ends the user's live connections in the registry.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { NatsLink } from '../../src/backends/nats.js';
import { LOCKED_USERS_BUCKET, openOrCreateBucket } from '../../src/backends/nats-kv.js';
import {
  closeLockedUserConnections,
  LockedUsersWatcher,
  LOCKED_USER_MESSAGE,
  parseLockValue,
  unavailableText,
} from '../../src/backends/nats-locks.js';
import { ConnectionRegistry, type LiveConnectionInfo } from '../../src/gateway/registry.js';
import { waitFor } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, testClient, type TestNats } from './helpers.js';

const STREAM = 'KV_locked-users';

interface Proc {
  link: NatsLink;
  watcher: LockedUsersWatcher;
  locked: string[];
  logs: ReturnType<typeof memoryLogger>;
}

describe('locked-users values', () => {
  it('parses the API server format and rejects what Go would not unmarshal', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    assert.deepEqual(parseLockValue(enc('{"locked":true,"sessionsInvalidBefore":1714560000}')), {
      locked: true,
      sessionsInvalidBefore: 1714560000,
    });
    assert.deepEqual(parseLockValue(enc('{"locked":false}')), { locked: false });
    assert.deepEqual(parseLockValue(enc('{}')), { locked: false });
    assert.deepEqual(parseLockValue(enc('null')), { locked: false });
    for (const bad of ['{"locked":', 'true', '[1]', '{"locked":"yes"}', '{"sessionsInvalidBefore":"x"}']) {
      assert.ok(parseLockValue(enc(bad)) instanceof Error, bad);
    }
  });

  it('warns with the reference text', () => {
    assert.equal(
      unavailableText(10_000, new Error('stream not found')),
      'locked-users subscription unavailable, retrying in 10s: stream not found',
    );
  });
});

describe('closing the connections of a locked user', () => {
  function fake(id: string, username: string | undefined, ended: string[]): LiveConnectionInfo {
    return {
      id,
      clientIp: '203.0.113.1',
      clientPort: 1000,
      clientVersion: 'SSH-2.0-OpenSSH_9.2',
      startedAt: new Date(),
      username,
      userstrBlueprint: '',
      workspace: undefined,
      bytes: { in: 0, out: 0 },
      operations: () => [],
      openChannels: () => 0,
      end: (message: string) => ended.push(`${id}:${message}`),
    };
  }

  it('ends every live connection of that user, logs the reference line, leaves others alone', () => {
    const registry = new ConnectionRegistry();
    const ended: string[] = [];
    registry.add(fake('c1', 'alice', ended));
    registry.add(fake('c2', 'bob', ended));
    registry.add(fake('c3', 'alice', ended));
    registry.add(fake('c4', undefined, ended));
    const { log, lines } = memoryLogger();
    assert.equal(closeLockedUserConnections(registry, 'alice', log), 2);
    assert.deepEqual(ended.sort(), [`c1:${LOCKED_USER_MESSAGE}`, `c3:${LOCKED_USER_MESSAGE}`]);
    const closing = lines.filter((l) => l.msg === 'Closing SSH connection for locked user alice');
    assert.deepEqual(closing.map((l) => l.conn).sort(), ['c1', 'c3']);
    assert.equal(closeLockedUserConnections(registry, 'nobody', log), 0);
  });

  it('also ends connections still authenticating as that user, until they authenticated or closed', () => {
    const registry = new ConnectionRegistry();
    const ended: string[] = [];
    const pending = (id: string, username: string | undefined) =>
      registry.authenticating({ id, username, end: (m) => ended.push(`${id}:${m}`) });
    pending('p1', 'alice');
    pending('p2', undefined);
    const done = pending('p3', 'alice');
    registry.add(fake('c1', 'alice', ended));
    done();
    assert.equal(closeLockedUserConnections(registry, 'alice', memoryLogger().log), 2);
    assert.deepEqual(ended.sort(), [`c1:${LOCKED_USER_MESSAGE}`, `p1:${LOCKED_USER_MESSAGE}`]);
  });

  it('one failing connection does not stop the others', () => {
    const registry = new ConnectionRegistry();
    const ended: string[] = [];
    const broken = fake('c1', 'alice', ended);
    registry.add({
      ...broken,
      end: () => {
        throw new Error('socket gone');
      },
    });
    registry.add(fake('c2', 'alice', ended));
    assert.equal(closeLockedUserConnections(registry, 'alice', memoryLogger().log), 1);
    assert.deepEqual(ended, [`c2:${LOCKED_USER_MESSAGE}`]);
  });
});

describe('locked-users watcher over a real nats-server', () => {
  let nats: TestNats;
  let admin: NatsConnection;
  let jsm: JetStreamManager;
  let kv: KV;
  const procs: Proc[] = [];

  function startProc(opts: { nakDelayMs?: number; maxDeliver?: number } = {}): Proc {
    const logs = memoryLogger();
    const link = new NatsLink({
      name: 'nats-client',
      settings: linkSettings(nats.url),
      log: logs.log,
    }).start();
    const locked: string[] = [];
    const watcher = new LockedUsersWatcher({
      link,
      onLocked: (u) => locked.push(u),
      log: logs.log,
      proxyId: 'test1',
      retryMs: 300,
      inactiveThresholdMs: 5000,
      ...opts,
    }).start();
    const p = { link, watcher, locked, logs };
    procs.push(p);
    return p;
  }

  async function stopProc(p: Proc): Promise<void> {
    await p.watcher.stop();
    await p.link.close();
    procs.splice(procs.indexOf(p), 1);
  }

  const subscribed = (p: Proc) =>
    waitFor(() => p.watcher.consumerName, { timeoutMs: 15_000, what: 'watcher subscribed' });

  before(async () => {
    nats = await startTestNats();
    admin = await testClient(nats.url);
    jsm = await jetstreamManager(admin);
  });
  after(async () => {
    for (const p of [...procs]) await stopProc(p);
    await admin.close();
    await nats.cleanup();
  });

  it('waits for a missing bucket, then subscribes once it exists', async () => {
    const p = startProc();
    await waitFor(
      () => p.logs.messages().some((m) => m.startsWith('locked-users subscription unavailable')),
      {
        timeoutMs: 10_000,
        what: 'unavailable warning',
      },
    );
    assert.equal(p.watcher.consumerName, undefined);
    ({ kv } = await openOrCreateBucket(admin, LOCKED_USERS_BUCKET, 5000));
    await subscribed(p);
    await stopProc(p);
  });

  it('a lock reaches both watchers; unlocks, deletes and {} are ignored', async (t) => {
    const a = startProc();
    const b = startProc();
    await Promise.all([subscribed(a), subscribed(b)]);
    await kv.put('dave', '{"locked":false,"sessionsInvalidBefore":0}');
    await kv.put('erin', '{}');
    await kv.delete('dave');
    const put = performance.now();
    await kv.put('alice', '{"locked":true,"sessionsInvalidBefore":1714560000}');
    // The reference's 1 s is a latency target, reported here (bench/ measures it); the test asserts
    // that the lock arrives at all, with a deadline a loaded machine can meet.
    await waitFor(() => a.locked.includes('alice') && b.locked.includes('alice'), {
      timeoutMs: 15_000,
      what: 'both watchers saw the lock',
    });
    t.diagnostic(`lock seen by both watchers ${Math.round(performance.now() - put)} ms after the put`);
    assert.deepEqual(a.locked, ['alice']);
    assert.deepEqual(b.locked, ['alice']);
    assert.equal(a.watcher.stats.ignored, 3);
  });

  it('consumers are ephemeral with the reference settings, one per watcher, deleted on stop', async () => {
    const list = await jsm.consumers.list(STREAM).next();
    assert.equal(list.length, procs.length);
    assert.deepEqual(list.map((c) => c.name).sort(), procs.map((p) => p.watcher.consumerName).sort());
    for (const c of list) {
      assert.equal(c.config.durable_name, undefined, 'not durable');
      assert.ok((c.config.inactive_threshold ?? 0) > 0, 'removed by the server when inactive');
      assert.equal(c.config.deliver_policy, DeliverPolicy.New);
      assert.equal(c.config.ack_policy, AckPolicy.Explicit);
      assert.equal(c.config.ack_wait, 30_000_000_000);
      assert.equal(c.config.max_ack_pending, 1024);
      assert.equal(c.config.filter_subject, '$KV.locked-users.>');
      assert.match(c.name, /^ssh-proxy-test1-\d+-[0-9a-f]{6}-\d+$/);
    }
    const [first] = procs;
    assert.ok(first);
    await stopProc(first);
    const left = await jsm.consumers.list(STREAM).next();
    assert.equal(left.length, procs.length);
  });

  it('bad JSON is NAKed and redelivered; later locks still arrive', async () => {
    const p = startProc({ nakDelayMs: 100, maxDeliver: 2 });
    await subscribed(p);
    await kv.put('mallory', '{"locked": tru');
    await waitFor(() => p.watcher.stats.naks >= 2, { timeoutMs: 10_000, what: 'NAK and redelivery' });
    assert.ok(p.logs.lines.some((l) => l.msg === 'invalid locked-users entry; NAKed' && l.delivery === 2));
    await kv.put('bob', '{"locked":true}');
    await waitFor(() => p.locked.includes('bob'), { timeoutMs: 5000, what: 'lock after a bad entry' });
    assert.ok(!p.locked.includes('mallory'));
    await stopProc(p);
  });

  it('after a server restart the watchers resubscribe and new locks arrive', async () => {
    const watchers = [...procs];
    assert.ok(watchers.length >= 1);
    const before = watchers.map((p) => p.watcher.consumerName);
    await nats.stop();
    await waitFor(() => watchers.every((p) => !p.link.connected), { timeoutMs: 10_000, what: 'outage seen' });
    await nats.restart();
    await waitFor(() => watchers.every((p) => p.link.connected), { timeoutMs: 15_000, what: 'reconnected' });
    await waitFor(async () => (await jsm.streams.info(STREAM)).config.name, {
      timeoutMs: 15_000,
      what: 'JetStream back for the test client',
    });
    await kv.put('carol', '{"locked":true}');
    await waitFor(() => watchers.every((p) => p.locked.includes('carol')), {
      timeoutMs: 15_000,
      what: 'lock after the restart',
    });
    for (const [i, p] of watchers.entries()) {
      assert.notEqual(p.watcher.consumerName, before[i], 'a new consumer');
      assert.ok(
        p.logs
          .messages()
          .some((m) => m.startsWith('locked-users subscription unavailable, retrying in 0.3s:')),
      );
      // Nothing seen twice: the new consumer resumed after the last handled message.
      const watching = p.logs.lines.filter((l) => l.msg === 'watching locked-users');
      assert.equal(typeof watching[watching.length - 1]?.resumeAt, 'number');
      assert.equal(p.locked.filter((u) => u === 'alice').length, 1);
    }
    const list = await jsm.consumers.list(STREAM).next();
    assert.ok(list.every((c) => c.config.durable_name === undefined));
  });
});
