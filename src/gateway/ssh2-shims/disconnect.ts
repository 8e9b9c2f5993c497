// SSH_MSG_DISCONNECT with a reason code and a description (RFC 4253 §11.1). ssh2's own end() always
// sends "by application" with an empty description, so a user never learns why they were cut off;
// OpenSSH prints the description ("Received disconnect from …: 2: Too many authentication failures").
import type { Connection } from 'ssh2';

import { internalsOf, protocolConstants, protocolUtils } from './internals.js';

export const DisconnectReason = {
  PROTOCOL_ERROR: 2,
  BY_APPLICATION: 11,
  TOO_MANY_CONNECTIONS: 12,
  NO_MORE_AUTH_METHODS_AVAILABLE: 14,
} as const;

/** How long the peer has to close after a disconnect before the socket is destroyed. */
export const DISCONNECT_GRACE_MS = 2000;

interface SocketLike {
  end?(): void;
  destroy?(): void;
  destroyed?: boolean;
  writable?: boolean;
}

/**
 * Sends the disconnect, then ends the socket (ssh2 then emits 'close' on the connection). A peer that
 * does not close within DISCONNECT_GRACE_MS (stuck at a prompt, or ignoring the disconnect) is cut off.
 */
export function disconnectWithMessage(client: Connection, reason: number, message: string): void {
  const internals = internalsOf(client);
  const sock = internals._sock as SocketLike | undefined;
  if (!sock || sock.destroyed || sock.writable === false) return;
  const desc = Buffer.from(message.slice(0, 256));
  const w = internals._protocol._packetRW.write;
  // Always a full packet (the message may be sent during a key exchange), as ssh2's disconnect() does.
  const start = (w as unknown as { allocStartKEX: number }).allocStartKEX;
  const len = 1 + 4 + 4 + desc.length + 4;
  const packet = w.alloc(len, true);
  let p = start;
  packet[p++] = protocolConstants.MESSAGE.DISCONNECT ?? 1;
  packet.writeUInt32BE(reason >>> 0, p);
  p += 4;
  packet.writeUInt32BE(desc.length, p);
  p += 4;
  desc.copy(packet, p);
  p += desc.length;
  packet.writeUInt32BE(0, p); // empty language tag
  try {
    protocolUtils.sendPacket(internals._protocol, w.finalize(packet, true), true);
  } catch {
    // The transport is already failing; ending the socket is all that is left.
  }
  sock.end?.();
  setTimeout(() => sock.destroy?.(), DISCONNECT_GRACE_MS).unref();
}
