// Real PROXY senders: Debian's haproxy (2.6) in TCP mode with `send-proxy` (v1) and `send-proxy-v2`
// (with CRC32C and UNIQUE_ID TLVs) in front of loopback servers that use our parser. Clients connect
// from 127.0.0.2 so the real client address differs from haproxy's own (127.0.0.1).
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import ssh2 from 'ssh2';

import { readProxyHeader, TrustedSources, type ProxyOutcome } from '../../src/gateway/proxy-protocol.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** A loopback server that parses the header, records the outcome, then echoes the stream. */
async function echoServer(outcomes: ProxyOutcome[]): Promise<net.Server> {
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    void readProxyHeader(socket, { timeoutMs: 10_000, trusted: new TrustedSources(['127.0.0.1/32']) }).then(
      (o) => {
        outcomes.push(o);
        if (o.ok) {
          socket.pipe(socket);
          socket.resume();
        }
      },
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** Sends `payload` from 127.0.0.2 and waits for it to come back; returns the client's local port. */
async function roundTrip(port: number, payload: Buffer): Promise<number> {
  const c = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
  c.on('error', () => {});
  await withTimeout(once(c, 'connect'), 10_000, 'connect to haproxy');
  const localPort = c.localPort ?? 0;
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.write(payload);
  await waitFor(() => Buffer.concat(got).length >= payload.length, { timeoutMs: 10_000, what: 'the echo' });
  assert.deepEqual(Buffer.concat(got), payload);
  c.destroy();
  return localPort;
}

describe('PROXY protocol behind a real haproxy', () => {
  const dir = tempDirFor(after, 'haproxy-');
  let haproxy: ChildProcess | undefined;
  let stderr = '';
  const outcomes: ProxyOutcome[] = [];
  const ports = { v1: 0, v2: 0, ssh1: 0, ssh2: 0, ready: 0 };
  let echo: net.Server;
  let sshServer: ssh2.Server;
  let sshListener: net.Server;

  before(async () => {
    echo = await echoServer(outcomes);
    const echoPort = (echo.address() as net.AddressInfo).port;

    // An ssh2 server fed through our parser exactly as the gateway will: parse, then injectSocket.
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', dir.join('host')], {
      stdio: 'ignore',
    });
    sshServer = new ssh2.Server({ hostKeys: [readFileSync(dir.join('host'))] }, (client, info) => {
      client.on('error', () => {});
      client.on('authentication', (ctx) => ctx.accept());
      client.on('session', (accept) => {
        accept().on('exec', (acc) => {
          const ch = acc();
          ch.write(`${info.ip} ${info.port}\n`);
          ch.exit(0);
          ch.end();
        });
      });
    });
    sshListener = net.createServer({ pauseOnConnect: true }, (socket) => {
      void readProxyHeader(socket, { timeoutMs: 10_000, trusted: new TrustedSources([]) }).then((o) => {
        if (o.ok) sshServer.injectSocket(socket);
      });
    });
    sshListener.listen(0, '127.0.0.1');
    await once(sshListener, 'listening');
    const sshPort = (sshListener.address() as net.AddressInfo).port;

    for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
    const cfg = `
global
  maxconn 200
defaults
  mode tcp
  timeout connect 10s
  timeout client 60s
  timeout server 60s
frontend ready
  bind 127.0.0.1:${ports.ready}
  tcp-request connection reject
frontend v1
  bind 127.0.0.1:${ports.v1}
  default_backend echo_v1
frontend v2
  bind 127.0.0.1:${ports.v2}
  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt
  default_backend echo_v2
frontend ssh_v1
  bind 127.0.0.1:${ports.ssh1}
  default_backend ssh_v1
frontend ssh_v2
  bind 127.0.0.1:${ports.ssh2}
  default_backend ssh_v2
backend echo_v1
  server s 127.0.0.1:${echoPort} send-proxy
backend echo_v2
  server s 127.0.0.1:${echoPort} send-proxy-v2 proxy-v2-options crc32c,unique-id
backend ssh_v1
  server s 127.0.0.1:${sshPort} send-proxy
backend ssh_v2
  server s 127.0.0.1:${sshPort} send-proxy-v2
`;
    writeFileSync(dir.join('haproxy.cfg'), cfg);
    const hp = spawn('/usr/sbin/haproxy', ['-f', dir.join('haproxy.cfg'), '-db'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    haproxy = hp;
    hp.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          if (hp.exitCode !== null) throw new Error(`haproxy exited: ${stderr}`);
          const c = net.connect({ host: '127.0.0.1', port: ports.ready });
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
    sshServer?.close();
    await new Promise((r) => sshListener?.close(r));
    await new Promise((r) => echo?.close(r));
  });

  for (const v of ['v1', 'v2'] as const) {
    it(`send-proxy${v === 'v2' ? '-v2' : ''}: the parsed source is the real client, the stream is intact`, async () => {
      outcomes.length = 0;
      const payload = Buffer.concat([Buffer.from('SSH-2.0-OpenSSH_9.2p1\r\n'), Buffer.alloc(3000, 0xab)]);
      const localPort = await roundTrip(ports[v], payload);
      const o = outcomes[0];
      assert.ok(o?.ok && o.kind === 'proxied', JSON.stringify(o));
      assert.deepEqual(o.remote, { ip: '127.0.0.2', port: localPort, family: 'IPv4' });
      assert.equal(o.version, v === 'v1' ? 1 : 2);
      assert.equal(o.header.addresses?.destination.port, ports[v]);
      if (v === 'v2') {
        // haproxy adds the TLVs we asked for; they are skipped, not misread as SSH bytes.
        const types = o.header.tlvs.map((t) => t.type);
        assert.ok(types.includes(0x03), `CRC32C TLV in ${JSON.stringify(types)}`);
        assert.ok(types.includes(0x05), `UNIQUE_ID TLV in ${JSON.stringify(types)}`);
      }
    });
  }

  for (const v of ['ssh1', 'ssh2'] as const) {
    it(`OpenSSH through send-proxy${v === 'ssh2' ? '-v2' : ''}: ssh2 sees the real client address`, async () => {
      // Asynchronous: the ssh2 server runs in this very process.
      const { stdout: out } = await promisify(execFile)(
        'ssh',
        [
          '-F',
          '/dev/null',
          '-p',
          String(ports[v]),
          '-b',
          '127.0.0.2',
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'LogLevel=ERROR',
          '-o',
          'BatchMode=yes',
          '-o',
          'IdentityAgent=none',
          '-o',
          'PubkeyAuthentication=no',
          '-o',
          'ConnectTimeout=20',
          'someone@127.0.0.1',
          'whoami',
        ],
        { timeout: 30_000, encoding: 'utf8' },
      );
      const [ip, port] = out.trim().split(' ');
      assert.equal(ip, '127.0.0.2');
      assert.ok(Number(port) > 0);
    });
  }
});
