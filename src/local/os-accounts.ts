// Which OS account a local workspace runs as (docs/security.md, "Real users").
//
// Run as root, the stack is multi-tenant: each users.yaml user gets an OS account of the same name,
// created with useradd the first time its workspace starts and marked with a fixed GECOS comment; an
// existing account without that mark (a system user, a person's own account) is never taken over,
// and uid 0 never is. The account owns only its workspace home; the agent runs as root and starts
// the user's sessions with the account's uid, gid and groups. The OS user running the stack keeps its
// own account. Run as an ordinary user, every workspace runs as that user: the stack is then
// single-tenant (anyone who can log in can read what that user can).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { promisify } from 'node:util';
import { isPortableUserName } from '../common/user-names.js';

const run = promisify(execFile);

/** GECOS comment of the accounts the stack created (and the only ones it uses). */
export const ACCOUNT_MARK = 'ssh-proxy local workspace user';

export interface WorkspaceAccount {
  /** OS account the workspace's sessions run as. */
  osUser: string;
  uid: number;
  gid: number;
  /** From users.yaml: whether `user=<other>` (root included) is allowed. */
  sudo: boolean;
  /** True when the workspace runs as the stack's own user (single-tenant mode, or that user itself). */
  own: boolean;
}

export interface ProfileSource {
  /** The users.yaml/OS-user profile, or undefined for an unknown user. */
  lookup(name: string): { name: string; shell: string; sudo: boolean } | undefined;
}

export interface AccountResolver {
  /** Throws an Error whose message the user may see when there is no usable account. */
  resolve(username: string): Promise<WorkspaceAccount>;
  readonly multiTenant: boolean;
}

interface Passwd {
  name: string;
  uid: number;
  gid: number;
  gecos: string;
}

async function getent(name: string): Promise<Passwd | undefined> {
  try {
    const out = (await run('getent', ['passwd', name], { timeout: 5000 })).stdout.trim().split('\n')[0];
    const f = out?.split(':');
    if (!f || f.length < 7) return undefined;
    return { name: f[0] ?? name, uid: Number(f[2]), gid: Number(f[3]), gecos: f[4] ?? '' };
  } catch {
    return undefined;
  }
}

export function createAccountResolver(profiles: ProfileSource): AccountResolver {
  const me = userInfo();
  const multiTenant = me.uid === 0;
  const ownAccount = (sudo: boolean): WorkspaceAccount => ({
    osUser: me.username,
    uid: me.uid,
    gid: me.gid,
    sudo,
    own: true,
  });
  // useradd edits /etc/passwd; one at a time.
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = chain.then(f, f);
    chain = p.catch(() => undefined);
    return p;
  };

  const ensureAccount = (name: string, shell: string): Promise<Passwd> =>
    serial(async () => {
      let pw = await getent(name);
      if (!pw) {
        const sh = existsSync(shell) ? shell : '/bin/sh';
        try {
          await run(
            'useradd',
            [
              '--comment',
              ACCOUNT_MARK,
              '--no-create-home',
              '--home-dir',
              '/nonexistent',
              '--shell',
              sh,
              '--user-group',
              name,
            ],
            { timeout: 15_000 },
          );
        } catch (e) {
          const msg = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
          throw new Error(`cannot create the OS account "${name}" for the workspace: ${msg}`);
        }
        pw = await getent(name);
        if (!pw) throw new Error(`the OS account "${name}" was created but cannot be looked up`);
      }
      return pw;
    });

  return {
    multiTenant,
    async resolve(username: string): Promise<WorkspaceAccount> {
      const profile = profiles.lookup(username);
      if (!profile) throw new Error(`user "${username}" is not known to the local identity`);
      if (!multiTenant || profile.name === me.username.toLowerCase())
        return ownAccount(profile.sudo && multiTenant);
      const name = profile.name;
      if (!isPortableUserName(name) || name.length > 32 || /^\d+$/.test(name))
        throw new Error(
          `user "${name}" cannot be an OS account name (POSIX portable, at most 32 characters)`,
        );
      const pw = await ensureAccount(name, profile.shell);
      if (pw.gecos !== ACCOUNT_MARK)
        throw new Error(
          `the OS account "${name}" exists and was not created by the local stack; refusing to run a workspace as it (rename the user in users.yaml)`,
        );
      if (pw.uid === 0 || !Number.isInteger(pw.uid) || !Number.isInteger(pw.gid))
        throw new Error(`the OS account "${name}" has an unusable uid`);
      return { osUser: name, uid: pw.uid, gid: pw.gid, sudo: profile.sudo, own: false };
    },
  };
}
