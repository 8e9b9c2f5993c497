// Types for the raw bytes ssh2 patch 012 adds to request events, and converters into SshText (the
// shape src/gateway/raw-text.ts and env.ts take). Absent (undefined) on an unpatched ssh2.
import type { ExecInfo, SetEnvInfo, SignalInfo, SubsystemInfo } from 'ssh2';
import type { SshText } from '../raw-text.js';

declare module 'ssh2' {
  interface ExecInfo {
    /** ssh-proxy patch 012: the command's exact bytes. */
    commandRaw?: Buffer;
  }
  interface SetEnvInfo {
    /** ssh-proxy patch 012: the name's and value's exact bytes. */
    keyRaw?: Buffer;
    valRaw?: Buffer;
  }
  interface SignalInfo {
    /** ssh-proxy patch 012: the signal name's exact bytes. */
    nameRaw?: Buffer;
  }
  interface SubsystemInfo {
    /** ssh-proxy patch 012: the subsystem name's exact bytes. */
    nameRaw?: Buffer;
  }
}

export function execCommand(info: ExecInfo): SshText {
  return { text: info.command, raw: info.commandRaw };
}

export function envPair(info: SetEnvInfo): [SshText, SshText] {
  return [
    { text: info.key, raw: info.keyRaw },
    { text: info.val, raw: info.valRaw },
  ];
}

export function signalText(info: SignalInfo): SshText {
  return { text: info.name, raw: info.nameRaw };
}

export function subsystemText(info: SubsystemInfo): SshText {
  return { text: info.name, raw: info.nameRaw };
}
