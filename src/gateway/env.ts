// The login environment of shell and exec sessions: the reference's rules (reference-behaviour §13.1)
// plus what OpenSSH's sshd sets from the connection (SSH_CONNECTION, SSH_CLIENT, TERM). HOME, PATH,
// MAIL and SSH_TTY are the agent's (src/agent/session-env.ts): only it knows the user and the terminal.
// Values may be bytes (ssh2 patch 012): loginEnvBytes keeps them exact, loginEnv is the lossy strings.
import { sshBytes, type SshText } from './raw-text.js';

export interface LoginIdentity {
  /** The identity user's shell, when known. */
  shell: string;
  /** `user=` override, else the authenticated username. */
  asUser: string;
}

export interface Endpoint {
  ip: string;
  port: number;
}

/** What sshd derives from the connection and the session. All optional, so old callers keep working. */
export interface LoginSession {
  /** The real client address (from the PROXY header when there is one). */
  client?: Endpoint;
  /** The address the client connected to (the PROXY header's destination when there is one). */
  server?: Endpoint;
  /** The session's pty-req; undefined = no PTY (then there is no TERM at all, as with sshd). */
  pty?: { term: string | SshText | Buffer };
}

export type EnvText = string | SshText | Buffer;

/** Names the gateway computes; a client `env` request for them is dropped. */
const COMPUTED = new Set(['SHELL', 'USER', 'LOGNAME', 'TERM', 'SSH_CONNECTION', 'SSH_CLIENT', 'SSH_TTY']);
const LEGACY_COMPUTED = new Set(['SHELL', 'USER', 'LOGNAME']);

/** sshd's spelling of an address: IPv4-mapped IPv6 addresses as plain IPv4. */
function hostText(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/**
 * The session's variables as exact bytes, `NAME=VALUE`: computed SHELL (when known), USER and LOGNAME
 * first, then SSH_CONNECTION and SSH_CLIENT (when the addresses are known) and TERM (PTY only), then
 * the client's variables in the order they arrived minus the computed names.
 */
export function loginEnvBytes(
  id: LoginIdentity,
  clientEnv: ReadonlyArray<readonly [EnvText, EnvText]>,
  session?: LoginSession,
): Buffer[] {
  // Without `session` (callers written before it existed) a client TERM passes as before.
  const computed = session ? COMPUTED : LEGACY_COMPUTED;
  const out: Buffer[] = [];
  const put = (name: string, value: EnvText) =>
    out.push(Buffer.concat([Buffer.from(`${name}=`, 'utf8'), sshBytes(value)]));
  if (id.shell) put('SHELL', id.shell);
  put('USER', id.asUser);
  put('LOGNAME', id.asUser);
  const { client, server, pty } = session ?? {};
  if (client && server) {
    put('SSH_CONNECTION', `${hostText(client.ip)} ${client.port} ${hostText(server.ip)} ${server.port}`);
    put('SSH_CLIENT', `${hostText(client.ip)} ${client.port} ${server.port}`);
  }
  if (pty) put('TERM', pty.term);
  for (const [k, v] of clientEnv) {
    const name = sshBytes(k);
    if (computed.has(name.toString('latin1'))) continue;
    out.push(Buffer.concat([name, Buffer.from('=', 'utf8'), sshBytes(v)]));
  }
  return out;
}

/** The same entries as strings (lossy for bytes that are not UTF-8): logs, and callers without raw support. */
export function loginEnv(
  id: LoginIdentity,
  clientEnv: ReadonlyArray<readonly [EnvText, EnvText]>,
  session?: LoginSession,
): string[] {
  return loginEnvBytes(id, clientEnv, session).map((e) => e.toString('utf8'));
}

/** Names a client may set: conservative, to keep NUL and '=' out of the key. */
export function validEnvName(name: EnvText): boolean {
  const raw = sshBytes(name);
  return raw.length <= 256 && /^[A-Za-z_][A-Za-z0-9_]*$/.test(raw.toString('latin1'));
}
