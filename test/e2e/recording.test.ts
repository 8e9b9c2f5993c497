// Issue 11 end to end: the real OpenSSH client through the local stack with every static recording
// flag on (server.recording.*) and failPolicy closed. Shell, exec, -L and sftp recordings land in the
// local session service and say exactly what the client saw; session tracking reports the connection;
// the sessions page shows it and plays the shell; a session service that stops ends the recorded
// channels (closed) and refuses new ones.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import pty from 'node-pty';
import type { Browser } from 'playwright-core';
import type { LiveConnectionInfo } from '../../src/gateway/registry.js';
import { RECORDING_BROKEN, RECORDING_UNAVAILABLE } from '../../src/gateway/recorder.js';
import { launchChromium } from '../helpers/browser.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { copyToolArgs, run, ssh, sshBaseArgs, startE2E, type E2E } from './harness.js';
import { freePort, open, readAll, sha256, startEcho, type Running } from './fwd-helpers/servers.js';
import { Processes, startForwarder, waitWhileRunning } from './fwd-helpers/proc.js';
import {
  castOutput,
  fileOf,
  finishedRecording,
  metric,
  pcapPayload,
  readCast,
  recordingIds,
} from './recording-helpers.js';

/** Reads exactly `up` bytes from each connection, then answers with `reply` and closes. */
function startExchange(up: number, reply: Buffer): Promise<{ server: Server; port: number; got: string[] }> {
  const got: string[] = [];
  const server = createServer((sock: Socket) => {
    const parts: Buffer[] = [];
    let n = 0;
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      parts.push(d);
      n += d.length;
      if (n === up) {
        got.push(sha256(Buffer.concat(parts)));
        sock.end(reply);
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a ? a.port : 0, got });
    });
  });
}

describe('recordings end to end (static flags, failPolicy closed)', { timeout: 300_000 }, () => {
  let e: E2E;
  const procs = new Processes();
  const bound: Array<{ c: LiveConnectionInfo; at: number }> = [];
  let browser: Browser | undefined;
  let shellId = '';

  before(async () => {
    e = await startE2E({
      configure: (cfg) => {
        const r = cfg.server.recording;
        r.recordShell = true;
        r.recordExec = true;
        r.recordSFTP = true;
        r.recordDirectTCPIP = true;
        r.failPolicy = 'closed';
        cfg.session.heartbeatInterval = 0.5;
      },
    });
    e.stack.gateway.registry.observe({ workspaceBound: (c) => bound.push({ c, at: Date.now() }) });
    // The workspace runs before the tests: no start-up progress on the shell below.
    const warm = await ssh(e, e.user, ['true'], { timeoutMs: 60_000 });
    assert.equal(warm.code, 0, warm.stderr);
  });
  after(async () => {
    await procs.stopAll();
    await browser?.close();
    await e?.stop();
  });

  test('a recorded PTY shell: the cast holds exactly the bytes the client received, and the resize', async () => {
    const known = recordingIds(e);
    const p = pty.spawn('ssh', [...sshBaseArgs(e, e.keys.user), '-tt', `${e.user}@127.0.0.1`], {
      cols: 80,
      rows: 24,
      env: { ...process.env, TERM: 'xterm' },
    });
    // ssh -tt puts its terminal in raw mode (no output processing): what it prints is the channel's bytes.
    let screen = '';
    let beforeResize = -1;
    p.onData((d) => (screen += d));
    const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
    try {
      await waitFor(() => /[$#] $/.test(screen), { timeoutMs: 30_000, what: 'a shell prompt' });
      p.write('echo hello-$((6*7))\r');
      await waitFor(() => /hello-42\r\n.*[$#] $/s.test(screen), { timeoutMs: 10_000, what: 'output' });
      beforeResize = screen.length;
      p.resize(100, 40);
      await waitFor(
        () => {
          p.write('stty size\r');
          return screen.includes('40 100');
        },
        { timeoutMs: 10_000, intervalMs: 300, what: 'the resized terminal' },
      );
      await waitFor(() => /40 100\r\n[^]*[$#] $/.test(screen), { timeoutMs: 10_000, what: 'a prompt' });
      p.write('exit 7\r');
      assert.equal(await exited, 7);
    } finally {
      p.kill();
    }
    const r = await finishedRecording(e, 'shell', known);
    assert.equal(r.status, 'complete');
    assert.equal(r.username, e.user);
    shellId = r.id;
    const cast = readCast(fileOf(e, r, 'cast'));
    assert.equal(cast.header.version, 2);
    assert.deepEqual([cast.header.width, cast.header.height], [80, 24]);
    // The cast is the shell's output, byte for byte; before it the client saw only the gateway's own
    // progress line (written before the shell started, so not part of its recording).
    const recorded = castOutput(cast);
    assert.ok(screen.endsWith(recorded), 'the cast replays exactly what the client received from the shell');
    assert.match(
      screen.slice(0, screen.length - recorded.length),
      /^(Connecting to the workspace at \S+\.\.\.\r\n)?$/,
    );
    assert.ok(recorded.includes('hello-42'));
    assert.equal(r.bytes.output, Buffer.byteLength(recorded));
    assert.deepEqual(r.dropped, { input: 0, output: 0 });
    // The resize sits between the output before it and the `stty size` answer after it.
    const resizes = cast.events.filter((ev) => ev[1] === 'r');
    assert.deepEqual(
      resizes.map((ev) => ev[2]),
      ['100x40'],
    );
    const at = cast.events.findIndex((ev) => ev[1] === 'r');
    const outBefore = castOutput({ header: cast.header, events: cast.events.slice(0, at) });
    const prefix = screen.length - recorded.length;
    assert.ok(
      outBefore.length >= beforeResize - prefix,
      'output before the window change is recorded before it',
    );
    assert.ok(!outBefore.includes('40 100'), 'the resized size comes after the resize event');
    const times = cast.events.map((ev) => ev[0]);
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
      'event times never go back',
    );
  });

  test('a recorded exec keeps stdout and stderr, in order', async () => {
    const known = recordingIds(e);
    // stdout and stderr are separate pipes, so their order is only defined when each write waits
    // for the previous one to arrive: the command reads a line from stdin before each next write,
    // and the test sends that line only once the client printed the previous write.
    const command = 'echo out-1; read a; echo err-1 >&2; read b; echo out-2';
    const client = procs.start('ssh', [...sshBaseArgs(e, e.keys.user), `${e.user}@127.0.0.1`, command]);
    await waitWhileRunning(client, () => client.stdout() === 'out-1\n', 'out-1 at the client');
    client.child.stdin?.write('next\n');
    await waitWhileRunning(client, () => client.stderr() === 'err-1\n', 'err-1 at the client');
    client.child.stdin?.end('next\n');
    const res = await client.exited;
    assert.equal(res.code, 0, client.stderr());
    assert.equal(client.stdout(), 'out-1\nout-2\n');
    assert.equal(client.stderr(), 'err-1\n');
    const r = await finishedRecording(e, 'exec', known, (x) => x.command === command);
    assert.equal(r.status, 'complete');
    const cast = readCast(fileOf(e, r, 'cast'));
    assert.equal(cast.header.command, command);
    assert.equal(castOutput(cast), 'out-1\nerr-1\nout-2\n');
  });

  test('a recorded -L transfer: tshark counts exactly the payload bytes of each direction', async () => {
    const upBytes = 100_003;
    const file = randomBytes(1024 * 1024 + 7);
    const upload = randomBytes(upBytes);
    const srv = await startExchange(upBytes, file);
    try {
      const known = recordingIds(e);
      const local = await freePort();
      const fwd = await startForwarder(procs, e, ['-L', `127.0.0.1:${local}:127.0.0.1:${srv.port}`], [local]);
      const sock = await open(local);
      const reply = readAll(sock, 60_000);
      sock.write(upload);
      const got = await reply;
      sock.destroy();
      assert.equal(sha256(got), sha256(file), 'the client got the file');
      assert.deepEqual(srv.got, [sha256(upload)], 'the server got the upload');
      const r = await finishedRecording(e, 'tcpip', known);
      await fwd.stop();
      assert.equal(r.status, 'complete');
      assert.equal(r.tcpip?.dstPort, srv.port);
      assert.deepEqual(r.bytes, { input: upBytes, output: file.length });
      const counted = await pcapPayload(fileOf(e, r, 'pcapng'), srv.port);
      assert.deepEqual(counted, { up: upBytes, down: file.length });
    } finally {
      srv.server.close();
    }
  });

  test('a recorded sftp put and get appear in the operations log with paths and sizes', async () => {
    const known = recordingIds(e);
    const local = e.dir.join('rec-put.bin');
    const back = e.dir.join('rec-back.bin');
    const data = randomBytes(200_003);
    writeFileSync(local, data);
    const batch = e.dir.join('rec-batch.txt');
    writeFileSync(batch, `put ${local} rec-put.bin\nget rec-put.bin ${back}\nrm rec-put.bin\n`);
    const res = await run('sftp', [...copyToolArgs(e, e.keys.user), '-b', batch, `${e.user}@127.0.0.1`]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(sha256(readFileSync(back)), sha256(data));
    const r = await finishedRecording(e, 'sftp', known);
    assert.equal(r.status, 'complete');
    const ops = readFileSync(fileOf(e, r, 'sftp-log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { op: string; path?: string; bytes?: number; status?: string });
    const on = (op: string) => ops.filter((o) => o.op === op && (o.path ?? '').endsWith('/rec-put.bin'));
    assert.deepEqual(
      on('open').map((o) => o.status),
      ['ok', 'ok'],
      JSON.stringify(ops),
    );
    assert.deepEqual(
      on('write').map((o) => o.bytes),
      [data.length],
      JSON.stringify(ops),
    );
    assert.deepEqual(
      on('read').map((o) => o.bytes),
      [data.length],
      JSON.stringify(ops),
    );
    assert.equal(on('remove').length, 1, JSON.stringify(ops));
  });

  test('session tracking: stored after the handshake, heartbeats while idle, exact byte counts at the end', async (t) => {
    const store = e.stack.sessions.store;
    const seen = bound.length;
    const client = procs.start('ssh', [
      ...sshBaseArgs(e, e.keys.user),
      `${e.user}@127.0.0.1`,
      'echo ready; wc -c',
    ]);
    const b = await waitWhileRunning(client, () => bound[seen], 'the workspace handshake', 30_000);
    // The requirement: the session service knows the connection soon after the handshake (1 s is
    // the reference's target: a latency, reported rather than asserted on a shared machine).
    await waitFor(() => store.sessions.get(b.c.id), {
      timeoutMs: 30_000,
      intervalMs: 5,
      what: 'the session in the local store after the handshake',
    });
    t.diagnostic(`session stored ${Date.now() - b.at} ms after the handshake`);
    const first = store.sessions.get(b.c.id);
    assert.ok(first);
    assert.equal(first.username, e.user);
    assert.match(first.client, /^SSH-2\.0-OpenSSH_/);
    assert.equal(first.endTime, 0);
    assert.ok(first.workspace.length > 0);
    await waitWhileRunning(client, () => client.stdout().includes('ready'), 'ready');
    // Idle: heartbeats (every 0.5 s here) move updated_at on while nothing is sent.
    await waitFor(() => (store.sessions.get(b.c.id)?.updatedAt ?? 0) >= first.updatedAt + 2, {
      timeoutMs: 15_000,
      what: 'heartbeats while the session is idle',
    });
    assert.deepEqual(store.sessions.get(b.c.id)?.operations, ['ex']);
    const input = randomBytes(12_345);
    client.child.stdin?.end(input);
    const done = await client.exited;
    assert.equal(done.code, 0, client.stderr());
    assert.equal(client.stdout(), 'ready\n12345\n');
    const ended = await waitFor(
      () => {
        const s = store.sessions.get(b.c.id);
        return s?.endTime ? s : undefined;
      },
      {
        timeoutMs: 15_000,
        what: 'EndSession',
      },
    );
    assert.equal(ended.bytesIn, input.length, 'bytes_in = what the client sent');
    assert.equal(ended.bytesOut, Buffer.byteLength('ready\n12345\n'), 'bytes_out = what the client received');
  });

  test('the sessions page in Chromium shows a live session and plays the recorded shell', async () => {
    assert.ok(shellId, 'the shell test recorded a shell');
    browser = await launchChromium();
    const page = await browser.newPage();
    const seen = bound.length;
    const live = procs.start('ssh', [
      ...sshBaseArgs(e, e.keys.user),
      `${e.user}@127.0.0.1`,
      'echo live; cat',
    ]);
    try {
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      const b = await waitWhileRunning(live, () => bound[seen], 'the live connection');
      await page.goto(e.stack.sessionsUrl);
      const row = page.locator(`#live tr[data-session="${b.c.id}"]`);
      await row.waitFor({ timeout: 20_000 });
      assert.match(await row.innerText(), new RegExp(e.user));
      await live.stop();

      await page.goto(`${e.stack.sessionsUrl}/recording/${encodeURIComponent(shellId)}`);
      await page.locator('.ap-term').waitFor({ timeout: 20_000 });
      await page.waitForFunction(
        "(document.querySelector('.ap-term')?.textContent ?? '').includes('hello-42')",
        undefined,
        { timeout: 30_000 },
      );
      assert.deepEqual(errors, [], 'no script errors on the page');
    } finally {
      await page.close();
      await live.stop();
    }
  });

  test('the recording metrics count the streams', async () => {
    for (const kind of ['shell', 'exec', 'sftp', 'tcpip'])
      assert.ok(
        (await metric(e, 'sshproxy_recording_streams_total', { kind })) >= 1,
        `sshproxy_recording_streams_total{kind="${kind}"}`,
      );
    assert.equal(await metric(e, 'sshproxy_recording_dropped_bytes_total', { kind: 'exec' }), 0);
  });

  test('failPolicy closed: a recording that breaks ends the exec (message, exit 1) and the forward; with the service down a shell is refused', async () => {
    const echo: Running = await startEcho();
    try {
      const exec = procs.start('ssh', [
        ...sshBaseArgs(e, e.keys.user),
        `${e.user}@127.0.0.1`,
        'echo started; sleep 60',
      ]);
      await waitWhileRunning(exec, () => exec.stdout().includes('started'), 'the recorded exec');
      const local = await freePort();
      const fwd = await startForwarder(
        procs,
        e,
        ['-L', `127.0.0.1:${local}:127.0.0.1:${echo.port}`],
        [local],
      );
      const sock = await open(local);
      const received: Buffer[] = [];
      sock.on('data', (d: Buffer) => received.push(d));
      // The test socket is half-open capable: the client closing its end shows as 'end'.
      const sockClosed = new Promise<void>((r) => {
        sock.once('end', () => r());
        sock.once('close', () => r());
      });
      sock.on('error', () => undefined);
      sock.write('ping\n');
      await waitFor(() => Buffer.concat(received).toString() === 'ping\n', {
        timeoutMs: 10_000,
        what: 'echo',
      });

      // The session service goes away: both recording streams break.
      await e.stack.sessions.close();
      const r = await withTimeout(exec.exited, 30_000, 'the exec to end');
      assert.equal(r.code, 1, exec.stderr());
      assert.equal(exec.stdout(), 'started\n');
      assert.equal(exec.stderr(), `ssh-proxy: ${RECORDING_BROKEN}\n`);
      await withTimeout(sockClosed, 30_000, 'the forward to close').catch((err: Error) => {
        throw new Error(`${err.message}; ssh: ${fwd.stderr()}`);
      });
      assert.equal(Buffer.concat(received).toString(), 'ping\n', 'nothing but the destination bytes');
      await waitWhileRunning(
        fwd,
        () => /channel \d+: free: direct-tcpip/.test(fwd.stderr()),
        'the channel closed',
      );

      // Service down: the recorded shell is refused with a message.
      const shell = await ssh(e, e.user, [], { options: ['-tt'], input: 'echo never\n', timeoutMs: 60_000 });
      assert.equal(shell.code, 1);
      assert.match(shell.stdout.toString() + shell.stderr, new RegExp(`ssh-proxy: ${RECORDING_UNAVAILABLE}`));
      assert.doesNotMatch(shell.stdout.toString(), /never/, 'nothing ran');
      assert.ok(
        (await metric(e, 'sshproxy_recording_drops_total', { kind: 'shell', reason: 'refused' })) >= 1,
      );
      assert.ok(
        (await metric(e, 'sshproxy_recording_drops_total', { kind: 'exec', reason: 'stream_error' })) >= 1,
      );
    } finally {
      await echo.close();
    }
  });
});
