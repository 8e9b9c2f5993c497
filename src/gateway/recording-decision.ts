// Whether one channel is recorded, and with which options (reference-behaviour.md §15.1–15.3, §2.1,
// §2.3). Pure: the dispatcher resolves the `record` obligation (override, then session:record) and
// passes it in; the static server.recording.* flags decide when there is none.
import { RecordingFormat, type RecordingOptions } from '../gen/session/v1/session.js';
import type { Config, RecordingStreamConfig } from '../config/load.js';
import type { RecordedKind } from './tap.js';

export type RecordingConfig = Config['server']['recording'];

/** What the decision needs from the configuration. */
export interface RecordingDecisionConfig {
  recording: RecordingConfig;
  /** `session.address`: when set, unset VS Code options default to true (§2.1, a reference TODO). */
  sessionAddress: string;
}

export type RecordingDecision =
  | { record: false }
  /** `options` undefined = omitted from the header (every field unset: service defaults). */
  | { record: true; options: RecordingOptions | undefined };

/** The flags a `record` obligation sets (§15.1 step 4). */
export interface RecordFlags {
  shell: boolean;
  exec: boolean;
  sftp: boolean;
  directTcpip: boolean;
  vscodeTerminals: boolean;
  vscodeInput: boolean;
}

/**
 * Parses a `record` obligation: comma-separated tokens; `none` and unknown tokens set nothing;
 * `vscode-input` implies `vscode-terminals`. A present obligation decides every flag.
 */
export function parseRecordObligation(record: string): RecordFlags {
  const f: RecordFlags = {
    shell: false,
    exec: false,
    sftp: false,
    directTcpip: false,
    vscodeTerminals: false,
    vscodeInput: false,
  };
  for (const raw of record.split(',')) {
    switch (raw.trim()) {
      case 'shell':
        f.shell = true;
        break;
      case 'exec':
        f.exec = true;
        break;
      case 'sftp':
        f.sftp = true;
        break;
      case 'direct-tcpip':
        f.directTcpip = true;
        break;
      case 'vscode-terminals':
        f.vscodeTerminals = true;
        break;
      case 'vscode-input':
        f.vscodeInput = true;
        f.vscodeTerminals = true;
        break;
      default:
        break;
    }
  }
  return f;
}

const FORMAT: Record<string, RecordingFormat> = {
  '': RecordingFormat.RECORDING_FORMAT_UNSPECIFIED,
  asciinema: RecordingFormat.RECORDING_FORMAT_ASCIINEMA,
  pcapng: RecordingFormat.RECORDING_FORMAT_PCAPNG,
  none: RecordingFormat.RECORDING_FORMAT_NONE,
};

function formatOf(name: string): RecordingFormat {
  // validate.ts rejects anything else at load time; unspecified is the safe reading regardless.
  return FORMAT[name] ?? RecordingFormat.RECORDING_FORMAT_UNSPECIFIED;
}

/** A stream's header options; undefined when every field is unset (§2.3, last paragraph). */
export function streamOptions(s: {
  format: RecordingFormat;
  gzip: boolean | undefined;
  vscode: { terminals: boolean | undefined; recordInput: boolean | undefined } | undefined;
}): RecordingOptions | undefined {
  const vscodeSet =
    s.vscode !== undefined && (s.vscode.terminals !== undefined || s.vscode.recordInput !== undefined);
  if (s.format === RecordingFormat.RECORDING_FORMAT_UNSPECIFIED && s.gzip === undefined && !vscodeSet) {
    return undefined;
  }
  return {
    format: s.format,
    gzip: s.gzip,
    vscode: vscodeSet ? { terminals: s.vscode?.terminals, recordInput: s.vscode?.recordInput } : undefined,
  };
}

/** The configured VS Code options with the session-address default applied (idempotent, §2.1). */
function vscodeOf(
  st: RecordingStreamConfig,
  sessionAddress: string,
): { terminals: boolean | undefined; recordInput: boolean | undefined } | undefined {
  const v = st.vscode;
  if (sessionAddress === '') return v ? { terminals: v.terminals, recordInput: v.recordInput } : undefined;
  return { terminals: v?.terminals ?? true, recordInput: v?.recordInput ?? true };
}

const STATIC_FLAG = {
  shell: 'recordShell',
  exec: 'recordExec',
  sftp: 'recordSFTP',
} as const satisfies Record<Exclude<RecordedKind, 'tcpip'>, keyof RecordingConfig>;

/**
 * The decision for one channel. `obligation` is the `record` string that was found (override or
 * session:record), or undefined when none was (then the static flags decide, §15.1 step 5).
 */
export function decideRecording(
  kind: RecordedKind,
  obligation: string | undefined,
  cfg: RecordingDecisionConfig,
): RecordingDecision {
  const rec = cfg.recording;
  const flags = obligation === undefined ? undefined : parseRecordObligation(obligation);
  if (kind !== 'tcpip') {
    const wanted = flags ? flags[kind] : rec[STATIC_FLAG[kind]];
    if (!wanted) return { record: false };
    const st = rec[kind];
    return {
      record: true,
      // vscode is only valid on directTCPIP (validate.ts); never sent for the other streams.
      options: streamOptions({ format: formatOf(st.format), gzip: st.gzip, vscode: undefined }),
    };
  }
  return decideDirectTcpip(flags, cfg);
}

/** §15.3 on a copy of the configured directTCPIP options (the shared config is never modified). */
function decideDirectTcpip(flags: RecordFlags | undefined, cfg: RecordingDecisionConfig): RecordingDecision {
  const st = cfg.recording.directTCPIP;
  let vscode = vscodeOf(st, cfg.sessionAddress);
  let raw: boolean;
  let terminals: boolean;
  if (flags === undefined) {
    raw = cfg.recording.recordDirectTCPIP;
    terminals = vscode?.terminals === true;
  } else {
    raw = flags.directTcpip;
    terminals = flags.vscodeTerminals;
    vscode = { terminals: flags.vscodeTerminals, recordInput: flags.vscodeInput };
  }
  if (!raw && !terminals) return { record: false };
  let format = formatOf(st.format);
  if (!raw) format = RecordingFormat.RECORDING_FORMAT_NONE;
  else if (format === RecordingFormat.RECORDING_FORMAT_NONE)
    format = RecordingFormat.RECORDING_FORMAT_UNSPECIFIED;
  return { record: true, options: streamOptions({ format, gzip: st.gzip, vscode }) };
}
