// Errors as values: a stable code for programs and logs, plus the sentence a user may see.
export type ErrorCode =
  | 'bad_config'
  | 'bad_input'
  | 'not_found'
  | 'denied'
  | 'unavailable'
  | 'unauthenticated'
  | 'already_exists'
  | 'failed'
  | 'internal'
  | 'cancelled'
  | 'timeout';

export class ProxyError extends Error {
  readonly code: ErrorCode;
  /** Safe to show to the SSH user; never contains secrets or internal addresses unless intended. */
  readonly userMessage: string;

  constructor(code: ErrorCode, message: string, opts: { userMessage?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProxyError';
    this.code = code;
    this.userMessage = opts.userMessage ?? message;
  }
}

export function isProxyError(e: unknown): e is ProxyError {
  return e instanceof ProxyError;
}
