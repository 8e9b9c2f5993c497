// Which `env` requests a session accepts (sshd's AcceptEnv) and how much they may hold, so one user
// cannot grow the gateway's memory through environment variables.

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

/** Names a client may set at all: keeps NUL and '=' out of the key. */
export function validEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) && name.length <= 256;
}

export function envAccepted(
  state: { env: ReadonlyArray<readonly [string, string]>; envBytes: number },
  name: string,
  value: string,
  limits: EnvLimits,
): { ok: true } | { ok: false; why: string } {
  if (!validEnvName(name)) return { ok: false, why: 'invalid name' };
  if (!envNameMatches(name, limits.acceptEnv)) return { ok: false, why: 'not in acceptEnv' };
  const replacing = state.env.some(([k]) => k === name);
  if (!replacing && state.env.length >= limits.maxEnvCount) return { ok: false, why: 'too many variables' };
  const size = Buffer.byteLength(name) + Buffer.byteLength(value);
  if (state.envBytes + size > limits.maxEnvBytes) return { ok: false, why: 'environment too large' };
  (state as { envBytes: number }).envBytes += size;
  return { ok: true };
}
