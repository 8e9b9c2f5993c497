// How session processes are started: shell choice, environment, and the exec wrapper that sets
// argv[0] (login shells are "-bash") and switches uid/gid/supplementary groups.
//
// node-pty always execs with argv[0] = file and cannot set supplementary groups (it would leave a
// root agent's groups on the child), and child_process drops them entirely. A tiny Perl wrapper
// (perl-base is part of every Debian-like image) does setgroups+setgid+setuid and `exec {file} argv0`
// in the child, keeping the pid, so process-group handling is unchanged.
import { isUtf8 } from 'node:buffer';
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsc, statSync } from 'node:fs';
import { basename, delimiter, join } from 'node:path';
import * as pty from 'node-pty';
import { ProxyError } from '../common/errors.js';
import { forgetSession, recordSession } from './session-registry.js';

export interface LaunchSpec {
  /** Absolute path of the program. */
  file: string;
  /** argv[0] as the program sees it. */
  argv0: string;
  /** Arguments; a Buffer is passed as its exact bytes (through the wrapper; Node would re-encode). */
  args: (string | Buffer)[];
  cwd: string;
  env: Record<string, string>;
  /** `NAME=VALUE` entries that are not valid UTF-8, applied over `env` by the wrapper. */
  rawEnv?: Buffer[];
  /** Set SSH_TTY to the controlling terminal's name, as sshd does for PTY sessions. */
  sshTty?: boolean;
  creds?: { uid: number; gid: number; groups: number[] };
}

// Arguments after `--`: uid gid groups argv0 file sshTty nEnv, then nEnv environment tokens and the
// argument tokens. A token is "s" + one string, or "x" + a count + that many hex chunks (a byte string
// that Node could not pass unchanged; chunked because one argv string may not exceed 128 KiB).
const WRAPPER = String.raw`
use strict; use POSIX ();
my ($uid, $gid, $groups, $argv0, $file, $tty, $nenv, @rest) = @ARGV;
sub fail { print STDERR "$_[0]
"; exit $_[1]; }
sub token { my $t = shift @rest; return shift @rest if $t eq 's';
  my $n = shift @rest; return pack('H*', join('', splice(@rest, 0, $n))); }
for (1 .. $nenv) { my $kv = token(); my $i = index($kv, '='); $ENV{substr($kv, 0, $i)} = substr($kv, $i + 1) if $i > 0; }
my @args; push @args, token() while @rest;
if ($tty eq 't') { my $n = POSIX::ttyname(0); $ENV{SSH_TTY} = $n if defined $n; }
if ($uid ne '-') {
  $) = join(' ', $gid, $gid, grep { length } split(/,/, $groups));
  POSIX::setgid($gid) or fail("setgid $gid: $!", 126);
  POSIX::setuid($uid) or fail("setuid $uid: $!", 126);
  ($< == $uid && $> == $uid) or fail("cannot switch to uid $uid", 126);
}
{ no warnings; exec { $file } $argv0, @args; }
fail("exec $file: $!", $!{ENOENT} ? 127 : 126);
`;

/** Below the kernel's 128 KiB limit for one argv string. */
const HEX_CHUNK = 64 * 1024;

function wrapperToken(v: string | Buffer): string[] {
  if (typeof v === 'string') return ['s', v];
  const hex = v.toString('hex');
  const chunks: string[] = [];
  for (let i = 0; i < hex.length; i += HEX_CHUNK) chunks.push(hex.slice(i, i + HEX_CHUNK));
  return ['x', String(chunks.length), ...chunks];
}

let perlPath: string | null | undefined;
function findPerl(): string | null {
  if (perlPath !== undefined) return perlPath;
  perlPath = null;
  for (const dir of ['/usr/bin', '/bin', ...(process.env.PATH ?? '').split(delimiter)]) {
    const p = join(dir, 'perl');
    if (isExecutableFile(p)) {
      perlPath = p;
      break;
    }
  }
  return perlPath;
}

/** True for an existing regular file with an execute bit for us. */
export function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, fsc.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Shell rules: the login shell from passwd; `cmdShell` only if that is empty; /bin/sh if missing (§5.2). */
export function chooseLoginShell(passwdShell: string, cmdShell: string): string {
  const chosen = passwdShell || cmdShell;
  return chosen && isExecutableFile(chosen) ? chosen : '/bin/sh';
}

/** Exec rules: `shell_binary`, else the passwd shell, each only if usable; else /bin/sh (§5.4). */
export function chooseExecShell(shellBinary: string, passwdShell: string): string {
  const usable = (p: string) =>
    p !== '' && isExecutableFile(p) && basename(p) !== 'nologin' && basename(p) !== 'false';
  if (usable(shellBinary)) return shellBinary;
  if (usable(passwdShell)) return passwdShell;
  return '/bin/sh';
}

/** A session's environment: plain strings, plus entries that are not valid UTF-8 (applied over them). */
export interface SessionEnv {
  env: Record<string, string>;
  raw: Buffer[];
}

/**
 * Merges environments; priority: forced > client `NAME=VALUE` entries > defaults > base. Client
 * entries may be bytes: those that are not valid UTF-8 stay bytes (`raw`); an entry without a name is
 * ignored, and a raw entry never overrides a forced name.
 */
export function buildEnv(
  base: Readonly<Record<string, string | undefined>>,
  client: ReadonlyArray<string | Buffer>,
  defaults: Record<string, string>,
  forced: Record<string, string>,
): SessionEnv {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  Object.assign(env, defaults);
  const raw = new Map<string, Buffer>();
  for (const entry of client) {
    const bytes = typeof entry === 'string' ? Buffer.from(entry, 'utf8') : entry;
    const i = bytes.indexOf(0x3d); // '='
    if (i <= 0) continue;
    if (isUtf8(bytes)) {
      const kv = bytes.toString('utf8');
      const name = kv.slice(0, kv.indexOf('='));
      env[name] = kv.slice(name.length + 1);
      raw.delete(bytes.subarray(0, i).toString('latin1'));
    } else {
      const key = bytes.subarray(0, i).toString('latin1');
      if (isUtf8(bytes.subarray(0, i))) delete env[bytes.subarray(0, i).toString('utf8')];
      raw.set(key, bytes);
    }
  }
  Object.assign(env, forced);
  for (const name of Object.keys(forced)) raw.delete(Buffer.from(name, 'utf8').toString('latin1'));
  return { env, raw: [...raw.values()] };
}

interface Command {
  file: string;
  args: string[];
  argv0: string;
}

function commandFor(spec: LaunchSpec, needWrapperForArgv0: boolean): Command {
  const bytes = spec.args.some((a) => typeof a !== 'string') || (spec.rawEnv?.length ?? 0) > 0;
  const wrap =
    spec.creds !== undefined ||
    bytes ||
    spec.sshTty === true ||
    (needWrapperForArgv0 && spec.argv0 !== spec.file);
  if (!wrap) return { file: spec.file, args: spec.args as string[], argv0: spec.argv0 };
  const perl = findPerl();
  if (!perl) {
    if (spec.creds) throw new ProxyError('failed', 'cannot switch user: perl is not installed on this host');
    if (bytes)
      throw new ProxyError('failed', 'cannot pass non-UTF-8 bytes: perl is not installed on this host');
    // Without the wrapper the shell still runs, only not as a login shell (and without SSH_TTY).
    return { file: spec.file, args: spec.args as string[], argv0: spec.file };
  }
  const c = spec.creds;
  const ids = c ? [String(c.uid), String(c.gid), c.groups.join(',')] : ['-', '-', ''];
  const env = spec.rawEnv ?? [];
  return {
    file: perl,
    args: [
      '-e',
      WRAPPER,
      '--',
      ...ids,
      spec.argv0,
      spec.file,
      spec.sshTty ? 't' : '-',
      String(env.length),
      ...env.flatMap(wrapperToken),
      ...spec.args.flatMap(wrapperToken),
    ],
    argv0: 'perl',
  };
}

/** Starts the program on a new PTY (the child is a session leader: pgid = sid = pid). */
export function spawnPty(spec: LaunchSpec, cols: number, rows: number): pty.IPty {
  const cmd = commandFor(spec, true);
  const t = pty.spawn(cmd.file, cmd.args, {
    name: spec.env.TERM || 'xterm-256color',
    cols: cols > 0 ? cols : 80,
    rows: rows > 0 ? rows : 24,
    cwd: spec.cwd,
    env: spec.env,
    encoding: null,
  });
  recordSession(t.pid);
  t.onExit(() => forgetSession(t.pid));
  return t;
}

/** Starts the program with pipes in a new session/process group. */
export function spawnPipes(spec: LaunchSpec): ChildProcess {
  const cmd = commandFor(spec, false);
  const c = spawn(cmd.file, cmd.args, {
    argv0: cmd.argv0,
    cwd: spec.cwd,
    env: spec.env,
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  recordSession(c.pid);
  c.once('exit', () => forgetSession(c.pid));
  return c;
}

/** The pts path of a node-pty terminal (present at runtime, missing from its typings). */
export function ptsName(p: pty.IPty): string {
  const name = (p as pty.IPty & { ptsName?: unknown }).ptsName;
  return typeof name === 'string' ? name : '';
}
