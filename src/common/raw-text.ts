// SSH strings are bytes; the k8shelld proto carries commands and environment entries as proto3 strings,
// which must be UTF-8. Encoding (docs/clients.md "Raw bytes"): the reference fields always carry a
// UTF-8 decoding (U+FFFD for bytes that are not UTF-8: what a reference daemon gets); the project
// extension fields (CommandDetails.command_raw / env_vars_raw, ShellStartRequest.set_env_vars_raw) carry
// the exact bytes, and are sent only when the bytes are not valid UTF-8. Used by gateway and agent.
import { isUtf8 } from 'node:buffer';

/** CommandDetails.command and .command_raw for the exact command bytes (command_raw empty when UTF-8). */
export function wireCommand(raw: Buffer): { command: string; commandRaw: Buffer } {
  return { command: raw.toString('utf8'), commandRaw: isUtf8(raw) ? Buffer.alloc(0) : Buffer.from(raw) };
}

/**
 * `NAME=VALUE` entries as CommandDetails.env_vars / env_vars_raw (for ShellStartRequest, the same two
 * lists go to setEnvVars / setEnvVarsRaw). The raw list is empty unless some entry is not UTF-8, and
 * then holds every entry, in order.
 */
export function wireEnv(entries: ReadonlyArray<Buffer>): { envVars: string[]; envVarsRaw: Buffer[] } {
  const envVars = entries.map((e) => e.toString('utf8'));
  return { envVars, envVarsRaw: entries.every((e) => isUtf8(e)) ? [] : entries.map((e) => Buffer.from(e)) };
}

/** The agent side: the exact command bytes of a CommandDetails. */
export function commandBytes(d: { command: string; commandRaw?: Uint8Array }): Buffer {
  return d.commandRaw && d.commandRaw.length > 0 ? Buffer.from(d.commandRaw) : Buffer.from(d.command, 'utf8');
}

/** The agent side: the exact environment entries (the raw list when present, else the strings). */
export function envBytes(strings: ReadonlyArray<string>, raw?: ReadonlyArray<Uint8Array>): Buffer[] {
  if (raw && raw.length > 0) return raw.map((e) => Buffer.from(e));
  return strings.map((e) => Buffer.from(e, 'utf8'));
}
