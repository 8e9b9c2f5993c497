// Typed client for identity.v1.IdentityService (wire-protocol.md §5.9).
import { status } from '@grpc/grpc-js';
import { IdentityServiceClient } from '../gen/identity/v1/identity.js';
import type { OnboardUserDeviceFlow, User, UserOnboardCapability } from '../gen/common/v1/common.js';
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

export type { OnboardUserDeviceFlow, User, UserOnboardCapability };

/** What FindUser tells: a user, a definite "no such user", or a failed lookup (fail closed). */
export type UserLookup =
  { kind: 'found'; user: User } | { kind: 'not_found' } | { kind: 'error'; error: string };

/**
 * What CompleteUserDeviceFlow tells while a device flow runs (our reading of the identity
 * documentation, which says clients poll it): OK = onboarded; PERMISSION_DENIED = the person refused;
 * NOT_FOUND = no such flow (it expired or was replaced); anything else (FAILED_PRECONDITION
 * "authorization pending", a timeout, an outage) = not decided yet.
 */
export type DeviceFlowState =
  | { kind: 'done' }
  | { kind: 'denied'; error: string }
  | { kind: 'gone'; error: string }
  | { kind: 'pending'; error: string };

export interface CallOpts {
  /** Overrides the client's default deadline. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface IdentityBackend {
  findUser(username: string, opts?: CallOpts): Promise<UserLookup>;
  /** `publicKey` is an authorized_keys line without comment: "<type> <base64 blob>". */
  authPublicKey(username: string, publicKey: string): Promise<boolean>;
  authPassword(username: string, password: string): Promise<boolean>;
  /** The user JWT (§8.7); throws when identity cannot issue one. */
  issueUserToken(username: string, source: string, opts?: CallOpts): Promise<string>;
  /** GetUserOnboardCapability; throws on any error. */
  onboardCapability(username: string, opts?: CallOpts): Promise<UserOnboardCapability>;
  /** OnboardUserDeviceFlow: starts a device flow; throws on any error. */
  startDeviceFlow(provider: string, username: string, opts?: CallOpts): Promise<OnboardUserDeviceFlow>;
  /** CompleteUserDeviceFlow, classified (never throws). */
  completeDeviceFlow(provider: string, username: string, opts?: CallOpts): Promise<DeviceFlowState>;
  /** Resolves once the channel is connected (readiness probes); rejects after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>;
  close(): void;
}

// The reference runs authentication callbacks under a 30 s context.
const CALL_TIMEOUT_MS = 30_000;

/**
 * The deadline of identity calls made while a client logs in: at most the reference's 30 s and at
 * most half the login grace (`server.SSHHandshakeTimeout`), so that a hung identity service is
 * reported to the user while the connection is still open.
 */
export function identityDeadlineMs(handshakeTimeoutS: number): number {
  return Math.max(1000, Math.min(CALL_TIMEOUT_MS, (handshakeTimeoutS || 30) * 500));
}

export function createIdentityClient(cfg: BackendConfig, timeoutMs = CALL_TIMEOUT_MS): IdentityBackend {
  const client = new IdentityServiceClient(cfg.address, channelCredentials(cfg), {
    ...channelOptions(cfg),
    interceptors: interceptorsFor(cfg),
  });
  const opts = { timeoutMs };
  const callOpts = (o: CallOpts = {}) => ({ timeoutMs: o.timeoutMs ?? timeoutMs, signal: o.signal });
  const fail = (rpc: string) => (e: unknown) => {
    throw new ProxyError('unavailable', `identity ${rpc}: ${describeGrpcError(e)}`, { cause: e });
  };

  return {
    async findUser(username, o) {
      try {
        const user = await unaryCall(client, client.findUser, { username, email: '' }, callOpts(o));
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
    async issueUserToken(username, source, o) {
      const r = await unaryCall(client, client.issueUserToken, { username, source }, callOpts(o)).catch(
        fail('IssueUserToken'),
      );
      return r.userToken;
    },
    onboardCapability(username, o) {
      return unaryCall(client, client.getUserOnboardCapability, { username }, callOpts(o)).catch(
        fail('GetUserOnboardCapability'),
      );
    },
    startDeviceFlow(provider, username, o) {
      return unaryCall(client, client.onboardUserDeviceFlow, { provider, username }, callOpts(o)).catch(
        fail('OnboardUserDeviceFlow'),
      );
    },
    async completeDeviceFlow(provider, username, o) {
      try {
        await unaryCall(client, client.completeUserDeviceFlow, { provider, username }, callOpts(o));
        return { kind: 'done' };
      } catch (e) {
        const error = `identity CompleteUserDeviceFlow: ${describeGrpcError(e)}`;
        if (isServiceError(e) && e.code === status.PERMISSION_DENIED) return { kind: 'denied', error };
        if (isServiceError(e) && e.code === status.NOT_FOUND) return { kind: 'gone', error };
        return { kind: 'pending', error };
      }
    },
    ready(timeoutMs) {
      return new Promise<void>((resolve, reject) =>
        client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
      );
    },
    close() {
      client.close();
    },
  };
}
