// Where a direct-streamlocal DIAL may go. Relative paths are the workspace user's: they resolve in the
// session home and must stay inside it (no `..` out of it). An agent running as root dials for an
// unprivileged workspace user only what that user could reach itself: every directory on the way
// searchable and the socket writable for the user's uid/groups (connect(2)'s own rules), so the
// agent's privileges never open another user's socket.
import { realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';

export interface Creds {
  uid: number;
  gid: number;
  groups: number[];
}

/** The absolute path to dial, or a reason to refuse. */
export function resolveDialPath(path: string, home: string): { path: string } | { problem: string } {
  if (path.includes('\0')) return { problem: 'socket path contains a NUL byte' };
  if (isAbsolute(path)) return { path: resolve(path) };
  const abs = resolve(home, path);
  const rel = relative(home, abs);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel))
    return { problem: `relative socket path ${JSON.stringify(path)} leaves the workspace home` };
  return { path: abs };
}

function allowed(mode: number, uid: number, gid: number, c: Creds, bit: 1 | 2 | 4): boolean {
  if (c.uid === 0) return true;
  if (uid === c.uid) return (mode & (bit << 6)) !== 0;
  if (gid === c.gid || c.groups.includes(gid)) return (mode & (bit << 3)) !== 0;
  return (mode & bit) !== 0;
}

/**
 * Undefined when a process with `creds` may connect to the socket at `path`, else why not. Symlinks
 * are resolved first; every directory of the real path needs search permission, the socket write.
 */
export async function mayConnect(path: string, creds: Creds): Promise<string | undefined> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    return undefined; // let connect() report ENOENT and friends
  }
  // Every directory of the literal path too: a symlink inside an unsearchable directory is no way in.
  const dirs = new Set<string>();
  for (const p of [path, real]) {
    for (let d = dirname(p); ; d = dirname(d)) {
      dirs.add(d);
      if (d === dirname(d)) break;
    }
  }
  for (const d of dirs) {
    try {
      const st = await stat(d);
      if (!allowed(st.mode, st.uid, st.gid, creds, 1)) return `permission denied on ${d}`;
    } catch {
      return `cannot reach ${d}`;
    }
  }
  const st = await stat(real).catch(() => undefined);
  if (!st) return undefined;
  if (!allowed(st.mode, st.uid, st.gid, creds, 2)) return `permission denied on ${path}`;
  return undefined;
}
