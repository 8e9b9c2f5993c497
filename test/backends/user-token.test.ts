// The user JWT cache (reference-behaviour §8.7) through the real identity client against a small real
// identity server that issues tokens with chosen expiries: caching until 2 minutes before `exp`,
// unparsable tokens not cached, one call for concurrent requests, bounded size, deadline, errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  IdentityServiceService,
  type IssueUserTokenRequest,
  type IssueUserTokenResponse,
} from '../../src/gen/identity/v1/identity.js';
import { createIdentityClient, type IdentityBackend } from '../../src/backends/identity.js';
import { createUserTokenCache, jwtExpiry } from '../../src/backends/user-token.js';
import { isProxyError } from '../../src/common/errors.js';
import { grpcError } from '../../src/local/grpc-server.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const NOW_S = 1_900_000_000;

function jwt(claims: Record<string, unknown>): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'HS256', typ: 'JWT' })}.${b(claims)}.c2ln`;
}

describe('user token cache', { timeout: 60_000 }, () => {
  const server = new Server();
  const calls: IssueUserTokenRequest[] = [];
  const held: Array<() => void> = [];
  /** What the server answers for a username: a token, an error, or hold the call. */
  let answer: (req: IssueUserTokenRequest) => string | Error | 'hold' = (r) =>
    jwt({ sub: r.username, exp: NOW_S + 3600 });
  let identity: IdentityBackend;
  let clock = NOW_S * 1000;
  const now = () => clock;

  before(async () => {
    const impl: UntypedServiceImplementation = {
      issueUserToken(
        call: ServerUnaryCall<IssueUserTokenRequest, IssueUserTokenResponse>,
        cb: sendUnaryData<IssueUserTokenResponse>,
      ) {
        calls.push(call.request);
        const a = answer(call.request);
        if (a === 'hold')
          held.push(() => cb(null, { userToken: jwt({ exp: NOW_S + 3600, n: held.length }) }));
        else if (a instanceof Error) cb(grpcError(status.NOT_FOUND, a.message));
        else cb(null, { userToken: a });
      },
    };
    server.addService(IdentityServiceService, impl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    identity = createIdentityClient({ address: `127.0.0.1:${port}` });
  });
  after(() => {
    identity?.close();
    server.forceShutdown();
  });

  test('jwtExpiry reads exp without verifying; anything else is undefined', () => {
    assert.equal(jwtExpiry(jwt({ exp: 123 })), 123);
    assert.equal(jwtExpiry(jwt({ sub: 'x' })), undefined);
    assert.equal(jwtExpiry(jwt({ exp: '123' })), undefined);
    assert.equal(jwtExpiry('not-a-jwt'), undefined);
    assert.equal(jwtExpiry('a.%%%.c'), undefined);
  });

  test('cached per username+source until 2 minutes before exp', async () => {
    calls.length = 0;
    clock = NOW_S * 1000;
    const cache = createUserTokenCache(identity, { now });
    const t1 = await cache.get('alice', 'github');
    assert.deepEqual(calls, [{ username: 'alice', source: 'github' }]);
    assert.equal(await cache.get('alice', 'github'), t1);
    assert.equal(calls.length, 1, 'second request served from the cache');
    await cache.get('alice', 'gitlab');
    await cache.get('bob', 'github');
    assert.equal(calls.length, 3, 'username and source both make the key');
    // exp = now+3600: reused until now+3480, then issued again.
    clock = (NOW_S + 3479) * 1000;
    assert.equal(await cache.get('alice', 'github'), t1);
    assert.equal(calls.length, 3);
    clock = (NOW_S + 3480) * 1000;
    await cache.get('alice', 'github');
    assert.equal(calls.length, 4);
  });

  test('tokens without readable claims or expiring within 2 minutes are not cached', async () => {
    calls.length = 0;
    clock = NOW_S * 1000;
    const cache = createUserTokenCache(identity, { now });
    answer = (r) => (r.username === 'opaque' ? 'opaque-token' : jwt({ exp: NOW_S + 100 }));
    assert.equal(await cache.get('opaque', ''), 'opaque-token');
    assert.equal(await cache.get('opaque', ''), 'opaque-token');
    await cache.get('short', '');
    await cache.get('short', '');
    assert.equal(calls.length, 4);
    assert.equal(cache.size(), 0);
  });

  test('concurrent requests for one key share one call', async () => {
    calls.length = 0;
    answer = () => 'hold';
    const cache = createUserTokenCache(identity, { now });
    const all = Promise.all([1, 2, 3, 4, 5].map(() => cache.get('carol', 'local')));
    await waitFor(() => calls.length === 1, { what: 'the identity call' });
    held.splice(0).forEach((f) => f());
    const tokens = await all;
    assert.equal(new Set(tokens).size, 1);
    assert.equal(calls.length, 1);
    // One caller giving up does not cancel the others.
    calls.length = 0;
    const ac = new AbortController();
    const [a, b] = [cache.get('dave', ''), cache.get('dave', '', ac.signal)];
    await waitFor(() => calls.length === 1, { what: 'the identity call' });
    ac.abort();
    await assert.rejects(b, (e: unknown) => isProxyError(e) && e.code === 'cancelled');
    held.splice(0).forEach((f) => f());
    assert.match(await a, /\./);
  });

  test('identity errors, empty tokens and the deadline reject (= deny)', async () => {
    answer = (r) =>
      r.username === 'ghost' ? new Error('no such user') : r.username === 'empty' ? '' : 'hold';
    const cache = createUserTokenCache(identity, { now, timeoutMs: 300 });
    await assert.rejects(cache.get('ghost', ''), /identity IssueUserToken: NOT_FOUND: no such user/);
    await assert.rejects(cache.get('empty', ''), /empty token/);
    await withTimeout(
      assert.rejects(cache.get('slow', ''), /DEADLINE_EXCEEDED/),
      20_000,
      'the token deadline',
    );
    held.splice(0).forEach((f) => f());
    // A failure is not cached: the next request asks again.
    calls.length = 0;
    answer = (r) => jwt({ sub: r.username, exp: NOW_S + 3600 });
    assert.match(await cache.get('ghost', ''), /\./);
    assert.equal(calls.length, 1);
  });

  test('the cache is bounded', async () => {
    clock = NOW_S * 1000;
    answer = (r) => jwt({ sub: r.username, exp: NOW_S + 3600 });
    const cache = createUserTokenCache(identity, { now, maxEntries: 3 });
    for (const u of ['u1', 'u2', 'u3', 'u4', 'u5']) await cache.get(u, '');
    assert.equal(cache.size(), 3);
    calls.length = 0;
    await cache.get('u5', '');
    assert.equal(calls.length, 0, 'the newest stays');
    await cache.get('u1', '');
    assert.equal(calls.length, 1, 'the oldest was dropped');
  });
});
