// The dispatcher: everything a client asks on an authenticated connection comes here (session
// requests, channel opens, global requests). It builds each action's authorization request once,
// asks the authorizer before any side effect (provisioning included: workspace:create is the first
// check of the workspace handshake), turns every error or timeout of a check into a deny, and owns
// the always-answer rule: every channel open is answered exactly once, every want-reply request gets
// its reply, every accepted session ends with exit-status or exit-signal, EOF and close. A throw in
// a handler ends only that channel, with `ssh-proxy: internal error (ref <id>)` for the user and a
// log line with the same ref.
import { randomBytes } from 'node:crypto';
import type { AcceptConnection, RejectConnection, ServerChannel, Session } from 'ssh2';
import { errText, type Logger } from '../ops/log.js';
import type { ChannelKind, GatewayMetrics } from '../ops/metrics.js';
import {
  buildRequest,
  checkAction,
  invalidRequest,
  type Action,
  type Authorizer,
  type Subject,
  type Verdict,
} from './authorize.js';
import type { AuthenticatedUser } from './auth.js';
import type { GatewayConnection } from './connection.js';
import { loginEnvBytes, type EnvText } from './env.js';
import { isSubsystem, signalName, sshBytes, wireEnv, type SshText } from './raw-text.js';
import { createProgressWriter, nullProgress, type ProgressWriter, type WriterOptions } from './progress.js';
import type { ConnectionRegistry } from './registry.js';
import { ChannelRelay, type Ending } from './relay.js';
import {
  OpenFailure,
  completeSessionClose,
  envPair,
  execCommand,
  rejectOpen,
  signalText,
  subsystemText,
  type OpenFailureReason,
} from './ssh2-shims/index.js';
import {
  RecordingRefused,
  type ChannelTap,
  type RecordedKind,
  type Recorders,
  type RecordingOverrides,
} from './tap.js';
import { WorkspaceError, type BoundWorkspace, type WorkspaceResolver } from './workspace.js';
import { startAgentForward, type AgentForward } from './channels/agent-forward.js';
import { runDirectTcpip } from './channels/direct-tcpip.js';
import { runExec } from './channels/exec.js';
import type { PendingOpen } from './channels/forward.js';
import { SessionState, type SessionRun } from './channels/session-context.js';
import { runShell } from './channels/shell.js';
import { runStreamLocal } from './channels/streamlocal.js';
import { envAccepted } from './env-policy.js';
import { logExecRequest, type CommandLogMode } from './exec-log.js';
import { asUserProblem } from './as-user.js';
import { clampSize, streamLocalPath, tcpipPayload } from './request-payloads.js';

const DEFAULT_COLS = 80;
const DEFAULT_ROWS = 24;
const CTRL_C = 0x03;

export interface ChannelSettings {
  sftpBinary: string;
  writerOptions: WriterOptions;
  maxDirectTcpip: number;
  /** Ours: concurrent direct-streamlocal channels per connection. */
  maxStreamLocal: number;
  /** Ours: concurrent session channels per connection (sshd's MaxSessions). */
  maxSessions: number;
  /** Ours: `env` names accepted (sshd's AcceptEnv patterns), and bounds on them per session. */
  acceptEnv: readonly string[];
  maxEnvCount: number;
  maxEnvBytes: number;
  /** Ours: how long a forward waits for the workspace to dial (dial confirmation). */
  dialTimeoutMs: number;
  /** Ours: exec command lines in logs (config `log.commands`). */
  logCommands: CommandLogMode;
}

/** Test-only fault injection (never set from configuration). */
export interface TestHooks {
  /** Called when a session handler starts; a throw there must end only that channel. */
  beforeSessionHandler?(kind: 'shell' | 'exec' | 'sftp', detail: string): void;
}

export interface DispatcherDeps {
  settings: ChannelSettings;
  authorizer: Authorizer;
  /** Deadline of one authz evaluation (config `authz.timeout`). */
  authzTimeoutMs: number;
  /** The user's JWT for authz and recording headers (§8.7); rejects when none can be issued. */
  userToken: (user: AuthenticatedUser) => Promise<string>;
  resolver: WorkspaceResolver;
  registry: ConnectionRegistry;
  recorders?: Recorders;
  overrides?: RecordingOverrides;
  metrics?: GatewayMetrics;
  /** False while a forked child drains: new channels are refused (existing ones run on). */
  acceptingChannels?: () => boolean;
  hooks?: TestHooks;
}

export class Dispatcher {
  private readonly log: Logger;

  constructor(
    private readonly conn: GatewayConnection,
    private readonly deps: DispatcherDeps,
  ) {
    this.log = conn.log;
  }

  /** Installs the handlers on the authenticated ssh2 connection. */
  attach(): void {
    const ssh = this.conn.ssh;
    ssh.on('session', (accept, reject) => this.guardOpen('session', () => this.onSession(accept, reject)));
    ssh.on('tcpip', (accept, reject, info) =>
      this.guardOpen('direct-tcpip', () => this.onDirectTcpip(accept, reject, info), reject),
    );
    ssh.on('openssh.streamlocal', (accept, reject, info) =>
      this.guardOpen('direct-streamlocal', () => this.onStreamLocal(accept, reject, info), reject),
    );
    // Global requests (tcpip-forward, streamlocal-forward, …): -R is not offered, as the reference.
    // With this listener ssh2 also honours no-more-sessions@openssh.com.
    ssh.on('request', (_accept, reject, name) => {
      this.log.info({ request: name }, 'global request refused');
      reject?.();
    });
  }

  // --- authorization: the one place that calls the authorizer ---------------------------------------

  /** Evaluates one action; any failure, timeout or malformed request is a deny. */
  async authorize(action: Action, subject: Subject): Promise<Verdict> {
    const req = buildRequest(action, subject);
    const invalid = invalidRequest(req);
    if (invalid) return deny(`authz: invalid request: ${invalid}`, true);
    const metrics = this.deps.metrics;
    return checkAction(this.deps.authorizer, req, {
      timeoutMs: this.deps.authzTimeoutMs,
      userToken: () => this.deps.userToken(this.conn.user),
      log: this.log,
      signal: this.conn.closed,
      observe: metrics ? (a, outcome, seconds) => metrics.authz(a, outcome, seconds) : undefined,
    });
  }

  private subject(ws?: BoundWorkspace): Subject {
    const { userstr, user } = this.conn.user;
    return {
      username: userstr.username,
      source: user.source,
      organization: user.organization,
      workspace: ws?.details.name,
      blueprint: ws?.details.blueprint,
    };
  }

  // --- workspace ----------------------------------------------------------------------------------

  /** The connection's workspace, authorised (workspace:create) before anything is provisioned. */
  private workspaceFor(progress: ProgressWriter, signal: AbortSignal): Promise<BoundWorkspace> {
    const current = this.conn.current;
    if (current?.client.broken) this.conn.workspaceFailed(current, 'the workspace connection was lost');
    const { userstr, user } = this.conn.user;
    return this.conn.acquireWorkspace(progress, signal, (fanout, sig) =>
      this.timedBind(
        this.deps.resolver.bind(user, userstr, fanout, sig, this.log, async () => {
          const v = await this.authorize('workspace:create', {
            ...this.subject(),
            mode: userstr.namespace && userstr.workloadName ? 'inject' : 'standalone',
            blueprintKind: userstr.blueprintKind,
          });
          // The operator log has the cause of a failed check; the user learns only that it failed.
          if (!v.allowed)
            throw new WorkspaceError(
              'user',
              'denied',
              `Access denied: user ${userstr.username} is not authorized to create this workspace: ${v.failed ? 'authorization is unavailable' : v.reason}`,
            );
        }),
      ),
    );
  }

  /** Workspace handshakes for the metrics: how long, and how they ended. */
  private timedBind(p: Promise<BoundWorkspace>): Promise<BoundWorkspace> {
    const m = this.deps.metrics;
    if (!m) return p;
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    return p.then(
      (ws) => {
        m.workspaceStart('ready', seconds());
        return ws;
      },
      (e: unknown) => {
        const code = e instanceof WorkspaceError ? e.code : 'internal';
        m.workspaceStart(
          code === 'denied' ? 'denied' : code === 'cancelled' ? 'cancelled' : 'failed',
          seconds(),
        );
        throw e;
      },
    );
  }

  // --- channel opens ------------------------------------------------------------------------------

  /** A throw while handling an open must neither leave it unanswered nor reach the process. */
  private guardOpen(kind: string, f: () => Promise<void> | void, reject?: RejectConnection): void {
    Promise.resolve()
      .then(f)
      .catch((e: unknown) => {
        const ref = newRef();
        this.log.error(
          { ref, kind, err: errText(e), stack: (e as Error)?.stack },
          `internal error (ref ${ref})`,
        );
        if (reject)
          rejectOpen(this.conn.ssh, reject, OpenFailure.CONNECT_FAILED, `internal error (ref ${ref})`);
      });
  }

  /** While a forked child drains no channel is opened; the client is told why. */
  private refusedWhileDraining(reject: RejectConnection): boolean {
    if (this.deps.acceptingChannels?.() ?? true) return false;
    rejectOpen(
      this.conn.ssh,
      reject,
      OpenFailure.ADMINISTRATIVELY_PROHIBITED,
      'ssh-proxy is restarting; reconnect',
    );
    return true;
  }

  /** Counts an open channel of `kind` (metrics); returns the closer. */
  private opened(kind: ChannelKind): () => void {
    return this.deps.metrics?.channelOpened(kind) ?? (() => undefined);
  }

  private onSession(accept: AcceptConnection<Session>, reject: RejectConnection): void {
    if (this.refusedWhileDraining(reject)) return;
    const max = this.deps.settings.maxSessions;
    if (this.conn.open.session >= max) {
      this.log.warn({ max }, 'session limit reached');
      return rejectOpen(
        this.conn.ssh,
        reject,
        OpenFailure.RESOURCE_SHORTAGE,
        `maximum sessions exceeded (${max})`,
      );
    }
    const session = accept();
    completeSessionClose(this.conn.ssh, session);
    this.conn.open.session++;
    const closeMetric = this.opened('session');
    const id = this.conn.ids.next('sh');
    const state = new SessionState(id, this.log.child({ chan: id }));
    session.once('close', () => {
      closeMetric();
      this.conn.open.session--;
      state.log.debug('session channel closed');
    });
    this.sessionRequests(session, state);
  }

  private sessionRequests(session: Session, state: SessionState): void {
    const { log } = state;
    const s = this.deps.settings;
    session.on('pty', (ok, _no, info) => {
      state.pty = {
        term: info.term,
        cols: clampSize(info.cols) || DEFAULT_COLS,
        rows: clampSize(info.rows) || DEFAULT_ROWS,
      };
      this.conn.ops.add('pt');
      ok?.();
    });
    session.on('env', (ok, no, info) => {
      const [key, val] = envPair(info);
      const verdict = envAccepted(state, key, val, s);
      if (!verdict.ok) {
        log.debug({ name: key.text.slice(0, 64), why: verdict.why }, 'env refused');
        return no?.();
      }
      setEnv(state, key, val);
      ok?.();
    });
    session.on('window-change', (ok, _no, info) => {
      const cols = clampSize(info.cols);
      const rows = clampSize(info.rows);
      if (state.pty) {
        state.pty.cols = cols;
        state.pty.rows = rows;
      }
      state.running?.resize(cols, rows);
      this.relays.get(state)?.resized(cols, rows);
      ok?.();
    });
    session.on('signal', (ok, no, info) => {
      // Only names sshd knows, byte for byte; anything else is refused (never turned into TERM).
      const name = signalName(signalText(info));
      if (name && state.running?.signal(name)) ok?.();
      else no?.();
    });
    session.on('auth-agent', (ok) => {
      state.agentRequested = true;
      this.conn.ops.add('af');
      ok?.();
    });
    session.on('x11', (_ok, no) => no?.());

    session.on('shell', (ok, no) => {
      if (state.started) return no?.();
      state.started = true;
      this.conn.ops.add('sh');
      this.runSession(state, ok(), { type: 'shell' });
    });
    session.on('exec', (ok, no, info) => {
      if (state.started) return no?.();
      state.started = true;
      this.conn.ops.add('ex');
      const command = execCommand(info);
      logExecRequest(log, this.deps.settings.logCommands, command.text, sshBytes(command).length);
      this.runSession(state, ok(), { type: 'exec', command });
    });
    session.on('subsystem', (ok, no, info) => {
      const name = subsystemText(info);
      if (state.started || !isSubsystem(name, 'sftp')) {
        log.info({ subsystem: name.text.slice(0, 64) }, 'subsystem refused');
        return no?.();
      }
      state.started = true;
      this.conn.ops.add('sf');
      this.runSession(state, ok(), { type: 'sftp' });
    });
  }

  private readonly relays = new WeakMap<SessionState, ChannelRelay>();

  // --- session channels: shell, exec, sftp ---------------------------------------------------------

  private runSession(
    state: SessionState,
    channel: ServerChannel,
    what: { type: 'shell' } | { type: 'exec'; command: SshText } | { type: 'sftp' },
  ): void {
    const pty = what.type === 'sftp' ? undefined : state.pty;
    const relay = new ChannelRelay(channel, this.conn.counters, pty ? 'keep-open' : 'half-close');
    this.relays.set(state, relay);
    // With a PTY the shell runs on after client EOF (sshd does the same); say so for the operator.
    relay.onEof(() => state.log.info({ pty: pty !== undefined }, 'client sent EOF'));
    let agent: AgentForward | undefined;
    const done = this.session(state, relay, what, (a) => (agent = a))
      .catch(async (e: unknown) => {
        const ref = newRef();
        state.log.error({ ref, err: errText(e), stack: (e as Error)?.stack }, `internal error (ref ${ref})`);
        relay.notice(`internal error (ref ${ref})`, pty !== undefined);
        await relay.finish({ code: 1 });
      })
      .finally(() => {
        agent?.stop();
        state.running = undefined;
        this.reportBytes('session', relay);
      });
    this.deps.metrics?.sessionStarted(what.type);
    void done;
  }

  private async session(
    state: SessionState,
    relay: ChannelRelay,
    what: { type: 'shell' } | { type: 'exec'; command: SshText } | { type: 'sftp' },
    setAgent: (a: AgentForward) => void,
  ): Promise<void> {
    const { log } = state;
    const pty = what.type === 'sftp' ? undefined : state.pty;
    const isPty = pty !== undefined;
    const refuse = async (message: string | undefined) => {
      if (message) relay.notice(message, isPty);
      await relay.finish({ code: 1 });
    };
    const { userstr, user } = this.conn.user;

    // Local rules first: they need nothing from anywhere.
    const problem = asUserProblem(userstr.username, userstr.asUser, user.sudo);
    if (problem) {
      log.warn({ asUser: userstr.asUser.slice(0, 64), problem }, `${what.type} refused: as-user not allowed`);
      return refuse(problem);
    }
    // `user=<yourself>` is the same as no override: the workspace's own user.
    const asUser = userstr.asUser === userstr.username ? '' : userstr.asUser;

    // The workspace (workspace:create is checked inside, before provisioning). Progress goes only to
    // PTY shells, on stdout; Ctrl+C there cancels this channel's wait.
    const wo = this.deps.settings.writerOptions;
    const progress =
      what.type === 'shell' && isPty
        ? createProgressWriter({ write: (t) => relay.text(t) }, wo)
        : nullProgress;
    const start = new AbortController();
    if (what.type === 'shell' && isPty)
      relay.watchEarlyInput((d) => {
        if (d.includes(CTRL_C)) start.abort();
      });
    void relay.closed.then(() => start.abort());
    let ws: BoundWorkspace;
    try {
      ws = await this.workspaceFor(progress, start.signal);
    } catch (e) {
      const err = e instanceof WorkspaceError ? e : new WorkspaceError('system', 'internal', errText(e));
      log.warn(
        { err: err.message, code: err.code, cause: causeText(err) },
        `${what.type}: workspace unavailable`,
      );
      // On PTY shells a message that the progress output already showed is not repeated (§23.e); a
      // cancellation (Ctrl+C) never went through the progress output.
      const shown =
        err.code !== 'cancelled' &&
        what.type === 'shell' &&
        isPty &&
        (err.category === 'user' ? wo.showErrors : wo.showSystemErrors);
      return refuse(shown ? undefined : err.userMessage);
    } finally {
      relay.watchEarlyInput(undefined);
      progress.close();
    }
    this.deps.hooks?.beforeSessionHandler?.(what.type, what.type === 'exec' ? what.command.text : '');

    // The action itself.
    const action = what.type === 'shell' ? 'ssh:shell' : what.type === 'exec' ? 'ssh:exec' : 'ssh:sftp';
    const v = await this.authorize(action, {
      ...this.subject(ws),
      pty: what.type === 'shell' ? isPty : undefined,
      asUser: what.type === 'shell' ? userstr.asUser : undefined,
      command: what.type === 'exec' ? what.command.text : undefined,
    });
    if (!v.allowed) {
      log.warn(
        { reason: v.reason, failed: v.failed },
        what.type === 'shell' ? 'SSH shell denied' : `${what.type} denied`,
      );
      return refuse(
        v.failed
          ? `${what.type} refused: authorization is unavailable`
          : `${what.type} denied by policy: ${v.reason}`,
      );
    }

    // Recording (§15): decided before anything runs; a refusal under failPolicy closed refuses, and a
    // stream that breaks later ends the channel (message on stderr, exit status 1).
    const execId = what.type === 'shell' ? state.id : this.conn.ids.next(what.type === 'exec' ? 'ex' : 'sf');
    const kind: RecordedKind = what.type;
    let recordingFailed = false;
    try {
      relay.tap = await this.recordingTap(
        kind,
        ws,
        execId,
        {
          pty: pty ? { cols: pty.cols, rows: pty.rows } : undefined,
          command: what.type === 'exec' ? what.command.text : undefined,
          onFailure: (f) => {
            if (recordingFailed || relay.isFinished) return;
            recordingFailed = true;
            log.warn({ kind }, 'recording failed; ending the channel (failPolicy closed)');
            void refuse(f.userMessage);
          },
        },
        log,
      );
    } catch (e) {
      if (e instanceof RecordingRefused) {
        log.warn({ err: e.message }, 'recording refused the channel');
        return refuse(e.userMessage);
      }
      log.warn({ err: errText(e) }, 'Session recording lookup failed');
      return refuse(`${what.type} refused: the recording decision failed`);
    }

    // Agent forwarding: a refusal only withholds SSH_AUTH_SOCK (§23.d); never for sftp.
    let authSock: string | undefined;
    if (state.agentRequested && what.type !== 'sftp') {
      const av = await this.authorize('ssh:agent-forward', this.subject(ws));
      if (!av.allowed) log.warn({ reason: av.reason, failed: av.failed }, 'agent forwarding denied');
      else {
        const agent = await startAgentForward(this.conn, ws, this.conn.ids.next('ux'), execId, log).catch(
          (e: unknown) => {
            log.warn({ err: errText(e) }, 'agent forwarding failed');
            return undefined;
          },
        );
        if (agent) {
          setAgent(agent);
          authSock = agent.socketPath;
        }
      }
    }

    if (recordingFailed) return;
    const clientEnv: Array<readonly [EnvText, EnvText]> = authSock
      ? [...state.env, ['SSH_AUTH_SOCK', authSock]]
      : [...state.env];
    const { client } = this.conn;
    const run: SessionRun = {
      conn: this.conn,
      ws,
      relay,
      state,
      log,
      asUser,
      env: wireEnv(
        loginEnvBytes({ shell: user.shell, asUser: userstr.asUser || userstr.username }, clientEnv, {
          client: { ip: client.ip, port: client.port },
          server: client.server,
          pty: pty ? { term: pty.term } : undefined,
        }),
      ),
    };
    const result =
      what.type === 'shell'
        ? await runShell(run)
        : await runExec(
            run,
            what.type === 'exec'
              ? { type: 'exec', id: execId, command: what.command, shellBinary: user.shell }
              : { type: 'sftp', id: execId, sftpBinary: this.deps.settings.sftpBinary },
          );
    // Ended for a broken recording: the cancelled call is not a workspace failure, and the user
    // already has the message and exit status.
    if (recordingFailed) return;
    if (result.broken) this.conn.workspaceFailed(ws, `${what.type} stream failed`);
    if (result.note) relay.notice(result.note, isPty);
    await relay.finish(result.ending);
  }

  // --- recording ----------------------------------------------------------------------------------

  /**
   * The recorder tap of a channel, or undefined. Override first (always wins, even `none`), then
   * session:record when authz is configured (an evaluation error aborts the channel), then the static
   * flags inside the recorder (reference-behaviour §15.1).
   */
  private async recordingTap(
    kind: RecordedKind,
    ws: BoundWorkspace,
    channelId: string,
    extra: {
      pty?: { cols: number; rows: number };
      command?: string;
      tcpip?: { srcHost: string; srcPort: number; dstHost: string; dstPort: number };
      /** failPolicy closed: the recording broke while the channel ran; end the channel. */
      onFailure: (e: RecordingRefused) => void;
    },
    log: Logger,
  ): Promise<ChannelTap | undefined> {
    const recorders = this.deps.recorders;
    if (!recorders) return undefined;
    let obligation: string | undefined;
    // The override store logs `Applying recording override` on the channel's logger.
    const override = await this.deps.overrides?.get(ws.details.name, log).catch(() => undefined);
    if (override) {
      obligation = override.record;
    } else if (this.deps.authorizer.configured) {
      const v = await this.authorize('session:record', { ...this.subject(ws), sessionType: kind });
      if (v.failed) throw new Error(v.reason);
      obligation = v.obligations.record;
    }
    return recorders.open({
      kind,
      channelId,
      connectionId: this.conn.id,
      username: this.conn.user.userstr.username,
      workspace: { name: ws.details.name, blueprint: ws.details.blueprint },
      userToken: () => this.deps.userToken(this.conn.user).catch(() => ''),
      obligation,
      ...extra,
    });
  }

  private reportBytes(kind: ChannelKind, relay: ChannelRelay): void {
    const m = this.deps.metrics;
    if (!m) return;
    m.bytesRelayed(kind, 'client_to_workspace', relay.bytes.in);
    m.bytesRelayed(kind, 'workspace_to_client', relay.bytes.out);
  }

  // --- forwards -----------------------------------------------------------------------------------

  private pendingOpen(
    accept: AcceptConnection<ServerChannel>,
    reject: RejectConnection,
    onAccepted: (relay: ChannelRelay) => void,
  ): PendingOpen & { answered(): boolean } {
    let answered = false;
    return {
      accept: () => {
        if (answered) return undefined;
        answered = true;
        const ch = accept();
        if (!ch) return undefined;
        const relay = new ChannelRelay(ch, this.conn.counters, 'half-close');
        onAccepted(relay);
        return relay;
      },
      reject: (reason: OpenFailureReason, message: string) => {
        if (answered) return;
        answered = true;
        rejectOpen(this.conn.ssh, reject, reason, message);
      },
      answered: () => answered,
    };
  }

  private async onDirectTcpip(
    accept: AcceptConnection<ServerChannel>,
    reject: RejectConnection,
    info: { destIP?: unknown; destPort?: unknown; srcIP?: unknown; srcPort?: unknown } | undefined,
  ): Promise<void> {
    const conn = this.conn;
    if (this.refusedWhileDraining(reject)) return;
    const max = this.deps.settings.maxDirectTcpip;
    if (conn.open.directTcpip >= max) {
      this.log.warn({ max }, 'direct-tcpip limit reached');
      return rejectOpen(
        conn.ssh,
        reject,
        OpenFailure.RESOURCE_SHORTAGE,
        `maximum direct-tcpip connections exceeded (${max})`,
      );
    }
    const dest = tcpipPayload(info);
    // UNKNOWN_CHANNEL_TYPE is what the reference sends here (sic).
    if (!dest) return rejectOpen(conn.ssh, reject, OpenFailure.UNKNOWN_CHANNEL_TYPE, 'invalid payload');
    conn.open.directTcpip++;
    conn.ops.add('pf');
    const id = conn.ids.next('pf');
    const log = this.log.child({ chan: id });
    let tap: ChannelTap | undefined;
    let acceptedRelay: ChannelRelay | undefined;
    let recordingFailed = false;
    const open = this.pendingOpen(accept, reject, (relay) => {
      acceptedRelay = relay;
      relay.tap = tap;
      const closeMetric = this.opened('direct-tcpip');
      void relay.closed.then(() => {
        closeMetric();
        this.reportBytes('direct-tcpip', relay);
      });
      log.info(
        { host: dest.host, port: dest.port, origin: `${dest.srcIP}:${dest.srcPort}` },
        'direct-tcpip opened',
      );
    });
    try {
      const ws = await this.forwardWorkspace(open, log);
      if (!ws) return;
      const v = await this.authorize('ssh:direct-tcpip', {
        ...this.subject(ws),
        host: dest.host,
        port: dest.port,
      });
      if (!v.allowed) {
        log.warn(
          { host: dest.host, port: dest.port, reason: v.reason, failed: v.failed },
          'direct-tcpip denied',
        );
        return open.reject(
          OpenFailure.ADMINISTRATIVELY_PROHIBITED,
          v.failed ? 'refused: authorization is unavailable' : `denied by policy: ${v.reason}`,
        );
      }
      try {
        tap = await this.recordingTap(
          'tcpip',
          ws,
          id,
          {
            tcpip: { srcHost: dest.srcIP, srcPort: dest.srcPort, dstHost: dest.host, dstPort: dest.port },
            // failPolicy closed: a forward whose recording broke is closed (never a byte of text on it, §23.e).
            onFailure: (f) => {
              if (recordingFailed) return;
              recordingFailed = true;
              log.warn('recording failed; closing the forward (failPolicy closed)');
              // CLOSE at once (not EOF, which a client may answer by keeping its side open).
              if (acceptedRelay) acceptedRelay.channel.close();
              else open.reject(OpenFailure.ADMINISTRATIVELY_PROHIBITED, f.userMessage);
            },
          },
          log,
        );
      } catch (e) {
        log.warn({ err: errText(e) }, 'Session recording lookup failed');
        return open.reject(
          OpenFailure.ADMINISTRATIVELY_PROHIBITED,
          e instanceof RecordingRefused ? e.userMessage : 'refused: the recording decision failed',
        );
      }
      if (recordingFailed) return;
      const r = await runDirectTcpip(ws, id, dest, {
        open,
        log,
        dialTimeoutMs: this.deps.settings.dialTimeoutMs,
      });
      if (r.failed) this.conn.workspaceFailed(ws, 'forward stream failed');
      log.info('direct-tcpip closed');
    } finally {
      conn.open.directTcpip--;
      if (!open.answered()) open.reject(OpenFailure.CONNECT_FAILED, 'the forward could not be set up');
    }
  }

  private async onStreamLocal(
    accept: AcceptConnection<ServerChannel>,
    reject: RejectConnection,
    info: { socketPath?: unknown } | undefined,
  ): Promise<void> {
    const conn = this.conn;
    if (this.refusedWhileDraining(reject)) return;
    const socketPath = streamLocalPath(info);
    if (socketPath === undefined)
      return rejectOpen(
        conn.ssh,
        reject,
        OpenFailure.ADMINISTRATIVELY_PROHIBITED,
        'bad direct-streamlocal payload',
      );
    const max = this.deps.settings.maxStreamLocal;
    if (conn.open.streamLocal >= max) {
      this.log.warn({ max }, 'direct-streamlocal limit reached');
      return rejectOpen(
        conn.ssh,
        reject,
        OpenFailure.RESOURCE_SHORTAGE,
        `maximum direct-streamlocal connections exceeded (${max})`,
      );
    }
    conn.open.streamLocal++;
    conn.ops.add('ux');
    const id = conn.ids.next('ux');
    const log = this.log.child({ chan: id });
    const open = this.pendingOpen(accept, reject, () =>
      log.info({ socketPath }, 'direct-streamlocal opened'),
    );
    try {
      const ws = await this.forwardWorkspace(open, log);
      if (!ws) return;
      const v = await this.authorize('ssh:direct-streamlocal', { ...this.subject(ws), socketPath });
      if (!v.allowed) {
        log.warn({ socketPath, reason: v.reason, failed: v.failed }, 'direct-streamlocal denied');
        return open.reject(
          OpenFailure.ADMINISTRATIVELY_PROHIBITED,
          v.failed ? 'refused: authorization is unavailable' : `denied by policy: ${v.reason}`,
        );
      }
      const r = await runStreamLocal(ws, id, socketPath, {
        open,
        log,
        dialTimeoutMs: this.deps.settings.dialTimeoutMs,
      });
      if (r.failed) log.info('direct-streamlocal ended with an error');
      log.info('direct-streamlocal closed');
    } finally {
      conn.open.streamLocal--;
      if (!open.answered()) open.reject(OpenFailure.CONNECT_FAILED, 'the forward could not be set up');
    }
  }

  /** The workspace for a forward; on failure the open is refused (never bytes on the stream, §23.e). */
  private async forwardWorkspace(open: PendingOpen, log: Logger): Promise<BoundWorkspace | undefined> {
    try {
      return await this.workspaceFor(nullProgress, this.conn.closed);
    } catch (e) {
      const err = e instanceof WorkspaceError ? e : new WorkspaceError('system', 'internal', errText(e));
      log.warn({ err: err.message, code: err.code, cause: causeText(err) }, 'forward: workspace unavailable');
      open.reject(
        err.code === 'denied' ? OpenFailure.ADMINISTRATIVELY_PROHIBITED : OpenFailure.CONNECT_FAILED,
        `workspace unavailable: ${err.userMessage}`,
      );
      return undefined;
    }
  }
}

function deny(reason: string, failed: boolean): Verdict {
  return { allowed: false, reason, obligations: {}, failed };
}

function newRef(): string {
  return randomBytes(4).toString('hex');
}

function setEnv(state: SessionState, key: SshText, val: SshText): void {
  const name = sshBytes(key);
  const i = state.env.findIndex(([k]) => sshBytes(k).equals(name));
  if (i < 0) state.env.push([key, val]);
  else state.env[i] = [key, val];
}

export type { Ending };

/** The operator's view of why a workspace step failed: the user message hides the transport detail. */
function causeText(err: Error): string | undefined {
  return err.cause === undefined ? undefined : errText(err.cause);
}
