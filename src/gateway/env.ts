// The login environment of shell and exec sessions (reference-behaviour §13.1).
export interface LoginIdentity {
  /** The identity user's shell, when known. */
  shell: string;
  /** `user=` override, else the authenticated username. */
  asUser: string;
}

const COMPUTED = new Set(['SHELL', 'USER', 'LOGNAME']);

/**
 * Computed SHELL/USER/LOGNAME first (client values for those names are dropped), then the client's
 * variables in the order they arrived (TERM, LANG, LC_*, SetEnv…). HOME and PATH are the daemon's.
 */
export function loginEnv(id: LoginIdentity, clientEnv: ReadonlyArray<readonly [string, string]>): string[] {
  const out: string[] = [];
  if (id.shell) out.push(`SHELL=${id.shell}`);
  out.push(`USER=${id.asUser}`, `LOGNAME=${id.asUser}`);
  for (const [k, v] of clientEnv) if (!COMPUTED.has(k)) out.push(`${k}=${v}`);
  return out;
}

/** Names a client may set: conservative, to keep NUL and '=' out of the key. */
export function validEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) && name.length <= 256;
}
