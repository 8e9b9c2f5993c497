// Helpers for the session tests: a manual clock for the recorder, a capturing RecordingService (a real
// gRPC server that keeps every frame and call it receives), and a RecordingContext builder.
import {
  Server,
  status,
  type sendUnaryData,
  type ServerReadableStream,
  type ServerUnaryCall,
} from '@grpc/grpc-js';
import {
  RecordingServiceService,
  SessionServiceService,
  type DataChunk,
  type EndRecordingSessionRequest,
  type EndSessionRequest,
  type RecordingServiceServer,
  type Session,
  type SessionServiceServer,
  type UpsertSessionRequest,
  type UpsertSessionResponse,
} from '../../src/gen/session/v1/session.js';
import type { Empty } from '../../src/gen/google/protobuf/empty.js';
import type { RecorderClock } from '../../src/gateway/recorder.js';
import type { RecordedKind, RecordingContext } from '../../src/gateway/tap.js';
import { bindServer, grpcError, shutdownServer } from '../../src/local/grpc-server.js';

/** Time that moves only when the test says so; timers fire in order of their due time. */
export class ManualClock implements RecorderClock {
  t = 1_700_000_000_000;
  private seq = 0;
  private timers = new Map<number, { at: number; f: () => void }>();

  now(): number {
    return this.t;
  }
  timer(ms: number, f: () => void): () => void {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, f });
    return () => void this.timers.delete(id);
  }
  pending(): number {
    return this.timers.size;
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; f: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].f();
    }
    this.t = end;
  }
}

export type Captured =
  | {
      rpc: RecordedKind;
      metadata: Record<string, string>;
      frames: Array<Record<string, unknown>>;
      ended: 'ok' | 'cancelled';
    }
  | never;

export interface CaptureEvent {
  kind: 'stream-end' | 'end-recording-session' | 'upsert' | 'end-session';
  id: string;
}

export interface CaptureServer {
  address: string;
  streams: Captured[];
  endRecordingSessions: EndRecordingSessionRequest[];
  upserts: Session[];
  endSessions: EndSessionRequest[];
  /** Order of stream ends and unary calls. */
  events: CaptureEvent[];
  /** Fail the next streams after this many frames (mid-stream break), or reject unary calls. */
  breakAfterFrames: number | undefined;
  failUnary: boolean;
  /** Unary calls refused because of failUnary. */
  refused: number;
  close(): Promise<void>;
}

/** A real session.v1 server that records what it gets (for checking the wire field by field). */
export async function startCaptureServer(): Promise<CaptureServer> {
  const cap: CaptureServer = {
    address: '',
    streams: [],
    endRecordingSessions: [],
    upserts: [],
    endSessions: [],
    events: [],
    breakAfterFrames: undefined,
    failUnary: false,
    refused: 0,
    close: async () => undefined,
  };
  const stream =
    (rpc: RecordedKind) =>
    (call: ServerReadableStream<{ payload?: unknown }, Empty>, cb: sendUnaryData<Empty>): void => {
      const md: Record<string, string> = {};
      for (const [k, v] of Object.entries(call.metadata.getMap())) md[k] = String(v);
      const entry = {
        rpc,
        metadata: md,
        frames: [] as Array<Record<string, unknown>>,
        ended: 'cancelled' as 'ok' | 'cancelled',
      };
      cap.streams.push(entry);
      let answered = false;
      call.on('data', (f: { payload?: Record<string, unknown> }) => {
        entry.frames.push(f.payload ?? {});
        if (!answered && cap.breakAfterFrames !== undefined && entry.frames.length >= cap.breakAfterFrames) {
          answered = true;
          cb(grpcError(status.INTERNAL, 'capture server breaks the stream'));
        }
      });
      call.on('end', () => {
        if (answered) return;
        answered = true;
        entry.ended = 'ok';
        cap.events.push({
          kind: 'stream-end',
          id: String((entry.frames[0]?.header as { sessionId?: string })?.sessionId),
        });
        cb(null, {});
      });
      call.on('error', () => undefined);
    };
  const unaryOf =
    <Req, Res>(f: (r: Req) => Res) =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>): void => {
      if (cap.failUnary) {
        cap.refused++;
        return cb(grpcError(status.UNAVAILABLE, 'capture server refuses'));
      }
      cb(null, f(call.request));
    };
  const recording: RecordingServiceServer = {
    streamShellRecording: stream('shell'),
    streamExecRecording: stream('exec'),
    streamTcpipRecording: stream('tcpip'),
    streamSftpRecording: stream('sftp'),
    endRecordingSession: unaryOf((r: EndRecordingSessionRequest): Empty => {
      cap.endRecordingSessions.push(r);
      cap.events.push({ kind: 'end-recording-session', id: r.connectionId });
      return {};
    }),
  };
  const sessions: SessionServiceServer = {
    upsertSession: unaryOf((r: UpsertSessionRequest): UpsertSessionResponse => {
      if (r.session) cap.upserts.push(r.session);
      cap.events.push({ kind: 'upsert', id: r.session?.sessionId ?? '' });
      return { session: r.session };
    }),
    endSession: unaryOf((r: EndSessionRequest): Empty => {
      cap.endSessions.push(r);
      cap.events.push({ kind: 'end-session', id: r.sessionId });
      return {};
    }),
  };
  const server = new Server();
  server.addService(RecordingServiceService, recording);
  server.addService(SessionServiceService, sessions);
  cap.address = await bindServer(server, '127.0.0.1:0');
  cap.close = () => shutdownServer(server, 1000);
  return cap;
}

/** The chunks of a captured stream (frames after the header). */
export function chunksOf(c: Captured): DataChunk[] {
  return c.frames.filter((f) => f.$case === 'chunk').map((f) => f.chunk as DataChunk);
}

let n = 0;
export function context(kind: RecordedKind, over: Partial<RecordingContext> = {}): RecordingContext {
  n++;
  const conn = over.connectionId ?? `local-1-conn${n}aaaaaaaaaaaaaaaaaaaaa`;
  const prefix = { shell: 'sh', exec: 'ex', sftp: 'sf', tcpip: 'pf' }[kind];
  return {
    kind,
    channelId: `${prefix}-${conn}${n}`,
    connectionId: conn,
    username: 'alice',
    workspace: { name: 'ws-alice', blueprint: 'default' },
    userToken: () => Promise.resolve(fakeJwt({ sub: 'alice' })),
    obligation:
      kind === 'shell' ? 'shell' : kind === 'exec' ? 'exec' : kind === 'sftp' ? 'sftp' : 'direct-tcpip',
    ...over,
  };
}

/** An unsigned JWT-shaped token (the session service reads `sub` without verifying). */
export function fakeJwt(claims: Record<string, unknown>): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'none' })}.${b(claims)}.sig`;
}
