// What scripts and other clients do that depends on the channel pipeline, compared with Debian's sshd
// on a loopback port:
// - PTY shells fed from a pipe (input, then EOF): the shell runs on after client EOF until it exits,
//   then exit-status (OpenSSH, plink, asyncssh).
// - Raw bytes: commands, env values and scp -O names that are not UTF-8 arrive byte for byte.
// - SSH_CONNECTION / SSH_CLIENT as sshd sets them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../e2e/harness.js';
import { parseEnv, sshArgs, sshTo, sshViaShell, type Target } from './baseline.js';
import { puttyArgs, REPO, startClientsE2E, startEcho, type ClientsE2E, type EchoServer } from './harness.js';
import { startSshd, type Sshd } from './sshd.js';

let e: ClientsE2E;
let sshd: Sshd;
let echo: EchoServer;
let gw: Target;
let base: Target;
before(async () => {
  e = await startClientsE2E();
  sshd = await startSshd(e.dir.join('sshd'), `${e.keys.user}.pub`);
  echo = await startEcho();
  gw = { name: 'gateway', port: e.port, key: e.keys.user, user: e.user };
  base = { name: 'sshd', port: sshd.port, key: e.keys.user, user: e.user };
});
after(async () => {
  await echo.close();
  await sshd.stop();
  await e.stop();
});

describe('PTY shells fed from a pipe, as with sshd', () => {
  test("OpenSSH: printf 'echo hi\\nexit 7\\n' | ssh -tt host exits 7 after printing hi", async () => {
    for (const t of [base, gw]) {
      const r = await sshTo(t, [], { options: ['-tt'], input: 'echo hi\nexit 7\n', timeoutMs: 30_000 });
      assert.equal(r.code, 7, `${t.name}: ${r.stderr}`);
      assert.match(r.stdout.toString(), /^hi\r?$/m, t.name);
    }
  });

  test('plink -t: a shell fed from a pipe runs it and exits with its status', async () => {
    const r = await run('plink', ['-ssh', '-t', ...puttyArgs(e), `${e.user}@127.0.0.1`], {
      input: 'echo hi\nexit 7\n',
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stdout.toString(), /^hi\r?$/m);
  });

  test('asyncssh: a PTY shell given input then EOF returns output and status', async () => {
    const r = await run(
      '/usr/bin/python3',
      [
        join(REPO, 'test/clients/py/asyncssh_client.py'),
        String(e.port),
        e.user,
        e.keys.user,
        e.dir.path,
        String(echo.port),
        'pty_eof',
      ],
      { timeoutMs: 120_000 },
    );
    const res = JSON.parse(r.stdout.toString()) as Record<
      string,
      { output?: string; status?: number; error?: string }
    >;
    assert.equal(res.pty_eof?.error, undefined);
    assert.match(String(res.pty_eof?.output), /pty-42/);
    assert.equal(res.pty_eof?.status, 5);
  });
});

describe('raw bytes and the connection variables, as with sshd', () => {
  test('a command with bytes that are not UTF-8 runs byte for byte', async () => {
    const cmd = e.dir.join('raw-cmd');
    writeFileSync(cmd, Buffer.from("printf '%s' '\xff\xfe\x80' | od -An -tx1 | tr -d ' \\n'", 'latin1'));
    for (const t of [base, gw]) {
      const r = await sshViaShell(t, `exec ssh "$@" "$(cat '${cmd}')"`);
      assert.equal(r.stdout.toString(), 'fffe80', `${t.name}: ${r.stderr}`);
    }
  });

  test('an env value with bytes that are not UTF-8 arrives unchanged', async () => {
    for (const t of [base, gw]) {
      const r = await sshViaShell(
        t,
        `exec ssh -o "SetEnv=LC_RAW_V=$(printf 'a\\377b')" "$@" 'printf "%s" "$LC_RAW_V" | od -An -tx1 | tr -d " \\n"'`,
      );
      assert.equal(r.stdout.toString(), '61ff62', `${t.name}: ${r.stderr}`);
    }
  });

  test('scp -O to a file name that is not UTF-8 creates exactly that name', async () => {
    const src = e.dir.join('raw-src.txt');
    writeFileSync(src, 'raw name\n');
    for (const t of [base, gw]) {
      const r = await run('sh', [
        '-c',
        `exec scp -O -P ${t.port} ${sshArgs(t)
          .filter((a, i, all) => all[i - 1] !== '-p' && a !== '-p')
          .join(' ')} '${src}' "${t.user}@127.0.0.1:$(printf 'raw-\\377.txt')"`,
      ]);
      assert.equal(r.code, 0, `${t.name}: ${r.stderr}`);
      const ls = await sshTo(t, ['ls | od -An -tx1 | tr -d " \\n"']);
      assert.match(ls.stdout.toString(), /7261772dff2e747874/, t.name);
    }
  });

  test('SSH_CONNECTION and SSH_CLIENT describe the client and the gateway, as sshd’s do', async () => {
    const [g, s] = await Promise.all([sshTo(gw, ['env']), sshTo(base, ['env'])]);
    const genv = parseEnv(g.stdout.toString());
    const senv = parseEnv(s.stdout.toString());
    assert.match(senv.get('SSH_CONNECTION') ?? '', /^127\.0\.0\.1 \d+ 127\.0\.0\.1 \d+$/);
    assert.match(
      genv.get('SSH_CONNECTION') ?? '',
      new RegExp(`^127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${e.port}$`),
    );
    assert.match(genv.get('SSH_CLIENT') ?? '', new RegExp(`^127\\.0\\.0\\.1 \\d+ ${e.port}$`));
    const names = (m: Map<string, string>) =>
      [...m.keys()].filter((k) => !['PWD', 'SHLVL', '_', 'OLDPWD'].includes(k)).sort();
    assert.deepEqual(names(genv), names(senv));
  });
});
