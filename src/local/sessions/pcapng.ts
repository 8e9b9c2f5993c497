// pcapng with synthetic Ethernet/IPv4/TCP framing for recorded forwards: each recorded direct-tcpip
// channel becomes one TCP conversation (handshake, data both ways with correct seq/ack, FIN at the
// end), so Wireshark/tshark show the forwarded bytes as a normal TCP stream. Only the payload bytes
// are real; addresses that are not IPv4 literals are mapped to documentation addresses.
import { isIPv4 } from 'node:net';
import type { OutFile } from './out-file.js';

const SHB = 0x0a0d0d0a;
const IDB = 0x00000001;
const EPB = 0x00000006;
const LINKTYPE_ETHERNET = 1;
const SNAPLEN = 262_144;
/** The most TCP payload one IPv4 packet can carry (65535 − 20 − 20). */
export const MAX_SEGMENT = 65_495;

const MAC_CLIENT = Buffer.from([0x02, 0, 0, 0, 0, 0x01]);
const MAC_SERVER = Buffer.from([0x02, 0, 0, 0, 0, 0x02]);
/** RFC 5737 documentation addresses stand in for names and IPv6 literals. */
export const SYNTHETIC_CLIENT_IP = '192.0.2.1';
export const SYNTHETIC_SERVER_IP = '198.51.100.1';

const FIN = 0x01;
const SYN = 0x02;
const PSH = 0x08;
const ACK = 0x10;

function block(type: number, body: Buffer): Buffer {
  const pad = (4 - (body.length % 4)) % 4;
  const total = 12 + body.length + pad;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

/** Section header + one Ethernet interface: what a new file starts with. */
export function pcapngPreamble(): Buffer {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(0x1a2b3c4d, 0); // byte-order magic
  shb.writeUInt16LE(1, 4); // major
  shb.writeUInt16LE(0, 6); // minor
  shb.writeBigInt64LE(-1n, 8); // section length unknown
  const idb = Buffer.alloc(8);
  idb.writeUInt16LE(LINKTYPE_ETHERNET, 0);
  idb.writeUInt32LE(SNAPLEN, 4);
  // No if_tsresol option: timestamps are in microseconds (the default).
  return Buffer.concat([block(SHB, shb), block(IDB, idb)]);
}

/** One Enhanced Packet Block; `us` = microseconds since the epoch. */
export function enhancedPacket(us: number, frame: Buffer): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32LE(0, 0); // interface 0
  head.writeUInt32LE(Math.floor(us / 2 ** 32), 4);
  head.writeUInt32LE(us % 2 ** 32, 8);
  head.writeUInt32LE(frame.length, 12);
  head.writeUInt32LE(frame.length, 16);
  return block(EPB, Buffer.concat([head, frame]));
}

function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map((p) => Number(p)));
}

/** Internet checksum over `parts` (one's complement sum of 16-bit words). */
function checksum(parts: Buffer[]): number {
  let sum = 0;
  let odd: number | undefined;
  for (const p of parts) {
    let i = 0;
    if (odd !== undefined && p.length > 0) {
      sum += (odd << 8) | (p[0] as number);
      odd = undefined;
      i = 1;
    }
    for (; i + 1 < p.length; i += 2) sum += p.readUInt16BE(i);
    if (i < p.length) odd = p[i];
    // Doubles are exact far beyond any part's sum; fold arithmetically (bit operators are 32-bit).
    sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  }
  if (odd !== undefined) sum += odd << 8;
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

export interface Endpoint {
  ip: string;
  port: number;
}

/** Maps the header's host to an IPv4 address for the synthetic packets. */
export function syntheticIp(host: string, fallback: string): string {
  return isIPv4(host) ? host : fallback;
}

/** The TCP state of one conversation; produces the packets, the caller writes them. */
export class TcpConversation {
  private ipId = 1;
  /** Next sequence number each side sends. */
  private seqC: number;
  private seqS: number;
  private finished = false;
  readonly payload = { fromClient: 0, fromServer: 0 };

  constructor(
    readonly client: Endpoint,
    readonly server: Endpoint,
    isn: { client: number; server: number } = { client: 1_000, server: 5_000 },
  ) {
    this.seqC = isn.client >>> 0;
    this.seqS = isn.server >>> 0;
  }

  /** SYN, SYN-ACK, ACK. */
  handshake(us: number): Buffer[] {
    const out = [
      this.packet(us, true, SYN, this.seqC, 0, Buffer.alloc(0)),
      this.packet(us, false, SYN | ACK, this.seqS, this.seqC + 1, Buffer.alloc(0)),
    ];
    this.seqC = (this.seqC + 1) >>> 0;
    this.seqS = (this.seqS + 1) >>> 0;
    out.push(this.packet(us, true, ACK, this.seqC, this.seqS, Buffer.alloc(0)));
    return out;
  }

  /**
   * Data from one side; `skipped` bytes were lost before it (the recorder's queue dropped them), so
   * the sequence numbers jump and Wireshark reports the gap as "previous segment not captured".
   */
  data(us: number, fromClient: boolean, bytes: Buffer, skipped = 0): Buffer[] {
    if (this.finished) return [];
    if (skipped > 0) {
      if (fromClient) this.seqC = (this.seqC + skipped) >>> 0;
      else this.seqS = (this.seqS + skipped) >>> 0;
    }
    const out: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += MAX_SEGMENT) {
      const seg = bytes.subarray(at, Math.min(bytes.length, at + MAX_SEGMENT));
      if (fromClient) {
        out.push(this.packet(us, true, PSH | ACK, this.seqC, this.seqS, seg));
        this.seqC = (this.seqC + seg.length) >>> 0;
        this.payload.fromClient += seg.length;
      } else {
        out.push(this.packet(us, false, PSH | ACK, this.seqS, this.seqC, seg));
        this.seqS = (this.seqS + seg.length) >>> 0;
        this.payload.fromServer += seg.length;
      }
    }
    return out;
  }

  /** FIN from the client, FIN-ACK from the server, the last ACK. */
  close(us: number): Buffer[] {
    if (this.finished) return [];
    this.finished = true;
    const out = [this.packet(us, true, FIN | ACK, this.seqC, this.seqS, Buffer.alloc(0))];
    this.seqC = (this.seqC + 1) >>> 0;
    out.push(this.packet(us, false, FIN | ACK, this.seqS, this.seqC, Buffer.alloc(0)));
    this.seqS = (this.seqS + 1) >>> 0;
    out.push(this.packet(us, true, ACK, this.seqC, this.seqS, Buffer.alloc(0)));
    return out;
  }

  private packet(
    us: number,
    fromClient: boolean,
    flags: number,
    seq: number,
    ack: number,
    payload: Buffer,
  ): Buffer {
    const src = fromClient ? this.client : this.server;
    const dst = fromClient ? this.server : this.client;
    const srcIp = ipBytes(src.ip);
    const dstIp = ipBytes(dst.ip);

    const tcp = Buffer.alloc(20);
    tcp.writeUInt16BE(src.port, 0);
    tcp.writeUInt16BE(dst.port, 2);
    tcp.writeUInt32BE(seq >>> 0, 4);
    tcp.writeUInt32BE(flags & ACK ? ack >>> 0 : 0, 8);
    tcp.writeUInt8(5 << 4, 12); // data offset: 5 words
    tcp.writeUInt8(flags, 13);
    tcp.writeUInt16BE(65_535, 14); // window
    const pseudo = Buffer.alloc(12);
    srcIp.copy(pseudo, 0);
    dstIp.copy(pseudo, 4);
    pseudo.writeUInt8(6, 9);
    pseudo.writeUInt16BE(20 + payload.length, 10);
    tcp.writeUInt16BE(checksum([pseudo, tcp, payload]), 16);

    const ip = Buffer.alloc(20);
    ip.writeUInt8(0x45, 0);
    ip.writeUInt16BE(20 + 20 + payload.length, 2);
    ip.writeUInt16BE(this.ipId++ & 0xffff, 4);
    ip.writeUInt16BE(0x4000, 6); // don't fragment
    ip.writeUInt8(64, 8); // TTL
    ip.writeUInt8(6, 9); // TCP
    srcIp.copy(ip, 12);
    dstIp.copy(ip, 16);
    ip.writeUInt16BE(checksum([ip]), 10);

    const eth = Buffer.alloc(14);
    (fromClient ? MAC_SERVER : MAC_CLIENT).copy(eth, 0);
    (fromClient ? MAC_CLIENT : MAC_SERVER).copy(eth, 6);
    eth.writeUInt16BE(0x0800, 12);
    return enhancedPacket(us, Buffer.concat([eth, ip, tcp, payload]));
  }
}

/** A pcapng file shared by the conversations of one (connection, destination) (§15.5 storage). */
export class PcapngFile {
  private readonly usedPorts = new Set<number>();
  private nextPort = 40_000;

  constructor(
    private out: OutFile,
    fresh: boolean,
  ) {
    if (fresh) out.write(pcapngPreamble());
  }

  get file(): OutFile {
    return this.out;
  }

  /** Reopened after all its streams ended, for another stream of the same key (append mode). */
  reopen(out: OutFile): void {
    this.out = out;
  }

  /** A client port not used in this file yet, preferring the real one. */
  clientPort(wanted: number): number {
    // Thousands of forwards in one file: reuse ports rather than search forever.
    if (this.usedPorts.size >= 20_000) this.usedPorts.clear();
    let p = wanted > 0 && wanted < 65_536 && !this.usedPorts.has(wanted) ? wanted : 0;
    while (p === 0) {
      const c = this.nextPort++;
      if (this.nextPort > 65_535) this.nextPort = 40_000;
      if (!this.usedPorts.has(c)) p = c;
    }
    this.usedPorts.add(p);
    return p;
  }

  write(packets: Buffer[]): boolean {
    let ok = true;
    for (const p of packets) ok = this.out.write(p) && ok;
    return ok;
  }
}
