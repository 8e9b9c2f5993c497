// Local reference implementation of identity.v1.IdentityService (wire-protocol.md §2.2, §3.3, §5.9).
// Users come from `<dataDir>/users.yaml` and the OS user running the stack (see users.ts).
// With `onboarding` set, unknown users can onboard through a device flow approved on a web page
// (device-flows.ts, web/onboarding-page.ts); approved users are added to users.yaml.
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
import { DeviceFlows, OfferedKeys } from './device-flows.js';
import { keyMatches, parseRequestKey } from './keys.js';
import { verifyPassword } from './password.js';
import { UserStore, type LocalUser } from './users.js';
import { registerOnboardingPage } from './web/onboarding-page.js';
import type { LocalWeb } from './web/server.js';

export const LOCAL_SOURCE = 'local';
export const LOCAL_ORG = 'local';
/** The device-flow provider name the local identity reports. */
export const LOCAL_PROVIDER = 'local';
const TOKEN_TTL_SEC = 3600;
const NO_ONBOARDING = 'onboarding is not available in the local identity service';
const USERNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

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
  /**
   * Lets unknown users onboard (GetUserOnboardCapability says yes for any valid, unused name): a device
   * flow whose code a person enters on the approval page served by `web`. Off when absent.
   */
  onboarding?: {
    web: LocalWeb;
    /** Validity of a user code in seconds; default 600. */
    expiresInS?: number;
  };
}

export interface LocalIdentity {
  address: string;
  /** The approval page (with onboarding), e.g. http://127.0.0.1:8080/onboard. */
  approvalUrl?: string;
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
    // Ours (common.v1.User.has_password = 100): lets the gateway offer password only to users with one.
    hasPassword: u.passwordHash !== undefined,
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
  const flows = opts.onboarding
    ? new DeviceFlows({ expiresInS: opts.onboarding.expiresInS ?? 600 })
    : undefined;
  const offered = new OfferedKeys();
  const approval =
    opts.onboarding && flows
      ? registerOnboardingPage(opts.onboarding.web, { flows, offered, users, log })
      : undefined;
  const approvalUrl = approval?.url;
  /** A name that could be onboarded: valid for users.yaml and not in use. */
  const onboardable = (username: string): string | undefined => {
    const name = username.trim().toLowerCase();
    return USERNAME_RE.test(name) && !users.lookup(name) ? name : undefined;
  };

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
      const unknownName = flows ? onboardable(req.username) : undefined;
      // An unknown user's key is remembered for the approval page (the gateway passes it on as a hint).
      if (unknownName) offered.note(unknownName, key);
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

    getUserOnboardCapability: unary(tf, log, 'GetUserOnboardCapability', (req: Username) => {
      const canOnboard = flows !== undefined && onboardable(req.username) !== undefined;
      return UserOnboardCapability.fromPartial({
        provider: flows ? LOCAL_PROVIDER : '',
        username: req.username,
        canOnboard,
      });
    }),

    onboardUserDeviceFlow: unary(
      tf,
      log,
      'OnboardUserDeviceFlow',
      (req: OnboardUserDeviceFlowRequest): OnboardUserDeviceFlow => {
        if (!flows || !approvalUrl) throw grpcError(status.FAILED_PRECONDITION, NO_ONBOARDING);
        if (req.provider && req.provider !== LOCAL_PROVIDER)
          throw grpcError(status.INVALID_ARGUMENT, `unknown provider "${req.provider}" (want "local")`);
        const name = onboardable(requireName(req.username));
        if (!name)
          throw grpcError(status.FAILED_PRECONDITION, `user "${req.username.trim()}" cannot be onboarded`);
        const f = flows.start(name, LOCAL_PROVIDER);
        if (!f) throw grpcError(status.RESOURCE_EXHAUSTED, 'too many onboardings in progress');
        log.info({ user: name, expiresIn: flows.expiresInS }, 'device flow started');
        return {
          provider: LOCAL_PROVIDER,
          username: name,
          userCode: f.userCode,
          verificationUrl: approvalUrl,
          expiresIn: flows.expiresInS,
        };
      },
    ),

    // Polled by the gateway: OK once approved (or the user exists), PERMISSION_DENIED when denied,
    // FAILED_PRECONDITION while pending, NOT_FOUND when there is no flow (expired, replaced, never).
    completeUserDeviceFlow: unary(
      tf,
      log,
      'CompleteUserDeviceFlow',
      (req: CompleteUserDeviceFlowRequest): CompleteUserDeviceFlowResponse => {
        if (!flows) throw grpcError(status.FAILED_PRECONDITION, NO_ONBOARDING);
        const name = requireName(req.username).toLowerCase();
        const f = flows.forUser(name);
        if (f?.state === 'denied')
          throw grpcError(status.PERMISSION_DENIED, `onboarding of user "${name}" was denied`);
        // Approved, or the user exists by now (added by hand): onboarding is complete.
        if (f?.state === 'approved' || users.lookup(name)) {
          if (f) flows.remove(f);
          offered.forget(name);
          log.info({ user: name }, 'device flow completed');
          return {};
        }
        if (!f || flows.expired(f))
          throw grpcError(status.NOT_FOUND, `no onboarding in progress for user "${name}"`);
        throw grpcError(status.FAILED_PRECONDITION, 'authorization pending');
      },
    ),
  };

  const server = new Server();
  server.addService(IdentityServiceService, impl);
  const address = await bindServer(server, opts.listen ?? '127.0.0.1:0', opts.tls);
  log.info({ address, users: users.file }, 'local identity service listening');
  let closed: Promise<void> | undefined;
  if (approvalUrl) log.info({ url: approvalUrl }, 'onboarding approval page');
  return {
    address,
    approvalUrl,
    close: () => {
      approval?.close();
      return (closed ??= shutdownServer(server));
    },
  };
}
