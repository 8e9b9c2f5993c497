// The Authenticator against real peers: the local identity (with onboarding and its approval page),
// the local policy service through the real authz client and user-token cache (user:auth), the real
// OpenSSH client for method lists, and the ssh2 client to see every partial success and prompt.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createIdentityClient, type IdentityBackend } from '../../src/backends/identity.js';
import { createAuthzClient, type AuthzClient } from '../../src/backends/authz.js';
import { createUserTokenCache } from '../../src/backends/user-token.js';
import { parseAuthMethods, type EvaluateUserAuth } from '../../src/gateway/auth.js';
import { generateHostKey } from '../../src/gateway/hostkeys.js';
import { startLocalIdentity, type LocalIdentity } from '../../src/local/identity.js';
import { startLocalPolicy, type LocalPolicy } from '../../src/local/policy.js';
import { hashPassword } from '../../src/local/users.js';
import { startLocalWeb, type LocalWeb } from '../../src/local/web/server.js';
import { run } from '../e2e/harness.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogger, makeKey, type KeyPair } from '../local/helpers.js';
import {
  decideOnPage,
  kbd,
  none,
  password,
  pubkey,
  runClient,
  startAuthServer,
  type AuthServer,
  type PromptSeen,
} from './auth-harness.js';

const POLICY = `
rules:
  - action: user:auth
    user: carol
    effect: deny
    reason: carol is suspended
  - action: user:auth
    user: bob
    effect: allow
    authMethods: [password]
  - action: user:auth
    user: dave
    effect: allow
    obligations: { auth_methods: "publickey" }
`;

function fingerprintOf(k: KeyPair): string {
  return (
    execFileSync('ssh-keygen', ['-lf', `${k.path}.pub`])
      .toString()
      .split(' ')[1] ?? ''
  );
}

function codeOf(p: PromptSeen): string {
  const m = /enter the code: ([A-Z]{4}-[A-Z]{4})\n/.exec(p.prompts[0]?.prompt ?? '');
  assert.ok(m?.[1], `a code in the prompt: ${p.prompts[0]?.prompt}`);
  return m[1];
}

describe('authentication (Authenticator)', { timeout: 180_000 }, () => {
  const tmp = tempDirFor(after, 'spx-auth-');
  const dataDir = tmp.join('data');
  const hostKey = tmp.join('host_key');
  const cap = captureLogger();
  const keys: Record<string, KeyPair> = {};
  let web: LocalWeb;
  let identitySvc: LocalIdentity;
  let identity: IdentityBackend;
  let policy: LocalPolicy;
  let authz: AuthzClient;
  let evaluate: EvaluateUserAuth;
  let plain: AuthServer;
  let withAuthz: AuthServer;
  const closers: Array<() => Promise<void> | void> = [];

  /** A server for one test with its own settings. */
  async function server(settings: { maxAuthTries?: number; onboardingTimeoutMs?: number } = {}) {
    const s = await startAuthServer(
      hostKey,
      identity,
      { maxAuthTries: 6, onboardingPollMs: 200, ...settings },
      cap.logger,
    );
    closers.push(() => s.close());
    return s;
  }

  before(async () => {
    mkdirSync(dataDir, { recursive: true });
    generateHostKey(hostKey);
    for (const n of ['alice', 'bob', 'carol', 'dave', 'newbie', 'stranger'])
      keys[n] = makeKey(tmp.join(`id_${n}`));
    const entry = (n: string) => `  - name: ${n}\n    authorizedKeys: ["${keys[n]?.wire}"]\n`;
    writeFileSync(
      `${dataDir}/users.yaml`,
      `users:\n${entry('alice')}    password: ${await hashPassword('alice-pw')}\n` +
        entry('bob') +
        entry('carol') +
        entry('dave'),
    );
    writeFileSync(`${dataDir}/policy.yaml`, POLICY, { mode: 0o600 });
    web = await startLocalWeb({ host: '127.0.0.1', port: 0 }, cap.logger);
    identitySvc = await startLocalIdentity({
      dataDir,
      homeDir: tmp.join('home'),
      logger: cap.logger,
      onboarding: { web },
    });
    identity = createIdentityClient({ address: identitySvc.address });
    policy = await startLocalPolicy({ dataDir, logger: cap.logger });
    authz = createAuthzClient({ address: policy.address });
    const tokens = createUserTokenCache(identity);
    // What the dispatcher supplies: the user JWT, then the one Authorizer.
    evaluate = async (req, signal) => {
      const user = req.resource.id;
      const token = await tokens.get(user, req.resource.attributes.idp ?? '', signal);
      return authz.evaluate({ ...req, token }, signal);
    };
    plain = await server();
    withAuthz = await startAuthServer(hostKey, identity, { maxAuthTries: 6 }, cap.logger, { evaluate });
  });
  after(async () => {
    for (const c of closers.reverse()) await c();
    await plain?.close();
    await withAuthz?.close();
    authz?.close();
    identity?.close();
    await policy?.close();
    await identitySvc?.close();
    await web?.close();
  });

  const opensshArgs = (port: number, key: string) => [
    '-F',
    '/dev/null',
    '-p',
    String(port),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-i',
    key,
  ];

  test('without authz: publickey, plus password only for users who have one (OpenSSH)', async () => {
    const stranger = keys.stranger?.path ?? '';
    const a = await run('ssh', [...opensshArgs(plain.port, stranger), 'alice@127.0.0.1', 'true'], {
      timeoutMs: 30_000,
    });
    assert.equal(a.code, 255);
    assert.match(a.stderr, /alice@127\.0\.0\.1: Permission denied \(publickey,password\)\./);
    const b = await run('ssh', [...opensshArgs(plain.port, stranger), 'bob@127.0.0.1', 'true'], {
      timeoutMs: 30_000,
    });
    assert.match(b.stderr, /bob@127\.0\.0\.1: Permission denied \(publickey\)\./);
    const ok = await run('ssh', [...opensshArgs(plain.port, keys.bob?.path ?? ''), 'bob@127.0.0.1', 'true'], {
      timeoutMs: 30_000,
    });
    assert.equal(ok.stdout.toString().trim(), 'user=bob method=publickey', ok.stderr);
  });

  test('with authz: user:auth decides the methods; deny, absent or unparsable obligations mean none', async () => {
    const left = async (user: string) => {
      const c = runClient(withAuthz.port, user, [none(user)]);
      assert.equal(await c.done, 'failed');
      return c.trace[1]?.left;
    };
    assert.deepEqual(await left('alice'), ['publickey', 'password']);
    assert.deepEqual(await left('bob'), [], 'password permitted, but bob has none');
    assert.deepEqual(await left('carol'), []);
    assert.deepEqual(await left('dave'), []);
    const info = withAuthz.auths.map((a) => a.failureInfo.join(' | '));
    assert.match(info[1] ?? '', /No available authentication methods/);
    assert.match(
      info[2] ?? '',
      /Failed to resolve authentication methods: user:auth denied: carol is suspended/,
    );
    assert.match(info[3] ?? '', /No available authentication methods/);
    // The allowed user logs in with the real OpenSSH client.
    const r = await run(
      'ssh',
      [...opensshArgs(withAuthz.port, keys.alice?.path ?? ''), 'alice@127.0.0.1', 'true'],
      {
        timeoutMs: 30_000,
      },
    );
    assert.equal(r.stdout.toString().trim(), 'user=alice method=publickey', r.stderr);
  });

  test('with authz unreachable: no methods, and the failure says why', async () => {
    const dead = createAuthzClient({ address: '127.0.0.1:1', timeout: 5 });
    closers.push(() => dead.close());
    const s = await startAuthServer(hostKey, identity, { maxAuthTries: 6 }, cap.logger, {
      evaluate: (req, signal) => dead.evaluate({ ...req, token: 't' }, signal),
    });
    closers.push(() => s.close());
    const c = runClient(s.port, 'alice', [none('alice'), pubkey('alice', keys.alice?.path ?? '')]);
    assert.equal(await c.done, 'failed');
    assert.deepEqual(c.trace[1]?.left, []);
    assert.match(
      s.auths[0]?.failureInfo.join(' | ') ?? '',
      /Failed to resolve authentication methods: authz: evaluate user:auth: UNAVAILABLE/,
    );
  });

  test('parseAuthMethods: a JSON array of known methods, anything else is none', () => {
    assert.deepEqual(parseAuthMethods('["publickey","password"]'), ['publickey', 'password']);
    assert.deepEqual(parseAuthMethods('["password","keyboard-interactive","password"]'), ['password']);
    assert.deepEqual(parseAuthMethods(undefined), []);
    assert.deepEqual(parseAuthMethods('publickey'), []);
    assert.deepEqual(parseAuthMethods('{"publickey":true}'), []);
  });

  test('onboarding: steered to keyboard-interactive, the reference prompt, same code again, then the key', async () => {
    const k = keys.newbie;
    assert.ok(k);
    const prompts: PromptSeen[] = [];
    let approved = false;
    const c = runClient(plain.port, 'newbie', [
      none('newbie'),
      // The client offers its key first: partial success, on to keyboard-interactive.
      pubkey('newbie', k.path),
      kbd('newbie', async (p, round) => {
        prompts.push(p);
        if (round === 1) {
          const html = await decideOnPage(identitySvc.approvalUrl ?? '', codeOf(p), 'approve', {
            fingerprint: fingerprintOf(k),
          });
          assert.match(html, /Onboarding approved/);
          approved = true;
        }
      }),
      pubkey('newbie', k.path),
    ]);
    assert.equal(await c.done, 'ready');
    assert.ok(approved);
    assert.deepEqual(c.trace, [
      { left: null, partial: null },
      // publickey is listed so that clients offer their key (one-click approval of it).
      { left: ['publickey', 'keyboard-interactive'], partial: false },
      { left: ['keyboard-interactive'], partial: true },
      // Onboarded: the user's methods (no password for a key-only user).
      { left: ['publickey'], partial: true },
    ]);
    assert.equal(prompts.length, 2, 'one re-prompt before the approval');
    const [first, second] = prompts;
    const code = codeOf(first!);
    assert.equal(first?.name, '');
    assert.equal(first?.instructions, '');
    assert.equal(first?.prompts.length, 1);
    assert.equal(first?.prompts[0]?.echo, true);
    assert.equal(
      first?.prompts[0]?.prompt,
      `Onboarding user newbie via local.\n` +
        `To continue, visit: ${identitySvc.approvalUrl}\n` +
        `and enter the code: ${code}\n` +
        `(Valid for 600 seconds).\n` +
        `\n` +
        `After onboarding, you will authenticate using your SSH key only.\n` +
        `Press <Enter> to continue or <Ctrl+C> to cancel.\n`,
    );
    assert.equal(codeOf(second!), code, 'the same code while it is valid');
    assert.match(second?.prompts[0]?.prompt ?? '', /\(Valid for \d+ seconds\)/);
    assert.equal(await c.whoami(), 'user=newbie method=publickey');
    c.end();
    // The grace timer was paused exactly while each prompt waited.
    const events = plain.promptEvents[plain.auths.length - 1];
    assert.deepEqual(events, [true, false, true, false]);
    // Second login: the key works directly.
    const again = runClient(plain.port, 'newbie', [pubkey('newbie', k.path)]);
    assert.equal(await again.done, 'ready');
    assert.equal(await again.whoami(), 'user=newbie method=publickey');
    again.end();
  });

  test('onboarding denied: the attempt fails, no second device flow on the connection', async () => {
    const c = runClient(plain.port, 'refused', [
      kbd('refused', async (p) => {
        assert.match(
          await decideOnPage(identitySvc.approvalUrl ?? '', codeOf(p), 'deny'),
          /Onboarding denied/,
        );
      }),
      kbd('refused', () => assert.fail('no prompt after a denial')),
    ]);
    assert.equal(await c.done, 'failed');
    assert.deepEqual(c.trace.slice(1), [
      { left: ['keyboard-interactive'], partial: false },
      { left: ['keyboard-interactive'], partial: false },
    ]);
    const a = plain.auths[plain.auths.length - 1];
    assert.match(a?.failureInfo.join(' | ') ?? '', /Onboarding was denied: .*PERMISSION_DENIED/);
  });

  test('onboarding deadline: the prompt stops pausing the grace timer, then Enter fails', async () => {
    const s = await server({ onboardingTimeoutMs: 1500 });
    const c = runClient(s.port, 'slowpoke', [
      kbd('slowpoke', async (p) => {
        assert.match(p.prompts[0]?.prompt ?? '', /\(Valid for 2 seconds\)/);
        // Unanswered until the watch gives up and lets the login grace time run again.
        await waitFor(() => s.promptEvents[0]?.join() === 'true,false', {
          what: 'the onboarding deadline',
          timeoutMs: 30_000,
        });
      }),
    ]);
    assert.equal(await c.done, 'failed');
    assert.deepEqual(c.trace[1], { left: ['keyboard-interactive'], partial: false });
    assert.match(s.auths[0]?.failureInfo.join(' | ') ?? '', /Onboarding timed out: no approval within 2 s/);
  });

  test('attempt accounting: steering partial successes count, the onboarding partial success does not', async () => {
    const s = await server({ maxAuthTries: 2 });
    // Steering (1) + password steering (2) = limit: disconnected.
    const steer = runClient(s.port, 'looper', [
      pubkey('looper', keys.stranger?.path ?? ''),
      password('looper', 'x'),
    ]);
    assert.equal(await steer.done, 'closed');
    // Steering (1), onboarding success (not counted), key (success) within a limit of 2.
    const k = makeKey(tmp.join('id_counted'));
    const c = runClient(s.port, 'counted', [
      pubkey('counted', k.path),
      kbd('counted', async (p) => {
        await decideOnPage(identitySvc.approvalUrl ?? '', codeOf(p), 'approve', { pasted: k.pubLine });
      }),
      pubkey('counted', k.path),
    ]);
    assert.equal(await c.done, 'ready');
    assert.equal(await c.whoami(), 'user=counted method=publickey');
    c.end();
  });

  test('users who cannot onboard get nothing; known users get no keyboard-interactive', async () => {
    const long = 'x'.repeat(70);
    const c = runClient(plain.port, long, [none(long)]);
    assert.equal(await c.done, 'failed');
    assert.deepEqual(c.trace[1]?.left, []);
    assert.match(
      plain.auths[plain.auths.length - 1]?.failureInfo.join(' | ') ?? '',
      /User is not onboarded and has no onboarding capability/,
    );
    const known = runClient(plain.port, 'bob', [kbd('bob', () => assert.fail('no prompt for bob'))]);
    assert.equal(await known.done, 'failed');
    assert.deepEqual(known.trace[1], { left: ['publickey'], partial: false });
  });
});
