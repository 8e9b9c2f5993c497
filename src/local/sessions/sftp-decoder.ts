// A bounded SFTP v3 decoder (draft-ietf-secsh-filexfer-02, plus the OpenSSH extensions) for recorded
// sftp channels: it reads the client's requests and the server's replies from their two byte streams,
// which arrive in arbitrary pieces, and reports one operation per request with its path, size and
// outcome. Bulk data is never buffered: only the first bytes of each packet are kept.

/** One decoded operation, as written to the `.sftp.jsonl` log. */
export interface SftpOp {
  /** Milliseconds since the recording started (when the reply arrived). */
  ms: number;
  op: string;
  path?: string;
  /** Second path: rename/symlink/hardlink target. */
  target?: string;
  /** open: r, w, a, c, t, x letters from the pflags. */
  flags?: string;
  /** read/write: payload bytes; readdir: entries. */
  bytes?: number;
  entries?: number;
  requests?: number;
  /** 'ok' or the server's status text (e.g. "No such file"). */
  status?: string;
}

export interface SftpSummary {
  version: number | undefined;
  operations: Record<string, number>;
  bytesRead: number;
  bytesWritten: number;
  /** Set when the byte stream could not be parsed any more (decoding stopped there). */
  error: string | undefined;
}

/** Bytes of each packet kept for parsing: type, id and up to two paths (PATH_MAX 4096 each). */
const PREFIX_MAX = 9 * 1024;
/** Larger than any real SFTP packet (OpenSSH: 256 KiB); beyond it the stream is not SFTP. */
const PACKET_MAX = 4 * 1024 * 1024;
const MAX_PENDING = 4096;
const MAX_HANDLES = 1024;

const REQUEST: Record<number, string> = {
  3: 'open',
  4: 'close',
  5: 'read',
  6: 'write',
  7: 'lstat',
  8: 'fstat',
  9: 'setstat',
  10: 'fsetstat',
  11: 'opendir',
  12: 'readdir',
  13: 'remove',
  14: 'mkdir',
  15: 'rmdir',
  16: 'realpath',
  17: 'stat',
  18: 'rename',
  19: 'readlink',
  20: 'symlink',
  200: 'extended',
};
const STATUS_TEXT: Record<number, string> = {
  0: 'ok',
  1: 'eof',
  2: 'no such file',
  3: 'permission denied',
  4: 'failure',
  5: 'bad message',
  6: 'no connection',
  7: 'connection lost',
  8: 'operation unsupported',
};
const FXP_VERSION = 2;
const FXP_STATUS = 101;
const FXP_HANDLE = 102;
const FXP_DATA = 103;
const FXP_NAME = 104;

/** Extended requests whose payload starts with one or two paths. */
const EXT_PATHS: Record<string, 1 | 2> = {
  'posix-rename@openssh.com': 2,
  'hardlink@openssh.com': 2,
  'statvfs@openssh.com': 1,
  'lsetstat@openssh.com': 1,
  'expand-path@openssh.com': 1,
};

interface Pending {
  op: string;
  path?: string;
  target?: string;
  flags?: string;
  handle?: string;
  bytes?: number;
}

interface OpenHandle {
  path: string;
  dir: boolean;
  bytesRead: number;
  bytesWritten: number;
  reads: number;
  writes: number;
  entries: number;
}

/** Splits one direction's bytes into packets, keeping at most PREFIX_MAX bytes of each. */
class Framer {
  private lenBuf = Buffer.alloc(4);
  private lenHave = 0;
  private remaining = 0;
  private prefix: Buffer[] = [];
  private prefixLen = 0;
  private total = 0;

  constructor(private readonly onPacket: (prefix: Buffer, length: number) => void) {}

  /** Throws when a length is impossible (not an SFTP stream, or we lost sync after a gap). */
  push(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      if (this.remaining === 0) {
        const take = Math.min(4 - this.lenHave, data.length - at);
        data.copy(this.lenBuf, this.lenHave, at, at + take);
        this.lenHave += take;
        at += take;
        if (this.lenHave < 4) return;
        this.lenHave = 0;
        const len = this.lenBuf.readUInt32BE(0);
        if (len === 0 || len > PACKET_MAX) throw new Error(`impossible SFTP packet length ${len}`);
        this.remaining = len;
        this.total = len;
        this.prefix = [];
        this.prefixLen = 0;
        continue;
      }
      const take = Math.min(this.remaining, data.length - at);
      const keep = Math.min(take, PREFIX_MAX - this.prefixLen);
      if (keep > 0) {
        this.prefix.push(Buffer.from(data.subarray(at, at + keep)));
        this.prefixLen += keep;
      }
      this.remaining -= take;
      at += take;
      if (this.remaining === 0) this.onPacket(Buffer.concat(this.prefix, this.prefixLen), this.total);
    }
  }
}

/** Reads SFTP fields from a packet prefix; a field past the kept bytes reads as undefined. */
class Fields {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  u8(): number | undefined {
    if (this.at + 1 > this.b.length) return undefined;
    return this.b[this.at++];
  }
  u32(): number | undefined {
    if (this.at + 4 > this.b.length) return undefined;
    const v = this.b.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  u64(): number | undefined {
    if (this.at + 8 > this.b.length) return undefined;
    const v = Number(this.b.readBigUInt64BE(this.at));
    this.at += 8;
    return v;
  }
  /** A string's bytes (undefined when cut off by the prefix limit). */
  bytes(): Buffer | undefined {
    const n = this.u32();
    if (n === undefined || this.at + n > this.b.length) return undefined;
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  /** Only the length of a string (its bytes may lie beyond the prefix). */
  stringLength(): number | undefined {
    return this.u32();
  }
  text(): string | undefined {
    return this.bytes()?.toString('utf8');
  }
}

function pflags(f: number | undefined): string | undefined {
  if (f === undefined) return undefined;
  const letters: Array<[number, string]> = [
    [0x01, 'r'],
    [0x02, 'w'],
    [0x04, 'a'],
    [0x08, 'c'],
    [0x10, 't'],
    [0x20, 'x'],
  ];
  return letters.map(([bit, l]) => (f & bit ? l : '')).join('');
}

export class SftpDecoder {
  private readonly pending = new Map<number, Pending>();
  private readonly handles = new Map<string, OpenHandle>();
  private readonly requests: Framer;
  private readonly replies: Framer;
  private now = 0;
  readonly summary: SftpSummary = {
    version: undefined,
    operations: {},
    bytesRead: 0,
    bytesWritten: 0,
    error: undefined,
  };

  constructor(private readonly emit: (op: SftpOp) => void) {
    this.requests = new Framer((p, n) => this.request(p, n));
    this.replies = new Framer((p, n) => this.reply(p, n));
  }

  /** Client → server bytes. */
  input(ms: number, data: Buffer): void {
    this.feed(this.requests, ms, data);
  }

  /** Server → client bytes. */
  output(ms: number, data: Buffer): void {
    this.feed(this.replies, ms, data);
  }

  /**
   * Bytes of one direction were dropped by the recorder: the packet boundaries are lost, so decoding
   * stops (the raw streams are still stored).
   */
  gap(ms: number, bytes: number): void {
    this.stop(ms, `${bytes} bytes were not recorded; decoding stopped`);
  }

  /** End of the recording: handles still open are reported with what they moved so far. */
  finish(ms: number): void {
    this.now = ms;
    for (const [key, h] of this.handles) {
      this.reportHandle(h, 'not closed');
      this.handles.delete(key);
    }
  }

  private feed(f: Framer, ms: number, data: Buffer): void {
    if (this.summary.error) return;
    this.now = ms;
    try {
      f.push(data);
    } catch (e) {
      this.stop(ms, (e as Error).message);
    }
  }

  private stop(ms: number, why: string): void {
    if (this.summary.error) return;
    this.summary.error = why;
    this.emit({ ms, op: 'decoder-stopped', status: why });
  }

  private record(op: SftpOp): void {
    this.summary.operations[op.op] = (this.summary.operations[op.op] ?? 0) + 1;
    this.emit(op);
  }

  private remember(id: number, p: Pending): void {
    if (this.pending.size >= MAX_PENDING) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) this.pending.delete(oldest);
    }
    this.pending.set(id, p);
  }

  private request(prefix: Buffer, length: number): void {
    const f = new Fields(prefix);
    const type = f.u8();
    if (type === 1) return; // INIT: the reply (VERSION) is reported
    const id = f.u32();
    if (type === undefined || id === undefined) return;
    const op = REQUEST[type];
    if (!op) return;
    switch (type) {
      case 3: {
        const path = f.text();
        this.remember(id, { op, path, flags: pflags(f.u32()) });
        return;
      }
      case 4:
      case 8:
      case 10:
      case 12:
        this.remember(id, { op, handle: f.bytes()?.toString('hex') });
        return;
      case 5: {
        const handle = f.bytes()?.toString('hex');
        f.u64();
        this.remember(id, { op, handle, bytes: f.u32() });
        return;
      }
      case 6: {
        const handle = f.bytes()?.toString('hex');
        f.u64();
        const n = f.stringLength() ?? Math.max(0, length - 1 - 4 - 4 - 8 - 4);
        this.remember(id, { op, handle, bytes: n });
        return;
      }
      case 18:
      case 20: {
        const path = f.text();
        this.remember(id, { op, path, target: f.text() });
        return;
      }
      case 200: {
        const name = f.text() ?? '';
        const paths = EXT_PATHS[name] ?? 0;
        const p: Pending = { op: name || 'extended' };
        if (paths >= 1) p.path = f.text();
        if (paths === 2) p.target = f.text();
        this.remember(id, p);
        return;
      }
      default:
        this.remember(id, { op, path: f.text() });
    }
  }

  private reply(prefix: Buffer, length: number): void {
    const f = new Fields(prefix);
    const type = f.u8();
    if (type === FXP_VERSION) {
      this.summary.version = f.u32();
      this.record({ ms: this.now, op: 'init', bytes: this.summary.version });
      return;
    }
    const id = f.u32();
    if (type === undefined || id === undefined) return;
    const req = this.pending.get(id);
    if (!req) return;
    this.pending.delete(id);
    const h = req.handle !== undefined ? this.handles.get(req.handle) : undefined;
    switch (type) {
      case FXP_HANDLE: {
        const handle = f.bytes()?.toString('hex');
        if (handle !== undefined && (req.op === 'open' || req.op === 'opendir')) {
          if (this.handles.size >= MAX_HANDLES) {
            const oldest = this.handles.keys().next().value;
            if (oldest !== undefined) this.handles.delete(oldest);
          }
          this.handles.set(handle, {
            path: req.path ?? '',
            dir: req.op === 'opendir',
            bytesRead: 0,
            bytesWritten: 0,
            reads: 0,
            writes: 0,
            entries: 0,
          });
        }
        this.record({ ms: this.now, op: req.op, path: req.path, flags: req.flags, status: 'ok' });
        return;
      }
      case FXP_DATA: {
        const n = f.stringLength() ?? Math.max(0, length - 1 - 4 - 4);
        if (h && req.op === 'read') {
          h.bytesRead += n;
          h.reads++;
          this.summary.bytesRead += n;
        } else this.record({ ms: this.now, op: req.op, bytes: n, status: 'ok' });
        return;
      }
      case FXP_NAME: {
        const count = f.u32() ?? 0;
        if (h && req.op === 'readdir') {
          h.entries += count;
          return;
        }
        // realpath/readlink answer one name: report what it resolved to.
        const target = count === 1 ? f.text() : undefined;
        this.record({ ms: this.now, op: req.op, path: req.path, target, status: 'ok' });
        return;
      }
      case FXP_STATUS: {
        const code = f.u32() ?? 4;
        const msg = f.text();
        const status = code === 0 ? 'ok' : msg || STATUS_TEXT[code] || `status ${code}`;
        if (req.op === 'write' && h) {
          if (code === 0) {
            h.bytesWritten += req.bytes ?? 0;
            h.writes++;
            this.summary.bytesWritten += req.bytes ?? 0;
          } else this.record({ ms: this.now, op: 'write', path: h.path, bytes: req.bytes, status });
          return;
        }
        if ((req.op === 'read' || req.op === 'readdir') && h && code === 1) return; // EOF: normal end
        if (req.op === 'close' && h && req.handle !== undefined) {
          this.handles.delete(req.handle);
          this.reportHandle(h, status);
          return;
        }
        this.record({
          ms: this.now,
          op: req.op,
          path: req.path ?? h?.path,
          target: req.target,
          flags: req.flags,
          status,
        });
        return;
      }
      default:
        // ATTRS, EXTENDED_REPLY: the request succeeded.
        this.record({
          ms: this.now,
          op: req.op,
          path: req.path ?? h?.path,
          target: req.target,
          status: 'ok',
        });
    }
  }

  /** One entry per direction of use, then the close itself. */
  private reportHandle(h: OpenHandle, status: string): void {
    if (h.dir) {
      this.record({ ms: this.now, op: 'readdir', path: h.path, entries: h.entries });
    } else {
      if (h.reads > 0)
        this.record({ ms: this.now, op: 'read', path: h.path, bytes: h.bytesRead, requests: h.reads });
      if (h.writes > 0) {
        this.record({ ms: this.now, op: 'write', path: h.path, bytes: h.bytesWritten, requests: h.writes });
      }
    }
    this.record({ ms: this.now, op: 'close', path: h.path, status });
  }
}
