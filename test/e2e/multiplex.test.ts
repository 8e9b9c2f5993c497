// Issue 4 end to end: one OpenSSH ControlMaster connection carrying sessions and forwards at once,
// VS Code's `ssh -T -D PORT host bash` pattern, and refusals (-R, X11, subsystems, tun) that leave
// the connection usable.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { startE2E, type E2E } from './harness.js';
import {
  Processes,
  runEnv,
  sshArgs,
  startControlMaster,
  waitWhileRunning,
  type Background,
} from './fwd-helpers/proc.js';
import {
  exchange,
  freePort,
  open,
  readBytes,
  startEcho,
  startHttp,
  type Running,
} from './fwd-helpers/servers.js';

describe('multiplexing, VS Code pattern and refusals', { timeout: 180_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  let host: string;
  const procs = new Processes();
  const servers: Running[] = [];

  const startMaster = (path: string): Promise<Background> => startControlMaster(procs, e, path, host);

  /** ssh through an existing master (`-S path`). */
  const viaMaster = (path: string, args: string[], env?: NodeJS.ProcessEnv) =>
    runEnv('ssh', [...sshArgs(e, { logLevel: 'INFO' }), '-S', path, ...args], { env });

  before(async () => {
    e = await startE2E();
    tmp = makeTempDir('spx-mux-');
    host = `${e.user}@127.0.0.1`;
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
    tmp?.cleanup();
  });

  test('ControlMaster: three concurrent sessions and two forwards at once, each with its own state', async () => {
    const cm = tmp.join('cm');
    const master = await startMaster(cm);
    const echo = await startEcho();
    const http = await startHttp('through the master\n');
    servers.push(echo, http);

    // Each session announces itself, then waits (bounded) until all three and the test's "go" exist,
    // so they provably run at the same time as each other and as the forwards.
    const rdv = tmp.join('rdv');
    const session = (n: number, code: number) =>
      viaMaster(cm, [
        host,
        `touch ${rdv}.s${n}; for i in $(seq 300); do ` +
          `[ -e ${rdv}.s1 ] && [ -e ${rdv}.s2 ] && [ -e ${rdv}.s3 ] && [ -e ${rdv}.go ] && break; sleep 0.05; done; ` +
          `[ -e ${rdv}.go ] && echo "s${n} out"; echo "s${n} err" >&2; exit ${code}`,
      ]);
    const sessions = [session(1, 0), session(2, 3), session(3, 7)];

    const [l1, l2] = [await freePort(), await freePort()];
    for (const spec of [`127.0.0.1:${l1}:127.0.0.1:${echo.port}`, `127.0.0.1:${l2}:127.0.0.1:${http.port}`]) {
      const r = await viaMaster(cm, ['-O', 'forward', '-L', spec, host]);
      assert.equal(r.code, 0, r.stderr);
    }
    const held = await open(l1);
    try {
      held.write('held open');
      assert.equal((await readBytes(held, 9)).toString(), 'held open');
      const curl = await runEnv('curl', [
        '-sS',
        '--noproxy',
        '*',
        '--max-time',
        '15',
        `http://127.0.0.1:${l2}/`,
      ]);
      assert.equal(curl.code, 0, curl.stderr);
      assert.equal(curl.stdout.toString(), 'through the master\n');
      assert.equal((await exchange(l1, 'second')).toString(), 'secondEOF-SEEN\n');
      writeFileSync(`${rdv}.go`, '');

      const results = await Promise.all(sessions);
      for (const [i, r] of results.entries()) {
        const n = i + 1;
        assert.equal(r.code, [0, 3, 7][i], `s${n}: ${r.stderr}`);
        assert.equal(r.stdout.toString(), `s${n} out\n`);
        assert.equal(r.stderr, `s${n} err\n`);
      }
      // The held forward outlived the sessions and still works.
      held.write('after');
      assert.equal((await readBytes(held, 5)).toString(), 'after');
    } finally {
      held.destroy();
    }
    const exit = await viaMaster(cm, ['-O', 'exit', host]);
    assert.equal(exit.code, 0, exit.stderr);
    const ended = await master.exited;
    assert.notEqual(ended.signal, 'SIGKILL');
  });

  test('-R is refused: ExitOnForwardFailure makes ssh exit 255 with "remote port forwarding failed"', async () => {
    for (const spec of ['127.0.0.1:0:127.0.0.1:22', `${tmp.join('remote-fwd.sock')}:127.0.0.1:22`]) {
      const r = await runEnv('ssh', [
        ...sshArgs(e),
        '-o',
        'ExitOnForwardFailure=yes',
        '-R',
        spec,
        host,
        'true',
      ]);
      assert.equal(r.code, 255, r.stderr);
      assert.match(r.stderr, /remote port forwarding failed/);
    }
  });

  test('refusals on a ControlMaster connection (-R, X11, unknown subsystem) leave it usable', async () => {
    const cm = tmp.join('cm2');
    await startMaster(cm);
    const stillOk = async (after: string) => {
      const r = await viaMaster(cm, [host, 'echo still-ok']);
      assert.equal(r.code, 0, `after ${after}: ${r.stderr}`);
      assert.equal(r.stdout.toString(), 'still-ok\n', `after ${after}`);
    };

    const fwd = await viaMaster(cm, ['-O', 'forward', '-R', '127.0.0.1:0:127.0.0.1:22', host]);
    assert.equal(fwd.code, 255, fwd.stderr);
    assert.match(fwd.stderr, /remote port forwarding failed/);
    await stillOk('-R');

    const x11 = await viaMaster(cm, ['-X', host, 'echo "x11=${DISPLAY-unset}"'], { DISPLAY: ':99' });
    assert.equal(x11.code, 0, x11.stderr);
    assert.equal(x11.stdout.toString(), 'x11=unset\n');
    await stillOk('X11');

    const sub = await viaMaster(cm, ['-s', host, 'nosuch']);
    assert.equal(sub.code, 255, sub.stderr);
    assert.equal(sub.stdout.length, 0);
    await stillOk('an unknown subsystem');
  });

  test('X11 request refused (ssh says so) while the session still runs', async () => {
    const r = await runEnv(
      'ssh',
      [...sshArgs(e, { logLevel: 'INFO' }), '-o', 'ForwardX11=yes', host, 'echo "x11=${DISPLAY-unset}"'],
      { env: { DISPLAY: ':99' } },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /X11 forwarding request failed on channel 0/);
    assert.equal(r.stdout.toString(), 'x11=unset\n');
  });

  test('an unknown subsystem is refused', async () => {
    const r = await runEnv('ssh', [...sshArgs(e, { logLevel: 'INFO' }), '-s', host, 'nosuch']);
    assert.equal(r.code, 255, r.stderr);
    assert.match(r.stderr, /subsystem request failed on channel 0/);
    assert.equal(r.stdout.length, 0);
  });

  test('an unknown channel type (tun, ssh -w) is refused with "channel type not supported"; the session runs', async () => {
    const r = await runEnv('ssh', [...sshArgs(e, { logLevel: 'INFO' }), '-w', 'any', host, 'echo after-tun']);
    assert.match(r.stderr, /open failed: unknown channel type: channel type not supported/);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'after-tun\n');
  });

  test("VS Code's pattern: ssh -T -D PORT host bash, a server started in the workspace, a request via SOCKS", async () => {
    const dport = await freePort();
    const bg = procs.start('ssh', [
      ...sshArgs(e, { logLevel: 'DEBUG1' }),
      '-T',
      '-D',
      `127.0.0.1:${dport}`,
      host,
      'bash',
    ]);
    // Like VS Code's install script: start a server, print its port between markers, keep bash on stdin.
    const server =
      `require('http').createServer((q, s) => s.end('vscode-server-ok\\n'))` +
      `.listen(0, '127.0.0.1', function () { console.log('listeningOn==' + this.address().port + '=='); })`;
    // One line: bash parses it whole, so `read` then takes the next line of stdin, not of the script.
    bg.child.stdin?.write(
      `${JSON.stringify(process.execPath)} -e ${JSON.stringify(server)} & pid=$!; ` +
        'read -r line; kill $pid; echo "bye-$line"\n',
    );
    const port = await waitWhileRunning(
      bg,
      () => /listeningOn==(\d+)==/.exec(bg.stdout())?.[1],
      'the server port',
    );
    await waitWhileRunning(
      bg,
      () => new RegExp(`Local forwarding listening on \\S+ port ${dport}\\.`).test(bg.stderr()),
      'the SOCKS listener',
    );
    const r = await runEnv('curl', [
      '-sS',
      '--max-time',
      '15',
      '--socks5-hostname',
      `127.0.0.1:${dport}`,
      `http://127.0.0.1:${port}/`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'vscode-server-ok\n');
    bg.child.stdin?.end('done\n');
    const ended = await bg.exited;
    assert.equal(ended.code, 0, bg.stderr());
    assert.match(bg.stdout(), /bye-done\n/);
  });
});
