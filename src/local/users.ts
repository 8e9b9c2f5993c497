// The local identity service's user directory: `<dataDir>/users.yaml` plus the OS user running the stack.
//
// users.yaml is checked on every lookup (one stat) and re-read when it changed; a malformed file keeps
// the last good version and logs an error naming the file and the problem. The OS user's keys are read
// from `<home>/.ssh/authorized_keys` and every `<home>/.ssh/*.pub` on each lookup, so new keys work at once.
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { isSeq, parseDocument, parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { errText, type Logger } from '../ops/log.js';
import { parseAuthorizedKeyLine, parseAuthorizedKeys, type PublicKey } from './keys.js';
import { parsePasswordHash } from './password.js';

export { hashPassword, verifyPassword } from './password.js';

export interface LocalUser {
  /** Lowercased login name. */
  name: string;
  shell: string;
  sudo: boolean;
  fullname: string;
  email: string;
  keys: PublicKey[];
  /** scrypt hash (see password.ts); undefined = no password login. */
  passwordHash?: string;
  locked: boolean;
  valid: boolean;
  /** Only for the OS user. */
  uid?: number;
  gid?: number;
}

const userSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-" only'),
    shell: z.string().min(1).optional(),
    sudo: z.boolean().optional(),
    fullname: z.string().optional(),
    email: z.string().optional(),
    authorizedKeys: z.array(z.string()).optional(),
    password: z.string().optional(),
    locked: z.boolean().optional(),
    valid: z.boolean().optional(),
  })
  .strict();

const fileSchema = z.object({ users: z.array(userSchema).nullish() }).strict();

/** Parses users.yaml text; throws an Error naming the problem (key path, user, key index). */
export function parseUsersYaml(text: string): Map<string, LocalUser> {
  const doc: unknown = parseYaml(text, { uniqueKeys: true }) ?? {};
  const r = fileSchema.safeParse(doc);
  if (!r.success) throw new Error(z.prettifyError(r.error).replace(/\n+/g, '; '));
  const out = new Map<string, LocalUser>();
  for (const u of r.data.users ?? []) {
    const name = u.name.toLowerCase();
    if (out.has(name)) throw new Error(`duplicate user "${name}"`);
    const keys: PublicKey[] = [];
    (u.authorizedKeys ?? []).forEach((line, i) => {
      const k = parseAuthorizedKeyLine(line);
      if (!k) throw new Error(`user "${name}": authorizedKeys[${i}] is not a valid public key line`);
      keys.push(k);
    });
    if (u.password !== undefined) {
      const p = parsePasswordHash(u.password);
      if (typeof p === 'string') throw new Error(`user "${name}": password: ${p}`);
    }
    out.set(name, {
      name,
      shell: u.shell ?? '/bin/bash',
      sudo: u.sudo ?? false,
      fullname: u.fullname ?? '',
      email: u.email ?? '',
      keys,
      passwordHash: u.password,
      locked: u.locked ?? false,
      valid: u.valid ?? true,
    });
  }
  return out;
}

function readKeysOf(home: string, log: Logger): PublicKey[] {
  const dir = join(home, '.ssh');
  const files: string[] = [join(dir, 'authorized_keys')];
  try {
    for (const f of readdirSync(dir)) if (f.endsWith('.pub')) files.push(join(dir, f));
  } catch {
    return [];
  }
  const keys: PublicKey[] = [];
  for (const f of files) {
    try {
      keys.push(...parseAuthorizedKeys(readFileSync(f, 'utf8')));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        log.warn({ file: f, err: errText(e) }, 'cannot read keys');
    }
  }
  return keys;
}

export interface UserStoreOptions {
  dataDir: string;
  /** Home directory whose `.ssh` authorises the OS user; default: the OS user's home. */
  homeDir?: string;
  log: Logger;
}

export class UserStore {
  readonly file: string;
  private readonly log: Logger;
  private readonly homeDir: string;
  private readonly os: { name: string; uid: number; gid: number; shell: string };
  private users = new Map<string, LocalUser>();
  private signature = '';

  constructor(opts: UserStoreOptions) {
    this.file = join(opts.dataDir, 'users.yaml');
    this.log = opts.log;
    const info = userInfo();
    this.homeDir = opts.homeDir ?? info.homedir;
    this.os = {
      name: info.username.toLowerCase(),
      uid: info.uid,
      gid: info.gid,
      shell: info.shell || '/bin/bash',
    };
    this.refresh();
  }

  /** Re-reads users.yaml if its identity (inode, size, mtime) changed since the last read. */
  refresh(): void {
    let sig: string;
    try {
      const st = statSync(this.file);
      sig = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.mode}`;
      // StrictModes (docs/security.md): anyone who can write the file could give themselves a login.
      if ((st.mode & 0o022) !== 0) {
        if (sig !== this.signature)
          this.log.error(
            { file: this.file },
            `users file ${this.file} is group- or world-writable; refusing it and keeping the last good users (run: chmod go-w '${this.file}')`,
          );
        this.signature = sig;
        return;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.error(
          { file: this.file, err: errText(e) },
          'cannot stat users file; keeping the last good users',
        );
        return;
      }
      sig = 'missing';
    }
    if (sig === this.signature) return;
    this.signature = sig;
    if (sig === 'missing') {
      if (this.users.size) this.log.info({ file: this.file }, 'users file removed; only the OS user remains');
      this.users = new Map();
      return;
    }
    try {
      this.users = parseUsersYaml(readFileSync(this.file, 'utf8'));
      this.log.info({ file: this.file, users: this.users.size }, 'users loaded');
    } catch (e) {
      this.log.error(
        { file: this.file, err: errText(e) },
        `invalid users file ${this.file}: ${errText(e)}; keeping the last good users`,
      );
    }
  }

  /**
   * The user by (case-insensitive) name. The OS user is always present; a users.yaml entry with the
   * same name adds keys and a password to it and overrides its profile fields.
   */
  lookup(username: string): LocalUser | undefined {
    this.refresh();
    const name = username.trim().toLowerCase();
    if (!name) return undefined;
    const fromFile = this.users.get(name);
    if (name !== this.os.name) return fromFile;
    const osUser: LocalUser = {
      name,
      shell: this.os.shell,
      sudo: this.os.uid === 0,
      fullname: '',
      email: '',
      keys: readKeysOf(this.homeDir, this.log),
      locked: false,
      valid: true,
      uid: this.os.uid,
      gid: this.os.gid,
    };
    if (!fromFile) return osUser;
    return { ...fromFile, keys: [...osUser.keys, ...fromFile.keys], uid: osUser.uid, gid: osUser.gid };
  }
}

export class UsersFileError extends Error {}

/**
 * Adds a user to users.yaml (comments and layout of the rest are kept), atomically: the new text is
 * validated, written to a temporary file (mode 0600) in the same directory and renamed over the old
 * one, so a reader never sees half a file. Throws UsersFileError when the current file is invalid or
 * the user exists.
 */
export function addUserToFile(file: string, user: { name: string; authorizedKeys: string[] }): void {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    if (parseUsersYaml(text).has(user.name.toLowerCase()))
      throw new UsersFileError(`user "${user.name}" already exists in ${file}`);
  } catch (e) {
    if (e instanceof UsersFileError) throw e;
    throw new UsersFileError(`${file} is invalid (${errText(e)}); fix it first`);
  }
  const doc = parseDocument(text || 'users: []\n', { uniqueKeys: true });
  const users = doc.get('users');
  const entry = doc.createNode({ name: user.name, authorizedKeys: user.authorizedKeys });
  if (isSeq(users)) users.add(entry);
  else doc.set('users', doc.createNode([{ name: user.name, authorizedKeys: user.authorizedKeys }]));
  const out = doc.toString({ lineWidth: 0 });
  parseUsersYaml(out); // never write what the store would refuse
  const tmp = join(dirname(file), `.users.yaml.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    writeFileSync(tmp, out, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
