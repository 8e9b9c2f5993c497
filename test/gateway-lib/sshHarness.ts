// Test harness: a small ssh2 server on 127.0.0.1 and the real OpenSSH client.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import ssh2, { type Connection, type ParsedKey } from 'ssh2';

import { serverAlgorithms } from '../../src/gateway/algorithms.js';
import { loadHostKeys } from '../../src/gateway/hostkeys.js';

export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function keygen(dir: string, name: string, type: 'ed25519' | 'rsa'): string {
  const path = join(dir, name);
  const extra = type === 'rsa' ? ['-b', '2048'] : [];
  execFileSync('ssh-keygen', ['-q', '-t', type, ...extra, '-N', '', '-f', path], { stdio: 'ignore' });
  return path;
}

export interface TestServer {
  port: number;
  /** Authentication requests seen: `<method>:<key algo>:<hash algo>`. */
  auths: string[];
  close(): Promise<void>;
}

/** An ssh2 server accepting public-key logins for the given user public key files. */
export async function startServer(
  hostKeyPath: string,
  userPubKeyPaths: string[],
  onClient: (client: Connection) => void,
): Promise<TestServer> {
  const allowed: ParsedKey[] = userPubKeyPaths.map((p) => {
    const k = ssh2.utils.parseKey(readFileSync(p));
    if (k instanceof Error) throw k;
    return k;
  });
  const auths: string[] = [];
  const clients = new Set<Connection>();
  const server = new ssh2.Server(
    { hostKeys: loadHostKeys(hostKeyPath).keys, algorithms: serverAlgorithms() },
    (client) => {
      clients.add(client);
      client.on('error', () => undefined);
      client.on('close', () => clients.delete(client));
      client.on('authentication', (ctx) => {
        if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
        const key = allowed.find((k) => k.getPublicSSH().equals(ctx.key.data));
        if (!key) return ctx.reject(['publickey']);
        if (ctx.signature === undefined) return ctx.accept();
        auths.push(`publickey:${ctx.key.algo}:${ctx.hashAlgo ?? ''}`);
        if (ctx.blob && key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true) return ctx.accept();
        return ctx.reject(['publickey']);
      });
      onClient(client);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    auths,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of clients) c.end();
        server.close(() => resolve());
      }),
  };
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the OpenSSH client isolated from the user's configuration; killed after timeoutMs. */
export function runSsh(
  port: number,
  identity: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: Buffer; agent?: boolean } = {},
): Promise<SshResult> {
  const base = [
    '-F',
    '/dev/null',
    '-p',
    String(port),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'ConnectTimeout=5',
    '-i',
    identity,
  ];
  if (!opts.agent) base.push('-o', 'IdentityAgent=none');
  const child = spawn('ssh', [...base, ...args], { env: opts.env ?? process.env, stdio: 'pipe' });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  if (opts.input) child.stdin.end(opts.input);
  else child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 10_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
