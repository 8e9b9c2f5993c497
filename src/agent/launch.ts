// How session processes are started: shell choice, environment, and the exec wrapper that sets
// argv[0] (login shells are "-bash") and switches uid/gid/supplementary groups.
//
// node-pty always execs with argv[0] = file and cannot set supplementary groups (it would leave a
// root agent's groups on the child), and child_process drops them entirely. A tiny Perl wrapper
// (perl-base is part of every Debian-like image) does setgroups+setgid+setuid and `exec {file} argv0`
// in the child, keeping the pid, so process-group handling is unchanged.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsc, statSync } from 'node:fs';
import { basename, delimiter, join } from 'node:path';
import * as pty from 'node-pty';
import { ProxyError } from '../common/errors.js';

export interface LaunchSpec {
  /** Absolute path of the program. */
  file: string;
  /** argv[0] as the program sees it. */
  argv0: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  creds?: { uid: number; gid: number; groups: number[] };
}

const WRAPPER = String.raw`
use strict; use POSIX ();
my ($uid, $gid, $groups, $argv0, $file, @args) = @ARGV;
sub fail { print STDERR "$_[0]\n"; exit $_[1]; }
if ($uid ne '-') {
  $) = join(' ', $gid, $gid, grep { length } split(/,/, $groups));
  POSIX::setgid($gid) or fail("setgid $gid: $!", 126);
  POSIX::setuid($uid) or fail("setuid $uid: $!", 126);
  ($< == $uid && $> == $uid) or fail("cannot switch to uid $uid", 126);
}
{ no warnings; exec { $file } $argv0, @args; }
fail("exec $file: $!", $!{ENOENT} ? 127 : 126);
`;

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

/** Merges environments; priority: forced > client `KEY=value` strings > defaults > base. */
export function buildEnv(
  base: NodeJS.ProcessEnv,
  client: string[],
  defaults: Record<string, string>,
  forced: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  Object.assign(env, defaults);
  for (const kv of client) {
    const i = kv.indexOf('=');
    if (i <= 0) continue;
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  Object.assign(env, forced);
  return env;
}

interface Command {
  file: string;
  args: string[];
  argv0: string;
}

function commandFor(spec: LaunchSpec, needWrapperForArgv0: boolean): Command {
  const wrap = spec.creds !== undefined || (needWrapperForArgv0 && spec.argv0 !== spec.file);
  if (!wrap) return { file: spec.file, args: spec.args, argv0: spec.argv0 };
  const perl = findPerl();
  if (!perl) {
    if (spec.creds) throw new ProxyError('failed', 'cannot switch user: perl is not installed on this host');
    // Without the wrapper the shell still runs, only not as a login shell.
    return { file: spec.file, args: spec.args, argv0: spec.file };
  }
  const c = spec.creds;
  const ids = c ? [String(c.uid), String(c.gid), c.groups.join(',')] : ['-', '-', ''];
  return {
    file: perl,
    args: ['-e', WRAPPER, '--', ...ids, spec.argv0, spec.file, ...spec.args],
    argv0: 'perl',
  };
}

/** Starts the program on a new PTY (the child is a session leader: pgid = sid = pid). */
export function spawnPty(spec: LaunchSpec, cols: number, rows: number): pty.IPty {
  const cmd = commandFor(spec, true);
  return pty.spawn(cmd.file, cmd.args, {
    name: spec.env.TERM || 'xterm-256color',
    cols: cols > 0 ? cols : 80,
    rows: rows > 0 ? rows : 24,
    cwd: spec.cwd,
    env: spec.env,
    encoding: null,
  });
}

/** Starts the program with pipes in a new session/process group. */
export function spawnPipes(spec: LaunchSpec): ChildProcess {
  const cmd = commandFor(spec, false);
  return spawn(cmd.file, cmd.args, {
    argv0: cmd.argv0,
    cwd: spec.cwd,
    env: spec.env,
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** The pts path of a node-pty terminal (present at runtime, missing from its typings). */
export function ptsName(p: pty.IPty): string {
  const name = (p as pty.IPty & { ptsName?: unknown }).ptsName;
  return typeof name === 'string' ? name : '';
}
