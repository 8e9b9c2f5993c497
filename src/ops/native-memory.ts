// Gives freed native memory back to the system after a burst. The gateway's buffers (SSH packets, HTTP/2
// frames, relay frames) are malloc'd outside the JS heap; when a burst of connections ends, glibc keeps
// the freed pages because they are scattered between live allocations and free() only ever trims the
// top of the heap. Measured: 50 connections each moving 64 MiB left the gateway at 517 MiB against 128
// idle, with a 20 MiB JS heap; one malloc_trim(0) took it to 181 MiB. Neither MALLOC_ARENA_MAX nor
// MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ changed it. Node has no binding for malloc_trim, so a
// tiny addon (native/malloc-trim, built into dist/native by `npm run build`) provides it.
import { createRequire } from 'node:module';
import type { Logger } from './log.js';

interface TrimAddon {
  /** glibc: malloc_trim(0), true when memory was released. Elsewhere (musl): false, no effect. */
  trim(): boolean;
  /** False when the C library has no malloc_trim (the addon then does nothing). */
  supported: boolean;
}

/** Where the addon is: dist/native from dist/ops, or from src/ops when run from source (tsx). */
const CANDIDATES: ReadonlyArray<[string, (r: NodeJS.Require) => unknown]> = [
  ['../native/malloc_trim.node', (r) => r('../native/malloc_trim.node')],
  ['../../dist/native/malloc_trim.node', (r) => r('../../dist/native/malloc_trim.node')],
];

let loaded: TrimAddon | null | undefined;
let loadError = '';

/** The addon, or null when it is not built or not loadable here (`nativeTrimProblem` says why). */
export function nativeTrim(): TrimAddon | null {
  if (loaded !== undefined) return loaded;
  const require = createRequire(import.meta.url);
  const problems: string[] = [];
  for (const [c, load] of CANDIDATES) {
    try {
      loaded = load(require) as TrimAddon;
      return loaded;
    } catch (e) {
      problems.push(`${c}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
  }
  loadError = problems.join('; ');
  loaded = null;
  return loaded;
}

export function nativeTrimProblem(): string {
  nativeTrim();
  return loadError;
}

export interface TrimmerOptions {
  log: Logger;
  /** How often RSS is looked at (default 10 s). The timer never keeps the process alive. */
  intervalMs?: number;
  /** Trim when RSS grew at least this much over the lowest reading since the last trim (16 MiB), and
   * once more at the next look after a trim that released 4 MiB or more. */
  minGrowthBytes?: number;
  /** Also trim this often (30 s) while RSS is `minGrowthBytes` above the lowest reading ever: memory
   * freed late (a GC that collects a closed connection's buffers a while after it ended) changes
   * nothing that RSS shows, so only a periodic trim finds it. */
  periodicMs?: number;
  /** Called after each trim with the bytes it released (metrics). */
  onTrim?: (releasedBytes: number) => void;
  /** For tests: the trim and the RSS reading; default the addon and process.memoryUsage.rss. */
  trim?: () => boolean;
  rss?: () => number;
}

/** A trim that released at least this much is followed by another at the next look. */
const FOLLOW_UP_BYTES = 4 * 2 ** 20;

export interface Trimmer {
  /** Trims now (whatever the growth); returns the bytes released. */
  trimNow(): number;
  stop(): void;
}

/**
 * Looks at RSS every `intervalMs` and trims when it grew since the floor (and see `periodicMs`), so
 * memory returns within one interval of a burst's end. A trim that finds nothing to release costs
 * about 2 µs; under sustained load it releases little, at most once per interval.
 * Returns null (and logs why) when no trim is available here.
 */
export function startMemoryTrimmer(o: TrimmerOptions): Trimmer | null {
  const addon = o.trim ? null : nativeTrim();
  const trim = o.trim ?? (addon?.supported ? () => addon.trim() : undefined);
  if (!trim) {
    // A missing addon is a build problem (warn); a C library without malloc_trim (musl) is expected.
    const reason = addon ? 'the C library has no malloc_trim' : nativeTrimProblem();
    (addon ? o.log.debug.bind(o.log) : o.log.warn.bind(o.log))(
      { reason },
      'native memory trimming is off: memory freed after a burst of connections may stay with the process',
    );
    return null;
  }
  const rss = o.rss ?? (() => process.memoryUsage.rss());
  const minGrowth = o.minGrowthBytes ?? 16 * 2 ** 20;
  const periodicMs = o.periodicMs ?? 30_000;
  let floor = rss();
  let lowest = floor;
  let lastTrim = Date.now();
  // A burst ends over several seconds: memory freed after a trim does not show in RSS (that is the
  // problem), so a trim that released something is followed by one more at the next look.
  let followUp = false;
  const trimNow = (): number => {
    const before = rss();
    const t0 = process.hrtime.bigint();
    trim();
    const after = rss();
    floor = after;
    lowest = Math.min(lowest, after);
    lastTrim = Date.now();
    const released = Math.max(0, before - after);
    followUp = released >= FOLLOW_UP_BYTES;
    o.onTrim?.(released);
    o.log.debug(
      { rssBefore: before, rssAfter: after, ms: Number(process.hrtime.bigint() - t0) / 1e6 },
      'returned freed native memory',
    );
    return released;
  };
  const timer = setInterval(() => {
    const now = rss();
    lowest = Math.min(lowest, now);
    const due = Date.now() - lastTrim >= periodicMs && now - lowest >= minGrowth;
    if (followUp || due || now - floor >= minGrowth) trimNow();
    else floor = Math.min(floor, now);
  }, o.intervalMs ?? 10_000);
  timer.unref();
  return { trimNow, stop: () => clearInterval(timer) };
}
