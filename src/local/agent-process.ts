// One workspace agent process: spawn it, wait for its ready file, confirm it answers, stop it.
//
// The agent's stdout and stderr go to `<dir>/agent.log` (appended), so each workspace keeps its own
// log across restarts; on a failed start the tail of that file is included in the error.
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { channelOptions, interceptorsFor } from '../backends/grpc.js';
import { HandshakeRequest, SystemServiceClient } from '../gen/k8shelld/v1/k8shelld.js';
import type { Logger } from '../ops/log.js';

export interface AgentSpawnOptions {
  /** Arguments after `process.execPath` that run the agent, e.g. `['dist/cli/agent.js']`. */
  command: string[];
  /** Workspace directory: where agent.addr and agent.log live (never inside `home`). */
  dir: string;
  /** The agent's --home (the sessions' home directory); default `dir`. */
  home?: string;
  /** Passed to the agent as --token-file, and used for our own handshake call. */
  tokenFile?: string;
  /** Further agent arguments (--user, --sudo, --workspace, --session-registry). */
  extraArgs?: string[];
  readyTimeoutMs: number;
  /** Aborting kills the agent and rejects. */
  signal?: AbortSignal;
  log: Logger;
}

export interface AgentExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface AgentProcess {
  pid: number;
  host: string;
  port: number;
  /** host:port for gRPC clients. */
  address: string;
  exited: Promise<AgentExit>;
  alive(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const POLL_MS = 25;
const LOG_TAIL_BYTES = 2048;

function logTail(file: string): string {
  try {
    const fd = openSync(file, 'r');
    try {
      const size = fstatSync(fd).size;
      const len = Math.min(size, LOG_TAIL_BYTES);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').trim();
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** Parses `host:port` (IPv6 may be bracketed); undefined unless the port is 1..65535. */
export function parseAgentAddress(text: string): { host: string; port: number } | undefined {
  const m = /^\s*\[?([^\s\]]+?)\]?:(\d{1,5})\s*$/.exec(text);
  if (!m?.[1] || !m[2]) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1], port };
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Spawns the agent and resolves once it listens (ready file) and answers a k8shelld Handshake. */
export async function spawnAgent(o: AgentSpawnOptions): Promise<AgentProcess & { version: string }> {
  const readyFile = join(o.dir, 'agent.addr');
  const logFile = join(o.dir, 'agent.log');
  rmSync(readyFile, { force: true });
  const args = [
    ...o.command,
    '--listen',
    '127.0.0.1:0',
    '--ready-file',
    readyFile,
    '--home',
    o.home ?? o.dir,
  ];
  if (o.tokenFile) args.push('--token-file', o.tokenFile);
  if (o.extraArgs) args.push(...o.extraArgs);

  const logFd = openSync(logFile, 'a', 0o600);
  writeSync(logFd, `--- agent starting at ${new Date().toISOString()} ---\n`);
  const child = spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);

  let exit: AgentExit | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<AgentExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
    child.once('error', (e) => {
      spawnError = e;
      // 'exit' does not follow a failed spawn.
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });
  const alive = () => exit === undefined && spawnError === undefined && child.pid !== undefined;

  const stop = async (graceMs = 5000): Promise<void> => {
    if (!alive()) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => {
      o.log.warn({ pid: child.pid, dir: o.dir }, 'agent did not exit after SIGTERM; sending SIGKILL');
      child.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(t);
  };

  const fail = async (why: string): Promise<never> => {
    await stop(1000);
    const tail = logTail(logFile);
    o.log.error({ dir: o.dir, log: logFile, agentOutput: tail }, `workspace agent failed to start: ${why}`);
    throw new Error(why);
  };

  // Wait for a ready file whose content is a valid address and is the same on two reads in a row,
  // so a half-written file is never taken for the address.
  const deadline = Date.now() + o.readyTimeoutMs;
  let last = '';
  let addr: { host: string; port: number } | undefined;
  while (!addr) {
    if (o.signal?.aborted) return fail(errMessage(o.signal.reason, 'start aborted'));
    if (spawnError) return fail(`cannot run the agent: ${spawnError.message}`);
    if (exit) return fail(`agent exited before it was ready (${describeExit(exit)}); see ${logFile}`);
    if (Date.now() > deadline) return fail(`agent did not become ready within ${o.readyTimeoutMs} ms`);
    const text = await readFile(readyFile, 'utf8').catch(() => '');
    if (text && text === last) addr = parseAgentAddress(text);
    last = text;
    if (!addr) await delay(POLL_MS);
  }
  const address = `${formatHost(addr.host)}:${addr.port}`;

  let version: string;
  try {
    version = await handshake(
      address,
      o.tokenFile,
      Math.max(1000, Math.min(5000, deadline - Date.now())),
      o.signal,
    );
  } catch (e) {
    return fail(`agent at ${address} did not answer the handshake: ${errMessage(e, 'unknown error')}`);
  }
  return { pid: child.pid ?? 0, host: addr.host, port: addr.port, address, exited, alive, stop, version };
}

function errMessage(e: unknown, fallback: string): string {
  if (e instanceof Error) return (e as Partial<ServiceError>).details || e.message;
  return typeof e === 'string' ? e : fallback;
}

export function describeExit(e: AgentExit): string {
  return e.signal ? `signal ${e.signal}` : `exit code ${String(e.code)}`;
}

/** k8shelld Handshake against the agent; returns its server_version. */
async function handshake(address: string, tokenFile: string | undefined, ms: number, signal?: AbortSignal) {
  const client = new SystemServiceClient(address, credentials.createInsecure(), {
    ...channelOptions({}),
    interceptors: interceptorsFor({ tokenFilePath: tokenFile }),
  });
  try {
    return await new Promise<string>((resolve, reject) => {
      const call = client.handshake(
        HandshakeRequest.fromPartial({}),
        new Metadata(),
        { deadline: new Date(Date.now() + ms) },
        (err, res) => {
          signal?.removeEventListener('abort', onAbort);
          if (err) reject(err);
          else if (!res.accepted) reject(new Error(`handshake rejected: ${res.message}`));
          else resolve(res.serverVersion);
        },
      );
      const onAbort = () => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  } finally {
    // Close our connection so it does not count as activity for the idle check.
    client.close();
  }
}
