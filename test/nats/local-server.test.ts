// The local nats-server starter (`npm start -- --nats`): Debian's nats-server with JetStream on
// loopback, its files in the data dir, restartable in place with its store, stopped for good on stop.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { configSchema } from '../../src/config/schema.js';
import {
  ensureLocalBuckets,
  natsServerAvailable,
  startLocalNats,
  useLocalNats,
} from '../../src/local/nats-server.js';
import { tempDirFor } from '../helpers/tmp.js';
import { pidAlive, waitFor } from '../helpers/wait.js';
import { testClient } from './helpers.js';

const quiet = pino({ level: 'silent' });

describe('local nats-server', () => {
  const dir = tempDirFor(after, 'ssh-proxy-localnats-');

  it('runs JetStream on loopback from a config file in the data dir, restarts in place, stops', async () => {
    assert.ok(natsServerAvailable(), 'Debian nats-server is installed');
    const s1 = await startLocalNats({ dataDir: dir.path, logger: quiet });
    let s2: Awaited<ReturnType<typeof startLocalNats>> | undefined;
    try {
      assert.match(s1.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(s1.configPath, dir.join('nats', 'nats-server.conf'));
      const conf = readFileSync(s1.configPath, 'utf8');
      assert.match(conf, /^host: 127\.0\.0\.1$/m);
      assert.match(conf, /jetstream \{ store_dir: ".*\/nats\/jetstream"/);

      await ensureLocalBuckets(s1.url);
      const nc = await testClient(s1.url);
      try {
        const jsm = await jetstreamManager(nc);
        assert.equal((await jsm.streams.info('KV_locked-users')).config.num_replicas, 1);
        await (await new Kvm(nc).open('locked-users')).put('alice', '{"locked":true}');
      } finally {
        await nc.close();
      }

      await s1.stop();
      assert.equal(pidAlive(s1.pid), false);
      s2 = await startLocalNats({ dataDir: dir.path, port: s1.port, logger: quiet });
      assert.equal(s2.url, s1.url, 'same address after a restart');
      const nc2 = await testClient(s2.url);
      try {
        const entry = await (await new Kvm(nc2).open('locked-users')).get('alice');
        assert.equal(entry?.string(), '{"locked":true}', 'the store survived the restart');
      } finally {
        await nc2.close();
      }
    } finally {
      await s1.stop();
      await s2?.stop();
    }
    const pid = s2?.pid ?? 0;
    await waitFor(() => !pidAlive(pid), { timeoutMs: 5000, what: 'server gone' });
  });

  it('reports a missing binary clearly', async () => {
    assert.equal(natsServerAvailable('/nonexistent/nats-server'), false);
    await assert.rejects(
      startLocalNats({
        dataDir: dir.path,
        binary: '/nonexistent/nats-server',
        logger: quiet,
        startTimeoutMs: 5000,
      }),
      /ENOENT/,
    );
  });

  it('points a config at the local server', () => {
    const cfg = configSchema.parse({ server: { port: 2222 } });
    useLocalNats(cfg, 'nats://127.0.0.1:4333');
    assert.equal(cfg.nats.enabled, true);
    assert.equal(cfg.nats.url, 'nats://127.0.0.1:4333');
    assert.deepEqual(cfg.server.publishSshFailures, {
      enabled: true,
      subject: 'ssh.failures',
      publicIPOnly: false,
      whitelist: [],
    });
  });
});
