// src/gateway/env.ts (login environment as sshd builds it) and the raw-byte helpers
// (src/gateway/raw-text.ts, src/common/raw-text.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { commandBytes, envBytes } from '../../src/common/raw-text.js';
import { loginEnv, loginEnvBytes, validEnvName } from '../../src/gateway/env.js';
import { isSubsystem, signalName, wireCommand, wireEnv } from '../../src/gateway/raw-text.js';

const id = { shell: '/bin/bash', asUser: 'alice' };
const bytes = (s: string) => Buffer.from(s, 'latin1');

test('loginEnv: computed variables first, SSH_CONNECTION/SSH_CLIENT from the addresses, TERM only with a PTY', () => {
  const client = { ip: '::ffff:192.0.2.7', port: 50122 };
  const server = { ip: '10.0.0.1', port: 2022 };
  const env = [
    ['LANG', 'C.UTF-8'],
    ['TERM', 'from-env'],
    ['USER', 'mallory'],
    ['SSH_CONNECTION', 'spoofed'],
  ] as const;
  assert.deepEqual(loginEnv(id, env, { client, server }), [
    'SHELL=/bin/bash',
    'USER=alice',
    'LOGNAME=alice',
    'SSH_CONNECTION=192.0.2.7 50122 10.0.0.1 2022',
    'SSH_CLIENT=192.0.2.7 50122 2022',
    'LANG=C.UTF-8',
  ]);
  assert.deepEqual(loginEnv(id, env, { client, server, pty: { term: 'xterm-256color' } }).slice(3, 6), [
    'SSH_CONNECTION=192.0.2.7 50122 10.0.0.1 2022',
    'SSH_CLIENT=192.0.2.7 50122 2022',
    'TERM=xterm-256color',
  ]);
});

test('loginEnv without the session argument behaves as before (a client TERM passes)', () => {
  assert.deepEqual(loginEnv({ shell: '', asUser: 'bob' }, [['TERM', 'vt100']]), [
    'USER=bob',
    'LOGNAME=bob',
    'TERM=vt100',
  ]);
});

test('loginEnvBytes keeps bytes that are not UTF-8; loginEnv is their lossy decoding', () => {
  const env = [[bytes('RAW'), bytes('a\xffb')]] as const;
  const raw = loginEnvBytes(id, env, {});
  assert.equal(raw.at(-1)?.toString('latin1'), 'RAW=a\xffb');
  assert.equal(loginEnv(id, env, {}).at(-1), 'RAW=a\uFFFDb');
  assert.ok(validEnvName(bytes('LC_ALL')));
  assert.ok(!validEnvName(bytes('A\xff')));
  assert.ok(!validEnvName('A=B'));
});

test('wireCommand / commandBytes: raw field only for bytes that are not UTF-8, exact round trip', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (arr) => {
      const b = Buffer.from(arr);
      const w = wireCommand({ text: b.toString('utf8'), raw: b });
      assert.ok(commandBytes(w).equals(b));
      assert.equal(w.commandRaw.length === 0, Buffer.from(b.toString('utf8'), 'utf8').equals(b));
    }),
  );
  assert.equal(wireCommand('echo é').commandRaw.length, 0);
});

test('wireEnv / envBytes: every entry round-trips; the raw list is all-or-nothing', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), (arrs) => {
      const entries = arrs.map((a) => Buffer.from(a));
      const w = wireEnv(entries);
      const back = envBytes(w.envVars, w.envVarsRaw);
      assert.equal(back.length, entries.length);
      back.forEach((b, i) => assert.ok(b.equals(entries[i] ?? Buffer.alloc(0))));
      assert.ok(w.envVarsRaw.length === 0 || w.envVarsRaw.length === entries.length);
    }),
  );
});

test('signal and subsystem names compare as exact bytes', () => {
  assert.equal(signalName({ text: 'INT', raw: bytes('INT') }), 'INT');
  assert.equal(signalName({ text: '\uFFFDINT', raw: bytes('\xffINT') }), undefined);
  assert.equal(signalName('BOGUS'), undefined);
  assert.ok(isSubsystem({ text: 'sftp', raw: bytes('sftp') }, 'sftp'));
  assert.ok(!isSubsystem({ text: 'sftp\uFFFD', raw: bytes('sftp\xff') }, 'sftp'));
});

test('ssh2 request infos convert to SshText with their raw bytes (patch 012)', async () => {
  const { envPair, execCommand, signalText, subsystemText } =
    await import('../../src/gateway/ssh2-shims/index.js');
  assert.ok(sshTextEq(execCommand({ command: '\uFFFD', commandRaw: bytes('\xff') }), bytes('\xff')));
  const [k, v] = envPair({ key: 'A', val: '\uFFFD', keyRaw: bytes('A'), valRaw: bytes('\xfe') });
  assert.ok(sshTextEq(k, bytes('A')) && sshTextEq(v, bytes('\xfe')));
  assert.equal(signalName(signalText({ name: 'TERM', nameRaw: bytes('TERM') })), 'TERM');
  assert.ok(isSubsystem(subsystemText({ name: 'sftp' }), 'sftp'));
});

function sshTextEq(t: { text: string; raw?: Buffer }, want: Buffer): boolean {
  return (t.raw ?? Buffer.from(t.text)).equals(want);
}
