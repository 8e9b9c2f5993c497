// The ssh-proxy-agent CLI as a real process: flags, start-up, Handshake, and a clean SIGTERM that
// kills a shell's background child and removes a LISTEN socket.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { credentials } from '@grpc/grpc-js';
import {
  ShellStartRequest,
  SshServiceClient,
  SystemServiceClient,
  UnixSocketStartRequest,
  type ShellResponse,
} from '../../src/gen/k8shelld/v1/k8shelld.js';
import { makeTempDir } from '../helpers/tmp.js';
import { pidAlive, waitFor } from '../helpers/wait.js';
import { collect, md, newId, unary } from './harness.js';

const root = new URL('../..', import.meta.url).pathname;
const entry = ['--import', 'tsx', 'src/cli/agent.ts'];
const dir = makeTempDir('agent-cli-');
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  dir.cleanup();
});

function runSync(args: string[]) {
  return spawnSync(process.execPath, [...entry, ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
}

describe('ssh-proxy-agent CLI', () => {
  test('-v prints the version, -h the usage, an unknown flag exits 2', () => {
    const v = runSync(['-v']);
    assert.equal(v.status, 0);
    assert.match(v.stdout, /^ssh-proxy-agent version: \S+ \(commit: \S+\)\n$/);
    const h = runSync(['-h']);
    assert.equal(h.status, 0);
    assert.match(h.stderr, /--listen/);
    const bad = runSync(['--no-such-flag']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /no-such-flag/);
    assert.match(bad.stderr, /usage/);
  });

  test('starts, reports its address, serves, and on SIGTERM kills sessions and removes sockets', async () => {
    const ready = dir.join('ready');
    const sock = dir.join('agent.sock');
    const child = spawn(
      process.execPath,
      [...entry, '--listen', '127.0.0.1:0', '--ready-file', ready, '--home', dir.path],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    let stdout = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));

    const address = (await waitFor(
      () => existsSync(ready) && readFileSync(ready, 'utf8').trim(),
      20_000,
    )) as string;
    assert.match(address, /^127\.0\.0\.1:\d+$/);
    await waitFor(() => stdout.includes(`"address":"${address}"`), { what: 'listening log line' });

    const sys = new SystemServiceClient(address, credentials.createInsecure());
    const ssh = new SshServiceClient(address, credentials.createInsecure());
    try {
      const hs = await unary<{ accepted: boolean }>((cb) =>
        sys.handshake({ clientVersion: '', capabilities: [] }, cb),
      );
      assert.equal(hs.res?.accepted, true);

      const shell = ssh.shell(md({ 'session-id': newId('sh') }));
      const sc = collect(shell);
      shell.write({
        request: { $case: 'startRequest', startRequest: ShellStartRequest.fromPartial({ usePty: true }) },
      });
      shell.write({ request: { $case: 'data', data: Buffer.from('sleep 1000 & echo "bg=$!"\n') } });
      const text = () =>
        sc.messages
          .map((m: ShellResponse) => (m.response?.$case === 'data' ? m.response.data.toString() : ''))
          .join('');
      const m = await waitFor(() => /bg=(\d+)/.exec(text()), { what: 'background pid' });
      const bg = Number(m[1]);
      assert.ok(pidAlive(bg));

      const us = ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
      const uc = collect(us);
      us.write({
        request: {
          $case: 'startRequest',
          startRequest: UnixSocketStartRequest.fromPartial({ socketPath: sock, multiplex: true }),
        },
        connectionId: 0,
        event: 0,
      });
      await waitFor(() => existsSync(sock), { what: 'LISTEN socket' });

      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.equal(existsSync(sock), false);
      await waitFor(() => !pidAlive(bg), { what: `background child ${bg} to be gone` });
      await sc.done;
      await uc.done;
    } finally {
      sys.close();
      ssh.close();
    }
  });
});
