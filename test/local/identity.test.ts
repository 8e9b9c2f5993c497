// The local identity service over real gRPC on loopback, driven by the generated client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { credentials, status } from '@grpc/grpc-js';
import { bearerInterceptor } from '../../src/backends/grpc.js';
import type { OnboardUserDeviceFlow, User, UserOnboardCapability } from '../../src/gen/common/v1/common.js';
import {
  IdentityServiceClient,
  type AuthUserResponse,
  type CompleteUserDeviceFlowResponse,
  type IssueUserTokenResponse,
} from '../../src/gen/identity/v1/identity.js';
import { startLocalIdentity, type LocalIdentity } from '../../src/local/identity.js';
import { verifyJwtHs256 } from '../../src/local/jwt.js';
import { hashPassword } from '../../src/local/users.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogger, grpcFailure, makeKey, unaryP, type KeyPair } from './helpers.js';

describe('local identity service', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-ident-');
  const dataDir = tmp.join('data');
  const home = tmp.join('home');
  const keyDir = tmp.join('keys');
  const cap = captureLogger();
  const os = userInfo();
  let svc: LocalIdentity;
  let client: IdentityServiceClient;
  let alice: KeyPair;
  let bob: KeyPair;
  let stranger: KeyPair;
  let rsa: KeyPair;
  let osAuth: KeyPair;
  let osPub: KeyPair;

  const usersYaml = async (extra = '') => `
users:
  - name: Alice
    fullname: Alice Liddell
    email: alice@example.test
    sudo: true
    shell: /bin/zsh
    authorizedKeys:
      - ${alice.pubLine}
      - ${rsa.pubLine}
    password: ${await hashPassword('correct horse')}
  - name: bob
    authorizedKeys: ['${bob.pubLine}']
  - name: mallory
    locked: true
    valid: false
${extra}`;

  before(async () => {
    mkdirSync(dataDir);
    mkdirSync(`${home}/.ssh`, { recursive: true });
    mkdirSync(keyDir);
    alice = makeKey(`${keyDir}/alice`);
    bob = makeKey(`${keyDir}/bob`);
    stranger = makeKey(`${keyDir}/stranger`);
    rsa = makeKey(`${keyDir}/rsa`, 'rsa');
    osAuth = makeKey(`${keyDir}/osauth`);
    osPub = makeKey(`${home}/.ssh/id_ed25519`);
    // authorized_keys with options and a comment line, as people write them.
    writeFileSync(
      `${home}/.ssh/authorized_keys`,
      `# my keys\nfrom="127.0.0.1",command="echo hi there" ${osAuth.pubLine}\n`,
    );
    writeFileSync(`${dataDir}/users.yaml`, await usersYaml());
    svc = await startLocalIdentity({ dataDir, homeDir: home, logger: cap.logger });
    client = new IdentityServiceClient(svc.address, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await svc?.close();
  });

  const findUser = (username: string) => unaryP<User>((cb) => client.findUser({ username, email: '' }, cb));
  const pubkey = (username: string, publicKey: string) =>
    unaryP<AuthUserResponse>((cb) => client.authUserPublicKey({ username, publicKey }, cb));
  const password = (username: string, pw: string) =>
    unaryP<AuthUserResponse>((cb) => client.authUserPassword({ username, password: pw }, cb));

  test('FindUser returns a users.yaml user with its profile', async () => {
    const u = await findUser('alice');
    assert.equal(u.username, 'alice');
    assert.equal(u.organization, 'local');
    assert.equal(u.source, 'local');
    assert.equal(u.isValid, true);
    assert.equal(u.locked, false);
    assert.equal(u.sudo, true);
    assert.equal(u.shell, '/bin/zsh');
    assert.equal(u.fullname, 'Alice Liddell');
    assert.equal(u.email, 'alice@example.test');
    const m = await findUser('mallory');
    assert.equal(m.locked, true);
    assert.equal(m.isValid, false);
    assert.equal((await findUser('bob')).shell, '/bin/bash');
    // Ours (has_password, field 100): only alice has a password.
    assert.equal(u.hasPassword, true);
    assert.equal((await findUser('bob')).hasPassword, false);
  });

  test('FindUser of an unknown user is NOT_FOUND with a message', async () => {
    const e = await grpcFailure(findUser('nobody'));
    assert.equal(e.code, status.NOT_FOUND);
    assert.match(e.details, /nobody.*not found/);
    const empty = await grpcFailure(findUser('  '));
    assert.equal(empty.code, status.INVALID_ARGUMENT);
  });

  test('the OS user exists with uid, gid, shell and sudo from the system', async () => {
    const u = await findUser(os.username);
    assert.equal(u.username, os.username.toLowerCase());
    assert.equal(u.uid, os.uid);
    assert.equal(u.gid, os.gid);
    assert.equal(u.sudo, os.uid === 0);
    assert.equal(u.shell, os.shell || '/bin/bash');
    assert.equal(u.source, 'local');
  });

  test('AuthUserPublicKey accepts the user own key and refuses others', async () => {
    const ok = await pubkey('alice', alice.wire);
    assert.equal(ok.valid, true);
    assert.equal(ok.user?.username, 'alice');
    assert.equal((await pubkey('alice', stranger.wire)).valid, false);
    // Bob's key is valid for bob only.
    assert.equal((await pubkey('alice', bob.wire)).valid, false);
    assert.equal((await pubkey('bob', bob.wire)).valid, true);
    // A type token that does not match the blob is not the same key.
    const [, blob] = alice.wire.split(' ');
    assert.equal((await grpcFailure(pubkey('alice', `ssh-rsa ${blob}`))).code, status.INVALID_ARGUMENT);
  });

  test('an ssh-rsa key matches whichever RSA signature algorithm is named', async () => {
    const [, blob] = rsa.wire.split(' ');
    assert.equal((await pubkey('alice', rsa.wire)).valid, true);
    assert.equal((await pubkey('alice', `rsa-sha2-512 ${blob}`)).valid, true);
    assert.equal((await pubkey('alice', `rsa-sha2-256 ${blob}`)).valid, true);
  });

  test('malformed public keys and unknown users are clear errors', async () => {
    const e = await grpcFailure(pubkey('alice', 'ssh-ed25519 not!base64'));
    assert.equal(e.code, status.INVALID_ARGUMENT);
    assert.match(e.details, /authorized_keys line/);
    assert.equal((await grpcFailure(pubkey('alice', ''))).code, status.INVALID_ARGUMENT);
    assert.equal((await grpcFailure(pubkey('nobody', alice.wire))).code, status.NOT_FOUND);
  });

  test('the OS user is authorised by authorized_keys (with options) and ~/.ssh/*.pub', async () => {
    assert.equal((await pubkey(os.username, osAuth.wire)).valid, true);
    assert.equal((await pubkey(os.username, osPub.wire)).valid, true);
    assert.equal((await pubkey(os.username, stranger.wire)).valid, false);
    // New keys apply without a restart.
    writeFileSync(`${home}/.ssh/extra.pub`, stranger.pubLine + '\n');
    assert.equal((await pubkey(os.username, stranger.wire)).valid, true);
  });

  test('AuthUserPassword checks the scrypt hash', async () => {
    const ok = await password('alice', 'correct horse');
    assert.equal(ok.valid, true);
    assert.equal(ok.user?.username, 'alice');
    assert.equal((await password('alice', 'wrong horse')).valid, false);
    assert.equal((await password('alice', '')).valid, false);
    // bob has no password: never valid.
    assert.equal((await password('bob', '')).valid, false);
    assert.equal((await password('bob', 'anything')).valid, false);
    assert.equal((await grpcFailure(password('nobody', 'x'))).code, status.NOT_FOUND);
  });

  test('IssueUserToken returns an HS256 JWT with the documented claims', async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await unaryP<IssueUserTokenResponse>((cb) =>
      client.issueUserToken({ username: 'alice', source: 'github' }, cb),
    );
    const secretFile = `${dataDir}/identity-secret`;
    assert.equal(statSync(secretFile).mode & 0o777, 0o600);
    const claims = verifyJwtHs256(res.userToken, Buffer.from(readFileSync(secretFile, 'utf8').trim()));
    assert.equal(typeof claims, 'object', `token does not verify: ${String(claims)}`);
    const c = claims as Record<string, unknown>;
    assert.equal(c.sub, 'alice');
    assert.equal(c.iss, 'ssh-proxy-local');
    assert.ok(typeof c.exp === 'number' && c.exp >= before + 3600 && c.exp <= before + 3602);
    assert.match(String(c.jti), /^[0-9a-f-]{36}$/);
    assert.equal(c.email, 'alice@example.test');
    assert.equal(c.name, 'Alice Liddell');
    assert.deepEqual(c.roles, ['sudo']);
    assert.equal(c.org, 'local');
    assert.equal(c.source, 'github');
    assert.equal(c.shell, '/bin/zsh');
    assert.equal(c.sudo, true);
    assert.equal(c.uid, 0);
    assert.equal(c.gid, 0);
    // A tampered token does not verify.
    const parts = res.userToken.split('.');
    const forged = `${parts[0]}.${Buffer.from(JSON.stringify({ ...c, sub: 'bob' })).toString('base64url')}.${parts[2]}`;
    assert.equal(
      verifyJwtHs256(forged, Buffer.from(readFileSync(secretFile, 'utf8').trim())),
      'token signature is invalid',
    );
    const again = await unaryP<IssueUserTokenResponse>((cb) =>
      client.issueUserToken({ username: 'alice', source: '' }, cb),
    );
    assert.notEqual(again.userToken, res.userToken);
    assert.equal(
      (
        await grpcFailure(
          unaryP<IssueUserTokenResponse>((cb) => client.issueUserToken({ username: 'x', source: '' }, cb)),
        )
      ).code,
      status.NOT_FOUND,
    );
  });

  test('onboarding is not offered unless enabled', async () => {
    const capRes = await unaryP<UserOnboardCapability>((cb) =>
      client.getUserOnboardCapability({ username: 'newbie' }, cb),
    );
    assert.deepEqual(capRes, { provider: '', username: 'newbie', canOnboard: false });
    const e1 = await grpcFailure(
      unaryP<OnboardUserDeviceFlow>((cb) =>
        client.onboardUserDeviceFlow({ provider: 'github', username: 'n' }, cb),
      ),
    );
    assert.equal(e1.code, status.FAILED_PRECONDITION);
    assert.match(e1.details, /onboarding is not available in the local identity service/);
    const e2 = await grpcFailure(
      unaryP<CompleteUserDeviceFlowResponse>((cb) =>
        client.completeUserDeviceFlow({ provider: '', username: 'n' }, cb),
      ),
    );
    assert.equal(e2.code, status.FAILED_PRECONDITION);
  });

  // The two reload tests change users.yaml, so they run last and in this order.
  test('users.yaml is re-read when it changes', async () => {
    await grpcFailure(findUser('carol'));
    writeFileSync(
      `${dataDir}/users.yaml`,
      await usersYaml(`  - name: carol\n    email: carol@example.test\n`),
    );
    const carol = await waitFor(() => findUser('carol'), { what: 'carol after the reload', timeoutMs: 3000 });
    assert.equal(carol.email, 'carol@example.test');
    assert.equal((await findUser('alice')).username, 'alice');
  });

  test('a malformed users.yaml keeps the last good users and logs the problem', async () => {
    const file = `${dataDir}/users.yaml`;
    writeFileSync(file, 'users:\n  - name: dave\n    authorizedKeys: [not a key]\n');
    // The lookup itself triggers the re-read; the old users remain.
    assert.equal((await findUser('carol')).username, 'carol');
    assert.equal((await grpcFailure(findUser('dave'))).code, status.NOT_FOUND);
    const err = cap.lines().find((l) => l.level === 50 && String(l.msg).includes('invalid users file'));
    assert.ok(err, 'an error line about the users file');
    assert.equal(err.file, file);
    assert.match(String(err.err), /authorizedKeys\[0\]/);

    writeFileSync(file, 'users:\n  - name: erin\n    colour: blue\n');
    assert.equal((await findUser('carol')).username, 'carol');
    assert.ok(
      cap.lines().some((l) => l.level === 50 && /colour/.test(String(l.err))),
      'unknown key is named',
    );
  });
});

describe('local identity service with a service token', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-ident-tok-');
  const tokenFile = tmp.join('token');
  const clientFile = tmp.join('client-token');
  const wrongFile = tmp.join('wrong');
  let svc: LocalIdentity;

  before(async () => {
    writeFileSync(tokenFile, 's3cret-token\n');
    writeFileSync(clientFile, 's3cret-token');
    writeFileSync(wrongFile, 'not-the-token\n');
    svc = await startLocalIdentity({
      dataDir: tmp.join('data'),
      homeDir: tmp.join('home'),
      tokenFile,
      logger: captureLogger().logger,
    });
  });
  after(() => svc?.close());

  const capability = (c: IdentityServiceClient) =>
    unaryP<UserOnboardCapability>((cb) => c.getUserOnboardCapability({ username: 'x' }, cb));

  test('calls without the bearer token are UNAUTHENTICATED', async () => {
    const none = new IdentityServiceClient(svc.address, credentials.createInsecure());
    const wrong = new IdentityServiceClient(svc.address, credentials.createInsecure(), {
      interceptors: [bearerInterceptor(wrongFile)],
    });
    const right = new IdentityServiceClient(svc.address, credentials.createInsecure(), {
      interceptors: [bearerInterceptor(clientFile)],
    });
    try {
      const e1 = await grpcFailure(capability(none));
      assert.equal(e1.code, status.UNAUTHENTICATED);
      assert.match(e1.details, /missing bearer token/);
      const e2 = await grpcFailure(capability(wrong));
      assert.equal(e2.code, status.UNAUTHENTICATED);
      assert.match(e2.details, /invalid bearer token/);
      assert.equal((await capability(right)).username, 'x');
      // The server re-reads its token file: rotating it locks out the old token.
      writeFileSync(tokenFile, 'rotated\n');
      assert.equal((await grpcFailure(capability(right))).code, status.UNAUTHENTICATED);
      writeFileSync(wrongFile, 'rotated\n');
      assert.equal((await capability(wrong)).username, 'x');
    } finally {
      none.close();
      wrong.close();
      right.close();
    }
  });
});
