// authz.v1 client (reference-behaviour §14.1, wire-protocol §5.13): the `Authorizer` the dispatcher
// calls for every action when `authz.address` is set.
//
// Every answer that is not a clear "allowed" is a refusal: a request that fails local validation is
// denied without a call (`authz: invalid request: …`); transport errors, the per-call deadline
// (`authz.timeout`) and undecodable answers throw a ProxyError (`authz: evaluate <action>: <err>`),
// which the dispatcher turns into a deny as well. An answer is decoded strictly: a known field with
// the wrong wire type (another message, or bytes that merely happen to parse) is a failed call, never
// a decision read from defaults.
import { makeGenericClientConstructor, status } from '@grpc/grpc-js';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { ProxyError } from '../common/errors.js';
import {
  AuthzServiceClient,
  AuthzServiceService,
  EvaluateResponse,
  type EvaluateRequest,
} from '../gen/authz/v1/authz.js';
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

/** Wire types of EvaluateResponse's fields (wire-protocol §5.13) and of its map entries. */
const RESPONSE_FIELDS: Readonly<Record<number, WireType>> = {
  1: WireType.Varint, // allowed
  2: WireType.LengthDelimited, // reason
  3: WireType.LengthDelimited, // obligations (map entry)
};
const MAP_ENTRY_FIELDS: Readonly<Record<number, WireType>> = {
  1: WireType.LengthDelimited,
  2: WireType.LengthDelimited,
};

/**
 * Why `buf` is not an EvaluateResponse, or undefined when it is well formed: every field it knows has
 * its declared wire type and nothing is truncated. Unknown fields are allowed (a newer service).
 */
export function responseWireProblem(buf: Uint8Array): string | undefined {
  const walk = (bytes: Uint8Array, fields: Readonly<Record<number, WireType>>, where: string) => {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      const want = fields[no];
      if (want !== undefined && want !== wt)
        throw new Error(`${where}field ${no} has wire type ${wt}, expected ${want}`);
      const data = r.skip(wt, no);
      if (fields === RESPONSE_FIELDS && no === 3) {
        // skip() returned the length prefix too: read the entry's own bytes.
        const entry = new BinaryReader(data);
        walk(entry.bytes(), MAP_ENTRY_FIELDS, 'obligations entry ');
      }
    }
  };
  try {
    walk(buf, RESPONSE_FIELDS, '');
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function decodeResponse(buf: Buffer): EvaluateResponse {
  const problem = responseWireProblem(buf);
  if (problem) throw new Error(`not an EvaluateResponse: ${problem}`);
  return EvaluateResponse.decode(buf);
}

/** The generated client with the strict decoder (a throw there fails the call with INTERNAL). */
const StrictAuthzClient = makeGenericClientConstructor(
  { evaluate: { ...AuthzServiceService.evaluate, responseDeserialize: decodeResponse } },
  'authz.v1.AuthzService',
) as unknown as typeof AuthzServiceClient;

export function createAuthzClient(cfg: AuthzClientConfig): AuthzClient {
  const client = new StrictAuthzClient(cfg.address, channelCredentials(cfg), {
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
      const allowed = res.allowed === true;
      return {
        allowed,
        // A deny without a reason still tells the user something.
        reason: typeof res.reason === 'string' && res.reason ? res.reason : allowed ? '' : 'no reason given',
        obligations: { ...res.obligations },
      };
    },
    close() {
      client.close();
    },
  };
}
