// Loaded with `--import` into a gateway process the bench spawned with an IPC channel (the production entry
// in the aging scenario; it works the same for another checkout's build, since it is the bench's code, not
// the gateway's). The message 'stats' is answered with {stats}: memory after a forced GC (the process runs
// with --expose-gc) and the count of each kind of live handle and timer (process.getActiveResourcesInfo),
// which is what shows a timer or socket left behind per connection. That list leaves out unref'd timers
// (AbortSignal.timeout makes those), so with --expose-internals every pending timer is counted too
// (`timers`, and `timers:<ms>` per duration). Without an IPC channel (a forked connection child inherits
// the --import) it does nothing.
import { createRequire } from 'node:module';

/** Pending timers per duration, ref'd or not: Node keeps one linked list per duration. */
function timerCounts() {
  let internal;
  try {
    internal = createRequire(import.meta.url)('internal/timers');
  } catch {
    return {};
  }
  const out = { timers: 0 };
  for (const [ms, list] of Object.entries(internal.timerListMap ?? {})) {
    let n = 0;
    for (let t = list._idleNext; t && t !== list; t = t._idleNext) n++;
    out.timers += n;
    if (n > 0) out[`timers:${ms}`] = n;
  }
  return out;
}

if (typeof process.send === 'function') {
  process.on('message', (m) => {
    if (m !== 'stats') return;
    globalThis.gc?.();
    const mem = process.memoryUsage();
    const stats = {
      rss: mem.rss,
      heapUsed: mem.heapUsed,
      heapTotal: mem.heapTotal,
      external: mem.external,
      arrayBuffers: mem.arrayBuffers,
      ...timerCounts(),
    };
    for (const r of process.getActiveResourcesInfo())
      stats[`resource:${r}`] = (stats[`resource:${r}`] ?? 0) + 1;
    process.send?.({ stats });
  });
  // The channel must not keep the gateway alive, nor stop it from exiting on its own signal handling.
  process.channel?.unref();
}
