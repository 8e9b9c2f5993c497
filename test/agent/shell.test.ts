// Shell, ResizeTerminal, Handshake and the shell-level errors of the agent, over real gRPC.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import {
  ShellStartRequest,
  type ShellRequest,
  type ShellResponse,
} from '../../src/gen/k8shelld/v1/k8shelld.js';
import { CAPABILITIES } from '../../src/agent/server.js';
import { makeTempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { collect, md, newId, startTestAgent, unary, waitText, type TestAgent } from './harness.js';

const home = makeTempDir('agent-shell-');
let t: TestAgent;

before(async () => {
  // The login shell reads /etc/profile (which sets its own PS1) and then this file.
  writeFileSync(home.join('.bash_profile'), 'PS1="$TEST_PS1"\n');
  t = await startTestAgent({ home: home.path });
});
after(async () => {
  await t.close();
  home.cleanup();
});

function start(p: Partial<ShellStartRequest>): ShellRequest {
  return {
    request: {
      $case: 'startRequest',
      startRequest: ShellStartRequest.fromPartial({ cmdShell: '/bin/sh', ...p }),
    },
  };
}
function data(s: string): ShellRequest {
  return { request: { $case: 'data', data: Buffer.from(s) } };
}
function text(msgs: ShellResponse[]): string {
  return msgs.map((m) => (m.response?.$case === 'data' ? m.response.data.toString('utf8') : '')).join('');
}
function openShell(id = newId('sh')) {
  const call = t.ssh.shell(md({ 'session-id': id }));
  return { id, call, ...collect(call) };
}

describe('agent Shell', () => {
  test('Handshake lists every capability and accepts an empty request', async () => {
    const r = await unary<{ accepted: boolean; capabilities: string[]; serverVersion: string }>((cb) =>
      t.sys.handshake({ clientVersion: '', capabilities: [] }, cb),
    );
    assert.equal(r.err, null);
    assert.equal(r.res?.accepted, true);
    assert.deepEqual([...(r.res?.capabilities ?? [])].sort(), [...CAPABILITIES].sort());
    assert.match(r.res?.serverVersion ?? '', /^v?\d+\.\d+\.\d+.*-\w+$/);
    const bad = await unary<{ accepted: boolean; message: string }>((cb) =>
      t.sys.handshake({ clientVersion: 'v99.0.0', capabilities: [] }, cb),
    );
    assert.equal(bad.res?.accepted, false);
    assert.match(bad.res?.message ?? '', /major/);
  });

  test('serves on a unix socket address and removes the socket file on close', async () => {
    const path = home.join('agent.sock');
    const u = await startTestAgent({ listen: `unix:${path}` });
    try {
      assert.equal(u.agent.address, `unix:${path}`);
      const r = await unary<{ accepted: boolean }>((cb) =>
        u.sys.handshake({ clientVersion: '', capabilities: [] }, cb),
      );
      assert.equal(r.res?.accepted, true);
      assert.ok(existsSync(path));
    } finally {
      await u.close();
    }
    assert.equal(existsSync(path), false);
  });

  test('PTY login shell: prompt, $0, session id, home, resize through ResizeTerminal, exit status 7', async () => {
    const sh = openShell();
    sh.call.write(
      start({
        usePty: true,
        width: 100,
        height: 30,
        setEnvVars: ['TEST_PS1=AGENT-PROMPT$ '],
        wantExitStatus: true,
      }),
    );
    await waitFor(() => sh.messages.length > 0);
    const first = sh.messages[0]?.response;
    assert.equal(first?.$case, 'startResponse');
    assert.match(first?.$case === 'startResponse' ? first.startResponse.pty : '', /^\/dev\/pts\/\d+$/);
    await waitText(() => text(sh.messages), /AGENT-PROMPT\$ /);
    sh.call.write(data('echo "z=$0 $K8SHELL_SESSION_ID $(pwd)"; stty size\n'));
    const m = await waitText(() => text(sh.messages), /z=(\S+) (\S+) (\S+)\r\n(\d+) (\d+)/);
    assert.equal(m[1], '-bash');
    assert.equal(m[2], sh.id);
    assert.equal(m[3], home.path);
    assert.deepEqual([m[4], m[5]], ['30', '100']);

    const r = await unary((cb) =>
      t.ssh.resizeTerminal({ width: 132, height: 50 }, md({ 'session-id': sh.id }), cb),
    );
    assert.equal(r.err, null);
    sh.call.write(data('stty size | sed "s/^/size=/"\n'));
    await waitText(() => text(sh.messages), /size=50 132/);

    sh.call.write(data('exit 7\n'));
    const fin = await sh.done;
    assert.equal(fin.code, status.OK);
    const last = sh.messages.at(-1)?.response;
    assert.equal(last?.$case, 'exitStatus');
    assert.deepEqual(last?.$case === 'exitStatus' ? [last.exitStatus.code, last.exitStatus.signal] : [], [
      7,
      '',
    ]);
    // The shell is gone from the store: resize now says NOT_FOUND.
    const gone = await unary((cb) =>
      t.ssh.resizeTerminal({ width: 10, height: 10 }, md({ 'session-id': sh.id }), cb),
    );
    assert.equal(gone.err?.code, status.NOT_FOUND);
  });

  test('a shell killed by SIGKILL reports signal KILL', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: true, wantExitStatus: true }));
    await waitFor(() => sh.messages.length > 0);
    sh.call.write(data('kill -KILL $$\n'));
    assert.equal((await sh.done).code, status.OK);
    const last = sh.messages.at(-1)?.response;
    assert.equal(last?.$case, 'exitStatus');
    assert.equal(last?.$case === 'exitStatus' ? last.exitStatus.signal : '', 'KILL');
  });

  test('without want_exit_status no extension frame is ever sent', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: true }));
    sh.call.write(data('echo hi-there; exit 3\n'));
    assert.equal((await sh.done).code, status.OK);
    assert.match(text(sh.messages), /hi-there/);
    for (const m of sh.messages) {
      assert.ok(
        m.response?.$case === 'startResponse' || m.response?.$case === 'data',
        `unexpected ${m.response?.$case}`,
      );
    }
  });

  test('non-PTY shell: stdout and stderr as data, stdin EOF ends it, exit status on opt-in', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: false, wantExitStatus: true }));
    sh.call.write(data('echo out-line; echo err-line >&2; echo "argv0=$0"\n'));
    sh.call.write(data('exit 5\n'));
    sh.call.end();
    assert.equal((await sh.done).code, status.OK);
    const first = sh.messages[0]?.response;
    assert.deepEqual(first, { $case: 'startResponse', startResponse: { pty: '' } });
    const out = text(sh.messages);
    assert.match(out, /out-line/);
    assert.match(out, /err-line/);
    assert.match(out, /argv0=-bash/);
    const last = sh.messages.at(-1)?.response;
    assert.equal(last?.$case === 'exitStatus' ? last.exitStatus.code : -1, 5);
  });

  test('non-PTY shell: an empty data frame ends the stream with UNKNOWN', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: false }));
    sh.call.write({ request: { $case: 'data', data: Buffer.alloc(0) } });
    const fin = await sh.done;
    assert.equal(fin.code, status.UNKNOWN);
    assert.match(fin.details, /empty data/);
  });

  test('PTY half-close keeps the shell running until it exits, as sshd does', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: true, wantExitStatus: true }));
    sh.call.write(data('echo ready-$((6*7))\n'));
    await waitText(() => text(sh.messages), /ready-42/);
    // Input that arrived before the half-close still runs, and the shell outlives the half-close.
    sh.call.write(data('sleep 0.2; echo still-$((6*8)); exit 7\n'));
    sh.call.end();
    assert.equal((await sh.done).code, status.OK);
    assert.match(text(sh.messages), /still-48/);
    const exit = sh.messages.find((m) => m.response?.$case === 'exitStatus');
    assert.equal(exit?.response?.$case === 'exitStatus' ? exit.response.exitStatus.code : -1, 7);
  });

  test('as_user: another user runs with its passwd login shell as root, else PERMISSION_DENIED', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: false, asUser: 'nobody' }));
    sh.call.write(data('id -u\n'));
    sh.call.end();
    const fin = await sh.done;
    if (process.getuid?.() === 0) {
      // nobody's login shell is nologin: the daemon uses the passwd shell, not cmdShell.
      assert.equal(fin.code, status.OK);
      assert.match(text(sh.messages), /not available/);
    } else {
      assert.equal(fin.code, status.PERMISSION_DENIED);
    }
  });

  test('unknown as_user → UNKNOWN naming the user', async () => {
    const sh = openShell();
    sh.call.write(start({ asUser: 'no-such-user-xyz' }));
    const fin = await sh.done;
    assert.equal(fin.code, status.UNKNOWN);
    assert.match(fin.details, /no-such-user-xyz/);
  });

  test('errors: missing session-id, wrong first message, duplicate id, detach disabled', async () => {
    const noId = t.ssh.shell();
    const c1 = collect(noId);
    noId.write(start({}));
    const f1 = await c1.done;
    assert.equal(f1.code, status.INVALID_ARGUMENT);
    assert.match(f1.details, /session-id/);

    const wrong = openShell();
    wrong.call.write(data('x'));
    const f2 = await wrong.done;
    assert.equal(f2.code, status.INVALID_ARGUMENT);
    assert.match(f2.details, /start_request/);

    const a = openShell();
    a.call.write(start({ usePty: true }));
    await waitFor(() => a.messages.length > 0);
    const b = openShell(a.id);
    b.call.write(start({ usePty: true }));
    const f3 = await b.done;
    assert.equal(f3.code, status.ALREADY_EXISTS);
    a.call.write(data('exit\n'));
    a.call.end();
    await a.done;
    // Finished ids stay reserved.
    const c = openShell(a.id);
    c.call.write(start({ usePty: true }));
    assert.equal((await c.done).code, status.ALREADY_EXISTS);

    const d = openShell();
    d.call.write(start({ usePty: true, detachOnClose: true }));
    assert.equal((await d.done).code, status.PERMISSION_DENIED);

    const acq = await unary((cb) => t.ssh.acquireSession({ sessionId: 'x' }, cb));
    assert.equal(acq.err?.code, status.PERMISSION_DENIED);
    assert.match(acq.err?.details ?? '', /detach is disabled/);
    const list = await unary((cb) => t.ssh.listSessions({}, cb));
    assert.equal(list.err?.code, status.PERMISSION_DENIED);
  });

  test('ResizeTerminal: unknown id → NOT_FOUND, missing id → INVALID_ARGUMENT', async () => {
    const r1 = await unary((cb) =>
      t.ssh.resizeTerminal({ width: 1, height: 1 }, md({ 'session-id': 'sh-nope' }), cb),
    );
    assert.equal(r1.err?.code, status.NOT_FOUND);
    const r2 = await unary((cb) => t.ssh.resizeTerminal({ width: 1, height: 1 }, cb));
    assert.equal(r2.err?.code, status.INVALID_ARGUMENT);
  });

  test('client cancel kills the shell and the stream count returns to zero', async () => {
    const sh = openShell();
    sh.call.write(start({ usePty: true }));
    sh.call.write(data('echo pid=$$\n'));
    const m = await waitText(() => text(sh.messages), /pid=(\d+)/);
    const pid = Number(m[1]);
    sh.call.cancel();
    await waitFor(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      { what: `shell ${pid} to die` },
    );
    await waitFor(() => t.agent.stats().open.shell === 0, { what: 'no open shell streams' });
  });
});
