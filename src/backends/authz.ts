// authz.v1 client (reference-behaviour §14.1, wire-protocol §5.13): the `Authorizer` the dispatcher
// calls for every action when `authz.address` is set.
//
// Every answer that is not a clear "allowed" is a refusal: a request that fails local validation is
// denied without a call (`authz: invalid request: …`); transport errors, the per-call deadline
// (`authz.timeout`) and undecodable answers throw a ProxyError (`authz: evaluate <action>: <err>`),
// which the dispatcher turns into a deny as well.
import { status } from '@grpc/grpc-js';
import { ProxyError } from '../common/errors.js';
import { AuthzServiceClient, type EvaluateRequest } from '../gen/authz/v1/authz.js';
import {
  allowAll,
  invalidRequest,
  type ActionRequest,
  type Authorizer,
  type Decision,
} from '../gateway/authorize.js';
import {
  channelCredentials,
  channelOptions,
  describeGrpcError,
  interceptorsFor,
  isServiceError,
  unaryCall,
  type BackendConfig,
} from './grpc.js';

export interface AuthzClientConfig extends BackendConfig {
  /** Seconds per Evaluate call (config `authz.timeout`, ours; default 5). */
  timeout?: number;
}

export interface AuthzClient extends Authorizer {
  close(): void;
}

export const DEFAULT_AUTHZ_TIMEOUT_S = 5;

/** `action "<action>" denied: <reason>` (reference-behaviour §14.1), for logs. */
export function deniedText(action: string, reason: string): string {
  return `action "${action}" denied: ${reason}`;
}

/** `authz: evaluate <action>: <err>` (reference-behaviour §14.1). */
export function evaluateErrorText(action: string, err: string): string {
  return `authz: evaluate ${action}: ${err}`;
}

/** The wire request, field by field; `pat_preview` is unused by the gateway. */
export function toWire(req: ActionRequest): EvaluateRequest {
  return {
    token: req.token,
    action: req.action,
    package: req.package,
    resource: {
      type: req.resource.type,
      id: req.resource.id,
      attributes: { ...req.resource.attributes },
    },
    context: { ...req.context },
    patPreview: '',
  };
}

/** Local validation (§14.1): the shared checks plus a user token, which every call must carry. */
export function validate(req: ActionRequest): string | undefined {
  return invalidRequest(req) ?? (req.token ? undefined : 'missing user token');
}

/**
 * The Authorizer for `cfg`: an authz.v1 client when `cfg.address` is set, else `allowAll` (the
 * reference without authz). The connection is made lazily, at the first call.
 */
export function createAuthorizer(cfg: AuthzClientConfig): AuthzClient {
  if (!cfg.address) return { ...allowAll, close: () => undefined };
  return createAuthzClient(cfg);
}

export function createAuthzClient(cfg: AuthzClientConfig): AuthzClient {
  const client = new AuthzServiceClient(cfg.address, channelCredentials(cfg), {
    ...channelOptions(cfg),
    interceptors: interceptorsFor(cfg),
  });
  const timeoutMs = Math.max(1, Math.round((cfg.timeout ?? DEFAULT_AUTHZ_TIMEOUT_S) * 1000));

  return {
    configured: true,
    async evaluate(req: ActionRequest, signal: AbortSignal): Promise<Decision> {
      const invalid = validate(req);
      if (invalid) return { allowed: false, reason: `authz: invalid request: ${invalid}`, obligations: {} };
      let res;
      try {
        res = await unaryCall(client, client.evaluate, toWire(req), { timeoutMs, signal });
      } catch (e) {
        const code = !isServiceError(e)
          ? 'unavailable'
          : e.code === status.DEADLINE_EXCEEDED
            ? 'timeout'
            : e.code === status.CANCELLED
              ? 'cancelled'
              : 'unavailable';
        throw new ProxyError(code, evaluateErrorText(req.action, describeGrpcError(e)), {
          userMessage: 'the authorization service did not answer',
          cause: e,
        });
      }
      // Only an explicit true allows; obligations are copied so nobody shares the decoded object.
      return {
        allowed: res.allowed === true,
        reason: typeof res.reason === 'string' ? res.reason : '',
        obligations: { ...res.obligations },
      };
    },
    close() {
      client.close();
    },
  };
}
