#!/usr/bin/env node
// `ssh-proxy`: the gateway's entry point (reference-behaviour.md §1). Parses flags, loads the config,
// and runs one of three modes: the in-process server (default), the forking parent
// (`server.forking: true`: one child process per connection), or such a child (`--child`, the
// client socket on fd 3). Heavy modules are loaded only by the mode that needs them.
import { parseArgs } from './args.js';
import { loadConfig, type Config } from '../config/load.js';
import { errText, getLogger, initLogging } from '../ops/log.js';
import { installProcessGuards } from '../ops/process-guards.js';
import { tuneHeap } from '../ops/heap-tuning.js';

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
  installProcessGuards(log);
  tuneHeap();

  let config: Config;
  try {
    const loaded = await loadConfig(args.configPath);
    config = loaded.config;
    for (const w of loaded.warnings) log.warn({ configPath: args.configPath }, `Configuration warning: ${w}`);
  } catch (err) {
    log.error(
      args.child
        ? `Error handling connection in the child process: ${errText(err)}`
        : `Failed to create server: ${errText(err)}`,
    );
    process.exit(1);
  }

  const cli = { configPath: args.configPath, logtext: args.logtext };
  if (args.child) {
    const { runChildMode } = await import('./mode-child.js');
    return runChildMode(config, log);
  }
  if (config.server.forking) {
    const { runForkingParent } = await import('./mode-forking.js');
    return runForkingParent(config, cli, log);
  }
  const { runServerMode } = await import('./mode-server.js');
  return runServerMode(config, log);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`ssh-proxy: ${errText(err)}\n`);
  process.exit(1);
});
