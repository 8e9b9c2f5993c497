// Child process hosting the local stack (gateway + local identity + local provisioner) for the bench, so the
// gateway's CPU and memory are one pid of their own. Prints one JSON line {"port","pid",…} when ready and
// stops when its stdin closes (the bench ended or died) or on SIGTERM. A line `stats` on stdin is answered
// with one JSON line {"stats":{…}}: memory after a forced GC (the process runs with --expose-gc) and the
// counts of live handles and timers, so the aging scenario can see what a gateway accumulates.
//
// `--dist DIR` loads the stack and the agent from a built tree (DIR = some checkout's dist/): the bench's
// own build, or another checkout's for the A/B baseline (`npm run bench -- --baseline DIR`). Without it the
// stack runs from src/ through tsx (the smoke test, which does not build).
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type * as LogModule from '../src/ops/log.js';
import type * as StackModule from '../src/local/stack.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

/** What `stats` reports; every field a number (counts keyed `resource:<type>`). */
export type StackStats = {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
} & Record<string, number>;

function readStats(stack: StackModule.LocalStack): StackStats {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  const out: StackStats = {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    connections: stack.gateway.connections(),
    liveConnections: stack.gateway.registry.size,
  };
  for (const r of process.getActiveResourcesInfo()) out[`resource:${r}`] = (out[`resource:${r}`] ?? 0) + 1;
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      home: { type: 'string' },
      log: { type: 'string' },
      dist: { type: 'string' },
      // Record exec and -L (pcapng) channels to the session service at this address (bench/session-sink.ts).
      'record-to': { type: 'string' },
    },
    strict: true,
  });
  const dataDir = values['data-dir'];
  const home = values.home;
  if (!dataDir || !home || !values.log) throw new Error('--data-dir, --home and --log are required');
  // The logger must be the stack's own module instance, so both come from the same tree.
  const dist = values.dist ? resolve(values.dist) : undefined;
  const from = (rel: string) =>
    dist ? pathToFileURL(join(dist, `${rel}.js`)).href : pathToFileURL(join(REPO, 'src', `${rel}.ts`)).href;
  const logMod = (await import(from('ops/log'))) as typeof LogModule;
  const stackMod = (await import(from('local/stack'))) as typeof StackModule;
  logMod.initLogging({ destination: createWriteStream(values.log) });
  const recordTo = values['record-to'];
  const stack = await stackMod.startLocalStack({
    listen: '127.0.0.1:0',
    dataDir,
    homeDir: home,
    agentCommand: [
      ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ...(dist ? [join(dist, 'cli/agent.js')] : ['--import', 'tsx', join(REPO, 'src/cli/agent.ts')]),
    ],
    override: (cfg) => {
      cfg.server.sftpBinary = '/usr/lib/openssh/sftp-server';
      // Same admission limit as the baseline sshd (MaxStartups 2000); every bench client comes from
      // 127.0.0.1, so the per-source limit (default 10) would refuse the session and rate scenarios.
      cfg.server.maxStartups = 2000;
      cfg.server.maxStartupsPerSource = 2000;
      if (recordTo) {
        cfg.session.address = recordTo;
        cfg.server.recording.recordExec = true;
        cfg.server.recording.recordDirectTCPIP = true;
        cfg.server.recording.directTCPIP.format = 'pcapng';
      }
    },
  });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await stack.stop();
    })().then(
      () => process.exit(0),
      () => process.exit(1),
    ));
  process.once('SIGTERM', () => void stop());
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (l) => {
    if (l.trim() === 'stats') process.stdout.write(`${JSON.stringify({ stats: readStats(stack) })}\n`);
  });
  lines.on('close', () => void stop());
  process.stdout.write(
    `${JSON.stringify({
      port: stack.gateway.port,
      pid: process.pid,
      // For gateways started beside this one (the process-model scenario).
      identity: stack.identity.address,
      provisioner: stack.provisioner.address,
      authz: stack.policy.address,
      session: stack.sessions.address,
      tokenFiles: stack.tokens.files,
    })}\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`bench stack: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
