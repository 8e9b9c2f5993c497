// What the local session service does with one recording stream: shell and exec become asciicast v2,
// tcpip becomes TCP conversations in a pcapng file shared per (connection, destination), sftp is kept
// as its two raw byte streams plus a log of the decoded operations. Every sink writes through
// OutFile, whose backpressure the gRPC handler honours (it pauses the stream), so memory stays bounded.
import { join } from 'node:path';
import {
  Direction,
  RecordingFormat,
  type DataChunk,
  type TerminalResize,
} from '../../gen/session/v1/session.js';
import { CastWriter } from './asciicast.js';
import { OutFile } from './out-file.js';
import {
  PcapngFile,
  SYNTHETIC_CLIENT_IP,
  SYNTHETIC_SERVER_IP,
  syntheticIp,
  TcpConversation,
} from './pcapng.js';
import { safeSegment } from './paths.js';
import { SftpDecoder, type SftpOp } from './sftp-decoder.js';
import type { RecordingFile, StoredRecording } from './store.js';

export interface RecordingSink {
  readonly recording: StoredRecording;
  /** false = wait for `drained()` before the next frame. */
  chunk(c: DataChunk): boolean;
  resize(r: TerminalResize): boolean;
  drained(): Promise<void>;
  /** Closes the files; `complete` = the stream ended normally. Returns a write error, if any. */
  finish(complete: boolean): Promise<Error | undefined>;
}

/** The directory of a connection's recordings, relative to the recordings root. */
export function connectionDir(username: string, connectionId: string): string {
  return join(safeSegment(username), safeSegment(connectionId));
}

function isInput(c: DataChunk): boolean {
  return c.direction === Direction.DIRECTION_INPUT;
}

function count(r: StoredRecording, c: DataChunk): void {
  const side = isInput(c) ? 'input' : 'output';
  r.bytes[side] += c.data.length;
  r.dropped[side] += c.droppedBytes;
}

async function closeAll(files: OutFile[]): Promise<Error | undefined> {
  await Promise.all(files.map((f) => f.close()));
  return files.find((f) => f.error)?.error;
}

/** shell and exec → `<id>.cast` (or `.cast.gz`). */
export class CastSink implements RecordingSink {
  private readonly out: OutFile;
  private readonly cast: CastWriter;
  private lastMs = 0;

  constructor(
    root: string,
    readonly recording: StoredRecording,
    opts: { gzip: boolean; width: number; height: number; command?: string },
  ) {
    const rel = join(
      connectionDir(recording.username, recording.connectionId),
      `${safeSegment(recording.id)}.cast${opts.gzip ? '.gz' : ''}`,
    );
    this.out = new OutFile(join(root, rel), { gzip: opts.gzip });
    recording.files.push({ role: 'cast', path: rel, gzip: opts.gzip });
    this.cast = new CastWriter(this.out, {
      width: opts.width,
      height: opts.height,
      timestamp: recording.startedAt,
      command: opts.command,
      title: recording.id,
    });
  }

  chunk(c: DataChunk): boolean {
    count(this.recording, c);
    this.lastMs = Math.max(this.lastMs, c.timeOffsetMs);
    let ok = true;
    if (c.droppedBytes > 0)
      ok = this.cast.marker(c.timeOffsetMs, `${c.droppedBytes} bytes not recorded`) && ok;
    if (c.data.length > 0) ok = this.cast.data(c.timeOffsetMs, isInput(c) ? 'i' : 'o', c.data) && ok;
    return ok;
  }

  resize(r: TerminalResize): boolean {
    this.lastMs = Math.max(this.lastMs, r.timeOffsetMs);
    return this.cast.resize(r.timeOffsetMs, r.width, r.height);
  }

  drained(): Promise<void> {
    return this.out.drained();
  }

  async finish(): Promise<Error | undefined> {
    this.cast.finish(this.lastMs);
    this.recording.summary = { events: this.cast.events, durationMs: this.lastMs };
    return closeAll([this.out]);
  }
}

/** A pcapng file shared by the forwards of one connection to one destination (§15.5 storage). */
export interface SharedPcap {
  readonly key: string;
  readonly rel: string;
  readonly abs: string;
  file: PcapngFile | undefined;
  refs: number;
  /** Set by EndRecordingSession: the entry goes once its last stream finished. */
  connectionEnded: boolean;
  closing: Promise<void> | undefined;
}

/** tcpip → one TCP conversation in the shared pcapng file. */
export class PcapSink implements RecordingSink {
  private readonly conv: TcpConversation;
  private lastMs = 0;
  private packets = 0;

  constructor(
    readonly recording: StoredRecording,
    private readonly shared: SharedPcap,
    private readonly release: (s: SharedPcap) => Promise<void>,
  ) {
    const t = recording.tcpip ?? { srcHost: '', srcPort: 0, dstHost: '', dstPort: 0 };
    const file = shared.file as PcapngFile;
    this.conv = new TcpConversation(
      { ip: syntheticIp(t.srcHost, SYNTHETIC_CLIENT_IP), port: file.clientPort(t.srcPort) },
      {
        ip: syntheticIp(t.dstHost, SYNTHETIC_SERVER_IP),
        port: t.dstPort > 0 && t.dstPort < 65_536 ? t.dstPort : 1,
      },
    );
    recording.files.push({ role: 'pcapng', path: shared.rel, gzip: false });
    this.write(this.conv.handshake(this.us(0)));
  }

  private us(ms: number): number {
    return this.recording.startedAt * 1_000_000 + Math.round(ms * 1000);
  }

  private write(p: Buffer[]): boolean {
    this.packets += p.length;
    return (this.shared.file as PcapngFile).write(p);
  }

  chunk(c: DataChunk): boolean {
    count(this.recording, c);
    this.lastMs = Math.max(this.lastMs, c.timeOffsetMs);
    if (c.data.length === 0 && c.droppedBytes === 0) return true;
    return this.write(this.conv.data(this.us(c.timeOffsetMs), isInput(c), c.data, c.droppedBytes));
  }

  resize(): boolean {
    return true;
  }

  drained(): Promise<void> {
    return (this.shared.file as PcapngFile).file.drained();
  }

  async finish(): Promise<Error | undefined> {
    this.write(this.conv.close(this.us(this.lastMs)));
    this.recording.summary = {
      packets: this.packets,
      clientPort: this.conv.client.port,
      payloadFromClient: this.conv.payload.fromClient,
      payloadFromServer: this.conv.payload.fromServer,
    };
    const err = (this.shared.file as PcapngFile).file.error;
    await this.release(this.shared);
    return err;
  }
}

/** tcpip with format none: only VS Code terminals were wanted, which this service does not extract. */
export class NothingSink implements RecordingSink {
  constructor(readonly recording: StoredRecording) {
    recording.note =
      'format none: only VS Code terminals were requested; the local service does not extract them';
  }
  chunk(c: DataChunk): boolean {
    count(this.recording, c);
    return true;
  }
  resize(): boolean {
    return true;
  }
  drained(): Promise<void> {
    return Promise.resolve();
  }
  finish(): Promise<Error | undefined> {
    return Promise.resolve(undefined);
  }
}

/** Operations logged per sftp recording before the log says "truncated" (bounded disk use). */
const MAX_SFTP_OPS = 200_000;

/** sftp → `<id>.input.bin`, `<id>.output.bin` (raw SFTP streams) and `<id>.sftp.jsonl`. */
export class SftpSink implements RecordingSink {
  private readonly input: OutFile;
  private readonly output: OutFile;
  private readonly log: OutFile;
  private readonly decoder: SftpDecoder;
  private ops = 0;
  private lastMs = 0;
  private logOk = true;

  constructor(
    root: string,
    readonly recording: StoredRecording,
    opts: { gzip: boolean },
  ) {
    const dir = connectionDir(recording.username, recording.connectionId);
    const base = safeSegment(recording.id);
    const gz = opts.gzip ? '.gz' : '';
    const file = (role: RecordingFile['role'], name: string, gzip: boolean): OutFile => {
      const rel = join(dir, name);
      recording.files.push({ role, path: rel, gzip });
      return new OutFile(join(root, rel), { gzip });
    };
    this.input = file('input', `${base}.input.bin${gz}`, opts.gzip);
    this.output = file('output', `${base}.output.bin${gz}`, opts.gzip);
    this.log = file('sftp-log', `${base}.sftp.jsonl`, false);
    this.decoder = new SftpDecoder((op) => this.logOp(op));
  }

  private logOp(op: SftpOp): void {
    if (++this.ops > MAX_SFTP_OPS) {
      if (this.ops === MAX_SFTP_OPS + 1)
        this.logOk = this.log.write(`${JSON.stringify({ t: op.ms / 1000, op: 'log-truncated' })}\n`);
      return;
    }
    const { ms, ...rest } = op;
    this.logOk = this.log.write(`${JSON.stringify({ t: ms / 1000, ...rest })}\n`) && this.logOk;
  }

  chunk(c: DataChunk): boolean {
    count(this.recording, c);
    this.lastMs = Math.max(this.lastMs, c.timeOffsetMs);
    if (c.droppedBytes > 0) this.decoder.gap(c.timeOffsetMs, c.droppedBytes);
    if (c.data.length === 0) return this.logOk;
    this.logOk = true;
    if (isInput(c)) {
      this.decoder.input(c.timeOffsetMs, c.data);
      return this.input.write(c.data) && this.logOk;
    }
    this.decoder.output(c.timeOffsetMs, c.data);
    return this.output.write(c.data) && this.logOk;
  }

  resize(): boolean {
    return true;
  }

  async drained(): Promise<void> {
    await Promise.all([this.input.drained(), this.output.drained(), this.log.drained()]);
  }

  async finish(): Promise<Error | undefined> {
    this.decoder.finish(this.lastMs);
    const s = this.decoder.summary;
    this.recording.summary = {
      version: s.version,
      operations: s.operations,
      bytesRead: s.bytesRead,
      bytesWritten: s.bytesWritten,
      ...(s.error ? { decoderError: s.error } : {}),
    };
    return closeAll([this.input, this.output, this.log]);
  }
}

/** The format the service stores for a kind, given the header's options (documented in recording.md). */
export function storedFormat(kind: StoredRecording['kind'], format: RecordingFormat | undefined): string {
  if (kind === 'tcpip') return format === RecordingFormat.RECORDING_FORMAT_NONE ? 'none' : 'pcapng';
  if (kind === 'sftp') return 'raw+sftp-log';
  return 'asciicast-v2';
}
