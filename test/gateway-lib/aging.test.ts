// A gateway must not keep anything per connection once the connection is gone (issue 15 item 1: the
// slow-down after many connections). The real local stack serves N connections (each authenticates,
// binds the workspace, runs `true` in it, and closes); afterwards the gateway's connection objects,
// its registry and its pending timers are counted. Counts, not timings: `v8.queryObjects` counts the
// live instances of a class after a full GC, so anything a long-lived Map, listener or timer still
// holds shows up here. The timers are the regression this guards: each authorization used to leave an
// unref'd 15 s AbortSignal.timeout behind (hundreds pending on a busy gateway).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { queryObjects } from 'node:v8';
import ssh2 from 'ssh2';
import { WorkspaceClient } from '../../src/backends/k8shelld.js';
import { Authenticator } from '../../src/gateway/auth.js';
import { SessionState } from '../../src/gateway/channels/session-context.js';
import { GatewayConnection } from '../../src/gateway/connection.js';
import { Dispatcher } from '../../src/gateway/dispatcher.js';
import { ChannelRelay } from '../../src/gateway/relay.js';
import { startE2E, type E2E } from '../e2e/harness.js';
import { waitFor } from '../helpers/wait.js';

const N = 40;
const CONCURRENCY = 4;

let e: E2E;
before(async () => {
  e = await startE2E();
});
after(async () => {
  await e?.stop();
});

/** One connection: authenticate, exec `true` (authorization, workspace, agent), close. */
function oneConnection(): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    const fail = (err: Error) => {
      c.destroy();
      reject(err);
    };
    c.once('error', fail);
    c.once('ready', () => {
      c.exec('true', (err, ch) => {
        if (err) return fail(err);
        let code: number | undefined;
        ch.on('exit', (n: number | null) => (code = n ?? -1));
        ch.resume();
        ch.stderr.resume();
        ch.once('close', () => {
          c.end();
          if (code !== 0) reject(new Error(`"true" exited ${code}`));
        });
      });
    });
    c.once('close', () => resolve());
    c.connect({
      host: '127.0.0.1',
      port: e.port,
      username: e.user,
      privateKey: readFileSync(e.keys.user),
      readyTimeout: 60_000,
    });
  });
}

type Ctor = abstract new (...args: never[]) => unknown;
const Timeout = setTimeout(() => undefined, 0).constructor as Ctor;
const count = (c: Ctor) => queryObjects(c as never, { format: 'count' }) as number;

test(`after ${N} connections the gateway holds no connection object, registry entry or timer of theirs`, async (t) => {
  await oneConnection(); // the workspace and its agent exist from here on
  await waitFor(() => e.stack.gateway.connections() === 0, {
    timeoutMs: 30_000,
    what: 'the warm-up to close',
  });
  const timersBefore = count(Timeout);
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < N) {
        next++;
        await oneConnection();
      }
    }),
  );
  await waitFor(() => e.stack.gateway.connections() === 0, {
    timeoutMs: 30_000,
    what: 'every connection to close',
  });
  assert.equal(e.stack.gateway.registry.size, 0);
  const live = () => ({
    GatewayConnection: count(GatewayConnection),
    Dispatcher: count(Dispatcher),
    Authenticator: count(Authenticator),
    SessionState: count(SessionState),
    ChannelRelay: count(ChannelRelay),
    WorkspaceClient: count(WorkspaceClient),
  });
  // The last connections' closing work (observers, EndSession) lets go of them within moments.
  let last = live();
  await waitFor(() => Object.values((last = live())).every((n) => n === 0), {
    timeoutMs: 30_000,
    intervalMs: 250,
    what: 'no live connection object',
  }).catch((err: unknown) => assert.fail(`${String(err)}: ${JSON.stringify(last)}`));
  const timersAfter = count(Timeout);
  t.diagnostic(`pending timers before ${timersBefore}, after ${timersAfter}`);
  // Not one per connection: a few of the stack's own (heartbeats, purges) may come and go meanwhile.
  assert.ok(timersAfter - timersBefore < N / 4, `pending timers grew from ${timersBefore} to ${timersAfter}`);
});
