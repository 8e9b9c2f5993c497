// One process-wide pino logger. JSON to stdout by default; human-readable with --logtext.
// Every line carries `component`; connection and channel loggers add `conn` and `chan`.
// The sink is switchable so loggers created at import time follow a later initLogging().
import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

let sink: DestinationStream = process.stdout;
const switchable: DestinationStream = { write: (s: string) => sink.write(s) };

const root: Logger = pino(
  {
    level: process.env.LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    messageKey: 'msg',
    timestamp: () => `,"timestamp":"${new Date().toISOString()}"`,
    // Never log secrets, whatever a caller passes in.
    redact: {
      paths: ['password', '*.password', 'token', '*.token', 'authorization', '*.authorization', 'userToken'],
      censor: '[redacted]',
    },
  },
  switchable,
);

export interface LoggingOptions {
  /** Human-readable single-line output instead of JSON. */
  text?: boolean;
  /** Where to write; stdout by default. */
  destination?: NodeJS.WritableStream;
  level?: string;
}

export function initLogging(opts: LoggingOptions = {}): void {
  const out = opts.destination ?? process.stdout;
  sink = opts.text
    ? pretty({
        sync: true,
        singleLine: true,
        colorize: false,
        destination: out,
        timestampKey: 'timestamp',
        translateTime: 'yyyy-mm-dd"T"HH:MM:ss.l',
        ignore: 'hostname',
      })
    : (out as DestinationStream);
  if (opts.level) root.level = opts.level;
}

/** A logger for one component (e.g. `ssh-server`, `agent`, `k8shelld`). */
export function getLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ component, ...bindings });
}

/** Collapses an error to one line for logs and user messages. */
export function errText(err: unknown): string {
  const s = err instanceof Error ? err.message : String(err);
  return s.replace(/\s+/g, ' ').trim();
}
