// A one-copy encoder for recording data frames (wire-protocol §5.12), the only bulk messages of the
// RecordingService. The generated encoder copies a chunk's bytes several times (BinaryWriter growth,
// fork/ldelim of the nested DataChunk, finish(), Buffer.from()); recording a fast download doubles
// the gateway's gRPC byte work, so each copy shows in its throughput. The bytes on the wire are the
// generated encoder's (fields in number order, proto3 defaults omitted): test/unit/recording-wire
// checks that. Headers and resizes take the generated path.
import { makeGenericClientConstructor, type ChannelCredentials, type ClientOptions } from '@grpc/grpc-js';
import {
  ExecRecordingFrame,
  RecordingServiceService,
  ShellRecordingFrame,
  SftpRecordingFrame,
  TcpipRecordingFrame,
  type DataChunk,
  type RecordingServiceClient,
} from '../gen/session/v1/session.js';

const VARINT = 0;
const LEN = 2;
/** The `chunk` field of every *RecordingFrame oneof. */
const FRAME_CHUNK_FIELD = 2;

function varintSize(n: number): number {
  let s = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    s++;
  }
  return s;
}

function writeVarint(out: Buffer, p: number, n: number): number {
  while (n >= 0x80) {
    out[p++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[p++] = n;
  return p;
}

/** A non-negative integer below 2^53, else undefined (then the generated encoder handles it). */
function plain(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * The frame `{chunk}` with one copy of `chunk.data` (or of `parts`, written in order, when the chunk's
 * data has not been joined yet). Undefined when a field needs the generated encoder (negative values).
 */
export function encodeChunkFrame(
  chunk: Omit<DataChunk, 'data'>,
  data: Buffer | readonly Buffer[],
): Buffer | undefined {
  const { timeOffsetMs: t, direction: d, droppedBytes: dropped } = chunk;
  if (!plain(t) || !plain(d) || !plain(dropped)) return undefined;
  const parts = Buffer.isBuffer(data) ? [data] : data;
  let len = 0;
  for (const b of parts) len += b.length;
  let inner = 0;
  if (t !== 0) inner += 1 + varintSize(t);
  if (len !== 0) inner += 1 + varintSize(len) + len;
  if (d !== 0) inner += 1 + varintSize(d);
  if (dropped !== 0) inner += 1 + varintSize(dropped);
  const out = Buffer.allocUnsafe(1 + varintSize(inner) + inner);
  out[0] = (FRAME_CHUNK_FIELD << 3) | LEN;
  let p = writeVarint(out, 1, inner);
  if (t !== 0) {
    out[p++] = (1 << 3) | VARINT;
    p = writeVarint(out, p, t);
  }
  if (len !== 0) {
    out[p++] = (2 << 3) | LEN;
    p = writeVarint(out, p, len);
    for (const b of parts) p += b.copy(out, p);
  }
  if (d !== 0) {
    out[p++] = (3 << 3) | VARINT;
    p = writeVarint(out, p, d);
  }
  if (dropped !== 0) {
    out[p++] = (4 << 3) | VARINT;
    p = writeVarint(out, p, dropped);
  }
  return out;
}

interface AnyFrame {
  payload?: { $case: string; chunk?: DataChunk };
}

function serializer<T extends AnyFrame>(codec: { encode(v: T): { finish(): Uint8Array } }): (v: T) => Buffer {
  return (v) => {
    const c = v.payload?.$case === 'chunk' ? v.payload.chunk : undefined;
    return (c && encodeChunkFrame(c, c.data)) ?? Buffer.from(codec.encode(v).finish());
  };
}

/** RecordingService with the chunk fast path; same paths and wire format as the generated one. */
export const FastRecordingService: typeof RecordingServiceService = {
  ...RecordingServiceService,
  streamShellRecording: {
    ...RecordingServiceService.streamShellRecording,
    requestSerialize: serializer(ShellRecordingFrame),
  },
  streamExecRecording: {
    ...RecordingServiceService.streamExecRecording,
    requestSerialize: serializer(ExecRecordingFrame),
  },
  streamTcpipRecording: {
    ...RecordingServiceService.streamTcpipRecording,
    requestSerialize: serializer(TcpipRecordingFrame),
  },
  streamSftpRecording: {
    ...RecordingServiceService.streamSftpRecording,
    requestSerialize: serializer(SftpRecordingFrame),
  },
};

/** Client constructor for FastRecordingService, typed like the generated RecordingServiceClient. */
export const FastRecordingServiceClient = makeGenericClientConstructor(
  FastRecordingService,
  'session.v1.RecordingService',
) as unknown as {
  new (
    address: string,
    credentials: ChannelCredentials,
    options?: Partial<ClientOptions>,
  ): RecordingServiceClient;
};
