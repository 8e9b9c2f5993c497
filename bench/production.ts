// The production entry (`node dist/cli/ssh-proxy.js --config <file>`) as its own process, in-process or
// forking mode, against the bench stack's identity and provisioner (so it reaches the same workspace).
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import type { BenchEnv } from './env.js';
import type { BenchServices } from './gateway.js';
import { freePort } from './proc.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

export type ProcessModel = 'in-process' | 'forking';

export interface ProductionGateway {
  model: ProcessModel;
  port: number;
  /** The gateway process (forking: the parent; its children are the connections). */
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

export interface ProductionOptions {
  model: ProcessModel;
  services: BenchServices;
  /** Run src/ through tsx instead of dist/ (the smoke test does not build). */
  tsx: boolean;
}

function hostKey(env: BenchEnv): string {
  const p = join(env.dir, 'production_host_ed25519_key');
  if (!existsSync(p)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', p]);
  return p;
}

export async function startProduction(env: BenchEnv, o: ProductionOptions): Promise<ProductionGateway> {
  const entry = o.tsx ? join(REPO, 'src/cli/ssh-proxy.ts') : join(REPO, 'dist/cli/ssh-proxy.js');
  if (!o.tsx && !existsSync(entry))
    throw new Error(`${entry} is missing: run "npm run build" first (npm run bench does)`);
  const port = await freePort();
  const config = join(env.dir, `production-${o.model}.yaml`);
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
      identity: { address: o.services.identity, tokenFilePath: o.services.tokenFiles.identity },
      provisioner: { address: o.services.provisioner, tokenFilePath: o.services.tokenFiles.provisioner },
      k8shelld: { tokenFilePath: o.services.tokenFiles.agent },
    }),
  );
  const logFile = join(env.dir, `production-${o.model}.log`);
  const log = createWriteStream(logFile);
  const child = spawn(process.execPath, [...(o.tsx ? ['--import', 'tsx'] : []), entry, '--config', config], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
  return { model: o.model, port, pid: child.pid ?? 0, logFile, stop };
}
