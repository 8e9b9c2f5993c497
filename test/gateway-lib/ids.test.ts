import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { describe, it } from 'node:test';

import { agentSocketPath, ChannelIds, newConnectionId, proxyIdFromHostname } from '../../src/common/ids.js';

describe('proxyIdFromHostname', () => {
  it('takes a Deployment pod hash', () => {
    assert.equal(proxyIdFromHostname('ssh-proxy-7d9c8b6f5-x7k2p'), 'x7k2p');
    assert.equal(proxyIdFromHostname('a-b-12345'), '12345');
  });

  it('falls back to local', () => {
    for (const h of [
      'myhost',
      'ssh-x7k2p', // two segments
      'ssh-proxy-7d9c8b6f5-x7k2',
      'ssh-proxy-7d9c8b6f5-x7k2pq',
      'ssh-proxy-7d9c8b6f5-X7K2P',
      'ssh-proxy-7d9c8b6f5-x7_2p',
      'ssh-proxy-',
      '',
    ]) {
      assert.equal(proxyIdFromHostname(h), 'local', h);
    }
  });
});

describe('newConnectionId', () => {
  it('100 000 ids match the format and are unique', () => {
    const re = /^x7k2p-42-[a-z2-7]{26}$/;
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) {
      const id = newConnectionId('x7k2p', 42);
      assert.ok(re.test(id), id);
      seen.add(id);
    }
    assert.equal(seen.size, 100_000);
  });

  it('uses every base32 character and all 130 bits vary', () => {
    const chars = new Set<string>();
    const lastSeen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const rnd = newConnectionId('p', 1).slice(4);
      for (const c of rnd) chars.add(c);
      lastSeen.add(rnd.at(-1) ?? '');
    }
    assert.equal(chars.size, 32);
    // The 26th character carries the last 5 of the 130 bits: all 32 values occur.
    assert.equal(lastSeen.size, 32);
  });

  it('defaults to this host and process', () => {
    const id = newConnectionId();
    assert.ok(id.startsWith(`${proxyIdFromHostname(hostname())}-${process.pid}-`), id);
  });
});

describe('ChannelIds', () => {
  it('counts from 1 with no separator, across prefixes', () => {
    const ids = new ChannelIds('x7k2p-42-mfrggzdfmztwq2lknnwg23tpob');
    assert.equal(ids.next('sh'), 'sh-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob1');
    assert.equal(ids.next('ex'), 'ex-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob2');
    assert.equal(ids.next('ux'), 'ux-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob3');
    assert.equal(
      agentSocketPath('ux-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob3'),
      '/var/run/ssh-agent-ux-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob3.sock',
    );
    for (let i = 4; i <= 12; i++) ids.next('pf');
    assert.equal(ids.next('sf'), 'sf-x7k2p-42-mfrggzdfmztwq2lknnwg23tpob13');
  });
});
