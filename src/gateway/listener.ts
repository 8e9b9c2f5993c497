// The accept loop of the in-process server: it only accepts TCP sockets and hands each one to a
// SocketHandler (the gateway's accept path: PROXY header, limits, SSH). Forking mode has its own
// listener in forking.ts.
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
        // Stops accepting at once. Not server.close()'s callback: that waits until every accepted
        // connection has ended, and a drain needs the listener gone while they are still open.
        close: () =>
          new Promise<void>((r) => {
            server.close();
            setImmediate(r);
          }),
      });
    });
  });
}
