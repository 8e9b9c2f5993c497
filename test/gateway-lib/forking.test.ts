// Forking mode over real processes: a ForkingParent (test/fixtures/forking/parent.ts) whose children
// run runChild with a trivial echo serve() (echo-child.ts). Covers one child per connection (distinct
// pids, own process groups), crash isolation, the child cap with an SSH disconnect a real OpenSSH
// client shows, SIGTERM drain, the child's forced exit, a second signal, and the SIGUSR2 hand-over.
// With pre-authentication limits in the parent (the children ask it over fd 4): refusal before a
// child is spawned, the slot freed exactly once, failures counted across children, attribution of a
// PROXY relay's sockets to the client the child reports, junk on the link, and a child orphaned by
// a hand-over falling back to a limiter of its own.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';

import { disconnectPacket, DISCONNECT } from '../../src/gateway/refuse.js';
import { pidAlive, waitFor, withTimeout } from '../helpers/wait.js';

// The fixtures are bundled to plain JavaScript once (node_modules stay external), so that every
// child starts like the built gateway would, without compiling TypeScript at start-up: on a shared
// 2-core machine that is the difference between ~0.25 s and ~0.8 s of CPU per connection.
const FIXTURES = fileURLToPath(new URL('../fixtures/forking/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
mkdirSync(join(ROOT, '.tmp'), { recursive: true });
const bundleDir = mkdtempSync(join(ROOT, '.tmp', 'forking-'));
// The esbuild CLI rather than its JS API: the API keeps a worker alive that delays the test's exit.
execFileSync(
  join(ROOT, 'node_modules/.bin/esbuild'),
  [
    join(FIXTURES, 'parent.ts'),
    join(FIXTURES, 'echo-child.ts'),
    '--bundle',
    '--platform=node',
    '--format=esm',
  ].concat(['--target=node20', '--packages=external', `--outdir=${bundleDir}`, '--out-extension:.js=.mjs']),
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
const PARENT = join(bundleDir, 'parent.mjs');
const CHILD = join(bundleDir, 'echo-child.mjs');
const LONG = { timeoutMs: 60_000, intervalMs: 20 };

interface LogLine {
  msg: string;
  pid: number;
  [k: string]: unknown;
}

const started: number[] = [];

class Parent {
  readonly lines: LogLine[] = [];
  readonly exited: Promise<number | null>;
  port = 0;

  constructor(readonly proc: ChildProcess) {
    started.push(proc.pid ?? 0);
    let buf = '';
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line
        }
      }
    });
    proc.stderr?.on('data', (d: Buffer) => process.stderr.write(d));
    this.exited = once(proc, 'exit').then(([code]) => code as number | null);
  }

  static async start(env: Record<string, string> = {}): Promise<Parent> {
    const p = new Parent(
      spawn(process.execPath, [PARENT], {
        env: { ...process.env, LOG_LEVEL: 'debug', CHILD_ENTRY: CHILD, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const l = await waitFor(() => p.lines.find((x) => x.msg === 'SSH proxy server listening'), {
      ...LONG,
      what: 'the parent to listen',
    });
    p.port = Number(String(l.address).split(':').pop());
    return p;
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  has(re: RegExp): LogLine | undefined {
    return this.lines.find((l) => re.test(l.msg));
  }

  signal(sig: NodeJS.Signals): void {
    process.kill(this.pid, sig);
  }
}

class Client {
  private buf = '';
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => (this.buf += d.toString()));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  static async connect(port: number, localAddress?: string): Promise<Client> {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    const c = new Client(s);
    await withTimeout(once(s, 'connect'), 20_000, 'connect');
    return c;
  }

  get greeted(): boolean {
    return this.buf.includes('hello ');
  }

  /** Waits for a line matching `re` and consumes everything up to and including it. */
  async line(re: RegExp): Promise<string> {
    return waitFor(
      () => {
        const lines = this.buf.split('\n');
        const i = lines.slice(0, -1).findIndex((l) => re.test(l));
        if (i < 0) return undefined;
        const hit = lines[i] ?? '';
        this.buf = lines.slice(i + 1).join('\n');
        return hit;
      },
      { ...LONG, what: `a line matching ${re}` },
    );
  }

  async hello(): Promise<{ pid: number; conn: string; peer: string }> {
    const l = await this.line(/^hello /);
    const m = /pid=(\d+) conn=(\S*) peer=(\S+)/.exec(l);
    assert.ok(m, l);
    started.push(Number(m[1]));
    return { pid: Number(m[1]), conn: m[2] ?? '', peer: m[3] ?? '' };
  }

  async echo(text: string): Promise<void> {
    this.socket.write(`${text}\n`);
    await this.line(new RegExp(`^${text}$`));
  }

  /** Sends a command line and returns the child's one-line answer. */
  async ask(cmd: string, answer: RegExp): Promise<string> {
    this.socket.write(`${cmd}\n`);
    return this.line(answer);
  }

  end(): void {
    this.socket.end();
  }
}

/** Connects from `from` and expects the parent's SSH refusal (no child): returns its message. */
async function refusedByParent(port: number, from?: string): Promise<string> {
  const raw = net.connect({ host: '127.0.0.1', port, localAddress: from });
  const chunks: Buffer[] = [];
  raw.on('data', (d: Buffer) => chunks.push(d));
  raw.on('error', () => undefined);
  await withTimeout(once(raw, 'close'), 20_000, 'the refusal');
  const got = Buffer.concat(chunks);
  const nl = got.indexOf('\r\n');
  assert.ok(nl > 0, `an SSH refusal, got ${JSON.stringify(got.toString())}`);
  // SSH_MSG_DISCONNECT: length, padding length, 1, reason, then the message as an SSH string.
  const packet = got.subarray(nl + 2);
  const len = packet.readUInt32BE(10);
  return packet.subarray(14, 14 + len).toString();
}

/** Parent pid and process group of `pid` from /proc. */
function procInfo(pid: number): { ppid: number; pgrp: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), pgrp: Number(f[2]) };
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => (s.destroy(), resolve(false)));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

after(() => {
  rmSync(bundleDir, { recursive: true, force: true });
  // Whatever a failed test left behind: only processes this file started, by pid.
  for (const pid of started) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

describe('forking mode', () => {
  it('the parent stays light: no ssh2, gRPC, NATS or generated code in its module graph', () => {
    const src = readFileSync(PARENT, 'utf8');
    const packages = new Set([...src.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1] ?? ''));
    for (const p of packages) assert.match(p, /^(node:|pino$|pino-pretty$)/, `parent imports ${p}`);
    assert.doesNotMatch(src, /src\/gen\/|ssh2|grpc-js|@nats-io/);
  });

  it('20 concurrent connections, each served by its own detached child; ids from the parent', async () => {
    const parent = await Parent.start();
    const clients = await Promise.all(Array.from({ length: 20 }, () => Client.connect(parent.port)));
    const hellos = await Promise.all(clients.map((c) => c.hello()));
    const pids = new Set(hellos.map((h) => h.pid));
    assert.equal(pids.size, 20);
    assert.ok(!pids.has(parent.pid));
    hellos.forEach((h, i) => {
      // The inherited fd 3 is the client's connection: the child sees the client as its peer.
      assert.equal(h.peer, `127.0.0.1:${clients[i]?.socket.localPort}`);
    });
    for (const h of hellos) {
      const info = procInfo(h.pid);
      assert.equal(info.ppid, parent.pid, 'a child of the parent');
      assert.equal(info.pgrp, h.pid, 'in its own process group');
      assert.match(h.conn, /^[a-z0-9]+-\d+-[a-z2-7]{26}$/);
      assert.ok(
        parent.lines.some(
          (l) => l.msg === 'Child process started' && l.pid === parent.pid && l.conn === h.conn,
        ),
      );
    }
    await Promise.all(clients.map((c, i) => c.echo(`ping-${i}`)));
    for (const c of clients) c.end();
    await waitFor(() => [...pids].every((p) => !pidAlive(p)), { ...LONG, what: 'the children to exit' });
    assert.equal(parent.has(/Subprocess exited with error/), undefined);
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 30_000, 'parent exit'), 0);
  });

  it('a crashing child affects only its connection, and is logged with its exit status', async () => {
    const parent = await Parent.start();
    const a = await Client.connect(parent.port);
    const b = await Client.connect(parent.port);
    const ha = await a.hello();
    await b.hello();
    a.socket.write('crash\n');
    await waitFor(() => a.closed, { ...LONG, what: 'the crashed connection to close' });
    const line = await waitFor(() => parent.has(/^Subprocess exited with error/), LONG);
    assert.equal(line.msg, `Subprocess exited with error, pid: ${ha.pid}, error: exit status 3`);
    assert.equal(line.conn, ha.conn);
    await b.echo('still-here');
    const c = await Client.connect(parent.port);
    await c.hello();
    await c.echo('new-one');
    b.end();
    c.end();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
  });

  it('beyond maxChildren: an SSH disconnect "too many connections" (raw bytes and real OpenSSH)', async () => {
    const parent = await Parent.start({ MAX_CHILDREN: '2' });
    const held = [await Client.connect(parent.port), await Client.connect(parent.port)];
    const heldHellos = await Promise.all(held.map((c) => c.hello()));

    const raw = net.connect({ host: '127.0.0.1', port: parent.port });
    const chunks: Buffer[] = [];
    raw.on('data', (d: Buffer) => chunks.push(d));
    raw.write('SSH-2.0-test\r\n');
    await withTimeout(once(raw, 'end'), 20_000, 'the refusal');
    raw.destroy();
    const got = Buffer.concat(chunks);
    const nl = got.indexOf('\r\n');
    assert.equal(got.subarray(0, nl).toString(), 'SSH-2.0-ssh-proxy_test');
    const packet = got.subarray(nl + 2);
    assert.deepEqual(packet, disconnectPacket(DISCONNECT.TOO_MANY_CONNECTIONS, 'too many connections'));
    assert.equal(packet.length % 8, 0);
    assert.equal(packet.readUInt32BE(5 + 1), 12);

    const ssh = await promisify(execFile)(
      'ssh',
      [
        '-F',
        '/dev/null',
        '-p',
        String(parent.port),
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
      ].concat(['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20', 'someone@127.0.0.1', 'true']),
      { timeout: 30_000 },
    ).then(
      () => assert.fail('ssh should have been refused'),
      (e: { code?: number; stderr?: string }) => e,
    );
    assert.equal(ssh.code, 255);
    assert.match(ssh.stderr ?? '', /Received disconnect from 127\.0\.0\.1 port \d+:12: too many connections/);
    assert.ok(parent.has(/^Too many child processes/));

    held[0]?.end();
    await waitFor(() => !pidAlive(heldHellos[0]?.pid ?? 0), LONG);
    // A slot is free once the parent has reaped the child (a moment after it is gone).
    await waitFor(
      async () => {
        const c = await Client.connect(parent.port);
        // Refused (closed) or greeted by a child, whichever comes first.
        await waitFor(() => c.closed || c.greeted, LONG);
        if (c.closed) return false;
        await c.hello();
        held.push(c);
        return true;
      },
      { ...LONG, what: 'a free slot' },
    );
    for (const c of held) c.end();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
  });

  it('SIGTERM drains: no new connections, children told, open connections finish, then exit 0', async () => {
    const parent = await Parent.start();
    const a = await Client.connect(parent.port);
    const ha = await a.hello();
    parent.signal('SIGTERM');
    await a.line(/^draining$/);
    assert.ok(parent.has(/^Received shutdown signal, stopping server\.\.\.$/));
    await waitFor(() => refused(parent.port), { ...LONG, what: 'the listener to close' });
    await a.echo('served-while-draining');
    assert.equal(parent.proc.exitCode, null, 'the parent waits for its child');
    a.end();
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
    assert.equal(pidAlive(ha.pid), false);
  });

  it('a child past its drain timeout logs the reference line and exits; the parent follows', async () => {
    const parent = await Parent.start({ CHILD_DRAIN_MS: '300' });
    const a = await Client.connect(parent.port);
    const ha = await a.hello();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
    const forced = parent.lines.find((l) => l.msg === 'Cleanup timeout, forcing exit');
    assert.equal(forced?.pid, ha.pid);
    assert.equal(forced?.conn, ha.conn);
    assert.equal(parent.has(/Subprocess exited with error/), undefined, 'the forced exit is exit 0');
    await waitFor(() => a.closed, LONG);
  });

  it('a second SIGTERM exits the parent at once', async () => {
    const parent = await Parent.start();
    const a = await Client.connect(parent.port);
    const ha = await a.hello();
    parent.signal('SIGTERM');
    await a.line(/^draining$/);
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 30_000, 'parent exit'), 1);
    // The child is still draining on its own.
    await a.echo('child-still-serving');
    a.end();
    await waitFor(() => !pidAlive(ha.pid), LONG);
  });

  it('SIGUSR2 hand-over: the old child keeps serving while a new parent accepts on the same port', async () => {
    const old = await Parent.start();
    const a = await Client.connect(old.port);
    const ha = await a.hello();
    old.signal('SIGUSR2');
    assert.equal(await withTimeout(old.exited, 30_000, 'old parent exit'), 0);
    assert.ok(old.has(/^Listener closed for a new parent/));
    await a.echo('after-parent-exit');

    const next = await Parent.start({ PORT: String(old.port) });
    const b = await Client.connect(next.port);
    const hb = await b.hello();
    assert.notEqual(hb.pid, ha.pid);
    await b.echo('new-parent');
    await a.echo('old-child-still-fine');
    assert.equal(pidAlive(ha.pid), true);

    a.end();
    await waitFor(() => !pidAlive(ha.pid), LONG);
    b.end();
    next.signal('SIGTERM');
    assert.equal(await withTimeout(next.exited, 60_000, 'new parent exit'), 0);
  });
});

describe('forking mode: pre-authentication limits in the parent', () => {
  const started = (p: Parent): number =>
    p.lines.filter((l) => l.msg === 'Child process started' && l.pid === p.pid).length;

  it('maxStartups refuses before a child is spawned; a slot is freed exactly once (success, then exit)', async () => {
    const parent = await Parent.start({ MAX_STARTUPS: '3' });
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => Client.connect(parent.port)));
    assert.ok(a && b && c);
    const ha = await a.hello();
    await b.hello();
    await c.hello();
    assert.equal(await refusedByParent(parent.port), 'too many connections');
    assert.equal(started(parent), 3, 'no child for the refused socket');
    const refusal = parent.lines.find((l) => l.msg === 'connection refused before key exchange');
    assert.equal(refusal?.reason, 'max-startups');
    assert.match(String(refusal?.conn), /^[a-z0-9]+-\d+-/);

    // a authenticates: its slot is free although its child still runs.
    await a.ask('source 127.0.0.1', /^admit /);
    await a.ask('auth alice', /^authed$/);
    const d = await waitFor(
      async () => {
        const x = await Client.connect(parent.port);
        await waitFor(() => x.closed || x.greeted, LONG);
        return x.closed ? undefined : x;
      },
      { ...LONG, what: 'the freed slot' },
    );
    await d.hello();
    // a's child exits (reaped once it is gone from /proc): the slot it gave back on success must not
    // be given back twice.
    a.end();
    await waitFor(() => !pidAlive(ha.pid), LONG);
    // b crashes: its slot comes back; then exactly one more socket fits.
    b.socket.write('crash\n');
    await waitFor(() => b.closed, LONG);
    const e = await waitFor(
      async () => {
        const x = await Client.connect(parent.port);
        await waitFor(() => x.closed || x.greeted, LONG);
        return x.closed ? undefined : x;
      },
      { ...LONG, what: "the crashed child's slot" },
    );
    await e.hello();
    assert.equal(await refusedByParent(parent.port), 'too many connections');
    for (const x of [c, d, e]) x.end();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
  });

  it('failures count across children: delays grow per connection, then the parent refuses the source', async () => {
    const parent = await Parent.start({
      MAX_STARTUPS: '50',
      FREE_FAILURES: '1',
      BASE_DELAY_MS: '100',
      REFUSE_AFTER: '3',
    });
    const delays: string[] = [];
    const pids = new Set<number>();
    for (let i = 0; i < 3; i++) {
      const x = await Client.connect(parent.port, '127.0.0.3');
      pids.add((await x.hello()).pid);
      assert.equal(await x.ask('source 127.0.0.3', /^admit /), 'admit ok');
      delays.push(await x.ask('fail bob', /^delay /));
      x.end();
    }
    assert.equal(pids.size, 3, 'one child per connection');
    assert.deepEqual(delays, ['delay 0', 'delay 100', 'delay 200']);
    assert.equal(
      await refusedByParent(parent.port, '127.0.0.3'),
      'too many authentication failures from your address; try again later',
    );
    assert.equal(started(parent), 3);
    // Another source is admitted and not refused; bob's user counter slows it (users are never refused).
    const other = await Client.connect(parent.port, '127.0.0.4');
    await other.hello();
    assert.equal(await other.ask('source 127.0.0.4', /^admit /), 'admit ok');
    assert.equal(await other.ask('refused?', /^refused /), 'refused false');
    assert.equal(await other.ask('fail bob', /^delay /), 'delay 400');
    other.end();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
  });

  it("a trusted relay's sockets are attributed to the client the child reports; malformed lines are ignored", async () => {
    const parent = await Parent.start({ MAX_STARTUPS: '50', MAX_PER_SOURCE: '2', TRUSTED: '127.0.0.9/32' });
    // Three from the relay, all admitted at accept (the relay itself is not one source) …
    const relayed = await Promise.all([1, 2, 3].map(() => Client.connect(parent.port, '127.0.0.9')));
    for (const x of relayed) await x.hello();
    const answers = [];
    for (const x of relayed) answers.push(await x.ask('source 203.0.113.7', /^admit /));
    // … then the per-source cap applies to the header's client.
    assert.deepEqual(answers, ['admit ok', 'admit ok', 'admit max-startups-per-source']);
    const fourth = await Client.connect(parent.port, '127.0.0.9');
    await fourth.hello();
    // Junk on the link is logged and skipped; the next good line is answered.
    await fourth.ask('raw {not json\\n', /^raw sent$/);
    await fourth.ask(`raw ${'x'.repeat(5000)}\\n`, /^raw sent$/);
    await fourth.ask('raw {"op":"failed","id":"x"}\\n', /^raw sent$/);
    assert.equal(await fourth.ask('source 203.0.113.8', /^admit /), 'admit ok');
    await waitFor(
      () =>
        [
          'malformed pre-auth message from a child, ignored',
          'oversized pre-auth message from a child, ignored',
        ].every((m) =>
          parent.lines.some((l) => l.msg === m && l.pid === parent.pid && typeof l.conn === 'string'),
        ),
      { ...LONG, what: 'the malformed-line warnings' },
    );
    // Direct (untrusted) sockets are counted by their own address at accept.
    const direct = await Promise.all([1, 2].map(() => Client.connect(parent.port, '127.0.0.4')));
    for (const x of direct) await x.hello();
    assert.equal(await refusedByParent(parent.port, '127.0.0.4'), 'too many connections');
    for (const x of [...relayed, fourth, ...direct]) x.end();
    parent.signal('SIGTERM');
    assert.equal(await withTimeout(parent.exited, 60_000, 'parent exit'), 0);
  });

  it('after a SIGUSR2 hand-over a child still authenticating decides with a limiter of its own', async () => {
    const parent = await Parent.start({ MAX_STARTUPS: '5', FREE_FAILURES: '1', BASE_DELAY_MS: '100' });
    const x = await Client.connect(parent.port);
    const hx = await x.hello();
    parent.signal('SIGUSR2');
    assert.equal(await withTimeout(parent.exited, 30_000, 'the old parent to exit'), 0);
    // The link is closed: the answers come from the child's own limiter (fresh counters).
    assert.equal(await x.ask('source 10.0.0.1', /^admit /), 'admit ok');
    assert.equal(await x.ask('fail bob', /^delay /), 'delay 0');
    assert.equal(await x.ask('refused?', /^refused /), 'refused false');
    assert.ok(pidAlive(hx.pid));
    x.end();
    await waitFor(() => !pidAlive(hx.pid), LONG);
  });
});
