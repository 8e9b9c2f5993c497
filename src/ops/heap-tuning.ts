// The V8 heap setting behind the gateway's slow-down after many connections (issue 15, item 1).
//
// After a memory-reducing full GC (V8's memory reducer when the process goes idle, or any forced GC)
// V8 sets the next old-generation limit at a small factor over the live heap: 21 MB live, 33 MB limit,
// 12 MB of slack in the measured case. That slack is less than the young generation's capacity (16 MB),
// so V8 starts a full incremental marking after every scavenge ("Start (allocation limit)" in
// --trace-incremental-marking), and since the data path's live heap never grows, the limit never does
// either. A 512 MiB exec download then ran 96 mark-compacts instead of one, and the gateway's CPU per
// GiB rose from 1.8 to 4.4 s (bench `aging`, --trace-gc). A fixed factor restores the slack: at 2×
// (percent 100) the same aged download still cost 3.6 s/GiB in one of two runs; at 4× (percent 300,
// the top of V8's own dynamic range) fresh and aged cost 1.50 and 1.54 s/GiB (443 and 438 MB/s).
//
// The cost is heap headroom: the old generation may fill to about four times its live size (~22 MB
// live in the gateway, so up to ~90 MB) before a full GC runs; RSS after a GC is unchanged (120 MiB).
import v8 from 'node:v8';

/** Old-generation limit = live size × (1 + this / 100) after each full GC. */
export const HEAP_GROWING_PERCENT = 300;

/** Applies the setting to this process. V8 reads it at every full GC, so it works after start-up. */
export function tuneHeap(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
