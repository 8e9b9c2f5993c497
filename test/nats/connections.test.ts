// NATS connections (reference-behaviour §17.1) against real nats-servers: the `ssh-proxy` and
// `nats-client` connections with user/password or token auth, the reference's log lines, no
// connection at all when both features are off, and a server that appears only after start-up.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { connectionOptions, NatsLink, redactUrl, serverList } from '../../src/backends/nats.js';
import { startNats, type NatsConfig } from '../../src/backends/nats-services.js';
import { waitFor } from '../helpers/wait.js';
import { linkSettings, memoryLogger, startTestNats, type TestNats } from './helpers.js';

function config(url: string, over: Partial<NatsConfig['nats']> = {}, publish = true): NatsConfig {
  return {
    nats: {
      enabled: true,
      url,
      username: '',
      password: '',
      token: '',
      maxReconnects: -1,
      reconnectWait: 0.25,
      ...over,
    },
    server: {
      publishSshFailures: { enabled: publish, subject: 'ssh.failures', publicIPOnly: false, whitelist: [] },
    },
  };
}

async function connectionNames(monitorUrl: string | undefined): Promise<string[]> {
  assert.ok(monitorUrl);
  const r = await fetch(`${monitorUrl}/connz`, { signal: AbortSignal.timeout(5000) });
  const body = (await r.json()) as { connections?: { name?: string }[] };
  return (body.connections ?? []).map((c) => c.name ?? '').sort();
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  assert.ok(addr && typeof addr === 'object');
  return addr.port;
}

describe('NATS connection options', () => {
  it('splits server lists, defaults like Go, hides credentials in logs', () => {
    assert.deepEqual(serverList(''), ['nats://127.0.0.1:4222']);
    assert.deepEqual(serverList('nats://a:4222, nats://b:4222'), ['nats://a:4222', 'nats://b:4222']);
    assert.equal(redactUrl('nats://u:secret@host:4222'), 'nats://[redacted]@host:4222');
    assert.equal(redactUrl('nats://host:4222'), 'nats://host:4222');
  });

  it('maps reconnect settings and prefers user/password over a token', () => {
    const o = connectionOptions('nats-client', {
      url: 'nats://h:1',
      username: 'u',
      password: 'p',
      token: 't',
      maxReconnects: -1,
      reconnectWait: 2,
    });
    assert.equal(o.name, 'nats-client');
    assert.equal(o.maxReconnectAttempts, -1);
    assert.equal(o.reconnectTimeWait, 2000);
    assert.equal(o.user, 'u');
    assert.equal(o.pass, 'p');
    assert.equal(o.token, undefined);
    const t = connectionOptions('x', {
      url: '',
      username: '',
      password: '',
      token: 't',
      maxReconnects: 5,
      reconnectWait: 0,
    });
    assert.equal(t.token, 't');
    assert.equal(t.user, undefined);
    assert.equal(t.maxReconnectAttempts, 5);
    assert.equal(t.reconnectTimeWait, 2000, '0 → 2 s');
  });
});

describe('NATS connections over real servers', () => {
  let userPass: TestNats;
  let token: TestNats;

  before(async () => {
    [userPass, token] = await Promise.all([
      startTestNats({ auth: { user: 'gw', password: 'pw-1' }, monitoring: true }),
      startTestNats({ auth: { token: 'tok-1' }, monitoring: true }),
    ]);
  });
  after(async () => {
    await Promise.all([userPass.cleanup(), token.cleanup()]);
  });

  it('opens `ssh-proxy` and `nats-client` with user/password and logs the reference lines', async () => {
    const { log, messages } = memoryLogger();
    const svc = startNats(config(userPass.url, { username: 'gw', password: 'pw-1' }), {
      onLocked: () => {},
      log,
    });
    try {
      await waitFor(
        async () => (await connectionNames(userPass.server.monitorUrl)).join() === 'nats-client,ssh-proxy',
        { timeoutMs: 10_000, intervalMs: 100, what: 'both named connections on the server' },
      );
      assert.ok(messages().includes('NATS SSH failures publishing is enabled'));
      assert.ok(messages().includes('NATS connected'));
      assert.ok(svc.client && svc.watcher && svc.overrides);
    } finally {
      await svc.stop();
    }
    await waitFor(async () => (await connectionNames(userPass.server.monitorUrl)).length === 0, {
      timeoutMs: 10_000,
      intervalMs: 100,
      what: 'connections closed on stop',
    });
  });

  it('connects with a token', async () => {
    const { log } = memoryLogger();
    const link = new NatsLink({
      name: 'nats-client',
      settings: linkSettings(token.url, { token: 'tok-1' }),
      log,
    }).start();
    try {
      await waitFor(() => link.connected, { timeoutMs: 10_000, what: 'token connection' });
      assert.deepEqual(await connectionNames(token.server.monitorUrl), ['nats-client']);
    } finally {
      await link.close();
    }
  });

  it('wrong credentials: logs the reference text, keeps trying, never blocks publishing', async () => {
    const { log, messages } = memoryLogger();
    const svc = startNats(config(userPass.url, { username: 'gw', password: 'wrong' }), {
      onLocked: () => {},
      log,
    });
    try {
      await waitFor(() => messages().some((m) => m.startsWith('failed to create NATS client: ')), {
        timeoutMs: 10_000,
        what: 'connect failure logged',
      });
      const outcome = svc.publisher.publish({
        clientIp: '203.0.113.1',
        clientPort: 1,
        username: 'u',
        failureInfo: [],
        handshakeError: 'x',
      });
      assert.equal(outcome, 'queued');
      assert.equal(await svc.overrides?.get('ws'), undefined);
      assert.equal(svc.client?.connected, false);
    } finally {
      await svc.stop();
    }
  });

  it('both features off: no connection, the reference warnings', async () => {
    const { log, messages } = memoryLogger();
    const svc = startNats(config(token.url, { enabled: false }, false), { onLocked: () => {}, log });
    try {
      assert.equal(svc.client, undefined);
      assert.equal(svc.watcher, undefined);
      assert.equal(svc.overrides, undefined);
      assert.ok(messages().includes('NATS SSH failures publishing is disabled'));
      assert.ok(
        messages().includes(
          'NATS client is not configured, userstr cache, user lock watching and recording overrides disabled',
        ),
      );
      assert.deepEqual(await connectionNames(token.server.monitorUrl), []);
    } finally {
      await svc.stop();
    }
  });

  it('a server that starts after the gateway is connected to in the background', async () => {
    const port = await freePort();
    const { log, messages } = memoryLogger();
    const link = new NatsLink({
      name: 'ssh-proxy',
      settings: linkSettings(`nats://127.0.0.1:${port}`),
      log,
    }).start();
    let late: TestNats | undefined;
    try {
      await waitFor(() => messages().some((m) => m.startsWith('failed to create NATS client: ')), {
        timeoutMs: 10_000,
        what: 'first attempt failed',
      });
      assert.equal(link.connection, undefined);
      late = await startTestNats({ port });
      await waitFor(() => link.connected, { timeoutMs: 15_000, what: 'connected once the server is up' });
      assert.equal(
        messages().filter((m) => m.startsWith('failed to create NATS client')).length,
        1,
        'logged once',
      );
    } finally {
      await link.close();
      await late?.cleanup();
    }
  });
});
