// Pure parts of the agent: scrollback ring, `ss` parsing, id bases, signals, env and shell rules, store.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteRing } from '../../src/agent/ring.js';
import { parseSs } from '../../src/agent/peercred.js';
import { idBase } from '../../src/agent/unixsocket.js';
import { normaliseSignal, signalName, signalNumber } from '../../src/agent/procs.js';
import { buildEnv, chooseExecShell, chooseLoginShell } from '../../src/agent/launch.js';
import { queryObjects } from 'node:v8';
import { SessionStore, type StoreItem } from '../../src/agent/store.js';
import { ProxyError } from '../../src/common/errors.js';

describe('agent units', () => {
  test('ByteRing keeps the newest bytes in order across wrap-around', () => {
    const r = new ByteRing(8);
    r.push(Buffer.from('abc'));
    assert.equal(r.contents().toString(), 'abc');
    r.push(Buffer.from('defgh'));
    assert.equal(r.contents().toString(), 'abcdefgh');
    r.push(Buffer.from('ij'));
    assert.equal(r.contents().toString(), 'cdefghij');
    r.push(Buffer.from('0123456789'));
    assert.equal(r.contents().toString(), '23456789');
    assert.equal(r.length, 8);
  });

  test('parseSs finds peer inodes and pids, including paths with spaces', () => {
    const out = [
      'u_str ESTAB 0      0                  * 19552 * 19553 users:(("python3",pid=9963,fd=4),("sh",pid=9970,fd=4))',
      'u_str ESTAB 0      0      /tmp/y y.sock 19553 * 19552 users:(("node",pid=10,fd=5))',
      'u_str LISTEN 0 4096 /run/x.sock 777 * 0',
    ].join('\n');
    const rows = parseSs(out);
    assert.deepEqual(rows.get(19553), { peer: 19552, pids: [10] });
    assert.deepEqual(rows.get(19552), { peer: 19553, pids: [9963, 9970] });
    assert.deepEqual(rows.get(777), { peer: 0, pids: [] });
  });

  test('idBase follows the daemon rule', () => {
    assert.equal(idBase('sh-p98l6-78-2i1'), 'p98l6-78-2i');
    assert.equal(idBase('ux-p98l6-78-2i2'), 'p98l6-78-2i');
    assert.equal(idBase('ux-local-42-mfrggzdfmztwq2lknnwg23tpob3'), 'local-42-mf');
    assert.equal(idBase('plain'), undefined);
  });

  test('signals: unknown names become TERM; numbers and names map both ways', () => {
    assert.equal(normaliseSignal('INT'), 'SIGINT');
    assert.equal(normaliseSignal('SIGHUP'), 'SIGHUP');
    assert.equal(normaliseSignal('NOPE'), 'SIGTERM');
    assert.equal(normaliseSignal(''), 'SIGTERM');
    assert.equal(signalName(9), 'KILL');
    assert.equal(signalNumber('INT'), 2);
  });

  test('buildEnv priority: forced > client > defaults > base; bad entries ignored', () => {
    const { env, raw } = buildEnv(
      { A: 'base', USER: 'agent', KEEP: 'k' },
      ['A=client', 'USER=me', 'junk', '=x', 'E=a=b'],
      { USER: 'dflt', SHELL: '/bin/sh' },
      { HOME: '/h', A: 'forced' },
    );
    assert.deepEqual(env, { A: 'forced', USER: 'me', KEEP: 'k', SHELL: '/bin/sh', E: 'a=b', HOME: '/h' });
    assert.deepEqual(raw, []);
  });

  test('buildEnv keeps entries that are not UTF-8 as bytes; forced names still win', () => {
    const bytes = (s: string) => Buffer.from(s, 'latin1');
    const { env, raw } = buildEnv(
      {},
      [bytes('V=\xff\xfe'), bytes('W=ok'), bytes('HOME=\xff'), bytes('\xffN=1'), bytes('W=\xfe')],
      { V: 'default' },
      { HOME: '/h' },
    );
    assert.deepEqual(env, { HOME: '/h' });
    assert.deepEqual(
      raw.map((b) => b.toString('latin1')),
      ['V=\xff\xfe', '\xffN=1', 'W=\xfe'],
    );
  });

  test('shell choice rules', () => {
    assert.equal(chooseExecShell('/bin/bash', '/bin/sh'), '/bin/bash');
    assert.equal(chooseExecShell('/usr/sbin/nologin', '/bin/bash'), '/bin/bash');
    assert.equal(chooseExecShell('/no/such', '/bin/false'), '/bin/sh');
    assert.equal(chooseLoginShell('', '/bin/bash'), '/bin/bash');
    assert.equal(chooseLoginShell('/no/such/shell', '/bin/bash'), '/bin/sh');
  });

  test('store: duplicate ids refused, finished ids kept for a minute then purged', () => {
    const s = new SessionStore(60_000);
    const item: StoreItem = {
      id: 'ex-1',
      kind: 'exec',
      pid: 1,
      user: 'u',
      running: true,
      kill: () => undefined,
    };
    s.reserve('ex-1', 'exec');
    s.set(item);
    assert.throws(
      () => s.reserve('ex-1', 'exec'),
      (e: unknown) => e instanceof ProxyError && e.code === 'already_exists',
    );
    s.finish('ex-1', 1000);
    assert.equal(s.get('ex-1'), undefined);
    s.purge(1000 + 60_000);
    assert.ok(s.has('ex-1'));
    s.purge(1000 + 60_001);
    assert.equal(s.has('ex-1'), false);
    s.reserve('ex-2', 'exec');
    s.release('ex-2');
    assert.equal(s.has('ex-2'), false);
  });
});

test('SessionStore lets a finished item go at once and keeps only its id', () => {
  // Counted with v8.queryObjects (after a full GC): the store must not hold a finished exec's process,
  // streams and buffers for the minute its id stays reserved (issue 15).
  class HeldItem implements StoreItem {
    readonly kind = 'exec';
    readonly pid = 1;
    readonly user = 'u';
    readonly running = true;
    constructor(readonly id: string) {}
    kill(): void {}
  }
  const held = () => queryObjects(HeldItem, { format: 'count' }) as number;
  const s = new SessionStore(60_000);
  for (const id of ['ex-a', 'ex-b']) {
    s.reserve(id, 'exec');
    s.set(new HeldItem(id));
  }
  assert.equal(held(), 2);
  s.finish('ex-a');
  assert.equal(held(), 1);
  assert.ok(s.has('ex-a'), 'the id stays reserved');
  assert.deepEqual(
    s.live().map((i) => i.id),
    ['ex-b'],
  );
  // A late set() of a finished id does not bring the item back (made in a frame of its own, so no
  // register of this one still points at it).
  const lateSet = () => s.set(new HeldItem('ex-a'));
  lateSet();
  assert.equal(held(), 1);
});

test('ByteRing holds only what was pushed, stays bounded under many tiny pushes', () => {
  const r = new ByteRing(1000);
  for (let i = 0; i < 5000; i++) r.push(Buffer.from([65 + (i % 26)]));
  assert.equal(r.length, 1000);
  const c = r.contents();
  assert.equal(c.length, 1000);
  assert.equal(c[999], 65 + (4999 % 26));
  assert.equal(c[0], 65 + (4000 % 26));
});
