// Onboarding end to end: the real OpenSSH client (in a pty, as a person types), the whole local stack,
// and the approval done in headless Chromium. A brand-new key-only user sees the reference prompt, is
// approved, presses Enter and lands in a shell; the next login uses the key; a denied approval and an
// expired code end with "Permission denied", as the reference.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pty from 'node-pty';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { waitFor } from '../helpers/wait.js';
import { ssh, startE2E, type E2E } from './harness.js';

const PROMPT_END = 'Press <Enter> to continue or <Ctrl+C> to cancel.';

function newKey(e: E2E, name: string): string {
  const path = e.dir.join(`id_${name}`);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', path]);
  return path;
}

function fingerprint(key: string): string {
  return (
    execFileSync('ssh-keygen', ['-lf', `${key}.pub`])
      .toString()
      .split(' ')[1] ?? ''
  );
}

/** `ssh user@host [cmd]` in a pty, as a person runs it (keyboard-interactive needs a terminal). */
function interactiveSsh(e: E2E, user: string, key: string, extra: string[]) {
  const p = pty.spawn(
    'ssh',
    [
      ...['-F', '/dev/null', '-p', String(e.port), '-o', 'StrictHostKeyChecking=no'],
      ...['-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes'],
      ...['-o', 'IdentityAgent=none', '-i', key],
      ...extra.slice(0, -1),
      `${user}@127.0.0.1`,
      ...extra.slice(-1),
    ],
    { cols: 120, rows: 40, env: { ...process.env, TERM: 'xterm' } },
  );
  let screen = '';
  p.onData((d) => (screen += d));
  const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
  return { p, screen: () => screen, exited };
}

async function promptCode(screen: () => string): Promise<string> {
  await waitFor(() => screen().includes(PROMPT_END), { timeoutMs: 60_000, what: 'the onboarding prompt' });
  const m = /enter the code: ([A-Z]{4}-[A-Z]{4})/.exec(screen());
  assert.ok(m?.[1], screen());
  return m[1];
}

async function enterCode(page: Page, url: string, code: string): Promise<void> {
  await page.goto(url);
  await page.getByLabel('User code').fill(code);
  await page.getByRole('button', { name: 'Continue' }).click();
}

// One browser for the whole file (launching Chromium is the slow part).
let browser: Browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

describe('onboarding end to end (OpenSSH, local stack, Chromium)', { timeout: 240_000 }, () => {
  let e: E2E;

  before(async () => {
    e = await startE2E();
  });
  after(async () => {
    await e?.stop();
  });

  test('a new key-only user onboards, lands in a shell, and logs in with the key afterwards', async () => {
    const key = newKey(e, 'newuser');
    const s = interactiveSsh(e, 'newuser', key, ['-tt']);
    try {
      const code = await promptCode(s.screen);
      const shown = s.screen().replace(/\r/g, '');
      for (const line of [
        'Onboarding user newuser via local.',
        `To continue, visit: ${e.stack.approvalUrl}`,
        `and enter the code: ${code}`,
        '(Valid for 600 seconds).',
        'After onboarding, you will authenticate using your SSH key only.',
        PROMPT_END,
      ])
        assert.ok(shown.includes(`${line}\n`), `prompt line "${line}" in:\n${shown}`);

      const page = await browser.newPage();
      await enterCode(page, e.stack.approvalUrl, code);
      await page.getByRole('heading', { name: 'Approve user newuser' }).waitFor();
      const offered = page.getByRole('radio', {
        name: new RegExp(fingerprint(key).replace(/[+/]/g, '\\$&')),
      });
      assert.equal(await offered.isChecked(), true, 'the key the client offered is proposed');
      await page.getByRole('button', { name: 'Approve' }).click();
      await page.getByRole('heading', { name: 'Onboarding approved' }).waitFor();
      await page.close();

      s.p.write('\r');
      await waitFor(() => /[$#] $/.test(s.screen()), { timeoutMs: 60_000, what: 'a shell prompt' });
      s.p.write('echo onboarded-$((6*7)) $(whoami)\r');
      await waitFor(() => s.screen().includes('onboarded-42'), { timeoutMs: 20_000, what: 'command output' });
      s.p.write('exit 3\r');
      assert.equal(await s.exited, 3);
    } finally {
      s.p.kill();
    }
    assert.match(readFileSync(e.dir.join('data', 'users.yaml'), 'utf8'), /name: newuser/);
    // BatchMode: no keyboard-interactive at all, so this only works with the key.
    const again = await ssh(e, 'newuser', ['echo', 'second-login'], { key });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.toString().trim(), 'second-login');
  });

  test('a denied approval ends with Permission denied', async () => {
    const s = interactiveSsh(e, 'deniedusr', newKey(e, 'deniedusr'), ['true']);
    try {
      const code = await promptCode(s.screen);
      const page = await browser.newPage();
      await enterCode(page, e.stack.approvalUrl, code);
      await page.getByRole('button', { name: 'Deny' }).click();
      await page.getByRole('heading', { name: 'Onboarding denied' }).waitFor();
      await page.close();
      s.p.write('\r');
      assert.equal(await s.exited, 255);
      assert.match(s.screen(), /deniedusr@127\.0\.0\.1: Permission denied \(keyboard-interactive\)\./);
      assert.doesNotMatch(s.screen().split(PROMPT_END)[1] ?? '', /enter the code/, 'no second device flow');
    } finally {
      s.p.kill();
    }
  });
});

describe('onboarding end to end: an expired code', { timeout: 240_000 }, () => {
  let e: E2E;

  before(async () => {
    e = await startE2E({ onboardingExpiresInS: 3 });
  });
  after(async () => {
    await e?.stop();
  });

  test('Enter after the code expired: Permission denied, and the page says the code expired', async () => {
    const s = interactiveSsh(e, 'lateuser', newKey(e, 'lateuser'), ['true']);
    try {
      const code = await promptCode(s.screen);
      await waitFor(
        () =>
          readFileSync(e.logFile, 'utf8')
            .split('\n')
            .some(
              (l) => l.includes('"onboarding failed"') && l.includes('"lateuser"') && l.includes('"expired"'),
            ),
        { timeoutMs: 60_000, intervalMs: 200, what: 'the gateway to give up on the expired code' },
      );
      const page = await browser.newPage();
      await enterCode(page, e.stack.approvalUrl, code);
      assert.equal(
        await page.getByRole('alert').textContent(),
        'This code has expired. Connect with ssh again to get a new code.',
      );
      await page.close();
      s.p.write('\r');
      assert.equal(await s.exited, 255);
      assert.match(s.screen(), /lateuser@127\.0\.0\.1: Permission denied \(keyboard-interactive\)\./);
    } finally {
      s.p.kill();
    }
  });
});
