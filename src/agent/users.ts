// Resolves `as_user` to a passwd entry and decides whether the agent may run processes as that user.
import { execFile } from 'node:child_process';
import { userInfo } from 'node:os';
import { promisify } from 'node:util';
import { ProxyError } from '../common/errors.js';
import { isPortableUserName, runAsProblem } from '../common/user-names.js';

const run = promisify(execFile);

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** Who a session runs as, and what to change before exec (undefined = keep the agent's credentials). */
export interface RunAs {
  user: UserInfo;
  /** Session home (cwd and HOME): the user's home, or the agent's `home` override for the default user. */
  home: string;
  creds?: { uid: number; gid: number; groups: number[] };
}

/** `getent passwd NAME`; undefined when the user does not exist. */
export async function lookupUser(name: string): Promise<UserInfo | undefined> {
  // getent treats a leading '-' as an option and digits as a uid; both are not user names here.
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(name) || /^\d+$/.test(name)) return undefined;
  let out: string;
  try {
    out = (await run('getent', ['passwd', name], { timeout: 5000 })).stdout;
  } catch {
    return undefined;
  }
  const f = out.trim().split('\n')[0]?.split(':');
  if (!f || f.length < 7) return undefined;
  return { name: f[0] ?? name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/', shell: f[6] ?? '' };
}

/** Supplementary group ids of a user (`id -G`); the primary gid alone when that fails. */
export async function groupsOf(user: UserInfo): Promise<number[]> {
  try {
    const out = (await run('id', ['-G', user.name], { timeout: 5000 })).stdout;
    const ids = out.trim().split(/\s+/).map(Number).filter(Number.isInteger);
    return ids.length ? ids : [user.gid];
  } catch {
    return [user.gid];
  }
}

function ownUser(): UserInfo {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  try {
    const u = userInfo();
    return { name: u.username, uid, gid, home: u.homedir, shell: u.shell ?? '' };
  } catch {
    // A uid without a passwd entry (common in containers).
    return { name: String(uid), uid, gid, home: process.env.HOME ?? '/', shell: '' };
  }
}

/**
 * The workspace's user and its rights, from the agent's launch configuration (`--user`, `--sudo`).
 * `sudo` undefined = not configured: the agent then behaves as the reference daemon (any existing
 * user when it runs as root), only with the strict name rule.
 */
export interface WorkspaceUserPolicy {
  user?: string;
  sudo?: boolean;
}

export class UserResolver {
  readonly own: UserInfo;
  private readonly isRoot: boolean;
  private readonly defaultUser: string | undefined;
  private readonly sudo: boolean | undefined;

  constructor(
    policy: WorkspaceUserPolicy | string | undefined,
    private readonly homeOverride: string | undefined,
  ) {
    const p = typeof policy === 'string' ? { user: policy } : (policy ?? {});
    this.defaultUser = p.user || undefined;
    this.sudo = p.sudo;
    this.own = ownUser();
    this.isRoot = this.own.uid === 0;
  }

  /** The name "" resolves to. */
  get defaultName(): string {
    return this.defaultUser || this.own.name;
  }

  /**
   * Throws ProxyError 'denied' (→ PERMISSION_DENIED) when the agent may not act as that user and
   * 'not_found' (→ UNKNOWN, like the daemon's user-resolution errors) when the user does not exist.
   * The name is used exactly as sent: never trimmed, lowercased or unescaped.
   */
  async resolve(asUser: string): Promise<RunAs> {
    if (asUser !== '' && !isPortableUserName(asUser)) {
      throw new ProxyError('denied', 'cannot run as that user: not a valid user name');
    }
    const name = asUser || this.defaultName;
    if (this.sudo !== undefined) {
      const problem = runAsProblem(this.defaultName, name, this.sudo);
      if (problem) throw new ProxyError('denied', `cannot run as user '${name}': ${problem}`);
    }
    const isDefault = name === this.defaultName;
    if (name === this.own.name) {
      const passwd = await lookupUser(name);
      const user = passwd ?? this.own;
      return { user, home: (isDefault && this.homeOverride) || user.home };
    }
    if (!this.isRoot) {
      throw new ProxyError(
        'denied',
        `cannot run as user '${name}': the agent runs as '${this.own.name}', not root`,
      );
    }
    const user = await lookupUser(name);
    if (!user) throw new ProxyError('not_found', `user '${name}' does not exist`);
    if (!Number.isInteger(user.uid) || !Number.isInteger(user.gid)) {
      throw new ProxyError('failed', `user '${name}' has an invalid passwd entry`);
    }
    const home = (isDefault && this.homeOverride) || user.home;
    if (user.uid === this.own.uid && user.gid === this.own.gid) return { user, home };
    return { user, home, creds: { uid: user.uid, gid: user.gid, groups: await groupsOf(user) } };
  }
}
