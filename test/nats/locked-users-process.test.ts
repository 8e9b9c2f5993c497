// Per-process ephemeral consumers (reference-behaviour §17.3, §23.k) with a real second Node process:
// both processes see a lock; when the child dies without cleaning up, the server removes
// its consumer by itself; no durable consumer is ever left behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { NatsLink } from '../../src/backends/nats.js';
import { LOCKED_USERS_BUCKET, openOrCreateBucket } from '../../src/backends/nats-kv.js';
import { LockedUsersWatcher } from '../../src/backends/nats-locks.js';
import { waitFor } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, testClient, type TestNats } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/lock-watcher-child.ts', import.meta.url));
const STREAM = 'KV_locked-users';

interface ChildEvent {
  event: string;
  consumer?: string;
  user?: string;
  pid?: number;
}

describe('locked-users watcher in two processes', () => {
  let nats: TestNats;
  let admin: NatsConnection;
  let jsm: JetStreamManager;
  let kv: KV;
  let child: ChildProcess | undefined;
  let link: NatsLink | undefined;
  let watcher: LockedUsersWatcher | undefined;

  before(async () => {
    nats = await startTestNats();
    admin = await testClient(nats.url);
    jsm = await jetstreamManager(admin);
    ({ kv } = await openOrCreateBucket(admin, LOCKED_USERS_BUCKET, 5000));
  });
  after(async () => {
    child?.kill('SIGKILL');
    await watcher?.stop();
    await link?.close();
    await admin.close();
    await nats.cleanup();
  });

  it('each process has its own ephemeral consumer; a dead process leaves nothing behind', async () => {
    const { log } = memoryLogger();
    link = new NatsLink({ name: 'nats-client', settings: linkSettings(nats.url), log }).start();
    const locked: string[] = [];
    watcher = new LockedUsersWatcher({
      link,
      onLocked: (u) => locked.push(u),
      log,
      retryMs: 300,
      inactiveThresholdMs: 2000,
    }).start();

    const events: ChildEvent[] = [];
    child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
      env: { ...process.env, NATS_URL: nats.url, INACTIVE_MS: '2000' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        events.push(JSON.parse(buf.slice(0, i)) as ChildEvent);
        buf = buf.slice(i + 1);
      }
    });
    const ours = await waitFor(() => watcher?.consumerName, {
      timeoutMs: 15_000,
      what: 'our watcher subscribed',
    });
    const sub = await waitFor(() => events.find((e) => e.event === 'subscribed'), {
      timeoutMs: 30_000,
      what: 'child watcher subscribed',
    });
    assert.equal(sub.pid, child.pid);
    assert.ok(sub.consumer?.includes(`-${child.pid}-`), 'the child consumer is named after its pid');

    const consumers = await jsm.consumers.list(STREAM).next();
    assert.deepEqual(consumers.map((c) => c.name).sort(), [ours, sub.consumer].sort());
    assert.ok(
      consumers.every((c) => c.config.durable_name === undefined),
      'no durable consumers',
    );

    await kv.put('alice', '{"locked":true,"sessionsInvalidBefore":0}');
    await waitFor(() => locked.includes('alice'), { timeoutMs: 15_000, what: 'this process saw the lock' });
    await waitFor(() => events.some((e) => e.event === 'locked' && e.user === 'alice'), {
      timeoutMs: 15_000,
      what: 'the child process saw the lock',
    });

    // The child dies without deleting its consumer: the server drops it once it is inactive.
    child.kill('SIGKILL');
    await waitFor(
      async () => {
        const names = (await jsm.consumers.list(STREAM).next()).map((c) => c.name);
        return names.length === 1 && names[0] === ours;
      },
      { timeoutMs: 20_000, intervalMs: 200, what: "the dead process's consumer removed by the server" },
    );

    await watcher.stop();
    assert.equal(
      (await jsm.consumers.list(STREAM).next()).length,
      0,
      'a stopped watcher deletes its consumer',
    );
  });
});
