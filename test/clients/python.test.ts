// paramiko 2.12 and asyncssh 2.10 (Debian's python3 packages, run with /usr/bin/python3): exec with
// exit status, a PTY shell fed by typed input that ends with `exit`, SFTP put/get with SHA-256, and a
// direct-tcpip channel. The scripts are test/clients/py/*.py; each prints one JSON result.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { run } from '../e2e/harness.js';
import { REPO, startClientsE2E, startEcho, type ClientsE2E, type EchoServer } from './harness.js';

let e: ClientsE2E;
let echo: EchoServer;
before(async () => {
  e = await startClientsE2E();
  echo = await startEcho();
});
after(async () => {
  await echo.close();
  await e.stop();
});

type Result = Record<string, Record<string, unknown>>;

async function pyClient(script: string, cases: string[]): Promise<Result> {
  const r = await run(
    '/usr/bin/python3',
    [
      join(REPO, 'test/clients/py', script),
      String(e.port),
      e.user,
      e.keys.user,
      e.dir.path,
      String(echo.port),
      ...cases,
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout.toString()) as Result;
  assert.equal(res.connect, undefined, JSON.stringify(res.connect));
  for (const c of cases) assert.equal(res[c]?.error, undefined, `${script} ${c}: ${String(res[c]?.error)}`);
  return res;
}

for (const [name, script] of [
  ['paramiko', 'paramiko_client.py'],
  ['asyncssh', 'asyncssh_client.py'],
] as const) {
  describe(name, () => {
    test('exec, PTY shell, SFTP put/get and direct-tcpip', async () => {
      const r = await pyClient(script, ['exec', 'pty', 'sftp', 'forward']);
      assert.deepEqual(
        { stdout: r.exec?.stdout, stderr: r.exec?.stderr, status: r.exec?.status },
        { stdout: 'out\n', stderr: 'err\n', status: 7 },
      );
      assert.match(String(r.pty?.output), /pty-42/);
      assert.equal(r.pty?.status, 5);
      assert.ok(typeof r.sftp?.sent === 'string' && r.sftp.sent.length === 64);
      assert.equal(r.sftp?.back, r.sftp?.sent);
      assert.equal(r.forward?.echo, 'through-the-forward\n');
    });
  });
}
