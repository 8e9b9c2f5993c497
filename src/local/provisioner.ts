// Local reference implementation of provisioner.v1.ProvisionerService (wire-protocol.md §2.3, §3.4, §5.10).
//
// Each canonical user string maps to one workspace named by the §7.3 rule: a directory
// `<dataDir>/workspaces/<name>/` with the stack's own files (workspace.json, agent.addr, agent.log) and
// `home/` (the agent's --home, the sessions' home: nothing of the stack's in it), and one agent process
// started on demand. Starts of
// the same workspace are shared (one agent, every caller sees the same outcome); agents nobody is
// connected to for `idleTimeoutMs` are stopped, and a later Start brings them back.
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, status, type ServerWritableStream } from '@grpc/grpc-js';
import { WorkspaceDetails, WorkspaceStatus } from '../gen/common/v1/common.js';
import {
  GetWorkspacesResponse,
  ProvisionerServiceService,
  ProvisionWorkspaceResponse,
  type FindWorkspaceRequest,
  type GetWorkspacesByUserStrRequest,
  type ProvisionerServiceServer,
  type ProvisionWorkspaceRequest,
  type StartWorkspaceRequest,
} from '../gen/provisioner/v1/provisioner.js';
import { canonicalUserStr, parseUserStr, workspaceNameFor, type UserStr } from '../gateway/userstr.js';
import { errText, getLogger, type Logger } from '../ops/log.js';
import { describeExit, spawnAgent, type AgentProcess } from './agent-process.js';
import { DEFAULT_BLUEPRINT, loadBlueprints } from './blueprints.js';
import { bindServer, type ServerTls, grpcError, serverStream, shutdownServer, unary } from './grpc-server.js';
import { establishedByLocalPort } from './tcp-activity.js';
import { reapSessions } from '../agent/session-registry.js';
import type { AccountResolver, WorkspaceAccount } from './os-accounts.js';

export interface LocalProvisionerOptions {
  dataDir: string;
  /** host:port or unix:/path; default 127.0.0.1:0. */
  listen?: string;
  /** Arguments after `process.execPath` that run the agent; default `[<repo>/dist/cli/agent.js]`. */
  agentCommand?: string[];
  /** Service token the agents require (passed as --token-file and sent on our handshake). */
  agentTokenFile?: string;
  /** When set, every call must carry `authorization: Bearer <content of this file>`. */
  tokenFile?: string;
  /** Serve TLS with this certificate (plaintext h2c when absent). */
  tls?: ServerTls;
  /** Stop an agent nobody is connected to for this long (default 30 min). */
  idleTimeoutMs?: number;
  /** How often connections are counted (default 5 s). */
  idlePollMs?: number;
  /** How long an agent may take to write its ready file (default 30 s). */
  agentReadyTimeoutMs?: number;
  /**
   * Who each workspace runs as (docs/security.md). When set, workspaces exist only for users it
   * knows, and each agent is told its user and sudo flag. Absent: agents run as this process's user
   * with no user restriction (tests of the provisioner alone).
   */
  accounts?: AccountResolver;
  /** Workspaces one user may have (every distinct user string creates one); default 10. */
  maxWorkspacesPerUser?: number;
  /** How long a stopping agent gets after SIGTERM before SIGKILL (default 5 s). */
  agentStopGraceMs?: number;
  /**
   * Simulates an image pull of this many ms before every start (status `Pulling`), to try the progress
   * output and the start-time behaviour of clients (default 0).
   */
  pullDelayMs?: number;
  logger?: Logger;
}

export interface LocalWorkspaceInfo {
  name: string;
  status: string;
  pid?: number;
  address?: string;
}

export interface LocalProvisioner {
  address: string;
  close(): Promise<void>;
  workspaces(): LocalWorkspaceInfo[];
  /** Completed idle checks (each counts the agents' connections once). */
  idleChecks(): number;
}

type EventType = 'event' | 'status' | 'progress';
interface JobEvent {
  type: EventType;
  status: string;
  message: string;
  timestamp: string;
}
type JobResult = { ok: true } | { ok: false; message: string };

/** One start of one workspace; every stream asking for that workspace meanwhile subscribes to it. */
interface StartJob {
  id: string;
  history: JobEvent[];
  listeners: Set<(e: JobEvent) => void>;
  abort: AbortController;
  result: Promise<JobResult>;
}

interface Workspace {
  name: string;
  userstr: string;
  username: string;
  blueprint: string;
  dir: string;
  created: Date;
  agent?: AgentProcess;
  appVersion: string;
  job?: StartJob;
  stopping?: Promise<void>;
  restarts: number;
  lastFail: string;
  lastActive: number;
}

const DEFAULT_TIMEOUT_SEC = 120;
export const DEFAULT_MAX_WORKSPACES_PER_USER = 10;
/** Where an agent records its live sessions (session-registry.ts), inside the workspace directory. */
const SESSIONS_DIR = 'sessions';
const MAX_TIMEOUT_SEC = 3600;
const META_FILE = 'workspace.json';
/** The sessions' home inside the workspace directory. */
export const HOME_DIR = 'home';
// Workspace names become directory names: keep them to a safe alphabet.
const SAFE_NAME = /^[a-z0-9_][a-z0-9_.@-]{0,99}$/;

const defaultAgentCommand = (): string[] => [
  fileURLToPath(new URL('../../dist/cli/agent.js', import.meta.url)),
];

/** `rpc error: code = X desc = Y`, the form the gateway parses out of a handshake error. */
function rpcErrorText(code: string, desc: string): string {
  return `rpc error: code = ${code} desc = ${desc}`;
}

function statusOf(ws: Workspace): string {
  if (ws.job) return 'Starting';
  if (ws.stopping) return 'Stopping';
  return ws.agent?.alive() ? 'Running' : 'Stopped';
}

function toDetails(ws: Workspace, st = statusOf(ws)): WorkspaceDetails {
  const running = st === 'Running' && ws.agent;
  return WorkspaceDetails.fromPartial({
    name: ws.name,
    username: ws.username,
    organization: 'local',
    blueprint: ws.blueprint,
    podIp: '127.0.0.1',
    port: running ? ws.agent?.port : 0,
    serverName: `${ws.name}.local`,
    tlsEnabled: false,
    appVersion: ws.appVersion,
    hostname: ws.name,
    jobId: ws.job?.id ?? '',
    workspaceStatus: WorkspaceStatus.fromPartial({
      created: ws.created,
      status: st,
      message: st === 'Running' ? 'workspace agent is running' : '',
      restarts: ws.restarts,
      lastFailMessage: ws.lastFail,
    }),
  });
}

export async function startLocalProvisioner(opts: LocalProvisionerOptions): Promise<LocalProvisioner> {
  const log = opts.logger ?? getLogger('local-provisioner');
  const wsRoot = join(opts.dataDir, 'workspaces');
  // Multi-tenant: other users pass through (search) to their own homes, and list nothing.
  const dirMode = opts.accounts?.multiTenant ? 0o711 : 0o700;
  mkdirSync(wsRoot, { recursive: true, mode: dirMode });
  chmodSync(wsRoot, dirMode);
  const maxPerUser = opts.maxWorkspacesPerUser ?? DEFAULT_MAX_WORKSPACES_PER_USER;
  const agentCommand = opts.agentCommand ?? defaultAgentCommand();
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30 * 60_000;
  const idlePollMs = opts.idlePollMs ?? 5000;
  const readyTimeoutMs = opts.agentReadyTimeoutMs ?? 30_000;
  const stopGraceMs = opts.agentStopGraceMs ?? 5000;
  const tf = opts.tokenFile;
  const byName = new Map<string, Workspace>();
  let closing = false;

  // Workspaces created by earlier runs exist (Stopped) until their directory is removed.
  for (const entry of readdirSync(wsRoot)) {
    const file = join(wsRoot, entry, META_FILE);
    try {
      const m = JSON.parse(readFileSync(file, 'utf8')) as Partial<Record<string, unknown>>;
      if (m.name !== entry || typeof m.userstr !== 'string' || typeof m.username !== 'string') {
        throw new Error('missing or inconsistent fields');
      }
      byName.set(entry, {
        name: entry,
        userstr: m.userstr,
        username: m.username,
        blueprint: typeof m.blueprint === 'string' ? m.blueprint : DEFAULT_BLUEPRINT,
        dir: join(wsRoot, entry),
        created: new Date(typeof m.created === 'string' ? m.created : Date.now()),
        appVersion: '',
        restarts: 0,
        lastFail: '',
        lastActive: Date.now(),
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        log.error({ file, err: errText(e) }, 'ignoring a workspace with unreadable metadata');
      }
    }
  }

  const parse = (userstr: string): UserStr => {
    try {
      return parseUserStr(userstr);
    } catch (e) {
      throw grpcError(status.INVALID_ARGUMENT, `invalid user string: ${errText(e)}`);
    }
  };

  /** Runs (or joins) the start of `ws`; the caller must hold no await between check and call. */
  const startJob = (ws: Workspace, timeoutSec: number, create: boolean): StartJob => {
    if (ws.job) return ws.job;
    const job: StartJob = {
      id: `job-${randomBytes(6).toString('hex')}`,
      history: [],
      listeners: new Set(),
      abort: new AbortController(),
      result: Promise.resolve({ ok: true }),
    };
    const emit = (type: EventType, st: string, message = '') => {
      const e: JobEvent = { type, status: st, message, timestamp: new Date().toISOString() };
      job.history.push(e);
      for (const l of job.listeners) l(e);
    };
    const wlog = log.child({ workspace: ws.name, job: job.id });
    ws.job = job;
    job.result = (async (): Promise<JobResult> => {
      const timer = setTimeout(
        () => job.abort.abort(new Error(`workspace did not start within ${timeoutSec} s`)),
        timeoutSec * 1000,
      );
      let agent: (AgentProcess & { version: string }) | undefined;
      try {
        emit('status', 'Starting', create ? 'provisioning workspace' : 'starting workspace');
        emit('progress', '0');
        if (ws.stopping) {
          emit('event', '', 'Waiting for the previous agent to stop');
          await ws.stopping;
        }
        if (create) {
          emit('event', '', 'Creating workspace directory');
          mkdirSync(ws.dir, { recursive: true, mode: 0o700 });
          const meta = {
            name: ws.name,
            userstr: ws.userstr,
            username: ws.username,
            blueprint: ws.blueprint,
            created: ws.created.toISOString(),
          };
          writeFileSync(join(ws.dir, META_FILE), JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
        }
        if (!existsSync(ws.dir)) throw new Error(`workspace directory ${ws.dir} is missing`);
        if (opts.pullDelayMs) {
          emit('status', 'Pulling', 'pulling the workspace image (simulated)');
          await abortableDelay(opts.pullDelayMs, job.abort.signal);
          emit('status', 'Starting', 'image pulled');
        }
        let account: WorkspaceAccount | undefined;
        if (opts.accounts) account = await opts.accounts.resolve(ws.username);
        chmodSync(ws.dir, dirMode);
        const home = join(ws.dir, HOME_DIR);
        mkdirSync(home, { recursive: true, mode: 0o700 });
        // The workspace's account owns its home and nothing else of the stack's.
        if (account && !account.own) chownSync(home, account.uid, account.gid);
        const registry = join(ws.dir, SESSIONS_DIR);
        // Anything a crashed earlier agent left running goes first.
        reapSessions(registry);
        emit('progress', '30');
        emit('event', '', 'Starting workspace agent');
        agent = await spawnAgent({
          command: agentCommand,
          dir: ws.dir,
          home,
          tokenFile: opts.agentTokenFile,
          extraArgs: [
            '--workspace',
            ws.name,
            '--session-registry',
            registry,
            '--exit-with-parent',
            ...(account ? ['--user', account.osUser, '--sudo', account.sudo ? 'yes' : 'no'] : []),
          ],
          readyTimeoutMs,
          signal: job.abort.signal,
          log: wlog,
        });
        if (job.abort.signal.aborted) throw job.abort.signal.reason;
        emit('progress', '60');
        emit('event', '', `Workspace agent ${agent.version} is listening on ${agent.address}`);
        const started = agent;
        ws.agent = started;
        ws.appVersion = started.version;
        ws.lastActive = Date.now();
        ws.lastFail = '';
        void started.exited.then((ex) => {
          // Its sessions die with it: nothing a dead agent started keeps running (docs/security.md).
          const killed = reapSessions(registry);
          if (killed) wlog.warn({ killed }, 'killed processes of the exited agent');
          if (ws.agent !== started) return;
          ws.agent = undefined;
          if (ws.stopping) return;
          ws.lastFail = `agent exited by itself (${describeExit(ex)})`;
          ws.restarts++;
          wlog.warn(
            { pid: started.pid, exit: describeExit(ex) },
            'workspace agent exited; workspace is Stopped',
          );
        });
        wlog.info(
          { pid: started.pid, address: started.address, version: started.version },
          'workspace running',
        );
        emit('progress', '100');
        emit('status', 'Running', 'workspace is running');
        return { ok: true };
      } catch (e) {
        const message = `workspace ${ws.name} failed to start: ${errText(e)}`;
        await agent?.stop(1000);
        if (ws.agent === agent) ws.agent = undefined;
        ws.lastFail = message;
        wlog.error({ err: errText(e) }, 'workspace start failed');
        emit('status', 'Error', message);
        return { ok: false, message };
      } finally {
        clearTimeout(timer);
        ws.job = undefined;
      }
    })();
    return job;
  };

  /** Streams a job's events (history first) to one caller, bounded by the caller's own timeout. */
  const follow = (
    call: ServerWritableStream<unknown, ProvisionWorkspaceResponse>,
    ws: Workspace,
    job: StartJob,
    req: { timeout: number; sendProgress: boolean; sendEvents: boolean },
    timeoutSec: number,
  ): Promise<void> =>
    new Promise<void>((resolve) => {
      let done = false;
      const send = (e: JobEvent) => {
        if (done || call.cancelled) return;
        if (e.type === 'progress' && !req.sendProgress) return;
        if (e.type === 'event' && !req.sendEvents) return;
        call.write(
          ProvisionWorkspaceResponse.fromPartial({
            data: {
              $case: 'event',
              event: {
                type: e.type,
                timestamp: e.timestamp,
                objectName: ws.name,
                status: e.status,
                message: e.message,
              },
            },
          }),
        );
      };
      const finish = (final?: JobEvent) => {
        if (done) return;
        if (final) send(final);
        done = true;
        job.listeners.delete(send);
        clearTimeout(timer);
        if (!call.cancelled) call.end();
        resolve();
      };
      const timer = setTimeout(() => {
        finish({
          type: 'status',
          status: 'Error',
          message: `timed out after ${timeoutSec} s waiting for workspace ${ws.name} to start`,
          timestamp: new Date().toISOString(),
        });
      }, timeoutSec * 1000);
      call.on('cancelled', () => finish());
      for (const e of job.history) send(e);
      job.listeners.add(send);
      void job.result.then(() => finish());
    });

  const handshake = (
    call: ServerWritableStream<unknown, ProvisionWorkspaceResponse>,
    workspace: string,
    jobid = '',
  ) =>
    call.write(
      ProvisionWorkspaceResponse.fromPartial({
        data: { $case: 'handshake', handshake: { workspace, jobid, error: '' } },
      }),
    );

  /** Answers with a handshake carrying an error, then ends the stream OK (as the real provisioner). */
  const handshakeError = (
    call: ServerWritableStream<unknown, ProvisionWorkspaceResponse>,
    code: string,
    desc: string,
  ) => {
    call.write(
      ProvisionWorkspaceResponse.fromPartial({
        data: {
          $case: 'handshake',
          handshake: { workspace: '', jobid: '', error: rpcErrorText(code, desc) },
        },
      }),
    );
    call.end();
  };

  /** Handshake, one final `status` event, end: for requests answered without running a job. */
  const answerWithStatus = (
    call: ServerWritableStream<unknown, ProvisionWorkspaceResponse>,
    workspace: string,
    st: 'Error' | 'Running',
    message: string,
  ) => {
    handshake(call, workspace);
    call.write(
      ProvisionWorkspaceResponse.fromPartial({
        data: {
          $case: 'event',
          event: {
            type: 'status',
            timestamp: new Date().toISOString(),
            objectName: workspace,
            status: st,
            message,
          },
        },
      }),
    );
    call.end();
  };
  /** For requests that are understood but cannot be served. */
  const failAfterHandshake = (
    call: ServerWritableStream<unknown, ProvisionWorkspaceResponse>,
    workspace: string,
    message: string,
  ) => answerWithStatus(call, workspace, 'Error', message);

  const timeoutOf = (t: number) => (t > 0 ? Math.min(t, MAX_TIMEOUT_SEC) : DEFAULT_TIMEOUT_SEC);

  const impl: ProvisionerServiceServer = {
    findWorkspace: unary(tf, log, 'FindWorkspace', (req: FindWorkspaceRequest) => {
      const ws = byName.get(req.workspace.trim());
      if (!ws) throw grpcError(status.NOT_FOUND, `workspace "${req.workspace}" not found`);
      return toDetails(ws);
    }),

    getWorkspacesByUserStr: unary(tf, log, 'GetWorkspacesByUserStr', (req: GetWorkspacesByUserStrRequest) => {
      const u = parse(req.userstr);
      const ws = byName.get(workspaceNameFor(u));
      // A named workspace is reachable only by its owner.
      if (!ws || ws.username !== u.username) return GetWorkspacesResponse.fromPartial({ workspaces: [] });
      // Callers see only Running or Stopped: a Stopped workspace is started, which joins a start in progress.
      const st = ws.agent?.alive() && !ws.stopping && !ws.job ? 'Running' : 'Stopped';
      return GetWorkspacesResponse.fromPartial({ workspaces: [toDetails(ws, st)] });
    }),

    provisionWorkspaceStream: serverStream(
      tf,
      log,
      'ProvisionWorkspaceStream',
      async (call: ServerWritableStream<ProvisionWorkspaceRequest, ProvisionWorkspaceResponse>) => {
        const req = call.request;
        if (closing) return handshakeError(call, 'Unavailable', 'the provisioner is shutting down');
        let u: UserStr;
        try {
          u = parseUserStr(req.userstr);
        } catch (e) {
          return handshakeError(call, 'InvalidArgument', `invalid user string: ${errText(e)}`);
        }
        const name = workspaceNameFor(u);
        if (u.form === 'named') {
          return failAfterHandshake(
            call,
            name,
            `named workspace "${u.pod}" does not exist and is never provisioned`,
          );
        }
        if (!SAFE_NAME.test(name)) {
          return handshakeError(
            call,
            'InvalidArgument',
            `workspace name "${name}" is not usable as a local workspace`,
          );
        }
        const existing = byName.get(name);
        if (existing) {
          // A start in progress is shared; anything else already exists.
          if (existing.job) {
            handshake(call, name, existing.job.id);
            return follow(call, existing, existing.job, req, timeoutOf(req.timeout));
          }
          return handshakeError(call, 'AlreadyExists', `workspace "${name}" already exists`);
        }
        const owned = [...byName.values()].filter((w) => w.username === u.username).length;
        if (owned >= maxPerUser) {
          log.warn({ user: u.username, workspaces: owned, limit: maxPerUser }, 'workspace limit reached');
          return handshakeError(
            call,
            'ResourceExhausted',
            `user ${u.username} already has ${owned} workspaces (the local provisioner allows ${maxPerUser}); remove one under ${wsRoot}`,
          );
        }
        if (opts.accounts) {
          try {
            await opts.accounts.resolve(u.username);
          } catch (e) {
            return handshakeError(call, 'PermissionDenied', errText(e));
          }
          // The await let another stream create it meanwhile.
          if (byName.has(name))
            return handshakeError(call, 'Unavailable', `workspace "${name}" is being created`);
        }
        const blueprint = u.blueprint || DEFAULT_BLUEPRINT;
        let known: Set<string>;
        try {
          known = loadBlueprints(opts.dataDir);
        } catch (e) {
          return failAfterHandshake(call, name, errText(e));
        }
        if (!known.has(blueprint)) return failAfterHandshake(call, name, `unknown blueprint "${blueprint}"`);
        const ws: Workspace = {
          name,
          userstr: canonicalUserStr(u),
          username: u.username,
          blueprint,
          dir: join(wsRoot, name),
          created: new Date(),
          appVersion: '',
          restarts: 0,
          lastFail: '',
          lastActive: Date.now(),
        };
        byName.set(name, ws);
        const timeoutSec = timeoutOf(req.timeout);
        const job = startJob(ws, timeoutSec, true);
        log.info({ workspace: name, userstr: ws.userstr, blueprint, job: job.id }, 'provisioning workspace');
        handshake(call, name, job.id);
        // A workspace whose creation failed before its directory existed is forgotten again.
        void job.result.then((r) => {
          if (!r.ok && byName.get(name) === ws && !hasMeta(ws)) byName.delete(name);
        });
        return follow(call, ws, job, req, timeoutSec);
      },
    ),

    startWorkspaceStream: serverStream(
      tf,
      log,
      'StartWorkspaceStream',
      async (call: ServerWritableStream<StartWorkspaceRequest, ProvisionWorkspaceResponse>) => {
        const req = call.request;
        if (closing) return handshakeError(call, 'Unavailable', 'the provisioner is shutting down');
        const name = req.workspace.trim();
        if (!name) return handshakeError(call, 'InvalidArgument', 'workspace name is required');
        const ws = byName.get(name);
        if (!ws) return handshakeError(call, 'NotFound', `workspace "${name}" not found`);
        if (!ws.job && !ws.stopping && ws.agent?.alive())
          return answerWithStatus(call, name, 'Running', 'workspace is already running');
        const timeoutSec = timeoutOf(req.timeout);
        const job = startJob(ws, timeoutSec, false);
        log.info({ workspace: name, job: job.id }, 'starting workspace');
        handshake(call, name, job.id);
        return follow(call, ws, job, req, timeoutSec);
      },
    ),
  };

  const hasMeta = (ws: Workspace): boolean => existsSync(join(ws.dir, META_FILE));

  const stopWorkspace = (ws: Workspace, reason: string): Promise<void> => {
    if (ws.stopping) return ws.stopping;
    const agent = ws.agent;
    if (!agent) return Promise.resolve();
    log.info({ workspace: ws.name, pid: agent.pid, reason }, 'stopping workspace agent');
    const p = agent.stop(stopGraceMs).finally(() => {
      if (ws.agent === agent) ws.agent = undefined;
      ws.stopping = undefined;
    });
    ws.stopping = p;
    return p;
  };

  // Idle check: count established connections to each running agent's port.
  let polling = false;
  let checks = 0;
  const poll = async () => {
    if (polling || closing) return;
    const running = [...byName.values()].filter((w) => w.agent?.alive() && !w.job && !w.stopping);
    if (!running.length) return;
    polling = true;
    try {
      const counts = await establishedByLocalPort();
      const now = Date.now();
      for (const ws of running) {
        const port = ws.agent?.port ?? 0;
        if ((counts.get(port) ?? 0) > 0) ws.lastActive = now;
        else if (now - ws.lastActive >= idleTimeoutMs)
          void stopWorkspace(ws, `idle for ${now - ws.lastActive} ms`);
      }
    } catch (e) {
      log.error({ err: errText(e) }, 'cannot read TCP connection tables; idle stop skipped');
    } finally {
      polling = false;
      checks++;
    }
  };
  const idleTimer = setInterval(() => void poll(), idlePollMs);
  idleTimer.unref();

  const server = new Server();
  server.addService(ProvisionerServiceService, impl);
  let address: string;
  try {
    address = await bindServer(server, opts.listen ?? '127.0.0.1:0', opts.tls);
  } catch (e) {
    clearInterval(idleTimer);
    throw e;
  }
  log.info({ address, dataDir: opts.dataDir, agentCommand }, 'local provisioner listening');

  let closed: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    closing = true;
    clearInterval(idleTimer);
    const all = [...byName.values()];
    for (const ws of all) ws.job?.abort.abort(new Error('the provisioner is shutting down'));
    await Promise.all(all.map((ws) => ws.job?.result));
    await Promise.all(all.map((ws) => stopWorkspace(ws, 'provisioner shutdown')));
    await shutdownServer(server);
    log.info('local provisioner stopped');
  };

  return {
    address,
    close: () => (closed ??= close()),
    idleChecks: () => checks,
    workspaces: () =>
      [...byName.values()].map((ws) => ({
        name: ws.name,
        status: statusOf(ws),
        pid: ws.agent?.pid,
        address: ws.agent?.address,
      })),
  };
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
