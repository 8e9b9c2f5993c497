// Shared plumbing for the local reference gRPC servers: binding, the optional bearer-token check,
// status errors with messages, and shutdown with a deadline.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  Metadata,
  Server,
  ServerCredentials,
  status,
  type ServiceError,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { errText, type Logger } from '../ops/log.js';

/** A gRPC error with a code and a message the client sees. */
export function grpcError(code: status, details: string): ServiceError {
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}

export function isGrpcError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number';
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * Checks `authorization: Bearer <token>` against the token file (re-read on every call, so a rotated
 * token takes effect at once). Returns null when the call may proceed, else the error to answer with.
 * Unlike the k8shell services this also checks streaming calls: fail closed everywhere.
 */
export function checkBearer(tokenFile: string | undefined, md: Metadata, log: Logger): ServiceError | null {
  if (!tokenFile) return null;
  let expected: string;
  try {
    expected = readFileSync(tokenFile, 'utf8').trim();
  } catch (e) {
    log.error({ file: tokenFile, err: errText(e) }, 'cannot read the service token file; refusing calls');
    return grpcError(status.UNAUTHENTICATED, 'the service token cannot be verified');
  }
  if (!expected) {
    log.error({ file: tokenFile }, 'the service token file is empty; refusing calls');
    return grpcError(status.UNAUTHENTICATED, 'the service token cannot be verified');
  }
  const header = md.get('authorization')[0];
  const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m?.[1]) return grpcError(status.UNAUTHENTICATED, 'missing bearer token');
  // Compare digests so the comparison is constant-time regardless of the lengths.
  if (!timingSafeEqual(digest(m[1]), digest(expected))) {
    return grpcError(status.UNAUTHENTICATED, 'invalid bearer token');
  }
  return null;
}

/**
 * Wraps a unary handler: token check first, then the handler; a thrown ServiceError is answered as is,
 * anything else becomes INTERNAL with its message (the process never crashes on a bad request).
 */
export function unary<Req, Res>(
  tokenFile: string | undefined,
  log: Logger,
  name: string,
  fn: (req: Req, md: Metadata) => Promise<Res> | Res,
): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    const denied = checkBearer(tokenFile, call.metadata, log);
    if (denied) {
      cb(denied);
      return;
    }
    Promise.resolve()
      .then(() => fn(call.request, call.metadata))
      .then(
        (res) => cb(null, res),
        (e: unknown) => {
          if (isGrpcError(e)) {
            cb(e);
            return;
          }
          log.error({ rpc: name, err: errText(e) }, 'request failed');
          cb(grpcError(status.INTERNAL, `${name} failed: ${errText(e)}`));
        },
      );
  };
}

/** Same as `unary` for server-streaming handlers; the handler owns ending the stream. */
export function serverStream<Req, Res>(
  tokenFile: string | undefined,
  log: Logger,
  name: string,
  fn: (call: ServerWritableStream<Req, Res>) => Promise<void>,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const denied = checkBearer(tokenFile, call.metadata, log);
    if (denied) {
      // grpc-js turns an 'error' event into the call's status; destroy() would end it without one.
      call.emit('error', denied);
      return;
    }
    fn(call).catch((e: unknown) => {
      log.error({ rpc: name, err: errText(e) }, 'stream failed');
      if (!call.writableEnded && !call.destroyed) {
        call.emit('error', isGrpcError(e) ? e : grpcError(status.INTERNAL, `${name} failed: ${errText(e)}`));
      }
    });
  };
}

/** A server certificate and key (PEM files) for TLS; plaintext h2c when absent. */
export interface ServerTls {
  certFile: string;
  keyFile: string;
}

function serverCredentials(tls: ServerTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(null, [
    { cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) },
  ]);
}

/** Binds `listen` (host:port or unix:/path) and returns the address clients should use. */
export async function bindServer(server: Server, listen: string, tls?: ServerTls): Promise<string> {
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p)));
  });
  if (listen.startsWith('unix:')) return listen;
  const host = listen.slice(0, listen.lastIndexOf(':'));
  return `${host}:${port}`;
}

/** Graceful shutdown bounded by `ms`; then in-flight calls are cancelled. */
export async function shutdownServer(server: Server, ms = 2000): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, ms);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
