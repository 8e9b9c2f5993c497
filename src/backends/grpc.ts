// Shared plumbing for every gRPC client of the gateway: credentials, the bearer token, channel options.
//
// The k8shell services accept `authorization: Bearer <token>` even over plaintext h2c, but grpc-js
// refuses call credentials on insecure channels, so the header is attached by an interceptor that
// works for both. The token file is re-read on every call: projected service-account tokens rotate.
import { readFileSync } from 'node:fs';
import {
  credentials,
  InterceptingCall,
  status,
  type ChannelCredentials,
  type ChannelOptions,
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
    throw new ProxyError('bad_config', `cannot read CA certificate '${cfg.caCertPath}': ${(e as Error).message}`);
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
