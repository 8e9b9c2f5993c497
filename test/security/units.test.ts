// Unit-level checks of the security modules: the agent's as_user rule, streamlocal path resolution and
// the permission check for another uid, StrictModes of the local stack, the session registry's reaper.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { UserResolver } from '../../src/agent/users.js';
import { mayConnect, resolveDialPath } from '../../src/agent/socket-path.js';
import { recordSession, reapSessions, useSessionRegistry } from '../../src/agent/session-registry.js';
import { strictModeProblem } from '../../src/local/hardening.js';
import { startLocalStack } from '../../src/local/stack.js';
import { makeTempDir } from '../helpers/tmp.js';
import { pidAlive, waitFor } from '../helpers/wait.js';

describe('agent as_user rule', () => {
  // As root the workspace user is another account (nobody), as a workspace of the local stack is.
  const me = process.getuid?.() === 0 ? 'nobody' : userInfo().username;
  test('without sudo: only "" or the workspace user; names are never trimmed or rewritten', async () => {
    const r = new UserResolver({ user: me, sudo: false }, '/tmp');
    assert.equal((await r.resolve('')).user.name, me);
    assert.equal((await r.resolve(me)).user.name, me);
    for (const bad of [
      'root',
      ` ${me}`,
      `${me} `,
      'root%20',
      me.toUpperCase() === me ? 'X' : me.toUpperCase(),
      '../root',
      '-r',
      'a b',
      '',
    ]) {
      if (bad === '') continue;
      await assert.rejects(
        r.resolve(bad),
        (e: Error & { code?: string }) => e.code === 'denied',
        JSON.stringify(bad),
      );
    }
  });
  test('with sudo: other existing users are allowed, odd spellings still are not', async () => {
    const r = new UserResolver({ user: me, sudo: true }, '/tmp');
    await assert.rejects(r.resolve('root '), (e: Error & { code?: string }) => e.code === 'denied');
    if (process.getuid?.() === 0) assert.equal((await r.resolve('root')).user.name, 'root');
  });
  test('unconfigured (reference behaviour): the name rule still applies', async () => {
    const r = new UserResolver(undefined, '/tmp');
    await assert.rejects(r.resolve(' root'), (e: Error & { code?: string }) => e.code === 'denied');
  });
});

describe('streamlocal paths', () => {
  test('relative paths resolve in the home and never leave it; absolute ones are kept', () => {
    assert.deepEqual(resolveDialPath('a/b.sock', '/h'), { path: '/h/a/b.sock' });
    assert.deepEqual(resolveDialPath('./x/../y.sock', '/h'), { path: '/h/y.sock' });
    assert.deepEqual(resolveDialPath('/run/x.sock', '/h'), { path: '/run/x.sock' });
    for (const p of ['..', '../x.sock', 'a/../../x', '.'])
      assert.ok('problem' in resolveDialPath(p, '/h'), p);
  });
  test(
    'another uid may only reach a socket it could reach itself',
    { skip: process.getuid?.() !== 0 ? 'the check only matters for a root agent' : false },
    async () => {
      const d = makeTempDir('spx-sock-');
      try {
        chmodSync(d.path, 0o711);
        mkdirSync(d.join('open'), { mode: 0o755 });
        mkdirSync(d.join('closed'), { mode: 0o700 });
        const servers = await Promise.all(
          ['open/s', 'closed/s'].map(
            (p) =>
              new Promise<ReturnType<typeof createServer>>((r) => {
                const s = createServer();
                s.listen(d.join(p), () => r(s));
              }),
          ),
        );
        chmodSync(d.join('open/s'), 0o777);
        // Any uid that is not the directory owner's stands for "another user".
        const nobody = { uid: (process.getuid?.() ?? 0) + 12345, gid: 65534, groups: [65534] };
        assert.equal(await mayConnect(d.join('open/s'), nobody), undefined);
        assert.match((await mayConnect(d.join('closed/s'), nobody)) ?? '', /permission denied/);
        chmodSync(d.join('open/s'), 0o755);
        assert.match((await mayConnect(d.join('open/s'), nobody)) ?? '', /permission denied/);
        for (const s of servers) s.close();
      } finally {
        d.cleanup();
      }
    },
  );
});

describe('local stack StrictModes', () => {
  test('a writable users.yaml, policy.yaml or data dir is refused with the chmod to run', async () => {
    assert.match(
      strictModeProblem('/x', { mode: 0o100666, uid: process.getuid?.() ?? 0 }) ?? '',
      /chmod go-w '\/x'/,
    );
    assert.equal(strictModeProblem('/x', { mode: 0o100644, uid: process.getuid?.() ?? 0 }), undefined);
    for (const [file, mode] of [
      ['users.yaml', 0o666],
      ['policy.yaml', 0o620],
      ['.', 0o777],
    ] as const) {
      const d = makeTempDir('spx-strict-');
      try {
        const data = d.join('data');
        mkdirSync(data);
        if (file !== '.')
          writeFileSync(`${data}/${file}`, file === 'users.yaml' ? 'users: []\n' : 'rules: []\n');
        chmodSync(file === '.' ? data : `${data}/${file}`, mode);
        await assert.rejects(
          startLocalStack({ listen: '127.0.0.1:0', dataDir: data, homeDir: d.path }),
          (e: Error) => /group- or world-writable/.test(e.message) && /chmod go-w/.test(e.message),
          file,
        );
      } finally {
        d.cleanup();
      }
    }
  });
});

describe('session registry', () => {
  test('reapSessions kills every process still in a recorded session, and only those', async () => {
    const d = makeTempDir('spx-reg-');
    try {
      useSessionRegistry(d.join('reg'));
      // A session leader with a background child that outlives nothing by itself.
      const leader = spawn('sh', ['-c', 'sleep 300 & echo $!; wait'], {
        detached: true,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      recordSession(leader.pid);
      let out = '';
      leader.stdout.on('data', (b: Buffer) => (out += b.toString()));
      const child = Number(
        await waitFor(() => /(\d+)/.exec(out)?.[1], { timeoutMs: 10_000, what: 'the child pid' }),
      );
      const bystander = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
      const killed = reapSessions(d.join('reg'));
      assert.ok(killed >= 2, `killed ${killed}`);
      await waitFor(() => !pidAlive(child) && !pidAlive(leader.pid ?? 0), {
        timeoutMs: 10_000,
        what: 'the session to be gone',
      });
      assert.ok(pidAlive(bystander.pid ?? 0), 'a process of another session is left alone');
      bystander.kill('SIGKILL');
    } finally {
      d.cleanup();
    }
  });
});
