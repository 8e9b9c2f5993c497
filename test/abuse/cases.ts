// The abuse suite (docs/security.md): hostile clients against the real local stack, each case asserting
// the bound it runs into. `abuseSuite(scale)` defines the tests; the short scale runs inside npm test
// (test/abuse/abuse.test.ts), the full one is `npm run abuse`. Memory is measured in this process,
// which hosts the gateway: heap after a forced GC, before a case and after its client went away.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tcpConnect, type Socket } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Client, type ClientChannel, type ExecOptions } from 'ssh2';
import { run, sshBaseArgs, startE2E, type E2E } from '../e2e/harness.js';
import { waitFor } from '../helpers/wait.js';
import { hashPassword } from '../../src/local/users.js';

export interface AbuseScale {
  name: string;
  idleSockets: number;
  slowSockets: number;
  garbageSockets: number;
  wrongKeyAttempts: number;
  passwordAttempts: number;
  envRequests: number;
  envValueBytes: number;
  channels: number;
}

export const SHORT: AbuseScale = {
  name: 'short',
  idleSockets: 30,
  slowSockets: 3,
  garbageSockets: 5,
  wrongKeyAttempts: 6,
  passwordAttempts: 6,
  envRequests: 300,
  envValueBytes: 16 * 1024,
  channels: 100,
};

export const FULL: AbuseScale = {
  name: 'full',
  idleSockets: 1000,
  slowSockets: 50,
  garbageSockets: 200,
  wrongKeyAttempts: 40,
  passwordAttempts: 40,
  envRequests: 6000,
  envValueBytes: 16 * 1024,
  channels: 500,
};

/** Bounds the suite asserts (config values set below, and the memory bound of docs/security.md). */
const GRACE_S = 3;
const PER_SOURCE = 10;
const MAX_STARTUPS = 100;
const REFUSE_AFTER = 5;
const MAX_SESSIONS = 10;
const MAX_ENV_COUNT = 64;
const MAX_ENV_BYTES = 64 * 1024;
/** Heap a client may leave behind once it is gone (after GC). */
const HEAP_SLACK = 24 * 2 ** 20;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
function heap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}
const debug = (m: string) => {
  if (process.env.ABUSE_DEBUG) console.error(`abuse: ${m}`);
};
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

type RawSocket = Socket & { closedAt: Promise<number>; received(): Buffer };

/** A raw TCP connection from a given loopback source; resolves when connected. */
function rawSocket(port: number, localAddress = '127.0.0.1'): Promise<RawSocket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: '127.0.0.1', port, localAddress });
    s.on('error', () => undefined);
    // Keep reading: a paused socket never sees the server's FIN, so 'close' would never come.
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => {
      if (got.length < 16) got.push(d);
    });
    const closedAt = new Promise<number>((r) => s.once('close', () => r(Date.now())));
    s.once('connect', () => resolve(Object.assign(s, { closedAt, received: () => Buffer.concat(got) })));
    s.once('error', reject);
  });
}

function sshClient(e: E2E, user: string, key: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once('error', reject);
    c.once('ready', () => {
      c.off('error', reject);
      c.on('error', () => undefined);
      resolve(c);
    });
    c.connect({
      host: '127.0.0.1',
      port: e.port,
      username: user,
      privateKey: readFileSync(key),
      readyTimeout: 60_000,
    });
  });
}

function execOut(
  c: Client,
  cmd: string,
  opts: ExecOptions = {},
): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) =>
    c.exec(cmd, opts, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let code: number | null = null;
      ch.on('data', (d: Buffer) => (out += d.toString()));
      ch.stderr.on('data', () => undefined);
      ch.on('exit', (x: number | null) => (code = x));
      ch.on('close', () => resolve({ out, code }));
    }),
  );
}

export function abuseSuite(scale: AbuseScale): void {
  describe(`abuse (${scale.name})`, { timeout: 1_800_000 }, () => {
    let e: E2E;
    const login = async () => {
      const r = await run('ssh', [...sshBaseArgs(e, e.keys.user), `${e.user}@127.0.0.1`, 'echo ok'], {
        timeoutMs: 90_000,
      });
      assert.equal(r.stdout.toString().trim(), 'ok', `a normal login still works: ${r.stderr}`);
    };

    before(async () => {
      e = await startE2E({
        configure: (cfg) => {
          cfg.server.SSHHandshakeTimeout = GRACE_S;
          cfg.server.maxStartups = MAX_STARTUPS;
          cfg.server.maxStartupsPerSource = PER_SOURCE;
          cfg.server.maxSessions = MAX_SESSIONS;
          cfg.server.maxEnvCount = MAX_ENV_COUNT;
          cfg.server.maxEnvBytes = MAX_ENV_BYTES;
          Object.assign(cfg.server.authBackoff, {
            freeFailures: 2,
            baseDelay: 0.05,
            maxDelay: 0.2,
            maxUserDelay: 0.2,
            refuseAfter: REFUSE_AFTER,
            refuseFor: 600,
          });
        },
      });
      // carol has a password (for the password flood); bob has none.
      const users = join(e.dir.join('data'), 'users.yaml');
      writeFileSync(
        users,
        `${readFileSync(users, 'utf8')}  - name: carol\n    password: ${JSON.stringify(await hashPassword('right horse battery'))}\n`,
      );
      await login();
      debug('stack ready');
    });
    after(async () => {
      await e?.stop();
    });

    test(`idle sockets (${scale.idleSockets}): at most maxStartups/maxStartupsPerSource held, all dropped at the grace time`, async (t) => {
      // Half again as many sockets per source as allowed, so both caps are hit.
      const sources = Math.max(1, Math.ceil(scale.idleSockets / (PER_SOURCE * 1.5)));
      const socks: RawSocket[] = [];
      for (let i = 0; i < scale.idleSockets; i++) {
        socks.push(
          await rawSocket(
            e.port,
            `127.0.${1 + Math.floor((i % sources) / 250)}.${2 + ((i % sources) % 250)}`,
          ),
        );
      }
      // Refused ones get a banner and a disconnect at once; held ones only the server's banner.
      const refused = await Promise.all(
        socks.map((s) =>
          Promise.race([
            s.closedAt.then(() => true),
            new Promise<boolean>((r) => setTimeout(() => r(false), 1000)),
          ]),
        ),
      );
      const held = refused.filter((r) => !r).length;
      debug(`idle: ${socks.length} connected, ${held} held`);
      t.diagnostic(`${held} held, ${scale.idleSockets - held} refused at once`);
      assert.ok(held <= Math.min(MAX_STARTUPS, sources * PER_SOURCE), `${held} unauthenticated sockets held`);
      assert.ok(held < scale.idleSockets, 'the caps refused some sockets at once');
      if (held >= MAX_STARTUPS) {
        // The global cap is full (sshd's MaxStartups): a real client is refused too, until the grace time.
        const r = await run('ssh', [...sshBaseArgs(e, e.keys.user), `${e.user}@127.0.0.1`, 'echo ok'], {
          timeoutMs: 90_000,
        });
        assert.match(r.stderr, /too many connections/);
      } else await login();
      await Promise.all(socks.map((s) => s.closedAt));
      await login();
    });

    test(`slowloris (${scale.slowSockets}): a banner one byte at a time is cut off at the grace time`, async () => {
      const banner = Buffer.from(
        'SSH-2.0-OpenSSH_9.2p1 slowloris-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n',
      );
      await Promise.all(
        Array.from({ length: scale.slowSockets }, async (_x, i) => {
          const s = await rawSocket(e.port, `127.0.3.${2 + (i % 200)}`);
          let sent = 0;
          let closed = false;
          void s.closedAt.then(() => (closed = true));
          while (!closed && sent < banner.length) {
            s.write(banner.subarray(sent, sent + 1));
            sent++;
            await new Promise((r) => setTimeout(r, 250));
          }
          assert.ok(closed, 'the server closed the slow connection');
          assert.ok(sent < banner.length, `closed after ${sent} of ${banner.length} bytes`);
        }),
      );
    });

    test('kex then silence: a banner and nothing more is dropped at the grace time', async () => {
      const s = await rawSocket(e.port, '127.0.4.2');
      s.write('SSH-2.0-silent\r\n');
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      await s.closedAt;
      assert.match(
        Buffer.concat(got).toString('latin1'),
        /^SSH-2\.0-/,
        'the server spoke first, then hung up',
      );
    });

    test(`garbage, a huge banner and a huge packet length (${scale.garbageSockets} each) are closed, memory stays`, async (t) => {
      const h0 = heap();
      const cases: Buffer[] = [];
      for (let i = 0; i < scale.garbageSockets; i++) {
        cases.push(Buffer.from(Array.from({ length: 4096 }, () => Math.floor(Math.random() * 256))));
        cases.push(Buffer.alloc(1 << 20, 0x41)); // a 1 MiB "banner" without a line end
        const len = Buffer.alloc(4);
        len.writeUInt32BE(0x7ffffff0);
        cases.push(Buffer.concat([Buffer.from('SSH-2.0-big\r\n'), len, Buffer.alloc(64, 7)]));
      }
      for (let i = 0; i < cases.length; i += 30) {
        await Promise.all(
          cases.slice(i, i + 30).map(async (payload, j) => {
            const s = await rawSocket(e.port, `127.0.5.${2 + ((i + j) % 200)}`);
            s.write(payload);
            await s.closedAt;
          }),
        );
      }
      const h1 = heap();
      t.diagnostic(`heap ${mib(h0)} → ${mib(h1)}`);
      assert.ok(h1 - h0 < HEAP_SLACK, `heap grew by ${mib(h1 - h0)}`);
      await login();
    });

    test(`wrong-key flood (${scale.wrongKeyAttempts}): the source is refused after authBackoff.refuseAfter failures`, async () => {
      const from = ['-b', '127.0.6.2'];
      for (let i = 0; i < scale.wrongKeyAttempts; i++) {
        const r = await run(
          'ssh',
          [...sshBaseArgs(e, e.keys.stranger), ...from, `${e.user}@127.0.0.1`, 'true'],
          { timeoutMs: 60_000 },
        );
        assert.notEqual(r.code, 0);
      }
      // Now even the right key is refused from that source, and accepted from another.
      const r = await run(
        'ssh',
        [...sshBaseArgs(e, e.keys.user), ...from, `${e.user}@127.0.0.1`, 'echo in'],
        { timeoutMs: 60_000 },
      );
      assert.notEqual(r.stdout.toString().trim(), 'in', 'a refused source cannot log in');
      await login();
    });

    test(`password flood (${scale.passwordAttempts}): never offered to a user without one; guesses are refused like keys`, async () => {
      const noPw = await run(
        'ssh',
        [
          ...sshBaseArgs(e, e.keys.bob),
          '-b',
          '127.0.7.2',
          '-o',
          'PreferredAuthentications=password',
          'bob@127.0.0.1',
          'true',
        ],
        { timeoutMs: 60_000 },
      );
      assert.match(
        noPw.stderr,
        /Permission denied \((?!.*password)[^)]*\)/,
        'password is not among the offered methods',
      );
      let refusedAt = -1;
      for (let i = 0; i < scale.passwordAttempts; i++) {
        const r = await run(
          'sshpass',
          [
            '-p',
            `wrong-${i}`,
            'ssh',
            ...sshBaseArgs(e, e.keys.stranger).filter((a) => a !== 'BatchMode=yes'),
            '-o',
            'BatchMode=no',
            '-o',
            'PreferredAuthentications=password',
            '-o',
            'NumberOfPasswordPrompts=1',
            '-b',
            '127.0.7.3',
            'carol@127.0.0.1',
            'true',
          ],
          { timeoutMs: 60_000 },
        );
        assert.notEqual(r.code, 0);
        if (refusedAt < 0 && i >= REFUSE_AFTER) refusedAt = i;
      }
      const right = await run(
        'sshpass',
        [
          '-p',
          'right horse battery',
          'ssh',
          ...sshBaseArgs(e, e.keys.stranger).filter((a) => a !== 'BatchMode=yes'),
          '-o',
          'BatchMode=no',
          '-o',
          'PreferredAuthentications=password',
          '-b',
          '127.0.7.3',
          'carol@127.0.0.1',
          'echo in',
        ],
        { timeoutMs: 60_000 },
      );
      assert.notEqual(
        right.stdout.toString().trim(),
        'in',
        'the flooding source is refused even with the right password',
      );
    });

    test(`env flood (${scale.envRequests} × ${scale.envValueBytes} B): at most maxEnvCount/maxEnvBytes kept, memory returns`, async (t) => {
      const h0 = heap();
      const c = await sshClient(e, e.user, e.keys.user);
      const env: Record<string, string> = {};
      const value = 'x'.repeat(scale.envValueBytes);
      for (let i = 0; i < scale.envRequests; i++) env[`LC_FLOOD_${i}`] = value;
      const r = await execOut(c, 'env | grep -c "^LC_FLOOD_"; env | grep "^LC_FLOOD_" | wc -c', { env });
      c.end();
      const [count, bytes] = r.out.trim().split('\n').map(Number);
      t.diagnostic(`${count} variables, ${bytes} bytes reached the workspace`);
      assert.ok((count ?? 0) <= MAX_ENV_COUNT && (count ?? 0) > 0, `count ${count}`);
      assert.ok((bytes ?? 0) <= MAX_ENV_BYTES + (count ?? 0) * 2, `bytes ${bytes}`);
      await waitFor(() => e.stack.gateway.registry.size === 0, {
        timeoutMs: 30_000,
        what: 'the connection to end',
      }).catch(() => undefined);
      const h1 = heap();
      t.diagnostic(`heap ${mib(h0)} → ${mib(h1)}`);
      assert.ok(h1 - h0 < HEAP_SLACK, `heap grew by ${mib(h1 - h0)}`);
    });

    test(`${scale.channels} session channels on one connection: maxSessions open at once, memory returns`, async (t) => {
      const h0 = heap();
      const c = await sshClient(e, e.user, e.keys.user);
      const opened: ClientChannel[] = [];
      let refused = 0;
      await Promise.all(
        Array.from(
          { length: scale.channels },
          () =>
            new Promise<void>((resolve) =>
              c.exec('sleep 30', (err, ch) => {
                if (err) refused++;
                else {
                  opened.push(ch);
                  ch.on('data', () => undefined);
                  ch.stderr.on('data', () => undefined);
                }
                resolve();
              }),
            ),
        ),
      );
      t.diagnostic(`${opened.length} opened, ${refused} refused`);
      assert.ok(opened.length <= MAX_SESSIONS, `${opened.length} sessions open at once`);
      assert.ok(refused >= scale.channels - MAX_SESSIONS);
      c.end();
      await waitFor(() => e.stack.gateway.registry.size === 0, {
        timeoutMs: 30_000,
        what: 'the connection to end',
      }).catch(() => undefined);
      const h1 = heap();
      t.diagnostic(`heap ${mib(h0)} → ${mib(h1)}`);
      assert.ok(h1 - h0 < HEAP_SLACK, `heap grew by ${mib(h1 - h0)}`);
    });

    test('absurd window sizes: a 2^32-1 terminal is clamped to 65535', async () => {
      const c = await sshClient(e, e.user, e.keys.user);
      try {
        const r = await execOut(c, 'stty size', {
          pty: { rows: 0xffffffff, cols: 0xffffffff, term: 'xterm' },
        });
        const [rows, cols] = r.out.trim().split(/\s+/).map(Number);
        assert.ok((rows ?? 0) <= 65535 && (cols ?? 0) <= 65535, `stty size ${r.out.trim()}`);
      } finally {
        c.end();
      }
    });

    test('path traversal in streamlocal: out of the home and into another user’s files is refused', async () => {
      const c = await sshClient(e, 'bob', e.keys.bob);
      try {
        const openFailure = (path: string) =>
          new Promise<string>((resolve) =>
            c.openssh_forwardOutStreamLocal(path, (err, ch) => {
              if (err) return resolve(err.message);
              ch.end();
              resolve('opened');
            }),
          );
        assert.match(await openFailure('../../../../../run/x.sock'), /leaves the workspace home/);
        if (process.getuid?.() === 0) {
          // The token directory is root's (0700): bob's agent, running as root, must not go there for him.
          assert.match(await openFailure(join(e.stack.tokens.dir, 'agent')), /permission denied/i);
        }
      } finally {
        c.end();
      }
    });
  });
}
