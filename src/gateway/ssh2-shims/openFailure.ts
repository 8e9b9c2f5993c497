// Channel-open refusals with a reason code and a description. ssh2's reject() sends neither (node-notes
// §3 trap 13), so we let ssh2's own reject() do its bookkeeping (free the reserved local channel id, mark
// the open as answered) while it sends our reason and description instead of its own.
import type { Connection } from 'ssh2';

import { internalsOf, type ChannelOpenInfo } from './internals.js';

/** RFC 4254 §5.1 reason codes. */
export const OpenFailure = {
  ADMINISTRATIVELY_PROHIBITED: 1,
  CONNECT_FAILED: 2,
  UNKNOWN_CHANNEL_TYPE: 3,
  RESOURCE_SHORTAGE: 4,
} as const;

export type OpenFailureReason = (typeof OpenFailure)[keyof typeof OpenFailure];

const MAX_DESCRIPTION = 512;
// eslint-disable-next-line no-control-regex
const CONTROL_RUN = /[\u0000-\u001f\u007f]+/g;

function cleanDescription(description: string): string {
  // One printable line; OpenSSH prints it verbatim in "open failed: <reason>: <description>".
  const s = String(description).replace(CONTROL_RUN, ' ').trim();
  return s.length > MAX_DESCRIPTION ? s.slice(0, MAX_DESCRIPTION) : s;
}

function checkReason(reason: number): void {
  if (!Number.isInteger(reason) || reason < 1 || reason > 0xffffffff) {
    throw new TypeError(`invalid channel open failure reason: ${reason}`);
  }
}

/**
 * Refuses a pending channel open with `reason` and `description`. Call it instead of the `reject`
 * function ssh2 passed to the 'session' / 'tcpip' / 'openssh.streamlocal' handler, and pass that
 * function: `client.on('tcpip', (accept, reject, info) => rejectOpen(client, reject, 2, 'no route'))`.
 * Does nothing when the open was already answered (exactly like ssh2's reject()).
 */
export function rejectOpen(
  client: Connection,
  reject: () => void,
  reason: number,
  description: string,
): void {
  if (typeof reject !== 'function') throw new TypeError('rejectOpen needs the reject function from ssh2');
  checkReason(reason);
  const desc = cleanDescription(description);
  const proto = internalsOf(client)._protocol;
  const own = Object.prototype.hasOwnProperty.call(proto, 'channelOpenFail');
  const original = proto.channelOpenFail;
  // ssh2's reject() calls channelOpenFail synchronously exactly once; substitute our values for that call.
  proto.channelOpenFail = function (this: unknown, remote: number): void {
    original.call(proto, remote, reason, desc);
  };
  try {
    reject();
  } finally {
    if (own) proto.channelOpenFail = original;
    else delete (proto as Partial<typeof proto>).channelOpenFail;
  }
}

const KNOWN_TYPES = new Set(['session', 'direct-tcpip', 'direct-streamlocal@openssh.com']);
const installedMarker = Symbol('ssh-proxy.unknownChannelType');

/**
 * Channel types ssh2 does not handle (x11, forwarded-tcpip, tun@openssh.com, anything else) are refused
 * with UNKNOWN_CHANNEL_TYPE and `description` instead of ssh2's empty description. Idempotent per client.
 */
export function installUnknownChannelTypeMessage(
  client: Connection,
  description = 'channel type not supported',
): void {
  const internals = internalsOf(client);
  const handlers = internals._protocol._handlers as Record<string | symbol, unknown>;
  if (handlers[installedMarker]) return;
  const original = handlers.CHANNEL_OPEN as ((p: unknown, info: ChannelOpenInfo) => void) | undefined;
  if (typeof original !== 'function') throw new TypeError('ssh2 connection has no CHANNEL_OPEN handler');
  const desc = cleanDescription(description);
  handlers.CHANNEL_OPEN = (p: unknown, info: ChannelOpenInfo): void => {
    // Before authentication ssh2 refuses every open as administratively prohibited; keep that.
    if (internals.authenticated && !KNOWN_TYPES.has(info.type)) {
      internals._protocol.channelOpenFail(info.sender, OpenFailure.UNKNOWN_CHANNEL_TYPE, desc);
      return;
    }
    original(p, info);
  };
  handlers[installedMarker] = true;
}
