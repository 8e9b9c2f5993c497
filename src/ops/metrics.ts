// Prometheus metrics of the gateway (issue 12 item 5, our §23.l): one prom-client Registry and a small
// typed API the gateway calls. Conventions: prefix `sshproxy_`, counters end in `_total`, durations
// are `_seconds`, sizes `_bytes`. Label values come from closed sets (channel kinds, methods,
// outcomes, service names); never a user name, an address or an id, which would make the number of
// series unbounded. Anything outside a set is recorded as `other`.
//
// Gauges of things that open and close (connections, channels, recordings) are driven through
// handles: `const done = m.connectionOpened(); … done();` — calling `done` twice counts once, so a
// close path that runs twice cannot drive a gauge negative.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Action } from '../gateway/authorize.js';
import type { RecordedKind } from '../gateway/tap.js';

export const METRIC_PREFIX = 'sshproxy_';

export const CHANNEL_KINDS = ['session', 'direct-tcpip', 'direct-streamlocal', 'auth-agent'] as const;
export type ChannelKind = (typeof CHANNEL_KINDS)[number];

export const SESSION_TYPES = ['shell', 'exec', 'sftp', 'subsystem'] as const;
export type SessionType = (typeof SESSION_TYPES)[number];

export const AUTH_METHODS = ['publickey', 'password', 'keyboard-interactive', 'none', 'hostbased'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

/** `partial`: publickey offer accepted, signature still to come. `refused`: backoff refusal. */
export const AUTH_RESULTS = ['success', 'failure', 'partial', 'error', 'refused'] as const;
export type AuthResult = (typeof AUTH_RESULTS)[number];

export const WORKSPACE_OUTCOMES = ['ready', 'failed', 'denied', 'cancelled', 'timeout'] as const;
export type WorkspaceOutcome = (typeof WORKSPACE_OUTCOMES)[number];

export const DIRECTIONS = ['client_to_workspace', 'workspace_to_client'] as const;
export type Direction = (typeof DIRECTIONS)[number];

export const AUTHZ_DECISIONS = ['allowed', 'denied', 'error'] as const;
export type AuthzDecision = (typeof AUTHZ_DECISIONS)[number];

/** Every authorization action of src/gateway/authorize.ts (checked at compile time below). */
export const AUTHZ_ACTIONS = [
  'user:auth',
  'workspace:create',
  'ssh:shell',
  'ssh:exec',
  'ssh:sftp',
  'ssh:direct-tcpip',
  'ssh:direct-streamlocal',
  'ssh:agent-forward',
  'session:record',
] as const satisfies readonly Action[];
// Fails to compile when authorize.ts gains an action this list lacks.
const _allActions: Exclude<Action, (typeof AUTHZ_ACTIONS)[number]> extends never ? true : never = true;
void _allActions;

/** Recorded channel kinds as in src/gateway/tap.ts. */
export const RECORDING_KINDS = ['shell', 'exec', 'sftp', 'tcpip'] as const satisfies readonly RecordedKind[];

/** Why recorded data was lost: queue over its byte limit, the stream failed, or it was refused. */
export const RECORDING_DROP_REASONS = ['overflow', 'stream_error', 'refused'] as const;
export type RecordingDropReason = (typeof RECORDING_DROP_REASONS)[number];

export const BACKEND_SERVICES = ['identity', 'provisioner', 'session', 'authz', 'k8shelld', 'nats'] as const;
export type BackendService = (typeof BACKEND_SERVICES)[number];

export const PREAUTH_REJECT_REASONS = [
  'max-startups',
  'max-startups-per-source',
  'penalty',
  'proxy-timeout',
  'proxy-malformed',
  'proxy-truncated',
  'handshake-timeout',
  'max-children',
  'draining',
] as const;
export type PreauthRejectLabel = (typeof PREAUTH_REJECT_REASONS)[number];

export const CHILD_EXITS = ['ok', 'error', 'signal'] as const;
export type ChildExit = (typeof CHILD_EXITS)[number];

/** Idempotent closer returned by the `…Opened` calls. */
export type Done = () => void;

/** Seconds elapsed since it was created, on a monotonic clock. */
export type Stopwatch = () => number;

export function stopwatch(): Stopwatch {
  const start = process.hrtime.bigint();
  return () => Number(process.hrtime.bigint() - start) / 1e9;
}

function oneOf<T extends string>(set: readonly T[], v: string): T | 'other' {
  return (set as readonly string[]).includes(v) ? (v as T) : 'other';
}

/** gRPC method names are code, not data, but keep them within label syntax and length anyway. */
function methodLabel(m: string): string {
  return /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(m) ? m : 'other';
}

function once(f: () => void): Done {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    f();
  };
}

export interface MetricsOptions {
  /** Also collect prom-client's default process and Node.js metrics (default true). */
  defaultMetrics?: boolean;
  /** Build identity for `sshproxy_build_info`. */
  version?: string;
  commit?: string;
}

const SECONDS_FAST = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const SECONDS_BACKEND = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SECONDS_WORKSPACE = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300];

export class GatewayMetrics {
  readonly registry = new Registry();

  private readonly connectionsOpen: Gauge;
  private readonly connectionsTotal: Counter;
  private readonly channelsOpen: Gauge<'kind'>;
  private readonly channelsTotal: Counter<'kind'>;
  private readonly sessionsTotal: Counter<'type'>;
  private readonly authTotal: Counter<'method' | 'result'>;
  private readonly workspaceStarts: Counter<'outcome'>;
  private readonly workspaceStartSeconds: Histogram<'outcome'>;
  private readonly relayBytes: Counter<'kind' | 'direction'>;
  private readonly authzTotal: Counter<'action' | 'decision'>;
  private readonly authzSeconds: Histogram<'action'>;
  private readonly recordingsOpen: Gauge<'kind'>;
  private readonly recordingsTotal: Counter<'kind'>;
  private readonly recordingDrops: Counter<'kind' | 'reason'>;
  private readonly recordingDroppedBytes: Counter<'kind'>;
  private readonly backendSeconds: Histogram<'service' | 'method'>;
  private readonly backendErrors: Counter<'service' | 'method' | 'code'>;
  private readonly preauthRejections: Counter<'reason'>;
  private readonly unauthenticatedGauge: Gauge;
  private readonly childrenGauge: Gauge;
  private readonly childrenStarted: Counter;
  private readonly childExits: Counter<'outcome'>;
  private readonly drainingGauge: Gauge;
  private readonly memoryTrims: Counter;
  private readonly memoryTrimmedBytes: Counter;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    const p = METRIC_PREFIX;
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });

    const info = new Gauge({
      name: `${p}build_info`,
      help: 'Build identity of the running gateway; always 1.',
      labelNames: ['version', 'commit'],
      registers,
    });
    info.set({ version: opts.version ?? 'unknown', commit: opts.commit ?? 'unknown' }, 1);

    this.connectionsOpen = new Gauge({
      name: `${p}connections_open`,
      help: 'SSH connections open now.',
      registers,
    });
    this.connectionsTotal = new Counter({
      name: `${p}connections_total`,
      help: 'SSH connections accepted (after the PROXY header and admission).',
      registers,
    });
    this.unauthenticatedGauge = new Gauge({
      name: `${p}connections_unauthenticated`,
      help: 'Connections that have not finished authentication yet.',
      registers,
    });
    this.channelsOpen = new Gauge({
      name: `${p}channels_open`,
      help: 'SSH channels open now, by channel type.',
      labelNames: ['kind'],
      registers,
    });
    this.channelsTotal = new Counter({
      name: `${p}channels_total`,
      help: 'SSH channels opened, by channel type.',
      labelNames: ['kind'],
      registers,
    });
    this.sessionsTotal = new Counter({
      name: `${p}sessions_total`,
      help: 'Session channel requests started, by type (shell, exec, sftp, other subsystems).',
      labelNames: ['type'],
      registers,
    });
    this.authTotal = new Counter({
      name: `${p}authentications_total`,
      help: 'Authentication attempts by method and result.',
      labelNames: ['method', 'result'],
      registers,
    });
    this.workspaceStarts = new Counter({
      name: `${p}workspace_starts_total`,
      help: 'Workspace resolutions (ensure/provision/start until the daemon answers), by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.workspaceStartSeconds = new Histogram({
      name: `${p}workspace_start_duration_seconds`,
      help: 'Time from the first channel that needs the workspace until it is usable, by outcome.',
      labelNames: ['outcome'],
      buckets: SECONDS_WORKSPACE,
      registers,
    });
    this.relayBytes = new Counter({
      name: `${p}relayed_bytes_total`,
      help: 'Channel payload bytes relayed, by channel type and direction.',
      labelNames: ['kind', 'direction'],
      registers,
    });
    this.authzTotal = new Counter({
      name: `${p}authz_decisions_total`,
      help: 'Authorization decisions by action and decision (allowed, denied, error).',
      labelNames: ['action', 'decision'],
      registers,
    });
    this.authzSeconds = new Histogram({
      name: `${p}authz_duration_seconds`,
      help: 'Latency of authorization decisions, by action.',
      labelNames: ['action'],
      buckets: SECONDS_FAST,
      registers,
    });
    this.recordingsOpen = new Gauge({
      name: `${p}recording_streams_open`,
      help: 'Recording streams open now, by channel kind.',
      labelNames: ['kind'],
      registers,
    });
    this.recordingsTotal = new Counter({
      name: `${p}recording_streams_total`,
      help: 'Recording streams opened, by channel kind.',
      labelNames: ['kind'],
      registers,
    });
    this.recordingDrops = new Counter({
      name: `${p}recording_drops_total`,
      help: 'Recording data losses, by channel kind and reason (overflow, stream_error, refused).',
      labelNames: ['kind', 'reason'],
      registers,
    });
    this.recordingDroppedBytes = new Counter({
      name: `${p}recording_dropped_bytes_total`,
      help: 'Bytes that could not be recorded, by channel kind.',
      labelNames: ['kind'],
      registers,
    });
    this.backendSeconds = new Histogram({
      name: `${p}backend_request_duration_seconds`,
      help: 'Latency of backend calls (unary calls, or stream set-up), by service and method.',
      labelNames: ['service', 'method'],
      buckets: SECONDS_BACKEND,
      registers,
    });
    this.backendErrors = new Counter({
      name: `${p}backend_errors_total`,
      help: 'Failed backend calls, by service, method and gRPC status code name.',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.preauthRejections = new Counter({
      name: `${p}preauth_rejections_total`,
      help: 'Connections closed before authentication by the gateway, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.childrenGauge = new Gauge({
      name: `${p}child_processes`,
      help: 'Forking mode: per-connection child processes running now.',
      registers,
    });
    this.childrenStarted = new Counter({
      name: `${p}child_processes_started_total`,
      help: 'Forking mode: child processes started.',
      registers,
    });
    this.childExits = new Counter({
      name: `${p}child_process_exits_total`,
      help: 'Forking mode: child processes reaped, by outcome (ok, error exit code, killed by a signal).',
      labelNames: ['outcome'],
      registers,
    });
    this.drainingGauge = new Gauge({
      name: `${p}draining`,
      help: '1 while the gateway drains (after SIGTERM), else 0.',
      registers,
    });
    this.memoryTrims = new Counter({
      name: `${p}memory_trims_total`,
      help: 'Times freed native memory was handed back to the system (malloc_trim) after RSS grew.',
      registers,
    });
    this.memoryTrimmedBytes = new Counter({
      name: `${p}memory_trimmed_bytes_total`,
      help: 'Bytes of RSS those trims released.',
      registers,
    });
    this.drainingGauge.set(0);
    this.connectionsOpen.set(0);
    this.unauthenticatedGauge.set(0);
    this.childrenGauge.set(0);
    this.connectionsTotal.inc(0);
    this.childrenStarted.inc(0);
  }

  /** A connection passed admission; call the returned function when it closes. */
  connectionOpened(): Done {
    this.connectionsTotal.inc();
    this.connectionsOpen.inc();
    return once(() => this.connectionsOpen.dec());
  }

  /** A connection entered the unauthenticated state; call the returned function when it leaves it. */
  unauthenticated(): Done {
    this.unauthenticatedGauge.inc();
    return once(() => this.unauthenticatedGauge.dec());
  }

  channelOpened(kind: ChannelKind): Done {
    const k = oneOf(CHANNEL_KINDS, kind);
    this.channelsTotal.inc({ kind: k });
    this.channelsOpen.inc({ kind: k });
    return once(() => this.channelsOpen.dec({ kind: k }));
  }

  sessionStarted(type: SessionType): void {
    this.sessionsTotal.inc({ type: oneOf(SESSION_TYPES, type) });
  }

  auth(method: AuthMethod | string, result: AuthResult): void {
    this.authTotal.inc({ method: oneOf(AUTH_METHODS, method), result: oneOf(AUTH_RESULTS, result) });
  }

  workspaceStart(outcome: WorkspaceOutcome, seconds: number): void {
    const o = oneOf(WORKSPACE_OUTCOMES, outcome);
    this.workspaceStarts.inc({ outcome: o });
    this.workspaceStartSeconds.observe({ outcome: o }, seconds);
  }

  bytesRelayed(kind: ChannelKind, direction: Direction, n: number): void {
    if (n <= 0) return;
    this.relayBytes.inc({ kind: oneOf(CHANNEL_KINDS, kind), direction: oneOf(DIRECTIONS, direction) }, n);
  }

  authz(action: Action, decision: AuthzDecision, seconds: number): void {
    const a = oneOf(AUTHZ_ACTIONS, action);
    this.authzTotal.inc({ action: a, decision: oneOf(AUTHZ_DECISIONS, decision) });
    this.authzSeconds.observe({ action: a }, seconds);
  }

  recordingOpened(kind: RecordedKind): Done {
    const k = oneOf(RECORDING_KINDS, kind);
    this.recordingsTotal.inc({ kind: k });
    this.recordingsOpen.inc({ kind: k });
    return once(() => this.recordingsOpen.dec({ kind: k }));
  }

  recordingDropped(kind: RecordedKind, reason: RecordingDropReason, bytes = 0): void {
    const k = oneOf(RECORDING_KINDS, kind);
    this.recordingDrops.inc({ kind: k, reason: oneOf(RECORDING_DROP_REASONS, reason) });
    if (bytes > 0) this.recordingDroppedBytes.inc({ kind: k }, bytes);
  }

  /** One backend call; `code` is the gRPC status name (e.g. `UNAVAILABLE`) when it failed. */
  backendCall(service: BackendService, method: string, seconds: number, code?: string): void {
    const s = oneOf(BACKEND_SERVICES, service);
    const m = methodLabel(method);
    this.backendSeconds.observe({ service: s, method: m }, seconds);
    if (code !== undefined && code !== 'OK') {
      this.backendErrors.inc({ service: s, method: m, code: /^[A-Z_]{1,32}$/.test(code) ? code : 'other' });
    }
  }

  preauthRejected(reason: PreauthRejectLabel): void {
    this.preauthRejections.inc({ reason: oneOf(PREAUTH_REJECT_REASONS, reason) });
  }

  /** Forking mode: a child started; call the returned function with how it ended when it is reaped. */
  childStarted(): (exit: ChildExit) => void {
    this.childrenStarted.inc();
    this.childrenGauge.inc();
    let done = false;
    return (exit) => {
      if (done) return;
      done = true;
      this.childrenGauge.dec();
      this.childExits.inc({ outcome: oneOf(CHILD_EXITS, exit) });
    };
  }

  memoryTrimmed(releasedBytes: number): void {
    this.memoryTrims.inc();
    this.memoryTrimmedBytes.inc(releasedBytes);
  }

  setDraining(on: boolean): void {
    this.drainingGauge.set(on ? 1 : 0);
  }

  /** The exposition text (what /metrics serves). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricDescription {
  name: string;
  type: string;
  help: string;
  labels: string[];
}

/** The gateway's own metrics (not the default process ones), for the docs table. */
export async function describeGatewayMetrics(): Promise<MetricDescription[]> {
  const m = new GatewayMetrics({ defaultMetrics: false });
  const json = await m.registry.getMetricsAsJSON();
  const labelsOf = (name: string): string[] => {
    const metric = m.registry.getSingleMetric(name) as unknown as { labelNames?: string[] } | undefined;
    return [...(metric?.labelNames ?? [])];
  };
  return json
    .map((j) => ({ name: j.name, type: String(j.type), help: j.help, labels: labelsOf(j.name) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The markdown table in docs/operating.md (checked by a test so it cannot drift). */
export async function metricsMarkdownTable(): Promise<string> {
  const rows = (await describeGatewayMetrics()).map(
    (d) => `| \`${d.name}\` | ${d.type} | ${d.labels.map((l) => `\`${l}\``).join(', ') || '—'} | ${d.help} |`,
  );
  return ['| Metric | Type | Labels | Meaning |', '|---|---|---|---|', ...rows].join('\n') + '\n';
}
