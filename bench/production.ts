// The production entry (`node dist/cli/ssh-proxy.js --config <file>`) as its own process, in-process or
// forking mode, against the bench stack's identity and provisioner (so it reaches the same workspace).
import { execFileSync, spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createWriteStream, existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import type { BenchEnv } from './env.js';
import type { BenchServices } from './gateway.js';
import { freePort } from './proc.js';
import type { StackStats } from './stack-process.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

export type ProcessModel = 'in-process' | 'forking';

export interface ProductionGateway {
  model: ProcessModel;
  port: number;
  /** The gateway process (forking: the parent; its children are the connections). */
  pid: number;
  logFile: string;
  /** With `stats`: memory after a forced GC and live handle counts (bench/stats-hook.mjs). */
  stats(): Promise<StackStats>;
  stop(): Promise<void>;
}

export interface ProductionOptions {
  model: ProcessModel;
  services: BenchServices;
  /** Run src/ through tsx instead of dist/ (the smoke test does not build). */
  tsx: boolean;
  /** Run this built tree's entry instead (another checkout's dist/: the A/B baseline). */
  dist?: string;
  /** Also use the stack's policy (authz) and session services, as a production gateway would. */
  tracking?: boolean;
  /** Load bench/stats-hook.mjs (IPC, --expose-gc) so `stats()` works; in-process mode only. */
  stats?: boolean;
  /** Names the config and log files (default the model). */
  name?: string;
  /** Environment on top of the bench's (--gateway-env). */
  env?: Record<string, string>;
}

function hostKey(env: BenchEnv): string {
  const p = join(env.dir, 'production_host_ed25519_key');
  if (!existsSync(p)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', p]);
  return p;
}

export async function startProduction(env: BenchEnv, o: ProductionOptions): Promise<ProductionGateway> {
  const tsx = o.tsx && !o.dist;
  const entry = tsx
    ? join(REPO, 'src/cli/ssh-proxy.ts')
    : join(o.dist ?? join(REPO, 'dist'), 'cli/ssh-proxy.js');
  if (!tsx && !existsSync(entry))
    throw new Error(`${entry} is missing: run "npm run build" first (npm run bench does)`);
  const port = await freePort();
  const name = o.name ?? o.model;
  const config = join(env.dir, `production-${name}.yaml`);
  const s = o.services;
  writeFileSync(
    config,
    stringify({
      server: {
        port,
        bindAddress: '127.0.0.1',
        serverKey: hostKey(env),
        forking: o.model === 'forking',
        sftpBinary: '/usr/lib/openssh/sftp-server',
        // Same admission limits as the baseline sshd (MaxStartups 2000).
        maxStartups: 2000,
        maxStartupsPerSource: 2000,
        maxChildren: 2000,
      },
      // The stack's services want this run's tokens (docs/security.md).
      identity: { address: s.identity, tokenFilePath: s.tokenFiles.identity },
      provisioner: { address: s.provisioner, tokenFilePath: s.tokenFiles.provisioner },
      k8shelld: { tokenFilePath: s.tokenFiles.agent },
      ...(o.tracking
        ? {
            authz: { address: s.authz, tokenFilePath: s.tokenFiles.authz },
            session: { address: s.session, tokenFilePath: s.tokenFiles.session },
          }
        : {}),
    }),
  );
  const logFile = join(env.dir, `production-${name}.log`);
  const log = createWriteStream(logFile);
  const hook = o.stats
    ? ['--expose-gc', '--expose-internals', '--import', join(REPO, 'bench/stats-hook.mjs')]
    : [];
  // BENCH_PROFILE=DIR: a V8 CPU profile of this gateway lands in DIR when it exits (as bench/gateway.ts).
  // BENCH_NODE_FLAGS="--trace-gc ...": Node/V8 flags for this gateway (its log then carries the output).
  const profile = process.env.BENCH_PROFILE
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`]
    : [];
  const nodeFlags = process.env.BENCH_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  const child = spawn(
    process.execPath,
    [...hook, ...profile, ...nodeFlags, ...(tsx ? ['--import', 'tsx'] : []), entry, '--config', config],
    {
      cwd: REPO,
      env: { ...process.env, ...o.env },
      stdio: o.stats ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    },
  ) as ChildProcessByStdio<null, Readable, Readable>;
  child.stderr.pipe(log);
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  child.once('error', () => undefined);
  const ready = new Promise<void>((resolveReady, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (l) => {
      log.write(`${l}\n`);
      if (l.includes('"SSH proxy server listening"')) resolveReady();
    });
    void exit.then(() => reject(new Error(`the ${o.model} gateway exited at start (log ${logFile})`)));
    setTimeout(() => reject(new Error(`the ${o.model} gateway did not listen within 60 s`)), 60_000).unref();
  });
  // The second signal of the forking parent ends it at once; the children are ended with it.
  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exit;
    clearTimeout(t);
    log.end();
  };
  try {
    await ready;
  } catch (e) {
    await stop();
    throw e;
  }
  let queue: Promise<unknown> = Promise.resolve();
  const stats = (): Promise<StackStats> => {
    if (!o.stats) return Promise.reject(new Error(`the ${name} gateway was started without the stats hook`));
    const next = queue.then(
      () =>
        new Promise<StackStats>((resolveStats, reject) => {
          const onMessage = (m: unknown) => {
            const v = (m as { stats?: StackStats } | null)?.stats;
            if (!v) return;
            clearTimeout(t);
            child.off('message', onMessage);
            resolveStats(v);
          };
          const t = setTimeout(() => {
            child.off('message', onMessage);
            reject(new Error(`the ${name} gateway did not answer stats within 30 s`));
          }, 30_000);
          child.on('message', onMessage);
          child.send('stats');
        }),
    );
    queue = next.catch(() => undefined);
    return next;
  };
  return { model: o.model, port, pid: child.pid ?? 0, logFile, stats, stop };
}
