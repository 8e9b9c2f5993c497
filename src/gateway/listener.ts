// The accept loop. It only accepts TCP sockets and hands each one to a SocketHandler: today the
// in-process SSH server; in forking mode (a later issue) a handler that passes the socket to a child
// process as fd 3. PROXY-protocol parsing will also sit between accept and the handler.
import net from 'node:net';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';

export type SocketHandler = (socket: net.Socket) => void;

export interface Listener {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export function listen(host: string, port: number, handle: SocketHandler, log: Logger): Promise<Listener> {
  const server = net.createServer((socket) => {
    // Small packets (keystrokes, window adjusts) must not wait behind delayed ACKs (node-notes §15).
    socket.setNoDelay(true);
    try {
      handle(socket);
    } catch (e) {
      log.error({ err: errText(e) }, 'Failed to accept connection');
      socket.destroy();
    }
  });
  server.on('error', (e) => log.error({ err: errText(e) }, 'listener error'));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: host || undefined, port }, () => {
      server.off('error', reject);
      const addr = server.address() as net.AddressInfo;
      resolve({
        host: addr.address,
        port: addr.port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
