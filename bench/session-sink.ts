// Child process of the bench: a session.v1 server (SessionService and RecordingService, real gRPC on
// loopback) that reads every recording stream to its end and discards the data. The recorded
// scenarios measure what recording costs the gateway, so the service must keep up and must not share
// the gateway's event loop; what a real service does with the bytes (the local one writes asciicast
// JSON, ~6 bytes per binary zero) is its own cost, not the gateway's.
//
// Prints {"address","pid"} when ready, then one JSON line per finished stream:
// {"kind","bytes","dropped"} (payload bytes received, dropped_bytes reported by the gateway).
// Stops when its stdin closes.
import { Server, ServerCredentials, type ServerReadableStream, type sendUnaryData } from '@grpc/grpc-js';
import type { Empty } from '../src/gen/google/protobuf/empty.js';
import {
  RecordingServiceService,
  SessionServiceService,
  UpsertSessionResponse,
  type RecordingServiceServer,
  type SessionServiceServer,
} from '../src/gen/session/v1/session.js';

interface AnyFrame {
  payload?:
    | { $case: 'header' }
    | { $case: 'chunk'; chunk: { data: Buffer; droppedBytes: number } }
    | { $case: 'resize' };
}

function consume(kind: string) {
  return (call: ServerReadableStream<AnyFrame, Empty>, cb: sendUnaryData<Empty>): void => {
    let bytes = 0;
    let dropped = 0;
    call.on('data', (f: AnyFrame) => {
      if (f.payload?.$case !== 'chunk') return;
      bytes += f.payload.chunk.data.length;
      dropped += f.payload.chunk.droppedBytes;
    });
    call.on('error', () => undefined);
    call.on('end', () => {
      process.stdout.write(`${JSON.stringify({ kind, bytes, dropped })}\n`);
      cb(null, {});
    });
  };
}

const sessions: SessionServiceServer = {
  upsertSession: (call, cb) => cb(null, UpsertSessionResponse.fromPartial({ session: call.request.session })),
  endSession: (_call, cb) => cb(null, {}),
};

const recordings: RecordingServiceServer = {
  streamShellRecording: consume('shell'),
  streamExecRecording: consume('exec'),
  streamSftpRecording: consume('sftp'),
  streamTcpipRecording: consume('tcpip'),
  endRecordingSession: (_call, cb) => cb(null, {}),
};

const server = new Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
server.addService(SessionServiceService, sessions);
server.addService(RecordingServiceService, recordings);
server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`session sink: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ address: `127.0.0.1:${port}`, pid: process.pid })}\n`);
});
process.stdin.on('end', () => {
  server.forceShutdown();
  process.exit(0);
});
process.stdin.resume();
