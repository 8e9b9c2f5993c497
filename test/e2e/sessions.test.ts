// Issue 3 end to end: OpenSSH ssh/sftp/scp against the real local stack.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import pty from 'node-pty';
import { waitFor } from '../helpers/wait.js';
import { IDENTITY_UNAVAILABLE } from '../../src/gateway/auth.js';
import {
  copyToolArgs,
  identityDown,
  identityUp,
  run,
  ssh,
  sshBaseArgs,
  startE2E,
  type E2E,
} from './harness.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('gateway sessions (OpenSSH client → gateway → agent)', { timeout: 240_000 }, () => {
  let e: E2E;
  before(async () => {
    e = await startE2E({ blueprints: ['dev'] });
  });
  after(async () => {
    await e?.stop();
  });

  test('exec exit codes 0, 1 and 42', async () => {
    for (const code of [0, 1, 42]) {
      const r = await ssh(e, e.user, [`exit ${code}`]);
      assert.equal(r.code, code, `exit ${code}: ${r.stderr}`);
    }
  });

  test('two connections of the same user arriving during a start share that start', async () => {
    const login = `${e.user}~dev`;
    const before = e.stack.provisioner.workspaces().length;
    const [a, b] = await Promise.all([ssh(e, login, ['echo a']), ssh(e, login, ['echo b'])]);
    assert.equal(a.stdout.toString(), 'a\n', a.stderr);
    assert.equal(b.stdout.toString(), 'b\n', b.stderr);
    assert.equal(e.stack.provisioner.workspaces().length, before + 1, 'one new workspace');
    assert.match(readFileSync(e.logFile, 'utf8'), /joining a workspace start already in progress/);
  });

  test('stdout and stderr arrive separately', async () => {
    const r = await ssh(e, e.user, ['echo to-out; echo to-err >&2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
  });

  test('a command killed by a signal is reported as exit-signal', async () => {
    const r = await ssh(e, e.user, ['kill -TERM $$'], { options: ['-v'] });
    // OpenSSH exits 255 when the remote command died of a signal; the debug log names it.
    assert.equal(r.code, 255);
    assert.match(r.stderr, /rtype exit-signal/);
  });

  test('SetEnv of an accepted name reaches the command, others do not; USER and LOGNAME are the login user', async () => {
    const r = await ssh(e, e.user, ['echo "$LC_SPX_TEST/${SPX_OTHER:-unset}/$USER/$LOGNAME"'], {
      options: ['-o', 'SetEnv=LC_SPX_TEST=hello-env SPX_OTHER=x'],
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `hello-env/unset/${e.user}/${e.user}\n`);
  });

  test('64 MiB of stdin through sha256sum matches', async () => {
    const data = randomBytes(64 * 1024 * 1024);
    const r = await ssh(e, e.user, ['sha256sum'], { input: data, timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString().split(' ')[0], sha256(data));
  });

  test('interactive PTY shell: prompt, command, window change, exit 7', async () => {
    const p = pty.spawn('ssh', [...sshBaseArgs(e, e.keys.user), '-tt', `${e.user}@127.0.0.1`], {
      cols: 80,
      rows: 24,
      env: { ...process.env, TERM: 'xterm' },
    });
    let screen = '';
    p.onData((d) => (screen += d));
    const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
    try {
      await waitFor(() => /[$#] $/.test(screen), { timeoutMs: 30_000, what: 'a shell prompt' });
      p.write('echo hello-$((6*7))\r');
      await waitFor(() => screen.includes('hello-42'), { timeoutMs: 10_000, what: 'command output' });
      p.write('stty size\r');
      await waitFor(() => screen.includes('24 80'), { timeoutMs: 10_000, what: 'initial size' });
      p.resize(100, 40);
      // The resize travels as SIGWINCH → window-change → ResizeTerminal; poll until it shows.
      await waitFor(
        () => {
          p.write('stty size\r');
          return screen.includes('40 100');
        },
        { timeoutMs: 10_000, intervalMs: 300, what: 'resized terminal' },
      );
      p.write('exit 7\r');
      assert.equal(await exited, 7);
    } finally {
      p.kill();
    }
  });

  test('keys typed while the workspace starts reach the shell (not dropped)', async () => {
    // bob's workspace is not started yet: the first keystrokes arrive while it is being provisioned.
    const p = pty.spawn('ssh', [...sshBaseArgs(e, e.keys.bob), '-tt', 'bob@127.0.0.1'], {
      cols: 80,
      rows: 24,
      env: { ...process.env, TERM: 'xterm' },
    });
    let screen = '';
    p.onData((d) => (screen += d));
    const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
    try {
      p.write('echo early-$((40+2)); exit 5\r');
      await waitFor(() => screen.includes('early-42'), {
        timeoutMs: 30_000,
        what: 'the early command to run',
      });
      assert.equal(await exited, 5);
    } finally {
      p.kill();
    }
  });

  test('sftp batch put, get, ls, rm with sha256 checks', async () => {
    const local = e.dir.join('sftp-src.bin');
    const back = e.dir.join('sftp-back.bin');
    const data = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(local, data);
    const batch = e.dir.join('batch.txt');
    writeFileSync(
      batch,
      `put ${local} spx-sftp.bin\nls -l spx-sftp.bin\nget spx-sftp.bin ${back}\nrm spx-sftp.bin\n`,
    );
    const r = await run('sftp', [...copyToolArgs(e, e.keys.user), '-b', batch, `${e.user}@127.0.0.1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /spx-sftp\.bin/);
    assert.equal(sha256(readFileSync(back)), sha256(data));
    const gone = await ssh(e, e.user, ['test -e spx-sftp.bin; echo $?']);
    assert.equal(gone.stdout.toString(), '1\n');
  });

  for (const mode of ['sftp', 'legacy'] as const) {
    test(`scp (${mode} protocol) up and down with sha256 checks`, async () => {
      const local = e.dir.join(`scp-${mode}.bin`);
      const back = e.dir.join(`scp-${mode}-back.bin`);
      const data = randomBytes(2 * 1024 * 1024 + 5);
      writeFileSync(local, data);
      const base = [...(mode === 'legacy' ? ['-O'] : []), ...copyToolArgs(e, e.keys.user)];
      const up = await run('scp', [...base, local, `${e.user}@127.0.0.1:spx-scp-${mode}.bin`]);
      assert.equal(up.code, 0, up.stderr);
      const remoteSum = await ssh(e, e.user, [`sha256sum spx-scp-${mode}.bin`]);
      assert.equal(remoteSum.stdout.toString().split(' ')[0], sha256(data));
      const down = await run('scp', [...base, `${e.user}@127.0.0.1:spx-scp-${mode}.bin`, back]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(sha256(readFileSync(back)), sha256(data));
    });
  }

  test('an unknown key and an unknown user are denied', async () => {
    const badKey = await ssh(e, e.user, ['true'], { key: e.keys.stranger });
    assert.equal(badKey.code, 255);
    assert.match(badKey.stderr, /Permission denied/);
    const badUser = await ssh(e, 'no-such-user', ['true']);
    assert.equal(badUser.code, 255);
    assert.match(badUser.stderr, /Permission denied/);
  });

  test('a provisioner failure: its message on a PTY shell, exit status 1 on exec', async () => {
    const shell = await ssh(e, `${e.user}~broken`, [], { options: ['-tt'], input: '' });
    assert.equal(shell.code, 1);
    assert.match(shell.stdout.toString() + shell.stderr, /unknown blueprint "broken"/);
    const exec = await ssh(e, `${e.user}~broken`, ['true']);
    assert.equal(exec.code, 1);
    assert.match(exec.stderr, /^ssh-proxy: .*unknown blueprint "broken"/m);
    assert.equal(exec.stdout.length, 0, 'no progress bytes on an exec channel');
  });

  test('identity down means denied, with a message saying why; the gateway serves again once it is back', async () => {
    const address = await identityDown(e);
    const denied = await ssh(e, e.user, ['true']);
    assert.equal(denied.code, 255);
    assert.ok(denied.stderr.includes(IDENTITY_UNAVAILABLE), denied.stderr);
    assert.doesNotMatch(denied.stderr, /UNAVAILABLE:|ECONNREFUSED/);
    await identityUp(e, address);
    await waitFor(async () => (await ssh(e, e.user, ['echo back'])).stdout.toString() === 'back\n', {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: 'login after identity restart',
    });
  });

  test("the agent killed mid-session ends that session at once; another user's continues", async () => {
    const bob = spawn('ssh', [...sshBaseArgs(e, e.keys.bob), 'bob@127.0.0.1', 'cat'], { stdio: 'pipe' });
    let bobOut = '';
    bob.stdout.on('data', (d: Buffer) => (bobOut += d.toString()));
    const mine = spawn(
      'ssh',
      [...sshBaseArgs(e, e.keys.user), `${e.user}@127.0.0.1`, 'echo started; sleep 30'],
      {
        stdio: 'pipe',
      },
    );
    let mineOut = '';
    mine.stdout.on('data', (d: Buffer) => (mineOut += d.toString()));
    const mineClosed = new Promise<number | null>((r) => mine.on('close', (code) => r(code)));
    try {
      bob.stdin.write('ping-1\n');
      await waitFor(() => bobOut.includes('ping-1'), { timeoutMs: 30_000, what: "bob's session" });
      await waitFor(() => mineOut.includes('started'), { timeoutMs: 30_000, what: 'my session' });
      const ws = e.stack.provisioner.workspaces().find((w) => w.name.startsWith(`${e.user}-`) && w.pid);
      assert.ok(ws?.pid, 'my workspace agent is running');
      process.kill(ws.pid, 'SIGKILL');
      await waitFor(() => mine.exitCode !== null || mine.signalCode !== null, {
        timeoutMs: 10_000,
        what: 'my session to end after its agent died',
      });
      await mineClosed;
      bob.stdin.write('ping-2\n');
      await waitFor(() => bobOut.includes('ping-2'), {
        timeoutMs: 5000,
        what: "bob's session still working",
      });
    } finally {
      bob.kill();
      mine.kill();
    }
  });
});
