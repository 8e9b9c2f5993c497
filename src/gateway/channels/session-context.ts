// What a session handler (shell, exec, sftp) gets from the dispatcher: an authorised action on a bound
// workspace, the relay of its channel, and the per-channel state (§23.b).
import type { Logger } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import type { ChannelRelay } from '../relay.js';
import type { SshText } from '../raw-text.js';
import type { BoundWorkspace } from '../workspace.js';

export interface PtyInfo {
  term: string;
  cols: number;
  rows: number;
}

/** The running shell or exec of one session channel: where window-change and signal go. */
export interface RunningProcess {
  resize(cols: number, rows: number): void;
  /** Returns false when the process cannot take signals. */
  signal(name: string): boolean;
}

/** Everything that belongs to one session channel (never shared across channels, §23.b). */
export class SessionState {
  pty: PtyInfo | undefined;
  /** Accepted `env` requests, as the client sent them (exact bytes, patch 012). */
  readonly env: Array<[SshText, SshText]> = [];
  envBytes = 0;
  agentRequested = false;
  started = false;
  running: RunningProcess | undefined;
  constructor(
    readonly id: string,
    readonly log: Logger,
  ) {}
}

export interface SessionRun {
  conn: GatewayConnection;
  ws: BoundWorkspace;
  relay: ChannelRelay;
  state: SessionState;
  log: Logger;
  /** The OS user to run as (`user=`), '' for the workspace's default user. */
  asUser: string;
  /**
   * The complete login environment (`KEY=value`, SSH_AUTH_SOCK included when forwarded), as strings
   * plus the exact bytes when some entry is not UTF-8 (wire-protocol extension, docs/clients.md).
   */
  env: { envVars: string[]; envVarsRaw: Buffer[] };
}
