// The images' HEALTHCHECK program (src/cli/healthcheck.ts) against a real HTTP server on loopback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { probe } from '../../src/cli/healthcheck.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('healthcheck', () => {
  let http: Server;
  let silent: TcpServer;
  const held: Socket[] = [];
  let base = '';
  let silentUrl = '';
  let closedUrl = '';

  before(async () => {
    http = createServer((req, res) => {
      res.statusCode = req.url === '/healthz' ? 200 : 503;
      res.end(req.url === '/healthz' ? 'ok\n' : 'draining\n');
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    // Accepts and never answers: the probe's deadline must end the wait.
    silent = createTcpServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/healthz`;
    // A port that was free a moment ago: nothing listens there now.
    const tmp = createTcpServer();
    await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
    closedUrl = `http://127.0.0.1:${(tmp.address() as AddressInfo).port}/healthz`;
    await new Promise<void>((r) => tmp.close(() => r()));
  });
  after(async () => {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
    await new Promise<void>((r) => http.close(() => r()));
  });

  test('2xx is healthy, anything else is not, with the reason', async () => {
    assert.deepEqual(await probe(`${base}/healthz`), { ok: true, status: 200 });
    assert.deepEqual(await probe(`${base}/readyz`), { ok: false, reason: 'HTTP 503' });
    const refused = await probe(closedUrl);
    assert.equal(refused.ok, false);
    assert.match(refused.ok ? '' : refused.reason, /ECONNREFUSED/);
  });

  test('gives up at its deadline when the server never answers', async () => {
    const r = await probe(silentUrl, 300);
    assert.deepEqual(r, { ok: false, reason: 'no answer within 300 ms' });
  });

  test('accepts plain http: URLs only', async () => {
    assert.deepEqual(await probe('https://127.0.0.1:1/healthz'), {
      ok: false,
      reason: 'not an http: URL: https://127.0.0.1:1/healthz',
    });
    assert.deepEqual(await probe('nonsense'), { ok: false, reason: 'not a URL: nonsense' });
  });

  test('as a program: exit 0 when healthy, 1 with a line on stderr otherwise; URL from SSH_PROXY_HEALTH_URL', async () => {
    // Asynchronous: the HTTP server answering the child runs in this process.
    const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          ['--import', 'tsx', 'src/cli/healthcheck.ts', ...args],
          { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 },
          (err, _stdout, stderr) =>
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stderr }),
        );
      });
    assert.equal((await cli([`${base}/healthz`])).code, 0);
    const bad = await cli([], { SSH_PROXY_HEALTH_URL: `${base}/readyz` });
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, `healthcheck: ${base}/readyz: HTTP 503\n`);
  });
});
