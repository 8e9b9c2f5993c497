#!/usr/bin/env node
// `ssh-proxy`: the gateway's entry point (reference-behaviour.md §1). Parses flags, loads the config,
// starts the gateway and stops it on SIGINT/SIGTERM.
import { parseArgs } from './args.js';
import { loadConfig, type Config } from '../config/load.js';
import { errText, getLogger, initLogging } from '../ops/log.js';

async function main(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv);
  if (args.kind === 'recordings') {
    const { runRecordingsCli } = await import('./recordings.js');
    process.exitCode = await runRecordingsCli(args.argv, { stdout: process.stdout, stderr: process.stderr });
    return;
  }
  if (args.kind === 'exit') {
    if (args.stdout) process.stdout.write(args.stdout);
    if (args.stderr) process.stderr.write(args.stderr);
    process.exit(args.code);
  }

  initLogging({ text: args.logtext });
  const log = getLogger('ssh-proxy');

  let config: Config;
  try {
    const loaded = await loadConfig(args.configPath);
    config = loaded.config;
    for (const w of loaded.warnings) log.warn({ configPath: args.configPath }, `Configuration warning: ${w}`);
  } catch (err) {
    log.error(`Failed to create server: ${errText(err)}`);
    process.exit(1);
  }

  let gw: { stop(): Promise<void> };
  try {
    // Loaded lazily so `-v` and `-h` stay instant.
    const { startGateway } = await import('../gateway/server.js');
    gw = await startGateway(config, {
      configPath: args.configPath,
      child: args.child,
      logtext: args.logtext,
    });
  } catch (err) {
    log.error(
      args.child
        ? `Error handling connection in the child process: ${errText(err)}`
        : `Failed to start server: ${errText(err)}`,
    );
    process.exit(1);
  }

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      // A second signal while draining: the operator wants out now.
      log.warn({ signal }, 'Second shutdown signal, exiting immediately');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'Received shutdown signal, stopping server...');
    gw.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error(`Failed to stop server: ${errText(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`ssh-proxy: ${errText(err)}\n`);
  process.exit(1);
});
