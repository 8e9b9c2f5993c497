// fast-check properties of the PROXY protocol parser. The unit test runs them briefly; a fuzz run
// (e.g. `npm run fuzz`) calls runProxyProperties with a large `numRuns`. Pure-parser properties are
// cheap; the socket properties open one loopback connection per run, so they scale separately.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  canonicalIp,
  encodeProxyV1,
  encodeProxyV2,
  parseProxyHeader,
  TrustedSources,
  V1_SIGNATURE,
  V2_SIGNATURE,
  type EncodeAddresses,
  type PeerAddress,
} from '../../src/gateway/proxy-protocol.js';
import type { ProxyLoopback } from './proxy-harness.js';

const port = fc.integer({ min: 0, max: 65535 });

const v4: fc.Arbitrary<PeerAddress> = fc
  .tuple(fc.ipV4(), port)
  .map(([ip, p]) => ({ ip: canonicalIp(ip, 'IPv4') ?? ip, port: p, family: 'IPv4' }));
const v6: fc.Arbitrary<PeerAddress> = fc
  .tuple(fc.ipV6(), port)
  .map(([ip, p]) => ({ ip: canonicalIp(ip, 'IPv6') ?? ip, port: p, family: 'IPv6' }));

export const addressPair: fc.Arbitrary<EncodeAddresses> = fc.oneof(
  fc.tuple(v4, v4).map(([source, destination]) => ({ source, destination })),
  fc.tuple(v6, v6).map(([source, destination]) => ({ source, destination })),
);

const bytes = (maxLength: number, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength, maxLength }).map((a) => Buffer.from(a));

const tlv = fc.record({ type: fc.integer({ min: 0, max: 255 }), value: bytes(200) });

/** An SSH identification line followed by some binary, the usual stream behind a header. */
const sshPayload = fc
  .tuple(fc.stringMatching(/^[A-Za-z0-9_.-]{1,40}$/), bytes(300))
  .map(([v, tail]) => Buffer.concat([Buffer.from(`SSH-2.0-${v}\r\n`), tail]));

/** Byte strings that start with part of a signature now and then, so the sniffing paths get exercised. */
export const garbage: fc.Arbitrary<Buffer> = fc.oneof(
  bytes(400),
  fc
    .tuple(fc.integer({ min: 1, max: 6 }), bytes(200))
    .map(([n, t]) => Buffer.concat([V1_SIGNATURE.subarray(0, n), t])),
  fc
    .tuple(fc.integer({ min: 1, max: 12 }), bytes(200))
    .map(([n, t]) => Buffer.concat([V2_SIGNATURE.subarray(0, n), t])),
);

/** Cuts `b` at sorted random offsets. */
function pieces(b: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out.filter((p) => p.length > 0);
}

const cuts = fc.array(fc.nat(2000), { maxLength: 8 });

export interface Property {
  name: string;
  /** Needs a loopback server (socket-level). */
  socket: boolean;
  run(numRuns: number, loop?: ProxyLoopback): Promise<void>;
}

export const proxyProperties: Property[] = [
  {
    name: 'v1: parse(encode(x) ++ payload) = x, consuming exactly the header',
    socket: false,
    run: async (numRuns) =>
      fc.assert(
        fc.property(addressPair, bytes(200), (addrs, payload) => {
          const h = encodeProxyV1(addrs);
          const step = parseProxyHeader(Buffer.concat([h, payload]));
          assert.equal(step.state, 'done');
          if (step.state !== 'done') return;
          assert.equal(step.consumed, h.length);
          assert.deepEqual(step.header.addresses, addrs);
          assert.equal(step.header.version, 1);
        }),
        { numRuns },
      ),
  },
  {
    name: 'v2: parse(encode(x, tlvs) ++ payload) = x, consuming exactly the header',
    socket: false,
    run: async (numRuns) =>
      fc.assert(
        fc.property(addressPair, fc.array(tlv, { maxLength: 6 }), bytes(200), (addrs, tlvs, payload) => {
          const h = encodeProxyV2(addrs, { tlvs });
          const step = parseProxyHeader(Buffer.concat([h, payload]));
          assert.equal(step.state, 'done');
          if (step.state !== 'done') return;
          assert.equal(step.consumed, h.length);
          assert.deepEqual(step.header.addresses, addrs);
          assert.deepEqual(
            step.header.tlvs,
            tlvs.map((t) => ({ type: t.type, length: t.value.length })),
          );
        }),
        { numRuns },
      ),
  },
  {
    name: 'every strict prefix of a valid header asks for more bytes',
    socket: false,
    run: async (numRuns) =>
      fc.assert(
        fc.property(addressPair, fc.boolean(), fc.nat(), (addrs, useV2, cut) => {
          const h = useV2 ? encodeProxyV2(addrs) : encodeProxyV1(addrs);
          const prefix = h.subarray(0, cut % h.length);
          assert.equal(parseProxyHeader(prefix).state, 'need-more');
        }),
        { numRuns },
      ),
  },
  {
    name: 'random and mutated input never throws and never claims more bytes than it has',
    socket: false,
    run: async (numRuns) =>
      fc.assert(
        fc.property(
          fc.oneof(
            garbage,
            fc
              .tuple(
                addressPair,
                fc.boolean(),
                fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
                  minLength: 1,
                  maxLength: 4,
                }),
              )
              .map(([addrs, useV2, muts]) => {
                const h = Buffer.from(useV2 ? encodeProxyV2(addrs) : encodeProxyV1(addrs));
                for (const [i, b] of muts) h[i % h.length] = b;
                return h;
              }),
          ),
          (input) => {
            const step = parseProxyHeader(input);
            if (step.state === 'done') {
              assert.ok(step.consumed > 0 && step.consumed <= input.length);
              assert.ok(step.consumed <= 16 + 4096);
            }
            if (step.state === 'need-more') assert.ok(input.length < 16 + 4096);
          },
        ),
        { numRuns },
      ),
  },
  {
    name: 'TrustedSources: a /0 trusts everything of its family, a host entry trusts only that host',
    socket: false,
    run: async (numRuns) =>
      fc.assert(
        fc.property(fc.ipV4(), fc.ipV4(), (a, b) => {
          const host = new TrustedSources([a]);
          assert.equal(host.trusts(a), true);
          assert.equal(host.trusts(`::ffff:${a}`), true);
          assert.equal(host.trusts(b), a === b);
          assert.equal(new TrustedSources(['0.0.0.0/0']).trusts(b), true);
        }),
        { numRuns },
      ),
  },
  {
    name: 'socket: a header plus SSH bytes in any split gives the source and every payload byte',
    socket: true,
    run: async (numRuns, loop) => {
      assert.ok(loop);
      loop.options = { timeoutMs: 10_000 };
      await fc.assert(
        fc.asyncProperty(addressPair, fc.boolean(), sshPayload, cuts, async (addrs, useV2, payload, cs) => {
          const h = useV2 ? encodeProxyV2(addrs) : encodeProxyV1(addrs);
          const served = await loop.send(pieces(Buffer.concat([h, payload]), cs), { split: true });
          assert.equal(served.outcome.ok && served.outcome.kind, 'proxied');
          if (served.outcome.ok) assert.deepEqual(served.outcome.remote, addrs.source);
          assert.equal(served.socket.remoteAddress, addrs.source.ip);
          assert.deepEqual(served.rest, payload);
        }),
        { numRuns },
      );
    },
  },
  {
    name: 'socket: garbage in any split settles, and a non-PROXY stream loses no byte',
    socket: true,
    run: async (numRuns, loop) => {
      assert.ok(loop);
      // Short deadline: garbage that looks like the start of a header waits for it.
      loop.options = { timeoutMs: 300 };
      await fc.assert(
        fc.asyncProperty(garbage, cuts, fc.boolean(), async (input, cs, end) => {
          const served = await loop.send(pieces(input, cs), { split: true, end });
          const o = served.outcome;
          if (o.ok && o.kind === 'direct') assert.deepEqual(served.rest, input);
          else if (o.ok) {
            const step = parseProxyHeader(input);
            assert.equal(step.state, 'done');
            if (step.state === 'done') assert.deepEqual(served.rest, input.subarray(step.consumed));
          } else {
            assert.ok(['timeout', 'malformed', 'too-large', 'truncated', 'closed'].includes(o.reason));
            assert.equal(served.socket.destroyed, true);
          }
        }),
        { numRuns },
      );
    },
  },
];

/** Runs every property; socket properties need `loop`. */
export async function runProxyProperties(
  numRuns: { pure: number; socket: number },
  loop: ProxyLoopback,
): Promise<void> {
  for (const p of proxyProperties) await p.run(p.socket ? numRuns.socket : numRuns.pure, loop);
}
