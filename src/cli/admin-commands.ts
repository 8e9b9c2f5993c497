// The commands of `ssh-proxy-admin` (src/cli/admin.ts): argument parsing, the KV values in the API
// server's formats, and running one command on an open NATS connection.
import { parseArgs } from 'node:util';
import type { NatsConnection } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { loadConfig } from '../config/load.js';
import type { NatsAuthAndUrl } from '../backends/nats.js';
import { LOCKED_USERS_BUCKET, openOrCreateBucket, RECORDING_OVERRIDES_BUCKET } from '../backends/nats-kv.js';
import { rfc3339Seconds } from '../backends/nats-failures.js';
import { errText } from '../ops/log.js';

export const ADMIN_USAGE = `Usage: ssh-proxy-admin [options] <command>

Commands:
  lock <user>                    lock the user: live SSH connections of <user> are closed on every gateway
  unlock <user>                  unlock the user (new logins are checked by the identity service)
  record <workspace> <tokens>    override recording for <workspace>: comma-separated tokens of
                                 shell, exec, sftp, direct-tcpip, vscode-terminals, vscode-input, or none
  unrecord <workspace>           remove the override (the authz policy decides again)

Options:
  --config <path>     gateway config file: nats.url, nats.username/password or nats.token
  --nats-url <url>    NATS server(s) (overrides the config's nats.url)
  --user <name>       NATS user (with --password)
  --password <pw>     NATS password
  --token <token>     NATS token
  --set-by <who>      the override's setBy (default ssh-proxy-admin:<os user>@<host>)
  --timeout <s>       deadline for connecting and each request (default 5)
  -h, --help          this help
`;

export const RECORD_TOKENS = [
  'shell',
  'exec',
  'sftp',
  'direct-tcpip',
  'vscode-terminals',
  'vscode-input',
  'none',
];

export type AdminCommand =
  | { op: 'lock' | 'unlock'; user: string }
  | { op: 'record'; workspace: string; record: string }
  | { op: 'unrecord'; workspace: string };

export interface AdminArgs {
  command: AdminCommand;
  configPath: string | undefined;
  natsUrl: string | undefined;
  user: string | undefined;
  password: string | undefined;
  token: string | undefined;
  setBy: string | undefined;
  timeoutMs: number;
}

export type ParsedAdmin = { kind: 'run'; args: AdminArgs } | { kind: 'exit'; code: number; stderr: string };

function usage(problem: string): ParsedAdmin {
  return { kind: 'exit', code: 2, stderr: `${problem}\n${ADMIN_USAGE}` };
}

/** `shell, exec` → `shell,exec`; undefined when a token is unknown or the list is empty. */
export function normaliseRecordTokens(s: string): string | undefined {
  const tokens = s
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (tokens.length === 0 || tokens.some((t) => !RECORD_TOKENS.includes(t))) return undefined;
  return tokens.join(',');
}

export function parseAdminArgs(argv: string[]): ParsedAdmin {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string' },
        'nats-url': { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        token: { type: 'string' },
        'set-by': { type: 'string' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    return usage(errText(e));
  }
  const { values: v, positionals: p } = parsed;
  if (v.help) return { kind: 'exit', code: 0, stderr: ADMIN_USAGE };
  const timeout = v.timeout === undefined ? 5 : Number(v.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) return usage(`invalid --timeout: ${v.timeout ?? ''}`);
  if (v.config === undefined && v['nats-url'] === undefined) return usage('give --config or --nats-url');
  const [op, a, b] = p;
  const want = (n: number) => p.length === n && p.slice(1).every((x) => x !== '');
  let command: AdminCommand;
  switch (op) {
    case 'lock':
    case 'unlock':
      if (!want(2)) return usage(`${op} takes one argument: <user>`);
      command = { op, user: a as string };
      break;
    case 'record': {
      if (!want(3)) return usage('record takes two arguments: <workspace> <tokens>');
      const record = normaliseRecordTokens(b as string);
      if (record === undefined)
        return usage(`unknown recording tokens "${b ?? ''}" (want ${RECORD_TOKENS.join(', ')})`);
      command = { op, workspace: a as string, record };
      break;
    }
    case 'unrecord':
      if (!want(2)) return usage('unrecord takes one argument: <workspace>');
      command = { op, workspace: a as string };
      break;
    default:
      return usage(op === undefined ? 'missing command' : `unknown command: ${op}`);
  }
  return {
    kind: 'run',
    args: {
      command,
      configPath: v.config,
      natsUrl: v['nats-url'],
      user: v.user,
      password: v.password,
      token: v.token,
      setBy: v['set-by'],
      timeoutMs: Math.round(timeout * 1000),
    },
  };
}

/** The value `lock`/`unlock` writes (the API server's format, reference-behaviour §17.3). */
export function lockValue(locked: boolean, sessionsInvalidBefore: number): string {
  return JSON.stringify({ locked, sessionsInvalidBefore });
}

/** The value `record` writes (reference-behaviour §15.1). */
export function overrideValue(record: string, setBy: string, setAt: Date): string {
  return JSON.stringify({ record, setBy, setAt: rfc3339Seconds(setAt) });
}

/** NATS URL and credentials: the config file's, then the flags'. */
export async function settingsFrom(args: AdminArgs): Promise<NatsAuthAndUrl> {
  const s: NatsAuthAndUrl = { url: '', username: '', password: '', token: '' };
  if (args.configPath !== undefined) {
    const { config } = await loadConfig(args.configPath);
    Object.assign(s, {
      url: config.nats.url,
      username: config.nats.username,
      password: config.nats.password,
      token: config.nats.token,
    });
  }
  if (args.natsUrl !== undefined) s.url = args.natsUrl;
  if (args.user !== undefined) Object.assign(s, { username: args.user, password: args.password ?? '' });
  if (args.token !== undefined) Object.assign(s, { token: args.token, username: args.user ?? '' });
  return s;
}

function previousSessionsInvalidBefore(entryValue: Uint8Array | undefined): number {
  if (!entryValue || entryValue.length === 0) return 0;
  try {
    const v = JSON.parse(Buffer.from(entryValue).toString('utf8')) as { sessionsInvalidBefore?: unknown };
    return typeof v.sessionsInvalidBefore === 'number' ? v.sessionsInvalidBefore : 0;
  } catch {
    return 0;
  }
}

/** Runs one command on an open connection; returns the line to print. */
export async function runAdminCommand(
  nc: NatsConnection,
  cmd: AdminCommand,
  opts: { timeoutMs: number; setBy: string; now?: Date },
): Promise<string> {
  const now = opts.now ?? new Date();
  const bucket = cmd.op === 'lock' || cmd.op === 'unlock' ? LOCKED_USERS_BUCKET : RECORDING_OVERRIDES_BUCKET;
  const { kv } = await openOrCreateBucket(nc, bucket, opts.timeoutMs);
  const put = async (k: KV, key: string, value: string) =>
    `${bucket}/${key} = ${value} (revision ${await k.put(key, value)})`;
  switch (cmd.op) {
    case 'lock':
      return put(kv, cmd.user, lockValue(true, Math.floor(now.getTime() / 1000)));
    case 'unlock': {
      const prev = await kv.get(cmd.user);
      return put(kv, cmd.user, lockValue(false, previousSessionsInvalidBefore(prev?.value)));
    }
    case 'record':
      return put(kv, cmd.workspace, overrideValue(cmd.record, opts.setBy, now));
    case 'unrecord':
      await kv.delete(cmd.workspace);
      return `${bucket}/${cmd.workspace} deleted`;
  }
}
