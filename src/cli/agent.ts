#!/usr/bin/env node
// ssh-proxy-agent: the workspace agent daemon (k8shelld-compatible gRPC server).
import { renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startAgent } from '../agent/server.js';
import { reapSessions, useSessionRegistry } from '../agent/session-registry.js';
import { errText, getLogger, initLogging } from '../ops/log.js';
import { startMemoryTrimmer } from '../ops/native-memory.js';
import { tuneHeap } from '../ops/heap-tuning.js';
import { COMMIT, VERSION } from '../ops/version.js';

const USAGE = `usage: ssh-proxy-agent [options]

  --listen ADDR       host:port or unix:/path to serve on (default 127.0.0.1:2822)
  --token-file F      require "authorization: Bearer <content of F>" on every call
  --home DIR          working directory and HOME for sessions of the default user
  --ready-file F      write the real listen address into F once listening
  --user NAME         the workspace's user: sessions with an empty as_user run as NAME
  --sudo yes|no       whether that user may run as other users (root included); with --user the
                      default is no
  --workspace NAME    the workspace's name, reported in the Handshake so a gateway can verify it
  --exit-with-parent  stop (killing every session) when the process that started the agent is gone
  --session-registry DIR
                      record live sessions in DIR, so the parent can kill them if the agent dies;
                      sessions left there by an earlier run are killed at start
  --logtext           human-readable logs instead of JSON
  -v                  print the version and exit
  -h                  print this help and exit
`;

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', default: '127.0.0.1:2822' },
      'token-file': { type: 'string' },
      home: { type: 'string' },
      'ready-file': { type: 'string' },
      user: { type: 'string' },
      sudo: { type: 'string' },
      workspace: { type: 'string' },
      'session-registry': { type: 'string' },
      'exit-with-parent': { type: 'boolean', default: false },
      logtext: { type: 'boolean', default: false },
      v: { type: 'boolean', short: 'v', default: false },
      h: { type: 'boolean', short: 'h', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }).values;
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`ssh-proxy-agent: ${errText(err)}\n${USAGE}`);
    process.exit(2);
  }
  if (args.h || args.help) {
    process.stderr.write(USAGE);
    process.exit(0);
  }
  if (args.v) {
    process.stdout.write(`ssh-proxy-agent version: ${VERSION} (commit: ${COMMIT})\n`);
    process.exit(0);
  }
  const sudoArg = args.sudo;
  if (sudoArg !== undefined && sudoArg !== 'yes' && sudoArg !== 'no') {
    process.stderr.write(`ssh-proxy-agent: --sudo expects yes or no, got "${sudoArg}"\n${USAGE}`);
    process.exit(2);
  }
  const sudo = sudoArg !== undefined ? sudoArg === 'yes' : args.user !== undefined ? false : undefined;
  initLogging({ text: args.logtext });
  const log = getLogger('agent');
  const registry = args['session-registry'];
  if (registry) {
    const left = reapSessions(registry);
    if (left) log.warn({ killed: left }, 'killed processes left by an earlier run of this agent');
    useSessionRegistry(registry);
  }
  const agent = await startAgent({
    listen: args.listen,
    tokenFile: args['token-file'],
    home: args.home,
    defaultUser: args.user,
    sudo,
    workspaceName: args.workspace,
    logger: log,
  });
  startMemoryTrimmer({ log: getLogger('memory') });
  tuneHeap();
  const ready = args['ready-file'];
  if (ready) {
    // Write then rename, so a reader never sees a partial address.
    writeFileSync(`${ready}.tmp`, `${agent.address}\n`);
    renameSync(`${ready}.tmp`, ready);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    agent.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: errText(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  if (args['exit-with-parent']) {
    // A parent that died (even by SIGKILL) leaves us re-parented: then nobody manages this workspace.
    const parent = process.ppid;
    setInterval(() => {
      if (process.ppid !== parent) stop('parent exited');
    }, 1000).unref();
  }
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  getLogger('agent').error({ err: errText(err) }, 'agent failed to start');
  process.exit(1);
});
