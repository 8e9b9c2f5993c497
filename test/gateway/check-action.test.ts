// checkAction, the one caller of Authorizer.evaluate: whatever an authorizer does (throw, never
// settle and ignore the abort, answer something that is not a decision, or need a token that cannot be
// issued), the action is denied with `failed` set, the cause is logged, and the metric says "error".
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import {
  buildRequest,
  checkAction,
  type Authorizer,
  type CheckContext,
  type Decision,
} from '../../src/gateway/authorize.js';
import { withTimeout } from '../helpers/wait.js';

function capture(): { log: CheckContext['log']; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

const req = () => buildRequest('ssh:exec', { username: 'alice', workspace: 'ws-1', command: 'make test' });

function authorizer(evaluate: Authorizer['evaluate']): Authorizer {
  return { configured: true, evaluate };
}

describe('checkAction', () => {
  test('allowed and denied answers pass through, with the token filled in', async () => {
    const seen: string[] = [];
    const observed: string[] = [];
    const a = authorizer((r) => {
      seen.push(r.token);
      return Promise.resolve({ allowed: r.context.command === 'make test', reason: 'no', obligations: {} });
    });
    const { log } = capture();
    const ctx: CheckContext = {
      timeoutMs: 5000,
      userToken: () => Promise.resolve('jwt-1'),
      log,
      observe: (action, outcome) => observed.push(`${action}:${outcome}`),
    };
    assert.deepEqual(await checkAction(a, req(), ctx), {
      allowed: true,
      reason: 'no',
      obligations: {},
      failed: false,
    });
    const other = { ...req(), context: { command: 'rm -rf /' } };
    assert.equal((await checkAction(a, other, ctx)).allowed, false);
    assert.deepEqual(seen, ['jwt-1', 'jwt-1']);
    assert.deepEqual(observed, ['ssh:exec:allowed', 'ssh:exec:denied']);
  });

  const failing: Array<[string, Authorizer['evaluate'], RegExp]> = [
    ['throws', () => Promise.reject(new Error('boom')), /boom/],
    [
      'throws synchronously',
      () => {
        throw new Error('sync boom');
      },
      /sync boom/,
    ],
    // Never settles and ignores the abort signal: only the deadline ends it.
    ['hangs', () => new Promise<Decision>(() => undefined), /no answer within authz\.timeout \(50 ms\)/],
    [
      'answers nonsense',
      () => Promise.resolve({ allowed: 'yes' } as unknown as Decision),
      /malformed answer/,
    ],
  ];
  for (const [name, evaluate, cause] of failing)
    test(`an authorizer that ${name} denies, logged with the cause`, async () => {
      const { log, lines } = capture();
      const observed: string[] = [];
      const v = await withTimeout(
        checkAction(authorizer(evaluate), req(), {
          timeoutMs: 50,
          userToken: () => Promise.resolve('jwt'),
          log,
          observe: (_a, outcome) => observed.push(outcome),
        }),
        20_000,
        'the verdict',
      );
      assert.equal(v.allowed, false);
      assert.equal(v.failed, true);
      assert.deepEqual(observed, ['error']);
      assert.ok(
        lines.some(
          (l) =>
            /authz: evaluate ssh:exec/.test(String(l.msg)) && cause.test(`${String(l.err)} ${String(l.msg)}`),
        ),
        JSON.stringify(lines),
      );
    });

  test('no user token: denied without asking the authorizer', async () => {
    let asked = false;
    const { log, lines } = capture();
    const v = await checkAction(
      authorizer(() => {
        asked = true;
        return Promise.resolve({ allowed: true, reason: '', obligations: {} });
      }),
      req(),
      { timeoutMs: 5000, userToken: () => Promise.reject(new Error('identity down')), log },
    );
    assert.equal(v.allowed, false);
    assert.equal(v.failed, true);
    assert.equal(asked, false);
    assert.ok(lines.some((l) => l.msg === 'no user token; action denied' && l.err === 'identity down'));
  });

  test('the connection going away ends a pending evaluation as a failure', async () => {
    const ac = new AbortController();
    const { log } = capture();
    const p = checkAction(
      authorizer(
        (_r, signal) =>
          new Promise<Decision>((_, reject) =>
            signal.addEventListener('abort', () => reject(new Error('aborted'))),
          ),
      ),
      req(),
      { timeoutMs: 60_000, userToken: () => Promise.resolve('jwt'), log, signal: ac.signal },
    );
    ac.abort();
    const v = await withTimeout(p, 20_000, 'the verdict');
    assert.equal(v.failed, true);
  });
});
