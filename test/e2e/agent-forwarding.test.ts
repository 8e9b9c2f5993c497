// Issue 4 end to end: agent forwarding (ssh -A) from a real ssh-agent, on exec and shell sessions,
// with parallel agent clients in the workspace and the workspace using the agent to ssh back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import pty from 'node-pty';
import { waitFor } from '../helpers/wait.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { startE2E, type E2E } from './harness.js';
import { startSshAgent, type SshAgent } from './fwd-helpers/agent.js';
import { Processes, runEnv, sshArgs, waitWhileRunning } from './fwd-helpers/proc.js';
import type { RunResult } from './harness.js';

/** The reference agent socket path (wire-protocol.md §7): /var/run/ssh-agent-<agent socket id>.sock. */
const SOCK_RE = /^\/var\/run\/ssh-agent-ux-[A-Za-z0-9-]+\.sock$/;

/** `SHA256:…` of the first key `ssh-add -l` lists. */
function fingerprint(list: string): string {
  const m = /SHA256:[A-Za-z0-9+/]+/.exec(list);
  if (!m) throw new Error(`no fingerprint in: ${list}`);
  return m[0];
}

describe('agent forwarding (ssh -A with a real ssh-agent)', { timeout: 180_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  let agent: SshAgent;
  let fp: string;
  const procs = new Processes();

  /** ssh with the real agent for authentication, forwarded with -A. */
  const sshA = (args: string[], timeoutMs = 30_000): Promise<RunResult> =>
    runEnv('ssh', [...sshArgs(e, { agentSock: agent.sock }), '-A', `${e.user}@127.0.0.1`, ...args], {
      env: { SSH_AUTH_SOCK: agent.sock },
      timeoutMs,
    });

  before(async () => {
    e = await startE2E();
    tmp = makeTempDir('spx-agent-');
    agent = startSshAgent(tmp.join('agent.sock'), [e.keys.user]);
    fp = fingerprint(agent.list());
  });
  after(async () => {
    await procs.stopAll();
    agent?.stop();
    await e?.stop();
    tmp?.cleanup();
  });

  test('exec: ssh -A host ssh-add -l lists the key; SSH_AUTH_SOCK is the reference path', async () => {
    const r = await sshA(['ssh-add -l; echo "rc=$?"; echo "sock=$SSH_AUTH_SOCK"']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, /rc=0\n/);
    assert.equal(fingerprint(out), fp);
    const sock = /sock=(.*)\n/.exec(out)?.[1] ?? '';
    assert.match(sock, SOCK_RE);
  });

  test('shell: ssh -A -tt lists the key from the forwarded agent', async () => {
    const p = pty.spawn(
      'ssh',
      [...sshArgs(e, { agentSock: agent.sock }), '-A', '-tt', `${e.user}@127.0.0.1`],
      {
        cols: 200,
        rows: 24,
        env: { ...process.env, TERM: 'xterm', SSH_AUTH_SOCK: agent.sock },
      },
    );
    let screen = '';
    p.onData((d) => (screen += d));
    const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
    try {
      await waitFor(() => /[$#] $/.test(screen), { timeoutMs: 30_000, what: 'a shell prompt' });
      // The marker is computed, so the echoed command line never matches it.
      p.write('ssh-add -l; echo "agent-rc=$((40+$?))"; echo "sock=$SSH_AUTH_SOCK."\r');
      await waitFor(() => /agent-rc=\d+/.test(screen), { timeoutMs: 15_000, what: 'ssh-add output' });
      assert.match(screen, /agent-rc=40/);
      assert.ok(screen.includes(fp), `fingerprint ${fp} missing from: ${screen}`);
      await waitFor(() => /sock=\/var\/run\/\S+\./.test(screen), { what: 'SSH_AUTH_SOCK' });
      const sock = /sock=(\/var\/run\/\S+)\./.exec(screen)?.[1] ?? '';
      assert.match(sock, SOCK_RE);
      p.write('exit\r');
      assert.equal(await exited, 0);
      // The listener goes away with the session.
      await waitFor(() => !existsSync(sock), { what: `${sock} to be removed after the shell ended` });
    } finally {
      p.kill();
    }
  });

  test('ten parallel ssh-add -l in the workspace all succeed', async () => {
    const script = [
      'd=$(mktemp -d)',
      'for i in $(seq 10); do (ssh-add -l >"$d/out.$i" 2>&1; echo $? >"$d/rc.$i") & done',
      'wait',
      'for i in $(seq 10); do echo "$i rc=$(cat "$d/rc.$i") $(head -n1 "$d/out.$i")"; done',
      'rm -rf "$d"',
    ].join('\n');
    const r = await sshA([script]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.toString().trim().split('\n');
    assert.equal(lines.length, 10, r.stdout.toString());
    for (const [i, line] of lines.entries()) {
      assert.match(line, new RegExp(`^${i + 1} rc=0 `), line);
      assert.ok(line.includes(fp), line);
    }
  });

  test('the workspace uses the forwarded agent to ssh back through the gateway', async () => {
    const inner = [
      'ssh -F /dev/null',
      `-p ${e.port}`,
      '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR',
      `${e.user}@127.0.0.1 echo nested-ok`,
    ].join(' ');
    // The same command without the agent must fail: the key exists only in the client's agent.
    const r = await sshA(
      [`${inner}; (unset SSH_AUTH_SOCK; ${inner} 2>/dev/null || echo without-agent-refused)`],
      60_000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'nested-ok\nwithout-agent-refused\n');
  });

  test('without -A there is no SSH_AUTH_SOCK in the session', async () => {
    const r = await runEnv(
      'ssh',
      [...sshArgs(e), `${e.user}@127.0.0.1`, 'echo "sock=${SSH_AUTH_SOCK-unset}"'],
      {
        env: { SSH_AUTH_SOCK: agent.sock },
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'sock=unset\n');
  });

  test('the agent socket serves only the session and goes away when the session ends', async () => {
    const bg = procs.start(
      'ssh',
      [
        ...sshArgs(e, { agentSock: agent.sock }),
        '-A',
        `${e.user}@127.0.0.1`,
        'test -S "$SSH_AUTH_SOCK" && echo "sock=$SSH_AUTH_SOCK"; read -r line; echo "got=$line"',
      ],
      { SSH_AUTH_SOCK: agent.sock },
    );
    const sock = await waitWhileRunning(
      bg,
      () => /sock=(\S+)\n/.exec(bg.stdout())?.[1],
      'the agent socket path',
    );
    assert.match(sock, SOCK_RE);
    // A process outside the session (this test) is not served (unixsocket-owner, wire-protocol §9.8).
    const outsider = await runEnv('ssh-add', ['-l'], { env: { SSH_AUTH_SOCK: sock }, timeoutMs: 10_000 });
    assert.notEqual(outsider.code, 0, `an outsider listed keys: ${outsider.stdout.toString()}`);
    assert.ok(!outsider.stdout.toString().includes(fp));
    bg.child.stdin?.end('bye\n');
    const ended = await bg.exited;
    assert.equal(ended.code, 0, bg.stderr());
    assert.match(bg.stdout(), /got=bye\n/);
    await waitFor(() => !existsSync(sock), { what: `${sock} to be removed after the exec ended` });
  });
});
