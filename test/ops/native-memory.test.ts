import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { pino } from 'pino';

import { nativeTrim, nativeTrimProblem, startMemoryTrimmer } from '../../src/ops/native-memory.js';
import { waitFor } from '../helpers/wait.js';

const MIB = 2 ** 20;
const quiet = pino({ level: 'silent' });

describe('native memory trimming', () => {
  it('the addon is built and supported on this (glibc) machine', () => {
    const addon = nativeTrim();
    assert.ok(addon, `addon not loadable: ${nativeTrimProblem()}`);
    assert.equal(addon.supported, true);
  });

  it('hands back the memory a burst left scattered in the heap, which free() alone keeps', () => {
    // A child process, so the test runner's own memory does not blur the readings. 200 MiB of 64 KiB
    // buffers (below glibc's mmap threshold, so they come from the heap, as the gateway's packets do),
    // every 16th kept alive so the freed ones are holes that free() cannot return from the top.
    const script = `
      const { nativeTrim } = await import(${JSON.stringify(new URL('../../src/ops/native-memory.ts', import.meta.url).href)});
      const rss = () => process.memoryUsage.rss();
      const base = rss();
      let bufs = Array.from({ length: 3200 }, () => Buffer.allocUnsafeSlow(64 * 1024).fill(1));
      const pins = bufs.filter((_b, i) => i % 16 === 0);
      bufs = null;
      for (let i = 0; i < 4; i++) { gc(); await new Promise((r) => setImmediate(r)); }
      const before = rss();
      nativeTrim().trim();
      const after = rss();
      console.log(JSON.stringify({ base, before, after, pins: pins.length }));
    `;
    const out = execFileSync(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8', timeout: 60_000 },
    );
    const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, number>;
    const mib = (n = 0) => (n / MIB).toFixed(0);
    const detail = `base ${mib(r.base)} MiB, before trim ${mib(r.before)}, after ${mib(r.after)}`;
    // Without the trim the freed 187 MiB stay resident; with it at least 128 MiB go back.
    assert.ok((r.before ?? 0) - (r.base ?? 0) > 128 * MIB, `the burst's memory was not kept: ${detail}`);
    assert.ok((r.before ?? 0) - (r.after ?? 0) > 128 * MIB, `the trim released too little: ${detail}`);
  });

  it('trims when RSS grew past the floor, and not while it stays near it', async () => {
    let rss = 100 * MIB;
    let reads = 0;
    const released: number[] = [];
    const trimmer = startMemoryTrimmer({
      log: quiet,
      intervalMs: 5,
      minGrowthBytes: 16 * MIB,
      rss: () => {
        reads++;
        return rss;
      },
      trim: () => {
        rss = 110 * MIB;
        return true;
      },
      onTrim: (n) => released.push(n),
    });
    assert.ok(trimmer);
    try {
      // 8 MiB of growth: below the threshold, so several looks pass without a trim.
      rss = 108 * MIB;
      const seen = reads;
      await waitFor(() => reads >= seen + 5, { what: 'five RSS readings' });
      assert.deepEqual(released, []);
      // A burst: 300 MiB over the floor is trimmed back.
      rss = 400 * MIB;
      await waitFor(() => released.length >= 1, { what: 'a trim after the burst' });
      assert.equal(released[0], 290 * MIB);
      // It released something, so one more trim follows at the next look (the burst's tail); that one
      // released nothing, and the post-trim reading is the floor: no reason to trim again.
      await waitFor(() => released.length >= 2, { what: 'the follow-up trim' });
      assert.equal(released[1], 0);
      const again = reads;
      await waitFor(() => reads >= again + 5, { what: 'five more readings' });
      assert.equal(released.length, 2);
      assert.equal(trimmer.trimNow(), 0);
      assert.equal(released.length, 3);
    } finally {
      trimmer.stop();
    }
  });

  it('trims periodically while RSS stays well above its lowest, for memory freed after the last trim', async () => {
    let rss = 100 * MIB;
    let reads = 0;
    const released: number[] = [];
    const trimmer = startMemoryTrimmer({
      log: quiet,
      intervalMs: 5,
      periodicMs: 50,
      minGrowthBytes: 16 * MIB,
      rss: () => {
        reads++;
        return rss;
      },
      trim: () => true, // releases nothing: RSS stays where it is
      onTrim: (n) => released.push(n),
    });
    assert.ok(trimmer);
    try {
      rss = 300 * MIB; // a burst: trimmed at once (growth), releasing nothing
      await waitFor(() => released.length >= 1, { what: 'the growth trim' });
      // No growth since, but 200 MiB above the lowest reading: trimmed again each period.
      await waitFor(() => released.length >= 3, { what: 'two periodic trims' });
      assert.deepEqual(released.slice(0, 3), [0, 0, 0]);
      // Back near the lowest reading: nothing more to look for.
      rss = 110 * MIB;
      const n = released.length;
      const seen = reads;
      // 40 looks 5 ms apart span at least four periods.
      await waitFor(() => reads >= seen + 40, { what: 'forty more looks', timeoutMs: 10_000 });
      assert.equal(released.length, n);
    } finally {
      trimmer.stop();
    }
  });

  it('is off, with a log line naming why, when the C library has no malloc_trim', () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
    const addon = nativeTrim();
    assert.ok(addon);
    // Simulate a C library without malloc_trim: the addon says unsupported.
    const supported = addon.supported;
    Object.defineProperty(addon, 'supported', { value: false, configurable: true, writable: true });
    try {
      assert.equal(startMemoryTrimmer({ log }), null);
    } finally {
      Object.defineProperty(addon, 'supported', { value: supported, configurable: true, writable: true });
    }
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? '', /native memory trimming is off/);
    assert.match(lines[0] ?? '', /no malloc_trim/);
  });
});
