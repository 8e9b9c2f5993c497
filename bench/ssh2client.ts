// In-process ssh2 clients for the scenarios that need hundreds of connections (no OpenSSH process each).
import { readFileSync } from 'node:fs';
import { Client, type CipherAlgorithm, type ClientChannel, type KexAlgorithm } from 'ssh2';
import type { Target } from './target.js';

export function connectClient(t: Target, timeoutMs = 60_000): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    const onError = (e: Error) => {
      c.end();
      reject(new Error(`ssh2 connection to ${t.side}: ${e.message}`));
    };
    c.once('error', onError);
    c.once('ready', () => {
      c.off('error', onError);
      // Later errors (e.g. the server closing during teardown) must not crash the bench.
      c.on('error', () => undefined);
      resolve(c);
    });
    c.connect({
      host: '127.0.0.1',
      port: t.port,
      username: t.user,
      privateKey: readFileSync(t.env.key),
      algorithms: {
        cipher: [t.env.cipher as CipherAlgorithm],
        ...(t.env.kex ? { kex: [t.env.kex as KexAlgorithm] } : {}),
      },
      readyTimeout: timeoutMs,
      keepaliveInterval: 0,
    });
  });
}

/** An interactive PTY shell, resolved once the remote shell has run a command (so it is fully started). */
export function openShell(c: Client, timeoutMs = 60_000): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    let retype: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      clearInterval(retype);
      reject(new Error(`shell not ready within ${timeoutMs} ms`));
    }, timeoutMs);
    c.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => {
      if (err) {
        clearTimeout(timer);
        return reject(err);
      }
      let out = '';
      // The quotes keep the echo of the typed line from matching. Typing is repeated because the gateway
      // drops input that arrives before the workspace shell is attached (OpenSSH's pty would buffer it).
      const type = () => ch.write('echo SHELL_""READY\n');
      retype = setInterval(type, 250);
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes('SHELL_READY')) {
          ch.off('data', onData);
          ch.on('data', () => undefined);
          clearTimeout(timer);
          clearInterval(retype);
          resolve(ch);
        } else if (out.length > 65536) out = out.slice(-1024);
      };
      ch.on('data', onData);
      ch.stderr.on('data', () => undefined);
      ch.once('close', () => {
        clearInterval(retype);
        reject(new Error(`shell closed before it was ready: ${out.slice(-200)}`));
      });
      type();
    });
  });
}

/** Runs one command on a new channel and resolves with its exit code. */
export function execOnce(c: Client, cmd: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err);
      let code: number | null = null;
      ch.on('exit', (c0: number | null) => (code = c0));
      ch.on('data', () => undefined);
      ch.stderr.on('data', () => undefined);
      ch.once('close', () => resolve(code));
    });
  });
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. After a failure no new item starts, and the
 * first error is thrown only once everything in flight has settled (so callers can clean up all of it).
 */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  let firstError: { e: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !firstError) {
      const i = next++;
      try {
        out[i] = await fn(items[i] as T);
      } catch (e) {
        firstError ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (firstError) throw firstError.e;
  return out;
}
