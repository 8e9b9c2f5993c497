// PROXY protocol v1 (text) and v2 (binary) in front of SSH (reference-behaviour.md §5, our §23.c).
//
// Our own parser (node-notes §8.2): the npm ones either ignore the v2 length field (and so swallow the
// SSH bytes behind the header) or do not say how many bytes they consumed. Two layers:
//   parseProxyHeader(buf)  pure, incremental: "need more" / "not a PROXY stream" / error / header+consumed
//   readProxyHeader(sock)  reads from a socket with a deadline, applies the trust list, puts every byte
//                          after the header back (unshift) and overrides the socket's peer address.
// encodeProxyV1/V2 write headers (tests, fuzzing, and any local sender).
import net from 'node:net';
import type { Logger } from '../ops/log.js';

export type AddressFamily = 'IPv4' | 'IPv6';

export interface PeerAddress {
  readonly ip: string;
  readonly port: number;
  readonly family: AddressFamily;
}

/** A decoded header. `addresses` is absent when the receiver must use the socket's own addresses. */
export interface ProxyHeader {
  readonly version: 1 | 2;
  /** v1: TCP4/TCP6 carry addresses, UNKNOWN does not. v2: PROXY with INET/INET6 carries addresses. */
  readonly addresses: { readonly source: PeerAddress; readonly destination: PeerAddress } | undefined;
  /** Why no addresses were taken (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX); for logs. */
  readonly localReason?: 'unknown' | 'local-command' | 'unspec' | 'unix';
  /** v2 TLVs as (type, length); values are skipped, never interpreted. */
  readonly tlvs: readonly { readonly type: number; readonly length: number }[];
}

export type ParseErrorCode = 'malformed' | 'too-large';

export type ParseStep =
  | { readonly state: 'need-more' }
  /** The bytes cannot start either signature: a plain SSH (or other) stream. */
  | { readonly state: 'not-proxy' }
  | { readonly state: 'error'; readonly code: ParseErrorCode; readonly message: string }
  | { readonly state: 'done'; readonly header: ProxyHeader; readonly consumed: number };

/** `PROXY ` */
export const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
/** `\r\n\r\n\0\r\nQUIT\n` */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** v1 line limit from the specification, CRLF included. */
export const V1_MAX_LENGTH = 107;
/**
 * Our cap on the v2 variable part. The format allows 65 535 bytes, but real senders stay far below
 * 1 KiB (36 bytes of IPv6 addresses plus ALPN, authority, unique id ≤ 128, SSL and cloud TLVs), and
 * every pre-authentication socket may hold this much: 4 KiB keeps the memory an unauthenticated peer
 * can pin small while leaving ample room for TLVs.
 */
export const DEFAULT_V2_MAX_LENGTH = 4096;

const V2_FIXED = 16;

export interface ParseOptions {
  /** Cap on the v2 length field (bytes after the 16-byte preamble); default 4096. */
  maxV2Length?: number;
}

function error(code: ParseErrorCode, message: string): ParseStep {
  return { state: 'error', code, message };
}

/** True while `buf` is still a prefix of `sig` (or starts with all of it). */
function matchesPrefix(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.subarray(0, n).equals(sig.subarray(0, n));
}

/**
 * Parses the start of a stream. Pure and total: never throws, whatever `buf` holds. Call again with a
 * longer buffer after 'need-more'. 'not-proxy' is decided as soon as the bytes diverge from both
 * signatures, so a plain SSH stream (`SSH-2.0-…`) is recognised from its first byte.
 */
export function parseProxyHeader(buf: Buffer, opts: ParseOptions = {}): ParseStep {
  if (buf.length === 0) return { state: 'need-more' };
  const v1 = matchesPrefix(buf, V1_SIGNATURE);
  const v2 = matchesPrefix(buf, V2_SIGNATURE);
  if (!v1 && !v2) return { state: 'not-proxy' };
  if (v1) return buf.length < V1_SIGNATURE.length ? { state: 'need-more' } : parseV1(buf);
  return buf.length < V2_SIGNATURE.length ? { state: 'need-more' } : parseV2(buf, opts);
}

// --- v1 ---

const PORT_RE = /^(0|[1-9]\d{0,4})$/;

function parsePort(s: string): number | undefined {
  if (!PORT_RE.test(s)) return undefined;
  const n = Number(s);
  return n <= 65535 ? n : undefined;
}

/** Canonical text of an address of the given family (RFC 5952 for IPv6), or undefined if invalid. */
export function canonicalIp(s: string, family: AddressFamily): string | undefined {
  if (s.includes('%')) return undefined; // zone ids have no meaning across hosts
  if (net.isIP(s) !== (family === 'IPv4' ? 4 : 6)) return undefined;
  try {
    return new net.SocketAddress({ address: s, family: family === 'IPv4' ? 'ipv4' : 'ipv6' }).address;
  } catch {
    return undefined;
  }
}

function parseV1(buf: Buffer): ParseStep {
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  const lf = buf.subarray(0, limit).indexOf(0x0a);
  if (lf < 0) {
    return buf.length >= V1_MAX_LENGTH
      ? error('malformed', `PROXY v1 header has no CRLF within ${V1_MAX_LENGTH} bytes`)
      : { state: 'need-more' };
  }
  if (lf === 0 || buf[lf - 1] !== 0x0d)
    return error('malformed', 'PROXY v1 header line does not end in CRLF');
  const lineBytes = buf.subarray(0, lf - 1);
  // Printable ASCII only: a header is text; anything else is a broken or hostile sender.
  for (const b of lineBytes) {
    if (b < 0x20 || b > 0x7e) return error('malformed', 'PROXY v1 header contains non-printable bytes');
  }
  const consumed = lf + 1;
  const fields = lineBytes.toString('latin1').split(' ');
  const proto = fields[1];
  if (proto === 'UNKNOWN') {
    return {
      state: 'done',
      consumed,
      header: { version: 1, addresses: undefined, localReason: 'unknown', tlvs: [] },
    };
  }
  if (proto !== 'TCP4' && proto !== 'TCP6') {
    return error('malformed', `PROXY v1 header has unknown protocol ${JSON.stringify(proto ?? '')}`);
  }
  if (fields.length !== 6) {
    return error('malformed', `PROXY v1 header has ${fields.length} fields (want 6)`);
  }
  const family: AddressFamily = proto === 'TCP4' ? 'IPv4' : 'IPv6';
  const [, , srcText = '', dstText = '', srcPortText = '', dstPortText = ''] = fields;
  const src = canonicalIp(srcText, family);
  const dst = canonicalIp(dstText, family);
  if (src === undefined || dst === undefined) {
    return error('malformed', `PROXY v1 header has an invalid ${family} address`);
  }
  const srcPort = parsePort(srcPortText);
  const dstPort = parsePort(dstPortText);
  if (srcPort === undefined || dstPort === undefined)
    return error('malformed', 'PROXY v1 header has an invalid port');
  return {
    state: 'done',
    consumed,
    header: {
      version: 1,
      addresses: {
        source: { ip: src, port: srcPort, family },
        destination: { ip: dst, port: dstPort, family },
      },
      tlvs: [],
    },
  };
}

// --- v2 ---

const CMD_LOCAL = 0x0;
const CMD_PROXY = 0x1;
const FAM_UNSPEC = 0x00;
const FAM_TCP4 = 0x11;
const FAM_UDP4 = 0x12;
const FAM_TCP6 = 0x21;
const FAM_UDP6 = 0x22;
const FAM_UNIX_STREAM = 0x31;
const FAM_UNIX_DGRAM = 0x32;
const INET_LEN = 12;
const INET6_LEN = 36;
const UNIX_LEN = 216;

function ipv4FromBytes(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function ipv6FromBytes(b: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(at + 2 * i).toString(16));
  return canonicalIp(groups.join(':'), 'IPv6') ?? groups.join(':');
}

function parseV2(buf: Buffer, opts: ParseOptions): ParseStep {
  if (buf.length < V2_FIXED) return { state: 'need-more' };
  const verCmd = buf[12] ?? 0;
  const famByte = buf[13] ?? 0;
  const len = buf.readUInt16BE(14);
  if (verCmd >> 4 !== 2) return error('malformed', `PROXY v2 header has version ${verCmd >> 4} (want 2)`);
  const cmd = verCmd & 0x0f;
  if (cmd !== CMD_LOCAL && cmd !== CMD_PROXY)
    return error('malformed', `PROXY v2 header has unknown command ${cmd}`);
  const max = opts.maxV2Length ?? DEFAULT_V2_MAX_LENGTH;
  if (len > max) return error('too-large', `PROXY v2 header length ${len} exceeds the limit of ${max} bytes`);
  const known = [FAM_UNSPEC, FAM_TCP4, FAM_UDP4, FAM_TCP6, FAM_UDP6, FAM_UNIX_STREAM, FAM_UNIX_DGRAM];
  if (!known.includes(famByte)) {
    return error(
      'malformed',
      `PROXY v2 header has unknown address family/transport 0x${famByte.toString(16)}`,
    );
  }
  if (buf.length < V2_FIXED + len) return { state: 'need-more' };
  const consumed = V2_FIXED + len;
  const body = buf.subarray(V2_FIXED, consumed);

  // LOCAL (health checks from the balancer itself): addresses, if any, are ignored by specification.
  if (cmd === CMD_LOCAL) {
    return {
      state: 'done',
      consumed,
      header: { version: 2, addresses: undefined, localReason: 'local-command', tlvs: [] },
    };
  }
  if (famByte === FAM_UDP4 || famByte === FAM_UDP6) {
    return error('malformed', 'PROXY v2 header describes a datagram flow on a stream connection');
  }
  const addrLen =
    famByte === FAM_TCP4
      ? INET_LEN
      : famByte === FAM_TCP6
        ? INET6_LEN
        : famByte === FAM_UNSPEC
          ? 0
          : UNIX_LEN;
  if (len < addrLen)
    return error('malformed', `PROXY v2 address block needs ${addrLen} bytes, header has ${len}`);
  const tlvs = parseTlvs(body.subarray(addrLen));
  if (typeof tlvs === 'string') return error('malformed', tlvs);

  if (famByte === FAM_UNSPEC || famByte === FAM_UNIX_STREAM || famByte === FAM_UNIX_DGRAM) {
    const localReason = famByte === FAM_UNSPEC ? 'unspec' : 'unix';
    return { state: 'done', consumed, header: { version: 2, addresses: undefined, localReason, tlvs } };
  }
  const v4 = famByte === FAM_TCP4;
  const family: AddressFamily = v4 ? 'IPv4' : 'IPv6';
  const ipLen = v4 ? 4 : 16;
  const ip = v4 ? ipv4FromBytes : ipv6FromBytes;
  const source = { ip: ip(body, 0), port: body.readUInt16BE(2 * ipLen), family };
  const destination = { ip: ip(body, ipLen), port: body.readUInt16BE(2 * ipLen + 2), family };
  return { state: 'done', consumed, header: { version: 2, addresses: { source, destination }, tlvs } };
}

/** Walks the TLV area; every length is checked against what remains. Returns an error text if broken. */
function parseTlvs(area: Buffer): { type: number; length: number }[] | string {
  const out: { type: number; length: number }[] = [];
  let at = 0;
  while (at < area.length) {
    if (area.length - at < 3) return `PROXY v2 TLV at offset ${at} is truncated`;
    const type = area[at] ?? 0;
    const length = area.readUInt16BE(at + 1);
    if (length > area.length - at - 3) return `PROXY v2 TLV 0x${type.toString(16)} overruns the header`;
    out.push({ type, length });
    at += 3 + length;
  }
  return out;
}

// --- encoding (tests, fuzzing, local senders) ---

export interface EncodeAddresses {
  source: PeerAddress;
  destination: PeerAddress;
}

/** A v1 line; `undefined` addresses give `PROXY UNKNOWN\r\n`. */
export function encodeProxyV1(addresses: EncodeAddresses | undefined): Buffer {
  if (!addresses) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const { source: s, destination: d } = addresses;
  const proto = s.family === 'IPv4' ? 'TCP4' : 'TCP6';
  return Buffer.from(`PROXY ${proto} ${s.ip} ${d.ip} ${s.port} ${d.port}\r\n`, 'latin1');
}

function ipBytes(ip: string, family: AddressFamily): Buffer {
  if (family === 'IPv4') return Buffer.from(ip.split('.').map(Number));
  const sa = canonicalIp(ip, 'IPv6');
  if (sa === undefined) throw new Error(`not an IPv6 address: ${ip}`);
  // Expand `::` and an embedded IPv4 tail, then write 8 groups.
  let text = sa;
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4tail?.[1]) {
    const b = v4tail[1].split('.').map(Number);
    text =
      text.slice(0, -v4tail[1].length) +
      `${(((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16)}:${(((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

export interface EncodeV2Options {
  /** LOCAL command (no addresses used). */
  local?: boolean;
  /** Raw TLVs appended after the addresses. */
  tlvs?: readonly { type: number; value: Buffer }[];
}

/** A v2 header; `undefined` addresses give family UNSPEC. */
export function encodeProxyV2(addresses: EncodeAddresses | undefined, opts: EncodeV2Options = {}): Buffer {
  let fam = FAM_UNSPEC;
  let addr = Buffer.alloc(0);
  if (addresses) {
    const { source: s, destination: d } = addresses;
    fam = s.family === 'IPv4' ? FAM_TCP4 : FAM_TCP6;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(s.port, 0);
    ports.writeUInt16BE(d.port, 2);
    addr = Buffer.concat([ipBytes(s.ip, s.family), ipBytes(d.ip, d.family), ports]);
  }
  const tlvs = (opts.tlvs ?? []).map(({ type, value }) => {
    const h = Buffer.alloc(3);
    h[0] = type;
    h.writeUInt16BE(value.length, 1);
    return Buffer.concat([h, value]);
  });
  const rest = Buffer.concat([addr, ...tlvs]);
  const head = Buffer.alloc(V2_FIXED);
  V2_SIGNATURE.copy(head);
  head[12] = 0x20 | (opts.local ? CMD_LOCAL : CMD_PROXY);
  head[13] = fam;
  head.writeUInt16BE(rest.length, 14);
  return Buffer.concat([head, rest]);
}

// --- trust ---

/** Which peers may send a header. Empty list = everyone (the reference's behaviour). */
export class TrustedSources {
  private readonly list: net.BlockList | undefined;

  /** `cidrs` are validated by the config schema; an entry without a prefix is a single host. */
  constructor(cidrs: readonly string[]) {
    if (cidrs.length === 0) return;
    this.list = new net.BlockList();
    for (const c of cidrs) {
      const [addr = '', bits] = c.split('/');
      const v6 = net.isIP(addr) === 6;
      const prefix = bits === undefined ? (v6 ? 128 : 32) : Number(bits);
      this.list.addSubnet(addr, prefix, v6 ? 'ipv6' : 'ipv4');
    }
  }

  /** IPv4-mapped IPv6 peers (a dual-stack listener) match IPv4 ranges. */
  trusts(ip: string | undefined): boolean {
    if (!this.list) return true;
    if (!ip) return false;
    const family = net.isIP(ip);
    if (family === 0) return false;
    return this.list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  }
}

// --- reading from a socket ---

export type ProxyOutcome =
  /** A header with addresses: the socket's peer address now reports `remote`. */
  | {
      readonly ok: true;
      readonly kind: 'proxied';
      readonly version: 1 | 2;
      readonly remote: PeerAddress;
      readonly header: ProxyHeader;
    }
  /** A valid header that says "use the socket address" (v1 UNKNOWN, v2 LOCAL/UNSPEC/UNIX). */
  | {
      readonly ok: true;
      readonly kind: 'local';
      readonly version: 1 | 2;
      readonly remote: PeerAddress;
      readonly header: ProxyHeader;
    }
  /** No header was read: the source is not trusted, or the stream does not start with a signature. */
  | {
      readonly ok: true;
      readonly kind: 'direct';
      readonly why: 'untrusted' | 'no-header';
      readonly remote: PeerAddress;
    }
  /** The socket has been destroyed; `reason` is a metric-friendly label, `message` is for the log. */
  | { readonly ok: false; readonly reason: ProxyRejectReason; readonly message: string };

export type ProxyRejectReason = 'timeout' | 'malformed' | 'too-large' | 'truncated' | 'closed';

export interface ReadProxyOptions {
  /** Deadline for the complete header, from the call (config `server.proxyProtocolTimeout` × 1000). */
  timeoutMs: number;
  /** Sources allowed to send a header (config `server.proxyProtocolTrustedCIDRs`). */
  trusted: TrustedSources;
  /** The connection's logger (carries `conn`); warnings and the closing reason are logged here. */
  log?: Logger;
  maxV2Length?: number;
}

function socketPeer(socket: net.Socket): PeerAddress | undefined {
  const ip = socket.remoteAddress;
  const port = socket.remotePort;
  if (ip === undefined || port === undefined) return undefined;
  return { ip, port, family: socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' };
}

/**
 * Makes `remoteAddress`, `remotePort` and `remoteFamily` report the proxied client, so ssh2's
 * `info.ip` and everything that logs the socket's peer sees the real client.
 */
export function overrideRemote(socket: net.Socket, remote: PeerAddress): void {
  const define = (name: string, value: unknown): void => {
    Object.defineProperty(socket, name, { value, configurable: true, enumerable: false, writable: false });
  };
  define('remoteAddress', remote.ip);
  define('remotePort', remote.port);
  define('remoteFamily', remote.family);
}

const noop = (): void => {};

/**
 * Reads an optional PROXY header from a freshly accepted socket.
 *
 * - Untrusted source: resolves `direct/untrusted` at once without reading a byte.
 * - No signature: resolves `direct/no-header` (warning `no PROXY protocol header found`); the bytes
 *   read so far are put back.
 * - Valid header: resolves `proxied` (peer address overridden) or `local`; the bytes after it are put
 *   back, so an SSH version line in the same packet is kept.
 * - Malformed, too large, truncated, timed out or closed: the socket is destroyed and `ok: false`
 *   is resolved, with a log line.
 *
 * Never rejects. On success the socket is left paused with the remaining bytes at the head of its
 * buffer; the consumer attaches its 'data' listener and calls resume() (ssh2's injectSocket does both).
 * A no-op 'error' listener stays attached so a reset between here and the consumer cannot crash the
 * process; the consumer's own listener sees later errors as usual.
 */
export function readProxyHeader(socket: net.Socket, opts: ReadProxyOptions): Promise<ProxyOutcome> {
  socket.on('error', noop);
  const peer = socketPeer(socket);
  if (!peer) {
    socket.destroy();
    return Promise.resolve({
      ok: false,
      reason: 'closed',
      message: 'connection closed before reading PROXY protocol header',
    });
  }
  if (!opts.trusted.trusts(peer.ip)) {
    return Promise.resolve({ ok: true, kind: 'direct', why: 'untrusted', remote: peer });
  }
  const log = opts.log;

  return new Promise<ProxyOutcome>((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let done = false;

    const finish = (outcome: ProxyOutcome, rest: Buffer | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (outcome.ok) {
        socket.pause();
        if (rest && rest.length > 0) socket.unshift(rest);
      } else {
        socket.destroy();
      }
      resolve(outcome);
    };

    const fail = (reason: ProxyRejectReason, message: string, level: 'warn' | 'info' = 'warn'): void => {
      log?.[level]({ remoteAddr: `${peer.ip}:${peer.port}`, reason }, message);
      finish({ ok: false, reason, message }, undefined);
    };

    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const step = parseProxyHeader(buf, { maxV2Length: opts.maxV2Length });
      switch (step.state) {
        case 'need-more':
          return;
        case 'not-proxy':
          log?.warn({ remoteAddr: `${peer.ip}:${peer.port}` }, 'no PROXY protocol header found');
          finish({ ok: true, kind: 'direct', why: 'no-header', remote: peer }, buf);
          return;
        case 'error':
          fail(step.code, `invalid PROXY protocol header, closing connection: ${step.message}`);
          return;
        case 'done': {
          const { header } = step;
          const rest = buf.subarray(step.consumed);
          if (header.addresses) {
            const remote = header.addresses.source;
            overrideRemote(socket, remote);
            finish({ ok: true, kind: 'proxied', version: header.version, remote, header }, rest);
          } else {
            finish({ ok: true, kind: 'local', version: header.version, remote: peer, header }, rest);
          }
        }
      }
    };
    const onEnd = (): void => {
      if (buf.length === 0) fail('closed', 'connection closed before reading PROXY protocol header');
      else
        fail(
          'truncated',
          `truncated PROXY protocol header (${buf.length} bytes before end of stream), closing connection`,
        );
    };
    const onClose = (): void => fail('closed', 'connection closed before reading PROXY protocol header');
    const onError = (e: Error): void =>
      fail('closed', `connection failed before the PROXY protocol header: ${e.message}`);

    const timer = setTimeout(
      () =>
        fail(
          'timeout',
          buf.length === 0
            ? `no data within ${opts.timeoutMs} ms while waiting for a PROXY protocol header, closing connection`
            : `incomplete PROXY protocol header after ${opts.timeoutMs} ms, closing connection`,
        ),
      opts.timeoutMs,
    );
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
    socket.resume();
  });
}
