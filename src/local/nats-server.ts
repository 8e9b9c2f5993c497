// A local NATS server for `npm start -- --nats` and the tests: Debian's `nats-server` with JetStream,
// listening on loopback only, its config file, store, log and ports file in `<dataDir>/nats`, stopped
// with the stack (and killed if this process exits without stopping it).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleepMs } from 'node:timers/promises';
import { connect } from '@nats-io/transport-node';
import type { Config } from '../config/schema.js';
import { LOCKED_USERS_BUCKET, openOrCreateBucket } from '../backends/nats-kv.js';
import { errText, getLogger, type Logger } from '../ops/log.js';

export const DEFAULT_NATS_SERVER_BINARY = 'nats-server';

export interface LocalNatsOptions {
  /** The stack's data dir; the server's files go to `<dataDir>/nats`. */
  dataDir: string;
  /** Client port; 0 (default) = a free one chosen by the server. Give the old port to restart in place. */
  port?: number;
  /** Require this token, or this user and password, from clients. */
  auth?: { token: string } | { user: string; password: string };
  /** Also serve the monitoring endpoints (/connz, /jsz) on a free loopback port. */
  monitoring?: boolean;
  binary?: string;
  startTimeoutMs?: number;
  logger?: Logger;
}

export interface LocalNats {
  /** `nats://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** `http://127.0.0.1:<port>` when monitoring was asked for. */
  monitorUrl: string | undefined;
  pid: number;
  configPath: string;
  logPath: string;
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves when the process is gone. */
  stop(timeoutMs?: number): Promise<void>;
}

/** True when the nats-server binary can be run (for a clear `--nats` error). */
export function natsServerAvailable(binary = DEFAULT_NATS_SERVER_BINARY): boolean {
  const r = spawnSync(binary, ['--version'], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0;
}

/** nats-server config syntax accepts JSON-quoted strings. */
function q(s: string): string {
  return JSON.stringify(s);
}

function configText(dir: string, opts: LocalNatsOptions): string {
  const lines = [
    '# Written by ssh-proxy for the local stack; rewritten on every start.',
    'server_name: ssh-proxy-local',
    'host: 127.0.0.1',
    `port: ${opts.port && opts.port > 0 ? opts.port : -1}`,
    `ports_file_dir: ${q(dir)}`,
    `log_file: ${q(join(dir, 'nats-server.log'))}`,
    `pid_file: ${q(join(dir, 'nats-server.pid'))}`,
    // Bounded, loopback-only and small: enough for the gateway's buckets.
    `jetstream { store_dir: ${q(join(dir, 'jetstream'))}, max_memory_store: 64MB, max_file_store: 256MB }`,
  ];
  if (opts.monitoring) lines.push('http: "127.0.0.1:-1"');
  const a = opts.auth;
  if (a && 'token' in a) lines.push(`authorization { token: ${q(a.token)} }`);
  else if (a) lines.push(`authorization { user: ${q(a.user)}, password: ${q(a.password)} }`);
  return `${lines.join('\n')}\n`;
}

interface PortsFile {
  nats?: string[];
  monitoring?: string[];
}

function readPorts(dir: string, pid: number): PortsFile | undefined {
  const file = readdirSync(dir).find((f) => f.endsWith(`_${pid}.ports`));
  if (!file) return undefined;
  try {
    return JSON.parse(readFileSync(join(dir, file), 'utf8')) as PortsFile;
  } catch {
    return undefined; // being written
  }
}

function portOf(url: string | undefined): number {
  const m = /:(\d+)$/.exec(url ?? '');
  return m ? Number(m[1]) : 0;
}

export async function startLocalNats(opts: LocalNatsOptions): Promise<LocalNats> {
  const log = opts.logger ?? getLogger('nats-server');
  const dir = resolve(opts.dataDir, 'nats');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const f of readdirSync(dir)) if (f.endsWith('.ports')) rmSync(join(dir, f), { force: true });
  const configPath = join(dir, 'nats-server.conf');
  writeFileSync(configPath, configText(dir, opts), { mode: 0o600 });
  const logPath = join(dir, 'nats-server.log');

  const child: ChildProcess = spawn(opts.binary ?? DEFAULT_NATS_SERVER_BINARY, ['-c', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const spawnError = new Promise<Error>((res) => child.once('error', res));
  // A process that never started (spawn error) emits no 'exit'.
  const gone = Promise.race([exited, spawnError.then(() => undefined)]);
  // Never leave a server behind when this process exits without calling stop().
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async (timeoutMs = 5000): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    child.kill('SIGTERM');
    const done = await Promise.race([gone.then(() => true), sleepMs(timeoutMs, false, { ref: false })]);
    if (!done) {
      child.kill('SIGKILL');
      await gone;
    }
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000);
  let ports: PortsFile | undefined;
  let failure: string | undefined;
  void spawnError.then((e) => (failure = errText(e)));
  void exited.then(
    () => (failure ??= `nats-server exited during start-up: ${stderr.trim() || tail(logPath)}`),
  );
  while (!ports?.nats?.length) {
    if (failure) break;
    if (Date.now() > deadline) {
      failure = 'nats-server did not start in time';
      break;
    }
    await sleepMs(25);
    if (child.pid !== undefined) ports = readPorts(dir, child.pid);
  }
  if (failure || !ports || child.pid === undefined) {
    await stop(1000);
    throw new Error(failure ?? 'nats-server did not start');
  }
  const port = portOf(ports.nats?.[0]);
  const monitorPort = portOf(ports.monitoring?.[0]);
  const url = `nats://127.0.0.1:${port}`;
  log.info({ url, configPath, serverPid: child.pid }, 'local nats-server started');
  return {
    url,
    port,
    monitorUrl: monitorPort ? `http://127.0.0.1:${monitorPort}` : undefined,
    pid: child.pid,
    configPath,
    logPath,
    stop,
  };
}

function tail(path: string): string {
  if (!existsSync(path)) return '';
  return readFileSync(path, 'utf8').trim().split('\n').slice(-3).join(' | ');
}

/** Subject of the local stack's failed-login events. */
export const LOCAL_FAILURES_SUBJECT = 'ssh.failures';

/**
 * Creates the `locked-users` bucket (in production the API server's), so the gateway's watcher
 * subscribes at once and the first `ssh-proxy-admin lock` is not missed. The gateway itself creates
 * `recording-overrides`.
 */
export async function ensureLocalBuckets(url: string, timeoutMs = 5000, token?: string): Promise<void> {
  const nc = await connect({
    servers: url,
    name: 'ssh-proxy-local',
    timeout: timeoutMs,
    reconnect: false,
    ...(token ? { token } : {}),
  });
  try {
    await openOrCreateBucket(nc, LOCKED_USERS_BUCKET, timeoutMs);
  } finally {
    await nc.close();
  }
}

/** Points a loaded config at the local server: shared client on, failure events published (all addresses). */
export function useLocalNats(cfg: Pick<Config, 'nats' | 'server'>, url: string, token = ''): void {
  Object.assign(cfg.nats, { enabled: true, url, username: '', password: '', token });
  Object.assign(cfg.server.publishSshFailures, {
    enabled: true,
    subject: LOCAL_FAILURES_SUBJECT,
    publicIPOnly: false,
  });
}
