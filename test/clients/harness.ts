// Shared set-up for the foreign-client suite: the real local stack (test/e2e/harness.ts), the user key
// converted for PuTTY and dropbear, the gateway's host-key fingerprint, a loopback echo server as the
// forwarding target, and checksums.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { REPO, startE2E, type E2E, type E2EOptions } from '../e2e/harness.js';

export { REPO };

export interface ClientsE2E extends E2E {
  /** The user key as PuTTY .ppk and dropbear key files. */
  ppk: string;
  dropbearKey: string;
  /** `SHA256:…` of the gateway's host key (plink/pscp/psftp -hostkey). */
  hostKeyFingerprint: string;
}

export async function startClientsE2E(opts: E2EOptions = {}): Promise<ClientsE2E> {
  const e = await startE2E(opts);
  const ppk = e.dir.join('id_user.ppk');
  execFileSync('puttygen', [e.keys.user, '-O', 'private', '-o', ppk], { stdio: 'ignore' });
  const dropbearKey = e.dir.join('id_user.dropbear');
  execFileSync('dropbearconvert', ['openssh', 'dropbear', e.keys.user, dropbearKey], { stdio: 'ignore' });
  const hostPub = join(e.dir.join('data'), 'ssh_host_ed25519_key.pub');
  const fp = execFileSync('ssh-keygen', ['-lf', hostPub]).toString().split(/\s+/)[1] ?? '';
  if (!fp.startsWith('SHA256:')) throw new Error(`no host key fingerprint from ${hostPub}`);
  return { ...e, ppk, dropbearKey, hostKeyFingerprint: fp };
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256File(path: string): string {
  return sha256(readFileSync(path));
}

export interface EchoServer {
  port: number;
  close(): Promise<void>;
}

/** A TCP echo server on 127.0.0.1 (the destination of -L / direct-tcpip cases). */
export async function startEcho(): Promise<EchoServer> {
  const server: Server = createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('echo server has no port');
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.unref();
      }),
  };
}

/** PuTTY tools' common options: batch mode, our port, key and pinned host key. */
export function puttyArgs(e: ClientsE2E, portFlag: '-P' = '-P'): string[] {
  return ['-batch', portFlag, String(e.port), '-i', e.ppk, '-hostkey', e.hostKeyFingerprint];
}

/** dbclient's options: accept the host key (-y -y), our key and port. */
export function dropbearArgs(e: ClientsE2E): string[] {
  return ['-y', '-y', '-i', e.dropbearKey, '-p', String(e.port)];
}

/** Random file content (pick sizes that are not a multiple of any buffer size). */
export function randomPayload(size: number): Buffer {
  return randomBytes(size);
}
