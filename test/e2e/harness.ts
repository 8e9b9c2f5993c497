// End-to-end harness: the real local stack (gateway + local identity + local provisioner + real agent
// processes) in a temp dir, driven by the real OpenSSH client.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { initLogging } from '../../src/ops/log.js';
import { startLocalStack, type LocalStack, type LocalStackOptions } from '../../src/local/stack.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

export const REPO = resolve(new URL('../..', import.meta.url).pathname);
export const AGENT_COMMAND = ['--import', 'tsx', join(REPO, 'src/cli/agent.ts')];

export interface E2E {
  stack: LocalStack;
  dir: TempDir;
  port: number;
  /** The OS user running the tests (always known to the local identity). */
  user: string;
  keys: { user: string; bob: string; stranger: string };
  logFile: string;
  stop(): Promise<void>;
}

export interface E2EOptions {
  blueprints?: string[];
  idleTimeoutMs?: number;
  /** server.maxDirectTCPIPConnections of the gateway (default: config/local.yaml's). */
  maxDirectTcpip?: number;
  /** Simulated image pull before each workspace start. */
  pullDelayMs?: number;
  backends?: LocalStackOptions['backends'];
  /** Further config changes (after the harness's own). */
  configure?: LocalStackOptions['override'];
  /** Validity of onboarding codes issued by the local identity (default 600 s). */
  onboardingExpiresInS?: number;
  /** Also run Debian's nats-server (token-protected, like every local service). */
  nats?: boolean;
  /** The local provisioner's per-user workspace cap (default here 64: test files use many). */
  maxWorkspacesPerUser?: number;
}

function keygen(path: string): string {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'e2e', '-f', path]);
  return readFileSync(`${path}.pub`, 'utf8').trim();
}

export async function startE2E(opts: E2EOptions = {}): Promise<E2E> {
  const dir = makeTempDir('spx-e2e-');
  // Run as root, each user's workspace runs as its own OS account, which must reach its home inside.
  if (process.getuid?.() === 0) chmodSync(dir.path, 0o711);
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
  if (opts.blueprints)
    writeFileSync(join(dataDir, 'blueprints.yaml'), `blueprints: [${opts.blueprints.join(', ')}]\n`);
  const logFile = dir.join('stack.log');
  initLogging({ destination: createWriteStream(logFile) });
  const stack = await startLocalStack({
    listen: '127.0.0.1:0',
    dataDir,
    homeDir: home,
    agentCommand: AGENT_COMMAND,
    idleTimeoutMs: opts.idleTimeoutMs,
    pullDelayMs: opts.pullDelayMs,
    backends: opts.backends,
    onboardingExpiresInS: opts.onboardingExpiresInS,
    maxWorkspacesPerUser: opts.maxWorkspacesPerUser ?? 64,
    nats: opts.nats,
    override: (cfg) => {
      cfg.server.sftpBinary = '/usr/lib/openssh/sftp-server';
      if (opts.maxDirectTcpip !== undefined) cfg.server.maxDirectTCPIPConnections = opts.maxDirectTcpip;
      opts.configure?.(cfg);
    },
  });
  return {
    stack,
    dir,
    port: stack.gateway.port,
    user,
    keys,
    logFile,
    async stop() {
      await stack.stop();
      if (!process.env.KEEP_E2E) dir.cleanup();
    },
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface SshOptions {
  key?: string;
  input?: Buffer | string;
  /** Extra ssh options, placed before the destination. */
  options?: string[];
  timeoutMs?: number;
}

export interface SshArgOptions {
  /** A real ssh-agent socket for authentication and -A; default none. */
  agentSock?: string;
  logLevel?: string;
}

/** Options that isolate the client from the user's config (in ssh the first -o of a kind wins). */
export function sshBaseArgs(e: E2E, key: string, o: SshArgOptions = {}): string[] {
  return [
    '-F',
    '/dev/null',
    '-p',
    String(e.port),
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
    `IdentityAgent=${o.agentSock ?? 'none'}`,
    '-i',
    key,
  ];
}

/** The same client options for sftp and scp, which spell the port flag -P. */
export function copyToolArgs(e: E2E, key: string): string[] {
  return sshBaseArgs(e, key).map((a) => (a === '-p' ? '-P' : a));
}

/** Runs `ssh … login@127.0.0.1 args…` to completion. */
export function ssh(e: E2E, login: string, args: string[], o: SshOptions = {}): Promise<RunResult> {
  const argv = [...sshBaseArgs(e, o.key ?? e.keys.user), ...(o.options ?? []), `${login}@127.0.0.1`, ...args];
  return run('ssh', argv, o);
}

export interface RunOptions {
  input?: Buffer | string;
  timeoutMs?: number;
  cwd?: string;
  /** Merged over this process's environment. */
  env?: NodeJS.ProcessEnv;
}

/** Runs any command to completion with a deadline (the process is killed when it passes). */
export function run(cmd: string, argv: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, argv, {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: o.cwd,
      env: { ...process.env, ...o.env },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `${cmd} ${argv.slice(-3).join(' ')} did not finish within ${o.timeoutMs ?? 60000} ms; stderr: ${Buffer.concat(err).toString()}`,
        ),
      );
    }, o.timeoutMs ?? 60000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on('error', () => undefined);
    if (o.input !== undefined) child.stdin.end(o.input);
    else child.stdin.end();
  });
}

/** Stops the local identity service (the gateway keeps running). */
export async function identityDown(e: E2E): Promise<string> {
  const address = e.stack.identity.address;
  await e.stack.identity.close();
  return address;
}

/** Starts the local identity service again on the same address. */
export async function identityUp(e: E2E, address: string): Promise<void> {
  const { startLocalIdentity } = await import('../../src/local/identity.js');
  e.stack.identity = await startLocalIdentity({
    dataDir: e.dir.join('data'),
    homeDir: e.dir.join('home'),
    listen: address,
    tokenFile: e.stack.tokens.files.identity,
    onboarding: { web: e.stack.web },
  });
}
