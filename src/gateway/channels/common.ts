// What session-channel handlers share: their state, refusals, and how a session ends.
import type { ServerChannel } from 'ssh2';
import type { Logger } from '../../ops/log.js';
import type { ExitStatus } from '../../gen/k8shelld/v1/k8shelld.js';
import { canWrite, flushed } from '../relay.js';

export interface PtyInfo {
  term: string;
  cols: number;
  rows: number;
}

/** The running shell or exec of one session channel: where window-change and signal go. */
export interface RunningProcess {
  resize(cols: number, rows: number): void;
  /** Returns false when the process cannot take signals (the request is then refused). */
  signal(name: string): boolean;
}

/** Everything that belongs to one session channel (never shared across channels, §23.b). */
export class SessionState {
  pty: PtyInfo | undefined;
  readonly env: Array<[string, string]> = [];
  agentRequested = false;
  started = false;
  running: RunningProcess | undefined;
  constructor(
    readonly id: string,
    readonly log: Logger,
  ) {}
}

const PREFIX = 'ssh-proxy: ';

/** Accept-then-fail (node-notes §3 trap 9): one line on stderr, exit-status 1, EOF and close. */
export async function refuse(
  channel: ServerChannel,
  message: string | undefined,
  pty: boolean,
): Promise<void> {
  if (message && canWrite(channel.stderr)) channel.stderr.write(`${PREFIX}${message}${pty ? '\r\n' : '\n'}`);
  await finish(channel, { code: 1 });
}

export type Ending = { code: number } | { status: ExitStatus } | { none: true };

/**
 * Exit status strictly before EOF and close, after all output has reached the SSH layer
 * (node-notes §3 traps 7 and 8).
 */
export async function finish(
  channel: ServerChannel,
  ending: Ending,
  note?: string,
  pty = false,
): Promise<void> {
  if (!canWrite(channel)) return;
  await flushed(channel, channel);
  await flushed(channel.stderr, channel);
  if (!canWrite(channel)) return;
  if (note && canWrite(channel.stderr)) channel.stderr.write(`${PREFIX}${note}${pty ? '\r\n' : '\n'}`);
  if ('code' in ending) channel.exit(ending.code);
  else if ('status' in ending) sendExitStatus(channel, ending.status);
  channel.end();
}

function sendExitStatus(channel: ServerChannel, s: ExitStatus): void {
  if (!s.signal) return channel.exit(s.code);
  try {
    channel.exit(s.signal, s.coreDumped, s.message);
  } catch {
    // ssh2 throws on signal names outside its table (trap 14): report the conventional 128+n code.
    channel.exit(s.code > 0 ? s.code : 1);
  }
}
