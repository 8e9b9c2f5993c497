// IP address parsing and the "public address" test of the failure events' publicIPOnly filter
// (reference-behaviour §17.2), with the semantics of Go's net.IP predicates the reference uses.
import { isIP } from 'node:net';

/** 4 bytes for IPv4 (also for IPv4-mapped IPv6, as Go's To4 does), 16 for IPv6; undefined if unparsable. */
export function parseIp(text: string): Uint8Array | undefined {
  // Go's ParseIP rejects zones (`fe80::1%eth0`); Node's isIP accepts them.
  if (text.includes('%')) return undefined;
  const family = isIP(text);
  if (family === 4) return Uint8Array.from(text.split('.').map(Number));
  if (family !== 6) return undefined;
  const bytes = parseIPv6(text);
  if (bytes && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return bytes.slice(12);
  }
  return bytes;
}

function parseIPv6(text: string): Uint8Array | undefined {
  let s = text;
  // An embedded dotted quad (`::ffff:1.2.3.4`) becomes the two hex words it stands for.
  if (s.includes('.')) {
    const at = s.lastIndexOf(':') + 1;
    const q = s.slice(at).split('.').map(Number);
    const hi = ((q[0] ?? 0) << 8) | (q[1] ?? 0);
    const lo = ((q[2] ?? 0) << 8) | (q[3] ?? 0);
    s = `${s.slice(0, at)}${hi.toString(16)}:${lo.toString(16)}`;
  }
  const words = (part: string) => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const left = words(halves[0] ?? '');
  const right = halves.length === 2 ? words(halves[1] ?? '') : [];
  const gap = halves.length === 2 ? 8 - left.length - right.length : 0;
  if (gap < 0) return undefined;
  const all = [...left, ...new Array<number>(gap).fill(0), ...right];
  if (all.length !== 8 || all.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffff)) return undefined;
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** The address as Go prints it for IPv4-mapped IPv6 (`::ffff:1.2.3.4` → `1.2.3.4`); others unchanged. */
export function unmapIPv4(text: string): string {
  const b = parseIp(text);
  return b && b.length === 4 && isIP(text) === 6 ? b.join('.') : text;
}

/**
 * False for private, loopback, link-local unicast/multicast, multicast, unspecified and unparsable
 * addresses (Go: IsPrivate, IsLoopback, IsLinkLocalUnicast, IsLinkLocalMulticast, IsMulticast,
 * IsUnspecified); true otherwise (so e.g. 100.64.0.0/10 counts as public, as in the reference).
 */
export function isPublicIp(text: string): boolean {
  const b = parseIp(text);
  if (!b) return false;
  if (b.length === 4) {
    const [a = 0, c = 0] = b;
    if (a === 10) return false; // private
    if (a === 172 && (c & 0xf0) === 16) return false; // private 172.16/12
    if (a === 192 && c === 168) return false; // private
    if (a === 127) return false; // loopback
    if (a === 169 && c === 254) return false; // link-local unicast
    if ((a & 0xf0) === 224) return false; // multicast (includes link-local multicast 224.0.0/24)
    if (b.every((x) => x === 0)) return false; // unspecified
    return true;
  }
  const [a = 0, c = 0] = b;
  if ((a & 0xfe) === 0xfc) return false; // private fc00::/7
  if (a === 0xfe && (c & 0xc0) === 0x80) return false; // link-local unicast fe80::/10
  if (a === 0xff) return false; // multicast (includes link-local multicast ffx2::/16)
  const zeroHead = b.subarray(0, 15).every((x) => x === 0);
  if (zeroHead && (b[15] === 1 || b[15] === 0)) return false; // loopback ::1, unspecified ::
  return true;
}
