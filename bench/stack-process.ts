// Child process hosting the local stack (gateway + local identity + local provisioner) for the bench, so the
// gateway's CPU and memory are one pid of their own. Prints one JSON line {"port","pid"} when ready and stops
// when its stdin closes (the bench ended or died) or on SIGTERM.
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { errText, initLogging } from '../src/ops/log.js';
import { startLocalStack } from '../src/local/stack.js';

const REPO = resolve(new URL('..', import.meta.url).pathname);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      home: { type: 'string' },
      log: { type: 'string' },
      'tsx-agent': { type: 'boolean', default: false },
      // Record exec and -L (pcapng) channels to the session service at this address (bench/session-sink.ts).
      'record-to': { type: 'string' },
    },
    strict: true,
  });
  const dataDir = values['data-dir'];
  const home = values.home;
  if (!dataDir || !home || !values.log) throw new Error('--data-dir, --home and --log are required');
  initLogging({ destination: createWriteStream(values.log) });
  const recordTo = values['record-to'];
  const stack = await startLocalStack({
    listen: '127.0.0.1:0',
    dataDir,
    homeDir: home,
    agentCommand: [
      ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ...(values['tsx-agent']
        ? ['--import', 'tsx', join(REPO, 'src/cli/agent.ts')]
        : [join(REPO, 'dist/cli/agent.js')]),
    ],
    override: (cfg) => {
      cfg.server.sftpBinary = '/usr/lib/openssh/sftp-server';
      // Same admission limit as the baseline sshd (MaxStartups 2000).
      cfg.server.maxStartups = 2000;
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
  process.stdin.on('end', () => void stop());
  process.stdin.resume();
  process.stdout.write(
    `${JSON.stringify({
      port: stack.gateway.port,
      pid: process.pid,
      // For gateways started beside this one (the process-model scenario).
      identity: stack.identity.address,
      provisioner: stack.provisioner.address,
      tokenFiles: stack.tokens.files,
    })}\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`bench stack: ${errText(e)}\n`);
  process.exit(1);
});
