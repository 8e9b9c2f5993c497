// The short load run inside npm test: 40 concurrent connections mixing exec up/down, -L and sftp,
// every stream hashed at both ends. The full run is `npm run load` (100 connections, 10 GiB).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReport, runLoad } from '../../bench/load/run.js';

test(
  'load (short): 100 concurrent connections, no failures, no mismatches',
  { timeout: 300_000 },
  async (t) => {
    // Two operations per connection, 64 KiB each: the cost is the logins.
    const r = await runLoad({ connections: 40, totalBytes: 40 * 128 * 1024, opBytes: 64 * 1024 });
    t.diagnostic(formatReport(r));
    assert.equal(r.failures, 0, formatReport(r));
    assert.equal(r.mismatches, 0, formatReport(r));
    for (const k of ['exec-up', 'exec-down', 'forward', 'sftp'] as const)
      assert.ok(r.ops[k] > 0, `some ${k}`);
  },
);
