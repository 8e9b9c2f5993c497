// Pre-authentication limits in forking mode (`server.forking: true`), production entry, real OpenSSH
// client: the parent admits before it forks, so a flood of idle pre-auth sockets costs at most
// maxStartups child processes while a real login succeeds; authentication failures count across
// children (slowed, then the source is refused by the parent); and behind a trusted PROXY relay the
// per-source cap applies to the header's client, not to the relay.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { waitFor } from '../../helpers/wait.js';
import {
  childrenOf,
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

const MAX_STARTUPS = 30;
const PER_SOURCE = 8;
const FLOOD = 300;
const FLOOD_SOURCES = ['127.0.0.5', '127.0.0.6', '127.0.0.7'];
/** The relay's own address: the only PROXY source the gateway trusts. */
const RELAY_IP = '127.0.0.9';

/**
 * A PROXY v1 relay: each client 127.0.0.X is forwarded from RELAY_IP with a header naming
 * 198.51.100.X, so several clients behind one relay have addresses of their own.
 */
async function startRelay(target: () => number): Promise<{ port: number; close(): void }> {
  const server = net.createServer((client) => {
    const x = (client.remoteAddress ?? '').split('.').pop() ?? '0';
    const up = net.connect({ host: '127.0.0.1', port: target(), localAddress: RELAY_IP });
    up.write(`PROXY TCP4 198.51.100.${x} 127.0.0.1 ${client.remotePort ?? 0} 22\r\n`);
    client.pipe(up);
    up.pipe(client);
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('error', end);
    up.on('error', end);
    client.on('close', end);
    up.on('close', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => server.close(),
  };
}

/** CPU ticks (user + system) the processes have used so far; 0 for those gone. */
function cpuTicks(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return sum;
}

describe('pre-authentication limits across forked children, production entry', { timeout: 900_000 }, () => {
  let s: ProdServices;
  let g: GatewayProcess;
  let relay: { port: number; close(): void };
  let metricsUrl = '';
  const held = new Set<net.Socket>();

  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> =>
    sampleValue(parsePrometheusText((await httpGet(`${metricsUrl}/metrics`)).body), name, labels) ?? 0;

  /** Opens `count` sockets to `port` from `source(i)`, half idle and half slow; bounded batches. */
  async function flood(count: number, source: (i: number) => string, port = g.port): Promise<net.Socket[]> {
    const out: net.Socket[] = [];
    for (let i = 0; i < count; i += 50) {
      const batch = Array.from({ length: Math.min(50, count - i) }, async (_, k) => {
        const n = i + k;
        const sock = net.connect({ host: '127.0.0.1', port, localAddress: source(n) });
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

  const open = (socks: net.Socket[]): number => socks.filter((x) => !x.destroyed).length;
  const started = (from: number): number =>
    g.lines.slice(from).filter((l) => l.msg === 'Child process started' && l.pid === g.pid).length;

  async function releaseAll(socks: net.Socket[]): Promise<void> {
    for (const sock of socks) sock.destroy();
    await waitFor(
      async () =>
        (await metric('sshproxy_connections_unauthenticated')) === 0 && childrenOf(g.pid).length === 0,
      { timeoutMs: 60_000, intervalMs: 100, what: 'the slots to be free and the children gone' },
    );
  }

  before(async () => {
    s = await startServices();
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}`;
    const config = s.config(await freePort(), {
      server: {
        forking: true,
        maxStartups: MAX_STARTUPS,
        maxStartupsPerSource: PER_SOURCE,
        // Idle sockets stay for the whole test.
        SSHHandshakeTimeout: 300,
        proxyProtocol: true,
        proxyProtocolTimeout: 5,
        proxyProtocolTrustedCIDRs: [`${RELAY_IP}/32`],
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
    g = await GatewayProcess.start(writeConfig(s.dir, 'forking-preauth.yaml', config));
    relay = await startRelay(() => g.port);
    // The workspace exists before the floods, so a login measures the gateway, not a workspace start.
    const warm = await ssh(s, g.port, s.user, ['true']);
    assert.equal(warm.code, 0, warm.stderr);
    await waitFor(() => childrenOf(g.pid).length === 0, { timeoutMs: 30_000, what: 'the warm-up child' });
  });

  after(async () => {
    for (const sock of held) sock.destroy();
    relay?.close();
    await g?.stop();
    killAll();
    await s?.stop();
  });

  it(`${FLOOD} idle and slow sockets: refused before a child is spawned, children bounded by maxStartups; a real login succeeds`, async (t) => {
    let t0 = Date.now();
    const base = await ssh(s, g.port, s.user, ['true'], { bind: '127.0.0.2' });
    t.diagnostic(`login without a flood, forking: ${Date.now() - t0} ms`);
    assert.equal(base.code, 0, base.stderr);
    await waitFor(() => childrenOf(g.pid).length === 0, { timeoutMs: 30_000, what: 'its child to exit' });
    const from = g.lines.length;
    const perSource0 = await metric('sshproxy_preauth_rejections_total', {
      reason: 'max-startups-per-source',
    });
    const admitted = FLOOD_SOURCES.length * PER_SOURCE;
    const socks = await flood(FLOOD, (i) => FLOOD_SOURCES[i % FLOOD_SOURCES.length] ?? '127.0.0.5');
    await waitFor(
      async () =>
        (await metric('sshproxy_preauth_rejections_total', { reason: 'max-startups-per-source' })) ===
        perSource0 + FLOOD - admitted,
      { timeoutMs: 120_000, intervalMs: 200, what: 'the refusals to be counted' },
    );
    await waitFor(() => open(socks) === admitted, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: `only ${admitted} sockets to stay open`,
    });
    // One child per admitted socket, none for the refused ones.
    assert.equal(started(from), admitted);
    const children = childrenOf(g.pid).length;
    t.diagnostic(`child processes with ${FLOOD} flood sockets (${admitted} admitted): ${children}`);
    assert.equal(children, admitted);
    assert.equal(await metric('sshproxy_connections_unauthenticated'), admitted);

    t0 = Date.now();
    const r = await ssh(s, g.port, s.user, ['echo', 'logged-in'], { bind: '127.0.0.2' });
    t.diagnostic(`login next to the flood while its ${admitted} children start: ${Date.now() - t0} ms`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'logged-in\n');
    // Once the flood's children are idle (their CPU time stops moving), for the cost of holding them.
    let last = -1;
    await waitFor(
      () => {
        const now = cpuTicks(childrenOf(g.pid));
        const still = now === last;
        last = now;
        return still;
      },
      { timeoutMs: 120_000, intervalMs: 500, what: 'the flood children to be idle' },
    );
    t0 = Date.now();
    const settled = await ssh(s, g.port, s.user, ['true'], { bind: '127.0.0.2' });
    t.diagnostic(`login next to ${admitted} idle flood children: ${Date.now() - t0} ms`);
    const rss = childrenOf(g.pid).reduce((sum, pid) => sum + rssKiB(pid), 0);
    t.diagnostic(`RSS of the ${admitted} flood children: ${Math.round(rss / 1024)} MiB`);
    assert.equal(settled.code, 0, settled.stderr);
    // The login's slot was freed when it authenticated (not only when its child exited).
    assert.equal(await metric('sshproxy_connections_unauthenticated'), admitted);

    // Sockets from many sources: the global cap holds, children never exceed maxStartups.
    const global0 = await metric('sshproxy_preauth_rejections_total', { reason: 'max-startups' });
    const many = await flood(100, (i) => `127.0.1.${1 + i}`);
    await waitFor(
      async () =>
        (await metric('sshproxy_preauth_rejections_total', { reason: 'max-startups' })) ===
        global0 + 100 - (MAX_STARTUPS - admitted),
      { timeoutMs: 120_000, intervalMs: 200, what: 'the global refusals to be counted' },
    );
    await waitFor(() => open(many) === MAX_STARTUPS - admitted, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: 'the rest of maxStartups to be held',
    });
    const full = childrenOf(g.pid).length;
    t.diagnostic(`child processes with maxStartups (${MAX_STARTUPS}) held: ${full}`);
    assert.ok(full <= MAX_STARTUPS, `${full} children`);
    assert.equal(await metric('sshproxy_connections_unauthenticated'), MAX_STARTUPS);
    // While every slot is held, a newcomer is refused like sshd's MaxStartups (no child for it).
    const refused = await ssh(s, g.port, s.user, ['true'], { bind: '127.0.0.2', logLevel: 'INFO' });
    assert.equal(refused.code, 255);
    assert.match(refused.stderr, /Received disconnect from 127\.0\.0\.1 port \d+:12: too many connections/);

    await releaseAll([...socks, ...many]);
    const again = await ssh(s, g.port, s.user, ['echo', 'after'], { bind: '127.0.0.2' });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.toString(), 'after\n');
  });

  it('wrong keys from one address, each connection in its own child, are slowed and then refused by the parent; others log in', async () => {
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
    assert.equal(attempts.length, 6);
    assert.equal(attempts.at(-1)?.code, 255);
    assert.match(
      attempts.at(-1)?.stderr ?? '',
      /Received disconnect from 127\.0\.0\.1 port \d+:12: too many authentication failures from your address; try again later/,
    );
    // The third to fifth failures were answered after doubling delays, each in a different child.
    const delays = g
      .find((l) => l.msg === 'authentication failure answered after a backoff delay')
      .filter((l) => g.lines.indexOf(l) >= from);
    assert.deepEqual(
      delays.map((l) => l.delayMs),
      [200, 400, 800],
    );
    const pids = new Set(delays.map((l) => l.pid));
    assert.equal(pids.size, 3, 'three children');
    assert.ok(!pids.has(g.pid));
    // The sixth was refused by the parent, before any child was spawned for it.
    const refusal = await g.waitLog(
      (l) => l.msg === 'connection refused before key exchange' && l.reason === 'penalty',
      'the refusal line',
      30_000,
      from,
    );
    assert.equal(refusal.pid, g.pid);
    assert.match(String(refusal.client), /^127\.0\.0\.3:\d+$/);
    assert.equal(started(from), 5);
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

  it("behind a trusted PROXY relay the per-source cap applies to the header's client, not to the relay", async (t) => {
    const from = g.lines.length;
    // Below maxStartups: a relayed socket holds a global slot until its child has read the header.
    const count = MAX_STARTUPS - 6;
    // All from 127.0.0.5 → header 198.51.100.5; every socket reaches the gateway from the relay.
    const socks = await flood(count, () => '127.0.0.5', relay.port);
    const refusedLines = (): number =>
      g
        .find(
          (l) =>
            l.msg === 'connection refused before key exchange' &&
            l.reason === 'max-startups-per-source' &&
            /^198\.51\.100\.5:\d+$/.test(String(l.client)),
        )
        .filter((l) => g.lines.indexOf(l) >= from).length;
    await waitFor(() => refusedLines() === count - PER_SOURCE, {
      timeoutMs: 120_000,
      intervalMs: 200,
      what: 'the refusals of the header address',
    });
    await waitFor(() => open(socks) === PER_SOURCE, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: `only ${PER_SOURCE} relayed sockets to stay open`,
    });
    assert.equal(await metric('sshproxy_connections_unauthenticated'), PER_SOURCE);
    // Another client behind the same relay has a source of its own and logs in.
    const t0 = Date.now();
    const r = await ssh(s, relay.port, s.user, ['echo', '$SSH_CLIENT'], { bind: '127.0.0.2' });
    t.diagnostic(`login through the relay next to the relayed flood: ${Date.now() - t0} ms`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /^198\.51\.100\.2 \d+ 22\n$/);
    await releaseAll(socks);
  });
});
