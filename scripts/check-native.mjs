#!/usr/bin/env node
// ssh2's install never fails when its native crypto binding does not build; the data path is about
// twice as slow without it (see node-notes §15). Fail loudly here instead, and check node-pty and
// our malloc-trim addon too.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const problems = [];
try {
  if (!require('ssh2/lib/protocol/crypto.js').bindingAvailable)
    problems.push('ssh2 native crypto binding is not built');
} catch (e) {
  problems.push(`ssh2 cannot be loaded: ${e.message}`);
}
try {
  require('node-pty');
} catch (e) {
  problems.push(`node-pty native module cannot be loaded: ${e.message}`);
}
// Built by `npm run build` (scripts/build-native.mjs); without it the gateway keeps the memory of every
// burst of connections (src/ops/native-memory.ts).
let trimNote = '';
try {
  const trim = require('../dist/native/malloc_trim.node');
  if (!trim.supported) trimNote = ' (malloc_trim: not in this C library, trimming off)';
} catch (e) {
  problems.push(`the malloc-trim addon cannot be loaded (run "npm run build"): ${e.message.split('\n')[0]}`);
}
if (problems.length) {
  console.error(
    `native modules: ${problems.join('; ')}.\nRun "npm rebuild ssh2 node-pty" (needs python3, make, g++).`,
  );
  process.exit(1);
}
console.log(`native modules: ssh2 crypto binding, node-pty and malloc-trim are available${trimNote}`);
