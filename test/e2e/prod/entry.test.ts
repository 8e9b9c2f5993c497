// The production entry (`node dist/cli/ssh-proxy.js --config <file>`, in-process mode) against the
// local services over TLS with token files, driven by the real OpenSSH client: start-up and
// handshake-failure log lines with their connection ids, the process guards (an uncaught exception
// and an unhandled rejection in one connection leave the process serving others), /metrics counters
// moving with real sessions, /healthz and /readyz, and the control service with TLS, service-account
// tokens checked against a JWKS served here, ListConnections and EndConnection.
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { SSHProxyAdminServiceClient, type Connection } from '../../../src/gen/sshproxy/admin/v1/admin.js';
import { SSHProxyServiceClient } from '../../../src/gen/sshproxy/v1/sshproxy.js';
import { parsePrometheusText, sampleValue, type Family } from '../../helpers/prom-text.js';
import { waitFor } from '../../helpers/wait.js';
import { Processes, waitWhileRunning } from '../fwd-helpers/proc.js';
import { startEcho, type Running } from '../fwd-helpers/servers.js';
import {
  freePort,
  GatewayProcess,
  httpGet,
  killAll,
  makePki,
  sshArgs,
  ssh,
  startServices,
  writeConfig,
  type LogLine,
  type Pki,
  type ProdServices,
} from './harness.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });

function jwt(key: KeyObject, claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const data = `${b64({ alg: 'RS256', kid: 'k1' })}.${b64(claims)}`;
  return `${data}.${sign('sha256', Buffer.from(data), key).toString('base64url')}`;
}

/** The issuer's JWKS on loopback (`<issuer>/openid/v1/jwks`), as a Kubernetes API server serves it. */
async function jwksServer(): Promise<{ issuer: string; close(): Promise<void> }> {
  const jwk = { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' };
  const server = http.createServer((req, res) => {
    if (req.url !== '/openid/v1/jwks') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    issuer: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe(
  'production entry: TLS and token files, log lines, guards, metrics, control service',
  {
    timeout: 600_000,
  },
  () => {
    let s: ProdServices;
    let g: GatewayProcess;
    let jwks: Awaited<ReturnType<typeof jwksServer>>;
    let controlPki: Pki;
    let controlPort = 0;
    let metricsUrl = '';
    let echo: Running;
    const procs = new Processes();
    const token = (sub: string, key: KeyObject = rsa.privateKey) =>
      jwt(key, {
        iss: jwks.issuer,
        aud: 'ssh-proxy',
        sub,
        exp: Math.floor(Date.now() / 1000) + 600,
      });
    const md = (t: string): Metadata => {
      const m = new Metadata();
      m.set('authorization', `Bearer ${t}`);
      return m;
    };
    const tlsCreds = () => credentials.createSsl(readFileSync(controlPki.ca));
    const metrics = async (): Promise<Map<string, Family>> => {
      const r = await httpGet(`${metricsUrl}/metrics`);
      assert.equal(r.status, 200);
      return parsePrometheusText(r.body);
    };
    /**
     * The connection id of the session that ran `program` (its first word), from the gateway's first
     * `exec requested` line for it at or after line `from`.
     */
    const connOfExec = (program: string, from = 0): Promise<string> =>
      g
        .waitLog((l) => l.msg === 'exec requested' && l.program === program, `exec ${program}`, 30_000, from)
        .then((l) => String(l.conn));

    before(async () => {
      s = await startServices({ tls: true, tokens: true, policy: true });
      jwks = await jwksServer();
      controlPki = makePki(s.dir.join('control-pki'), 'control');
      controlPort = await freePort();
      const metricsPort = await freePort();
      metricsUrl = `http://127.0.0.1:${metricsPort}`;
      echo = await startEcho();
      const config = s.config(await freePort(), {
        metrics: { address: `127.0.0.1:${metricsPort}` },
        grpc: {
          port: controlPort,
          bindAddress: '127.0.0.1',
          enableTLS: true,
          certFile: controlPki.cert,
          keyFile: controlPki.key,
          authEnabled: true,
          issuerURL: jwks.issuer,
          audience: 'ssh-proxy',
          allowed: [{ namespace: 'ops', serviceAccount: '*' }],
          adminService: true,
        },
      });
      g = await GatewayProcess.start(writeConfig(s.dir, 'gateway.yaml', config), {
        SSH_PROXY_TEST_HOOKS: '1',
      });
      await g.waitLog((l) => l.msg === 'Starting gRPC control interface', 'the control interface');
    });

    after(async () => {
      await procs.stopAll();
      await g?.stop();
      killAll();
      await echo?.close();
      await jwks?.close();
      await s?.stop();
    });

    it('logs the reference start-up lines in order; no configured key is refused', () => {
      const msgs = g.lines.map((l) => l.msg);
      const at = (m: string | RegExp) => msgs.findIndex((x) => (typeof m === 'string' ? x === m : m.test(x)));
      const order = [
        at('Starting SSH proxy server'),
        at(/^SSH server version: SSH-2\.0-ssh-proxy_[^/]+\/[0-9a-f]+_k8shell\.io$/),
        at('SSH server initialized with server key: ssh-ed25519'),
        at('SSH proxy server listening'),
      ];
      assert.ok(
        order.every((i, k) => i >= 0 && (k === 0 || i > (order[k - 1] ?? 0))),
        `${JSON.stringify(order)}\n${g.tail(30)}`,
      );
      assert.ok(at('Starting gRPC control interface') >= 0, g.tail(30));
      assert.equal(g.find((l) => /not supported yet/.test(l.msg)).length, 0);
      assert.deepEqual(g.other, [], 'every stdout line is JSON');
    });

    it('a session over TLS and bearer tokens; the session service records it with the client address', async () => {
      const from = g.lines.length;
      const r = await ssh(s, g.port, s.user, ['echo', 'over-tls']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'over-tls\n');
      const conn = await connOfExec('echo', from);
      const stored = await waitFor(() => s.storedSessions().find((x) => x.id === conn && x.endTime > 0), {
        timeoutMs: 30_000,
        what: 'the ended session in the session service',
      });
      assert.equal(stored.username, s.user);
      assert.equal(stored.clientIp, '127.0.0.1');
      assert.deepEqual(stored.operations, ['ex']);
    });

    for (const hook of ['throw-async', 'reject'] as const) {
      it(`process guard: ssh-proxy-test:${hook} is logged with its connection id; another user is served`, async () => {
        const program = `ssh-proxy-test:${hook}`;
        const from = g.lines.length;
        const r = await ssh(s, g.port, s.user, [program]);
        // The hook fires beside the handler; the command itself then runs (and is not found).
        assert.equal(r.code, 127, r.stderr);
        const conn = await connOfExec(program, from);
        const want = hook === 'throw-async' ? 'uncaught exception' : 'unhandled rejection';
        const line = await g.waitLog((l) => l.msg.startsWith(want), `the ${want} line`, 30_000, from);
        assert.equal(line.conn, conn, JSON.stringify(line));
        assert.equal(line.level, 50);
        const bob = await ssh(s, g.port, 'bob', ['echo', `bob-after-${hook}`], { key: s.keys.bob });
        assert.equal(bob.code, 0, bob.stderr);
        assert.equal(bob.stdout.toString(), `bob-after-${hook}\n`);
        assert.equal(g.proc.exitCode, null);
      });
    }

    it('handshake failures: every line carries the connection id of its connection', async () => {
      const before = g.lines.length;
      // A port probe: connect, read the server's version line, close without sending a byte.
      const probe = net.connect({ host: '127.0.0.1', port: g.port });
      probe.on('error', () => undefined);
      await new Promise<void>((resolve) => probe.once('data', () => resolve()));
      const probePort = probe.localPort;
      probe.end();
      // Not SSH at all.
      const junk = net.connect({ host: '127.0.0.1', port: g.port });
      junk.on('error', () => undefined);
      junk.on('data', () => undefined);
      junk.write('GET / HTTP/1.0\r\n\r\n');
      const junkPort = await new Promise<number | undefined>((r) =>
        junk.once('connect', () => r(junk.localPort)),
      );
      // A real client that agrees on no key exchange.
      const kex = await ssh(s, g.port, s.user, ['true'], {
        extra: ['-o', 'KexAlgorithms=diffie-hellman-group1-sha1'],
      });
      assert.equal(kex.code, 255);
      const failed = (port: number | undefined): Promise<LogLine> =>
        g.waitLog(
          (l) => l.msg.startsWith('Failed to perform SSH handshake: ') && l.client === `127.0.0.1:${port}`,
          `the handshake failure of port ${port}`,
          30_000,
          before,
        );
      const p = await failed(probePort);
      assert.equal(
        p.msg,
        'Failed to perform SSH handshake: connection closed before the SSH version exchange',
      );
      const j = await failed(junkPort);
      assert.match(j.msg, /during the SSH version exchange/);
      const k = await g.waitLog(
        (l) =>
          l.msg.startsWith('Failed to perform SSH handshake: ') && l.conn !== p.conn && l.conn !== j.conn,
        'the key-exchange failure',
        30_000,
        before,
      );
      for (const l of [p, j, k]) assert.match(String(l.conn), /^local-\d+-[a-z0-9]+$/, JSON.stringify(l));
      assert.notEqual(p.conn, j.conn);
      // The key-exchange failure belongs to the connection whose client version was logged.
      const accepted = g.find((l) => l.msg === 'connection accepted' && l.conn === k.conn);
      assert.equal(accepted.length, 1, JSON.stringify(k));
      junk.destroy();
    });

    it('/metrics parses as Prometheus text and its counters move with real sessions; /healthz, /readyz', async () => {
      const m0 = await metrics();
      const v = (m: Map<string, Family>, name: string, labels: Record<string, string> = {}) =>
        sampleValue(m, name, labels) ?? 0;
      // An exec, an sftp session and a direct-tcpip channel.
      const r = await ssh(s, g.port, s.user, ['head', '-c', '5000', '/dev/zero']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, 5000);
      const w = await ssh(s, g.port, s.user, [], {
        extra: ['-W', `127.0.0.1:${echo.port}`],
        input: 'ping over direct-tcpip\n',
      });
      // The echo server reports the EOF that travelled through the channel.
      assert.equal(w.stdout.toString(), 'ping over direct-tcpip\nEOF-SEEN\n', w.stderr);
      const bad = await ssh(s, g.port, s.user, ['true'], { key: s.keys.stranger });
      assert.equal(bad.code, 255);
      // Counters are updated as connections close; wait until the last one is counted.
      const m1 = await waitFor(
        async () => {
          const m = await metrics();
          return v(m, 'sshproxy_connections_open') === 0 &&
            v(m, 'sshproxy_connections_total') >= v(m0, 'sshproxy_connections_total') + 3
            ? m
            : undefined;
        },
        { timeoutMs: 30_000, what: 'the connections to be counted' },
      );
      const moved = (name: string, labels: Record<string, string> = {}) =>
        v(m1, name, labels) - v(m0, name, labels);
      assert.ok(moved('sshproxy_channels_total', { kind: 'session' }) >= 1);
      assert.ok(moved('sshproxy_channels_total', { kind: 'direct-tcpip' }) >= 1);
      assert.ok(moved('sshproxy_sessions_total', { type: 'exec' }) >= 1);
      assert.ok(moved('sshproxy_authentications_total', { method: 'publickey', result: 'success' }) >= 2);
      assert.ok(moved('sshproxy_authentications_total', { method: 'publickey', result: 'failure' }) >= 1);
      assert.ok(
        moved('sshproxy_relayed_bytes_total', { kind: 'session', direction: 'workspace_to_client' }) >= 5000,
      );
      assert.ok(
        moved('sshproxy_relayed_bytes_total', { kind: 'direct-tcpip', direction: 'client_to_workspace' }) >=
          23,
      );
      assert.ok(moved('sshproxy_authz_decisions_total', { action: 'ssh:exec', decision: 'allowed' }) >= 1);
      assert.ok(
        moved('sshproxy_authz_decisions_total', { action: 'ssh:direct-tcpip', decision: 'allowed' }) >= 1,
      );
      // The workspace was started by the first test's session (counted once, ready).
      assert.ok(v(m1, 'sshproxy_workspace_starts_total', { outcome: 'ready' }) >= 1);
      assert.ok(v(m1, 'sshproxy_workspace_start_duration_seconds_count', { outcome: 'ready' }) >= 1);
      assert.equal(v(m1, 'sshproxy_draining'), 0);
      assert.equal(v(m1, 'sshproxy_connections_unauthenticated'), 0);
      const info = m1.get('sshproxy_build_info')?.samples ?? [];
      assert.equal(info.length, 1);
      assert.equal(info[0]?.value, 1);
      assert.match(info[0]?.labels.commit ?? '', /^[0-9a-f]{7,}$/);

      const h = await httpGet(`${metricsUrl}/healthz`);
      assert.equal(h.status, 200);
      const ready = await httpGet(`${metricsUrl}/readyz`);
      assert.equal(ready.status, 200, ready.body);
      const body = JSON.parse(ready.body) as { status: string; checks: Record<string, { ok: boolean }> };
      assert.equal(body.status, 'ready');
      // The backends over TLS with tokens were probed.
      assert.equal(body.checks.identity?.ok, true);
      assert.equal(body.checks.provisioner?.ok, true);
    });

    it('control service: GetVersionInfo over TLS with a service-account token; a bad token is rejected', async () => {
      const c = new SSHProxyServiceClient(`localhost:${controlPort}`, tlsCreds());
      const call = (t: string) =>
        new Promise<{ version: string; commitId: string; description: string }>((resolve, reject) =>
          c.getVersionInfo({}, md(t), { deadline: Date.now() + 15_000 }, (e, r) =>
            e ? reject(e) : resolve(r),
          ),
        );
      try {
        const v = await call(token('system:serviceaccount:ops:oncall'));
        assert.match(v.commitId, /^[0-9a-f]{7,}$/);
        assert.match(v.description, /^Terminates SSH for k8shell workspaces/);
        for (const [t, code] of [
          [token('system:serviceaccount:ops:oncall', other.privateKey), status.UNAUTHENTICATED],
          ['not-a-jwt', status.UNAUTHENTICATED],
          [token('system:serviceaccount:default:nobody'), status.PERMISSION_DENIED],
        ] as const) {
          await assert.rejects(call(t), (e: ServiceError) => (assert.equal(e.code, code, e.details), true));
        }
      } finally {
        c.close();
      }
      // Plaintext against the TLS port fails.
      const plain = new SSHProxyServiceClient(`127.0.0.1:${controlPort}`, credentials.createInsecure());
      await assert.rejects(
        new Promise((resolve, reject) =>
          plain.getVersionInfo(
            {},
            md(token('system:serviceaccount:ops:oncall')),
            { deadline: Date.now() + 5000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        ),
      );
      plain.close();
    });

    it('control service: ListConnections shows a live OpenSSH connection; EndConnection ends it with a message', async () => {
      const a = new SSHProxyAdminServiceClient(`localhost:${controlPort}`, tlsCreds());
      const good = token('system:serviceaccount:ops:oncall');
      const list = () =>
        new Promise<Connection[]>((resolve, reject) =>
          a.listConnections({ username: s.user }, md(good), { deadline: Date.now() + 15_000 }, (e, r) =>
            e ? reject(e) : resolve(r.connections),
          ),
        );
      try {
        const from = g.lines.length;
        const bg = procs.start('ssh', [
          ...sshArgs(s, g.port, { logLevel: 'INFO' }),
          `${s.user}@127.0.0.1`,
          'echo live; exec sleep 120',
        ]);
        await waitWhileRunning(bg, () => bg.stdout().includes('live'), 'the live session');
        const conn = await connOfExec('echo', from);
        const live = await waitFor(async () => (await list()).find((c) => c.id === conn), {
          timeoutMs: 15_000,
          what: 'the connection in ListConnections',
        });
        assert.equal(live.username, s.user);
        assert.match(live.clientAddress, /^127\.0\.0\.1:\d+$/);
        assert.match(live.clientVersion, /OpenSSH/);
        assert.equal(live.openChannels, 1);
        assert.ok(live.workspace.length > 0);
        // Authenticated connections no longer count as pre-authentication ones.
        const m = await metrics();
        assert.ok((sampleValue(m, 'sshproxy_connections_open') ?? 0) >= 1);
        assert.equal(sampleValue(m, 'sshproxy_connections_unauthenticated'), 0);
        await new Promise((resolve, reject) =>
          a.endConnection(
            { id: conn, message: 'maintenance window: please reconnect' },
            md(good),
            {
              deadline: Date.now() + 15_000,
            },
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        );
        const done = await bg.exited;
        assert.equal(done.code, 255);
        assert.match(
          bg.stderr(),
          /Received disconnect from 127\.0\.0\.1 port \d+:11: maintenance window: please reconnect/,
        );
        await waitFor(async () => !(await list()).some((c) => c.id === conn), { timeoutMs: 15_000 });
      } finally {
        a.close();
      }
    });
  },
);
