// The recorder seam: the relay of every channel calls its tap (when the channel is recorded) with the
// bytes it moves, in order, and with PTY resizes. A tap must never block or throw into the relay and
// must bound what it keeps (a slow recorder drops and counts; it never slows the user down).
import type { Logger } from '../ops/log.js';

/** `in` = client → workspace, `out` = workspace → client (stdout), `err` = stderr toward the client. */
export type TapDirection = 'in' | 'out' | 'err';

export interface ChannelTap {
  /** Bytes as they pass; `data` may be reused by the caller after the call (copy what you keep). */
  data(direction: TapDirection, data: Buffer): void;
  /** Terminal size changes of PTY sessions. */
  resize(cols: number, rows: number): void;
  /** The channel ended: flush and finish (the recorder bounds how long this takes). */
  close(): Promise<void>;
}

export type RecordedKind = 'shell' | 'exec' | 'sftp' | 'tcpip';

/** What a recorder needs to know about one channel to write its header (wire-protocol §5.12). */
export interface RecordingContext {
  kind: RecordedKind;
  /** Channel id (sh-/ex-/sf-/pf-), the recording's session_id. */
  channelId: string;
  connectionId: string;
  username: string;
  workspace: { name: string; blueprint: string };
  /** User JWT for the header (§8.7); resolves to '' when none can be had. */
  userToken: () => Promise<string>;
  pty?: { cols: number; rows: number };
  command?: string;
  tcpip?: { srcHost: string; srcPort: number; dstHost: string; dstPort: number };
  /**
   * The `record` obligation that decides this channel (override or session:record), or undefined
   * when none was found (then the static server.recording.* flags decide; reference-behaviour §15.1).
   */
  obligation: string | undefined;
  /**
   * Called at most once, after `open` returned a tap, when the recording breaks and the fail policy
   * is `closed`: the dispatcher ends the running channel with `e.userMessage` (the tap is then inert;
   * still call its `close()`). Never called under the `open` policy.
   */
  onFailure?: (e: RecordingRefused) => void;
}

/** Thrown by `Recorders.open` when the recording cannot start and the fail policy is `closed`. */
export class RecordingRefused extends Error {
  constructor(readonly userMessage: string) {
    super(userMessage);
    this.name = 'RecordingRefused';
  }
}

export interface Recorders {
  /** A tap when this channel is to be recorded, undefined when not. May throw RecordingRefused. */
  open(ctx: RecordingContext): Promise<ChannelTap | undefined>;
  /** Once per connection when it closes (EndRecordingSession when anything was recorded, §23.h). */
  connectionClosed(connectionId: string): Promise<void>;
}

/** Recording overrides (NATS KV `recording-overrides`, reference-behaviour §15.1 step 1). */
export interface RecordingOverrides {
  /**
   * The override for a workspace, read fresh; undefined when none (or the store failed: policy decides).
   * Logs `Applying recording override` (and read failures) on `log`, the channel's logger.
   */
  get(workspace: string, log?: Logger): Promise<{ record: string; setBy: string } | undefined>;
}
