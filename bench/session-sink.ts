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
import { widenReceiveWindows } from '../src/agent/flow-control.js';
import type { Empty } from '../src/gen/google/protobuf/empty.js';
import {
  RecordingServiceService,
  SessionServiceService,
  UpsertSessionResponse,
  type RecordingServiceServer,
  type SessionServiceServer,
} from '../src/gen/session/v1/session.js';

/** What the sink reads of a frame: payload and dropped bytes of a chunk (zero for other frames). */
interface Sizes {
  bytes: number;
  dropped: number;
}

function varint(b: Buffer, p: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    const x = b[p++];
    if (x === undefined) throw new Error('truncated varint');
    v += (x & 0x7f) * mul;
    if (x < 0x80) return [v, p];
    mul *= 128;
  }
}

/** Walks `{chunk = 2: {data = 2, dropped_bytes = 4}}` without copying (the generated decoder copies). */
function sizes(frame: Buffer): Sizes {
  const out = { bytes: 0, dropped: 0 };
  if (frame[0] !== 0x12) return out; // not a chunk frame
  let [len, p] = varint(frame, 1);
  const end = p + len;
  while (p < end) {
    let key: number;
    [key, p] = varint(frame, p);
    const field = key >>> 3;
    if ((key & 7) === 2) {
      [len, p] = varint(frame, p);
      if (field === 2) out.bytes += len;
      p += len;
    } else {
      let v: number;
      [v, p] = varint(frame, p);
      if (field === 4) out.dropped += v;
    }
  }
  return out;
}

function consume(kind: string) {
  return (call: ServerReadableStream<Sizes, Empty>, cb: sendUnaryData<Empty>): void => {
    let bytes = 0;
    let dropped = 0;
    call.on('data', (f: Sizes) => {
      bytes += f.bytes;
      dropped += f.dropped;
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

// The four streams decode frames to their sizes only; the unary calls use the generated codecs.
const streams = [
  'streamShellRecording',
  'streamExecRecording',
  'streamTcpipRecording',
  'streamSftpRecording',
] as const;
const service = { ...RecordingServiceService } as Record<string, object>;
for (const m of streams) service[m] = { ...RecordingServiceService[m], requestDeserialize: sizes };

const server = new Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
server.addService(SessionServiceService, sessions);
server.addService(service as unknown as typeof RecordingServiceService, recordings);
server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`session sink: ${err.message}\n`);
    process.exit(1);
  }
  // As a real session service should: wide receive windows, so uploads do not wait on WINDOW_UPDATEs.
  widenReceiveWindows(server);
  process.stdout.write(`${JSON.stringify({ address: `127.0.0.1:${port}`, pid: process.pid })}\n`);
});
process.stdin.on('end', () => {
  server.forceShutdown();
  process.exit(0);
});
process.stdin.resume();
