// The local policy service over real gRPC, through the gateway's own authz client: default allow-all,
// hot reload, a broken or unsafe file keeping the last good policy, start-up refusal, service token,
// and the examples of docs/policy.md behaving as documented.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createAuthzClient, type AuthzClient } from '../../src/backends/authz.js';
import { buildRequest, type Action, type Subject } from '../../src/gateway/authorize.js';
import { startLocalPolicy, type LocalPolicy } from '../../src/local/policy.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogger } from './helpers.js';

const REPO = new URL('../..', import.meta.url).pathname;
const never = new AbortController().signal;

/** The YAML block after the `policy-example` marker in docs/policy.md. */
function docsExample(): string {
  const md = readFileSync(join(REPO, 'docs/policy.md'), 'utf8');
  const m = /<!-- policy-example[^>]*-->\n```yaml\n([\s\S]*?)```/.exec(md);
  assert.ok(m?.[1], 'docs/policy.md has the policy example');
  return m[1];
}

describe('local policy service', { timeout: 60_000 }, () => {
  const tmp = tempDirFor(after, 'spx-policy-');
  const dataDir = tmp.join('data');
  const file = join(dataDir, 'policy.yaml');
  const cap = captureLogger();
  let svc: LocalPolicy;
  let authz: AuthzClient;

  const ask = (action: Action, s: Partial<Subject> = {}) =>
    authz.evaluate(
      { ...buildRequest(action, { username: 'alice', workspace: 'ws-1', ...s }), token: 't' },
      never,
    );
  /** Replaces the file atomically (a new inode), as editors that save by rename do. */
  const save = (text: string) => {
    writeFileSync(`${file}.tmp`, text, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  };

  before(async () => {
    mkdirSync(dataDir, { recursive: true });
    svc = await startLocalPolicy({ dataDir, logger: cap.logger, watchIntervalMs: 100 });
    authz = createAuthzClient({ address: svc.address, timeout: 10 });
  });
  after(async () => {
    authz?.close();
    await svc?.close();
  });

  test('no policy file: everything allowed, logins get publickey and password', async () => {
    assert.equal(svc.file, file);
    for (const a of ['ssh:exec', 'ssh:shell', 'workspace:create', 'session:record'] as Action[])
      assert.deepEqual(await ask(a, { command: 'x' }), { allowed: true, reason: '', obligations: {} }, a);
    assert.deepEqual(await ask('user:auth'), {
      allowed: true,
      reason: '',
      obligations: { auth_methods: '["publickey","password"]' },
    });
  });

  test('the documented examples behave as documented', async () => {
    save(docsExample());
    const fwd = (port: number) => ask('ssh:direct-tcpip', { host: 'localhost', port });
    assert.equal((await fwd(3000)).allowed, true);
    assert.equal((await fwd(3999)).allowed, true);
    assert.deepEqual(await fwd(4000), {
      allowed: false,
      reason: 'port forwarding is limited to ports 3000-3999',
      obligations: {},
    });
    assert.equal((await fwd(22)).allowed, false);
    assert.equal((await ask('ssh:exec', { command: 'rm -rf /*' })).allowed, false);
    assert.equal(
      (await ask('ssh:exec', { command: 'cd /tmp && sudo rm -rf /* ; ls' })).reason,
      'rm -rf /* is not allowed',
    );
    assert.equal((await ask('ssh:exec', { command: 'rm -rf ./build' })).allowed, true);
    assert.equal((await ask('ssh:exec', { command: 'rm -rf /tmp/x' })).allowed, true);
    const rec = (blueprint: string, sessionType: Subject['sessionType']) =>
      ask('session:record', { blueprint, sessionType });
    assert.deepEqual((await rec('prod', 'shell')).obligations, { record: 'shell' });
    assert.deepEqual((await rec('prod', 'exec')).obligations, { record: 'shell' }, 'prod: shells only');
    assert.deepEqual((await rec('dev', 'shell')).obligations, {}, 'elsewhere: the static config');
  });

  test('a change applies to the next request (hot reload, also for in-place writes)', async () => {
    save('rules:\n  - action: ssh:sftp\n    effect: deny\n    reason: no sftp today\n');
    assert.deepEqual(await ask('ssh:sftp'), { allowed: false, reason: 'no sftp today', obligations: {} });
    writeFileSync(file, 'rules:\n  - action: ssh:sftp\n    effect: allow\n');
    assert.equal((await ask('ssh:sftp')).allowed, true);
    writeFileSync(file, 'default: deny\n');
    assert.deepEqual(await ask('ssh:sftp'), {
      allowed: false,
      reason: 'no policy rule allows ssh:sftp',
      obligations: {},
    });
  });

  test('a broken file keeps the last good policy and says why (also without a request)', async () => {
    save('rules:\n  - action: ssh:exec\n    effect: deny\n    reason: exec off\n');
    assert.equal((await ask('ssh:exec')).reason, 'exec off');
    const before = cap.lines().length;
    writeFileSync(file, 'rules:\n  - action: ssh:exec\n    efect: allow\n');
    // The file watch logs the problem on its own.
    const line = await waitFor(
      () =>
        cap
          .lines()
          .slice(before)
          .find((l) => l.level === 50 && String(l.msg).includes('invalid policy file')),
      { what: 'the error line', timeoutMs: 10_000 },
    );
    assert.equal(line.file, file);
    assert.match(String(line.msg), /efect.*keeping the last good policy/);
    assert.equal((await ask('ssh:exec')).reason, 'exec off', 'the last good policy still applies');
    writeFileSync(file, 'rules:\n  - action: ssh:exec\n    effect: allow\n    reason: exec on\n');
    assert.equal((await ask('ssh:exec')).allowed, true);
  });

  test('a group- or world-writable file is refused with the chmod to run', async () => {
    save('rules:\n  - action: ssh:exec\n    effect: deny\n    reason: exec off\n');
    assert.equal((await ask('ssh:exec')).allowed, false);
    writeFileSync(file, 'rules: []\n');
    chmodSync(file, 0o666);
    assert.equal((await ask('ssh:exec')).allowed, false, 'still the last good policy');
    const line = cap
      .lines()
      .find((l) => l.level === 50 && String(l.msg).includes('group- or world-writable'));
    assert.ok(line, 'an error line');
    assert.ok(String(line.msg).includes(`chmod go-w '${file}'`), String(line.msg));
    chmodSync(file, 0o600);
    assert.equal((await ask('ssh:exec')).allowed, true);
  });

  test('removing the file goes back to allow-all', async () => {
    save('default: deny\n');
    assert.equal((await ask('ssh:shell')).allowed, false);
    rmSync(file);
    assert.equal((await ask('ssh:shell')).allowed, true);
  });
});

describe('local policy service start-up and service token', { timeout: 60_000 }, () => {
  const tmp = tempDirFor(after, 'spx-policy2-');

  test('a broken or unsafe policy file at start-up is an error naming the file', async () => {
    const dir = tmp.join('broken');
    mkdirSync(dir);
    writeFileSync(join(dir, 'policy.yaml'), 'rules: [', { mode: 0o600 });
    await assert.rejects(
      startLocalPolicy({ dataDir: dir, logger: captureLogger().logger }),
      new RegExp(`invalid policy file ${join(dir, 'policy.yaml')}`),
    );
    writeFileSync(join(dir, 'policy.yaml'), 'rules: []\n');
    chmodSync(join(dir, 'policy.yaml'), 0o620);
    await assert.rejects(startLocalPolicy({ dataDir: dir, logger: captureLogger().logger }), /chmod go-w/);
  });

  test('with a token file, calls without the service token are refused', async () => {
    const dir = tmp.join('tok');
    mkdirSync(dir);
    writeFileSync(join(dir, 'token'), 'policy-token\n');
    writeFileSync(join(dir, 'wrong'), 'nope\n');
    const svc = await startLocalPolicy({
      dataDir: dir,
      tokenFile: join(dir, 'token'),
      logger: captureLogger().logger,
    });
    const good = createAuthzClient({ address: svc.address, tokenFilePath: join(dir, 'token') });
    const bad = createAuthzClient({ address: svc.address, tokenFilePath: join(dir, 'wrong') });
    try {
      const r = { ...buildRequest('ssh:sftp', { username: 'a', workspace: 'w' }), token: 't' };
      assert.equal((await good.evaluate(r, never)).allowed, true);
      await assert.rejects(bad.evaluate(r, never), /UNAUTHENTICATED: invalid bearer token/);
    } finally {
      good.close();
      bad.close();
      await svc.close();
    }
  });
});
