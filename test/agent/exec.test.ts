// Exec over real gRPC: stdout/stderr, stdin EOF, exit codes, signals, PTY exec, 64 MiB through cat.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import { OUTPUT_GRACE_MS } from '../../src/agent/exec.js';
import { CommandDetails, type ExecRequest, type ExecResponse } from '../../src/gen/k8shelld/v1/k8shelld.js';
import { MAX_DATA_FRAME } from '../../src/common/k8shelld-wire.js';
import { makeTempDir } from '../helpers/tmp.js';
import { pidAlive, waitFor } from '../helpers/wait.js';
import { collect, md, newId, startTestAgent, waitText, type TestAgent } from './harness.js';

const home = makeTempDir('agent-exec-');
let t: TestAgent;
before(async () => {
  t = await startTestAgent({ home: home.path });
});
after(async () => {
  await t.close();
  home.cleanup();
});

function cmd(p: Partial<CommandDetails>): ExecRequest {
  return {
    request: {
      $case: 'commandDetails',
      commandDetails: CommandDetails.fromPartial({ shellBinary: '/bin/sh', ...p }),
    },
  };
}
function input(s: string | Buffer): ExecRequest {
  return { request: { $case: 'input', input: Buffer.from(s) } };
}
function out(msgs: ExecResponse[], kind: 'stdout' | 'stderr' = 'stdout'): string {
  return msgs
    .map((m) => {
      const r = m.response;
      if (kind === 'stdout' && r?.$case === 'stdout') return r.stdout.toString();
      if (kind === 'stderr' && r?.$case === 'stderr') return r.stderr.toString();
      return '';
    })
    .join('');
}
function exitCode(msgs: ExecResponse[]): number | undefined {
  const last = msgs.at(-1)?.response;
  return last?.$case === 'exitCode' ? last.exitCode : undefined;
}
function openExec(id = newId('ex')) {
  const call = t.ssh.exec(md({ 'exec-id': id }));
  return { id, call, ...collect(call) };
}
async function run(p: Partial<CommandDetails>, stdin?: string) {
  const e = openExec();
  e.call.write(cmd(p));
  if (stdin !== undefined) e.call.write(input(stdin));
  e.call.end();
  const fin = await e.done;
  return { ...e, fin };
}

describe('agent Exec', () => {
  test('stdout and stderr are separate; exit_code is last; env, cwd and shell rules', async () => {
    const r = await run({
      command: 'echo out; echo err >&2; echo "$HOME|$(pwd)|$USER|$FOO|$0"; exit 0',
      envVars: ['FOO=bar'],
    });
    assert.equal(r.fin.code, status.OK);
    assert.equal(out(r.messages, 'stderr'), 'err\n');
    assert.equal(out(r.messages), `out\n${home.path}|${home.path}|${userInfo().username}|bar|/bin/sh\n`);
    assert.equal(exitCode(r.messages), 0);
    for (const m of r.messages) assert.notEqual(m.response?.$case, 'exitStatus');
  });

  test('stdin EOF reaches cat', async () => {
    const r = await run({ command: 'cat; echo done' }, 'hello from stdin\n');
    assert.equal(out(r.messages), 'hello from stdin\ndone\n');
    assert.equal(exitCode(r.messages), 0);
  });

  test('exit codes 3 and 127, with exit_status right before exit_code on opt-in', async () => {
    const r3 = await run({ command: 'exit 3', wantExitStatus: true });
    assert.equal(exitCode(r3.messages), 3);
    const st = r3.messages.at(-2)?.response;
    assert.equal(st?.$case, 'exitStatus');
    assert.deepEqual(st?.$case === 'exitStatus' ? [st.exitStatus.code, st.exitStatus.signal] : [], [3, '']);
    const r127 = await run({ command: 'definitely-not-a-command-xyz' });
    assert.equal(exitCode(r127.messages), 127);
    assert.match(out(r127.messages, 'stderr'), /not found/);
  });

  test('SIGINT ends sleep: exit_code 130 and exit_status signal INT', async () => {
    const e = openExec();
    e.call.write(cmd({ command: 'echo started; exec sleep 30', wantExitStatus: true }));
    await waitText(() => out(e.messages), /started/);
    e.call.write({ request: { $case: 'signal', signal: 'INT' } });
    assert.equal((await e.done).code, status.OK);
    assert.equal(exitCode(e.messages), 130);
    const st = e.messages.at(-2)?.response;
    assert.equal(st?.$case === 'exitStatus' ? st.exitStatus.signal : '', 'INT');
  });

  test('an unknown signal name becomes TERM and later input is ignored', async () => {
    const e = openExec();
    e.call.write(cmd({ command: 'echo started; exec sleep 30' }));
    await waitText(() => out(e.messages), /started/);
    e.call.write({ request: { $case: 'signal', signal: 'BOGUS' } });
    e.call.write({ request: { $case: 'signal', signal: 'KILL' } });
    assert.equal((await e.done).code, status.OK);
    assert.equal(exitCode(e.messages), 143);
  });

  test('PTY exec: pty frame first, output on stdout, in-band resize visible to stty', async () => {
    const e = openExec();
    e.call.write(
      cmd({ command: 'stty size; read x; stty size; echo "got=$x"', usePty: true, width: 90, height: 20 }),
    );
    await waitFor(() => e.messages.length > 0);
    const first = e.messages[0]?.response;
    assert.equal(first?.$case, 'pty');
    await waitText(() => out(e.messages), /20 90\r\n/);
    e.call.write({ request: { $case: 'resize', resize: { width: 120, height: 40 } } });
    // The resize arrives first: frames are handled in order.
    e.call.write(input('abc\r'));
    assert.equal((await e.done).code, status.OK);
    assert.match(out(e.messages), /40 120\r\ngot=abc/);
    assert.equal(exitCode(e.messages), 0);
  });

  test('a background child holding stdout does not hold back exit_code', async () => {
    const r = await run({ command: 'sleep 30 & echo "bg=$!"' });
    const bg = Number(/bg=(\d+)/.exec(out(r.messages))?.[1]);
    assert.ok(bg > 0);
    // The stream ended with the exit code while the background child was still running.
    const stillRunning = pidAlive(bg);
    process.kill(bg, 'SIGKILL');
    assert.equal(exitCode(r.messages), 0);
    assert.ok(stillRunning, 'exit_code came only after the background child ended');
  });

  test('a consumer paused past the output grace after exit still gets every byte', async () => {
    // The fault: a client that stops reading (a slow network, a loaded gateway) while the command
    // has exited and its output is still on the way. The shell exits at once; its background `head`
    // holds stdout and has 8 MiB to write, far more than the pipe and the HTTP/2 windows hold.
    const total = 8 * 1024 * 1024;
    const pidFile = `${home.path}/slow-consumer.pid`;
    const e = openExec();
    e.call.pause();
    e.call.write(cmd({ command: `head -c ${total} /dev/zero & echo $$ > ${pidFile}` }));
    e.call.end();
    const shell = await waitFor(
      () => {
        const pid = Number(readFileSync(pidFile, 'utf8').trim());
        return pid > 0 && !pidAlive(pid) ? pid : undefined;
      },
      { timeoutMs: 15_000, what: 'the shell to exit' },
    );
    // Keep not reading for three times the agent's grace: the slow consumer is the fault injected.
    await delay(3 * OUTPUT_GRACE_MS);
    e.call.resume();
    assert.equal((await e.done).code, status.OK);
    const got = e.messages.reduce(
      (n, m) => n + (m.response?.$case === 'stdout' ? m.response.stdout.length : 0),
      0,
    );
    assert.equal(got, total, `stdout of shell ${shell} truncated`);
    assert.equal(exitCode(e.messages), 0);
  });

  test('errors: missing exec-id, wrong first message, empty command, duplicate id', async () => {
    const c1 = t.ssh.exec();
    const r1 = collect(c1);
    c1.write(cmd({ command: 'true' }));
    assert.equal((await r1.done).code, status.INVALID_ARGUMENT);

    const e2 = openExec();
    e2.call.write(input('x'));
    assert.equal((await e2.done).code, status.INVALID_ARGUMENT);

    const e3 = openExec();
    e3.call.write(cmd({ command: '   ' }));
    assert.equal((await e3.done).code, status.INVALID_ARGUMENT);

    const a = await run({ command: 'true' });
    const dup = openExec(a.id);
    dup.call.write(cmd({ command: 'true' }));
    assert.equal((await dup.done).code, status.ALREADY_EXISTS);
  });

  test('64 MiB through cat with matching sha256 (backpressure both ways)', async () => {
    const e = openExec();
    e.call.write(cmd({ command: 'cat' }));
    const total = 64 * 1024 * 1024;
    const chunk = randomBytes(32 * 1024);
    const sent = createHash('sha256');
    const got = createHash('sha256');
    let received = 0;
    let maxFrame = 0;
    e.call.on('data', (m: ExecResponse) => {
      if (m.response?.$case === 'stdout') {
        got.update(m.response.stdout);
        received += m.response.stdout.length;
        maxFrame = Math.max(maxFrame, m.response.stdout.length);
      }
    });
    for (let off = 0; off < total; off += chunk.length) {
      sent.update(chunk);
      if (!e.call.write(input(chunk))) await new Promise((r) => e.call.once('drain', r));
    }
    e.call.end();
    assert.equal((await e.done).code, status.OK);
    assert.equal(received, total);
    assert.equal(got.digest('hex'), sent.digest('hex'));
    // Reads are gathered into frames of up to 256 KiB (within the 4 MiB a reference daemon accepts).
    assert.ok(maxFrame <= MAX_DATA_FRAME, `frame of ${maxFrame} bytes`);
    assert.equal(exitCode(e.messages), 0);
  });

  test('as_user switches uid and supplementary groups when root, else PERMISSION_DENIED', async () => {
    const r = await run({ command: 'id -u; id -G', asUser: 'nobody' });
    if (process.getuid?.() === 0) {
      assert.equal(exitCode(r.messages), 0);
      assert.equal(out(r.messages), '65534\n65534\n');
    } else {
      assert.equal(r.fin.code, status.PERMISSION_DENIED);
    }
  });
});
