// Servers "in the workspace": the local agent dials 127.0.0.1 (and unix sockets) from its own
// process, so servers listening here in the test process are what a forward reaches.
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { withTimeout } from '../../helpers/wait.js';

export const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

export interface Running {
  /** TCP port (0 for unix-socket servers). */
  port: number;
  /** Connections currently open on the server side. */
  connections(): number;
  close(): Promise<void>;
}

/** Tracks sockets so close() never waits on a client that stays connected. */
function track(server: Server | HttpServer): { connections(): number; close(): Promise<void> } {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    connections: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function listen(server: Server | HttpServer, where: number | string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? (a as AddressInfo).port : 0);
    };
    if (typeof where === 'string') server.listen(where, done);
    else server.listen(where, '127.0.0.1', done);
  });
}

/** node:http answering every request with `body`. */
export async function startHttp(body: string): Promise<Running> {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const t = track(server);
  const port = await listen(server, 0);
  return { port, ...t };
}

export interface Received {
  bytes: number;
  sha: string;
}

export interface EofReplyServer extends Running {
  /** What each connection received up to its EOF, in order of completion. */
  received: Received[];
}

/**
 * Reads until EOF, then answers `<sha256 hex> <byte count>\n` and closes: only a forward that
 * half-closes (EOF toward the destination, reply still flowing back) ever sees the answer.
 */
export async function startEofReply(where: number | string = 0): Promise<EofReplyServer> {
  const received: Received[] = [];
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    const h = createHash('sha256');
    let bytes = 0;
    sock.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    sock.on('end', () => {
      const sha = h.digest('hex');
      received.push({ bytes, sha });
      sock.end(`${sha} ${bytes}\n`);
    });
    sock.on('error', () => undefined);
  });
  const t = track(server);
  const port = await listen(server, where);
  return { port, received, ...t };
}

/** Sends `count` copies of `block` to every connection, then closes (with backpressure). */
export async function startSource(block: Buffer, count: number): Promise<Running> {
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    let i = 0;
    const pump = () => {
      while (i < count) {
        i++;
        if (!sock.write(block)) return void sock.once('drain', pump);
      }
      sock.end();
    };
    pump();
  });
  const t = track(server);
  const port = await listen(server, 0);
  return { port, ...t };
}

/**
 * Echoes everything back; on EOF answers `EOF-SEEN\n` and closes (half-close visible both ways).
 * Listens on a TCP port (number) or a unix socket path (string).
 */
export async function startEcho(where: number | string = 0): Promise<Running> {
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => sock.write(d));
    sock.on('end', () => sock.end('EOF-SEEN\n'));
  });
  const t = track(server);
  const port = await listen(server, where);
  return { port, ...t };
}

/** A port that nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s, 0);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A port that is free now, for a local listener of the ssh client (-L, -D). */
export const freePort = closedPort;

/** Deterministic bulk data: one random block repeated; its hash and size are known up front. */
export function bulk(
  blockSize: number,
  count: number,
): { block: Buffer; count: number; bytes: number; sha: string } {
  const block = randomBytes(blockSize);
  const h = createHash('sha256');
  for (let i = 0; i < count; i++) h.update(block);
  return { block, count, bytes: blockSize * count, sha: h.digest('hex') };
}

export type Target = number | string;

function dial(target: Target): Socket {
  return typeof target === 'number'
    ? connect({ host: '127.0.0.1', port: target, allowHalfOpen: true })
    : connect({ path: target, allowHalfOpen: true });
}

/** Connects and resolves once connected (rejects on error). */
export function open(target: Target): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = dial(target);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** True when something accepts connections at `target` (the probe is closed at once). */
export async function accepts(target: Target): Promise<boolean> {
  try {
    const s = await open(target);
    s.destroy();
    return true;
  } catch {
    return false;
  }
}

/** Everything the peer sends until it closes its side; rejects on error or after `ms`. */
export function readAll(sock: Socket, ms = 10_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  const done = new Promise<Buffer>((resolve, reject) => {
    sock.once('end', () => resolve(Buffer.concat(chunks)));
    sock.once('error', reject);
    sock.once('close', () => resolve(Buffer.concat(chunks)));
  });
  return withTimeout(done, ms, 'the peer to close its side');
}

/** Connect, send `data`, half-close (EOF), and return everything the peer answers before closing. */
export async function exchange(target: Target, data: Buffer | string, ms = 10_000): Promise<Buffer> {
  const s = await open(target);
  try {
    const reply = readAll(s, ms);
    s.end(data);
    return await reply;
  } finally {
    s.destroy();
  }
}

/** Resolves with the next `n` bytes (or fewer if the peer closes first). */
export function readBytes(sock: Socket, n: number, ms = 10_000): Promise<Buffer> {
  let buf = Buffer.alloc(0);
  const done = new Promise<Buffer>((resolve, reject) => {
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) finish();
    };
    const finish = () => {
      sock.off('data', onData);
      sock.off('end', finish);
      sock.off('close', finish);
      sock.off('error', reject);
      resolve(buf);
    };
    sock.on('data', onData);
    sock.once('end', finish);
    sock.once('close', finish);
    sock.once('error', reject);
  });
  return withTimeout(done, ms, `${n} bytes from the peer`);
}
