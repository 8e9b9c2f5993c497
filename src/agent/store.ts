// The agent's registry of shells and execs, keyed by the gateway's channel id (session-id / exec-id).
//
// Ids are never reused: a finished entry stays (to answer ALREADY_EXISTS) until it has been finished
// for more than a minute, checked every minute, as the daemon does (§7). The store only holds items;
// each item owns its process, so detach/re-attach can later keep a Shell here with no stream attached.
import { ProxyError } from '../common/errors.js';

export type ItemKind = 'shell' | 'exec';

export interface StoreItem {
  readonly id: string;
  readonly kind: ItemKind;
  /** The session leader's pid; 0 before start or when unknown. */
  readonly pid: number;
  /** OS user the process runs as. */
  readonly user: string;
  readonly running: boolean;
  /** Kills the item's whole process session (agent shutdown). */
  kill(): void;
}

interface Entry {
  item?: StoreItem;
  finishedAt?: number;
}

export class SessionStore {
  private readonly entries = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly keepFinishedMs = 60_000) {}

  /** Claims an id before the (async) start; throws ProxyError 'already_exists' when taken. */
  reserve(id: string, what: string): void {
    if (this.entries.has(id)) throw new ProxyError('already_exists', `${what} '${id}' already exists`);
    this.entries.set(id, {});
  }

  /** Attaches the started item to a reserved id (not to one already finished: that is only an id now). */
  set(item: StoreItem): void {
    const e = this.entries.get(item.id);
    if (!e) this.entries.set(item.id, { item });
    else if (e.finishedAt === undefined) e.item = item;
  }

  /** Gives a reserved id back when the start failed. */
  release(id: string): void {
    const e = this.entries.get(id);
    if (e && !e.item) this.entries.delete(id);
  }

  /**
   * Marks an id finished: it no longer resolves, but blocks reuse until purged. Only the id is kept:
   * the item (its process, streams and buffers) is let go at once, not a minute or two later.
   */
  finish(id: string, now = Date.now()): void {
    const e = this.entries.get(id);
    if (e && e.finishedAt === undefined) {
      e.finishedAt = now;
      e.item = undefined;
    }
  }

  /** A live (not finished) item. */
  get(id: string): StoreItem | undefined {
    const e = this.entries.get(id);
    return e && e.finishedAt === undefined ? e.item : undefined;
  }

  /** All live items. */
  live(): StoreItem[] {
    const out: StoreItem[] = [];
    for (const e of this.entries.values()) if (e.item && e.finishedAt === undefined) out.push(e.item);
    return out;
  }

  /** Drops entries finished for longer than keepFinishedMs. */
  purge(now = Date.now()): void {
    for (const [id, e] of this.entries) {
      if (e.finishedAt !== undefined && now - e.finishedAt > this.keepFinishedMs) this.entries.delete(id);
    }
  }

  startPurging(intervalMs = 60_000): void {
    this.timer ??= setInterval(() => this.purge(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }
}
