// Refusing a connection before key exchange in a way the user understands.
//
// sshd just closes the socket when MaxStartups is hit, and the OpenSSH client then reports
// "kex_exchange_identification: Connection closed by remote host", which says nothing. Instead we
// send our version line followed by an unencrypted SSH_MSG_DISCONNECT packet: RFC 4253 allows a
// disconnect at any time, packets before the first NEWKEYS are plaintext, and the OpenSSH client
// prints it at its default log level ("Received disconnect from <host> port <port>:12: too many
// connections"). ssh2 cannot do this (it only speaks after its own key exchange set-up), so the
// bytes are written here; this module loads nothing but `node:net`, so the forking parent can use it.
import type net from 'node:net';

/** RFC 4253 §11.1 reason codes used here. */
export const DISCONNECT = {
  PROTOCOL_ERROR: 2,
  BY_APPLICATION: 11,
  TOO_MANY_CONNECTIONS: 12,
} as const;

const SSH_MSG_DISCONNECT = 1;
const BLOCK = 8;

/** An unencrypted binary packet (RFC 4253 §6) carrying SSH_MSG_DISCONNECT. */
export function disconnectPacket(reason: number, description: string): Buffer {
  const text = Buffer.from(description, 'utf8');
  const payload = Buffer.alloc(1 + 4 + 4 + text.length + 4);
  let at = payload.writeUInt8(SSH_MSG_DISCONNECT, 0);
  at = payload.writeUInt32BE(reason, at);
  at = payload.writeUInt32BE(text.length, at);
  at += text.copy(payload, at);
  payload.writeUInt32BE(0, at); // empty language tag
  // packet_length(4) + padding_length(1) + payload + padding must be a multiple of 8, padding ≥ 4.
  let padding = BLOCK - ((4 + 1 + payload.length) % BLOCK);
  if (padding < 4) padding += BLOCK;
  const packet = Buffer.alloc(4 + 1 + payload.length + padding);
  packet.writeUInt32BE(1 + payload.length + padding, 0);
  packet.writeUInt8(padding, 4);
  payload.copy(packet, 5);
  return packet;
}

export interface RefuseOptions {
  /** Our identification string, e.g. `SSH-2.0-ssh-proxy_v1.0.0/abc1234_k8shell.io`. */
  ident: string;
  reason: number;
  /** Shown by the client; keep it short and plain. */
  message: string;
  /** Hard limit on how long the refused socket may linger (default 2000 ms). */
  lingerMs?: number;
}

/**
 * Writes the version line and a disconnect, then half-closes. Whatever the client sends is read
 * and dropped until it closes too: closing with unread input would make the kernel send a reset,
 * and the client could lose our message. The socket is destroyed after `lingerMs` regardless.
 */
export function refuseSsh(socket: net.Socket, o: RefuseOptions): void {
  const ident = o.ident.startsWith('SSH-') ? o.ident : `SSH-2.0-${o.ident}`;
  socket.on('error', () => undefined);
  const timer = setTimeout(() => socket.destroy(), o.lingerMs ?? 2000);
  timer.unref();
  socket.on('close', () => clearTimeout(timer));
  socket.on('data', () => undefined);
  socket.resume();
  socket.end(Buffer.concat([Buffer.from(`${ident}\r\n`, 'latin1'), disconnectPacket(o.reason, o.message)]));
}
