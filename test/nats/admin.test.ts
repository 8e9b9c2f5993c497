// `ssh-proxy-admin` against a real nats-server: argument checks, the KV values in the API server's
// formats (read back by the gateway's own watcher and overrides), and the real CLI with a gateway
// config file whose NATS token comes from `!file`.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { NatsLink } from '../../src/backends/nats.js';
import { LockedUsersWatcher } from '../../src/backends/nats-locks.js';
import { NatsRecordingOverrides } from '../../src/backends/nats-overrides.js';
import { parseAdminArgs, runAdminCommand } from '../../src/cli/admin-commands.js';
import { waitFor } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, testClient, type TestNats } from './helpers.js';

const ADMIN = fileURLToPath(new URL('../../src/cli/admin.ts', import.meta.url));
const NOW = new Date('2024-05-01T12:00:00.500Z');

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ADMIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('ssh-proxy-admin arguments', () => {
  const url = ['--nats-url', 'nats://127.0.0.1:1'];
  it('accepts the four commands', () => {
    const r = parseAdminArgs([...url, 'record', 'ws-1', ' shell , vscode-input']);
    assert.equal(r.kind, 'run');
    assert.deepEqual(r.kind === 'run' && r.args.command, {
      op: 'record',
      workspace: 'ws-1',
      record: 'shell,vscode-input',
    });
    for (const argv of [
      ['lock', 'alice'],
      ['unlock', 'alice'],
      ['record', 'ws', 'none'],
      ['unrecord', 'ws'],
    ]) {
      assert.equal(parseAdminArgs([...url, ...argv]).kind, 'run', argv.join(' '));
    }
  });
  it('rejects bad usage with exit code 2', () => {
    for (const argv of [
      [...url],
      [...url, 'frobnicate', 'x'],
      [...url, 'lock'],
      [...url, 'lock', 'a', 'b'],
      [...url, 'record', 'ws', 'shell,movies'],
      [...url, 'record', 'ws', ''],
      ['lock', 'alice'],
      [...url, '--bogus', 'lock', 'a'],
      [...url, '--timeout', '-1', 'lock', 'a'],
    ]) {
      const r = parseAdminArgs(argv);
      assert.equal(r.kind === 'exit' && r.code, 2, argv.join(' '));
    }
    const help = parseAdminArgs(['--help']);
    assert.equal(help.kind === 'exit' && help.code, 0);
  });
});

describe('ssh-proxy-admin over a real nats-server', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let link: NatsLink;

  before(async () => {
    nats = await startTestNats({ auth: { token: 'admin-token' } });
    nc = await testClient(nats.url, { token: 'admin-token' });
    link = new NatsLink({
      name: 'nats-client',
      settings: linkSettings(nats.url, { token: 'admin-token' }),
      log: memoryLogger().log,
    }).start();
  });
  after(async () => {
    await link.close();
    await nc.close();
    await nats.cleanup();
  });

  it('lock/unlock write the API server format, create the bucket, and reach a watcher', async () => {
    const opts = { timeoutMs: 5000, setBy: 'tester', now: NOW };
    const out = await runAdminCommand(nc, { op: 'lock', user: 'alice' }, opts);
    assert.match(
      out,
      /^locked-users\/alice = \{"locked":true,"sessionsInvalidBefore":1714564800\} \(revision \d+\)$/,
    );
    const info = await (await jetstreamManager(nc)).streams.info('KV_locked-users');
    assert.equal(info.config.num_replicas, 1);
    const kv = await new Kvm(nc).open('locked-users');
    assert.deepEqual((await kv.get('alice'))?.json(), { locked: true, sessionsInvalidBefore: 1714564800 });
    await runAdminCommand(nc, { op: 'unlock', user: 'alice' }, opts);
    assert.deepEqual((await kv.get('alice'))?.json(), { locked: false, sessionsInvalidBefore: 1714564800 });

    const locked: string[] = [];
    const watcher = new LockedUsersWatcher({
      link,
      onLocked: (u) => locked.push(u),
      log: memoryLogger().log,
    }).start();
    try {
      await waitFor(() => watcher.consumerName, { timeoutMs: 15_000, what: 'watcher subscribed' });
      await runAdminCommand(nc, { op: 'lock', user: 'bob' }, opts);
      await waitFor(() => locked.includes('bob'), { timeoutMs: 5000, what: 'lock seen by the watcher' });
    } finally {
      await watcher.stop();
    }
  });

  it('record/unrecord write the override format the gateway reads', async () => {
    const opts = { timeoutMs: 5000, setBy: 'tester', now: NOW };
    await runAdminCommand(nc, { op: 'record', workspace: 'ws-1', record: 'shell,exec' }, opts);
    const kv = await new Kvm(nc).open('recording-overrides');
    assert.deepEqual((await kv.get('ws-1'))?.json(), {
      record: 'shell,exec',
      setBy: 'tester',
      setAt: '2024-05-01T12:00:00Z',
    });
    const overrides = new NatsRecordingOverrides({ link, log: memoryLogger().log }).start();
    try {
      await waitFor(() => link.connected, { timeoutMs: 10_000, what: 'nats-client connected' });
      assert.deepEqual(await overrides.get('ws-1'), { record: 'shell,exec', setBy: 'tester' });
      assert.equal(
        await runAdminCommand(nc, { op: 'unrecord', workspace: 'ws-1' }, opts),
        'recording-overrides/ws-1 deleted',
      );
      assert.equal(await overrides.get('ws-1'), undefined);
    } finally {
      overrides.stop();
    }
  });

  it('the CLI connects with a gateway config file (token from !file) and fails cleanly without NATS', async () => {
    writeFileSync(nats.dir.join('nats-token'), 'admin-token\n');
    const cfg = nats.dir.join('config.yaml');
    writeFileSync(
      cfg,
      `server:\n  port: 2222\nnats:\n  enabled: true\n  url: ${nats.url}\n  token: !file nats-token\n`,
    );
    const ok = await runCli(['--config', cfg, '--set-by', 'cli', 'record', 'ws-cli', 'none']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /^recording-overrides\/ws-cli = \{"record":"none","setBy":"cli","setAt":"[0-9T:-]+Z"\}/,
    );

    const down = await runCli(['--nats-url', 'nats://127.0.0.1:1', '--timeout', '2', 'lock', 'x']);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^ssh-proxy-admin: cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
  });
});
