// The gateway's side of raw bytes (src/common/raw-text.ts has the wire encoding): ssh2 (patch 012)
// exposes the undecoded bytes next to each decoded string of env, exec, subsystem and signal requests;
// these helpers turn such a request field into what goes to the agent.
import { wireCommand as wireCommandBytes, wireEnv } from '../common/raw-text.js';

export { wireEnv };

/** A string field of an SSH request: ssh2's UTF-8 decoding plus, with patch 012, the exact bytes. */
export interface SshText {
  text: string;
  raw?: Buffer;
}

/** The exact bytes of an SSH string (the decoded text re-encoded when ssh2 gave no raw bytes). */
export function sshBytes(t: SshText | string | Buffer): Buffer {
  if (typeof t === 'string') return Buffer.from(t, 'utf8');
  if (Buffer.isBuffer(t)) return t;
  return t.raw ?? Buffer.from(t.text, 'utf8');
}

/** CommandDetails.command and .command_raw for an exec request (`{text: info.command, raw: info.commandRaw}`). */
export function wireCommand(cmd: SshText | string | Buffer): { command: string; commandRaw: Buffer } {
  return wireCommandBytes(sshBytes(cmd));
}

/**
 * Signal names the gateway passes on: RFC 4254's names (what sshd accepts) plus the others the k8shelld
 * daemon knows (wire-protocol §5.4), compared as exact bytes. Anything else, including a name with bytes
 * that are not ASCII, is undefined: refuse the request, as sshd does, instead of letting a lossy
 * decoding reach a daemon that turns unknown names into TERM.
 */
const SIGNALS = new Set(
  (
    'ABRT ALRM FPE HUP ILL INT KILL PIPE QUIT SEGV TERM USR1 USR2 ' +
    'CHLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ'
  ).split(' '),
);

export function signalName(name: SshText | string | Buffer): string | undefined {
  const s = sshBytes(name).toString('latin1');
  return SIGNALS.has(s) ? s : undefined;
}

/** True when the request's subsystem name is exactly `want`, byte for byte. */
export function isSubsystem(name: SshText | string | Buffer, want: string): boolean {
  return sshBytes(name).equals(Buffer.from(want, 'utf8'));
}
