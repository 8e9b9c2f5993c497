// How an exec's command line appears in the gateway's logs. A command line often carries secrets
// (`mysql -psecret`, `curl -H 'Authorization: …'`, `FOO_TOKEN=… make`), so by default (`summary`)
// only the program name and the length are logged at info and the full line at debug; `full`
// (config `log.commands`) logs the full line at info for operators who accept that.
import type { Logger } from '../ops/log.js';

export type CommandLogMode = 'summary' | 'full';

/** Longest program name logged; a longer first word is cut (it is probably not a program). */
const MAX_PROGRAM = 64;
/** `NAME=value` prefix assignments of a shell command line (POSIX name rules). */
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

/**
 * The program a command line runs, for logs: the first word that is not a leading `NAME=value`
 * assignment (their values are exactly where secrets go). Never any argument. Quotes are not
 * interpreted: a quoted first word is logged as its first whitespace-separated piece, which can
 * never reach past the program.
 */
export function programName(command: string): string {
  const words = command.trim().split(/\s+/);
  let i = 0;
  while (i < words.length && ASSIGNMENT.test(words[i] ?? '')) i++;
  return (words[i] ?? '').slice(0, MAX_PROGRAM);
}

/** Logs an exec request as configured: summary at info (full at debug), or full at info. */
export function logExecRequest(log: Logger, mode: CommandLogMode, command: string, length: number): void {
  const program = programName(command);
  if (mode === 'full') {
    log.info({ program, length, command }, 'exec requested');
    return;
  }
  log.info({ program, length }, 'exec requested');
  log.debug({ command }, 'exec command');
}
