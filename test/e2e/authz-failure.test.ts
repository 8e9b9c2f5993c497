// Fail closed, end to end: the gateway of the local stack talks to a test authz.v1 server (in front of
// the local policy service) that hangs past `authz.timeout`, answers bytes that do not decode or a
// message of the wrong shape, or is down. Every action is then refused (login: Permission denied;
// workspace:create: the reference message; shell/exec/sftp: `ssh-proxy: <kind> refused: authorization
// is unavailable` and exit 1; forwards: an open failure and not one byte), a log line names the cause,
// and a running session of another user on another connection carries on meanwhile.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { copyToolArgs, ssh, startE2E, type E2E } from './harness.js';
import { startSshAgent } from './fwd-helpers/agent.js';
import { Processes, runEnv, sshArgs, waitWhileRunning, type Background } from './fwd-helpers/proc.js';
import { freePort, open, startEcho, type Running } from './fwd-helpers/servers.js';
import { startTestAuthz, type AuthzMode, type TestAuthz } from './policy-helpers/test-authz.js';

const UNAVAILABLE = 'authorization is unavailable';
const PROHIBITED = `open failed: administratively prohibited: refused: ${UNAVAILABLE}`;

describe('authz down, hanging or answering garbage: every action refused', { timeout: 600_000 }, () => {
  let e: E2E;
  let authz: TestAuthz;
  let tmp: TempDir;
  /** A connection with its workspace bound and two forwards (-L port, -L socket) listening. */
  let warm: { sock: string; proc: Background; port: number; unixSock: string };
  /** A connection that has not touched its workspace yet: its next channel asks workspace:create. */
  let fresh: string;
  /** Bob's exec, started while authz answered, waiting for a line on stdin. */
  let running: Background;
  const procs = new Processes();
  const servers: Running[] = [];

  const log = () => readFileSync(e.logFile, 'utf8');
  const logLines = () =>
    log()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const count = (s: string, part: string) => s.split(part).length - 1;

  async function master(name: string, forwards: string[]): Promise<{ sock: string; proc: Background }> {
    const sock = tmp.join(`${name}.sock`);
    const proc = procs.start('ssh', [
      ...sshArgs(e, { logLevel: 'INFO' }),
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPath=${sock}`,
      '-o',
      'ControlPersist=no',
      '-N',
      ...forwards,
      `${e.user}@127.0.0.1`,
    ]);
    await waitWhileRunning(proc, () => existsSync(sock), `the control socket ${name}`);
    return { sock, proc };
  }

  before(async () => {
    authz = await startTestAuthz();
    e = await startE2E({
      configure: (cfg) => {
        authz.target = cfg.authz.address;
        cfg.authz.address = authz.address;
        // Short, so the hanging cases end quickly; long enough for the local policy on a busy machine.
        cfg.authz.timeout = 2;
      },
    });
    tmp = makeTempDir('spx-authzf-');
    const echo = await startEcho();
    const echoSock = tmp.join('echo.sock');
    servers.push(echo, await startEcho(echoSock));
    const port = await freePort();
    const unixSock = tmp.join('fwd.sock');
    const m = await master('warm', [
      '-L',
      `127.0.0.1:${port}:127.0.0.1:${echo.port}`,
      '-L',
      `${unixSock}:${echoSock}`,
    ]);
    warm = { ...m, port, unixSock };
    const ok = await ssh(e, e.user, ['true'], { options: ['-S', warm.sock] });
    assert.equal(ok.code, 0, ok.stderr);
    // Both forwards work while authz answers.
    assert.equal((await roundTrip(port)).toString(), 'ping\n');
    assert.equal((await roundTrip(unixSock)).toString(), 'ping\n');
    fresh = (await master('fresh', [])).sock;

    const execs = () => logLines().filter((l) => l.msg === 'exec started').length;
    const before = execs();
    running = procs.start('ssh', [
      ...sshArgs(e, { key: e.keys.bob }),
      'bob@127.0.0.1',
      'read x; echo got-$x',
    ]);
    await waitWhileRunning(running, () => execs() > before, "bob's running session");
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
    authz?.close();
    tmp?.cleanup();
  });

  /** Every action, with the outcome §23.e asks for while the authz service cannot answer. */
  async function everyActionRefused(cause: RegExp, reached: boolean): Promise<void> {
    authz.received.length = 0;
    const lines = logLines().length;
    const prohibitedBefore = count(warm.proc.stderr(), PROHIBITED);

    const login = await ssh(e, e.user, ['echo in']);
    assert.equal(login.code, 255, login.stderr);
    assert.match(login.stderr, /Permission denied \(\)\./);
    assert.equal(login.stdout.length, 0);

    const create = await ssh(e, e.user, ['echo in'], { options: ['-S', fresh] });
    assert.equal(create.code, 1, create.stderr);
    assert.equal(
      create.stderr,
      `ssh-proxy: Access denied: user ${e.user} is not authorized to create this workspace: ${UNAVAILABLE}\n`,
    );

    const exec = await ssh(e, e.user, ['echo in'], { options: ['-S', warm.sock] });
    assert.equal(exec.code, 1, exec.stderr);
    assert.equal(exec.stderr, `ssh-proxy: exec refused: ${UNAVAILABLE}\n`);
    assert.equal(exec.stdout.length, 0);

    for (const tty of ['-tt', '-T']) {
      const shell = await ssh(e, e.user, [], { options: ['-S', warm.sock, tty], input: 'echo in\nexit 0\n' });
      assert.equal(shell.code, 1, `${tty}: ${shell.stderr}`);
      assert.match(shell.stderr, new RegExp(`^ssh-proxy: shell refused: ${UNAVAILABLE}\\r?$`, 'm'), tty);
      assert.doesNotMatch(shell.stdout.toString(), /^in\r?$/m, tty);
    }

    const sftp = await runEnv(
      'sftp',
      [...copyToolArgs(e, e.keys.user), '-o', `ControlPath=${warm.sock}`, '-b', '-', `${e.user}@127.0.0.1`],
      { input: 'pwd\n' },
    );
    assert.notEqual(sftp.code, 0);
    assert.match(sftp.stderr, new RegExp(`^ssh-proxy: sftp refused: ${UNAVAILABLE}$`, 'm'));

    // Forwards: -W (ProxyJump's channel) and both -L listeners get an open failure and no bytes.
    const w = await runEnv(
      'ssh',
      [...sshArgs(e), '-S', warm.sock, '-W', `127.0.0.1:${servers[0]?.port}`, `${e.user}@127.0.0.1`],
      {
        input: 'ping\n',
      },
    );
    assert.equal(w.code, 255);
    assert.equal(w.stdout.length, 0);
    assert.equal((await bytesUntilClosed(warm.port)).length, 0, '-L port');
    assert.equal((await bytesUntilClosed(warm.unixSock)).length, 0, '-L socket');
    await waitWhileRunning(
      warm.proc,
      () => count(warm.proc.stderr(), PROHIBITED) >= prohibitedBefore + 3,
      'three open failures that say why',
    );

    if (reached)
      for (const action of [
        'user:auth',
        'workspace:create',
        'ssh:exec',
        'ssh:shell',
        'ssh:sftp',
        'ssh:direct-tcpip',
        'ssh:direct-streamlocal',
      ])
        assert.ok(
          authz.received.some((r) => r.action === action),
          `${action} reached the authz service`,
        );
    // The operator log names the cause, for logins and for channel actions.
    await waitFor(
      () => {
        const fresh = logLines().slice(lines);
        const auth = fresh.find((l) => l.msg === 'user:auth evaluation failed');
        const act = fresh.find((l) => l.msg === 'authz: evaluate ssh:exec failed; denied');
        return auth && act && cause.test(String(auth.err)) && cause.test(String(act.err));
      },
      { timeoutMs: 10_000, what: `log lines naming the cause (${cause.source})` },
    );
  }

  const modes: Array<[AuthzMode, RegExp]> = [
    ['hang', /no answer within authz\.timeout \(2000 ms\)|DEADLINE_EXCEEDED/],
    ['garbage', /INTERNAL: Response message parsing error/],
    ['wrong-shape', /INTERNAL: Response message parsing error: not an EvaluateResponse/],
  ];
  for (const [mode, cause] of modes)
    test(`authz ${mode === 'hang' ? 'hanging past authz.timeout' : `answering ${mode}`}: every action refused`, async () => {
      authz.mode = mode;
      try {
        await everyActionRefused(cause, true);
      } finally {
        authz.mode = 'forward';
      }
    });

  test('a failing check later in a session: agent forwarding is withheld, recording refuses the exec', async () => {
    const agent = startSshAgent(tmp.join('agent.sock'), [e.keys.user]);
    authz.affects.add('ssh:agent-forward');
    authz.mode = 'hang';
    try {
      const r = await runEnv('ssh', [
        ...sshArgs(e, { agentSock: agent.sock }),
        '-A',
        `${e.user}@127.0.0.1`,
        'echo "sock=${SSH_AUTH_SOCK:-none}"; echo ran',
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'sock=none\nran\n');
      authz.affects.clear();
      authz.affects.add('session:record');
      authz.mode = 'garbage';
      const rec = await ssh(e, e.user, ['echo in'], { options: ['-S', warm.sock] });
      assert.equal(rec.code, 1, rec.stderr);
      assert.equal(rec.stderr, 'ssh-proxy: exec refused: the recording decision failed\n');
      assert.equal(rec.stdout.length, 0);
    } finally {
      authz.affects.clear();
      authz.mode = 'forward';
      agent.stop();
    }
  });

  test('authz down: every action refused', async () => {
    authz.down();
    await everyActionRefused(/UNAVAILABLE/, false);
  });

  test("meanwhile another user's running session carried on; with authz back, logins work again", async () => {
    running.child.stdin?.end('yes\n');
    const r = await running.exited;
    assert.equal(r.code, 0, running.stderr());
    assert.equal(running.stdout(), 'got-yes\n');
    await authz.up();
    // grpc-js reconnects with a backoff: the first attempts may still be refused.
    const back = await waitFor(
      async () => {
        const s = await ssh(e, e.user, ['echo back']);
        return s.code === 0 ? s : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: 'a login once authz is back' },
    );
    assert.equal(back.stdout.toString(), 'back\n');
  });
});

/** One line through a forward (closed after the echo), as the warm-up check. */
async function roundTrip(target: number | string): Promise<Buffer> {
  const sock = await open(target);
  try {
    sock.write('ping\n');
    return await withTimeout(
      new Promise<Buffer>((resolve) => sock.once('data', (d: Buffer) => resolve(d))),
      30_000,
      'the echo',
    );
  } finally {
    sock.destroy();
  }
}

/** Connects, sends a line, and returns every byte received until the peer closes or resets. */
async function bytesUntilClosed(target: number | string): Promise<Buffer> {
  const sock: Socket = await open(target);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((resolve) => {
    sock.once('close', () => resolve());
    sock.once('error', () => resolve());
  });
  sock.write('ping\n');
  await withTimeout(closed, 30_000, 'the refused connection to close');
  sock.destroy();
  return Buffer.concat(chunks);
}
