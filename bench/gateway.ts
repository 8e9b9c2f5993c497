// Starts the local stack in its own process (bench/stack-process.ts) with the bench key authorised.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { BenchEnv } from './env.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

export interface RunningGateway {
  port: number;
  /** The stack process: gateway, local identity and local provisioner (the latter two idle while measuring). */
  pid: number;
  logFile: string;
  /** Addresses of the stack's identity and provisioner, for further gateways against the same services. */
  services: { identity: string; provisioner: string };
  stop(): Promise<void>;
}

export interface GatewayVariant {
  /** Record exec and -L channels into a local session service (stack-process --record). */
  record?: boolean;
}

export async function startGateway(
  env: BenchEnv,
  tsxAgent: boolean,
  variant: GatewayVariant = {},
): Promise<RunningGateway> {
  if (!tsxAgent && !existsSync(join(REPO, 'dist/cli/agent.js')))
    throw new Error('dist/cli/agent.js is missing: run "npm run build" first (npm run bench does)');
  const name = variant.record ? 'gateway-recorded' : 'gateway';
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
    '--import',
    'tsx',
    join(REPO, 'bench/stack-process.ts'),
    '--data-dir',
    dataDir,
    '--home',
    home,
  ];
  args.push('--log', logFile);
  if (tsxAgent) args.push('--tsx-agent');
  if (variant.record) args.push('--record');
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: REPO });
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
  const ready = new Promise<Omit<RunningGateway, 'logFile' | 'stop'>>((resolveReady, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (l) => {
      try {
        const v = JSON.parse(l) as {
          port?: unknown;
          pid?: unknown;
          identity?: unknown;
          provisioner?: unknown;
        };
        if (
          typeof v.port !== 'number' ||
          typeof v.pid !== 'number' ||
          typeof v.identity !== 'string' ||
          typeof v.provisioner !== 'string'
        )
          throw new Error(`bad ready line: ${l}`);
        resolveReady({
          port: v.port,
          pid: v.pid,
          services: { identity: v.identity, provisioner: v.provisioner },
        });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    void exit.then(() => reject(new Error(`the stack process exited before it was ready: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error('the stack process was not ready within 60 s')), 60_000).unref();
  });
  try {
    const r = await ready;
    return { ...r, logFile, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
