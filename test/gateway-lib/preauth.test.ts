import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';

import { loadConfig } from '../../src/config/load.js';
import {
  DEFAULT_BACKOFF,
  PreauthLimiter,
  preauthOptionsFromConfig,
  sourceKey,
  type Admission,
  type PreauthTicket,
} from '../../src/gateway/preauth.js';
import { tempDirFor } from '../helpers/tmp.js';

/** A clock the test moves by hand. */
function clock(start = 1_000_000): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function ticket(a: Admission): PreauthTicket {
  assert.ok(a.ok, JSON.stringify(a));
  return a.ticket;
}

const backoff = {
  freeFailures: 2,
  baseDelayMs: 100,
  maxDelayMs: 1000,
  maxUserDelayMs: 300,
  refuseAfter: 8,
  refuseMs: 60_000,
  forgetMs: 600_000,
};

describe('sourceKey', () => {
  it('IPv4 as is, IPv4-mapped unwrapped, IPv6 grouped by /64', () => {
    assert.equal(sourceKey('198.51.100.7'), '198.51.100.7');
    assert.equal(sourceKey('::ffff:198.51.100.7'), '198.51.100.7');
    assert.equal(sourceKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(sourceKey('2001:db8:1:2::99'), '2001:db8:1:2::/64');
    assert.equal(sourceKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(sourceKey('::1'), '0:0:0:0::/64');
    assert.equal(sourceKey('2001:DB8:0001::1'), '2001:db8:1:0::/64');
  });
});

describe('PreauthLimiter admission', () => {
  it('global cap: refuses beyond maxStartups until a slot is released', () => {
    const l = new PreauthLimiter({ maxStartups: 3, maxStartupsPerSource: 10 });
    const t = [ticket(l.admit('10.0.0.1')), ticket(l.admit('10.0.0.2')), ticket(l.admit('10.0.0.3'))];
    const r = l.admit('10.0.0.4');
    assert.ok(!r.ok && r.reason === 'max-startups');
    t[0]?.release();
    t[0]?.release(); // idempotent: frees one slot, not two
    ticket(l.admit('10.0.0.4'));
    const again = l.admit('10.0.0.5');
    assert.ok(!again.ok && again.reason === 'max-startups');
    assert.equal(l.stats().unauthenticated, 3);
  });

  it('per-source cap: one source is limited while others still get in', () => {
    const l = new PreauthLimiter({ maxStartups: 100, maxStartupsPerSource: 2 });
    const a = ticket(l.admit('10.0.0.1'));
    ticket(l.admit('::ffff:10.0.0.1'));
    const r = l.admit('10.0.0.1');
    assert.ok(!r.ok && r.reason === 'max-startups-per-source');
    assert.match(r.message, /2 unauthenticated connections from 10\.0\.0\.1/);
    ticket(l.admit('10.0.0.2'));
    // An IPv6 /64 counts as one source.
    ticket(l.admit('2001:db8::1'));
    ticket(l.admit('2001:db8::2'));
    assert.ok(!l.admit('2001:db8::3').ok);
    ticket(l.admit('2001:db8:0:1::1'));
    a.succeeded('alice');
    ticket(l.admit('10.0.0.1'));
  });

  it('1000 held slots from flooding sources do not block another source under the per-source cap', () => {
    const l = new PreauthLimiter({ maxStartups: 2000, maxStartupsPerSource: 10 });
    let refused = 0;
    for (let i = 0; i < 1000; i++) if (!l.admit('203.0.113.9').ok) refused++;
    assert.equal(refused, 990);
    ticket(l.admit('198.51.100.1'));
  });
});

describe('PreauthLimiter pending admission (forking parent, trusted PROXY relay)', () => {
  it('admitPending takes a global slot only; attribute() applies the per-source cap and the penalty', () => {
    const c = clock();
    const l = new PreauthLimiter({ maxStartups: 4, maxStartupsPerSource: 1, backoff, now: c.now });
    const a = ticket(l.admitPending());
    const b = ticket(l.admitPending());
    assert.equal(l.stats().unauthenticated, 2);
    assert.deepEqual(a.attribute('203.0.113.7'), { ok: true });
    assert.equal(a.source, '203.0.113.7');
    const no = b.attribute('203.0.113.7');
    assert.equal(no.ok, false);
    assert.equal(!no.ok && no.reason, 'max-startups-per-source');
    // A refused attribution frees the slot; only the first attribution decides.
    assert.equal(l.stats().unauthenticated, 1);
    assert.equal(b.attribute('203.0.113.8').ok, false);
    b.release();
    assert.equal(l.stats().unauthenticated, 1);
    // The attributed source is counted like a directly admitted one.
    assert.equal(l.admit('203.0.113.7').ok, false);
    a.release();
    a.release();
    assert.equal(l.stats().unauthenticated, 0);
    ticket(l.admit('203.0.113.7')).release();
    // A penalised header address is refused at attribution.
    for (let i = 0; i < backoff.refuseAfter; i++) l.failed('198.51.100.1', 'mallory');
    const p = ticket(l.admitPending()).attribute('198.51.100.1');
    assert.equal(!p.ok && p.reason, 'penalty');
    assert.equal(l.stats().unauthenticated, 0);
  });

  it('a directly admitted ticket answers ok to attribute() and keeps its source', () => {
    const l = new PreauthLimiter({ maxStartups: 4, maxStartupsPerSource: 1, backoff });
    const t = ticket(l.admit('10.0.0.1'));
    assert.deepEqual(t.attribute('10.0.0.2'), { ok: true });
    assert.equal(t.source, '10.0.0.1');
    assert.equal(l.admit('10.0.0.2').ok, true);
  });

  it('the global cap holds for pending tickets; a ticket released before its header counts nowhere', () => {
    const l = new PreauthLimiter({ maxStartups: 2, maxStartupsPerSource: 1, backoff });
    const a = ticket(l.admitPending());
    ticket(l.admit('10.0.0.1'));
    const r = l.admitPending();
    assert.equal(!r.ok && r.reason, 'max-startups');
    a.release();
    assert.deepEqual(a.attribute('10.0.0.9'), { ok: true });
    assert.equal(l.stats().unauthenticated, 1);
    // 10.0.0.9 holds nothing: it is admitted under its per-source cap of 1.
    ticket(l.admit('10.0.0.9'));
  });
});

describe('PreauthLimiter backoff', () => {
  it('free failures, then doubling delays up to the ceiling, then refusal for refuseMs', () => {
    const c = clock();
    const l = new PreauthLimiter({ maxStartups: 100, maxStartupsPerSource: 100, backoff, now: c.now });
    const t = ticket(l.admit('10.0.0.1'));
    const delays: number[] = [];
    // Different users so only the source counter grows (each user counter stays below its threshold).
    for (let i = 0; i < 7; i++) delays.push(t.failed(`u${i}`));
    assert.deepEqual(delays, [0, 0, 100, 200, 400, 800, 1000]);
    assert.equal(t.refused(), false);
    assert.equal(t.failed('u7'), 1000); // 8th failure: refused from now on
    assert.equal(t.refused(), true);
    assert.equal(l.refused('10.0.0.1'), true);
    const r = l.admit('10.0.0.1');
    assert.ok(!r.ok && r.reason === 'penalty');
    ticket(l.admit('10.0.0.2'));
    c.advance(59_999);
    assert.equal(l.refused('10.0.0.1'), true);
    c.advance(1);
    assert.equal(l.refused('10.0.0.1'), false);
    // Back on a short leash: delayed at once, refused again after fewer failures.
    const t2 = ticket(l.admit('10.0.0.1'));
    assert.equal(t2.failed('v0'), 100);
    for (let i = 1; i < 5; i++) t2.failed(`v${i}`);
    assert.equal(t2.refused(), false);
    t2.failed('v5');
    assert.equal(t2.refused(), true);
  });

  it('per-user failures delay answers from any source, capped low, and never refuse', () => {
    const c = clock();
    const l = new PreauthLimiter({ maxStartups: 100, maxStartupsPerSource: 100, backoff, now: c.now });
    const delays: number[] = [];
    for (let i = 0; i < 40; i++) delays.push(l.failed(`10.1.${i}.1`, 'victim'));
    assert.deepEqual(delays.slice(0, 5), [0, 0, 100, 200, 300]);
    assert.equal(Math.max(...delays), 300);
    // A fresh source authenticating as the victim is slowed, not refused.
    const t = ticket(l.admit('10.9.9.9'));
    assert.equal(t.refused(), false);
    assert.equal(t.failed('victim'), 300);
    assert.equal(l.failed('10.9.9.8', 'someone-else'), 0);
  });

  it('success forgives this connection’s failures for the same user only', () => {
    const c = clock();
    const l = new PreauthLimiter({ maxStartups: 100, maxStartupsPerSource: 100, backoff, now: c.now });
    // A client with several keys in its agent: rejected for each wrong key, then accepted, many times.
    for (let i = 0; i < 50; i++) {
      const t = ticket(l.admit('10.0.0.1'));
      assert.equal(t.failed('alice'), 0);
      assert.equal(t.failed('alice'), 0);
      t.succeeded('alice');
    }
    assert.equal(l.refused('10.0.0.1'), false);
    // Guesses against another user in the same connection stay counted.
    const t = ticket(l.admit('10.0.0.1'));
    t.failed('bob');
    t.failed('bob');
    t.failed('alice');
    t.succeeded('alice');
    assert.equal(l.failed('10.0.0.1', 'carol'), 100, 'bob failures still count for the source');
  });

  it('counters are forgotten after forgetMs without failures', () => {
    const c = clock();
    const l = new PreauthLimiter({ maxStartups: 100, maxStartupsPerSource: 100, backoff, now: c.now });
    for (let i = 0; i < 5; i++) l.failed('10.0.0.1', `u${i}`);
    assert.equal(l.failed('10.0.0.1', 'x'), 800);
    c.advance(600_000);
    assert.equal(l.failed('10.0.0.1', 'y'), 0);
  });

  it('memory is bounded: the least recently used counters are dropped beyond maxTracked', () => {
    const c = clock();
    const l = new PreauthLimiter({
      maxStartups: 100,
      maxStartupsPerSource: 100,
      backoff,
      maxTracked: 100,
      now: c.now,
    });
    for (let i = 0; i < 10; i++) l.failed('10.0.0.1', 'u');
    assert.equal(l.refused('10.0.0.1'), true);
    for (let i = 0; i < 10_000; i++) l.failed(`10.${(i >> 8) & 255}.${i & 255}.2`, `user${i}`);
    const s = l.stats();
    assert.equal(s.trackedSources, 100);
    assert.equal(s.trackedUsers, 100);
    assert.equal(l.refused('10.0.0.1'), false, 'evicted');
  });

  it('defaults are OpenSSH-like and config maps seconds to milliseconds', async () => {
    assert.equal(DEFAULT_BACKOFF.freeFailures, 10);
    const dir = tempDirFor(after);
    writeFileSync(dir.join('key'), 'x');
    writeFileSync(
      dir.join('c.yaml'),
      `server:\n  port: 2022\n  serverKey: ${dir.join('key')}\n  maxStartupsPerSource: 4\n  authBackoff:\n    baseDelay: 500ms\n    refuseFor: 1m\n`,
    );
    const { config } = await loadConfig(dir.join('c.yaml'));
    const o = preauthOptionsFromConfig(config.server);
    assert.equal(o.maxStartups, 100);
    assert.equal(o.maxStartupsPerSource, 4);
    assert.deepEqual(o.backoff, {
      freeFailures: 10,
      baseDelayMs: 500,
      maxDelayMs: 8000,
      maxUserDelayMs: 2000,
      refuseAfter: 30,
      refuseMs: 60_000,
      forgetMs: 1_800_000,
    });
  });
});
