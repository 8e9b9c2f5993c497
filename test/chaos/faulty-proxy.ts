// A TCP proxy in front of a local service that can fail on command: `down` resets every connection and
// refuses new ones (the service was killed), `hang` accepts and keeps connections but moves no byte
// (the service is stuck: SIGSTOP as the network sees it), `up` relays again.
import { createServer, connect, type Server, type Socket } from 'node:net';

export type ProxyMode = 'up' | 'down' | 'hang';

export interface FaultyProxy {
  /** host:port clients should use. */
  address: string;
  /** The real service (host:port); settable after the proxy exists. */
  target: string;
  mode: ProxyMode;
  set(mode: ProxyMode): void;
  close(): Promise<void>;
}

/** No byte moves either way until piped again (unpipe, then pause: pipe() would resume otherwise). */
function freeze(a: Socket, b: Socket | undefined): void {
  a.unpipe();
  b?.unpipe();
  a.pause();
  b?.pause();
}

export async function startFaultyProxy(): Promise<FaultyProxy> {
  const pairs = new Set<[Socket, Socket | undefined]>();
  const proxy: FaultyProxy = {
    address: '',
    target: '',
    mode: 'up',
    set(mode) {
      proxy.mode = mode;
      for (const pair of pairs) {
        const [a, b] = pair;
        if (mode === 'down') {
          a.resetAndDestroy();
          b?.resetAndDestroy();
          pairs.delete(pair);
        } else if (mode === 'hang') freeze(a, b);
        else if (b) {
          a.pipe(b);
          b.pipe(a);
        }
      }
    },
    close: () =>
      new Promise<void>((r) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b?.destroy();
        }
        server.close(() => r());
      }),
  };
  const server: Server = createServer((client) => {
    client.on('error', () => undefined);
    if (proxy.mode === 'down') return void client.resetAndDestroy();
    const i = proxy.target.lastIndexOf(':');
    const upstream = connect({ host: proxy.target.slice(0, i), port: Number(proxy.target.slice(i + 1)) });
    upstream.on('error', () => client.destroy());
    const pair: [Socket, Socket | undefined] = [client, upstream];
    pairs.add(pair);
    if (proxy.mode === 'hang') freeze(client, upstream);
    else {
      client.pipe(upstream);
      upstream.pipe(client);
    }
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.once('close', drop);
    upstream.once('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  proxy.address = `127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  return proxy;
}
