// A loopback server that runs readProxyHeader on every accepted socket, and a client side that
// delivers bytes in controlled pieces: with `split`, each piece is written only after the server has
// read the previous one from the kernel (bytesRead), so split deliveries really are separate reads.
import net from 'node:net';
import { once } from 'node:events';
import {
  readProxyHeader,
  TrustedSources,
  type ProxyOutcome,
  type ReadProxyOptions,
} from '../../src/gateway/proxy-protocol.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

export interface Served {
  outcome: ProxyOutcome;
  /** Everything the consumer reads after the header (until the client ends); empty on failure. */
  rest: Buffer;
  /** The server-side socket (its remoteAddress reflects the override). */
  socket: net.Socket;
}

interface Pending {
  socket: net.Socket;
  outcome: Promise<ProxyOutcome>;
  settled: boolean;
}

export class ProxyLoopback {
  private readonly server: net.Server;
  private readonly queue: Pending[] = [];
  private readonly waiters: ((p: Pending) => void)[] = [];
  options: Omit<ReadProxyOptions, 'trusted'> & { trusted?: TrustedSources } = { timeoutMs: 5000 };

  private constructor(server: net.Server) {
    this.server = server;
    server.on('connection', (socket) => {
      const opts: ReadProxyOptions = {
        ...this.options,
        trusted: this.options.trusted ?? new TrustedSources([]),
      };
      const p: Pending = { socket, outcome: readProxyHeader(socket, opts), settled: false };
      void p.outcome.then(() => (p.settled = true));
      const w = this.waiters.shift();
      if (w) w(p);
      else this.queue.push(p);
    });
  }

  static async start(host = '127.0.0.1'): Promise<ProxyLoopback> {
    const server = net.createServer({ pauseOnConnect: true });
    server.listen(0, host);
    await once(server, 'listening');
    return new ProxyLoopback(server);
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get host(): string {
    return (this.server.address() as net.AddressInfo).address;
  }

  private next(): Promise<Pending> {
    const p = this.queue.shift();
    if (p) return Promise.resolve(p);
    return new Promise((r) => this.waiters.push(r));
  }

  /** Accepts the next connection and waits for its outcome and (on success) the rest of its stream. */
  async serveNext(): Promise<Served> {
    return this.serve(await withTimeout(this.next(), 10_000, 'a connection'));
  }

  private async serve(p: Pending): Promise<Served> {
    const outcome = await withTimeout(p.outcome, 15_000, 'the PROXY outcome');
    if (!outcome.ok) return { outcome, rest: Buffer.alloc(0), socket: p.socket };
    const parts: Buffer[] = [];
    p.socket.on('data', (d: Buffer) => parts.push(d));
    const ended = new Promise<void>((resolve) => {
      p.socket.once('end', resolve);
      p.socket.once('close', resolve);
    });
    p.socket.resume();
    await withTimeout(ended, 15_000, 'the end of the stream');
    p.socket.destroy();
    return { outcome, rest: Buffer.concat(parts), socket: p.socket };
  }

  /**
   * Connects, writes `pieces` (separately delivered when `split`), ends the stream (with `end: false`
   * only once the server has decided), and returns what the server made of it. One at a time.
   * Writes stop as soon as the server has closed the connection.
   */
  async send(
    pieces: Buffer[],
    opts: { split?: boolean; end?: boolean; localAddress?: string } = {},
  ): Promise<Served> {
    const client = net.connect({ host: this.host, port: this.port, localAddress: opts.localAddress });
    client.setNoDelay(true);
    client.on('error', () => {});
    try {
      await withTimeout(once(client, 'connect'), 10_000, 'connect');
      const p = await withTimeout(this.next(), 10_000, 'a connection');
      let sent = 0;
      for (const piece of pieces) {
        if (client.destroyed) break;
        if (piece.length === 0) continue;
        client.write(piece);
        sent += piece.length;
        if (opts.split) {
          await waitFor(() => p.settled || p.socket.bytesRead >= sent || client.destroyed, {
            timeoutMs: 10_000,
            intervalMs: 1,
            what: 'the server to read a piece',
          });
        }
      }
      // `end: false` holds the stream open until the server has decided (timeouts, half-sent headers).
      if (opts.end === false) await withTimeout(p.outcome, 15_000, 'the PROXY outcome');
      if (!client.destroyed) client.end();
      return await this.serve(p);
    } finally {
      client.destroy();
    }
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}
