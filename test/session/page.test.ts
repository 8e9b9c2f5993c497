// The sessions page in headless Chromium (Debian's, via playwright-core): a live session appears
// without a reload, and a finished shell recording plays in asciinema-player with the recorded text.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { chromium, type Browser } from 'playwright-core';
import { createSessionClient, type SessionBackend } from '../../src/backends/session.js';
import { createRecorders } from '../../src/gateway/recorder.js';
import { createSessionTracker } from '../../src/gateway/session-tracking.js';
import type { LiveConnectionInfo } from '../../src/gateway/registry.js';
import type { ChannelTap } from '../../src/gateway/tap.js';
import { applyDefaults, decodeConfig } from '../../src/config/validate.js';
import { startLocalSessions, type LocalSessions } from '../../src/local/sessions/index.js';
import { startLocalWeb, type LocalWeb } from '../../src/local/web/server.js';
import { tempDirFor } from '../helpers/tmp.js';
import { context } from './helpers.js';

const quiet = pino({ level: 'silent' });
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function connection(id: string, user: string): LiveConnectionInfo {
  return {
    id,
    clientIp: '127.0.0.1',
    clientPort: 40000,
    clientVersion: 'SSH-2.0-OpenSSH_9.2p1',
    startedAt: new Date(),
    username: user,
    userstrBlueprint: '',
    workspace: { name: `ws-${user}`, blueprint: 'default', appVersion: 'agent-1' },
    bytes: { in: 1234, out: 56789 },
    operations: () => ['pt', 'sh'],
    openChannels: () => 1,
    end: () => undefined,
  };
}

describe('sessions page', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-page-');
  let web: LocalWeb;
  let sessions: LocalSessions;
  let client: SessionBackend;
  let browser: Browser;

  before(async () => {
    web = await startLocalWeb({ host: '127.0.0.1', port: 0 }, quiet);
    sessions = await startLocalSessions({ dataDir: tmp.path, web, logger: quiet });
    client = createSessionClient({ address: sessions.address });
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: CHROMIUM_FLAGS,
      timeout: 60_000,
    });
  });
  after(async () => {
    await browser?.close();
    client?.close();
    await sessions?.close();
    await web?.close();
  });

  test('a live session appears while the page is open; a finished shell recording plays', async () => {
    const tracker = createSessionTracker({ client, heartbeatMs: 60_000, log: quiet });
    const first = connection('local-1-pageoneaaaaaaaaaaaaaaaaaaaa', 'alice');
    tracker.workspaceBound?.(first);
    const page = await browser.newPage();
    try {
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(sessions.pageUrl as string);
      await page
        .locator('#live tr[data-session="local-1-pageoneaaaaaaaaaaaaaaaaaaaa"]')
        .waitFor({ timeout: 15_000 });

      // A second connection shows up through the page's own refresh, no reload.
      const second = connection('local-1-pagetwoaaaaaaaaaaaaaaaaaaaa', 'bob');
      tracker.workspaceBound?.(second);
      const row = page.locator('#live tr[data-session="local-1-pagetwoaaaaaaaaaaaaaaaaaaaa"]');
      await row.waitFor({ timeout: 15_000 });
      const text = await row.innerText();
      assert.match(text, /bob/);
      assert.match(text, /ws-bob/);
      assert.match(text, /SSH-2\.0-OpenSSH_9\.2p1/);
      assert.match(text, /55\.5 KiB/);
      assert.equal(await row.locator('td[title="56789 bytes"]').count(), 1);
      assert.match(text, /shell/);

      // Record a shell on the first connection, end it: the recording is listed and plays.
      const cfg = applyDefaults(
        decodeConfig({ server: { port: 1 }, session: { address: sessions.address } }),
      );
      const rec = createRecorders({
        client,
        decision: { recording: cfg.server.recording, sessionAddress: cfg.session.address },
        bufferBytes: 1 << 20,
        failPolicy: 'closed',
        log: quiet,
      });
      const ctx = context('shell', {
        connectionId: first.id,
        channelId: `sh-${first.id}1`,
        pty: { cols: 80, rows: 24 },
      });
      const tap = (await rec.open(ctx)) as ChannelTap;
      tap.data('out', Buffer.from('$ echo hi\r\nhello from the recording\r\n$ '));
      await tap.close();
      await rec.connectionClosed(first.id);
      await tracker.closed?.(first);
      await tracker.closed?.(second);

      const link = page.locator(`#ended a[href="/sessions/recording/${encodeURIComponent(ctx.channelId)}"]`);
      await link.waitFor({ timeout: 15_000 });
      await link.click();
      await page.locator('.ap-term').waitFor({ timeout: 20_000 });
      // Strings: the test project has no DOM types.
      await page.waitForFunction(
        "(document.querySelector('.ap-term')?.textContent ?? '').includes('hello from the recording')",
        undefined,
        { timeout: 20_000 },
      );
      assert.deepEqual(errors, [], 'no script errors on the page');
      // The cast and the player's assets come from this server.
      const assets = await page.evaluate<string[]>(
        "[...document.querySelectorAll('script[src], link[rel=stylesheet]')].map((e) => e.src || e.href)",
      );
      assert.ok(assets.length >= 3 && assets.every((a) => a.startsWith(web.url)), JSON.stringify(assets));
    } finally {
      await page.close();
    }
  });

  test('pcapng and sftp recordings are downloads with a summary; unknown ids are 404', async () => {
    const cfg = applyDefaults(
      decodeConfig({
        server: { port: 1, recording: { recordDirectTCPIP: true } },
        session: { address: sessions.address },
      }),
    );
    const rec = createRecorders({
      client,
      decision: { recording: cfg.server.recording, sessionAddress: cfg.session.address },
      bufferBytes: 1 << 20,
      failPolicy: 'closed',
      log: quiet,
    });
    const ctx = context('tcpip', {
      obligation: undefined,
      tcpip: { srcHost: '127.0.0.1', srcPort: 1234, dstHost: '127.0.0.1', dstPort: 80 },
    });
    const tap = (await rec.open(ctx)) as ChannelTap;
    tap.data('in', Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    tap.data('out', Buffer.from('HTTP/1.0 200 OK\r\n\r\nhi'));
    await tap.close();
    await rec.connectionClosed(ctx.connectionId);
    const res = await fetch(`${web.url}/sessions/recording/${encodeURIComponent(ctx.channelId)}`);
    assert.equal(res.status, 200);
    const html = await res.text();
    assert.match(html, /payloadFromClient/);
    assert.match(html, /\.pcapng/);
    const dl = await fetch(`${web.url}/sessions/recording/${encodeURIComponent(ctx.channelId)}/file/pcapng`);
    assert.equal(dl.status, 200);
    assert.match(dl.headers.get('content-disposition') ?? '', /attachment/);
    const body = Buffer.from(await dl.arrayBuffer());
    assert.equal(body.readUInt32LE(0), 0x0a0d0d0a, 'a pcapng section header');
    assert.equal((await fetch(`${web.url}/sessions/recording/nope`)).status, 404);
    assert.equal(
      (await fetch(`${web.url}/sessions/recording/${encodeURIComponent(ctx.channelId)}/file/..%2f..`)).status,
      404,
    );
    assert.equal((await fetch(`${web.url}/elsewhere`)).status, 404, 'other paths are left to other routes');
  });
});
