// Last-resort error handling for a server process: an unhandled rejection or uncaught exception is
// logged with the connection it belongs to, and the process keeps serving everyone else (every
// handler already ends its own channel on a throw; this catches what escapes them).
import type { Logger } from './log.js';
import { errText } from './log.js';
import { currentContext } from './context.js';

let installed = false;

export function installProcessGuards(log: Logger): void {
  if (installed) return;
  installed = true;
  process.on('unhandledRejection', (reason: unknown) => {
    log.error(
      { conn: currentContext()?.conn ?? 'unknown', err: errText(reason), stack: (reason as Error)?.stack },
      'unhandled rejection (the process keeps serving)',
    );
  });
  process.on('uncaughtException', (err: Error) => {
    log.error(
      { conn: currentContext()?.conn ?? 'unknown', err: errText(err), stack: err?.stack },
      'uncaught exception (the process keeps serving)',
    );
  });
}
