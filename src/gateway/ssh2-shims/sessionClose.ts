// Completes the close of a session channel whose shell/exec/subsystem request was refused
// (node-notes §3 trap 9): ssh2 then emits 'close' on the session but never answers the client's
// CHANNEL_CLOSE nor frees the channel id, so a multiplexing client (ControlMaster, VS Code) would keep
// a zombie channel. This answers the close and frees the id exactly when ssh2 would not.
import type { Connection, Session } from 'ssh2';

import { internalsOf } from './internals.js';

interface SessionInternals {
  _channel?: unknown;
  _chanInfo?: { incoming: { id: number }; outgoing: { id: number; state?: string } };
}

export function completeSessionClose(client: Connection, session: Session): void {
  session.once('close', () => {
    const s = session as unknown as SessionInternals;
    // With an inner channel ssh2's own close handling runs.
    if (s._channel !== undefined || !s._chanInfo) return;
    const internals = internalsOf(client);
    const info = s._chanInfo;
    if (info.outgoing.state === 'closed') return;
    info.outgoing.state = 'closed';
    try {
      internals._protocol.channelClose(info.outgoing.id);
    } catch {
      // The connection is going away anyway.
    }
    internals._chanMgr.remove(info.incoming.id);
  });
}
