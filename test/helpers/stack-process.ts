// Runs the local stack in a process of its own (for suites that measure or signal the gateway's
// process): `node --import tsx test/helpers/stack-process.ts <json options>`. Prints one JSON line
// {port, pid, tokens, identity, provisioner, policy, sessions} once listening; stops on SIGTERM.
import { createWriteStream } from 'node:fs';
import { initLogging } from '../../src/ops/log.js';
import { startLocalStack } from '../../src/local/stack.js';
import { AGENT_COMMAND } from '../e2e/harness.js';

interface Options {
  dataDir: string;
  homeDir: string;
  logFile: string;
  nats?: boolean;
  maxWorkspacesPerUser?: number;
  /** Config overrides as dotted paths, e.g. {"server.maxSessions": 10}. */
  set?: Record<string, unknown>;
}

const o = JSON.parse(process.argv[2] ?? '{}') as Options;
initLogging({ destination: createWriteStream(o.logFile, { flags: 'a' }) });
const stack = await startLocalStack({
  listen: '127.0.0.1:0',
  dataDir: o.dataDir,
  homeDir: o.homeDir,
  agentCommand: AGENT_COMMAND,
  nats: o.nats,
  maxWorkspacesPerUser: o.maxWorkspacesPerUser ?? 200,
  override: (cfg) => {
    cfg.server.sftpBinary = '/usr/lib/openssh/sftp-server';
    for (const [path, value] of Object.entries(o.set ?? {})) {
      const keys = path.split('.');
      let node = cfg as unknown as Record<string, unknown>;
      for (const k of keys.slice(0, -1)) node = node[k] as Record<string, unknown>;
      node[keys[keys.length - 1] ?? ''] = value;
    }
  },
});
process.stdout.write(
  `${JSON.stringify({
    port: stack.gateway.port,
    pid: process.pid,
    tokens: stack.tokens.files,
    identity: stack.identity.address,
    provisioner: stack.provisioner.address,
    policy: stack.policy.address,
    sessions: stack.sessions.address,
    nats: stack.nats?.url,
  })}\n`,
);
const stop = () => void stack.stop().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
