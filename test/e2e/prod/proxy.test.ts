// PROXY protocol through the production entry behind Debian's haproxy (TCP mode, `send-proxy` and
// `send-proxy-v2`), with the real OpenSSH client connecting from 127.0.0.2 (haproxy itself connects
// from 127.0.0.1): the client address in the gateway's log lines, in SSH_CONNECTION and in the session
// service's record is the header's, in-process and in forking mode; a gateway that does not trust
// haproxy serves plain SSH with the socket address (the header is never honoured); a truncated header
// is closed by the header deadline with a log line carrying the connection id.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { encodeProxyV2 } from '../../../src/gateway/proxy-protocol.js';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import {
  freePort,
  GatewayProcess,
  httpGet,
  killAll,
  ssh,
  startServices,
  writeConfig,
  type LogLine,
  type ProdServices,
} from './harness.js';

const CLIENT_IP = '127.0.0.2';

describe('PROXY protocol behind haproxy, production entry', { timeout: 600_000 }, () => {
  let s: ProdServices;
  /** Trusts haproxy (127.0.0.1): in-process and forking. */
  let inproc: GatewayProcess;
  let forking: GatewayProcess;
  /** Trusts only 127.0.0.3: haproxy's header is not read. */
  let untrusting: GatewayProcess;
  let metricsUrl = '';
  let haproxy: ChildProcess | undefined;
  let haproxyErr = '';
  const fe = { v1: 0, v2: 0, forkV2: 0, untrustedV1: 0, ready: 0 };

  const proxyServer = (extra: Record<string, unknown>) => ({
    proxyProtocol: true,
    proxyProtocolTimeout: 1,
    proxyProtocolTrustedCIDRs: ['127.0.0.1/32'],
    ...extra,
  });

  before(async () => {
    s = await startServices();
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}`;
    [inproc, forking, untrusting] = await Promise.all([
      GatewayProcess.start(
        writeConfig(
          s.dir,
          'inproc.yaml',
          s.config(await freePort(), {
            server: proxyServer({}),
            metrics: { address: `127.0.0.1:${metricsPort}` },
          }),
        ),
      ),
      GatewayProcess.start(
        writeConfig(
          s.dir,
          'forking.yaml',
          s.config(await freePort(), { server: proxyServer({ forking: true }) }),
        ),
      ),
      GatewayProcess.start(
        writeConfig(
          s.dir,
          'untrusting.yaml',
          s.config(await freePort(), {
            server: proxyServer({ proxyProtocolTrustedCIDRs: ['127.0.0.3/32'] }),
          }),
        ),
      ),
    ]);

    for (const k of Object.keys(fe) as (keyof typeof fe)[]) fe[k] = await freePort();
    const cfg = `
global
  maxconn 200
defaults
  mode tcp
  timeout connect 10s
  timeout client 120s
  timeout server 120s
frontend ready
  bind 127.0.0.1:${fe.ready}
  tcp-request connection reject
frontend v1
  bind 127.0.0.1:${fe.v1}
  default_backend inproc_v1
frontend v2
  bind 127.0.0.1:${fe.v2}
  default_backend inproc_v2
frontend fork_v2
  bind 127.0.0.1:${fe.forkV2}
  default_backend fork_v2
frontend untrusted_v1
  bind 127.0.0.1:${fe.untrustedV1}
  default_backend untrusted_v1
backend inproc_v1
  server s 127.0.0.1:${inproc.port} send-proxy
backend inproc_v2
  server s 127.0.0.1:${inproc.port} send-proxy-v2 proxy-v2-options crc32c
backend fork_v2
  server s 127.0.0.1:${forking.port} send-proxy-v2
backend untrusted_v1
  server s 127.0.0.1:${untrusting.port} send-proxy
`;
    writeFileSync(s.dir.join('haproxy.cfg'), cfg);
    const hp = spawn('/usr/sbin/haproxy', ['-f', s.dir.join('haproxy.cfg'), '-db'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    haproxy = hp;
    hp.stderr?.on('data', (d: Buffer) => (haproxyErr += d.toString()));
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          if (hp.exitCode !== null) throw new Error(`haproxy exited: ${haproxyErr}`);
          const c = net.connect({ host: '127.0.0.1', port: fe.ready });
          c.on('connect', () => (c.destroy(), resolve(true)));
          c.on('error', () => resolve(false));
        }),
      { timeoutMs: 20_000, intervalMs: 50, what: 'haproxy to listen' },
    );
  });

  after(async () => {
    if (haproxy && haproxy.exitCode === null) {
      haproxy.kill('SIGTERM');
      await withTimeout(once(haproxy, 'exit'), 10_000, 'haproxy to stop').catch(() =>
        haproxy?.kill('SIGKILL'),
      );
    }
    await Promise.all([inproc, forking, untrusting].map((g) => g?.stop()));
    killAll();
    await s?.stop();
  });

  /** Runs `echo $SSH_CONNECTION` from CLIENT_IP through haproxy port `port`; returns its words. */
  async function sshConnection(port: number): Promise<{ words: string[]; localPort: number }> {
    const r = await ssh(s, port, s.user, ['echo $SSH_CONNECTION'], { bind: CLIENT_IP });
    assert.equal(r.code, 0, r.stderr);
    const words = r.stdout.toString().trim().split(' ');
    assert.equal(words[0], CLIENT_IP, r.stdout.toString());
    return { words, localPort: Number(words[1]) };
  }

  /** Checks the gateway's lines and the session record of the connection from CLIENT_IP:localPort. */
  async function checkRecorded(g: GatewayProcess, localPort: number): Promise<void> {
    const client = `${CLIENT_IP}:${localPort}`;
    const accepted = await g.waitLog(
      (l) => l.msg === 'connection accepted' && l.client === client,
      `the connection from ${client}`,
    );
    const conn = String(accepted.conn);
    await g.waitLog(
      (l) => l.conn === conn && l.msg === `Connection closed for user ${s.user} from ${client}`,
      'the close line with the client address',
    );
    // Every line of that connection names the real client, never haproxy.
    const lines = g.find((l) => l.conn === conn && typeof l.client === 'string');
    assert.ok(lines.length >= 3);
    for (const l of lines) assert.equal(l.client, client, JSON.stringify(l));
    const stored = await waitFor(() => s.storedSessions().find((x) => x.id === conn && x.endTime > 0), {
      timeoutMs: 30_000,
      what: 'the session record',
    });
    assert.equal(stored.clientIp, CLIENT_IP);
  }

  for (const v of ['v1', 'v2'] as const) {
    it(`send-proxy${v === 'v2' ? '-v2' : ''}: logs, SSH_CONNECTION and the session record carry the client from the header`, async () => {
      const port = v === 'v1' ? fe.v1 : fe.v2;
      const { words, localPort } = await sshConnection(port);
      // The destination is the one haproxy's client connected to (the header's), not the gateway's port.
      assert.deepEqual(words.slice(2), ['127.0.0.1', String(port)]);
      await checkRecorded(inproc, localPort);
    });
  }

  it('forking mode, send-proxy-v2: the child reads the header; its lines and the record carry the client', async () => {
    const { localPort } = await sshConnection(fe.forkV2);
    await checkRecorded(forking, localPort);
    const accepted = forking.find(
      (l) => l.msg === 'connection accepted' && l.client === `${CLIENT_IP}:${localPort}`,
    );
    // Served by a child, whose pid is not the parent's.
    assert.notEqual(accepted[0]?.pid, forking.pid);
  });

  it('untrusted balancer: its header is not read; the connection is plain SSH with the socket address', async () => {
    const from = untrusting.lines.length;
    const r = await ssh(s, fe.untrustedV1, s.user, ['true'], { bind: CLIENT_IP });
    assert.equal(r.code, 255, 'the header is not SSH');
    const failed = await untrusting.waitLog(
      (l) => l.msg.startsWith('Failed to perform SSH handshake: '),
      'the handshake failure',
      30_000,
      from,
    );
    assert.match(String(failed.client), /^127\.0\.0\.1:\d+$/);
    assert.ok(
      !untrusting.lines.some((l) => JSON.stringify(l).includes(CLIENT_IP)),
      'the claimed address is never used',
    );
    // A direct client from an untrusted source is served as plain SSH with its own address.
    const direct = await ssh(s, untrusting.port, s.user, ['echo $SSH_CONNECTION'], { bind: CLIENT_IP });
    assert.equal(direct.code, 0, direct.stderr);
    const [ip, port] = direct.stdout.toString().split(' ');
    assert.equal(ip, CLIENT_IP);
    await untrusting.waitLog(
      (l) => l.msg === 'connection accepted' && l.client === `${CLIENT_IP}:${port}`,
      'the direct connection',
    );
  });

  it('an untrusted client cannot spoof its address with a header of its own', async () => {
    const from = inproc.lines.length;
    const c = net.connect({ host: '127.0.0.1', port: inproc.port, localAddress: CLIENT_IP });
    c.on('error', () => undefined);
    c.on('data', () => undefined);
    const closed = once(c, 'close');
    await once(c, 'connect');
    const localPort = c.localPort;
    c.write('PROXY TCP4 203.0.113.9 127.0.0.1 5555 22\r\nSSH-2.0-OpenSSH_9.2p1\r\n');
    await withTimeout(closed, 30_000, 'the gateway to close the spoofing connection');
    const l = await inproc.waitLog(
      (l) =>
        l.msg.startsWith('Failed to perform SSH handshake: ') && l.client === `${CLIENT_IP}:${localPort}`,
      'the handshake failure of the spoofer',
      30_000,
      from,
    );
    assert.ok(l.conn);
    assert.ok(!inproc.lines.some((x) => JSON.stringify(x).includes('203.0.113.9')));
  });

  it('a truncated header is closed by proxyProtocolTimeout with a log line carrying the connection id', async () => {
    const from = inproc.lines.length;
    const rejected = async () =>
      sampleValue(
        parsePrometheusText((await httpGet(`${metricsUrl}/metrics`)).body),
        'sshproxy_preauth_rejections_total',
        {
          reason: 'proxy-timeout',
        },
      ) ?? 0;
    const before = await rejected();
    const open = async (): Promise<{ sock: net.Socket; port: number; closed: Promise<unknown> }> => {
      const sock = net.connect({ host: '127.0.0.1', port: inproc.port });
      sock.on('error', () => undefined);
      const closed = once(sock, 'close');
      await once(sock, 'connect');
      return { sock, port: sock.localPort ?? 0, closed };
    };
    // Stalls in the middle of a v1 header.
    const stall = await open();
    stall.sock.write('PROXY TCP4 203.0.113.9 127.0.0.1 55');
    // Half a v2 header, then the stream ends.
    const cut = await open();
    const v2 = encodeProxyV2({
      source: { ip: '203.0.113.9', port: 5555, family: 'IPv4' },
      destination: { ip: '127.0.0.1', port: 22, family: 'IPv4' },
    });
    cut.sock.end(v2.subarray(0, v2.length - 5));
    await withTimeout(stall.closed, 30_000, 'the gateway to close the stalled connection');
    await withTimeout(cut.closed, 30_000, 'the gateway to close the cut connection');
    const byPort = (port: number, re: RegExp): Promise<LogLine> =>
      inproc.waitLog((l) => re.test(l.msg) && l.client === `127.0.0.1:${port}`, String(re), 30_000, from);
    const t = await byPort(
      stall.port,
      /^incomplete PROXY protocol header after 1000 ms, closing connection$/,
    );
    const c = await byPort(
      cut.port,
      /^truncated PROXY protocol header \(\d+ bytes before end of stream\), closing connection$/,
    );
    assert.ok(t.conn && c.conn && t.conn !== c.conn);
    assert.equal(await rejected(), before + 1);
    assert.ok(!inproc.lines.some((x) => JSON.stringify(x).includes('203.0.113.9')));
  });
});
