// Which connection (and channel) the running code belongs to, carried across async hops, so a
// last-resort error handler can still name the connection it hit.
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';

export interface RequestContext {
  conn: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

/**
 * Runs `f` in the context of connection `conn`, and makes every event `emitter` emits from now on run
 * there too (ssh2 emits from socket callbacks whose async context is the listener's, not ours).
 */
export function withConnectionContext<T>(conn: string, emitter: EventEmitter, f: () => T): T {
  return storage.run({ conn }, () => {
    emitter.emit = AsyncResource.bind(emitter.emit.bind(emitter)) as typeof emitter.emit;
    return f();
  });
}
