// Forking mode, child side (reference-behaviour §4.3, our §23.i): serve exactly the one connection
// inherited on fd 3 with the normal per-connection handler, then exit.
//
// SIGTERM/SIGINT (forwarded by the parent's drain) run the registered drain callbacks (the handler
// stops accepting new channels) and give the connection up to the drain timeout to end; past it the
// reference's `Cleanup timeout, forcing exit` is logged. The exit code is 0 either way, as in the
// reference; a handler that fails logs `Error handling connection in the child process: <err>` and
// exits 1. A second signal exits at once.
import net from 'node:net';
import { errText, type Logger } from '../ops/log.js';
import { CONNECTION_ID_ENV } from './forking.js';

export interface ChildContext {
  /** The client connection (the PROXY header, if any, is still unread). */
  readonly socket: net.Socket;
  /** The id the parent logged for this connection; use it as the connection id. */
  readonly connectionId: string | undefined;
  /** Registers what to do when draining starts (stop accepting new channels). */
  onDrain(cb: () => void): void;
  /** True once draining started. */
  readonly draining: boolean;
}

export interface RunChildOptions {
  /** The per-connection handler; resolves when the connection has ended. */
  serve(ctx: ChildContext): Promise<void>;
  /** Config `server.drainTimeout` × 1000. */
  drainTimeoutMs: number;
  log: Logger;
  /** Inherited descriptor (default 3). */
  fd?: number;
  /** Process exit; injectable for tests. */
  exit?: (code: number) => void;
}

export function runChild(o: RunChildOptions): void {
  const exit = o.exit ?? ((c: number) => process.exit(c));
  const log = o.log;
  const connectionId = process.env[CONNECTION_ID_ENV] || undefined;
  let socket: net.Socket;
  try {
    socket = new net.Socket({ fd: o.fd ?? 3, readable: true, writable: true });
  } catch (e) {
    log.error({ conn: connectionId }, `Error handling connection in the child process: ${errText(e)}`);
    exit(1);
    return;
  }

  const drainCbs: (() => void)[] = [];
  let draining = false;
  let finished = false;
  const finish = (code: number): void => {
    if (finished) return;
    finished = true;
    exit(code);
  };

  const onSignal = (sig: NodeJS.Signals): void => {
    if (draining) {
      finish(0);
      return;
    }
    draining = true;
    log.info({ conn: connectionId, signal: sig }, 'Draining connection');
    for (const cb of drainCbs.splice(0)) {
      try {
        cb();
      } catch (e) {
        log.error({ conn: connectionId, err: errText(e) }, 'drain callback failed');
      }
    }
    setTimeout(() => {
      log.warn({ conn: connectionId }, 'Cleanup timeout, forcing exit');
      finish(0);
    }, o.drainTimeoutMs);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  const ctx: ChildContext = {
    socket,
    connectionId,
    onDrain: (cb) => {
      if (draining) cb();
      else drainCbs.push(cb);
    },
    get draining() {
      return draining;
    },
  };
  Promise.resolve()
    .then(() => o.serve(ctx))
    .then(
      () => finish(0),
      (e: unknown) => {
        log.error({ conn: connectionId }, `Error handling connection in the child process: ${errText(e)}`);
        finish(1);
      },
    );
}
