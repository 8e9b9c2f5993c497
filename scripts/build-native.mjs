#!/usr/bin/env node
// Compiles native/malloc-trim (src/ops/native-memory.ts says why the gateway needs it) and copies the
// addon to dist/native/, so the bundle and the images carry it with the rest of dist/. Uses the node-gyp
// that npm ships (npm sets npm_config_node_gyp for its scripts) and the Node headers npm is set up with,
// as ssh2's and node-pty's bindings do. Skips the compiler when the addon is newer than its sources.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'native', 'malloc-trim');
const built = join(dir, 'build', 'Release', 'malloc_trim.node');
const out = join(root, 'dist', 'native', 'malloc_trim.node');
const sources = ['malloc_trim.c', 'binding.gyp'].map((f) => join(dir, f));

const mtime = (f) => (existsSync(f) ? statSync(f).mtimeMs : 0);
if (mtime(built) < Math.max(...sources.map(mtime))) {
  const gyp =
    process.env.npm_config_node_gyp ??
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    );
  try {
    execFileSync(process.execPath, [gyp, 'rebuild', '--silent', '--directory', dir], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  } catch (e) {
    console.error(`native/malloc-trim did not build (needs python3, make and a C compiler): ${e.message}`);
    process.exit(1);
  }
}
mkdirSync(dirname(out), { recursive: true });
copyFileSync(built, out);
