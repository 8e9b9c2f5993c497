#!/usr/bin/env node
// Writes dist/build-info.json: the VERSION and COMMIT that `ssh-proxy -v` (and the control service's
// GetVersionInfo) report, fixed at build time so nothing runs git at run time (reference-behaviour.md §1).
//   VERSION: $SSH_PROXY_VERSION, else `git describe --tags --match 'v*'`, else 0.0.0
//   COMMIT:  $SSH_PROXY_COMMIT,  else `git rev-parse --short HEAD`,       else 0000000
// The environment wins so image builds (whose context has no .git) get the values make computed.
// Written into dist/, which is ignored by git, so a build never dirties the work tree.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

function git(args) {
  try {
    const out = execFileSync('git', args, {
      cwd: root,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    });
    return out.toString().trim() || undefined;
  } catch {
    return undefined;
  }
}

// Printable, single-line, bounded: these strings end up in logs and in a gRPC answer.
function clean(value, fallback) {
  const v = (value ?? '').trim();
  return /^[\w.+~/-]{1,128}$/.test(v) ? v : fallback;
}

const env = process.env;
const info = {
  version: clean(env.SSH_PROXY_VERSION || git(['describe', '--tags', '--match', 'v*']), '0.0.0'),
  commit: clean(env.SSH_PROXY_COMMIT || git(['rev-parse', '--short', 'HEAD']), '0000000'),
};
// --out FILE writes elsewhere (tests); the default is what dist/ops/version.js reads.
const outArg = process.argv.indexOf('--out');
const outFile =
  outArg > 0 && process.argv[outArg + 1]
    ? resolve(process.argv[outArg + 1])
    : join(root, 'dist', 'build-info.json');
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, `${JSON.stringify(info)}\n`);
console.log(`build info: version ${info.version}, commit ${info.commit}`);
