import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Client, credentials, Server, ServerCredentials } from '@grpc/grpc-js';

import {
  gatewayReadiness,
  grpcProbe,
  parseListenAddress,
  startHealthServer,
  type HealthServer,
} from '../../src/ops/health.js';
import { GatewayMetrics, metricsMarkdownTable } from '../../src/ops/metrics.js';
import { parsePrometheusText, sampleValue, type Family } from '../helpers/prom-text.js';

async function get(
  port: number,
  path: string,
  method = 'GET',
): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method, signal: AbortSignal.timeout(10_000) });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

describe('prom-text parser (the checker itself must reject bad input)', () => {
  const bad = [
    'x 1\n', // no TYPE
    '# TYPE x counter\nx{a="1} 1\n',
    '# TYPE x counter\nx{a="\\q"} 1\n',
    '# TYPE x counter\nx one\n',
    '# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx{a="b"} 2\n',
    '# TYPE x gauge\nx 1\nx 2\n',
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
    '# TYPE x gauge\nx 1',
  ];
  for (const t of bad) it(`rejects ${JSON.stringify(t)}`, () => assert.throws(() => parsePrometheusText(t)));
  it('accepts escapes, +Inf, NaN in prom-client spelling and timestamps', () => {
    assert.ok(Number.isNaN(sampleValue(parsePrometheusText('# TYPE y gauge\ny Nan\n'), 'y')));
    const f = parsePrometheusText('# HELP x a\\nb\n# TYPE x gauge\nx{a="q\\"\\\\"} +Inf 1700000000000\n');
    assert.equal(f.get('x')?.help, 'a\nb');
    assert.equal(sampleValue(f, 'x', { a: 'q"\\' }), Infinity);
  });
});

describe('metrics and health endpoints', () => {
  let metrics: GatewayMetrics;
  let server: HealthServer;
  let draining = false;
  let listening = true;
  let backendFails = false;

  before(async () => {
    metrics = new GatewayMetrics({ version: 'v1.2.3', commit: 'abcdef0' });
    server = await startHealthServer({
      address: '127.0.0.1:0',
      metrics,
      readiness: gatewayReadiness({
        listening: () => listening,
        draining: () => draining,
        backends: {
          identity: async () => {
            if (backendFails) throw new Error('connection refused');
          },
        },
        cacheMs: 0,
      }),
    });
  });
  after(() => server.close());

  async function scrape(): Promise<Map<string, Family>> {
    const r = await get(server.port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    return parsePrometheusText(r.body);
  }

  it('/metrics parses strictly and follows the naming conventions; default process metrics included', async () => {
    const f = await scrape();
    const ours = [...f.values()].filter((x) => x.name.startsWith('sshproxy_'));
    assert.ok(ours.length >= 20, `${ours.length} families`);
    for (const x of ours) {
      assert.ok(x.help && x.help.length > 10, `${x.name} has help`);
      if (x.type === 'counter') assert.match(x.name, /_total$/, x.name);
      else assert.doesNotMatch(x.name, /_total$/, x.name);
      if (x.type === 'histogram') assert.match(x.name, /_(seconds|bytes)$/, x.name);
      if (/duration|latency/.test(x.name)) assert.match(x.name, /_seconds$/);
      for (const s of x.samples) {
        for (const label of Object.keys(s.labels)) {
          assert.doesNotMatch(label, /user|ip|addr|conn|id$|host|name/i, `${x.name} label ${label}`);
        }
      }
    }
    assert.ok(f.has('process_cpu_user_seconds_total'));
    assert.ok(f.has('nodejs_eventloop_lag_seconds'));
    assert.equal(sampleValue(f, 'sshproxy_build_info', { version: 'v1.2.3', commit: 'abcdef0' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_connections_open'), 0);
  });

  it('counters, gauges and histograms move when the API is called; closers count once', async () => {
    const before = await scrape();
    const total0 = sampleValue(before, 'sshproxy_connections_total') ?? 0;
    const doneConn = metrics.connectionOpened();
    const doneChan = metrics.channelOpened('session');
    metrics.channelOpened('direct-tcpip')();
    metrics.sessionStarted('shell');
    metrics.auth('publickey', 'failure');
    metrics.auth('publickey', 'success');
    metrics.auth('gssapi-with-mic', 'failure');
    metrics.workspaceStart('ready', 3.2);
    metrics.bytesRelayed('session', 'client_to_workspace', 1000);
    metrics.bytesRelayed('session', 'workspace_to_client', 5000);
    metrics.authz('ssh:shell', 'allowed', 0.004);
    metrics.authz('ssh:exec', 'denied', 0.02);
    const doneRec = metrics.recordingOpened('shell');
    metrics.recordingDropped('shell', 'overflow', 4096);
    metrics.backendCall('identity', 'FindUser', 0.012);
    metrics.backendCall('provisioner', 'EnsureWorkspace', 0.5, 'UNAVAILABLE');
    metrics.backendCall('identity', 'bad method name!', 0.1, 'nonsense code');
    metrics.preauthRejected('max-startups-per-source');
    const reap = metrics.childStarted();
    metrics.setDraining(true);

    let f = await scrape();
    assert.equal(sampleValue(f, 'sshproxy_connections_total'), total0 + 1);
    assert.equal(sampleValue(f, 'sshproxy_connections_open'), 1);
    assert.equal(sampleValue(f, 'sshproxy_channels_open', { kind: 'session' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_channels_open', { kind: 'direct-tcpip' }), 0);
    assert.equal(sampleValue(f, 'sshproxy_channels_total', { kind: 'direct-tcpip' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_sessions_total', { type: 'shell' }), 1);
    assert.equal(
      sampleValue(f, 'sshproxy_authentications_total', { method: 'publickey', result: 'failure' }),
      1,
    );
    assert.equal(sampleValue(f, 'sshproxy_authentications_total', { method: 'other', result: 'failure' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_workspace_starts_total', { outcome: 'ready' }), 1);
    assert.equal(
      sampleValue(f, 'sshproxy_workspace_start_duration_seconds_bucket', { outcome: 'ready', le: '2.5' }),
      0,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_workspace_start_duration_seconds_bucket', { outcome: 'ready', le: '5' }),
      1,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_relayed_bytes_total', { kind: 'session', direction: 'workspace_to_client' }),
      5000,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_authz_decisions_total', { action: 'ssh:exec', decision: 'denied' }),
      1,
    );
    assert.equal(sampleValue(f, 'sshproxy_authz_duration_seconds_count', { action: 'ssh:shell' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_recording_streams_open', { kind: 'shell' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_recording_drops_total', { kind: 'shell', reason: 'overflow' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_recording_dropped_bytes_total', { kind: 'shell' }), 4096);
    assert.equal(
      sampleValue(f, 'sshproxy_backend_errors_total', {
        service: 'provisioner',
        method: 'EnsureWorkspace',
        code: 'UNAVAILABLE',
      }),
      1,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_backend_errors_total', {
        service: 'identity',
        method: 'other',
        code: 'other',
      }),
      1,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_backend_request_duration_seconds_count', {
        service: 'identity',
        method: 'FindUser',
      }),
      1,
    );
    assert.equal(
      sampleValue(f, 'sshproxy_preauth_rejections_total', { reason: 'max-startups-per-source' }),
      1,
    );
    assert.equal(sampleValue(f, 'sshproxy_child_processes'), 1);
    assert.equal(sampleValue(f, 'sshproxy_draining'), 1);

    doneConn();
    doneConn();
    doneChan();
    doneChan();
    doneRec();
    reap('error');
    reap('ok');
    metrics.setDraining(false);
    f = await scrape();
    assert.equal(sampleValue(f, 'sshproxy_connections_open'), 0);
    assert.equal(sampleValue(f, 'sshproxy_channels_open', { kind: 'session' }), 0);
    assert.equal(sampleValue(f, 'sshproxy_recording_streams_open', { kind: 'shell' }), 0);
    assert.equal(sampleValue(f, 'sshproxy_child_processes'), 0);
    assert.equal(sampleValue(f, 'sshproxy_child_process_exits_total', { outcome: 'error' }), 1);
    assert.equal(sampleValue(f, 'sshproxy_child_process_exits_total', { outcome: 'ok' }), undefined);
  });

  it('/healthz answers 200; unknown paths 404; other methods 405', async () => {
    const h = await get(server.port, '/healthz');
    assert.equal(h.status, 200);
    assert.deepEqual(JSON.parse(h.body), { status: 'ok' });
    assert.equal((await get(server.port, '/nope')).status, 404);
    assert.equal((await get(server.port, '/metrics', 'POST')).status, 405);
  });

  it('/readyz flips with draining, the listener and a failing backend, naming the failed check', async () => {
    let r = await get(server.port, '/readyz');
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).status, 'ready');

    draining = true;
    r = await get(server.port, '/readyz');
    assert.equal(r.status, 503);
    assert.deepEqual(JSON.parse(r.body).failed, ['not_draining']);
    draining = false;

    listening = false;
    backendFails = true;
    r = await get(server.port, '/readyz');
    assert.equal(r.status, 503);
    const body = JSON.parse(r.body) as { failed: string[]; checks: Record<string, { detail?: string }> };
    assert.deepEqual(body.failed, ['listening', 'identity']);
    assert.equal(body.checks.identity?.detail, 'connection refused');
    listening = true;
    backendFails = false;
    assert.equal((await get(server.port, '/readyz')).status, 200);
  });
});

describe('readiness deadlines and probes', () => {
  it('a hanging backend probe fails by its deadline; results are cached and shared', async () => {
    let calls = 0;
    let t = 0;
    const ready = gatewayReadiness({
      listening: () => true,
      draining: () => false,
      backends: {
        slow: () => {
          calls++;
          return new Promise<void>(() => {});
        },
      },
      probeTimeoutMs: 50,
      cacheMs: 1000,
      now: () => t,
    });
    const [a, b] = await Promise.all([ready(), ready()]);
    assert.equal(a.slow?.ok, false);
    assert.match(a.slow?.detail ?? '', /slow did not answer within 50 ms/);
    assert.deepEqual(a, b);
    await ready();
    assert.equal(calls, 1);
    t = 1000;
    await ready();
    assert.equal(calls, 2);
  });

  it('a readiness callback that never answers gives 503 by the server deadline', async () => {
    const s = await startHealthServer({
      address: '127.0.0.1:0',
      metrics: new GatewayMetrics({ defaultMetrics: false }),
      readiness: () => new Promise(() => {}),
      readyTimeoutMs: 100,
    });
    try {
      const r = await get(s.port, '/readyz');
      assert.equal(r.status, 503);
      assert.deepEqual(JSON.parse(r.body).failed, ['readiness']);
    } finally {
      await s.close();
    }
  });

  it('grpcProbe: ready against a real gRPC server, failing against a closed port', async () => {
    const grpcServer = new Server();
    const port = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const up = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    await grpcProbe(up, 5000)();
    up.close();
    grpcServer.forceShutdown();

    const closed = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => closed.once('listening', r));
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const down = new Client(`127.0.0.1:${deadPort}`, credentials.createInsecure());
    await assert.rejects(grpcProbe(down, 300)());
    down.close();
  });

  it('parseListenAddress', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:9100'), { host: '127.0.0.1', port: 9100 });
    assert.deepEqual(parseListenAddress(':9100'), { host: undefined, port: 9100 });
    assert.deepEqual(parseListenAddress('[::1]:9100'), { host: '::1', port: 9100 });
    assert.deepEqual(parseListenAddress('localhost:0'), { host: 'localhost', port: 0 });
    for (const bad of ['9100', '::1:9100', 'host:', 'host:70000', 'a:b'])
      assert.throws(() => parseListenAddress(bad), bad);
  });
});

describe('docs/operating.md', () => {
  it('lists exactly the metrics the module registers (regenerate: npx tsx scripts/metrics-doc.ts)', async () => {
    const doc = readFileSync(new URL('../../docs/operating.md', import.meta.url), 'utf8');
    const m = /<!-- metrics:begin -->\n([\s\S]*?)<!-- metrics:end -->/.exec(doc);
    assert.ok(m, 'metrics markers in docs/operating.md');
    assert.equal(m[1], await metricsMarkdownTable());
  });
});
