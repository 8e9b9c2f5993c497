// Raw bytes end to end at the gRPC level (docs/clients.md "Raw bytes"): the agent runs the exact bytes
// of CommandDetails.command_raw and env_vars_raw / ShellStartRequest.set_env_vars_raw, and builds the
// session environment as sshd does (nothing from its own environment).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { userInfo } from 'node:os';
import { CommandDetails, ShellStartRequest, type ExecResponse } from '../../src/gen/k8shelld/v1/k8shelld.js';
import { wireCommand, wireEnv } from '../../src/common/raw-text.js';
import { makeTempDir } from '../helpers/tmp.js';
import { collect, md, newId, startTestAgent, waitText, type TestAgent } from './harness.js';

const home = makeTempDir('agent-raw-');
let t: TestAgent;
before(async () => {
  process.env.SPX_AGENT_LEAK_CHECK = 'leaked';
  t = await startTestAgent({ home: home.path });
});
after(async () => {
  delete process.env.SPX_AGENT_LEAK_CHECK;
  await t.close();
  home.cleanup();
});

const bytes = (s: string) => Buffer.from(s, 'latin1');

async function exec(d: Partial<CommandDetails>): Promise<{ stdout: Buffer; code: number | undefined }> {
  const call = t.ssh.exec(md({ 'exec-id': newId('ex') }));
  const c = collect(call);
  call.write({
    request: {
      $case: 'commandDetails',
      commandDetails: CommandDetails.fromPartial({ shellBinary: '/bin/sh', ...d }),
    },
  });
  call.end();
  await c.done;
  const stdout = Buffer.concat(
    c.messages.map((m: ExecResponse) =>
      m.response?.$case === 'stdout' ? m.response.stdout : Buffer.alloc(0),
    ),
  );
  const last = c.messages.at(-1)?.response;
  return { stdout, code: last?.$case === 'exitCode' ? last.exitCode : undefined };
}

describe('agent raw bytes', () => {
  test('command_raw: the exact bytes reach the shell (a string field would carry U+FFFD)', async () => {
    const w = wireCommand(bytes("printf '%s' '\xff\xfe' | od -An -tx1 | tr -d ' \\n'; exit 3"));
    assert.ok(w.commandRaw.length > 0, 'command_raw is sent for bytes that are not UTF-8');
    assert.match(w.command, /\uFFFD/);
    const r = await exec(w);
    assert.equal(r.stdout.toString(), 'fffe');
    assert.equal(r.code, 3);
  });

  test('command_raw stays empty for UTF-8 commands, which run from `command`', async () => {
    const w = wireCommand(Buffer.from("printf '%s' 'é€'", 'utf8'));
    assert.equal(w.commandRaw.length, 0);
    const r = await exec(w);
    assert.equal(r.stdout.toString('utf8'), 'é€');
  });

  test('a 100 KB command line runs unchanged, raw or not', async () => {
    const body = `: ${'x'.repeat(100_000)}\n`;
    for (const tail of ['echo ok-utf8', "printf '\xff'; echo ok-raw"]) {
      const r = await exec(wireCommand(bytes(body + tail)));
      assert.match(r.stdout.toString('latin1'), /^(ok-utf8|\xffok-raw)\n$/);
    }
  });

  test('env_vars_raw: values and names keep their bytes; the UTF-8 list is what reference daemons get', async () => {
    const w = wireEnv([bytes('RAWV=\xff\xfe'), bytes('PLAIN=ok')]);
    assert.equal(w.envVarsRaw.length, 2);
    const r = await exec({
      ...wireCommand(Buffer.from('printf "%s|%s" "$RAWV" "$PLAIN" | od -An -tx1 | tr -d " \\n"')),
      ...w,
    });
    assert.equal(r.stdout.toString(), Buffer.from('\xff\xfe|ok', 'latin1').toString('hex'));
  });

  test('sessions start from a clean environment: sshd defaults, nothing from the agent', async () => {
    const r = await exec({ command: 'env', envVars: ['LANG=C.UTF-8'] });
    const env = new Map(
      r.stdout
        .toString()
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
    );
    const me = userInfo().username;
    assert.equal(env.get('SPX_AGENT_LEAK_CHECK'), undefined, 'the agent environment leaks');
    assert.equal(env.get('TERM'), undefined, 'no TERM without a PTY');
    assert.equal(env.get('USER'), me);
    assert.equal(env.get('LOGNAME'), me);
    assert.equal(env.get('HOME'), home.path);
    assert.equal(env.get('MAIL'), `/var/mail/${me}`);
    assert.equal(env.get('SHELL'), '/bin/sh');
    assert.equal(env.get('LANG'), 'C.UTF-8');
    const path = env.get('PATH') ?? '';
    assert.equal(new Set(path.split(':')).size, path.split(':').length, `PATH repeats an entry: ${path}`);
    assert.ok(path.split(':').includes('/usr/bin'));
  });

  test('PTY exec sets SSH_TTY to its terminal; set_env_vars_raw reaches a shell', async () => {
    const r = await exec({ command: 'echo "tty=$SSH_TTY=$(tty)"', usePty: true, width: 80, height: 24 });
    const m = /tty=(\S+)=(\S+)/.exec(r.stdout.toString());
    assert.ok(m, r.stdout.toString());
    assert.equal(m[1], m[2]);
    assert.match(m[1] ?? '', /^\/dev\/pts\/\d+$/);

    const id = newId('sh');
    const call = t.ssh.shell(md({ 'session-id': id }));
    const c = collect(call);
    call.write({
      request: {
        $case: 'startRequest',
        startRequest: ShellStartRequest.fromPartial({
          cmdShell: '/bin/sh',
          setEnvVars: wireEnv([bytes('RAWS=\xfe')]).envVars,
          setEnvVarsRaw: wireEnv([bytes('RAWS=\xfe')]).envVarsRaw,
          wantExitStatus: true,
        }),
      },
    });
    call.write({
      request: { $case: 'data', data: Buffer.from('printf "%s" "$RAWS" | od -An -tx1; exit 0\n') },
    });
    const text = () =>
      c.messages
        .map((m) => (m.response?.$case === 'data' ? m.response.data.toString('latin1') : ''))
        .join('');
    await waitText(text, /\bfe\b/);
    call.end();
    await c.done;
  });
});
