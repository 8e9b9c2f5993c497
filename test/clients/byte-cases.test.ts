// Byte-level behaviour compared with Debian's sshd on a loopback port (test/clients/sshd.ts): a 100 KB
// command line (ssh2 patch 010), 2 MB stdout + 2 MB stderr at once (patch 001; 20 runs), and the session
// environment (no agent variables, sshd's PATH and MAIL, TERM and SSH_TTY only with a PTY, no stack
// files in the home). Raw non-UTF-8 bytes and SSH_CONNECTION/SSH_CLIENT: piped-and-raw.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { parseEnv, sshTo, sshViaShell, type Target } from './baseline.js';
import { startClientsE2E, type ClientsE2E } from './harness.js';
import { startSshd, type Sshd } from './sshd.js';

let e: ClientsE2E;
let sshd: Sshd;
let gw: Target;
let base: Target;
before(async () => {
  e = await startClientsE2E();
  sshd = await startSshd(e.dir.join('sshd'), `${e.keys.user}.pub`);
  gw = { name: 'gateway', port: e.port, key: e.keys.user, user: e.user };
  base = { name: 'sshd', port: sshd.port, key: e.keys.user, user: e.user };
});
after(async () => {
  await sshd.stop();
  await e.stop();
});

describe('byte cases, gateway vs sshd', () => {
  test('a 100 KB command line (ssh host "$(cat long-script)") runs as with sshd', async () => {
    const script = e.dir.join('long-script');
    writeFileSync(
      script,
      `# ${'x'.repeat(100_000)}\nv=$(printf '%s' "$0" | wc -c)\necho "long-ok"\nexit 3\n`,
    );
    for (const t of [base, gw]) {
      const r = await sshViaShell(t, `exec ssh "$@" "$(cat '${script}')"`);
      assert.equal(r.code, 3, `${t.name}: ${r.stderr}`);
      assert.equal(r.stdout.toString(), 'long-ok\n', t.name);
    }
  });

  test('2 MB stdout and 2 MB stderr at once: both complete, exit status after both (20 runs)', async () => {
    const cmd = 'head -c 2000000 /dev/zero >&2 & head -c 2000000 /dev/zero; wait; exit 4';
    const ref = await sshTo(base, [cmd], { timeoutMs: 60_000 });
    assert.deepEqual(
      { code: ref.code, out: ref.stdout.length, err: ref.stderr.length },
      { code: 4, out: 2_000_000, err: 2_000_000 },
    );
    for (let i = 0; i < 20; i++) {
      const r = await sshTo(gw, [cmd], { timeoutMs: 120_000 });
      assert.deepEqual(
        { code: r.code, out: r.stdout.length, err: r.stderr.length },
        { code: 4, out: 2_000_000, err: 2_000_000 },
        `run ${i}`,
      );
    }
  });

  test('non-PTY environment: sshd’s variables, nothing from the agent, no TERM', async () => {
    const [g, s] = await Promise.all([sshTo(gw, ['env']), sshTo(base, ['env'])]);
    assert.equal(g.code, 0, g.stderr);
    const genv = parseEnv(g.stdout.toString());
    const senv = parseEnv(s.stdout.toString());
    // Only what sshd also sets (SSH_CONNECTION/SSH_CLIENT: piped-and-raw.test.ts).
    const shellOwn = new Set(['PWD', 'SHLVL', '_', 'OLDPWD']);
    for (const name of genv.keys())
      if (!shellOwn.has(name)) assert.ok(senv.has(name), `gateway sets ${name}, sshd does not`);
    assert.equal(genv.get('TERM'), undefined);
    assert.equal(genv.get('PATH'), senv.get('PATH'));
    assert.equal(genv.get('MAIL'), senv.get('MAIL'));
    assert.equal(genv.get('USER'), senv.get('USER'));
    assert.equal(genv.get('LOGNAME'), senv.get('LOGNAME'));
    // LANG only when the client sends it.
    const withLang = await sshTo(gw, ['echo "$LANG"'], { options: ['-o', 'SetEnv=LANG=C.UTF-8'] });
    assert.equal(withLang.stdout.toString(), 'C.UTF-8\n');
  });

  test('PTY: TERM from the pty-req, SSH_TTY names the terminal, as with sshd', async () => {
    for (const t of [base, gw]) {
      const r = await sshTo(t, ['echo "T=$TERM|$SSH_TTY|$(tty)"'], {
        options: ['-tt'],
        env: { TERM: 'xterm-h5test' },
      });
      const m = /T=([^|]*)\|([^|]*)\|(\S+)/.exec(r.stdout.toString());
      assert.ok(m, `${t.name}: ${r.stdout.toString()}`);
      assert.equal(m[1], 'xterm-h5test', t.name);
      assert.equal(m[2], m[3], t.name);
    }
  });

  test('the workspace home holds none of the local stack’s files', async () => {
    const r = await sshTo(gw, ['ls -A "$HOME"']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout.toString(), /agent\.addr|agent\.log|workspace\.json/);
  });
});
