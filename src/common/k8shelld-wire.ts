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

function varintSize(n: number): number {
  let s = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    s++;
  }
  return s;
}

/** One length-delimited field (`field` ≤ 15, so its tag is one byte), written with a single copy. */
export function encodeBytesField(field: number, data: Buffer): Buffer {
  const len = data.length;
  const out = Buffer.allocUnsafe(1 + varintSize(len) + len);
  out[0] = (field << 3) | WIRE_LEN;
  let p = 1;
  let n = len;
  while (n >= 0x80) {
    out[p++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[p++] = n;
  data.copy(out, p);
  return out;
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
