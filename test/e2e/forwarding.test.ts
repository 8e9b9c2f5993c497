// Issue 4 end to end: direct-tcpip (-L, -D, -W, ProxyCommand, -J) and direct-streamlocal through the
// real local stack with the real OpenSSH client; the cap, no leaks, and forwards of a dying workspace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { waitFor } from '../helpers/wait.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { startE2E, type E2E } from './harness.js';
import { fdCount, openGrpcCalls } from './fwd-helpers/leaks.js';
import { Processes, runEnv, sshArgs, startForwarder } from './fwd-helpers/proc.js';
import {
  bulk,
  closedPort,
  exchange,
  freePort,
  open,
  readAll,
  readBytes,
  sha256,
  startEcho,
  startEofReply,
  startHttp,
  startSource,
  type Running,
} from './fwd-helpers/servers.js';

/** The agent of the user's (only) workspace, once it runs. */
function agentOf(e: E2E): { pid: number; address: string } {
  const ws = e.stack.provisioner.workspaces().find((w) => w.pid && w.address);
  if (!ws?.pid || !ws.address) throw new Error('no running workspace agent');
  return { pid: ws.pid, address: ws.address };
}

/** An ssh config whose hosts carry the test identity (needed where ssh spawns ssh: -J, ProxyCommand). */
function hostBlock(e: E2E, name: string, extra: string[] = []): string {
  return [
    `Host ${name}`,
    '  Hostname 127.0.0.1',
    `  Port ${e.port}`,
    `  User ${e.user}`,
    `  IdentityFile ${e.keys.user}`,
    '  IdentitiesOnly yes',
    '  IdentityAgent none',
    '  StrictHostKeyChecking no',
    '  UserKnownHostsFile /dev/null',
    '  BatchMode yes',
    '  LogLevel ERROR',
    ...extra.map((l) => `  ${l}`),
    '',
  ].join('\n');
}

const MiB = 1024 * 1024;

describe('forwarding (OpenSSH client → gateway → agent → destination)', { timeout: 300_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  const procs = new Processes();
  const servers: Running[] = [];
  const serve = async <T extends Running>(p: Promise<T>): Promise<T> => {
    const s = await p;
    servers.push(s);
    return s;
  };

  before(async () => {
    e = await startE2E();
    tmp = makeTempDir('spx-fwd-');
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
    tmp?.cleanup();
  });

  test('-L to an HTTP server in the workspace, fetched with curl', async () => {
    const http = await serve(startHttp('hello through -L\n'));
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${http.port}`], [lport]);
    const r = await runEnv('curl', [
      '-sS',
      '--noproxy',
      '*',
      '--max-time',
      '15',
      `http://127.0.0.1:${lport}/`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'hello through -L\n');
  });

  test('256 MiB client → workspace through -L arrive intact (sha256)', { timeout: 60_000 }, async () => {
    const data = bulk(MiB, 256);
    const sink = await serve(startEofReply());
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${sink.port}`], [lport]);
    const s = await open(lport);
    const reply = readAll(s, 50_000);
    for (let i = 0; i < data.count; i++) if (!s.write(data.block)) await once(s, 'drain');
    s.end();
    await waitFor(() => sink.received.length > 0, {
      timeoutMs: 50_000,
      what: 'the destination to read to EOF',
    });
    assert.deepEqual(sink.received[0], { bytes: data.bytes, sha: data.sha });
    assert.equal((await reply).toString(), `${data.sha} ${data.bytes}\n`);
    s.destroy();
  });

  test('256 MiB workspace → client through -L arrive intact (sha256)', { timeout: 60_000 }, async () => {
    const data = bulk(MiB, 256);
    const source = await serve(startSource(data.block, data.count));
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${source.port}`], [lport]);
    const s = await open(lport);
    const h = createHash('sha256');
    let bytes = 0;
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    const ended = once(s, 'end');
    s.resume();
    await Promise.race([
      ended,
      new Promise((_, rej) =>
        setTimeout(() => rej(new Error(`download stalled at ${bytes} bytes`)), 50_000).unref(),
      ),
    ]);
    s.destroy();
    assert.equal(bytes, data.bytes);
    assert.equal(h.digest('hex'), data.sha);
  });

  test('half-close through -L: the destination reads to EOF, then its answer still arrives', async () => {
    const srv = await serve(startEofReply());
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${srv.port}`], [lport]);
    const payload = Buffer.from('ask me after EOF\n'.repeat(1000));
    const reply = await exchange(lport, payload);
    assert.equal(reply.toString(), `${sha256(payload)} ${payload.length}\n`);
  });

  test('half-close through -W: stdout is exactly the answer given after stdin EOF', async () => {
    const srv = await serve(startEofReply());
    const payload = Buffer.from('stdin of ssh -W\n'.repeat(5000));
    const r = await runEnv('ssh', [...sshArgs(e), '-W', `127.0.0.1:${srv.port}`, `${e.user}@127.0.0.1`], {
      input: payload,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `${sha256(payload)} ${payload.length}\n`);
  });

  test('the reference ProxyCommand config (ssh -W %h:%p through the workspace) runs echo ok', async () => {
    const outer = [...sshArgs(e), '-W', '%h:%p', `${e.user}@127.0.0.1`].join(' ');
    const cfg = tmp.join('proxycommand.config');
    writeFileSync(cfg, hostBlock(e, 'inner', [`ProxyCommand ssh ${outer}`]));
    const r = await runEnv('ssh', ['-F', cfg, 'inner', 'echo ok']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'ok\n');
  });

  test('ssh -J (ProxyJump) through the workspace runs echo ok', async () => {
    const cfg = tmp.join('jump.config');
    writeFileSync(cfg, hostBlock(e, 'jump') + hostBlock(e, 'target'));
    const r = await runEnv('ssh', ['-F', cfg, '-J', 'jump', 'target', 'echo ok']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'ok\n');
  });

  test('-D: curl --socks5-hostname reaches an HTTP server in the workspace', async () => {
    const http = await serve(startHttp('hello through -D\n'));
    const dport = await freePort();
    await startForwarder(procs, e, ['-D', `127.0.0.1:${dport}`], [dport]);
    const r = await runEnv('curl', [
      '-sS',
      '--max-time',
      '15',
      '--socks5-hostname',
      `127.0.0.1:${dport}`,
      `http://127.0.0.1:${http.port}/`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'hello through -D\n');
  });

  test('-L local.sock:/remote.sock to a unix-socket echo server, with half-close', async () => {
    const remote = tmp.join('remote.sock');
    const local = tmp.join('local.sock');
    await serve(startEcho(remote));
    await startForwarder(procs, e, ['-o', 'StreamLocalBindUnlink=yes', '-L', `${local}:${remote}`], [local]);
    const s = await open(local);
    try {
      s.write('ping over a unix socket\n');
      assert.equal((await readBytes(s, 24)).toString(), 'ping over a unix socket\n');
      // EOF toward the socket; the echo server answers it and only then closes.
      const rest = readAll(s);
      s.end('last words\n');
      assert.equal((await rest).toString(), 'last words\nEOF-SEEN\n');
    } finally {
      s.destroy();
    }
  });

  test('-W to a closed port: open failed: connect failed with the agent message, exit 255', async () => {
    const port = await closedPort();
    // OpenSSH logs the open failure at level INFO.
    const r = await runEnv('ssh', [
      ...sshArgs(e, { logLevel: 'INFO' }),
      '-W',
      `127.0.0.1:${port}`,
      `${e.user}@127.0.0.1`,
    ]);
    assert.equal(r.code, 255, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`open failed: connect failed: dial tcp 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`),
    );
    assert.equal(r.stdout.length, 0, 'nothing but destination bytes on a -W stream');
  });

  test('no leaks: after many forwards close, gRPC calls and file descriptors return to baseline', async () => {
    const echo = await serve(startEcho());
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${echo.port}`], [lport]);
    // The first forward binds the workspace (one gRPC client per SSH connection) before the baseline.
    assert.equal((await exchange(lport, 'warm-up')).toString(), 'warm-upEOF-SEEN\n');
    const agent = agentOf(e);
    // With no forward open, no call to the agent may be open either (the warm-up's call has ended).
    await waitFor(async () => echo.connections() === 0 && (await openGrpcCalls(agent.address)) === 0, {
      what: 'the warm-up forward to close',
    });
    const base = { calls: 0, fds: fdCount(), agentFds: fdCount(agent.pid) };

    const N = 12;
    const socks = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const s = await open(lport);
        s.write(`conn-${i}`);
        assert.equal((await readBytes(s, `conn-${i}`.length)).toString(), `conn-${i}`);
        return s;
      }),
    );
    // The count really measures forwards: every open one holds a PortForward call.
    assert.ok((await openGrpcCalls(agent.address)) >= base.calls + N, 'each open forward holds a gRPC call');
    // Half of them end gracefully (EOF both ways), the other half abruptly.
    await Promise.all(
      socks.map(async (s, i) => {
        if (i % 2) return void s.destroy();
        const rest = readAll(s);
        s.end();
        assert.equal((await rest).toString(), 'EOF-SEEN\n');
        s.destroy();
      }),
    );

    await waitFor(() => echo.connections() === 0, {
      timeoutMs: 10_000,
      what: 'the destination connections to close',
    });
    await waitFor(async () => (await openGrpcCalls(agent.address)) === base.calls, {
      timeoutMs: 10_000,
      what: `open gRPC calls to the agent to return to ${base.calls}`,
    });
    await waitFor(() => fdCount() <= base.fds, {
      timeoutMs: 10_000,
      what: `the test process (gateway) fds to return to ${base.fds} (now ${fdCount()})`,
    });
    await waitFor(() => fdCount(agent.pid) <= base.agentFds, {
      timeoutMs: 10_000,
      what: `the agent's fds to return to ${base.agentFds} (now ${fdCount(agent.pid)})`,
    });
  });
});

describe('forwarding limits and failures (maxDirectTCPIPConnections: 2)', { timeout: 120_000 }, () => {
  let e: E2E;
  const procs = new Processes();
  const servers: Running[] = [];

  before(async () => {
    e = await startE2E({ maxDirectTcpip: 2 });
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
  });

  test('the direct-tcpip cap refuses the next channel and accepts again after one closes', async () => {
    const echo = await startEcho();
    servers.push(echo);
    const lport = await freePort();
    const fwd = await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${echo.port}`], [lport]);
    const held = [];
    for (const name of ['one', 'two']) {
      const s = await open(lport);
      s.write(name);
      assert.equal((await readBytes(s, name.length)).toString(), name);
      held.push(s);
    }
    // The third: ssh accepts locally, the gateway refuses the channel, ssh closes the local socket.
    const third = await open(lport);
    assert.equal((await readAll(third)).length, 0);
    third.destroy();
    await waitFor(
      () =>
        /open failed: resource shortage: maximum direct-tcpip connections exceeded \(2\)/.test(fwd.stderr()),
      { what: 'the resource-shortage refusal in the ssh log' },
    );
    assert.equal(echo.connections(), 2);
    // The connection stays usable: the held forwards still work.
    held[1]?.write('still');
    assert.equal((await readBytes(held[1]!, 5)).toString(), 'still');

    held[0]?.destroy();
    await waitFor(() => echo.connections() === 1, { what: 'the first forward to close' });
    // The slot is freed when the forward has ended in the gateway; allow it a moment to get there.
    const fourth = await waitFor(
      async () => {
        const s = await open(lport);
        s.write('four');
        const got = await readBytes(s, 4, 3000);
        if (got.toString() === 'four') return s;
        s.destroy();
        return undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: 'a new forward after one closed' },
    );
    assert.equal(echo.connections(), 2);
    fourth.destroy();
    held[1]?.destroy();
  });

  test('a forward whose workspace dies is closed (EOF and close), not left hanging', async () => {
    const echo = await startEcho();
    servers.push(echo);
    const lport = await freePort();
    await startForwarder(procs, e, ['-L', `127.0.0.1:${lport}:127.0.0.1:${echo.port}`], [lport]);
    const s = await open(lport);
    s.write('alive');
    assert.equal((await readBytes(s, 5)).toString(), 'alive');
    const closed = readAll(s, 10_000);
    process.kill(agentOf(e).pid, 'SIGKILL');
    assert.equal((await closed).length, 0);
    s.destroy();
  });
});
