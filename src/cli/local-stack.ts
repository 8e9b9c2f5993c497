#!/usr/bin/env node
// `npm start`: runs the whole system locally and prints the ssh command to connect.
import { parseArgs } from 'node:util';
import { initLogging, getLogger, errText } from '../ops/log.js';
import { startLocalStack } from '../local/stack.js';

const USAGE = `Usage: npm start -- [--listen HOST:PORT] [--web HOST:PORT] [--data-dir DIR] [--config FILE] [--nats] [--logtext]
  --listen    SSH listen address (default 127.0.0.1:2222)
  --web       address of the local web pages: onboarding approval, sessions (default 127.0.0.1:2280)
  --data-dir  where host key, users.yaml, policy.yaml, workspaces and recordings live (default ./.ssh-proxy)
  --config    gateway configuration with the local stack's \${LOCAL_…} variables (default config/local.yaml;
              copy it to turn on server.recording.* and other settings)
  --nats      also run Debian's nats-server (user locks, recording overrides, failed-login events)
  --max-workspaces-per-user N
              workspaces one user may have in the local provisioner (default 10)
  --logtext   human-readable logs
`;

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        listen: { type: 'string', default: '127.0.0.1:2222' },
        web: { type: 'string', default: '127.0.0.1:2280' },
        'data-dir': { type: 'string', default: './.ssh-proxy' },
        config: { type: 'string' },
        nats: { type: 'boolean', default: false },
        'max-workspaces-per-user': { type: 'string' },
        logtext: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`${errText(e)}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stderr.write(USAGE);
    process.exit(0);
  }
  const perUserText = values['max-workspaces-per-user'];
  const perUser = perUserText === undefined ? undefined : Number(perUserText);
  if (perUser !== undefined && (!Number.isInteger(perUser) || perUser < 1)) {
    process.stderr.write(`--max-workspaces-per-user expects a whole number ≥ 1\n${USAGE}`);
    process.exit(2);
  }
  initLogging({ text: values.logtext });
  const log = getLogger('local-stack');
  let stack;
  try {
    stack = await startLocalStack({
      listen: values.listen,
      webListen: values.web,
      dataDir: values['data-dir'],
      configPath: values.config,
      nats: values.nats,
      maxWorkspacesPerUser: perUser,
    });
  } catch (e) {
    log.error({ err: errText(e) }, 'Failed to start the local stack');
    process.exit(1);
  }
  process.stderr.write(
    `\nssh-proxy local stack is running. Connect with:\n\n  ${stack.sshCommand}\n\n` +
      `New users onboard with \`ssh <name>@${stack.gateway.host} -p ${stack.gateway.port}\` and are ` +
      `approved at:\n\n  ${stack.approvalUrl}\n\nSessions and recordings:\n\n  ${stack.sessionsUrl}\n\n` +
      (stack.nats
        ? `NATS at ${stack.nats.url}: lock a user (closes their sessions) or override recording with\n\n` +
          `  node dist/cli/admin.js --nats-url ${stack.nats.url} --token "$(cat ${stack.tokens.files.nats})" lock <user>\n` +
          `  node dist/cli/admin.js --nats-url ${stack.nats.url} --token "$(cat ${stack.tokens.files.nats})" record <workspace> shell\n\n`
        : ''),
  );
  const stop = async (sig: string) => {
    log.info({ signal: sig }, 'stopping the local stack');
    await stack.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}

void main();
