// The production entry end to end: `node dist/cli/ssh-proxy.js --config <file>` as its own process,
// against the local reference services started in the test process (identity, provisioner with real
// agent processes, session service; optionally with TLS and token files), driven by the real OpenSSH
// client. The gateway's JSON log lines (its children's too, in forking mode) are parsed as they come.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { initLogging } from '../../../src/ops/log.js';
import { startLocalIdentity, type LocalIdentity } from '../../../src/local/identity.js';
import { startLocalProvisioner, type LocalProvisioner } from '../../../src/local/provisioner.js';
import { startLocalPolicy, type LocalPolicy } from '../../../src/local/policy.js';
import { startLocalSessionService, type LocalSessionService } from '../../../src/local/sessions/service.js';
import type { StoredSession } from '../../../src/local/sessions/store.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';
import { pidAlive, waitFor } from '../../helpers/wait.js';
import { run, type RunOptions, type RunResult } from '../harness.js';

export const REPO = resolve(new URL('../../..', import.meta.url).pathname);
export const ENTRY = join(REPO, 'dist/cli/ssh-proxy.js');
const AGENT = join(REPO, 'dist/cli/agent.js');

/**
 * These tests run what `npm run build` produced (the README's `npm test` builds first). A missing or
 * stale dist/ would test other code than the working tree's, so it fails loudly instead.
 */
export function assertBuilt(): void {
  if (!existsSync(ENTRY) || !existsSync(AGENT))
    throw new Error(`${ENTRY} is missing: run "npm run build" first (npm test does)`);
  const built = statSync(ENTRY).mtimeMs;
  const newest = newestMtime(join(REPO, 'src'));
  if (newest.mtime > built)
    throw new Error(`dist/ is older than ${newest.file}: run "npm run build" first (npm test does)`);
}

function newestMtime(dir: string): { file: string; mtime: number } {
  let best = { file: '', mtime: 0 };
  for (const f of readdirSync(dir, { recursive: true }).map(String)) {
    if (!f.endsWith('.ts')) continue;
    const m = statSync(join(dir, f)).mtimeMs;
    if (m > best.mtime) best = { file: join('src', f), mtime: m };
  }
  return best;
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function keygen(path: string, type = 'ed25519'): string {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'prod-e2e', '-f', path]);
  return readFileSync(`${path}.pub`, 'utf8').trim();
}

// --- certificates ---

export interface Pki {
  ca: string;
  cert: string;
  key: string;
}

/** A CA and a server certificate for 127.0.0.1/localhost, made with openssl in `dir`. */
export function makePki(dir: string, name: string): Pki {
  mkdirSync(dir, { recursive: true });
  const p = (f: string) => join(dir, `${name}-${f}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.crt'),
    '-days',
    '2',
    '-subj',
    `/CN=${name}-ca`,
  ]);
  ssl(['req', ...ec, '-keyout', p('tls.key'), '-out', p('tls.csr'), '-subj', `/CN=${name}`]);
  writeFileSync(p('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl(
    [
      'x509',
      '-req',
      '-in',
      p('tls.csr'),
      '-CA',
      p('ca.crt'),
      '-CAkey',
      p('ca.key'),
      '-CAcreateserial',
    ].concat(['-out', p('tls.crt'), '-days', '2', '-extfile', p('ext')]),
  );
  return { ca: p('ca.crt'), cert: p('tls.crt'), key: p('tls.key') };
}

// --- the local services ---

export interface ServicesOptions {
  /** identity and provisioner serve TLS with certificates of a CA made here. */
  tls?: boolean;
  /** identity, provisioner, session service, policy and the agents require bearer tokens from files. */
  tokens?: boolean;
  /** Also run the local policy (authz) service; without a policy file it allows everything. */
  policy?: boolean;
  blueprints?: string[];
}

export interface ProdServices {
  dir: TempDir;
  dataDir: string;
  user: string;
  keys: { user: string; bob: string; stranger: string };
  identity: LocalIdentity;
  provisioner: LocalProvisioner;
  sessions: LocalSessionService;
  policy: LocalPolicy | undefined;
  pki: Pki | undefined;
  tokenFile: string | undefined;
  /** The gateway config for these services (reference format), with `server` keys merged in. */
  config(port: number, extra?: ConfigPatch): Record<string, unknown>;
  /** Sessions the session service stored, newest last. */
  storedSessions(): StoredSession[];
  stop(): Promise<void>;
}

export type ConfigPatch = { [section: string]: Record<string, unknown> };

export async function startServices(o: ServicesOptions = {}): Promise<ProdServices> {
  assertBuilt();
  const dir = makeTempDir('spx-prod-');
  const dataDir = dir.join('data');
  const home = dir.join('home');
  mkdirSync(join(home, '.ssh'), { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  const keys = { user: dir.join('id_user'), bob: dir.join('id_bob'), stranger: dir.join('id_stranger') };
  const userPub = keygen(keys.user);
  const bobPub = keygen(keys.bob);
  keygen(keys.stranger);
  const user = userInfo().username;
  writeFileSync(
    join(dataDir, 'users.yaml'),
    `users:\n  - name: ${user}\n    authorizedKeys: [${JSON.stringify(userPub)}]\n` +
      `  - name: bob\n    shell: /bin/bash\n    authorizedKeys: [${JSON.stringify(bobPub)}]\n`,
  );
  if (o.blueprints)
    writeFileSync(join(dataDir, 'blueprints.yaml'), `blueprints: [${o.blueprints.join(', ')}]\n`);
  // The services' own logs (this process) go to a file, apart from the gateway's stdout.
  initLogging({ destination: createWriteStream(dir.join('services.log')) });

  const pki = o.tls ? makePki(dir.join('pki'), 'services') : undefined;
  let tokenFile: string | undefined;
  if (o.tokens) {
    tokenFile = dir.join('service.token');
    writeFileSync(tokenFile, `prod-e2e-${process.pid}-${Date.now()}\n`, { mode: 0o600 });
  }
  const tls = pki ? { certFile: pki.cert, keyFile: pki.key } : undefined;
  const identity = await startLocalIdentity({ dataDir, homeDir: home, tokenFile, tls });
  const provisioner = await startLocalProvisioner({
    dataDir,
    agentCommand: [AGENT],
    agentTokenFile: tokenFile,
    tokenFile,
    tls,
  });
  const sessions = await startLocalSessionService({ dataDir: join(dataDir, 'sessions-svc'), tokenFile });
  const policy = o.policy ? await startLocalPolicy({ dataDir, tokenFile }) : undefined;

  const client = (address: string, withTls: boolean) => ({
    address,
    ...(tokenFile ? { tokenFilePath: tokenFile } : {}),
    ...(withTls && pki ? { caCertPath: pki.ca, serverName: 'localhost' } : {}),
  });
  return {
    dir,
    dataDir,
    user,
    keys,
    identity,
    provisioner,
    sessions,
    policy,
    pki,
    tokenFile,
    config(port, extra = {}) {
      const base: Record<string, Record<string, unknown>> = {
        server: {
          port,
          bindAddress: '127.0.0.1',
          serverKey: hostKey(dir),
          SSHHandshakeTimeout: 30,
          sftpBinary: '/usr/lib/openssh/sftp-server',
          drainTimeout: 20,
        },
        identity: client(identity.address, true),
        provisioner: client(provisioner.address, true),
        session: client(sessions.address, false),
        ...(policy ? { authz: client(policy.address, false) } : {}),
        k8shelld: tokenFile ? { tokenFilePath: tokenFile } : {},
      };
      for (const [k, v] of Object.entries(extra)) base[k] = { ...(base[k] ?? {}), ...v };
      return base;
    },
    storedSessions: () => [...sessions.store.sessions.values()],
    async stop() {
      await provisioner.close();
      await identity.close();
      await sessions.close();
      await policy?.close();
      if (!process.env.KEEP_E2E) dir.cleanup();
    },
  };
}

/** The gateway's host key (ed25519), made once per services dir. */
function hostKey(dir: TempDir): string {
  const p = dir.join('ssh_host_ed25519_key');
  if (!existsSync(p)) keygen(p);
  return p;
}

export function writeConfig(dir: TempDir, name: string, config: Record<string, unknown>): string {
  const file = dir.join(name);
  writeFileSync(file, stringify(config));
  return file;
}

// --- the gateway process ---

export interface LogLine {
  msg: string;
  pid: number;
  level: number;
  component?: string;
  conn?: string;
  [k: string]: unknown;
}

/** Every process a GatewayProcess ever saw (parent and forked children), killed in `killAll`. */
const spawned = new Set<number>();

export class GatewayProcess {
  readonly lines: LogLine[] = [];
  /** Lines of stdout that are not JSON (should stay empty). */
  readonly other: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';
  port = 0;
  private buf = '';

  private constructor(
    readonly proc: ChildProcess,
    readonly configPath: string,
  ) {
    spawned.add(proc.pid ?? 0);
    proc.stdout?.on('data', (d: Buffer) => this.onData(d.toString()));
    proc.stderr?.on('data', (d: Buffer) => {
      if (this.stderr.length < 100_000) this.stderr += d.toString();
    });
    this.exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  }

  /** Starts `node dist/cli/ssh-proxy.js --config <file>` and waits until it listens. */
  static async start(configPath: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess> {
    const g = GatewayProcess.spawn(configPath, env);
    await g.listening();
    return g;
  }

  /** Starts the process without waiting for anything. */
  static spawn(configPath: string, env: NodeJS.ProcessEnv = {}): GatewayProcess {
    const proc = spawn(process.execPath, [ENTRY, '--config', configPath], {
      cwd: REPO,
      env: { ...process.env, LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new GatewayProcess(proc, configPath);
  }

  /** Waits for the `SSH proxy server listening` line and returns the port. */
  async listening(timeoutMs = 60_000): Promise<number> {
    const l = await this.waitLog(
      (l) => l.msg === 'SSH proxy server listening' && l.pid === this.pid,
      'the gateway to listen',
      timeoutMs,
    );
    this.port = Number(String(l.address).split(':').pop());
    return this.port;
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  private onData(s: string): void {
    this.buf += s;
    let nl;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const raw = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (!raw.trim()) continue;
      try {
        const l = JSON.parse(raw) as LogLine;
        if (typeof l.pid === 'number') spawned.add(l.pid);
        this.lines.push(l);
      } catch {
        this.other.push(raw);
      }
    }
  }

  /** The first line matching `pred` (searching from line `from`), waiting for it. */
  async waitLog(pred: (l: LogLine) => boolean, what: string, timeoutMs = 30_000, from = 0): Promise<LogLine> {
    try {
      return await waitFor(
        () => {
          const l = this.lines.slice(from).find(pred);
          if (l) return l;
          if (this.proc.exitCode !== null || this.proc.signalCode !== null)
            throw new Error(`the gateway exited (${this.proc.exitCode ?? this.proc.signalCode})`);
          return undefined;
        },
        { timeoutMs, intervalMs: 25, what },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; log tail:\n${this.tail()}`);
    }
  }

  find(pred: (l: LogLine) => boolean): LogLine[] {
    return this.lines.filter(pred);
  }

  tail(n = 15): string {
    return [...this.lines.slice(-n).map((l) => JSON.stringify(l)), this.stderr.slice(-2000)].join('\n');
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }

  /** SIGTERM; SIGKILL after `graceMs`. */
  async stop(graceMs = 30_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Kills every gateway process and forked child these tests started that is still alive. */
export function killAll(): void {
  for (const pid of spawned) {
    if (pid > 0 && pid !== process.pid && pidAlive(pid) && isOurs(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }
}

/** The pid still runs our entry (pids are reused; never kill somebody else's process). */
function isOurs(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(ENTRY);
  } catch {
    return false;
  }
}

/** Processes whose parent is `ppid` (from /proc). */
export function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === ppid) out.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Resident memory of a process in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

// --- the OpenSSH client ---

export interface ClientOptions {
  key?: string;
  /** Source address (ssh -b), e.g. 127.0.0.2. */
  bind?: string;
  logLevel?: string;
  extra?: string[];
}

/** ssh options isolated from the user's config, for `port`. */
export function sshArgs(s: ProdServices, port: number, o: ClientOptions = {}): string[] {
  return [
    '-F',
    '/dev/null',
    '-p',
    String(port),
    ...(o.bind ? ['-b', o.bind] : []),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    `LogLevel=${o.logLevel ?? 'ERROR'}`,
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'ConnectTimeout=30',
    '-i',
    o.key ?? s.keys.user,
    ...(o.extra ?? []),
  ];
}

/** Runs `ssh … <login>@127.0.0.1 args…` to completion. */
export function ssh(
  s: ProdServices,
  port: number,
  login: string,
  args: string[],
  o: ClientOptions & RunOptions = {},
): Promise<RunResult> {
  return run('ssh', [...sshArgs(s, port, o), `${login}@127.0.0.1`, ...args], { timeoutMs: 90_000, ...o });
}

// --- HTTP (metrics and health) ---

/** GET on loopback with a deadline; resolves status and body. */
export function httpGet(url: string, timeoutMs = 15_000): Promise<{ status: number; body: string }> {
  return fetch(url, { signal: AbortSignal.timeout(timeoutMs) }).then(async (r) => ({
    status: r.status,
    body: await r.text(),
  }));
}
