// The channel pipeline end to end with the real OpenSSH client: shells driven through stdin as
// scripts and CI jobs do ({PTY, no PTY} × {input then EOF at once, input then EOF later, EOF with no
// input} × {cold, warm, ControlMaster}), stdout and stderr both complete, a throwing handler ends only
// its channel, as-user rules on every channel type, refused agent channels, and per-connection caps.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { ssh, startE2E, type E2E } from './harness.js';
import {
  Processes,
  runEnv,
  sshArgs,
  startControlMaster,
  waitWhileRunning,
  type Background,
} from './fwd-helpers/proc.js';
import { open, readBytes, startEcho, type Running } from './fwd-helpers/servers.js';

const COLD_BLUEPRINTS = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
const MARK = 'mark-42';
const MARK_CMD = 'echo mark-$((6*7))';

describe('channel pipeline', { timeout: 600_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  let master: string;
  const procs = new Processes();
  const servers: Running[] = [];
  let cold = 0;

  const log = () => readFileSync(e.logFile, 'utf8');
  const logLines = () =>
    log()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    // A simulated image pull makes every cold start slow enough that input arrives before the shell.
    e = await startE2E({
      blueprints: [...COLD_BLUEPRINTS, 'dev'],
      pullDelayMs: 1500,
      backends: {
        hooks: {
          beforeSessionHandler(_kind, detail) {
            if (detail === 'spx-test-throw') throw new Error('injected handler failure');
          },
        },
      },
      configure: (cfg) => {
        cfg.server.maxStreamLocalConnections = 1;
      },
    });
    tmp = makeTempDir('spx-pipe-');
    master = tmp.join('master.sock');
    const r = await ssh(e, e.user, ['true']);
    assert.equal(r.code, 0, r.stderr);
    await startControlMaster(procs, e, master);
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
    tmp?.cleanup();
  });

  type Conn = 'cold' | 'warm' | 'master';
  type Mode = 'at once' | 'later' | 'no input';

  function startShell(conn: Conn, pty: boolean): Background {
    const login = conn === 'cold' ? `${e.user}~${COLD_BLUEPRINTS[cold++]}` : e.user;
    const via = conn === 'master' ? ['-S', master] : [];
    return procs.start('ssh', [...sshArgs(e), ...via, pty ? '-tt' : '-T', `${login}@127.0.0.1`]);
  }

  /** Kills the login shell of the session whose EOF the gateway logged as the `n`-th one. */
  async function hangUpShellAfterEof(eofsBefore: number): Promise<void> {
    const eof = await waitFor(
      () => logLines().filter((l) => l.msg === 'client sent EOF' && l.pty === true)[eofsBefore],
      { timeoutMs: 60_000, what: 'the gateway to see the client EOF' },
    );
    const chan = String(eof.chan);
    // The shell must still be alive after the EOF (sshd keeps a PTY shell running): find it by its
    // K8SHELL_SESSION_ID and hang it up, which ends it the way a closed terminal would.
    const find = `for p in /proc/[0-9]*; do grep -qz "^K8SHELL_SESSION_ID=${chan}$" $p/environ 2>/dev/null && echo \${p#/proc/}; done`;
    const pids = await waitFor(
      async () => {
        const r = await ssh(e, e.user, [find]);
        return r.stdout.toString().trim();
      },
      { timeoutMs: 30_000, what: `the shell of ${chan}` },
    );
    const k = await ssh(e, e.user, [`kill -HUP ${pids.split('\n').join(' ')}`]);
    assert.equal(k.code, 0, k.stderr);
  }

  for (const pty of [true, false])
    for (const mode of ['at once', 'later', 'no input'] as Mode[])
      for (const conn of ['cold', 'warm', 'master'] as Conn[])
        test(`${pty ? 'PTY' : 'no PTY'} shell, input ${mode}, ${conn} connection`, async () => {
          const eofsBefore = logLines().filter((l) => l.msg === 'client sent EOF' && l.pty === true).length;
          const sh = startShell(conn, pty);
          const stdin = sh.child.stdin;
          assert.ok(stdin);
          if (mode === 'at once') stdin.end(`${MARK_CMD}\nexit 7\n`);
          else if (mode === 'later') {
            stdin.write(`${MARK_CMD}\n`);
            await waitWhileRunning(sh, () => sh.stdout().includes(MARK), 'the first command', 60_000);
            stdin.end('exit 7\n');
          } else stdin.end();
          if (mode === 'no input' && pty) await hangUpShellAfterEof(eofsBefore);
          const r = await sh.exited;
          const out = sh.stdout();
          if (mode === 'no input') {
            // No PTY: stdin EOF ends the shell at once (exit 0). PTY: it ran until hung up (exit-signal).
            if (pty) assert.equal(r.code, 255, `${out}\n${sh.stderr()}`);
            else {
              assert.equal(r.code, 0, sh.stderr());
              assert.equal(out, '');
            }
            return;
          }
          assert.equal(r.code, 7, `${out}\n${sh.stderr()}`);
          if (pty) assert.match(out, new RegExp(`(^|[\\r\\n])${MARK}\\r?\\n`));
          else assert.equal(out, `${MARK}\n`);
        });

  test('2 MB on stdout and 2 MB on stderr at once: every byte and the exit status, 20 times', async () => {
    const n = 2_000_000;
    for (let i = 0; i < 20; i++) {
      const r = await runEnv(
        'ssh',
        [
          ...sshArgs(e),
          '-S',
          master,
          `${e.user}@127.0.0.1`,
          `head -c ${n} /dev/zero >&2 & head -c ${n} /dev/zero; wait; exit 3`,
        ],
        { timeoutMs: 60_000 },
      );
      assert.equal(r.code, 3, `run ${i}: ${r.stderr.slice(0, 200)}`);
      assert.equal(r.stdout.length, n, `run ${i}: stdout`);
      assert.equal(Buffer.byteLength(r.stderr), n, `run ${i}: stderr`);
    }
  });

  test('a handler that throws ends only its channel, with a reference the log also has', async () => {
    const started = () => logLines().filter((l) => l.msg === 'exec started').length;
    const before = started();
    const waiting = procs.start('ssh', [
      ...sshArgs(e),
      '-S',
      master,
      `${e.user}@127.0.0.1`,
      'read x; echo got-$x',
    ]);
    await waitFor(() => started() > before, { timeoutMs: 30_000, what: 'the waiting session' });
    const r = await runEnv('ssh', [...sshArgs(e), '-S', master, `${e.user}@127.0.0.1`, 'spx-test-throw']);
    assert.equal(r.code, 1);
    const ref = /^ssh-proxy: internal error \(ref ([0-9a-f]{8})\)$/m.exec(r.stderr)?.[1];
    assert.ok(ref, r.stderr);
    assert.ok(logLines().some((l) => l.ref === ref && l.msg === `internal error (ref ${ref})`));
    waiting.child.stdin?.end('yes\n');
    const w = await waiting.exited;
    assert.equal(w.code, 0, waiting.stderr());
    assert.equal(waiting.stdout(), 'got-yes\n');
  });

  test('ssh -A without a local agent: the client refuses the channel, so no SSH_AUTH_SOCK', async () => {
    const r = await runEnv(
      'ssh',
      [...sshArgs(e), '-o', 'ForwardAgent=yes', `${e.user}@127.0.0.1`, 'echo "sock=${SSH_AUTH_SOCK:-none}"'],
      { env: { SSH_AUTH_SOCK: '' } },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'sock=none\n');
  });

  test('user= is checked on every channel type: no root without sudo, no odd spellings', async () => {
    const bob = { key: e.keys.bob };
    for (const login of [
      'bob~dev+user=root',
      'bob~dev+user=root%20',
      'bob~dev+user=%20root',
      'bob~dev+user=daemon',
    ]) {
      const ex = await ssh(e, login, ['id -u'], bob);
      assert.equal(ex.code, 1, `${login}: ${ex.stderr}`);
      assert.match(ex.stderr, /^ssh-proxy: (user bob may not run as|the user name in the login)/m, login);
      assert.equal(ex.stdout.length, 0);
      const sh = await ssh(e, login, [], { ...bob, options: ['-tt'], input: 'id -u\nexit\n' });
      assert.equal(sh.code, 1, `${login} shell: ${sh.stderr}`);
      assert.doesNotMatch(sh.stdout.toString(), /^0\r?$/m);
      const sftp = await runEnv('sftp', [
        ...sshArgs(e, { key: e.keys.bob }).map((a) => (a === '-p' ? '-P' : a)),
        '-b',
        '-',
        `${login}@127.0.0.1`,
      ]);
      assert.notEqual(sftp.code, 0, `${login} sftp`);
    }
    const own = await ssh(e, 'bob~dev+user=bob', ['echo ok'], bob);
    assert.equal(own.code, 0, own.stderr);
    assert.equal(own.stdout.toString(), 'ok\n');
  });

  test('direct-streamlocal channels are capped per connection like direct-tcpip', async () => {
    const remote = tmp.join('remote.sock');
    const echo = await startEcho(remote);
    servers.push(echo);
    const local1 = tmp.join('l1.sock');
    const local2 = tmp.join('l2.sock');
    const fwd = procs.start('ssh', [
      ...sshArgs(e, { logLevel: 'DEBUG' }),
      '-N',
      '-L',
      `${local1}:${remote}`,
      '-L',
      `${local2}:${remote}`,
      `${e.user}@127.0.0.1`,
    ]);
    await waitWhileRunning(fwd, () => existsSync(local1) && existsSync(local2), 'both forwards');
    const first = await open(local1);
    first.write('one');
    assert.equal((await readBytes(first, 3, 30_000)).toString(), 'one');
    const second = await open(local2);
    second.on('error', () => undefined);
    await waitWhileRunning(
      fwd,
      () => /maximum direct-streamlocal connections exceeded \(1\)/.test(fwd.stderr()),
      'the second open to be refused',
    );
    first.destroy();
    second.destroy();
  });
});
