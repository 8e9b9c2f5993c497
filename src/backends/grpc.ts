// Shared plumbing for every gRPC client of the gateway: credentials, the bearer token, channel options.
//
// The k8shell services accept `authorization: Bearer <token>` even over plaintext h2c, but grpc-js
// refuses call credentials on insecure channels, so the header is attached by an interceptor that
// works for both. The token file is re-read on every call: projected service-account tokens rotate.
import { readFileSync } from 'node:fs';
import {
  credentials,
  InterceptingCall,
  Metadata,
  status,
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientUnaryCall,
  type Interceptor,
  type ServiceError,
} from '@grpc/grpc-js';
import { ProxyError } from '../common/errors.js';

export interface BackendConfig {
  /** host:port; a client is enabled when non-empty. */
  address: string;
  /** TLS server-name override (only with caCertPath). */
  serverName?: string;
  /** File holding the service token; empty means no authorization header. */
  tokenFilePath?: string;
  /** CA bundle; TLS is used exactly when this is set. */
  caCertPath?: string;
}

/** Reads and trims the token file; throws a ProxyError naming the file when it cannot be read. */
export function readToken(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new ProxyError('unauthenticated', `cannot read token file '${path}': ${(e as Error).message}`, {
      userMessage: 'The gateway is misconfigured (service token unreadable).',
    });
  }
}

/** Adds `authorization: Bearer <token>` to every call, reading the file each time. */
export function bearerInterceptor(tokenFilePath: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        let token: string;
        try {
          token = readToken(tokenFilePath);
        } catch {
          // Let the server answer UNAUTHENTICATED rather than failing locally without a status.
          token = '';
        }
        if (token) metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

export function channelCredentials(cfg: { caCertPath?: string }): ChannelCredentials {
  if (!cfg.caCertPath) return credentials.createInsecure();
  let ca: Buffer;
  try {
    ca = readFileSync(cfg.caCertPath);
  } catch (e) {
    throw new ProxyError(
      'bad_config',
      `cannot read CA certificate '${cfg.caCertPath}': ${(e as Error).message}`,
    );
  }
  return credentials.createSsl(ca);
}

/** Options common to all backend channels; `serverName` overrides the TLS name check. */
export function channelOptions(cfg: { serverName?: string }, extra: ChannelOptions = {}): ChannelOptions {
  const o: ChannelOptions = {
    'grpc.lb_policy_name': 'pick_first',
    'grpc.max_receive_message_length': 32 * 1024 * 1024,
    ...extra,
  };
  if (cfg.serverName) o['grpc.ssl_target_name_override'] = cfg.serverName;
  return o;
}

export function interceptorsFor(cfg: { tokenFilePath?: string }): Interceptor[] {
  return cfg.tokenFilePath ? [bearerInterceptor(cfg.tokenFilePath)] : [];
}

export function isServiceError(e: unknown): e is ServiceError {
  return typeof e === 'object' && e !== null && 'code' in e && 'details' in e;
}

/** The reference's "clean end of a data stream": OK, CANCELLED, or UNAVAILABLE mentioning EOF. */
export function isCleanEnd(e: unknown): boolean {
  if (!isServiceError(e)) return false;
  return (
    e.code === status.OK ||
    e.code === status.CANCELLED ||
    (e.code === status.UNAVAILABLE && /EOF/.test(e.details ?? ''))
  );
}

/** Promise wrapper for a unary call with a deadline in milliseconds. */
export function deadline(ms: number): Date {
  return new Date(Date.now() + ms);
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Calls a generated unary method as a promise, with a deadline and optional cancellation.
 * `method` is e.g. `client.findUser` (its last overload carries metadata and options).
 */
export function unaryCall<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  opts: { timeoutMs?: number; metadata?: Metadata; signal?: AbortSignal } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const callOpts: Partial<CallOptions> = {};
    if (opts.timeoutMs) callOpts.deadline = deadline(opts.timeoutMs);
    const call = method.call(client, request, opts.metadata ?? new Metadata(), callOpts, (err, res) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(res);
    });
    function onAbort() {
      call.cancel();
    }
    if (opts.signal) {
      if (opts.signal.aborted) call.cancel();
      else opts.signal.addEventListener('abort', onAbort, { once: true });
    }
  });
}

/** "CODE: details" for logs and wrapped errors. */
export function describeGrpcError(e: unknown): string {
  if (isServiceError(e)) return `${status[e.code] ?? e.code}: ${e.details}`;
  return e instanceof Error ? e.message : String(e);
}
