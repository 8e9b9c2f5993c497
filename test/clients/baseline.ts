// Running the same OpenSSH command against the gateway and against the sshd baseline.
import { run, type RunOptions, type RunResult } from '../e2e/harness.js';

export interface Target {
  name: string;
  port: number;
  key: string;
  user: string;
}

export function sshArgs(t: Target, extra: string[] = []): string[] {
  return [
    '-F',
    '/dev/null',
    '-p',
    String(t.port),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-i',
    t.key,
    ...extra,
  ];
}

export function sshTo(
  t: Target,
  args: string[],
  o: RunOptions & { options?: string[] } = {},
): Promise<RunResult> {
  return run('ssh', [...sshArgs(t, o.options), `${t.user}@127.0.0.1`, ...args], o);
}

/**
 * Runs ssh through /bin/sh so arguments can hold bytes that are not UTF-8 (Node passes argv as UTF-8):
 * `script` is a shell fragment that may use "$@" (the ssh options and destination) and files.
 */
export function sshViaShell(t: Target, script: string, o: RunOptions = {}): Promise<RunResult> {
  return run('sh', ['-c', script, 'sh', ...sshArgs(t), `${t.user}@127.0.0.1`], o);
}

/** `env` output as a map (values up to the end of their line). */
export function parseEnv(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}
