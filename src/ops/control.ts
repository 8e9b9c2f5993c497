// The gRPC control service (reference-behaviour §18) and our admin extension beside it.
//
// - sshproxy.v1.SSHProxyService/GetVersionInfo: the version endpoint every k8shell service exposes.
// - sshproxy.admin.v1.SSHProxyAdminService (ours, opt-in with grpc.adminService): list the live
//   connections of this process and end one with a message (src/gateway/registry.ts).
//
// TLS (grpc.enableTLS) with certificate hot reload: the key pair is watched (directory watch, plus a
// slow poll as a safety net), and after a change and grpc.certReloadDelay it is read, validated as a
// pair, and swapped into the running server. The swap uses grpc-js's own mechanism for rotating
// server certificates: ServerCredentials subclasses push new secure-context options to the HTTP/2
// server (setSecureContext), so there is no window without a listener, established connections
// keep their session, and new handshakes get the new certificate. A pair that does not validate is
// never pushed (grpc-js would otherwise drop every new connection), and the previous one stays.
//
// Authentication (grpc.authEnabled): every call carries `authorization: Bearer <service-account JWT>`,
// verified against the issuer's JWKS (sa-token.ts). Missing or invalid → UNAUTHENTICATED; keys not
// loadable → UNAVAILABLE; a valid caller not in grpc.allowed → PERMISSION_DENIED.
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import {
  Metadata,
  Server,
  ServerCredentials,
  status,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
} from '@grpc/grpc-js';
import type { Config } from '../config/schema.js';
import type { ConnectionRegistry, LiveConnectionInfo } from '../gateway/registry.js';
import { SSHProxyServiceService } from '../gen/sshproxy/v1/sshproxy.js';
import { SSHProxyAdminServiceService, type Connection } from '../gen/sshproxy/admin/v1/admin.js';
import type { GetVersionInfoResponse } from '../gen/common/v1/common.js';
import { errText, type Logger } from './log.js';
import {
  isAllowed,
  JwksCache,
  ownNamespace as readOwnNamespace,
  SA_DIR,
  ServiceAccountVerifier,
  type AllowedEntry,
  type Caller,
} from './sa-token.js';

export interface ControlTls {
  certFile: string;
  keyFile: string;
  /** Wait after a change before reloading (config grpc.certReloadDelay × 1000). */
  reloadDelayMs: number;
  /** Safety-net poll of the files' identity (default 30 s); directory watches catch most changes. */
  pollMs?: number;
}

export interface ControlAuth {
  verifier: ServiceAccountVerifier;
  allowed: readonly AllowedEntry[];
  /** For entries with an empty namespace. */
  ownNamespace: string | undefined;
}

export interface ControlServerOptions {
  /** Listen host (default 0.0.0.0). */
  host?: string;
  port: number;
  tls?: ControlTls;
  auth?: ControlAuth;
  /** Serve the admin extension against this registry. */
  admin?: ConnectionRegistry;
  build: { version: string; commit: string; description: string };
  log: Logger;
  /** Grace for in-flight calls on close (default 5 s). */
  shutdownGraceMs?: number;
}

export interface ControlServer {
  readonly port: number;
  /** Re-reads the key pair now; resolves true when a new pair was installed. */
  reloadCertificate(): Promise<boolean>;
  close(): Promise<void>;
}

function grpcError(code: status, details: string): ServiceError {
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}

// --- TLS with reload ---

/** Server credentials whose secure-context options can be replaced while the server runs. */
class ReloadableServerCredentials extends ServerCredentials {
  constructor(initial: SecureContextOptions) {
    super({ requestCert: false }, initial);
  }

  replace(options: SecureContextOptions): void {
    this.updateSecureContextOptions(options);
  }

  _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

interface KeyPair {
  cert: Buffer;
  key: Buffer;
  fingerprint: string;
  subject: string;
  validTo: string;
}

/** Reads and validates the pair; throws with a message naming the problem. */
export function loadKeyPair(certFile: string, keyFile: string): KeyPair {
  const cert = readFileSync(certFile);
  const key = readFileSync(keyFile);
  // Throws on unparsable PEM and on a key that does not belong to the certificate.
  createSecureContext({ cert, key });
  const x = new X509Certificate(cert);
  return {
    cert,
    key,
    fingerprint: createHash('sha256').update(cert).update(key).digest('hex'),
    subject: x.subject.replace(/\n/g, ', '),
    validTo: x.validTo,
  };
}

class CertReloader {
  private current: KeyPair;
  readonly credentials: ReloadableServerCredentials;
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private lastStat = '';

  constructor(
    private readonly tls: ControlTls,
    private readonly log: Logger,
  ) {
    this.current = loadKeyPair(tls.certFile, tls.keyFile);
    this.credentials = new ReloadableServerCredentials({ cert: this.current.cert, key: this.current.key });
    this.lastStat = this.statKey();
    log.info({ subject: this.current.subject, validTo: this.current.validTo }, 'gRPC TLS certificate loaded');
  }

  start(): void {
    const files = new Set([basename(this.tls.certFile), basename(this.tls.keyFile), '..data']);
    for (const dir of new Set([dirname(this.tls.certFile), dirname(this.tls.keyFile)])) {
      try {
        // Kubernetes secret volumes swap a `..data` symlink; editors and cert-manager rename files.
        const w = watch(dir, { persistent: false }, (_event, name) => {
          if (name === null || files.has(name.toString())) this.schedule();
        });
        w.on('error', () => undefined);
        this.watchers.push(w);
      } catch (e) {
        this.log.warn({ dir, err: errText(e) }, 'cannot watch the TLS directory; relying on polling');
      }
    }
    this.poll = setInterval(() => {
      const s = this.statKey();
      if (s !== this.lastStat) {
        this.lastStat = s;
        this.schedule();
      }
    }, this.tls.pollMs ?? 30_000);
    this.poll.unref();
  }

  private statKey(): string {
    try {
      const a = statSync(this.tls.certFile);
      const b = statSync(this.tls.keyFile);
      return `${a.ino}:${a.size}:${a.mtimeMs}/${b.ino}:${b.size}:${b.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), this.tls.reloadDelayMs);
    this.timer.unref();
  }

  async reload(): Promise<boolean> {
    let next: KeyPair;
    try {
      next = loadKeyPair(this.tls.certFile, this.tls.keyFile);
    } catch (e) {
      this.log.error(
        { certFile: this.tls.certFile, keyFile: this.tls.keyFile, err: errText(e) },
        'gRPC TLS certificate reload failed; keeping the previous certificate',
      );
      return false;
    }
    if (next.fingerprint === this.current.fingerprint) return false;
    this.current = next;
    this.credentials.replace({ cert: next.cert, key: next.key });
    this.log.info({ subject: next.subject, validTo: next.validTo }, 'gRPC TLS certificate reloaded');
    return true;
  }

  stop(): void {
    clearTimeout(this.timer);
    clearInterval(this.poll);
    for (const w of this.watchers) w.close();
  }
}

// --- authentication ---

type Guard = (
  md: Metadata,
) => Promise<{ ok: true; caller: Caller | undefined } | { ok: false; error: ServiceError }>;

function makeGuard(auth: ControlAuth | undefined, log: Logger): Guard {
  if (!auth) return () => Promise.resolve({ ok: true, caller: undefined });
  return async (md) => {
    const header = md.get('authorization')[0];
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    const r = await auth.verifier.verify(m?.[1] ?? '');
    if (!r.ok) {
      log.warn({ reason: r.reason }, 'gRPC control call rejected');
      const code = r.code === 'unavailable' ? status.UNAVAILABLE : status.UNAUTHENTICATED;
      return { ok: false, error: grpcError(code, r.reason) };
    }
    if (!isAllowed(r.caller, auth.allowed, auth.ownNamespace)) {
      log.warn(
        { namespace: r.caller.namespace, serviceAccount: r.caller.serviceAccount },
        'gRPC control call denied',
      );
      return {
        ok: false,
        error: grpcError(
          status.PERMISSION_DENIED,
          `service account ${r.caller.namespace}/${r.caller.serviceAccount} is not allowed`,
        ),
      };
    }
    return { ok: true, caller: r.caller };
  };
}

/** A unary handler behind the guard; a throw becomes INTERNAL, never a crash. */
function unary<Req, Res>(
  guard: Guard,
  log: Logger,
  rpc: string,
  fn: (req: Req, caller: Caller | undefined) => Res,
): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    guard(call.metadata)
      .then((g) => {
        if (!g.ok) {
          cb(g.error);
          return;
        }
        cb(null, fn(call.request, g.caller));
      })
      .catch((e: unknown) => {
        if (e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number') {
          cb(e as ServiceError);
          return;
        }
        log.error({ rpc, err: errText(e) }, 'gRPC control call failed');
        cb(grpcError(status.INTERNAL, `${rpc} failed`));
      });
  };
}

// --- admin ---

export const DEFAULT_END_MESSAGE = 'Connection ended by an administrator';

/** Printable text only, at most 512 characters (it goes into an SSH disconnect message). */
export function sanitizeMessage(s: string): string {
  const clean = s
    .replace(/[\p{Cc}\p{Cf}]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return clean.slice(0, 512) || DEFAULT_END_MESSAGE;
}

export function toConnection(c: LiveConnectionInfo): Connection {
  return {
    id: c.id,
    username: c.username ?? '',
    workspace: c.workspace?.name ?? '',
    clientAddress: c.clientIp.includes(':')
      ? `[${c.clientIp}]:${c.clientPort}`
      : `${c.clientIp}:${c.clientPort}`,
    clientVersion: c.clientVersion,
    startedAt: c.startedAt,
    bytesIn: c.bytes.in,
    bytesOut: c.bytes.out,
    openChannels: c.openChannels(),
    operations: c.operations(),
    userstrBlueprint: c.userstrBlueprint,
    workspaceBlueprint: c.workspace?.blueprint ?? '',
  };
}

// --- server ---

export async function startControlServer(o: ControlServerOptions): Promise<ControlServer> {
  const log = o.log;
  const server = new Server({
    'grpc.max_receive_message_length': 64 * 1024,
    'grpc.max_concurrent_streams': 64,
  });
  const guard = makeGuard(o.auth, log);

  server.addService(SSHProxyServiceService, {
    getVersionInfo: unary(guard, log, 'GetVersionInfo', (): GetVersionInfoResponse => ({
      version: o.build.version,
      commitId: o.build.commit,
      description: o.build.description,
    })),
  });

  const registry = o.admin;
  if (registry) {
    server.addService(SSHProxyAdminServiceService, {
      listConnections: unary(guard, log, 'ListConnections', (req: { username: string }) => ({
        connections: registry
          .list()
          .filter((c) => req.username === '' || c.username === req.username)
          .map(toConnection),
      })),
      endConnection: unary(guard, log, 'EndConnection', (req: { id: string; message: string }, caller) => {
        if (!req.id || req.id.length > 128)
          throw grpcError(status.INVALID_ARGUMENT, 'a connection id is required');
        const c = registry.get(req.id);
        if (!c) throw grpcError(status.NOT_FOUND, `no live connection ${req.id}`);
        const message = sanitizeMessage(req.message);
        log.info(
          {
            conn: c.id,
            caller: caller ? `${caller.namespace}/${caller.serviceAccount}` : undefined,
            message,
          },
          'Ending connection on request of the control service',
        );
        c.end(message);
        return {};
      }),
    });
  }

  let reloader: CertReloader | undefined;
  if (o.tls) {
    reloader = new CertReloader(o.tls, log);
    reloader.start();
  }
  const creds = reloader ? reloader.credentials : ServerCredentials.createInsecure();
  const host = o.host ?? '0.0.0.0';
  const target = host.includes(':') ? `[${host}]:${o.port}` : `${host}:${o.port}`;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(target, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (e) {
    reloader?.stop();
    throw e;
  }
  log.info(
    { port, tls: Boolean(o.tls), auth: Boolean(o.auth), admin: Boolean(registry) },
    'Starting gRPC control interface',
  );

  return {
    port,
    reloadCertificate: () => reloader?.reload() ?? Promise.resolve(false),
    close: async () => {
      reloader?.stop();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, o.shutdownGraceMs ?? 5000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

/** Hosts at which the JWKS is the in-cluster API server (our own token may be sent there). */
function inCluster(url: URL): boolean {
  const h = url.hostname;
  return (
    h === 'kubernetes.default.svc' ||
    h.startsWith('kubernetes.default.svc.') ||
    h === process.env.KUBERNETES_SERVICE_HOST
  );
}

/**
 * Builds the control server from the configuration, or returns undefined (with the reference's log
 * line) when it is disabled: grpc.port 0, or forking mode (reference §18: children never serve it and
 * the forking parent does not either).
 */
export async function startControlFromConfig(
  config: Config,
  deps: { registry: ConnectionRegistry; log: Logger; build: ControlServerOptions['build']; saDir?: string },
): Promise<ControlServer | undefined> {
  const g = config.grpc;
  if (g.port === 0 || config.server.forking) {
    deps.log.info(
      g.port === 0
        ? 'gRPC control interface disabled (no grpc.port configured)'
        : 'gRPC control interface disabled in forking mode',
    );
    return undefined;
  }
  let tls: ControlTls | undefined;
  if (g.enableTLS) {
    if (!g.certFile || !g.keyFile) throw new Error('grpc.enableTLS needs grpc.certFile and grpc.keyFile');
    tls = { certFile: g.certFile, keyFile: g.keyFile, reloadDelayMs: g.certReloadDelay * 1000 };
  }
  let auth: ControlAuth | undefined;
  if (g.authEnabled) {
    if (!g.audience) throw new Error('grpc.authEnabled needs grpc.audience');
    const saDir = deps.saDir ?? SA_DIR;
    const url = new URL(`${g.issuerURL.replace(/\/+$/, '')}/openid/v1/jwks`);
    const jwks = new JwksCache({
      url: url.href,
      caFile: `${saDir}/ca.crt`,
      tokenFile: inCluster(url) ? `${saDir}/token` : undefined,
      log: deps.log,
    });
    const own = readOwnNamespace(saDir);
    if (g.allowed.length === 0)
      deps.log.warn('grpc.authEnabled with an empty grpc.allowed list: every call is denied');
    if (!own && g.allowed.some((a) => a.namespace === '')) {
      deps.log.warn(
        'grpc.allowed has entries for the own namespace, which is unknown here (no service-account mount)',
      );
    }
    auth = {
      verifier: new ServiceAccountVerifier({ issuer: g.issuerURL, audience: g.audience, jwks }),
      allowed: g.allowed,
      ownNamespace: own,
    };
  }
  return startControlServer({
    host: g.bindAddress || undefined,
    port: g.port,
    tls,
    auth,
    admin: g.adminService ? deps.registry : undefined,
    build: deps.build,
    log: deps.log,
  });
}
