// Workspace resolution (reference-behaviour §10): find, start or provision the user's workspace,
// then connect to its daemon. Starts are shared: connections of the same user arriving while a
// workspace starts wait for that start instead of starting another (the reference does not).
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import { currentContext } from '../ops/context.js';
import { ProxyError, type ErrorCode } from '../common/errors.js';
import type { User } from '../backends/identity.js';
import type {
  ProvisionerBackend,
  WorkspaceDetails,
  ProvisionWorkspaceResponse,
} from '../backends/provisioner.js';
import {
  WorkspaceClient,
  handshakeFailureText,
  type HandshakeResult,
  type K8shelldConfig,
} from '../backends/k8shelld.js';
import { canonicalUserStr, type UserStr } from './userstr.js';
import type { ProgressWriter } from './progress.js';

/** A failure the user is told about; `category` decides which writer option shows it (§11). */
export class WorkspaceError extends ProxyError {
  readonly category: 'user' | 'system';
  /** `userMessage` defaults to `message`; pass one when the message carries backend detail (gRPC text). */
  constructor(
    category: 'user' | 'system',
    code: ErrorCode,
    message: string,
    cause?: unknown,
    userMessage?: string,
  ) {
    super(code, message, { userMessage: userMessage ?? message, cause });
    this.category = category;
  }
}

/** What the user is told when the provisioner failed or did not answer (the detail goes to the log). */
export const PROVISIONER_UNAVAILABLE = 'the workspace service is unavailable; try again later';

export interface BoundWorkspace {
  client: WorkspaceClient;
  details: WorkspaceDetails;
  handshake: HandshakeResult;
}

export interface WorkspaceSettings {
  provisionTimeoutS: number;
  handshakeTimeoutMs: number;
  k8shelld: K8shelldConfig;
}

interface Inflight {
  promise: Promise<WorkspaceDetails>;
  writers: Set<ProgressWriter>;
  abort: AbortController;
  provisioning: boolean;
  refs: number;
}

const FAILED_STATUSES = new Set(['Failing', 'Stopped', 'Error']);

export class WorkspaceResolver {
  private readonly inflight = new Map<string, Inflight>();

  constructor(
    private readonly provisioner: ProvisionerBackend,
    private readonly settings: WorkspaceSettings,
    private readonly log: Logger,
  ) {}

  /**
   * The workspace handshake of reference-behaviour §10.1. Step 3 (workspace:create) is the
   * dispatcher's: `authorizeCreate` runs after the user checks and before anything is provisioned,
   * and throws a WorkspaceError to refuse. Throws WorkspaceError; writes user/system errors to
   * `progress` itself.
   */
  async bind(
    user: User,
    userstr: UserStr,
    progress: ProgressWriter,
    signal: AbortSignal,
    log: Logger,
    authorizeCreate: () => Promise<void>,
  ): Promise<BoundWorkspace> {
    try {
      if (!user.isValid)
        throw new WorkspaceError(
          'user',
          'denied',
          'User is not valid. Please contact the system administrator.',
        );
      if (user.locked)
        throw new WorkspaceError(
          'user',
          'denied',
          'User account is locked. Please contact the system administrator.',
        );
      await authorizeCreate();
      if (signal.aborted) throw cancelled();
      const details = await this.ensure(userstr, progress, signal);
      progress.connecting(details.serverName);
      let client: WorkspaceClient;
      try {
        client = new WorkspaceClient(
          {
            podIp: details.podIp,
            port: details.port,
            tlsEnabled: details.tlsEnabled,
            serverName: details.serverName,
          },
          this.settings.k8shelld,
        );
      } catch (e) {
        throw new WorkspaceError('system', 'bad_config', errText(e), e);
      }
      let handshake: HandshakeResult;
      try {
        handshake = await this.handshake(client, signal);
        verifyIdentity(details, handshake, client.address, log);
      } catch (e) {
        client.close();
        throw e;
      }
      log.info(
        {
          workspace: details.name,
          agent: client.address,
          agentVersion: handshake.serverVersion,
          capabilities: [...handshake.capabilities],
        },
        'connected to the workspace',
      );
      return { client, details, handshake };
    } catch (e) {
      const err = asWorkspaceError(e);
      if (err.category === 'user') progress.userError(err.userMessage);
      else progress.systemError(err.userMessage);
      throw err;
    }
  }

  private async handshake(client: WorkspaceClient, signal: AbortSignal): Promise<HandshakeResult> {
    if (signal.aborted) throw cancelled();
    let r: HandshakeResult;
    try {
      r = await client.handshake(this.settings.handshakeTimeoutMs);
    } catch (e) {
      throw new WorkspaceError('system', 'unavailable', handshakeFailureText(e), e);
    }
    if (!r.accepted)
      throw new WorkspaceError('system', 'denied', 'Connection to the workspace was rejected.');
    return r;
  }

  /** EnsureWorkspace (§10.2), shared between concurrent callers for the same canonical user string. */
  async ensure(userstr: UserStr, progress: ProgressWriter, signal: AbortSignal): Promise<WorkspaceDetails> {
    let canonical: string;
    try {
      canonical = canonicalUserStr(userstr);
    } catch (e) {
      throw new WorkspaceError(
        'system',
        'bad_input',
        `failed to canonicalize user string ${userstr.raw}: ${errText(e)}`,
      );
    }
    let entry = this.inflight.get(canonical);
    if (!entry) {
      const abort = new AbortController();
      const created: Inflight = {
        writers: new Set(),
        abort,
        provisioning: false,
        refs: 0,
        promise: Promise.resolve(null as never),
      };
      created.promise = this.run(userstr, canonical, created).finally(() => this.inflight.delete(canonical));
      // Failures are delivered to every subscriber; this keeps an unobserved rejection quiet.
      created.promise.catch(() => undefined);
      this.inflight.set(canonical, created);
      entry = created;
    } else {
      this.log.info({ conn: connOf(), userstr: canonical }, 'joining a workspace start already in progress');
    }
    const shared = entry;
    shared.refs++;
    shared.writers.add(progress);
    if (shared.provisioning) progress.startProvisioning();
    try {
      return await raceAbort(shared.promise, signal);
    } finally {
      shared.writers.delete(progress);
      // The last caller to give up cancels the provisioner stream.
      if (--shared.refs === 0 && signal.aborted) shared.abort.abort();
    }
  }

  private async run(userstr: UserStr, canonical: string, entry: Inflight): Promise<WorkspaceDetails> {
    const who = userstr.username;
    const broadcast: ProgressWriter = fanOut(entry);
    const list = await this.provisioner.workspacesByUserStr(canonical).catch((e: unknown) => {
      throw new WorkspaceError(
        'system',
        'unavailable',
        `failed to ensure workspace for user ${who}: ${errText(e)}`,
        e,
        `failed to ensure workspace for user ${who}: ${PROVISIONER_UNAVAILABLE}`,
      );
    });
    const running = list.find((w) => w.workspaceStatus?.status === 'Running');
    if (running) return running;
    const opts = { timeout: this.settings.provisionTimeoutS, signal: entry.abort.signal };
    let name: string;
    if (list.length > 0) {
      const stopped = list.find((w) => w.workspaceStatus?.status === 'Stopped');
      if (!stopped) throw notFound(who, 'no running workspaces found. Please try again later.');
      this.log.info({ conn: connOf(), workspace: stopped.name }, 'starting stopped workspace');
      name = await this.consume(this.provisioner.start(stopped.name, opts), entry, broadcast, who);
    } else if (userstr.pod) {
      throw notFound(who, `pod=${userstr.pod}, ns=${userstr.namespace}`);
    } else {
      this.log.info({ conn: connOf(), userstr: canonical }, 'provisioning workspace');
      name = await this.consume(this.provisioner.provision(canonical, opts), entry, broadcast, who);
    }
    const details = await this.provisioner.findWorkspace(name).catch((e: unknown) => {
      throw new WorkspaceError(
        'system',
        'unavailable',
        `failed to ensure workspace for user ${who}: ${errText(e)}`,
        e,
        `failed to ensure workspace for user ${who}: ${PROVISIONER_UNAVAILABLE}`,
      );
    });
    const st = details.workspaceStatus?.status ?? '';
    if (st !== 'Running')
      throw new WorkspaceError(
        'system',
        'failed',
        `failed to ensure workspace for user ${who}: workspace status is "${st}"`,
      );
    return details;
  }

  /** Consumes a provision/start stream (§10.3); returns the workspace name. */
  private async consume(
    stream: AsyncIterable<ProvisionWorkspaceResponse>,
    entry: Inflight,
    progress: ProgressWriter,
    who: string,
  ): Promise<string> {
    const prefix = `failed to ensure workspace for user ${who}: workspace provisioning failed: provisioning failed`;
    const failed = (msg: string, cause?: unknown) =>
      new WorkspaceError('user', 'failed', `${prefix}: ${msg}`, cause);
    // A broken stream: the gRPC detail is for the operator's log only.
    const broken = (e: unknown) =>
      new WorkspaceError(
        'user',
        'unavailable',
        `${prefix}: stream error: ${errText(e)}`,
        e,
        `${prefix}: ${PROVISIONER_UNAVAILABLE}`,
      );
    const it = stream[Symbol.asyncIterator]();
    let first: IteratorResult<ProvisionWorkspaceResponse>;
    try {
      first = await it.next();
    } catch (e) {
      throw broken(e);
    }
    if (first.done || first.value.data?.$case !== 'handshake')
      throw failed('the provisioner did not start with a handshake');
    const hs = first.value.data.handshake;
    if (hs.error) throw mapHandshakeError(who, hs.error);

    entry.provisioning = true;
    progress.startProvisioning();
    let name = '';
    let error: WorkspaceError | undefined;
    try {
      for (;;) {
        let r: IteratorResult<ProvisionWorkspaceResponse>;
        try {
          r = await it.next();
        } catch (e) {
          if (entry.abort.signal.aborted) throw cancelled();
          throw broken(e);
        }
        if (r.done) break;
        if (r.value.data?.$case !== 'event') throw failed('a message without an event');
        const ev = r.value.data.event;
        progress.event(ev);
        if (ev.type === 'status' && ev.status === 'Running') {
          name = ev.objectName || hs.workspace;
          break;
        }
        if (ev.type === 'status' && FAILED_STATUSES.has(ev.status)) throw failed(ev.message || ev.status);
      }
    } catch (e) {
      error = asWorkspaceError(e);
    } finally {
      await it.return?.();
    }
    progress.endProvisioning(error !== undefined || !name);
    if (error) throw error;
    if (!name)
      throw new WorkspaceError(
        'system',
        'failed',
        `failed to ensure workspace for user ${who}: provisioning completed but no running workspace name received`,
      );
    return name;
  }
}

/**
 * The agent that answered must serve the workspace the provisioner named (docs/security.md): an agent
 * that names another workspace is refused before anything is sent to it, and logged as a security
 * event. An agent that names none (a reference daemon) cannot be checked here; TLS (server name =
 * WorkspaceDetails.server_name) is what binds those.
 */
export function verifyIdentity(
  details: WorkspaceDetails,
  handshake: HandshakeResult,
  address: string,
  log: Logger,
): void {
  const claimed = handshake.workspaceName;
  if (!claimed || claimed === details.name) return;
  log.error(
    {
      security: 'workspace-mismatch',
      workspace: details.name,
      agent: address,
      agentWorkspace: claimed.slice(0, 128),
    },
    'security: the agent at the workspace address serves another workspace; refused',
  );
  throw new WorkspaceError(
    'system',
    'denied',
    'The workspace could not be verified. Please retry in a moment.',
  );
}

function fanOut(entry: Inflight): ProgressWriter {
  const each = (f: (w: ProgressWriter) => void) => entry.writers.forEach(f);
  return {
    startProvisioning: () => each((w) => w.startProvisioning()),
    event: (e) => each((w) => w.event(e)),
    endProvisioning: (failed) => each((w) => w.endProvisioning(failed)),
    userError: (m) => each((w) => w.userError(m)),
    systemError: (m) => each((w) => w.systemError(m)),
    connecting: (s) => each((w) => w.connecting(s)),
    close: () => undefined,
  };
}

function notFound(who: string, detail: string): WorkspaceError {
  return new WorkspaceError(
    'user',
    'not_found',
    `failed to ensure workspace for user ${who}: workspace not found: ${detail}`,
  );
}

/** Maps the handshake's "… code = X desc = Y" error text (§10.3). */
function mapHandshakeError(who: string, text: string): WorkspaceError {
  const code = /code = (\w+)/.exec(text)?.[1] ?? '';
  const desc = /desc = (.*)$/s.exec(text)?.[1] ?? text;
  const prefix = `failed to ensure workspace for user ${who}`;
  switch (code) {
    case 'AlreadyExists':
    case 'PreconditionFailed':
    case 'FailedPrecondition':
      return new WorkspaceError('system', 'already_exists', `${prefix}: workspace already exists: ${desc}`);
    case 'InvalidArgument':
    case 'Internal':
      return new WorkspaceError('system', 'bad_input', `${prefix}: invalid argument: ${desc}`);
    case 'PermissionDenied':
      return new WorkspaceError('user', 'denied', `${prefix}: permission denied: ${desc}`);
    default:
      return new WorkspaceError('system', 'failed', `${prefix}: ${desc}`);
  }
}

/** A wait for the workspace that its channel gave up (Ctrl+C, the channel closed). */
export function cancelled(): WorkspaceError {
  return new WorkspaceError('user', 'cancelled', 'Workspace start cancelled.');
}

function asWorkspaceError(e: unknown): WorkspaceError {
  if (e instanceof WorkspaceError) return e;
  return new WorkspaceError('system', 'internal', errText(e), e);
}

/** `p`, or a cancellation as soon as `signal` aborts (`p` itself runs on for other waiters). */
export function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(cancelled());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(cancelled());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** The connection that started the shared work (the lines below are logged by the shared resolver). */
function connOf(): string | undefined {
  return currentContext()?.conn;
}
