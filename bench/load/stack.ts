// The local stack in a process of its own (test/helpers/stack-process.ts), with a fresh data dir and a
// client key for the OS user, for suites that measure the gateway's process or signal it.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { makeTempDir, type TempDir } from '../../test/helpers/tmp.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);

export interface StackInfo {
  port: number;
  pid: number;
  tokens: Record<string, string>;
  identity: string;
  provisioner: string;
  policy: string;
  sessions: string;
  nats?: string;
}

export interface StackProcess {
  info: StackInfo;
  dir: TempDir;
  user: string;
  key: string;
  child: ChildProcess;
  logFile: string;
  /** VmRSS of the stack process (gateway + local services, not the agents) in bytes. */
  rss(): number;
  stop(): Promise<void>;
}

export async function startStackProcess(
  opts: { set?: Record<string, unknown>; nats?: boolean; users?: string } = {},
): Promise<StackProcess> {
  const dir = makeTempDir('spx-stk-');
  if (process.getuid?.() === 0) chmodSync(dir.path, 0o711);
  const home = dir.join('home');
  mkdirSync(join(home, '.ssh'), { recursive: true });
  const key = dir.join('id_user');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'suite', '-f', key]);
  writeFileSync(join(home, '.ssh', 'authorized_keys'), readFileSync(`${key}.pub`));
  const dataDir = dir.join('data');
  mkdirSync(dataDir, { recursive: true });
  if (opts.users) writeFileSync(join(dataDir, 'users.yaml'), opts.users);
  const logFile = dir.join('stack.log');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(REPO, 'test/helpers/stack-process.ts'),
      JSON.stringify({ dataDir, homeDir: home, logFile, set: opts.set, nats: opts.nats }),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  if (process.env.LOAD_STDERR_FILE) child.stderr?.pipe(createWriteStream(process.env.LOAD_STDERR_FILE));
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  const info = await new Promise<StackInfo>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`stack did not start: ${err}`)), 120_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line && out.includes('\n')) {
        clearTimeout(timer);
        res(JSON.parse(line) as StackInfo);
      }
    });
    child.once('exit', (c) => {
      clearTimeout(timer);
      rej(new Error(`stack exited (${c}) before it was ready: ${err}`));
    });
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    info,
    dir,
    user: userInfo().username,
    key,
    child,
    logFile,
    rss: () => rssOf(info.pid),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      }
      if (!process.env.KEEP_SUITE) dir.cleanup();
    },
  };
}

export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
