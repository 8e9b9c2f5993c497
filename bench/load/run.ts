// The load suite (docs/security.md): N concurrent SSH connections (ssh2 clients) to the local stack
// in its own process, each repeating one of four operations until the byte budget is spent: exec
// upload (stdin → sha256sum in the workspace), exec download (cat of a blob whose sha256 is known),
// a -L forward (direct-tcpip to an echo server), and sftp (write a file, read it back). Every stream
// is hashed at both ends; a mismatch is counted, never retried. Reports throughput, failures,
// mismatches and the gateway process's RSS before, at peak and after.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { readFileSync } from 'node:fs';
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2';
import { startStackProcess } from './stack.js';

export interface LoadOptions {
  connections: number;
  /** Bytes moved in all (each direction of an echo counts once). */
  totalBytes: number;
  /** Bytes per operation (each op moves this many). */
  opBytes: number;
  log?: (line: string) => void;
  /** Extra configuration for the gateway (dotted keys), e.g. a short workspace keepalive. */
  set?: Record<string, unknown>;
}

export type OpKind = 'exec-up' | 'exec-down' | 'forward' | 'sftp';

export interface LoadReport {
  connections: number;
  ops: Record<OpKind, number>;
  bytes: number;
  seconds: number;
  mibPerSecond: number;
  failures: number;
  failureSamples: string[];
  mismatches: number;
  mismatchSamples: string[];
  rss: { before: number; peak: number; after: number };
}

const CHUNK = randomBytes(1 << 20);

/** `n` pseudo-random bytes as chunks of at most 64 KiB, from a random offset of one random MiB. */
function* payload(n: number): Generator<Buffer> {
  let off = Math.floor(Math.random() * CHUNK.length);
  while (n > 0) {
    const len = Math.min(n, 64 * 1024, CHUNK.length - off);
    yield CHUNK.subarray(off, off + len);
    n -= len;
    off = (off + len) % CHUNK.length;
  }
}

function connect(port: number, user: string, key: Buffer): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once('error', reject);
    c.once('ready', () => {
      c.off('error', reject);
      c.on('error', () => undefined);
      resolve(c);
    });
    c.connect({ host: '127.0.0.1', port, username: user, privateKey: key, readyTimeout: 120_000 });
  });
}

/** An exec channel; `status` resolves with its exit code and stderr (non-zero → the op failed). */
function exec(
  c: Client,
  cmd: string,
): Promise<ClientChannel & { status: Promise<{ code: number; stderr: string }> }> {
  return new Promise((res, rej) =>
    c.exec(cmd, (e, ch) => {
      if (e) return rej(e);
      let stderr = '';
      ch.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-300)));
      const status = new Promise<{ code: number; stderr: string }>((r) => {
        let code = -1;
        ch.once('exit', (c: number | null) => (code = c ?? -1));
        ch.once('close', () => r({ code, stderr }));
      });
      res(Object.assign(ch, { status }));
    }),
  );
}

async function succeeded(
  ch: { status: Promise<{ code: number; stderr: string }> },
  what: string,
): Promise<void> {
  const s = await ch.status;
  if (s.code !== 0) throw new Error(`${what} exited ${s.code}: ${s.stderr.trim()}`);
}

/** Writes `gen` to a stream with backpressure, then ends it; returns the sha256 of what was written. */
async function pump(w: NodeJS.WritableStream, n: number): Promise<string> {
  const h = createHash('sha256');
  // A channel closed by the server never emits 'drain': waiting for it alone would hang the op.
  let closed = false;
  const onClose = () => (closed = true);
  w.once('close', onClose);
  try {
    for (const b of payload(n)) {
      h.update(b);
      if (closed) throw new Error('closed by the server while sending');
      if (!w.write(b))
        await new Promise<void>((r, j) => {
          const done = () => {
            w.off('drain', done);
            w.off('close', gone);
            r();
          };
          const gone = () => {
            w.off('drain', done);
            j(new Error('closed by the server while sending'));
          };
          w.once('drain', done);
          w.once('close', gone);
        });
    }
    w.end();
  } finally {
    w.off('close', onClose);
  }
  return h.digest('hex');
}

function collectHash(r: NodeJS.ReadableStream): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    r.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    r.once('end', () => resolve({ hash: h.digest('hex'), bytes }));
    r.once('error', reject);
  });
}

function collectText(r: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let s = '';
    r.on('data', (d: Buffer) => (s += d.toString()));
    r.once('end', () => resolve(s));
  });
}

function sftpOf(c: Client): Promise<SFTPWrapper> {
  return new Promise((res, rej) => c.sftp((e, s) => (e ? rej(e) : res(s))));
}

/** An echo server the workspace reaches through -L (direct-tcpip to 127.0.0.1). */
function echoServer(): Promise<Server & { port: number }> {
  return new Promise((resolve) => {
    const s = createServer({ allowHalfOpen: true }, (sock) => {
      sock.on('error', () => undefined);
      sock.pipe(sock);
    });
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      resolve(Object.assign(s, { port: typeof a === 'object' && a ? a.port : 0 }));
    });
  });
}

export async function runLoad(o: LoadOptions): Promise<LoadReport> {
  const log = o.log ?? (() => undefined);
  // All clients come from 127.0.0.1: lift the per-source pre-auth cap (the abuse suite tests it).
  const stack = await startStackProcess({
    set: { 'server.maxStartupsPerSource': 1000, 'server.maxStartups': 1000, ...o.set },
  });
  const echo = await echoServer();
  const key = readFileSync(stack.key);
  const report: LoadReport = {
    connections: o.connections,
    ops: { 'exec-up': 0, 'exec-down': 0, forward: 0, sftp: 0 },
    bytes: 0,
    seconds: 0,
    mibPerSecond: 0,
    failures: 0,
    failureSamples: [],
    mismatches: 0,
    mismatchSamples: [],
    rss: { before: 0, peak: 0, after: 0 },
  };
  const fail = (what: string, e: unknown) => {
    report.failures++;
    if (report.failureSamples.length < 10) report.failureSamples.push(`${what}: ${String(e)}`.slice(0, 300));
  };
  let sampler: NodeJS.Timeout | undefined;
  try {
    // Warm up: the workspace, and the blob every download reads.
    const w = await connect(stack.info.port, stack.user, key);
    const blobSize = o.opBytes;
    const mk = await exec(w, `head -c ${blobSize} /dev/urandom > blob && sha256sum blob`);
    const blobHash = (await collectText(mk)).split(/\s+/)[0] ?? '';
    w.end();
    report.rss.before = stack.rss();
    report.rss.peak = report.rss.before;
    sampler = setInterval(() => {
      report.rss.peak = Math.max(report.rss.peak, stack.rss());
    }, 200);
    log(
      `stack pid ${stack.info.pid}, RSS before ${(report.rss.before / 2 ** 20).toFixed(0)} MiB; blob ${blobHash.slice(0, 12)}`,
    );

    const perConn = Math.ceil(o.totalBytes / o.connections);
    const started = Date.now();
    const kinds: OpKind[] = ['exec-up', 'exec-down', 'forward', 'sftp'];
    await Promise.all(
      Array.from({ length: o.connections }, async (_x, i) => {
        let c: Client;
        try {
          c = await connect(stack.info.port, stack.user, key);
        } catch (e) {
          return fail('connect', e);
        }
        try {
          let moved = 0;
          let k = i;
          while (moved < perConn) {
            const kind = kinds[k++ % kinds.length] as OpKind;
            const n = Math.min(o.opBytes, perConn - moved);
            try {
              const ok = await withDeadline(
                runOp(c, kind, n, blobHash, blobSize, echo.port, i),
                OP_DEADLINE_MS,
                `${kind} of ${n} B`,
              );
              if (ok !== true) {
                report.mismatches++;
                if (report.mismatchSamples.length < 10) report.mismatchSamples.push(`${kind} ${n} B: ${ok}`);
              }
              report.ops[kind]++;
              report.bytes += n;
            } catch (e) {
              fail(kind, e);
            }
            moved += n;
          }
        } finally {
          c.end();
        }
      }),
    );
    report.seconds = (Date.now() - started) / 1000;
    report.mibPerSecond = report.bytes / 2 ** 20 / report.seconds;
    clearInterval(sampler);
    // Let connections close and the gateway settle, then measure what stays.
    log(`operations done; RSS read again in ${SETTLE_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    report.rss.after = stack.rss();
    return report;
  } finally {
    clearInterval(sampler);
    echo.close();
    await stack.stop();
  }
}

/** How long after the last operation the RSS `after` is read (LOAD_SETTLE_S, default 5). */
const SETTLE_MS = Number(process.env.LOAD_SETTLE_S ?? 5) * 1000;

/** No single operation may hang the run: a stuck one is a failure, reported with what it was. */
const OP_DEADLINE_MS = Number(process.env.LOAD_OP_DEADLINE_MS ?? 180_000);

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_r, j) => {
    timer = setTimeout(() => j(new Error(`${what}: no result within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** One operation on a connection; false on a hash mismatch. */
async function runOp(
  c: Client,
  kind: OpKind,
  n: number,
  blobHash: string,
  blobSize: number,
  echoPort: number,
  conn: number,
): Promise<true | string> {
  const same = (a: string, b: string, extra = '') =>
    a === b || `got ${a.slice(0, 16)} want ${b.slice(0, 16)} ${extra}`;
  switch (kind) {
    case 'exec-up': {
      const ch = await exec(c, 'sha256sum');
      const out = collectText(ch);
      const sent = await pump(ch, n);
      const text = await out;
      await succeeded(ch, 'sha256sum');
      return same(text.split(/\s+/)[0] ?? '', sent, JSON.stringify(text.slice(0, 80)));
    }
    case 'exec-down': {
      const take = Math.min(n, blobSize);
      const ch = await exec(c, take === blobSize ? 'cat blob' : `head -c ${take} blob`);
      const got = await collectHash(ch);
      await succeeded(ch, 'cat');
      if (take !== blobSize) return got.bytes === take || `got ${got.bytes} bytes, want ${take}`;
      return same(got.hash, blobHash, `${got.bytes} bytes`);
    }
    case 'forward': {
      const ch = await new Promise<ClientChannel>((res, rej) =>
        c.forwardOut('127.0.0.1', 0, '127.0.0.1', echoPort, (e, s) => (e ? rej(e) : res(s))),
      );
      const back = collectHash(ch);
      const sent = await pump(ch, n);
      const b = await back;
      // A short echo is a lost stream (a failure), not corrupted data (a mismatch).
      if (b.bytes !== n) throw new Error(`forward echoed ${b.bytes} of ${n} B`);
      return same(b.hash, sent, `${b.bytes} bytes`);
    }
    case 'sftp': {
      const s = await sftpOf(c);
      // The session can end under the op (a lost workspace): that is this op's failure, not a crash.
      const ended = new Promise<never>((_r, j) => s.on('error', j));
      ended.catch(() => undefined);
      try {
        const file = `load-${conn}.bin`;
        const ws = s.createWriteStream(file);
        const closed = new Promise<void>((r, j) => {
          ws.once('close', () => r());
          ws.on('error', j);
        });
        const sent = await Promise.race([pump(ws, n), ended]);
        await Promise.race([closed, ended]);
        const got = await Promise.race([collectHash(s.createReadStream(file)), ended]);
        return same(got.hash, sent, `${got.bytes} bytes`);
      } finally {
        s.end();
      }
    }
  }
}

export function formatReport(r: LoadReport): string {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  return [
    `connections ${r.connections}, ops ${JSON.stringify(r.ops)}`,
    `moved ${(r.bytes / 2 ** 30).toFixed(2)} GiB in ${r.seconds.toFixed(1)} s = ${r.mibPerSecond.toFixed(1)} MiB/s`,
    `failures ${r.failures}, mismatches ${r.mismatches}`,
    `gateway process RSS before ${mib(r.rss.before)}, peak ${mib(r.rss.peak)}, after ${mib(r.rss.after)}`,
    ...r.failureSamples.map((s) => `  failure: ${s}`),
    ...r.mismatchSamples.map((s) => `  mismatch: ${s}`),
  ].join('\n');
}
