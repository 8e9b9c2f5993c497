// Recording overrides (reference-behaviour §15.1 step 1, §23.k) against a real nats-server: the bucket
// is opened as it is or created with 1 replica on a single server (the create request itself is
// checked), overrides are read fresh, `none` counts as an override, and every failure answers
// undefined (policy decides) without blocking, also while the server is down.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { NatsLink } from '../../src/backends/nats.js';
import { bucketReplicas } from '../../src/backends/nats-kv.js';
import { NatsRecordingOverrides, parseOverride } from '../../src/backends/nats-overrides.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, testClient, type TestNats } from './helpers.js';

const STREAM = 'KV_recording-overrides';

describe('bucket replicas', () => {
  it('1 on a single server, the cluster size up to 3 in a cluster', () => {
    const info = (i: { cluster?: string; connect_urls?: string[] }) => i;
    assert.equal(bucketReplicas(undefined), 1);
    assert.equal(bucketReplicas(info({})), 1);
    assert.equal(bucketReplicas(info({ connect_urls: ['a:1', 'b:1', 'c:1'] })), 1, 'no cluster name: single');
    assert.equal(bucketReplicas(info({ cluster: 'c1' })), 1, 'cluster that advertises nothing');
    assert.equal(bucketReplicas(info({ cluster: 'c1', connect_urls: ['a:1', 'b:1'] })), 2);
    assert.equal(bucketReplicas(info({ cluster: 'c1', connect_urls: ['a:1', 'b:1', 'c:1'] })), 3);
    assert.equal(
      bucketReplicas(info({ cluster: 'c1', connect_urls: ['a:1', 'b:1', 'c:1', 'd:1', 'e:1'] })),
      3,
    );
    assert.equal(bucketReplicas(info({ cluster: 'c1', connect_urls: ['a:1', 'a:1'] })), 1);
  });

  it('parses the API server value', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    assert.deepEqual(
      parseOverride(enc('{"record":"shell,exec","setBy":"ops","setAt":"2024-05-01T00:00:00Z"}')),
      {
        record: 'shell,exec',
        setBy: 'ops',
      },
    );
    assert.deepEqual(parseOverride(enc('{"record":"none","setAt":1714521600}')), {
      record: 'none',
      setBy: '',
    });
    for (const bad of [
      '{',
      '"shell"',
      'null',
      '{"setBy":"x"}',
      '{"record":1}',
      '{"record":"shell","setBy":2}',
    ]) {
      assert.ok(parseOverride(enc(bad)) instanceof Error, bad);
    }
  });
});

describe('recording overrides over a real nats-server', () => {
  let nats: TestNats;
  let admin: NatsConnection;
  let jsm: JetStreamManager;
  let link: NatsLink;
  const createRequests: Partial<StreamConfig>[] = [];
  const overrides: NatsRecordingOverrides[] = [];

  function make(reopenMs = 10_000) {
    const logs = memoryLogger();
    const o = new NatsRecordingOverrides({ link, log: logs.log, timeoutMs: 1000, reopenMs }).start();
    overrides.push(o);
    return { o, logs };
  }

  async function kv(): Promise<KV> {
    return new Kvm(admin).open('recording-overrides');
  }

  const value = (record: string, setBy = 'ops@example.com') =>
    JSON.stringify({ record, setBy, setAt: '2024-05-01T12:00:00Z' });

  before(async () => {
    nats = await startTestNats();
    admin = await testClient(nats.url);
    jsm = await jetstreamManager(admin);
    // Every stream-create request in the account, as the server receives it.
    const sub = admin.subscribe('$JS.API.STREAM.CREATE.>');
    void (async () => {
      for await (const m of sub) createRequests.push(m.json<Partial<StreamConfig>>());
    })();
    await admin.flush();
    link = new NatsLink({
      name: 'nats-client',
      settings: linkSettings(nats.url),
      log: memoryLogger().log,
    }).start();
    await waitFor(() => link.connected, { timeoutMs: 10_000, what: 'nats-client connected' });
  });
  after(async () => {
    for (const o of overrides) o.stop();
    await link.close();
    await admin.close();
    await nats.cleanup();
  });

  it('opens an existing bucket as it is', async () => {
    await new Kvm(admin).create('recording-overrides', { history: 4, storage: StorageType.Memory });
    await waitFor(() => createRequests.length === 1, { timeoutMs: 5000, what: "the test's own create seen" });
    createRequests.length = 0;
    const { o } = make();
    await waitFor(() => o.isOpen, { timeoutMs: 10_000, what: 'bucket opened' });
    const info = await jsm.streams.info(STREAM);
    assert.equal(info.config.max_msgs_per_subject, 4);
    assert.equal(info.config.storage, StorageType.Memory);
    assert.equal(createRequests.length, 0, 'no create request for an existing bucket');
    await jsm.streams.delete(STREAM);
  });

  it('creates a missing bucket with 1 replica on a single server, history 1, file storage, no TTL', async () => {
    createRequests.length = 0;
    const { o, logs } = make();
    await waitFor(() => o.isOpen, { timeoutMs: 10_000, what: 'bucket created' });
    const info = await jsm.streams.info(STREAM);
    assert.equal(info.config.num_replicas, 1);
    assert.equal(info.config.max_msgs_per_subject, 1);
    assert.equal(info.config.storage, StorageType.File);
    assert.equal(info.config.max_age, 0);
    await waitFor(() => createRequests.length >= 1, { timeoutMs: 5000, what: 'the create request seen' });
    assert.deepEqual(
      createRequests.map((r) => r.num_replicas),
      [1],
      'the server was never asked for more than 1 replica',
    );
    assert.ok(logs.lines.some((l) => l.msg === 'created the recording overrides bucket' && l.replicas === 1));
  });

  it('reads fresh, logs the override, and returns none as an override', async () => {
    const { o, logs } = make();
    const store = await kv();
    assert.equal(await o.get('ws-1'), undefined, 'no override yet');
    await store.put('ws-1', value('shell'));
    assert.deepEqual(await o.get('ws-1'), { record: 'shell', setBy: 'ops@example.com' });
    await store.put('ws-1', value('exec,sftp', 'sre'));
    assert.deepEqual(await o.get('ws-1'), { record: 'exec,sftp', setBy: 'sre' });
    await store.put('ws-1', value('none'));
    assert.deepEqual(await o.get('ws-1'), { record: 'none', setBy: 'ops@example.com' });
    const applied = logs.lines.filter((l) => l.msg === 'Applying recording override');
    assert.deepEqual(
      applied.map((l) => [l.workspace, l.record, l.setBy]),
      [
        ['ws-1', 'shell', 'ops@example.com'],
        ['ws-1', 'exec,sftp', 'sre'],
        ['ws-1', 'none', 'ops@example.com'],
      ],
    );
    // A channel logger passed in carries the channel's ids.
    const chan = memoryLogger();
    await o.get('ws-1', chan.log.child({ conn: 'c1', chan: 'sh-c11' }));
    assert.equal(chan.lines[0]?.chan, 'sh-c11');
    await store.delete('ws-1');
    assert.equal(await o.get('ws-1'), undefined, 'a deleted override is no override');
  });

  it('bad values and KV errors answer undefined and are logged', async () => {
    const { o, logs } = make();
    const store = await kv();
    await store.put('ws-bad', '{"record": shell}');
    assert.equal(await o.get('ws-bad'), undefined);
    await store.put('ws-bad', '{"setBy":"x"}');
    assert.equal(await o.get('ws-bad'), undefined);
    assert.equal(
      logs.lines.filter((l) => l.msg === 'Invalid recording override; using the policy').length,
      2,
    );
    // Not a valid KV key: the store refuses the read.
    assert.equal(await o.get('has space'), undefined);
    assert.ok(logs.lines.some((l) => l.msg === 'Recording override lookup failed; using the policy'));
  });

  it('a deleted bucket is created again later', async () => {
    const { o, logs } = make(0);
    await waitFor(() => o.isOpen, { timeoutMs: 10_000, what: 'bucket opened' });
    await jsm.streams.delete(STREAM);
    assert.equal(await o.get('ws-2'), undefined);
    assert.ok(logs.lines.some((l) => l.msg === 'Recording override lookup failed; using the policy'));
    await waitFor(() => !o.isOpen, { timeoutMs: 10_000, what: 'the missing bucket noticed' });
    // The next read reopens (creates) the bucket.
    await waitFor(async () => (await o.get('ws-2')) === undefined && o.isOpen, {
      timeoutMs: 10_000,
      what: 'bucket recreated',
    });
    assert.equal((await jsm.streams.info(STREAM)).config.num_replicas, 1);
    await (await kv()).put('ws-2', value('shell'));
    assert.deepEqual(await o.get('ws-2'), { record: 'shell', setBy: 'ops@example.com' });
  });

  it('never blocks while the server is down, and works again after a restart', async () => {
    const { o } = make();
    await waitFor(() => o.isOpen, { timeoutMs: 10_000, what: 'bucket opened' });
    await (await kv()).put('ws-3', value('shell'));
    await nats.stop();
    await waitFor(() => !link.connected, { timeoutMs: 10_000, what: 'outage seen' });
    assert.equal(await withTimeout(o.get('ws-3'), 3000, 'get during the outage'), undefined);
    await nats.restart();
    await waitFor(async () => (await o.get('ws-3'))?.record === 'shell', {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: 'override readable after the restart',
    });
  });
});
