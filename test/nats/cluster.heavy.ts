// Heavy variant (not in `npm test`; run with `npm run test:nats-cluster`): a real 3-server JetStream
// cluster gets a 3-replica `recording-overrides` bucket, sized from what the servers advertise.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  bucketReplicas,
  openOrCreateBucket,
  RECORDING_OVERRIDES_BUCKET,
} from '../../src/backends/nats-kv.js';
import { makeTempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { testClient } from './helpers.js';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  assert.ok(addr && typeof addr === 'object');
  return addr.port;
}

describe('a 3-server JetStream cluster', () => {
  const dir = makeTempDir('ssh-proxy-natscluster-');
  const procs: ChildProcess[] = [];
  let nc: NatsConnection;

  before(async () => {
    const client = await Promise.all([0, 1, 2].map(() => freePort()));
    const route = await Promise.all([0, 1, 2].map(() => freePort()));
    const routes = route.map((p) => `nats-route://127.0.0.1:${p}`).join(', ');
    for (const i of [0, 1, 2]) {
      const d = dir.join(`n${i}`);
      mkdirSync(d);
      const conf = dir.join(`n${i}.conf`);
      writeFileSync(
        conf,
        [
          `server_name: n${i}`,
          `listen: 127.0.0.1:${client[i]}`,
          `jetstream { store_dir: ${JSON.stringify(d)} }`,
          `cluster { name: c1, listen: 127.0.0.1:${route[i]}, routes: [${routes}] }`,
          `log_file: ${JSON.stringify(dir.join(`n${i}.log`))}`,
        ].join('\n'),
      );
      procs.push(spawn('nats-server', ['-c', conf], { stdio: 'ignore' }));
    }
    nc = await testClient(`nats://127.0.0.1:${client[0]}`);
    // Wait until the cluster has formed and JetStream has a meta leader.
    await waitFor(
      async () => {
        const jsm = await jetstreamManager(nc, { timeout: 2000 });
        await jsm.getAccountInfo();
        return (nc.info?.connect_urls?.length ?? 0) === 3;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'cluster with JetStream' },
    );
  });
  after(async () => {
    await nc?.close();
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(
      procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))),
    );
    dir.cleanup();
  });

  it('creates the overrides bucket with 3 replicas', async () => {
    assert.equal(bucketReplicas(nc.info), 3);
    const b = await openOrCreateBucket(nc, RECORDING_OVERRIDES_BUCKET, 10_000);
    assert.equal(b.created, true);
    assert.equal(b.replicas, 3);
  });
});
