// Failed-login events (reference-behaviour §17.2) against a real nats-server: exact payload, the
// publicIPOnly filter, disabled publishing, and bounded queueing across a server restart.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { jetstreamManager, StorageType } from '@nats-io/jetstream';
import { isPublicIp, unmapIPv4 } from '../../src/common/ip.js';
import { NatsLink } from '../../src/backends/nats.js';
import { buildFailureEvent, FailurePublisher, type FailedLogin } from '../../src/backends/nats-failures.js';
import { waitFor } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, testClient, type TestNats } from './helpers.js';

const NOW = new Date('2024-05-01T12:34:56.789Z');

function failure(over: Partial<FailedLogin> = {}): FailedLogin {
  return {
    clientIp: '203.0.113.7',
    clientPort: 50123,
    username: 'alice',
    failureInfo: ['Public key authentication failed'],
    handshakeError: 'ssh: no auth passed yet',
    ...over,
  };
}

/** Collects the JSON payloads arriving on a subscription. */
function collect(sub: Subscription): Record<string, unknown>[] {
  const got: Record<string, unknown>[] = [];
  void (async () => {
    for await (const m of sub) got.push(m.json<Record<string, unknown>>());
  })();
  return got;
}

describe('public address filter (Go net.IP semantics)', () => {
  const cases: [string, boolean][] = [
    ['203.0.113.7', true],
    ['8.8.8.8', true],
    ['100.64.0.1', true], // CGNAT is not in Go's private list
    ['10.1.2.3', false],
    ['172.16.0.1', false],
    ['172.31.255.255', false],
    ['172.32.0.1', true],
    ['192.168.1.1', false],
    ['127.0.0.1', false],
    ['169.254.1.1', false],
    ['224.0.0.1', false],
    ['239.1.2.3', false],
    ['0.0.0.0', false],
    ['::ffff:10.0.0.1', false],
    ['::ffff:8.8.8.8', true],
    ['2001:4860:4860::8888', true],
    ['fd00::1', false],
    ['fc00::1', false],
    ['::1', false],
    ['fe80::1', false],
    ['fe80::1%eth0', false],
    ['ff02::1', false],
    ['ff05::2', false],
    ['::', false],
    ['not-an-ip', false],
    ['', false],
    ['010.0.0.1', false],
  ];
  for (const [ip, pub] of cases) {
    it(`${ip || '(empty)'} is ${pub ? 'public' : 'not public'}`, () => assert.equal(isPublicIp(ip), pub));
  }
  it('IPv4-mapped addresses are printed as IPv4, others unchanged', () => {
    assert.equal(unmapIPv4('::ffff:203.0.113.7'), '203.0.113.7');
    assert.equal(unmapIPv4('2001:db8::1'), '2001:db8::1');
    assert.equal(unmapIPv4('10.0.0.1'), '10.0.0.1');
  });
});

describe('failure event payload', () => {
  it('has the reference fields, the handshake error last, UTC seconds', () => {
    const e = buildFailureEvent(failure({ failureInfo: ['a', 'b'] }), NOW, 'x7k2p');
    assert.deepEqual(e, {
      client_ip: '203.0.113.7',
      client_port: 50123,
      username: 'alice',
      timestamp: '2024-05-01T12:34:56Z',
      failure_info: ['a', 'b', 'ssh: no auth passed yet'],
      proxy_id: 'x7k2p',
    });
  });
});

describe('failure events over a real nats-server', () => {
  let nats: TestNats;
  let client: NatsConnection;
  const links: NatsLink[] = [];

  before(async () => {
    nats = await startTestNats();
    client = await testClient(nats.url);
  });
  after(async () => {
    await Promise.all(links.map((l) => l.close()));
    await client.close();
    await nats.cleanup();
  });

  function link(name = 'ssh-proxy'): NatsLink {
    const l = new NatsLink({ name, settings: linkSettings(nats.url), log: memoryLogger().log }).start();
    links.push(l);
    return l;
  }

  it('publishes one event with the exact payload', async () => {
    const sub = client.subscribe('ssh.failures');
    await client.flush();
    const got = collect(sub);
    const l = link();
    await waitFor(() => l.connected, { timeoutMs: 10_000, what: 'publisher connected' });
    const pub = new FailurePublisher({
      settings: { enabled: true, subject: 'ssh.failures', publicIPOnly: false, whitelist: [] },
      link: l,
      log: memoryLogger().log,
      proxyId: 'x7k2p',
      now: () => NOW,
    });
    assert.equal(pub.publish(failure()), 'published');
    // No per-connection state: empty username, only the handshake error; an IPv4-mapped peer.
    assert.equal(
      pub.publish(
        failure({
          clientIp: '::ffff:198.51.100.9',
          clientPort: 40000,
          username: '',
          failureInfo: [],
          handshakeError: 'EOF',
        }),
      ),
      'published',
    );
    await waitFor(() => got.length >= 2, { timeoutMs: 10_000, what: 'two events' });
    sub.unsubscribe();
    const [first, second] = got;
    assert.ok(first && second);
    assert.deepEqual(Object.keys(first).sort(), [
      'client_ip',
      'client_port',
      'failure_info',
      'proxy_id',
      'timestamp',
      'username',
    ]);
    assert.equal(first.client_ip, '203.0.113.7');
    assert.equal(first.client_port, 50123);
    assert.equal(typeof first.client_port, 'number');
    assert.equal(first.username, 'alice');
    assert.equal(first.timestamp, '2024-05-01T12:34:56Z');
    assert.deepEqual(first.failure_info, ['Public key authentication failed', 'ssh: no auth passed yet']);
    assert.equal(first.proxy_id, 'x7k2p');
    assert.deepEqual(second, {
      client_ip: '198.51.100.9',
      client_port: 40000,
      username: '',
      timestamp: '2024-05-01T12:34:56Z',
      failure_info: ['EOF'],
      proxy_id: 'x7k2p',
    });
    assert.deepEqual(pub.stats, { published: 2, filtered: 0, dropped: 0, queued: 0 });
  });

  it('publicIPOnly drops private and unparsable sources, publishes public ones', async () => {
    const sub = client.subscribe('ssh.public');
    await client.flush();
    const got = collect(sub);
    const l = link();
    await waitFor(() => l.connected, { timeoutMs: 10_000, what: 'publisher connected' });
    const { log, lines } = memoryLogger();
    const pub = new FailurePublisher({
      settings: { enabled: true, subject: 'ssh.public', publicIPOnly: true, whitelist: [] },
      link: l,
      log,
    });
    for (const ip of ['10.0.0.5', '192.168.0.2', '::1', 'fd12:3456::1', '::ffff:172.16.4.4', 'garbage']) {
      assert.equal(pub.publish(failure({ clientIp: ip, username: `private-${ip}` })), 'filtered', ip);
    }
    assert.equal(pub.publish(failure({ clientIp: '2001:db8:1::5', username: 'v6' })), 'published');
    assert.equal(pub.publish(failure({ clientIp: '198.51.100.1', username: 'v4' })), 'published');
    await waitFor(() => got.length >= 2, { timeoutMs: 10_000, what: 'public events' });
    // Same connection, in order: had a private event gone out, it would have arrived first.
    await client.flush();
    assert.deepEqual(
      got.map((e) => e.username),
      ['v6', 'v4'],
    );
    assert.equal(pub.stats.filtered, 6);
    assert.ok(
      lines.some((x) => x.level === 20 && /non-public/.test(x.msg)),
      'debug line for a filtered address',
    );
    sub.unsubscribe();
  });

  it('disabled publishing filters everything and needs no connection', () => {
    const pub = new FailurePublisher({
      settings: { enabled: false, subject: 'ssh.failures', publicIPOnly: false, whitelist: [] },
      link: undefined,
      log: memoryLogger().log,
    });
    assert.equal(pub.publish(failure()), 'filtered');
    assert.deepEqual(pub.stats, { published: 0, filtered: 1, dropped: 0, queued: 0 });
  });

  it('queues a bounded number of events while NATS is down and sends them after a restart', async () => {
    // A stream on the subject keeps what arrives, whoever is subscribed when the publisher flushes.
    const jsm = await jetstreamManager(client);
    await jsm.streams.add({ name: 'OUTAGE', subjects: ['ssh.outage'], storage: StorageType.File });
    const l = link();
    await waitFor(() => l.connected, { timeoutMs: 10_000, what: 'publisher connected' });
    const { log, messages } = memoryLogger();
    const pub = new FailurePublisher({
      settings: { enabled: true, subject: 'ssh.outage', publicIPOnly: false, whitelist: [] },
      link: l,
      log,
      maxQueued: 3,
    });
    assert.equal(pub.publish(failure({ username: 'before' })), 'published');
    // Core NATS is at-most-once: let the first event land before pulling the plug.
    await waitFor(async () => (await jsm.streams.info('OUTAGE')).state.messages === 1, {
      timeoutMs: 10_000,
      what: 'first event stored',
    });

    await nats.stop();
    await waitFor(() => !l.connected, { timeoutMs: 10_000, what: 'publisher noticed the outage' });
    const outcomes = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => pub.publish(failure({ username: u })));
    assert.deepEqual(outcomes, ['queued', 'queued', 'queued', 'dropped', 'dropped']);
    assert.deepEqual(pub.stats, { published: 1, filtered: 0, dropped: 2, queued: 3 });
    assert.equal(messages().filter((m) => /queue is full/.test(m)).length, 1, 'one warning per outage');

    await nats.restart();
    await waitFor(() => pub.stats.queued === 0, { timeoutMs: 15_000, what: 'queue flushed after reconnect' });
    const after = await testClient(nats.url);
    try {
      const jsm2 = await jetstreamManager(after);
      await waitFor(async () => (await jsm2.streams.info('OUTAGE')).state.messages === 4, {
        timeoutMs: 10_000,
        what: 'all published events stored',
      });
      const names: string[] = [];
      for (let seq = 1; seq <= 4; seq++) {
        const sm = await jsm2.streams.getMessage('OUTAGE', { seq });
        names.push(sm?.json<{ username: string }>().username ?? '?');
      }
      assert.deepEqual(names, ['before', 'u0', 'u1', 'u2']);
      assert.equal(pub.stats.published, 4);
      // Back to direct publishing.
      assert.equal(pub.publish(failure({ username: 'later' })), 'published');
    } finally {
      await after.close();
    }
  });
});
