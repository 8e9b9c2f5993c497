#!/usr/bin/env node
// `ssh-proxy-admin`: writes the NATS KV entries the k8shell API server would write, so an operator can
// try user locks and recording overrides (locally with `npm start -- --nats`, or against any NATS):
//   lock <user> | unlock <user> | record <workspace> <tokens|none> | unrecord <workspace>
// Connects with the gateway's config file (`--config`, its nats.url and credentials) or `--nats-url`.
import { hostname, userInfo } from 'node:os';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { connectionOptions, redactUrl, serverList } from '../backends/nats.js';
import { errText } from '../ops/log.js';
import { parseAdminArgs, runAdminCommand, settingsFrom } from './admin-commands.js';

async function main(argv: string[]): Promise<number> {
  const parsed = parseAdminArgs(argv);
  if (parsed.kind === 'exit') {
    process.stderr.write(parsed.stderr);
    return parsed.code;
  }
  const { args } = parsed;
  let nc: NatsConnection | undefined;
  try {
    const settings = await settingsFrom(args);
    const opts = connectionOptions(
      'ssh-proxy-admin',
      { ...settings, maxReconnects: 0, reconnectWait: 1 },
      args.timeoutMs,
    );
    opts.reconnect = false;
    try {
      nc = await connect(opts);
    } catch (e) {
      throw new Error(
        `cannot connect to NATS at ${serverList(settings.url).map(redactUrl).join(',')}: ${errText(e)}`,
      );
    }
    const setBy = args.setBy ?? `ssh-proxy-admin:${userInfo().username}@${hostname()}`;
    const line = await runAdminCommand(nc, args.command, { timeoutMs: args.timeoutMs, setBy });
    process.stdout.write(`${line}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`ssh-proxy-admin: ${errText(e)}\n`);
    return 1;
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

void main(process.argv.slice(2)).then((code) => process.exit(code));
