// Wider HTTP/2 receive windows and TCP_NODELAY for the agent's gRPC server connections.
//
// grpc-js applies 'grpc-node.flow_control_window' only to clients; its server keeps Node's 64 KiB
// stream and connection windows, so every 32 KiB frame of an upload (client → workspace) waited for a
// WINDOW_UPDATE round trip and both processes sat idle two thirds of the time (bench: ~200 MB/s).
// This reaches into grpc-js 1.14's server (its private `http2Servers` map) once, after binding.
import type { Http2Server, Http2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Server } from '@grpc/grpc-js';

// 1 MiB, not more: Node's http2 stops reading a session while one of its writes is pending, so when
// both ends of one connection have more unread data in flight than the kernel's socket buffers hold,
// each waits for the other for ever (keepalive then drops every stream). 8 MiB windows did exactly that
// under `npm run load` (100 connections); 1 MiB ran clean and costs 5-20 % of single-stream speed.
export const AGENT_WINDOW_BYTES = 1024 * 1024;

export function widenReceiveWindows(server: Server, bytes = AGENT_WINDOW_BYTES): boolean {
  const servers = (server as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const h2 of servers.keys()) {
    // Keystroke echoes must not wait behind Nagle (grpc-js sets TCP_NODELAY only on clients).
    h2.on('connection', (socket: Socket) => socket.setNoDelay?.(true));
    h2.on('session', (session: Http2Session) => {
      try {
        // Connection-level window, and the per-stream initial window announced in SETTINGS.
        session.setLocalWindowSize(bytes);
        session.settings({ initialWindowSize: bytes });
      } catch {
        // A session that is already closing keeps its defaults.
      }
    });
  }
  return true;
}
