// Opens an `auth-agent@openssh.com` channel toward the SSH client (node-notes §6). ssh2 has no public API
// for it, but its protocol layer can send the open and its generic open-confirmation/failure handlers call
// whatever callback is registered under the local channel id.
import type { Channel, Connection } from 'ssh2';

import { channelModule, internalsOf, type ConnectionInternals } from './internals.js';

export const AGENT_CHANNEL_TYPE = 'auth-agent@openssh.com';

/**
 * Resolves with the opened channel, or rejects with an Error when the client refuses it, no local channel
 * id is free, or the connection is (or gets) closed first. Open it only after the session's 'auth-agent'
 * event.
 */
export function openAgentChannel(client: Connection): Promise<Channel> {
  return new Promise<Channel>((resolve, reject) => {
    let internals: ConnectionInternals;
    try {
      internals = internalsOf(client);
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const sock = internals._sock;
    if (!sock || sock.destroyed || sock.writable === false) {
      reject(new Error('cannot open agent channel: connection closed'));
      return;
    }

    let settled = false;
    const onClose = (): void => finish(new Error('cannot open agent channel: connection closed'));
    const finish = (err: Error | undefined, channel?: Channel): void => {
      if (settled) return;
      settled = true;
      client.removeListener('close', onClose);
      if (err) reject(err);
      else if (channel) resolve(channel);
      else reject(new Error('agent channel open returned no channel'));
    };

    const callback = Object.assign(
      (err: Error | undefined, channel?: Channel): void => finish(err, channel),
      {
        type: AGENT_CHANNEL_TYPE,
      },
    );
    const id = internals._chanMgr.add(callback);
    if (id === -1) {
      finish(new Error('cannot open agent channel: no free channel id'));
      return;
    }
    // ssh2 normally fails every pending open on close; this guards against a close racing the add.
    client.once('close', onClose);
    try {
      internals._protocol.openssh_authAgent(id, channelModule.MAX_WINDOW, channelModule.PACKET_SIZE);
    } catch (err) {
      internals._chanMgr.remove(id);
      finish(err instanceof Error ? err : new Error(String(err)));
    }
  });
}
