// `-L` throughput: one persistent `ssh -N -L` per target; a TCP sink and a TCP source on 127.0.0.1 play the
// service "inside the workspace", and this process is the local application on the forwarded port.
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { canConnect, freePort, waitFor } from '../proc.js';
import type { Target } from '../target.js';
import { transferTimeoutMs, type Transfer } from './throughput.js';

const CHUNK = Buffer.alloc(1024 * 1024);

interface Waiter {
  bytes: number;
  done: () => void;
}

/** Counts bytes per connection and completes the pending waiter when one connection delivered them all. */
function startSink(): Promise<{ server: Server; port: number; expect(bytes: number): Promise<void> }> {
  let waiter: Waiter | undefined;
  const server = createServer((sock) => {
    let n = 0;
    sock.on('data', (d: Buffer) => {
      n += d.length;
      if (waiter && n >= waiter.bytes) {
        const w = waiter;
        waiter = undefined;
        w.done();
      }
    });
    sock.on('error', () => undefined);
  });
  return listen(server).then((port) => ({
    server,
    port,
    expect: (bytes) => new Promise<void>((done) => (waiter = { bytes, done })),
  }));
}

/** Sends `bytes` zeros to each connection once it receives a byte (so reachability probes cost nothing). */
function startSource(bytes: number): Promise<{ server: Server; port: number }> {
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => void writeZeros(sock, bytes).catch(() => sock.destroy()));
  });
  return listen(server).then((port) => ({ server, port }));
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      if (a === null || typeof a === 'string') reject(new Error('no sink address'));
      else resolve(a.port);
    });
  });
}

async function writeZeros(sock: Socket, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, CHUNK.length);
    left -= n;
    if (!sock.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n)))
      await new Promise<void>((resolve, reject) => {
        const onClose = () => reject(new Error('connection closed while sending'));
        sock.once('close', onClose);
        sock.once('drain', () => {
          sock.off('close', onClose);
          resolve();
        });
      });
  }
  sock.end();
}

function connect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port, noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export interface Forwarding {
  upload: Transfer;
  download: Transfer;
  stop(): Promise<void>;
}

/** Starts the sink, the source and one `ssh -N -L` per target (forwarding to both). */
export async function startForwarding(targets: Target[], bytes: number): Promise<Forwarding> {
  const sink = await startSink();
  const source = await startSource(bytes);
  const ports = new Map<Target, { up: number; down: number; ssh: ChildProcess }>();
  const stop = async () => {
    await Promise.all(
      [...ports.values()].map(
        ({ ssh }) =>
          new Promise<void>((resolve) => {
            if (ssh.exitCode !== null || ssh.signalCode !== null) return resolve();
            ssh.once('exit', () => resolve());
            ssh.kill('SIGTERM');
          }),
      ),
    );
    sink.server.close();
    source.server.close();
  };
  const failures = new Map<Target, string>();
  for (const t of targets) {
    const up = await freePort();
    const down = await freePort();
    const args = [...t.sshArgs(), '-N', '-o', 'ExitOnForwardFailure=yes'];
    args.push(
      '-L',
      `127.0.0.1:${up}:127.0.0.1:${sink.port}`,
      '-L',
      `127.0.0.1:${down}:127.0.0.1:${source.port}`,
    );
    const ssh = spawn('ssh', [...args, t.destination], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    ssh.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    ssh.once('error', () => undefined);
    ports.set(t, { up, down, ssh });
    try {
      await waitFor(
        async () => {
          if (ssh.exitCode !== null) throw new Error(`ssh -L exited ${ssh.exitCode}: ${stderr.trim()}`);
          return (await canConnect(up)) && canConnect(down);
        },
        20_000,
        `ssh -L to ${t.side} to listen`,
      );
    } catch (e) {
      failures.set(t, e instanceof Error ? e.message : String(e));
    }
  }
  const portsOf = (t: Target) => {
    const f = failures.get(t);
    if (f) throw new Error(f);
    return ports.get(t) as { up: number; down: number };
  };
  const upload: Transfer = async (t) => {
    const { up } = portsOf(t);
    const t0 = process.hrtime.bigint();
    const received = sink.expect(bytes);
    const sock = await connect(up);
    const closedEarly = new Promise<never>((_, reject) =>
      sock.once('close', () =>
        reject(new Error('the forwarded connection closed before the sink got every byte')),
      ),
    );
    closedEarly.catch(() => undefined);
    await deadline(
      Promise.race([Promise.all([writeZeros(sock, bytes), received]), closedEarly]),
      transferTimeoutMs(bytes),
      `-L upload via ${t.side}`,
    ).finally(() => sock.destroy());
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const download: Transfer = async (t) => {
    const { down } = portsOf(t);
    const t0 = process.hrtime.bigint();
    const sock = await connect(down);
    const done = new Promise<void>((resolve, reject) => {
      let n = 0;
      sock.on('data', (d: Buffer) => {
        n += d.length;
        if (n >= bytes) resolve();
      });
      sock.once('close', () =>
        reject(new Error(`the forwarded connection closed after ${n} of ${bytes} bytes`)),
      );
    });
    sock.write('g');
    await deadline(done, transferTimeoutMs(bytes), `-L download via ${t.side}`).finally(() => sock.destroy());
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  return { upload, download, stop };
}
