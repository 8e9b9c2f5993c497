// The local session service: a real session.v1 gRPC server (wire-protocol.md §2.4, §5.11, §5.12) on
// loopback. SessionService keeps sessions in the JSON-lines store; RecordingService writes each
// recording stream under `<data-dir>/recordings/<username>/<connection id>/`.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Server, status, type Metadata, type sendUnaryData, type ServerReadableStream } from '@grpc/grpc-js';
import { getLogger, errText, type Logger } from '../../ops/log.js';
import type { Empty } from '../../gen/google/protobuf/empty.js';
import {
  RecordingFormat,
  RecordingServiceService,
  SessionServiceService,
  UpsertSessionResponse,
  type EndRecordingSessionRequest,
  type EndSessionRequest,
  type ExecRecordingFrame,
  type ExecRecordingHeader,
  type ShellRecordingHeader,
  type TcpipRecordingHeader,
  type RecordingOptions,
  type RecordingServiceServer,
  type Session,
  type SessionServiceServer,
  type SftpRecordingFrame,
  type ShellRecordingFrame,
  type TcpipRecordingFrame,
  RecordingType,
} from '../../gen/session/v1/session.js';
import { widenReceiveWindows } from '../../agent/flow-control.js';
import { bindServer, checkBearer, grpcError, isGrpcError, shutdownServer, unary } from '../grpc-server.js';
import { OutFile } from './out-file.js';
import { PcapngFile } from './pcapng.js';
import { recordingsRoot, safeSegment, tokenSubject } from './paths.js';
import {
  CastSink,
  connectionDir,
  NothingSink,
  PcapSink,
  SftpSink,
  storedFormat,
  type RecordingSink,
  type SharedPcap,
} from './sinks.js';
import { SessionStore, type RecordingKind, type StoredRecording, type StoredSession } from './store.js';

export interface LocalSessionServiceOptions {
  dataDir: string;
  /** host:port or unix:/path; default 127.0.0.1:0. */
  listen?: string;
  /** When set, every call must carry `authorization: Bearer <content of this file>`. */
  tokenFile?: string;
  logger?: Logger;
  /** Store bounds (tests make them small). */
  store?: { compactBytes?: number; maxEndedSessions?: number; maxRecordings?: number };
}

export interface LocalSessionService {
  address: string;
  store: SessionStore;
  /** `<data-dir>/recordings`. */
  recordingsDir: string;
  /** Recording streams running now. */
  activeStreams(): number;
  close(): Promise<void>;
}

/** Concurrent recording streams accepted (a bound on open files). */
const MAX_STREAMS = 1024;
/** Shared pcapng entries kept for connections that have not called EndRecordingSession. */
const MAX_IDLE_PCAPS = 4096;

type AnyFrame = ShellRecordingFrame | ExecRecordingFrame | TcpipRecordingFrame | SftpRecordingFrame;

const TYPE_OF: Record<RecordingKind, RecordingType> = {
  shell: RecordingType.RECORDING_TYPE_SHELL,
  exec: RecordingType.RECORDING_TYPE_EXEC,
  tcpip: RecordingType.RECORDING_TYPE_TCPIP,
  sftp: RecordingType.RECORDING_TYPE_SFTP,
};

function toProto(s: StoredSession, recordings: StoredRecording[]): Session {
  return {
    sessionId: s.id,
    username: s.username,
    k8shelldVer: s.k8shelldVer,
    client: s.client,
    clientIp: s.clientIp,
    startTime: s.startTime,
    endTime: s.endTime,
    workspace: s.workspace,
    bytesIn: s.bytesIn,
    bytesOut: s.bytesOut,
    operations: s.operations,
    blueprint: s.blueprint,
    updatedAt: s.updatedAt,
    recordings: recordings.map((r) => ({ recordingId: r.id, type: TYPE_OF[r.kind], parentRecordingId: '' })),
    execRecordings: recordings.filter((r) => r.kind === 'exec').length,
  };
}

export async function startLocalSessionService(o: LocalSessionServiceOptions): Promise<LocalSessionService> {
  const log = o.logger ?? getLogger('local-session');
  const store = new SessionStore({ dataDir: o.dataDir, log, ...o.store });
  const root = recordingsRoot(o.dataDir);
  const tf = o.tokenFile;
  const active = new Map<string, RecordingSink>();
  const running = new Set<Promise<void>>();
  const pcaps = new Map<string, SharedPcap>();
  const nowSec = () => Math.floor(Date.now() / 1000);

  const sessionImpl: SessionServiceServer = {
    upsertSession: unary(tf, log, 'UpsertSession', (req: { session: Session | undefined }) => {
      const s = req.session;
      if (!s?.sessionId) throw grpcError(status.INVALID_ARGUMENT, 'session.session_id is required');
      const old = store.sessions.get(s.sessionId);
      // An ended session stays ended: a late heartbeat must not revive it.
      if (old && old.endTime > 0)
        return UpsertSessionResponse.fromPartial({ session: toProto(old, store.recordingsOf(old.id)) });
      const now = nowSec();
      const merged: StoredSession = {
        id: s.sessionId,
        username: s.username || old?.username || '',
        client: s.client || old?.client || '',
        clientIp: s.clientIp || old?.clientIp || '',
        workspace: s.workspace || old?.workspace || '',
        blueprint: s.blueprint || old?.blueprint || '',
        k8shelldVer: s.k8shelldVer || old?.k8shelldVer || '',
        startTime: old?.startTime || s.startTime || now,
        updatedAt: s.updatedAt || now,
        endTime: 0,
        bytesIn: Math.max(s.bytesIn, old?.bytesIn ?? 0),
        bytesOut: Math.max(s.bytesOut, old?.bytesOut ?? 0),
        operations: [...new Set([...(old?.operations ?? []), ...s.operations])].sort(),
      };
      store.putSession(merged);
      return UpsertSessionResponse.fromPartial({ session: toProto(merged, store.recordingsOf(merged.id)) });
    }),

    endSession: unary(tf, log, 'EndSession', (req: EndSessionRequest): Empty => {
      const old = store.sessions.get(req.sessionId);
      if (!old) throw grpcError(status.NOT_FOUND, `session "${req.sessionId}" is not known`);
      store.putSession({
        ...old,
        endTime: req.endTime || nowSec(),
        updatedAt: nowSec(),
        bytesIn: req.bytesIn,
        bytesOut: req.bytesOut,
      });
      log.info({ conn: req.sessionId, bytesIn: req.bytesIn, bytesOut: req.bytesOut }, 'session ended');
      return {};
    }),
  };

  /** The pcapng of (connection, destination), opened (or reopened for append) for one more stream. */
  async function acquirePcap(r: StoredRecording): Promise<SharedPcap> {
    const t = r.tcpip ?? { srcHost: '', srcPort: 0, dstHost: '', dstPort: 0 };
    const key = `${r.connectionId}\n${t.dstHost}\n${t.dstPort}`;
    let s = pcaps.get(key);
    if (!s) {
      const rel = join(
        connectionDir(r.username, r.connectionId),
        `tcpip-${safeSegment(t.dstHost, 'host')}-${t.dstPort}.pcapng`,
      );
      s = {
        key,
        rel,
        abs: join(root, rel),
        file: undefined,
        refs: 0,
        connectionEnded: false,
        closing: undefined,
      };
      pcaps.set(key, s);
    }
    if (s.closing) await s.closing;
    if (s.refs === 0) {
      const fresh = !existsSync(s.abs);
      const out = new OutFile(s.abs, { append: !fresh });
      if (!s.file) s.file = new PcapngFile(out, fresh);
      else s.file.reopen(out);
    }
    s.refs++;
    return s;
  }

  /** A stream of the pcap ended: the file is closed when no stream uses it (bounded open files). */
  async function releasePcap(s: SharedPcap): Promise<void> {
    s.refs--;
    if (s.refs > 0 || !s.file) return;
    s.closing = s.file.file.close();
    await s.closing;
    s.closing = undefined;
    if (s.connectionEnded && s.refs === 0) pcaps.delete(s.key);
    // A gateway that never calls EndRecordingSession (the reference) must not grow the map forever:
    // beyond the bound, idle entries go (a later stream to them starts a new conversation set).
    if (pcaps.size > MAX_IDLE_PCAPS) {
      for (const [k, e] of pcaps) {
        if (pcaps.size <= MAX_IDLE_PCAPS) break;
        if (e.refs === 0 && !e.closing) pcaps.delete(k);
      }
    }
  }

  function newRecording(
    kind: RecordingKind,
    h: {
      sessionId: string;
      userToken: string;
      startedAt: number;
      connectionId: string;
      options: RecordingOptions | undefined;
    },
  ): StoredRecording {
    const username = tokenSubject(h.userToken) ?? store.sessions.get(h.connectionId)?.username ?? 'unknown';
    return {
      id: h.sessionId,
      connectionId: h.connectionId,
      kind,
      username,
      startedAt: h.startedAt || nowSec(),
      endedAt: 0,
      status: 'recording',
      format: storedFormat(kind, h.options?.format),
      files: [],
      bytes: { input: 0, output: 0 },
      dropped: { input: 0, output: 0 },
    };
  }

  async function openSink(kind: RecordingKind, frame: AnyFrame): Promise<RecordingSink> {
    const p = frame.payload;
    if (p?.$case !== 'header') throw grpcError(status.INVALID_ARGUMENT, 'the first frame must be the header');
    const h = p.header;
    if (!h.sessionId || !h.connectionId) {
      throw grpcError(status.INVALID_ARGUMENT, 'header.session_id and header.connection_id are required');
    }
    if (store.recordings.has(h.sessionId)) {
      throw grpcError(status.ALREADY_EXISTS, `recording "${h.sessionId}" exists already`);
    }
    if (active.size >= MAX_STREAMS) throw grpcError(status.RESOURCE_EXHAUSTED, 'too many recording streams');
    const gzip = h.options?.gzip === true;
    const r = newRecording(kind, h);
    switch (kind) {
      case 'shell': {
        const sh = h as ShellRecordingHeader;
        r.width = sh.width;
        r.height = sh.height;
        return new CastSink(root, r, { gzip, width: sh.width, height: sh.height });
      }
      case 'exec': {
        r.command = (h as ExecRecordingHeader).command;
        return new CastSink(root, r, { gzip, width: 80, height: 24, command: r.command });
      }
      case 'tcpip': {
        const t = h as TcpipRecordingHeader;
        r.tcpip = { srcHost: t.srcHost, srcPort: t.srcPort, dstHost: t.dstHost, dstPort: t.dstPort };
        if (h.options?.format === RecordingFormat.RECORDING_FORMAT_NONE) return new NothingSink(r);
        return new PcapSink(r, await acquirePcap(r), releasePcap);
      }
      case 'sftp':
        return new SftpSink(root, r, { gzip });
    }
  }

  /** One recording stream: header, then frames in order; the call pauses while files drain. */
  async function consume(kind: RecordingKind, call: ServerReadableStream<AnyFrame, Empty>): Promise<Empty> {
    let sink: RecordingSink | undefined;
    let complete = false;
    let failure: unknown;
    try {
      for await (const frame of call as AsyncIterable<AnyFrame>) {
        if (!sink) {
          sink = await openSink(kind, frame);
          active.set(sink.recording.id, sink);
          store.putRecording(sink.recording);
          log.info(
            { conn: sink.recording.connectionId, chan: sink.recording.id, kind: sink.recording.kind },
            'recording started',
          );
          continue;
        }
        const p = frame.payload;
        let ok = true;
        if (p?.$case === 'chunk') ok = sink.chunk(p.chunk);
        else if (p?.$case === 'resize') ok = sink.resize(p.resize);
        if (!ok) await sink.drained();
      }
      complete = !call.cancelled;
    } catch (e) {
      failure = e;
    }
    if (!sink) {
      if (failure) throw failure;
      throw grpcError(status.INVALID_ARGUMENT, 'the stream carried no header');
    }
    const r = sink.recording;
    const err = await sink.finish(complete);
    active.delete(r.id);
    r.endedAt = nowSec();
    r.status = complete && !err ? 'complete' : 'incomplete';
    if (err) r.note = `write failed: ${errText(err)}`;
    store.putRecording(r);
    log.info(
      { conn: r.connectionId, chan: r.id, status: r.status, bytes: r.bytes, dropped: r.dropped },
      'recording finished',
    );
    if (err) throw grpcError(status.INTERNAL, `storing the recording failed: ${errText(err)}`);
    if (failure) throw failure;
    return {};
  }

  function recordingHandler(kind: RecordingKind, name: string) {
    return (call: ServerReadableStream<AnyFrame, Empty>, cb: sendUnaryData<Empty>): void => {
      const denied = checkBearer(tf, call.metadata as Metadata, log);
      if (denied) {
        cb(denied);
        call.destroy();
        return;
      }
      const run = consume(kind, call).then(
        (res) => cb(null, res),
        (e: unknown) => {
          if (!call.cancelled) cb(isGrpcError(e) ? e : grpcError(status.INTERNAL, `${name}: ${errText(e)}`));
        },
      );
      running.add(run);
      void run.finally(() => running.delete(run));
    };
  }

  const recordingImpl: RecordingServiceServer = {
    streamShellRecording: recordingHandler('shell', 'StreamShellRecording'),
    streamExecRecording: recordingHandler('exec', 'StreamExecRecording'),
    streamTcpipRecording: recordingHandler('tcpip', 'StreamTcpipRecording'),
    streamSftpRecording: recordingHandler('sftp', 'StreamSftpRecording'),
    endRecordingSession: unary(tf, log, 'EndRecordingSession', (req: EndRecordingSessionRequest): Empty => {
      if (!req.connectionId) throw grpcError(status.INVALID_ARGUMENT, 'connection_id is required');
      // Shared pcapng files of the connection are finished: later streams would start new entries.
      for (const s of pcaps.values()) {
        if (!s.key.startsWith(`${req.connectionId}\n`)) continue;
        s.connectionEnded = true;
        if (s.refs === 0 && !s.closing) pcaps.delete(s.key);
      }
      log.info({ conn: req.connectionId }, 'recording session ended');
      return {};
    }),
  };

  const server = new Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
  server.addService(SessionServiceService, sessionImpl);
  server.addService(RecordingServiceService, recordingImpl);
  let address: string;
  try {
    address = await bindServer(server, o.listen ?? '127.0.0.1:0');
  } catch (e) {
    throw new Error(`session service cannot listen on ${o.listen ?? '127.0.0.1:0'}: ${errText(e)}`);
  }
  // Recording streams are uploads: with grpc-js's 64 KiB server windows every frame waits for a
  // WINDOW_UPDATE, and a gateway recording a fast download fills its queue and drops.
  widenReceiveWindows(server);
  log.info({ address, recordings: root }, 'local session service listening');

  return {
    address,
    store,
    recordingsDir: root,
    activeStreams: () => active.size,
    async close() {
      await shutdownServer(server);
      // Streams cut by the shutdown finish through their handlers (files closed, entries stored).
      await Promise.allSettled([...running]);
      await store.flush();
    },
  };
}
