import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import {
  DEFAULT_V2_MAX_LENGTH,
  encodeProxyV1,
  encodeProxyV2,
  parseProxyHeader,
  TrustedSources,
  V1_MAX_LENGTH,
  type EncodeAddresses,
  type ParseStep,
} from '../../src/gateway/proxy-protocol.js';
import { ProxyLoopback } from './proxy-harness.js';
import { proxyProperties } from './proxy-protocol.props.js';

const A4: EncodeAddresses = {
  source: { ip: '203.0.113.7', port: 51234, family: 'IPv4' },
  destination: { ip: '10.0.0.5', port: 22, family: 'IPv4' },
};
const A6: EncodeAddresses = {
  source: { ip: '2001:db8::7', port: 40000, family: 'IPv6' },
  destination: { ip: 'fd00::1', port: 2222, family: 'IPv6' },
};
const SSH = Buffer.from('SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n');

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function done(step: ParseStep): Extract<ParseStep, { state: 'done' }> {
  assert.equal(step.state, 'done', JSON.stringify(step));
  return step as Extract<ParseStep, { state: 'done' }>;
}

function err(step: ParseStep, code: string, re: RegExp): void {
  assert.equal(step.state, 'error', JSON.stringify(step));
  if (step.state !== 'error') return;
  assert.equal(step.code, code);
  assert.match(step.message, re);
}

/** A v2 header with arbitrary preamble bytes 12..15 and body. */
function rawV2(verCmd: number, fam: number, body: Buffer, len = body.length): Buffer {
  const h = Buffer.alloc(16);
  encodeProxyV2(undefined).copy(h, 0, 0, 12);
  h[12] = verCmd;
  h[13] = fam;
  h.writeUInt16BE(len, 14);
  return Buffer.concat([h, body]);
}

describe('parseProxyHeader v1', () => {
  it('TCP4 and TCP6 with the SSH line behind: addresses, and exactly the header consumed', () => {
    const h4 = encodeProxyV1(A4);
    assert.equal(h4.toString(), 'PROXY TCP4 203.0.113.7 10.0.0.5 51234 22\r\n');
    const s4 = done(parseProxyHeader(Buffer.concat([h4, SSH])));
    assert.equal(s4.consumed, h4.length);
    assert.deepEqual(s4.header.addresses, A4);
    const s6 = done(parseProxyHeader(Buffer.concat([encodeProxyV1(A6), SSH])));
    assert.deepEqual(s6.header.addresses, A6);
  });

  it('IPv6 addresses are canonicalised (RFC 5952), as Node reports socket addresses', () => {
    const s = done(parseProxyHeader(b('PROXY TCP6 2001:0DB8:0:0:0:0:0:07 ::FFFF:10.0.0.1 1 2\r\n')));
    assert.equal(s.header.addresses?.source.ip, '2001:db8::7');
    assert.equal(s.header.addresses?.destination.ip, '::ffff:10.0.0.1');
  });

  it('UNKNOWN: use the socket address, whatever follows on the line', () => {
    for (const line of [
      'PROXY UNKNOWN\r\n',
      'PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n',
    ]) {
      const s = done(parseProxyHeader(Buffer.concat([b(line), SSH])));
      assert.equal(s.consumed, line.length);
      assert.equal(s.header.addresses, undefined);
      assert.equal(s.header.localReason, 'unknown');
    }
  });

  it('the longest legal line (107 bytes with CRLF) is accepted; one more byte without CRLF is not', () => {
    const ip = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const line = `PROXY UNKNOWN ${ip} ${ip} 65535 65535\r\n`;
    assert.equal(line.length, V1_MAX_LENGTH);
    assert.equal(done(parseProxyHeader(b(line))).consumed, 107);
    const tcp6 = `PROXY TCP6 ${ip} ${ip} 65535 65535\r\n`;
    assert.equal(done(parseProxyHeader(b(tcp6))).header.addresses?.source.port, 65535);
    assert.equal(parseProxyHeader(b('PROXY UNKNOWN ' + 'x'.repeat(V1_MAX_LENGTH - 15))).state, 'need-more');
    err(parseProxyHeader(b('PROXY UNKNOWN ' + 'x'.repeat(V1_MAX_LENGTH))), 'malformed', /no CRLF within 107/);
  });

  const bad: [string, RegExp][] = [
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', /CRLF/],
    ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', /unknown protocol "TCP5"/],
    ['PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n', /unknown protocol ""/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /5 fields/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', /7 fields/],
    ['PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', /7 fields/],
    ['PROXY TCP4 ::1 5.6.7.8 1 2\r\n', /invalid IPv4 address/],
    ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /invalid IPv6 address/],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /invalid IPv6 address/],
    ['PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n', /invalid IPv4 address/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', /invalid port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 022 2\r\n', /invalid port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', /invalid port/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n', /invalid port/],
    ['PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n', /non-printable/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n', /non-printable/],
    ['PROXY \r\n', /unknown protocol ""/],
  ];
  for (const [line, re] of bad) {
    it(`rejects ${JSON.stringify(line)}`, () => err(parseProxyHeader(b(line)), 'malformed', re));
  }
});

describe('parseProxyHeader v2', () => {
  it('TCP4 and TCP6 with TLVs and the SSH line behind', () => {
    const tlvs = [
      { type: 0x01, value: b('h2') },
      { type: 0x20, value: Buffer.alloc(40, 1) },
      { type: 0x04, value: Buffer.alloc(0) },
    ];
    for (const addrs of [A4, A6]) {
      const h = encodeProxyV2(addrs, { tlvs });
      const s = done(parseProxyHeader(Buffer.concat([h, SSH])));
      assert.equal(s.consumed, h.length);
      assert.deepEqual(s.header.addresses, addrs);
      assert.deepEqual(s.header.tlvs, [
        { type: 1, length: 2 },
        { type: 0x20, length: 40 },
        { type: 4, length: 0 },
      ]);
    }
  });

  it('LOCAL, UNSPEC and UNIX mean "use the socket address"; LOCAL skips whatever body it has', () => {
    const local = done(parseProxyHeader(encodeProxyV2(A4, { local: true })));
    assert.equal(local.header.addresses, undefined);
    assert.equal(local.header.localReason, 'local-command');
    assert.equal(local.consumed, 16 + 12);
    const unspec = done(parseProxyHeader(encodeProxyV2(undefined, { tlvs: [{ type: 5, value: b('id') }] })));
    assert.equal(unspec.header.localReason, 'unspec');
    const unix = done(parseProxyHeader(rawV2(0x21, 0x31, Buffer.alloc(216))));
    assert.equal(unix.header.localReason, 'unix');
    assert.equal(unix.consumed, 16 + 216);
  });

  it('the length cap (4 KiB by default, configurable) and a header exactly at it', () => {
    const atCap = encodeProxyV2(A4, {
      tlvs: [{ type: 0xe0, value: Buffer.alloc(DEFAULT_V2_MAX_LENGTH - 12 - 3) }],
    });
    assert.equal(atCap.length, 16 + DEFAULT_V2_MAX_LENGTH);
    done(parseProxyHeader(atCap));
    err(
      parseProxyHeader(rawV2(0x21, 0x11, Buffer.alloc(0), DEFAULT_V2_MAX_LENGTH + 1)),
      'too-large',
      /4097 exceeds the limit of 4096/,
    );
    err(parseProxyHeader(atCap, { maxV2Length: 100 }), 'too-large', /limit of 100/);
    // The cap is decided from the preamble alone: no need to wait for 4 KiB.
    err(parseProxyHeader(rawV2(0x21, 0x11, Buffer.alloc(0), 65535)), 'too-large', /65535/);
  });

  const body12 = Buffer.alloc(12);
  const cases: [string, Buffer, RegExp][] = [
    ['version 1', rawV2(0x11, 0x11, body12), /version 1 \(want 2\)/],
    ['version 3', rawV2(0x31, 0x11, body12), /version 3/],
    ['command 2', rawV2(0x22, 0x11, body12), /unknown command 2/],
    ['family 0x41', rawV2(0x21, 0x41, body12), /family\/transport 0x41/],
    ['transport 3', rawV2(0x21, 0x13, body12), /0x13/],
    ['UDP over IPv4', rawV2(0x21, 0x12, body12), /datagram/],
    ['UDP over IPv6', rawV2(0x21, 0x22, Buffer.alloc(36)), /datagram/],
    ['TCP4 with a short address block', rawV2(0x21, 0x11, Buffer.alloc(11)), /needs 12 bytes, header has 11/],
    ['TCP6 with a short address block', rawV2(0x21, 0x21, Buffer.alloc(12)), /needs 36 bytes/],
    ['UNIX with a short address block', rawV2(0x21, 0x31, Buffer.alloc(100)), /needs 216 bytes/],
    ['a TLV header cut short', rawV2(0x21, 0x11, Buffer.concat([body12, Buffer.from([1, 0])])), /truncated/],
    [
      'a TLV overrunning the header',
      rawV2(0x21, 0x11, Buffer.concat([body12, Buffer.from([1, 0, 5, 1, 2])])),
      /overruns/,
    ],
  ];
  for (const [name, input, re] of cases) {
    it(`rejects ${name}`, () => err(parseProxyHeader(input), 'malformed', re));
  }
  it('LOCAL with any family byte in the known set is accepted without looking at the body', () => {
    done(parseProxyHeader(rawV2(0x20, 0x12, Buffer.alloc(3))));
  });
});

describe('parseProxyHeader sniffing', () => {
  it('not a PROXY stream as soon as the bytes leave both signatures', () => {
    for (const s of ['S', 'SSH-2.0-x\r\n', 'PROXZ', 'P ', '\r\n\r\nX', '\r\r', '\n']) {
      assert.equal(parseProxyHeader(b(s)).state, 'not-proxy', s);
    }
  });
  it('prefixes of a signature wait for more', () => {
    for (const s of [
      '',
      'P',
      'PROXY',
      'PROXY ',
      'PROXY TCP4 1.2.3.4',
      '\r',
      '\r\n\r\n\x00\r\nQUIT',
      '\r\n\r\n\x00\r\nQUIT\n!',
    ]) {
      assert.equal(parseProxyHeader(b(s)).state, 'need-more', JSON.stringify(s));
    }
  });
});

describe('TrustedSources', () => {
  it('empty list trusts every source (the reference)', () => {
    const t = new TrustedSources([]);
    assert.equal(t.trusts('198.51.100.1'), true);
    assert.equal(t.trusts('::1'), true);
  });
  it('IPv4 and IPv6 ranges, host entries, IPv4-mapped peers of a dual-stack listener', () => {
    const t = new TrustedSources(['10.0.0.0/8', '192.0.2.7', 'fd00::/8']);
    assert.equal(t.trusts('10.200.3.4'), true);
    assert.equal(t.trusts('::ffff:10.200.3.4'), true);
    assert.equal(t.trusts('11.0.0.1'), false);
    assert.equal(t.trusts('192.0.2.7'), true);
    assert.equal(t.trusts('192.0.2.8'), false);
    assert.equal(t.trusts('fd12::1'), true);
    assert.equal(t.trusts('fe80::1'), false);
    assert.equal(t.trusts(undefined), false);
    assert.equal(t.trusts('not-an-ip'), false);
  });
});

describe('readProxyHeader over loopback sockets', () => {
  let loop: ProxyLoopback;
  const logged: { msg: string; reason?: string }[] = [];
  const log = pino(
    { base: {} },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logged.push(JSON.parse(chunk.toString()) as { msg: string });
        cb();
      },
    }),
  );
  before(async () => {
    loop = await ProxyLoopback.start();
  });
  after(() => loop.close());
  const opts = (extra: Partial<ProxyLoopback['options']> = {}): ProxyLoopback['options'] => ({
    timeoutMs: 10_000,
    log,
    ...extra,
  });

  for (const [name, header] of [
    ['v1', encodeProxyV1(A4)],
    ['v2', encodeProxyV2(A6, { tlvs: [{ type: 0x05, value: Buffer.alloc(64, 7) }] })],
  ] as const) {
    for (const split of [false, true]) {
      it(`${name}: header and SSH line ${split ? 'byte by byte' : 'in one packet'}: real source, every byte after it`, async () => {
        loop.options = opts();
        const all = Buffer.concat([header, SSH, Buffer.from([0, 1, 2, 255])]);
        const pieces = split ? [...all].map((x) => Buffer.from([x])) : [all];
        const r = await loop.send(pieces, { split });
        assert.ok(r.outcome.ok && r.outcome.kind === 'proxied', JSON.stringify(r.outcome));
        const want = name === 'v1' ? A4.source : A6.source;
        assert.deepEqual(r.outcome.remote, want);
        assert.equal(r.outcome.version, name === 'v1' ? 1 : 2);
        assert.equal(r.socket.remoteAddress, want.ip);
        assert.equal(r.socket.remotePort, want.port);
        assert.equal(r.socket.remoteFamily, want.family);
        assert.deepEqual(r.rest, all.subarray(header.length));
      });
    }
  }

  it('no header: served with the socket address, nothing lost, warning logged', async () => {
    loop.options = opts();
    logged.length = 0;
    const r = await loop.send([SSH, Buffer.alloc(5000, 9)]);
    assert.ok(r.outcome.ok && r.outcome.kind === 'direct' && r.outcome.why === 'no-header');
    assert.equal(r.outcome.remote.ip, '127.0.0.1');
    assert.deepEqual(r.rest, Buffer.concat([SSH, Buffer.alloc(5000, 9)]));
    assert.ok(logged.some((l) => l.msg === 'no PROXY protocol header found'));
  });

  it('a stream that starts like "PROXY" but diverges, byte by byte: served as is, nothing lost', async () => {
    loop.options = opts();
    const input = b('PROXIMITY alert\r\n');
    const r = await loop.send(
      [...input].map((x) => Buffer.from([x])),
      { split: true },
    );
    assert.ok(r.outcome.ok && r.outcome.kind === 'direct');
    assert.deepEqual(r.rest, input);
  });

  it('LOCAL and UNKNOWN headers: socket address, header consumed', async () => {
    loop.options = opts();
    for (const h of [
      encodeProxyV2(A4, { local: true }),
      encodeProxyV1(undefined),
      encodeProxyV2(undefined),
    ]) {
      const r = await loop.send([Buffer.concat([h, SSH])]);
      assert.ok(r.outcome.ok && r.outcome.kind === 'local', JSON.stringify(r.outcome));
      assert.equal(r.outcome.remote.ip, '127.0.0.1');
      assert.equal(r.socket.remoteAddress, '127.0.0.1');
      assert.deepEqual(r.rest, SSH);
    }
  });

  it('untrusted source: plain SSH with the socket address, its bytes untouched even if they look like a header', async () => {
    loop.options = opts({ trusted: new TrustedSources(['10.0.0.0/8', '::1']) });
    const input = Buffer.concat([encodeProxyV1(A4), SSH]);
    const r = await loop.send([input]);
    assert.ok(r.outcome.ok && r.outcome.kind === 'direct' && r.outcome.why === 'untrusted');
    assert.equal(r.outcome.remote.ip, '127.0.0.1');
    assert.deepEqual(r.rest, input);
  });

  it('trusted source (CIDR match on the socket peer): header parsed', async () => {
    loop.options = opts({ trusted: new TrustedSources(['127.0.0.0/8']) });
    const r = await loop.send([Buffer.concat([encodeProxyV1(A4), SSH])], { localAddress: '127.0.0.2' });
    assert.ok(r.outcome.ok && r.outcome.kind === 'proxied');
    assert.deepEqual(r.outcome.remote, A4.source);
  });

  it('malformed header: closed, reason logged', async () => {
    loop.options = opts();
    logged.length = 0;
    const r = await loop.send([b('PROXY TCP4 1.2.3.4 5.6.7.8 99999 22\r\nSSH-2.0-x\r\n')]);
    assert.ok(!r.outcome.ok && r.outcome.reason === 'malformed');
    assert.equal(r.socket.destroyed, true);
    assert.ok(
      logged.some((l) => /invalid PROXY protocol header, closing connection: .*invalid port/.test(l.msg)),
    );
  });

  it('oversized v2 header: closed without waiting for its body', async () => {
    loop.options = opts();
    const r = await loop.send([rawV2(0x21, 0x11, Buffer.alloc(0), 60000)], { end: false });
    assert.ok(!r.outcome.ok && r.outcome.reason === 'too-large');
  });

  it('truncated header (stream ends inside it): closed', async () => {
    loop.options = opts();
    const h = encodeProxyV2(A4);
    const r = await loop.send([h.subarray(0, h.length - 1)]);
    assert.ok(!r.outcome.ok && r.outcome.reason === 'truncated', JSON.stringify(r.outcome));
  });

  it('connection closed before any byte: the reference warning', async () => {
    loop.options = opts();
    logged.length = 0;
    const r = await loop.send([]);
    assert.ok(!r.outcome.ok && r.outcome.reason === 'closed');
    assert.ok(logged.some((l) => l.msg === 'connection closed before reading PROXY protocol header'));
  });

  it('incomplete header within the deadline: closed with reason timeout; a silent client too', async () => {
    loop.options = opts({ timeoutMs: 200 });
    const partial = await loop.send([b('PROXY TCP4 1.2.3.4 ')], { end: false });
    assert.ok(!partial.outcome.ok && partial.outcome.reason === 'timeout');
    assert.match(partial.outcome.message, /incomplete PROXY protocol header after 200 ms/);
    const silent = await loop.send([], { end: false });
    assert.ok(!silent.outcome.ok && silent.outcome.reason === 'timeout');
    assert.match(silent.outcome.message, /no data within 200 ms/);
  });

  it('IPv6 loopback peer', async () => {
    const loop6 = await ProxyLoopback.start('::1');
    try {
      loop6.options = opts({ trusted: new TrustedSources(['::1/128']) });
      const r = await loop6.send([Buffer.concat([encodeProxyV1(A4), SSH])]);
      assert.ok(r.outcome.ok && r.outcome.kind === 'proxied');
      assert.equal(r.socket.remoteFamily, 'IPv4');
      loop6.options = opts({ trusted: new TrustedSources(['10.0.0.0/8']) });
      const u = await loop6.send([SSH]);
      assert.ok(u.outcome.ok && u.outcome.kind === 'direct' && u.outcome.remote.family === 'IPv6');
    } finally {
      await loop6.close();
    }
  });
});

// Short runs here; `runProxyProperties` with large counts is the fuzz variant. PROXY_FUZZ_RUNS
// raises the counts for a local soak.
const fuzz = Number(process.env.PROXY_FUZZ_RUNS ?? 0);
describe('PROXY protocol properties (fast-check)', () => {
  let loop: ProxyLoopback;
  before(async () => {
    loop = await ProxyLoopback.start();
  });
  after(() => loop.close());
  for (const p of proxyProperties) {
    it(p.name, async () => {
      await p.run(fuzz || (p.socket ? 25 : 300), loop);
    });
  }
});
