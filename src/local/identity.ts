// Local reference implementation of identity.v1.IdentityService (wire-protocol.md §2.2, §3.3, §5.9).
// Users come from `<dataDir>/users.yaml` and the OS user running the stack (see users.ts).
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { Server, status } from '@grpc/grpc-js';
import { getLogger, type Logger } from '../ops/log.js';
import { User, UserOnboardCapability, type OnboardUserDeviceFlow } from '../gen/common/v1/common.js';
import {
  AuthUserResponse,
  IdentityServiceService,
  IssueUserTokenResponse,
  type AuthUserPasswordRequest,
  type AuthUserPublicKeyRequest,
  type CompleteUserDeviceFlowRequest,
  type CompleteUserDeviceFlowResponse,
  type FindUserRequest,
  type IdentityServiceServer,
  type IssueUserTokenRequest,
  type OnboardUserDeviceFlowRequest,
  type Username,
} from '../gen/identity/v1/identity.js';
import { bindServer, type ServerTls, grpcError, shutdownServer, unary } from './grpc-server.js';
import { LOCAL_ISSUER, loadOrCreateSecret, signJwtHs256 } from './jwt.js';
import { keyMatches, parseRequestKey } from './keys.js';
import { verifyPassword } from './password.js';
import { UserStore, type LocalUser } from './users.js';

export const LOCAL_SOURCE = 'local';
export const LOCAL_ORG = 'local';
const TOKEN_TTL_SEC = 3600;
const NO_ONBOARDING = 'onboarding is not available in the local identity service';

export interface LocalIdentityOptions {
  dataDir: string;
  /** host:port or unix:/path; default 127.0.0.1:0. */
  listen?: string;
  /** Home directory whose .ssh authorises the OS user (tests point it elsewhere). */
  homeDir?: string;
  /** When set, every call must carry `authorization: Bearer <content of this file>`. */
  tokenFile?: string;
  /** Serve TLS with this certificate (plaintext h2c when absent). */
  tls?: ServerTls;
  logger?: Logger;
}

export interface LocalIdentity {
  address: string;
  close(): Promise<void>;
}

function rolesOf(u: LocalUser): string[] {
  return u.sudo ? ['sudo'] : [];
}

function toProto(u: LocalUser): User {
  return User.fromPartial({
    username: u.name,
    organization: LOCAL_ORG,
    isValid: u.valid,
    uid: u.uid ?? 0,
    gid: u.gid ?? 0,
    fullname: u.fullname,
    email: u.email,
    locked: u.locked,
    roles: rolesOf(u),
    source: LOCAL_SOURCE,
    shell: u.shell,
    sudo: u.sudo,
  });
}

function requireName(username: string): string {
  const name = username.trim();
  if (!name) throw grpcError(status.INVALID_ARGUMENT, 'username is required');
  return name;
}

function mustFind(users: UserStore, username: string): LocalUser {
  const u = users.lookup(requireName(username));
  if (!u) throw grpcError(status.NOT_FOUND, `user "${username.trim().toLowerCase()}" not found`);
  return u;
}

export async function startLocalIdentity(opts: LocalIdentityOptions): Promise<LocalIdentity> {
  const log = opts.logger ?? getLogger('local-identity');
  mkdirSync(opts.dataDir, { recursive: true });
  const users = new UserStore({ dataDir: opts.dataDir, homeDir: opts.homeDir, log });
  const secret = loadOrCreateSecret(opts.dataDir);
  const tf = opts.tokenFile;

  const impl: IdentityServiceServer = {
    findUser: unary(tf, log, 'FindUser', (req: FindUserRequest) => {
      if (!req.username.trim() && req.email) {
        throw grpcError(status.INVALID_ARGUMENT, 'lookup by email is not supported; give a username');
      }
      return toProto(mustFind(users, req.username));
    }),

    authUserPublicKey: unary(tf, log, 'AuthUserPublicKey', (req: AuthUserPublicKeyRequest) => {
      const key = parseRequestKey(req.publicKey);
      if (!key) {
        throw grpcError(
          status.INVALID_ARGUMENT,
          'public_key must be an authorized_keys line "<type> <base64 blob>"',
        );
      }
      const u = mustFind(users, req.username);
      const valid = keyMatches(key, u.keys);
      log.info({ user: u.name, keyType: key.type, valid }, 'public key check');
      return AuthUserResponse.fromPartial({ valid, user: valid ? toProto(u) : undefined, locked: false });
    }),

    authUserPassword: unary(tf, log, 'AuthUserPassword', async (req: AuthUserPasswordRequest) => {
      const u = users.lookup(requireName(req.username));
      // Hash even for unknown users so timing does not tell which names exist.
      const valid = await verifyPassword(req.password, u?.passwordHash);
      if (!u) throw grpcError(status.NOT_FOUND, `user "${req.username.trim().toLowerCase()}" not found`);
      log.info({ user: u.name, valid }, 'password check');
      return AuthUserResponse.fromPartial({ valid, user: valid ? toProto(u) : undefined, locked: false });
    }),

    issueUserToken: unary(tf, log, 'IssueUserToken', (req: IssueUserTokenRequest) => {
      const u = mustFind(users, req.username);
      const now = Math.floor(Date.now() / 1000);
      const token = signJwtHs256(
        {
          sub: u.name,
          iss: LOCAL_ISSUER,
          iat: now,
          exp: now + TOKEN_TTL_SEC,
          jti: randomUUID(),
          uid: u.uid ?? 0,
          gid: u.gid ?? 0,
          email: u.email,
          name: u.fullname,
          roles: rolesOf(u),
          org: LOCAL_ORG,
          source: req.source || LOCAL_SOURCE,
          shell: u.shell,
          sudo: u.sudo,
        },
        secret,
      );
      return IssueUserTokenResponse.fromPartial({ userToken: token });
    }),

    getUserOnboardCapability: unary(tf, log, 'GetUserOnboardCapability', (req: Username) =>
      UserOnboardCapability.fromPartial({ provider: '', username: req.username, canOnboard: false }),
    ),

    onboardUserDeviceFlow: unary(
      tf,
      log,
      'OnboardUserDeviceFlow',
      (_req: OnboardUserDeviceFlowRequest): OnboardUserDeviceFlow => {
        throw grpcError(status.FAILED_PRECONDITION, NO_ONBOARDING);
      },
    ),

    completeUserDeviceFlow: unary(
      tf,
      log,
      'CompleteUserDeviceFlow',
      (_req: CompleteUserDeviceFlowRequest): CompleteUserDeviceFlowResponse => {
        throw grpcError(status.FAILED_PRECONDITION, NO_ONBOARDING);
      },
    ),
  };

  const server = new Server();
  server.addService(IdentityServiceService, impl);
  const address = await bindServer(server, opts.listen ?? '127.0.0.1:0', opts.tls);
  log.info({ address, users: users.file }, 'local identity service listening');
  let closed: Promise<void> | undefined;
  return {
    address,
    close: () => (closed ??= shutdownServer(server)),
  };
}
