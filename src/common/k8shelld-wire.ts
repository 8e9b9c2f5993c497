// Zero-copy codecs for the k8shelld data frames, the only messages on the bulk data path.
//
// The generated codecs copy every frame several times per process (BinaryWriter growth, finish(),
// Buffer.from() on encode; Buffer.from(reader.bytes()) on decode). A data frame is just one
// length-delimited field, so it is written with one copy and read as a view of grpc-js's buffer.
// Anything else (start requests, events, exit codes, multiplexed frames) takes the generated path, so
// the encoding on the wire is identical either way (proto3, field numbers of proto/k8shelld).
import { makeGenericClientConstructor, type ChannelCredentials, type ClientOptions } from '@grpc/grpc-js';
import {
  ExecRequest,
  ExecResponse,
  PortForwardRequest,
  PortForwardResponse,
  ShellRequest,
  ShellResponse,
  SshServiceService,
  StreamEvent,
  UnixSocketRequest,
  UnixSocketResponse,
  type SshServiceClient,
} from '../gen/k8shelld/v1/k8shelld.js';

const WIRE_LEN = 2;

/**
 * Largest data frame sent on the bulk path (gathered reads). Per-message costs (a gRPC message, an
 * HTTP/2 write, a protobuf header, a JavaScript event on each side) are paid per frame, so bulk data
 * goes in frames of up to 256 KiB; the reference daemon accepts up to 4 MiB and the gateway up to
 * 32 MiB (grpc.max_receive_message_length), so any size a reference daemon sends is accepted.
 */
export const MAX_DATA_FRAME = 256 * 1024;

/**
 * Bytes kept free before a gathered payload: gRPC's 5-byte message prefix, a 1-byte tag and a varint
 * length (≤ 5 bytes). The encoder writes tag and length there instead of copying the payload again,
 * and grpc-js (patches/, 022) writes its prefix there instead of copying the message.
 */
const HEADROOM = 5 + 1 + 5;
/** Marks a payload whose HEADROOM bytes before it belong to it (set only by joinWithHeadroom). */
const ROOM = Symbol('k8shelld-wire.headroom');
/** Tells grpc-js (patch 022) that the 5 bytes before a serialized message are free for its prefix. */
const GRPC_PREFIX_ROOM = Symbol.for('grpc-js.prefix-room');

type Marked = Buffer & { [ROOM]?: true; [GRPC_PREFIX_ROOM]?: true };

function varintSize(n: number): number {
  let s = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    s++;
  }
  return s;
}

function writeHeader(out: Buffer, field: number, len: number): number {
  out[0] = (field << 3) | WIRE_LEN;
  let p = 1;
  let n = len;
  while (n >= 0x80) {
    out[p++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[p++] = n;
  return p;
}

/** `parts` joined with one copy into a payload that has room for its frame headers before it. */
export function joinWithHeadroom(parts: readonly Buffer[], bytes: number): Buffer {
  const out = Buffer.allocUnsafe(HEADROOM + bytes);
  let p = HEADROOM;
  for (const b of parts) p += b.copy(out, p);
  const payload = out.subarray(HEADROOM, p) as Marked;
  payload[ROOM] = true;
  return payload;
}

/**
 * One length-delimited field (`field` ≤ 15, so its tag is one byte): written in front of a payload
 * from joinWithHeadroom (no copy), otherwise with a single copy.
 */
export function encodeBytesField(field: number, data: Buffer): Buffer {
  const len = data.length;
  const hdr = 1 + varintSize(len);
  if ((data as Marked)[ROOM] === true && hdr + 5 <= HEADROOM) {
    const out = Buffer.from(data.buffer, data.byteOffset - hdr, hdr + len) as Marked;
    writeHeader(out, field, len);
    out[GRPC_PREFIX_ROOM] = true;
    return out;
  }
  const out = Buffer.allocUnsafe(hdr + len);
  data.copy(out, writeHeader(out, field, len));
  return out;
}

/**
 * Gathers the chunks written in one turn of the event loop (a socket or pipe read loop yields several)
 * into frames of up to MAX_DATA_FRAME bytes, joined with one copy; sent at the end of the turn
 * (setImmediate) or as soon as a frame is full. Backpressure is the sink's own: push() returns false
 * while `needsDrain()` (the stream's writableNeedDrain), so the caller waits for its 'drain'.
 * Call flush() before anything that must follow the bytes (EOF, exit, a signal), so order is kept.
 */
export class FrameGatherer {
  private parts: Buffer[] = [];
  private bytes = 0;
  private scheduled = false;

  constructor(
    private readonly send: (payload: Buffer) => void,
    private readonly needsDrain: () => boolean,
    private readonly max = MAX_DATA_FRAME,
  ) {}

  /** Bytes waiting for the end of the turn. */
  get pending(): number {
    return this.bytes;
  }

  /** Queues `d`; false means the sink is full: pause the source until it drains. */
  push(d: Buffer): boolean {
    let off = 0;
    while (off < d.length) {
      const take = Math.min(d.length - off, this.max - this.bytes);
      this.parts.push(off === 0 && take === d.length ? d : d.subarray(off, off + take));
      this.bytes += take;
      off += take;
      if (this.bytes >= this.max) this.flush();
    }
    if (this.bytes > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.atTurnEnd);
    }
    return !this.needsDrain();
  }

  /** Sends what is queued now. */
  flush(): void {
    if (this.bytes === 0) return;
    // Even a single chunk is copied here: the frame headers then need no further copy.
    const out = joinWithHeadroom(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    this.send(out);
  }

  private readonly atTurnEnd = (): void => {
    this.scheduled = false;
    this.flush();
  };
}

/**
 * If `buf` is exactly one length-delimited `field` and nothing else, returns a view of its payload
 * (no copy); otherwise undefined, and the caller uses the generated decoder.
 */
export function decodeBytesField(buf: Buffer, field: number): Buffer | undefined {
  if (buf.length < 2 || buf[0] !== ((field << 3) | WIRE_LEN)) return undefined;
  let len = 0;
  let shift = 1;
  let p = 1;
  for (; p < buf.length && p < 6; p++) {
    const b = buf[p] as number;
    len += (b & 0x7f) * shift;
    shift *= 128;
    if (b < 0x80) {
      p++;
      return p + len === buf.length ? buf.subarray(p) : undefined;
    }
  }
  return undefined;
}

type Encode<T> = (v: T) => Buffer;
type Decode<T> = (b: Buffer) => T;

const generic =
  <T>(codec: { encode(v: T): { finish(): Uint8Array } }): Encode<T> =>
  (v) =>
    Buffer.from(codec.encode(v).finish());

const shellRequest: [Encode<ShellRequest>, Decode<ShellRequest>] = [
  (v) => (v.request?.$case === 'data' ? encodeBytesField(3, v.request.data) : generic(ShellRequest)(v)),
  (b) => {
    const data = decodeBytesField(b, 3);
    return data ? { request: { $case: 'data', data } } : ShellRequest.decode(b);
  },
];
const shellResponse: [Encode<ShellResponse>, Decode<ShellResponse>] = [
  (v) => (v.response?.$case === 'data' ? encodeBytesField(2, v.response.data) : generic(ShellResponse)(v)),
  (b) => {
    const data = decodeBytesField(b, 2);
    return data ? { response: { $case: 'data', data } } : ShellResponse.decode(b);
  },
];
const execRequest: [Encode<ExecRequest>, Decode<ExecRequest>] = [
  (v) => (v.request?.$case === 'input' ? encodeBytesField(2, v.request.input) : generic(ExecRequest)(v)),
  (b) => {
    const input = decodeBytesField(b, 2);
    return input ? { request: { $case: 'input', input } } : ExecRequest.decode(b);
  },
];
const execResponse: [Encode<ExecResponse>, Decode<ExecResponse>] = [
  (v) => {
    const r = v.response;
    if (r?.$case === 'stdout') return encodeBytesField(1, r.stdout);
    if (r?.$case === 'stderr') return encodeBytesField(2, r.stderr);
    return generic(ExecResponse)(v);
  },
  (b) => {
    const stdout = decodeBytesField(b, 1);
    if (stdout) return { response: { $case: 'stdout', stdout } };
    const stderr = decodeBytesField(b, 2);
    return stderr ? { response: { $case: 'stderr', stderr } } : ExecResponse.decode(b);
  },
];
const portForwardRequest: [Encode<PortForwardRequest>, Decode<PortForwardRequest>] = [
  (v) => (v.request?.$case === 'data' ? encodeBytesField(2, v.request.data) : generic(PortForwardRequest)(v)),
  (b) => {
    const data = decodeBytesField(b, 2);
    return data ? { request: { $case: 'data', data } } : PortForwardRequest.decode(b);
  },
];
const portForwardResponse: [Encode<PortForwardResponse>, Decode<PortForwardResponse>] = [
  // `data` is a plain field: an empty one is not on the wire, so only non-empty frames go fast.
  (v) =>
    v.event === StreamEvent.STREAM_EVENT_NONE && v.data.length > 0
      ? encodeBytesField(1, v.data)
      : generic(PortForwardResponse)(v),
  (b) => {
    const data = decodeBytesField(b, 1);
    return data ? { data, event: StreamEvent.STREAM_EVENT_NONE } : PortForwardResponse.decode(b);
  },
];
const unixSocketRequest: [Encode<UnixSocketRequest>, Decode<UnixSocketRequest>] = [
  (v) =>
    v.request?.$case === 'data' && v.connectionId === 0 && v.event === StreamEvent.STREAM_EVENT_NONE
      ? encodeBytesField(2, v.request.data)
      : generic(UnixSocketRequest)(v),
  (b) => {
    const data = decodeBytesField(b, 2);
    return data
      ? { request: { $case: 'data', data }, connectionId: 0, event: StreamEvent.STREAM_EVENT_NONE }
      : UnixSocketRequest.decode(b);
  },
];
const unixSocketResponse: [Encode<UnixSocketResponse>, Decode<UnixSocketResponse>] = [
  (v) =>
    v.connectionId === 0 && v.event === StreamEvent.STREAM_EVENT_NONE && v.data.length > 0
      ? encodeBytesField(1, v.data)
      : generic(UnixSocketResponse)(v),
  (b) => {
    const data = decodeBytesField(b, 1);
    return data
      ? { data, connectionId: 0, event: StreamEvent.STREAM_EVENT_NONE }
      : UnixSocketResponse.decode(b);
  },
];

function withCodecs<M extends { requestSerialize: unknown }, Req, Res>(
  method: M,
  req: [Encode<Req>, Decode<Req>],
  res: [Encode<Res>, Decode<Res>],
): M {
  return {
    ...method,
    requestSerialize: req[0],
    requestDeserialize: req[1],
    responseSerialize: res[0],
    responseDeserialize: res[1],
  };
}

/** SshService with the data-frame fast path; same paths and wire format as the generated one. */
export const FastSshService: typeof SshServiceService = {
  ...SshServiceService,
  shell: withCodecs(SshServiceService.shell, shellRequest, shellResponse),
  exec: withCodecs(SshServiceService.exec, execRequest, execResponse),
  portForward: withCodecs(SshServiceService.portForward, portForwardRequest, portForwardResponse),
  unixSocket: withCodecs(SshServiceService.unixSocket, unixSocketRequest, unixSocketResponse),
};

/** Client constructor for FastSshService, typed like the generated SshServiceClient. */
export const FastSshServiceClient = makeGenericClientConstructor(
  FastSshService,
  'k8shelld.SshService',
) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): SshServiceClient;
};
