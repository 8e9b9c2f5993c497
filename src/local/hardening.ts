// File and directory rules of the local stack (docs/security.md): sshd's StrictModes for what the
// stack trusts, and the per-stack service tokens only the gateway holds.
//
// A group- or world-writable users.yaml, policy.yaml or data directory lets another local user grant
// themselves a login, sudo or any action, so the stack refuses to start on one (and the services keep
// their last good version when a file becomes writable later). The message names the file and the
// chmod to run.
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The problem with a file's or directory's permissions, or undefined when sshd would accept them. */
export function strictModeProblem(path: string, st: { mode: number; uid: number }): string | undefined {
  const me = process.getuid?.() ?? 0;
  if (st.uid !== me && st.uid !== 0)
    return `${path} is owned by uid ${st.uid}, not by this user or root; refusing it (run: chown ${me} '${path}')`;
  if ((st.mode & 0o022) !== 0)
    return `${path} is group- or world-writable; refusing it (run: chmod go-w '${path}')`;
  return undefined;
}

/** Throws an Error naming the path and the fix when `path` exists and fails strictModeProblem. */
export function requireStrictMode(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const problem = strictModeProblem(path, st);
  if (problem) throw new Error(problem);
}

/**
 * Makes `dir` (created if needed) and checks it as StrictModes does. An existing directory is not
 * silently re-moded: a writable one is refused; a readable one is tightened to `mode` with no loss.
 */
export function ensureStackDir(dir: string, mode: number): void {
  mkdirSync(dir, { recursive: true, mode });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  const problem = strictModeProblem(dir, st);
  if (problem) throw new Error(problem);
  if ((st.mode & 0o777) !== mode) chmodSync(dir, mode);
}

/** The services whose clients the gateway authenticates with a bearer token. */
export const TOKEN_SERVICES = ['agent', 'identity', 'provisioner', 'authz', 'session', 'nats'] as const;
export type TokenService = (typeof TOKEN_SERVICES)[number];

export interface StackTokens {
  dir: string;
  /** Path of each service's token file (mode 0600 in a 0700 directory). */
  files: Record<TokenService, string>;
  /** The NATS token itself (nats-server reads it from its own 0600 config). */
  natsToken: string;
}

/**
 * Writes fresh random tokens for this run of the stack into `<dataDir>/tokens` (0700), one file per
 * service (0600), atomically (write a temporary file, rename). A token from an earlier run is never
 * reused, so a copy taken then is worthless now.
 */
export function createStackTokens(dataDir: string): StackTokens {
  const dir = join(dataDir, 'tokens');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  chmodSync(dir, 0o700);
  const files = {} as Record<TokenService, string>;
  let natsToken = '';
  for (const svc of TOKEN_SERVICES) {
    const token = randomBytes(32).toString('base64url');
    if (svc === 'nats') natsToken = token;
    const file = join(dir, svc);
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, `${token}\n`, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
    files[svc] = file;
  }
  return { dir, files, natsToken };
}
