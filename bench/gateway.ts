// Starts the local stack in its own process (bench/stack-process.ts) with the bench key authorised.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { BenchEnv } from './env.js';
import type { StackStats } from './stack-process.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

export interface RunningGateway {
  port: number;
  /** The stack process: gateway, local identity and local provisioner (the latter two idle while measuring). */
  pid: number;
  logFile: string;
  /** The recorded variant: the session sink it streams to. */
  sink: RunningSink | undefined;
  /** Addresses of the stack's identity and provisioner, for further gateways against the same services. */
  services: BenchServices;
  /** The stack process's memory after a forced GC and its live handle counts (bench/stack-process.ts). */
  stats(): Promise<StackStats>;
  stop(): Promise<void>;
}

/** The stack's services, for further gateways against them; token files per service (docs/security.md). */
export interface BenchServices {
  identity: string;
  provisioner: string;
  /** The local policy (authz) and session services: a gateway using them checks and tracks as in production. */
  authz: string;
  session: string;
  tokenFiles: { identity: string; provisioner: string; agent: string; authz: string; session: string };
}

export interface GatewayVariant {
  /** Record exec and -L channels into a session sink process (bench/session-sink.ts). */
  record?: boolean;
  /**
   * The built tree (a checkout's dist/) the stack and agent run from; default this checkout's dist/, or
   * src/ through tsx with `tsxAgent`. Another checkout's dist/ is the A/B baseline (--baseline).
   */
  dist?: string;
  /** Names the data dir and log file (default `gateway`, `gateway-recorded`). */
  name?: string;
  /** Environment for the stack process and its agents on top of the bench's (--gateway-env). */
  env?: Record<string, string>;
}

export interface RunningSink {
  address: string;
  pid: number;
  /** Totals over the finished recording streams so far. */
  received(): { streams: number; bytes: number; dropped: number };
  stop(): Promise<void>;
}

/** A child process that prints one JSON ready line and stops when its stdin closes. */
function startChild(
  args: string[],
  what: string,
  onLine?: (line: string) => void,
  extraEnv: Record<string, string> = {},
): Promise<{ ready: Record<string, unknown>; send(line: string): void; stop(): Promise<void> }> {
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    cwd: REPO,
    env: { ...process.env, ...extraEnv },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 10_000) stderr += d.toString();
  });
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  child.once('error', () => undefined);
  const stop = async () => {
    if (exited) return;
    child.stdin.end();
    const t1 = setTimeout(() => child.kill('SIGTERM'), 10_000);
    const t2 = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exit;
    clearTimeout(t1);
    clearTimeout(t2);
  };
  const ready = new Promise<Record<string, unknown>>((resolveReady, reject) => {
    const lines = createInterface({ input: child.stdout });
    let first = true;
    lines.on('line', (l) => {
      if (!first) return onLine?.(l);
      first = false;
      try {
        resolveReady(JSON.parse(l) as Record<string, unknown>);
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    void exit.then(() => reject(new Error(`${what} exited before it was ready: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error(`${what} was not ready within 60 s`)), 60_000).unref();
  });
  return ready.then(
    (r) => ({ ready: r, send: (line: string) => void child.stdin.write(`${line}\n`), stop }),
    async (e: unknown) => {
      await stop();
      throw e;
    },
  );
}

/** The session sink of the recorded variant. */
export async function startSink(): Promise<RunningSink> {
  const totals = { streams: 0, bytes: 0, dropped: 0 };
  const c = await startChild(
    ['--import', 'tsx', join(REPO, 'bench/session-sink.ts')],
    'the session sink',
    (l) => {
      const v = JSON.parse(l) as { bytes?: number; dropped?: number };
      totals.streams++;
      totals.bytes += v.bytes ?? 0;
      totals.dropped += v.dropped ?? 0;
    },
  );
  const { address, pid } = c.ready;
  if (typeof address !== 'string' || typeof pid !== 'number')
    throw new Error(`bad sink ready line: ${JSON.stringify(c.ready)}`);
  return { address, pid, received: () => ({ ...totals }), stop: c.stop };
}

export async function startGateway(
  env: BenchEnv,
  tsxAgent: boolean,
  variant: GatewayVariant = {},
): Promise<RunningGateway> {
  const dist = variant.dist ?? (tsxAgent ? undefined : join(REPO, 'dist'));
  if (dist && !existsSync(join(dist, 'cli/agent.js')))
    throw new Error(
      `${dist}/cli/agent.js is missing: run "npm run build" there first (npm run bench does here)`,
    );
  const name = variant.name ?? (variant.record ? 'gateway-recorded' : 'gateway');
  const dataDir = join(env.dir, `${name}-data`);
  const home = join(env.dir, `${name}-home`);
  mkdirSync(join(home, '.ssh'), { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(
    join(dataDir, 'users.yaml'),
    `users:\n  - name: ${env.user}\n    authorizedKeys: [${JSON.stringify(env.publicKey)}]\n`,
  );
  const logFile = join(env.dir, `${name}.log`);
  // BENCH_PROFILE=DIR: V8 CPU profiles of the gateway and agent processes land in DIR.
  const prof = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const args = [
    ...prof,
    // The `stats` request reads memory after a forced collection.
    '--expose-gc',
    '--import',
    'tsx',
    join(REPO, 'bench/stack-process.ts'),
    '--data-dir',
    dataDir,
    '--home',
    home,
  ];
  args.push('--log', logFile);
  if (dist) args.push('--dist', dist);
  const sink = variant.record ? await startSink() : undefined;
  if (sink) args.push('--record-to', sink.address);
  // One `stats` request at a time; its answer is the next `{"stats":…}` line.
  let statsWaiter: ((s: StackStats) => void) | undefined;
  const onLine = (l: string) => {
    let v: { stats?: StackStats };
    try {
      v = JSON.parse(l) as { stats?: StackStats };
    } catch {
      return;
    }
    if (v.stats && statsWaiter) {
      const w = statsWaiter;
      statsWaiter = undefined;
      w(v.stats);
    }
  };
  try {
    const c = await startChild(args, `the ${name} stack process`, onLine, variant.env);
    const { port, pid, identity, provisioner, authz, session, tokenFiles } = c.ready;
    const files = tokenFiles as Partial<BenchServices['tokenFiles']> | undefined;
    if (
      typeof port !== 'number' ||
      typeof pid !== 'number' ||
      typeof identity !== 'string' ||
      typeof provisioner !== 'string' ||
      typeof authz !== 'string' ||
      typeof session !== 'string' ||
      typeof files?.identity !== 'string' ||
      typeof files.provisioner !== 'string' ||
      typeof files.agent !== 'string' ||
      typeof files.authz !== 'string' ||
      typeof files.session !== 'string'
    )
      throw new Error(`bad ready line: ${JSON.stringify(c.ready)}`);
    let queue: Promise<unknown> = Promise.resolve();
    const stats = (): Promise<StackStats> => {
      const next = queue.then(
        () =>
          new Promise<StackStats>((resolveStats, reject) => {
            const t = setTimeout(() => {
              statsWaiter = undefined;
              reject(new Error(`${name}: no stats answer within 30 s`));
            }, 30_000);
            statsWaiter = (s) => {
              clearTimeout(t);
              resolveStats(s);
            };
            c.send('stats');
          }),
      );
      queue = next.catch(() => undefined);
      return next;
    };
    return {
      port,
      pid,
      services: {
        identity,
        provisioner,
        authz,
        session,
        tokenFiles: {
          identity: files.identity,
          provisioner: files.provisioner,
          agent: files.agent,
          authz: files.authz,
          session: files.session,
        },
      },
      logFile,
      sink,
      stats,
      stop: async () => {
        await c.stop();
        await sink?.stop();
      },
    };
  } catch (e) {
    await sink?.stop();
    throw e;
  }
}
