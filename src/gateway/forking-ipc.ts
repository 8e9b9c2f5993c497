// The pre-authentication link between the forking parent and each child (our §23.i, §23.l): one
// socketpair on the child's fd 4 (fd 3 stays the client socket), newline-delimited JSON both ways.
//
// The parent owns the one PreauthLimiter, so maxStartups, the per-source cap and the failure backoff
// hold across children. It admits each socket before spawning a child (a socket from a trusted PROXY
// relay only under the global cap) and the child asks it the questions an in-process gateway asks
// its own limiter:
//
//   child → parent                                 parent → child
//   {"op":"source","id":1,"ip":"198.51.100.7"}     {"op":"admit","id":1,"ok":true}
//                                                  {"op":"admit","id":1,"ok":false,"reason":…,"message":…}
//   {"op":"refused","id":2}                        {"op":"refused","id":2,"refused":false}
//   {"op":"failed","id":3,"user":"alice"}          {"op":"delay","id":3,"ms":400}
//   {"op":"succeeded","user":"alice"}              (none: the slot is freed)
//   {"op":"release"}                               (none: the slot is freed)
//
// `source` carries the client address the child will use (the PROXY header's, or the socket's): the
// parent attributes a relay's ticket to it and may refuse it then. The child's exit releases its
// ticket too (exactly once, whichever comes first). Lines are bounded both ways; a malformed or
// oversized line is logged and ignored. When the link closes (the parent exited after a SIGUSR2
// hand-over), the child falls back to a limiter of its own for the rest of its connection.
//
// Light on purpose: the parent imports this module (no ssh2, gRPC or generated code).
import net from 'node:net';
import type { Logger } from '../ops/log.js';
import {
  PreauthLimiter,
  type GateAdmission,
  type GateTicket,
  type PreauthGate,
  type PreauthOptions,
  type PreauthRejectReason,
  type PreauthTicket,
} from './preauth.js';

/** Environment variable telling a child which descriptor carries the link (unset: no link). */
export const PREAUTH_FD_ENV = 'SSH_PROXY_PREAUTH_FD';
/** The child's descriptor for the link. */
export const PREAUTH_FD = 4;
/** Longest line either side accepts (a user name is cut to MAX_USER first). */
export const MAX_LINE = 4096;
/** Longest user name sent; longer names are counted under their prefix. */
export const MAX_USER = 1024;
/** How long a child waits for an answer before it decides on its own (fail closed). */
export const ANSWER_TIMEOUT_MS = 5000;

/** Ceiling of a delay the child accepts from the parent (the login grace time bounds it anyway). */
const MAX_DELAY_MS = 60_000;

const REASONS: readonly PreauthRejectReason[] = ['max-startups', 'max-startups-per-source', 'penalty'];

type Msg = Record<string, unknown>;

/**
 * Splits a stream into lines of at most `max` bytes. An oversized line is reported once and skipped
 * up to its newline, so a bad peer costs at most `max` bytes of buffer.
 */
export class LineReader {
  private buf = '';
  private skipping = false;

  constructor(
    private readonly max: number,
    private readonly onLine: (line: string) => void,
    private readonly onOversized: () => void,
  ) {}

  push(chunk: string): void {
    let data = chunk;
    for (;;) {
      const nl = data.indexOf('\n');
      if (nl < 0) {
        if (this.skipping) return;
        if (this.buf.length + data.length > this.max) {
          this.buf = '';
          this.skipping = true;
          this.onOversized();
          return;
        }
        this.buf += data;
        return;
      }
      const piece = data.slice(0, nl);
      data = data.slice(nl + 1);
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      const line = this.buf + piece;
      this.buf = '';
      if (line.length > this.max) {
        this.onOversized();
        continue;
      }
      if (line) this.onLine(line);
    }
  }
}

function parse(line: string): Msg | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Msg) : undefined;
  } catch {
    return undefined;
  }
}

function send(sock: net.Socket, m: Msg): void {
  if (!sock.destroyed && sock.writable) sock.write(`${JSON.stringify(m)}\n`);
}

// --- parent side ---

export interface ParentLinkOptions {
  /** The parent's end of the child's fd 4. */
  sock: net.Socket;
  /** The ticket the parent admitted this child's socket with. */
  ticket: PreauthTicket;
  /** Log fields (`conn`, `childPid`). */
  log: Logger;
  /** A relay's ticket was refused once attributed to the header's address. */
  onRefused(reason: PreauthRejectReason): void;
}

/** Answers one child's questions from the parent's limiter. */
export function serveChildLink(o: ParentLinkOptions): void {
  const { sock, ticket, log } = o;
  sock.setEncoding('utf8');
  sock.on('error', () => undefined); // the child died; its exit releases the ticket
  const reader = new LineReader(
    MAX_LINE,
    (line) => {
      const m = parse(line);
      if (!m || typeof m.op !== 'string') {
        log.warn({ bytes: line.length }, 'malformed pre-auth message from a child, ignored');
        return;
      }
      answer(m);
    },
    () => log.warn({ maxBytes: MAX_LINE }, 'oversized pre-auth message from a child, ignored'),
  );
  sock.on('data', (d: string) => reader.push(d));

  function answer(m: Msg): void {
    const id = typeof m.id === 'number' ? m.id : undefined;
    switch (m.op) {
      case 'source': {
        if (typeof m.ip !== 'string' || net.isIP(m.ip) === 0) {
          log.warn('pre-auth source message without a valid address, ignored');
          return;
        }
        const r = ticket.attribute(m.ip);
        if (!r.ok) o.onRefused(r.reason);
        send(sock, r.ok ? { op: 'admit', id, ok: true } : { op: 'admit', id, ...r });
        return;
      }
      case 'refused':
        send(sock, { op: 'refused', id, refused: ticket.refused() });
        return;
      case 'failed':
        if (typeof m.user !== 'string') break;
        send(sock, { op: 'delay', id, ms: ticket.failed(m.user.slice(0, MAX_USER)) });
        return;
      case 'succeeded':
        if (typeof m.user !== 'string') break;
        ticket.succeeded(m.user.slice(0, MAX_USER));
        return;
      case 'release':
        ticket.release();
        return;
    }
    log.warn(
      { op: String(m.op).slice(0, 32) },
      'unknown or malformed pre-auth message from a child, ignored',
    );
  }
}

// --- child side ---

/**
 * The child's PreauthGate: every decision is the parent's. Without an answer within
 * ANSWER_TIMEOUT_MS the child fails closed (connection refused, attempt refused); once the link is
 * closed (the parent is gone) it decides with a limiter of its own.
 */
export class ChildPreauthLink implements PreauthGate {
  private next = 1;
  private readonly waiting = new Map<number, (m: Msg | undefined) => void>();
  private closed = false;
  private local: PreauthLimiter | undefined;

  constructor(
    private readonly sock: net.Socket,
    private readonly fallback: PreauthOptions,
    private readonly log: Logger,
    private readonly timeoutMs = ANSWER_TIMEOUT_MS,
  ) {
    sock.setEncoding('utf8');
    // The link must not keep a finished child alive.
    sock.unref();
    const reader = new LineReader(
      MAX_LINE,
      (line) => {
        const m = parse(line);
        const id = m && typeof m.id === 'number' ? m.id : undefined;
        const w = id === undefined ? undefined : this.waiting.get(id);
        if (!m || id === undefined || !w) {
          log.warn('malformed or unexpected pre-auth message from the parent, ignored');
          return;
        }
        this.waiting.delete(id);
        w(m);
      },
      () => log.warn({ maxBytes: MAX_LINE }, 'oversized pre-auth message from the parent, ignored'),
    );
    sock.on('data', (d: string) => reader.push(d));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w(undefined);
      this.waiting.clear();
    });
  }

  /** Opens the link the parent passed, if any. */
  static fromEnv(fallback: PreauthOptions | undefined, log: Logger): ChildPreauthLink | undefined {
    const fd = Number(process.env[PREAUTH_FD_ENV]);
    if (!fallback || !Number.isInteger(fd) || fd < 3) return undefined;
    return new ChildPreauthLink(new net.Socket({ fd, readable: true, writable: true }), fallback, log);
  }

  private localLimiter(): PreauthLimiter {
    this.local ??= new PreauthLimiter(this.fallback);
    return this.local;
  }

  /** Sends `m` with a fresh id; resolves with the answer, 'timeout', or 'closed'. */
  private ask(m: Msg): Promise<Msg | 'timeout' | 'closed'> {
    if (this.closed) return Promise.resolve('closed');
    const id = this.next++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        this.log.warn({ op: m.op }, 'no pre-auth answer from the parent in time');
        resolve('timeout');
      }, this.timeoutMs);
      timer.unref();
      this.waiting.set(id, (a) => {
        clearTimeout(timer);
        resolve(a ?? 'closed');
      });
      send(this.sock, { ...m, id });
    });
  }

  private tell(m: Msg): void {
    if (!this.closed) send(this.sock, m);
  }

  async admit(ip: string): Promise<GateAdmission> {
    const a = await this.ask({ op: 'source', ip });
    if (a === 'closed') return this.localLimiter().admit(ip);
    if (a === 'timeout')
      return { ok: false, reason: 'max-startups', message: 'no answer from the parent process' };
    if (a.ok !== true) {
      const reason = REASONS.find((r) => r === a.reason) ?? 'max-startups';
      return { ok: false, reason, message: typeof a.message === 'string' ? a.message : reason };
    }
    return { ok: true, ticket: this.ticket(ip) };
  }

  private ticket(ip: string): GateTicket {
    // Used only once the parent is gone: the same questions answered here.
    let local: PreauthTicket | undefined;
    const fallback = (): PreauthTicket | undefined => {
      if (!local) {
        const a = this.localLimiter().admit(ip);
        if (a.ok) local = a.ticket;
      }
      return local;
    };
    return {
      source: ip,
      refused: async () => {
        const a = await this.ask({ op: 'refused' });
        if (a === 'closed') return fallback()?.refused() ?? true;
        return a === 'timeout' || a.refused !== false;
      },
      failed: async (user) => {
        const u = user.slice(0, MAX_USER);
        const a = await this.ask({ op: 'failed', user: u });
        if (a === 'closed') return fallback()?.failed(u) ?? 0;
        if (a === 'timeout') return 0;
        return typeof a.ms === 'number' && Number.isFinite(a.ms)
          ? Math.min(Math.max(0, a.ms), MAX_DELAY_MS)
          : 0;
      },
      succeeded: (user) => {
        this.tell({ op: 'succeeded', user: user.slice(0, MAX_USER) });
        local?.succeeded(user);
      },
      release: () => {
        this.tell({ op: 'release' });
        local?.release();
      },
    };
  }
}
