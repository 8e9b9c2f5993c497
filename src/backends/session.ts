// Typed client for session.v1 (wire-protocol.md §2.4, §5.11, §5.12): SessionService (tracking) and
// RecordingService (one client stream per recorded channel). Unary calls carry a deadline; recording
// streams live as long as their channel, so their bound is the recorder's close deadline instead.
import { Metadata, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import {
  SessionServiceClient,
  type DataChunk,
  type EndRecordingSessionRequest,
  type EndSessionRequest,
  type ExecRecordingFrame,
  type ExecRecordingHeader,
  type Session,
  type SftpRecordingFrame,
  type SftpRecordingHeader,
  type ShellRecordingFrame,
  type ShellRecordingHeader,
  type TcpipRecordingFrame,
  type TcpipRecordingHeader,
  type TerminalResize,
} from '../gen/session/v1/session.js';
import type { RecordedKind } from '../gateway/tap.js';
import { ProxyError } from '../common/errors.js';
import { FastRecordingServiceClient } from '../common/recording-wire.js';
import {
  channelCredentials,
  channelOptions,
  deadline,
  describeGrpcError,
  interceptorsFor,
  unaryCall,
  type BackendConfig,
} from './grpc.js';

export type { Session };

/** Default deadline of the unary calls (ours; the reference uses the connection context). */
export const DEFAULT_SESSION_CALL_TIMEOUT_MS = 10_000;

/** The header of one recording stream, tagged with its RPC. */
export type RecordingHeader =
  | { kind: 'shell'; header: ShellRecordingHeader }
  | { kind: 'exec'; header: ExecRecordingHeader }
  | { kind: 'tcpip'; header: TcpipRecordingHeader }
  | { kind: 'sftp'; header: SftpRecordingHeader };

/** One frame after the header; `resize` only on shell streams. */
export type RecordingPayload =
  { $case: 'chunk'; chunk: DataChunk } | { $case: 'resize'; resize: TerminalResize };

/** An open recording stream (client streaming → Empty). */
export interface RecordingStream {
  /** Same contract as Writable.write: false means "wait for 'drain'"; `cb` runs once the frame left. */
  write(p: RecordingPayload, cb: (err?: Error | null) => void): boolean;
  onDrain(f: () => void): void;
  /** Half-close (CloseAndRecv); the answer arrives through `done`. */
  end(): void;
  cancel(): void;
  /** Resolves on the service's Empty answer; rejects with the call's error (at any time). */
  readonly done: Promise<void>;
}

export interface SessionBackend {
  upsertSession(session: Session): Promise<Session | undefined>;
  endSession(req: EndSessionRequest): Promise<void>;
  endRecordingSession(req: EndRecordingSessionRequest): Promise<void>;
  /**
   * Opens the stream of `header.kind` and writes the header as its first frame. `affinity` adds
   * `x-connection-affinity` (sftp and tcpip streams, §5.12).
   */
  openRecording(header: RecordingHeader, affinity: string | undefined): RecordingStream;
  /** Resolves when the channel is connected, rejects after `ms` (the fail-closed open check). */
  waitForReady(ms: number): Promise<void>;
  close(): void;
}

export interface SessionClientOptions {
  /** Deadline of each unary call; default 10 s. */
  timeoutMs?: number;
}

/** The gateway's session client from `session.*`; undefined without an address (nothing is reported). */
export function sessionClientFromConfig(cfg: {
  session: BackendConfig & { timeout: number };
}): SessionBackend | undefined {
  if (!cfg.session.address) return undefined;
  return createSessionClient(cfg.session, { timeoutMs: cfg.session.timeout * 1000 });
}

type AnyCall =
  | ClientWritableStream<ShellRecordingFrame>
  | ClientWritableStream<ExecRecordingFrame>
  | ClientWritableStream<TcpipRecordingFrame>
  | ClientWritableStream<SftpRecordingFrame>;

export function createSessionClient(cfg: BackendConfig, opts: SessionClientOptions = {}): SessionBackend {
  const clientOpts = { ...channelOptions(cfg), interceptors: interceptorsFor(cfg) };
  const creds = channelCredentials(cfg);
  const sessions = new SessionServiceClient(cfg.address, creds, clientOpts);
  // Without retries grpc-js holds at most one unsent message per stream and calls a write's callback
  // once the frame left, so the recorder's byte accounting is the real memory bound (with retries
  // it would buffer up to 256 KiB more per stream and acknowledge writes early).
  const recordings = new FastRecordingServiceClient(cfg.address, creds, {
    ...channelOptions(cfg, { 'grpc.enable_retries': 0 }),
    interceptors: interceptorsFor(cfg),
  });
  const timeoutMs = opts.timeoutMs ?? DEFAULT_SESSION_CALL_TIMEOUT_MS;
  const fail = (rpc: string) => (e: unknown) => {
    throw new ProxyError('unavailable', `session ${rpc}: ${describeGrpcError(e)}`, { cause: e });
  };

  return {
    async upsertSession(session) {
      const r = await unaryCall(sessions, sessions.upsertSession, { session }, { timeoutMs }).catch(
        fail('UpsertSession'),
      );
      return r.session;
    },
    async endSession(req) {
      await unaryCall(sessions, sessions.endSession, req, { timeoutMs }).catch(fail('EndSession'));
    },
    async endRecordingSession(req) {
      await unaryCall(recordings, recordings.endRecordingSession, req, { timeoutMs }).catch(
        fail('EndRecordingSession'),
      );
    },
    openRecording(h, affinity) {
      const md = new Metadata();
      if (affinity) md.set('x-connection-affinity', affinity);
      let settle!: (err: ServiceError | null) => void;
      const done = new Promise<void>((resolve, reject) => {
        settle = (err) => (err ? reject(err) : resolve());
      });
      // Callers attach their handlers later; an early failure must not count as unhandled.
      done.catch(() => undefined);
      const cb = (err: ServiceError | null) => settle(err);
      let call: AnyCall;
      let write: (p: RecordingPayload, cb: (err?: Error | null) => void) => boolean;
      switch (h.kind) {
        case 'shell': {
          const c = recordings.streamShellRecording(md, cb);
          c.write({ payload: { $case: 'header', header: h.header } });
          write = (p, wcb) => c.write({ payload: p }, wcb);
          call = c;
          break;
        }
        case 'exec': {
          const c = recordings.streamExecRecording(md, cb);
          c.write({ payload: { $case: 'header', header: h.header } });
          write = (p, wcb) => c.write({ payload: chunkOnly(p, 'exec') }, wcb);
          call = c;
          break;
        }
        case 'tcpip': {
          const c = recordings.streamTcpipRecording(md, cb);
          c.write({ payload: { $case: 'header', header: h.header } });
          write = (p, wcb) => c.write({ payload: chunkOnly(p, 'tcpip') }, wcb);
          call = c;
          break;
        }
        case 'sftp': {
          const c = recordings.streamSftpRecording(md, cb);
          c.write({ payload: { $case: 'header', header: h.header } });
          write = (p, wcb) => c.write({ payload: chunkOnly(p, 'sftp') }, wcb);
          call = c;
          break;
        }
      }
      // The response callback reports the status; the stream's own 'error' event must not go unheard.
      call.on('error', () => undefined);
      return {
        write,
        onDrain: (f) => void call.once('drain', f),
        end: () => call.end(),
        cancel: () => call.cancel(),
        done,
      };
    },
    waitForReady(ms) {
      return new Promise((resolve, reject) => {
        recordings.waitForReady(deadline(ms), (err) => (err ? reject(err) : resolve()));
      });
    },
    close() {
      sessions.close();
      recordings.close();
    },
  };
}

/** Resizes exist only on shell streams; anything else is a programming error of the caller. */
function chunkOnly(p: RecordingPayload, kind: RecordedKind): { $case: 'chunk'; chunk: DataChunk } {
  if (p.$case !== 'chunk') throw new Error(`${kind} recording streams carry no ${p.$case} frames`);
  return p;
}
