// Temporary directories for tests, removed again by the caller (usually in `after`/`t.after`).
import { mkdtempSync, rmSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  /** Absolute, symlink-free path of the directory. */
  path: string;
  /** Path of an entry inside the directory. */
  join(...parts: string[]): string;
  /** Removes the directory and everything in it; safe to call twice. */
  cleanup(): void;
}

/** Creates a fresh private (0700) directory under the OS temp dir. */
export function makeTempDir(prefix = 'ssh-proxy-test-'): TempDir {
  // Unix socket paths are limited to ~107 bytes, so keep the base short and resolve symlinks once.
  const path = realpathSync(mkdtempSync(join(tmpdir(), prefix)));
  return {
    path,
    join: (...parts: string[]) => join(path, ...parts),
    cleanup: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** Creates a temp dir and registers its removal with a node:test `after`-style hook. */
export function tempDirFor(after: (fn: () => void) => void, prefix?: string): TempDir {
  const d = makeTempDir(prefix);
  after(() => d.cleanup());
  return d;
}
