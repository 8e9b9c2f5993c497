// Pre-authentication limits and backoff through the production entry with the real OpenSSH client:
// 1000 idle or slow (version line, then nothing) sockets, held open on loopback, do not keep a
// legitimate user from logging in, whether they come from one source (the per-source cap refuses all
// but `maxStartupsPerSource` before key exchange) or from 100 sources (all held, under maxStartups);
// repeated wrong keys from one address are answered late, then that address is refused, while other
// addresses log in normally.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { waitFor } from '../../helpers/wait.js';
import {
  freePort,
  GatewayProcess,
  httpGet,
  killAll,
  rssKiB,
  ssh,
  startServices,
  writeConfig,
  type ProdServices,
} from './harness.js';

const SOCKETS = 1000;
const PER_SOURCE = 10;

describe('pre-authentication limits and backoff, production entry', { timeout: 600_000 }, () => {
  let s: ProdServices;
  let g: GatewayProcess;
  let metricsUrl = '';
  const held = new Set<net.Socket>();

  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
    sampleValue(parsePrometheusText((await httpGet(`${metricsUrl}/metrics`)).body), name, labels) ?? 0;

  /** Opens `count` sockets from `source(i)`, half idle and half slow; bounded batches. */
  async function flood(count: number, source: (i: number) => string): Promise<net.Socket[]> {
    const out: net.Socket[] = [];
    for (let i = 0; i < count; i += 100) {
      const batch = Array.from({ length: Math.min(100, count - i) }, async (_, k) => {
        const n = i + k;
        const sock = net.connect({ host: '127.0.0.1', port: g.port, localAddress: source(n) });
        held.add(sock);
        sock.on('error', () => undefined);
        sock.on('data', () => undefined);
        sock.on('close', () => held.delete(sock));
        await once(sock, 'connect');
        if (n % 2 === 1) sock.write('SSH-2.0-slow_client\r\n');
        return sock;
      });
      out.push(...(await Promise.all(batch)));
    }
    return out;
  }

  function release(socks: net.Socket[]): void {
    for (const sock of socks) sock.destroy();
  }

  before(async () => {
    s = await startServices();
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}`;
    const config = s.config(await freePort(), {
      server: {
        // Room for 1000 sockets from many sources; per source the default cap.
        maxStartups: 2000,
        maxStartupsPerSource: PER_SOURCE,
        // Idle sockets stay for the whole test.
        SSHHandshakeTimeout: 300,
        authBackoff: {
          freeFailures: 2,
          baseDelay: 0.2,
          maxDelay: 1,
          maxUserDelay: 0.5,
          refuseAfter: 5,
          refuseFor: 600,
          forgetAfter: 1800,
        },
      },
      metrics: { address: `127.0.0.1:${metricsPort}` },
    });
    g = await GatewayProcess.start(writeConfig(s.dir, 'gateway.yaml', config));
    // The workspace exists before the floods, so a login measures the gateway, not a workspace start.
    const warm = await ssh(s, g.port, s.user, ['true']);
    assert.equal(warm.code, 0, warm.stderr);
  });

  after(async () => {
    for (const sock of held) sock.destroy();
    await g?.stop();
    killAll();
    await s?.stop();
  });

  it(`${SOCKETS} idle and slow sockets from one source: all but ${PER_SOURCE} refused before key exchange; another address logs in`, async (t) => {
    const rejected0 = await metric('sshproxy_preauth_rejections_total', {
      reason: 'max-startups-per-source',
    });
    const socks = await flood(SOCKETS, () => '127.0.0.5');
    await waitFor(
      async () =>
        (await metric('sshproxy_preauth_rejections_total', { reason: 'max-startups-per-source' })) ===
        rejected0 + SOCKETS - PER_SOURCE,
      { timeoutMs: 60_000, intervalMs: 200, what: 'the refusals to be counted' },
    );
    // The refused ones are closed by the gateway; the admitted ones stay.
    await waitFor(() => socks.filter((x) => !x.destroyed).length === PER_SOURCE, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: `only ${PER_SOURCE} sockets to stay open`,
    });
    assert.equal(await metric('sshproxy_connections_unauthenticated'), PER_SOURCE);
    const started = Date.now();
    const r = await ssh(s, g.port, s.user, ['echo', 'logged-in'], { bind: '127.0.0.2' });
    t.diagnostic(`login from 127.0.0.2 next to the flood: ${Date.now() - started} ms`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'logged-in\n');
    assert.equal(await metric('sshproxy_connections_unauthenticated'), PER_SOURCE);
    // What a refused client sees (the real OpenSSH client, from the flooding source).
    const refused = await ssh(s, g.port, s.user, ['true'], { bind: '127.0.0.5', logLevel: 'INFO' });
    assert.equal(refused.code, 255);
    assert.match(refused.stderr, /Received disconnect from 127\.0\.0\.1 port \d+:12: too many connections/);
    release(socks);
    await waitFor(async () => (await metric('sshproxy_connections_unauthenticated')) === 0, {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  });

  it(`${SOCKETS} idle and slow sockets from 100 sources held open at once; a real login still succeeds`, async (t) => {
    const rss0 = rssKiB(g.pid);
    const socks = await flood(SOCKETS, (i) => `127.0.1.${1 + (i % 100)}`);
    await waitFor(async () => (await metric('sshproxy_connections_unauthenticated')) === SOCKETS, {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: `${SOCKETS} unauthenticated connections`,
    });
    t.diagnostic(
      `gateway RSS with ${SOCKETS} pre-auth sockets: +${Math.round((rssKiB(g.pid) - rss0) / 1024)} MiB`,
    );
    const started = Date.now();
    const r = await ssh(s, g.port, s.user, ['echo', 'logged-in'], { bind: '127.0.0.2' });
    t.diagnostic(`login from 127.0.0.2 with ${SOCKETS} sockets held: ${Date.now() - started} ms`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'logged-in\n');
    // None of the flood was dropped meanwhile.
    assert.equal(socks.filter((x) => x.destroyed).length, 0);
    assert.equal(await metric('sshproxy_connections_unauthenticated'), SOCKETS);
    release(socks);
    await waitFor(async () => (await metric('sshproxy_connections_unauthenticated')) === 0, {
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  });

  it('wrong keys from one address are answered later and later, then the address is refused; others log in', async () => {
    const from = g.lines.length;
    const penalty0 = await metric('sshproxy_preauth_rejections_total', { reason: 'penalty' });
    const attempts: { code: number | null; stderr: string }[] = [];
    // refuseAfter is 5: the sixth connection must be refused; stop at 8 whatever happens.
    for (let i = 0; i < 8; i++) {
      const r = await ssh(s, g.port, 'bob', ['true'], {
        bind: '127.0.0.3',
        key: s.keys.stranger,
        logLevel: 'INFO',
      });
      attempts.push(r);
      if (/too many authentication failures from your address/.test(r.stderr)) break;
    }
    const denied = attempts.filter((a) => /Permission denied \(publickey/.test(a.stderr));
    assert.equal(denied.length, 5, attempts.map((a) => a.stderr).join('\n---\n'));
    const last = attempts.at(-1);
    assert.equal(attempts.length, 6);
    assert.equal(last?.code, 255);
    assert.match(
      last?.stderr ?? '',
      /Received disconnect from 127\.0\.0\.1 port \d+:12: too many authentication failures from your address; try again later/,
    );
    // The third to fifth failures were answered after doubling delays (freeFailures 2, base 200 ms).
    const delays = g
      .find((l) => l.msg === 'authentication failure answered after a backoff delay')
      .filter((l) => g.lines.indexOf(l) >= from);
    assert.deepEqual(
      delays.map((l) => l.delayMs),
      [200, 400, 800],
    );
    for (const l of delays) assert.match(String(l.conn), /^local-/);
    const refusal = await g.waitLog(
      (l) => l.msg === 'connection refused before key exchange' && l.reason === 'penalty',
      'the refusal line',
      30_000,
      from,
    );
    assert.match(String(refusal.client), /^127\.0\.0\.3:\d+$/);
    assert.equal(await metric('sshproxy_preauth_rejections_total', { reason: 'penalty' }), penalty0 + 1);

    // The refused address stays refused even with the right key …
    const right = await ssh(s, g.port, 'bob', ['true'], { bind: '127.0.0.3', key: s.keys.bob });
    assert.equal(right.code, 255);
    // … while other addresses log in normally, bob too (users are slowed, never refused).
    const other = await ssh(s, g.port, s.user, ['echo', 'fine'], { bind: '127.0.0.2' });
    assert.equal(other.code, 0, other.stderr);
    assert.equal(other.stdout.toString(), 'fine\n');
    const bob = await ssh(s, g.port, 'bob', ['echo', 'bob-fine'], { bind: '127.0.0.4', key: s.keys.bob });
    assert.equal(bob.code, 0, bob.stderr);
    assert.equal(bob.stdout.toString(), 'bob-fine\n');
  });
});
