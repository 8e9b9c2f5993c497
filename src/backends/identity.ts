// Typed client for identity.v1.IdentityService (wire-protocol.md §5.9).
import { status } from '@grpc/grpc-js';
import { IdentityServiceClient } from '../gen/identity/v1/identity.js';
import type { User } from '../gen/common/v1/common.js';
import { ProxyError } from '../common/errors.js';
import {
  channelCredentials,
  channelOptions,
  describeGrpcError,
  interceptorsFor,
  isServiceError,
  unaryCall,
  type BackendConfig,
} from './grpc.js';

export type { User };

/** What FindUser tells: a user, a definite "no such user", or a failed lookup (fail closed). */
export type UserLookup =
  { kind: 'found'; user: User } | { kind: 'not_found' } | { kind: 'error'; error: string };

export interface IdentityBackend {
  findUser(username: string): Promise<UserLookup>;
  /** `publicKey` is an authorized_keys line without comment: "<type> <base64 blob>". */
  authPublicKey(username: string, publicKey: string): Promise<boolean>;
  authPassword(username: string, password: string): Promise<boolean>;
  issueUserToken(username: string, source: string): Promise<string>;
  close(): void;
}

// The reference runs authentication callbacks under a 30 s context.
const CALL_TIMEOUT_MS = 30_000;

export function createIdentityClient(cfg: BackendConfig): IdentityBackend {
  const client = new IdentityServiceClient(cfg.address, channelCredentials(cfg), {
    ...channelOptions(cfg),
    interceptors: interceptorsFor(cfg),
  });
  const opts = { timeoutMs: CALL_TIMEOUT_MS };
  const fail = (rpc: string) => (e: unknown) => {
    throw new ProxyError('unavailable', `identity ${rpc}: ${describeGrpcError(e)}`, { cause: e });
  };

  return {
    async findUser(username) {
      try {
        const user = await unaryCall(client, client.findUser, { username, email: '' }, opts);
        return { kind: 'found', user };
      } catch (e) {
        if (isServiceError(e) && e.code === status.NOT_FOUND) return { kind: 'not_found' };
        return { kind: 'error', error: `identity FindUser: ${describeGrpcError(e)}` };
      }
    },
    async authPublicKey(username, publicKey) {
      const r = await unaryCall(client, client.authUserPublicKey, { username, publicKey }, opts).catch(
        fail('AuthUserPublicKey'),
      );
      return r.valid;
    },
    async authPassword(username, password) {
      const r = await unaryCall(client, client.authUserPassword, { username, password }, opts).catch(
        fail('AuthUserPassword'),
      );
      return r.valid;
    },
    async issueUserToken(username, source) {
      const r = await unaryCall(client, client.issueUserToken, { username, source }, opts).catch(
        fail('IssueUserToken'),
      );
      return r.userToken;
    },
    close() {
      client.close();
    },
  };
}
