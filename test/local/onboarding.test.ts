// Onboarding in the local identity service: the device flow over real gRPC, and the approval page
// driven by headless Chromium (enter the code, approve the key the SSH client offered or a pasted one,
// deny) plus plain HTTP for the page's defences (form tokens, origin, host, wrong and expired codes).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { credentials, status } from '@grpc/grpc-js';
import type { Browser, Page } from 'playwright-core';
import type { OnboardUserDeviceFlow, User, UserOnboardCapability } from '../../src/gen/common/v1/common.js';
import {
  IdentityServiceClient,
  type AuthUserResponse,
  type CompleteUserDeviceFlowResponse,
} from '../../src/gen/identity/v1/identity.js';
import { startLocalIdentity, type LocalIdentity } from '../../src/local/identity.js';
import { startLocalWeb, type LocalWeb } from '../../src/local/web/server.js';
import { normaliseUserCode } from '../../src/local/device-flows.js';
import { hashPassword } from '../../src/local/users.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { launchChromium } from '../helpers/browser.js';
import { captureLogger, grpcFailure, makeKey, unaryP, type KeyPair } from './helpers.js';

const CODE_RE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;

function fingerprintOf(pubFile: string): string {
  return execFileSync('ssh-keygen', ['-lf', pubFile]).toString().split(' ')[1] ?? '';
}

interface Rig {
  web: LocalWeb;
  svc: LocalIdentity;
  client: IdentityServiceClient;
  close(): Promise<void>;
}

async function rig(dataDir: string, home: string, expiresInS?: number): Promise<Rig> {
  const web = await startLocalWeb({ host: '127.0.0.1', port: 0 }, captureLogger().logger);
  const svc = await startLocalIdentity({
    dataDir,
    homeDir: home,
    logger: captureLogger().logger,
    onboarding: { web, expiresInS },
  });
  const client = new IdentityServiceClient(svc.address, credentials.createInsecure());
  return {
    web,
    svc,
    client,
    async close() {
      client.close();
      await svc.close();
      await web.close();
    },
  };
}

const api = (c: IdentityServiceClient) => ({
  capability: (username: string) =>
    unaryP<UserOnboardCapability>((cb) => c.getUserOnboardCapability({ username }, cb)),
  start: (username: string, provider = 'local') =>
    unaryP<OnboardUserDeviceFlow>((cb) => c.onboardUserDeviceFlow({ provider, username }, cb)),
  complete: (username: string) =>
    unaryP<CompleteUserDeviceFlowResponse>((cb) =>
      c.completeUserDeviceFlow({ provider: 'local', username }, cb),
    ),
  find: (username: string) => unaryP<User>((cb) => c.findUser({ username, email: '' }, cb)),
  pubkey: (username: string, publicKey: string) =>
    unaryP<AuthUserResponse>((cb) => c.authUserPublicKey({ username, publicKey }, cb)),
});

/** A plain HTTP form session: GET a page, then POST its form with the token it carries. */
async function getToken(url: string): Promise<string> {
  const html = await (await fetch(url)).text();
  const m = /name="token" value="([^"]+)"/.exec(html);
  assert.ok(m?.[1], 'the page carries a form token');
  return m[1];
}

function post(url: string, fields: Record<string, string>, headers: Record<string, string> = {}) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(fields).toString(),
    redirect: 'manual',
  });
}

// One browser for the whole file (launching Chromium is the slow part).
let browser: Browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

describe('local identity onboarding (device flow)', { timeout: 120_000 }, () => {
  const tmp = tempDirFor(after, 'spx-onboard-');
  const dataDir = tmp.join('data');
  const home = tmp.join('home');
  let r: Rig;
  let id: ReturnType<typeof api>;
  let newKey: KeyPair;
  let otherKey: KeyPair;
  let page: Page;

  before(async () => {
    mkdirSync(dataDir, { recursive: true });
    mkdirSync(home, { recursive: true });
    newKey = makeKey(tmp.join('newkey'));
    otherKey = makeKey(tmp.join('otherkey'));
    writeFileSync(
      `${dataDir}/users.yaml`,
      `# people\nusers:\n  - name: bob # the first\n    password: ${await hashPassword('pw')}\n`,
    );
    r = await rig(dataDir, home);
    id = api(r.client);
    page = await browser.newPage();
  });
  after(async () => {
    await r?.close();
  });

  test('unknown, valid names can onboard; known or invalid names cannot', async () => {
    assert.deepEqual(await id.capability('newbie'), {
      provider: 'local',
      username: 'newbie',
      canOnboard: true,
    });
    assert.equal((await id.capability('bob')).canOnboard, false);
    assert.equal((await id.capability('no spaces')).canOnboard, false);
    assert.equal((await id.capability('')).canOnboard, false);
  });

  test('has_password tells the gateway whether password login is possible', async () => {
    const bob = await id.find('bob');
    assert.equal(bob.hasPassword, true);
  });

  test('OnboardUserDeviceFlow gives a code and the approval page; Complete reports pending', async () => {
    const f = await id.start('Flowuser');
    assert.equal(f.provider, 'local');
    assert.equal(f.username, 'flowuser');
    assert.match(f.userCode, CODE_RE);
    assert.equal(f.verificationUrl, `${r.web.url}/onboard`);
    assert.equal(f.expiresIn, 600);
    const pending = await grpcFailure(id.complete('flowuser'));
    assert.equal(pending.code, status.FAILED_PRECONDITION);
    assert.match(pending.details, /authorization pending/);
    assert.equal((await grpcFailure(id.complete('nobody'))).code, status.NOT_FOUND);
    assert.equal((await grpcFailure(id.start('bob'))).code, status.FAILED_PRECONDITION);
    assert.equal((await grpcFailure(id.start('x', 'github'))).code, status.INVALID_ARGUMENT);
    // A new flow for the same name replaces the old one: the old code stops working.
    const again = await id.start('flowuser');
    assert.notEqual(again.userCode, f.userCode);
    const token = await getToken(`${r.web.url}/onboard`);
    const html = await (await post(`${r.web.url}/onboard`, { token, code: f.userCode })).text();
    assert.match(html, /This code is not valid/);
  });

  test('approval in the browser: code, the offered key, approve; FindUser then finds the user', async () => {
    // The gateway passes on the key the client offered (the answer is still "unknown user").
    assert.equal((await grpcFailure(id.pubkey('newbie', newKey.wire))).code, status.NOT_FOUND);
    const f = await id.start('newbie');
    await page.goto(f.verificationUrl);
    assert.equal(await page.title(), 'Approve an SSH onboarding · ssh-proxy');
    // Case and dashes do not matter.
    await page.getByLabel('User code').fill(f.userCode.toLowerCase().replace('-', ' '));
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'Approve user newbie' }).waitFor();
    const offered = page.getByRole('radio', {
      name: new RegExp(fingerprintOf(`${newKey.path}.pub`).replace(/[+/]/g, '\\$&')),
    });
    assert.equal(await offered.isChecked(), true, 'the single offered key is preselected');
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.getByRole('heading', { name: 'Onboarding approved' }).waitFor();
    assert.match((await page.getByRole('status').textContent()) ?? '', /newbie was created/);

    await id.complete('newbie');
    const u = await id.find('newbie');
    assert.equal(u.username, 'newbie');
    assert.equal(u.hasPassword, false);
    assert.equal((await id.pubkey('newbie', newKey.wire)).valid, true);
    assert.equal((await id.pubkey('newbie', otherKey.wire)).valid, false);
    const file = `${dataDir}/users.yaml`;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const text = readFileSync(file, 'utf8');
    assert.match(text, /# people/, 'comments are kept');
    assert.match(text, /# the first/);
    assert.ok(text.includes(newKey.wire), 'the key is stored');
    // The used code cannot be used again.
    await page.goto(f.verificationUrl);
    await page.getByLabel('User code').fill(f.userCode);
    await page.getByRole('button', { name: 'Continue' }).click();
    assert.match((await page.getByRole('alert').textContent()) ?? '', /This code is not valid/);
  });

  test('a wrong code shows an error; a pasted key can be approved after a bad paste', async () => {
    await page.goto(`${r.web.url}/onboard`);
    await page.getByLabel('User code').fill('BBBB-BBBB');
    await page.getByRole('button', { name: 'Continue' }).click();
    assert.equal(
      await page.getByRole('alert').textContent(),
      'This code is not valid. Check it and try again.',
    );

    const f = await id.start('paster');
    await page.getByLabel('User code').fill(f.userCode);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'Approve user paster' }).waitFor();
    assert.equal(
      await page.getByRole('radio', { name: /Use this public key/ }).isChecked(),
      true,
      'no key offered',
    );
    await page.getByLabel('Public key', { exact: true }).fill('ssh-ed25519 nonsense');
    await page.getByRole('button', { name: 'Approve' }).click();
    assert.match((await page.getByRole('alert').textContent()) ?? '', /That is not a public key/);
    await page.getByLabel('Public key', { exact: true }).fill(otherKey.pubLine);
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.getByRole('heading', { name: 'Onboarding approved' }).waitFor();
    await id.complete('paster');
    assert.equal((await id.pubkey('paster', otherKey.wire)).valid, true);
  });

  test('deny in the browser: Complete says PERMISSION_DENIED and no user is created', async () => {
    const f = await id.start('refused');
    await page.goto(f.verificationUrl);
    await page.getByLabel('User code').fill(f.userCode);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('button', { name: 'Deny' }).click();
    await page.getByRole('heading', { name: 'Onboarding denied' }).waitFor();
    const e = await grpcFailure(id.complete('refused'));
    assert.equal(e.code, status.PERMISSION_DENIED);
    assert.match(e.details, /was denied/);
    assert.equal((await grpcFailure(id.find('refused'))).code, status.NOT_FOUND);
  });

  test('forms need the page token, the page origin and the page host', async () => {
    const f = await id.start('csrf');
    const url = `${r.web.url}/onboard`;
    const noToken = await post(url, { code: f.userCode });
    assert.equal(noToken.status, 403);
    assert.match(await noToken.text(), /This form has expired/);
    const token = await getToken(url);
    const cross = await post(url, { token, code: f.userCode }, { origin: 'http://evil.example' });
    assert.equal(cross.status, 403);
    const reused = await getToken(url);
    assert.equal((await post(url, { token: reused, code: f.userCode })).status, 200);
    assert.equal((await post(url, { token: reused, code: f.userCode })).status, 403, 'tokens are single-use');
    const port = new URL(r.web.url).port;
    // fetch cannot set Host; a raw request can (DNS rebinding sends the attacker's name).
    const rebinding = await new Promise<number | undefined>((resolve, reject) =>
      httpGet(
        { host: '127.0.0.1', port, path: '/onboard', headers: { host: `evil.example:${port}` } },
        (res) => {
          res.resume();
          resolve(res.statusCode);
        },
      ).on('error', reject),
    );
    assert.equal(rebinding, 421);
    // Nothing was decided by any of this.
    assert.equal((await grpcFailure(id.complete('csrf'))).code, status.FAILED_PRECONDITION);
    assert.equal(normaliseUserCode(' bcdf-ghjk '), 'BCDF-GHJK');
  });
});

describe('local identity onboarding: expired codes', { timeout: 120_000 }, () => {
  const tmp = tempDirFor(after, 'spx-onboard-exp-');
  let r: Rig;

  before(async () => {
    r = await rig(tmp.join('data'), tmp.join('home'), 1);
  });
  after(async () => {
    await r?.close();
  });

  test('an expired code is reported as such on the page and to CompleteUserDeviceFlow', async () => {
    const id = api(r.client);
    const f = await id.start('late');
    assert.equal(f.expiresIn, 1);
    await waitFor(async () => (await grpcFailure(id.complete('late'))).code === status.NOT_FOUND, {
      what: 'the code to expire',
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    const page = await browser.newPage();
    await page.goto(f.verificationUrl);
    await page.getByLabel('User code').fill(f.userCode);
    await page.getByRole('button', { name: 'Continue' }).click();
    assert.equal(
      await page.getByRole('alert').textContent(),
      'This code has expired. Connect with ssh again to get a new code.',
    );
  });
});
