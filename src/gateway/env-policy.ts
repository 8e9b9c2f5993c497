// Which `env` requests a session accepts (sshd's AcceptEnv) and how much they may hold, so one user
// cannot grow the gateway's memory through environment variables.

import { validEnvName } from './env.js';
import { sshBytes, type SshText } from './raw-text.js';

export interface EnvLimits {
  acceptEnv: readonly string[];
  maxEnvCount: number;
  maxEnvBytes: number;
}

/** sshd-style patterns: `*` any run, `?` one character. */
export function envNameMatches(name: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => globRe(p).test(name));
}

const cache = new Map<string, RegExp>();
function globRe(p: string): RegExp {
  let re = cache.get(p);
  if (!re) {
    const body = p
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    re = new RegExp(`^${body}$`);
    if (cache.size < 256) cache.set(p, re);
  }
  return re;
}

/**
 * Whether a session takes this `env` request: a valid name matching `acceptEnv`, within the count and
 * size bounds. `name` and `value` are the request's exact bytes.
 */
export function envAccepted(
  state: { env: ReadonlyArray<readonly [SshText, SshText]>; envBytes: number },
  nameText: SshText,
  valueText: SshText,
  limits: EnvLimits,
): { ok: true } | { ok: false; why: string } {
  if (!validEnvName(nameText)) return { ok: false, why: 'invalid name' };
  const name = sshBytes(nameText).toString('latin1');
  if (!envNameMatches(name, limits.acceptEnv)) return { ok: false, why: 'not in acceptEnv' };
  const replacing = state.env.some(([k]) => sshBytes(k).toString('latin1') === name);
  if (!replacing && state.env.length >= limits.maxEnvCount) return { ok: false, why: 'too many variables' };
  const size = name.length + sshBytes(valueText).length;
  if (state.envBytes + size > limits.maxEnvBytes) return { ok: false, why: 'environment too large' };
  (state as { envBytes: number }).envBytes += size;
  return { ok: true };
}
