// sftp put and get of one file (`sftp -b`), sizes checked after every run.
import { rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkOk, runProcess } from '../proc.js';
import type { Target } from '../target.js';
import { transferTimeoutMs, type Transfer } from './throughput.js';

function sftp(t: Target, batch: string, bytes: number) {
  const args = ['-F', t.env.sshConfig, '-P', String(t.port), '-c', t.env.cipher, '-b', batch, t.destination];
  return runProcess('sftp', args, { timeoutMs: transferTimeoutMs(bytes) });
}

function checkSize(path: string, bytes: number, what: string): void {
  const size = statSync(path, { throwIfNoEntry: false })?.size;
  if (size !== bytes)
    throw new Error(`${what}: expected ${bytes} bytes at ${path}, found ${size ?? 'no file'}`);
}

/** A sparse source file of zeros (read from the page cache without disk I/O, like /dev/zero). */
function sourceFile(dir: string, name: string, bytes: number): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, bytes);
  return p;
}

export function sftpPut(dir: string, bytes: number): Transfer {
  const src = sourceFile(dir, 'sftp-put-source.bin', bytes);
  return async (t: Target) => {
    const dst = join(dir, `sftp-put-${t.side}.bin`);
    const batch = join(dir, `sftp-put-${t.side}.batch`);
    writeFileSync(batch, `put ${src} ${dst}\n`);
    try {
      const r = checkOk(`sftp put via ${t.side}`, await sftp(t, batch, bytes));
      checkSize(dst, bytes, `sftp put via ${t.side}`);
      return r.ms;
    } finally {
      rmSync(dst, { force: true });
    }
  };
}

export function sftpGet(dir: string, bytes: number): Transfer {
  const src = sourceFile(dir, 'sftp-get-source.bin', bytes);
  return async (t: Target) => {
    const dst = join(dir, `sftp-get-${t.side}.bin`);
    const batch = join(dir, `sftp-get-${t.side}.batch`);
    writeFileSync(batch, `get ${src} ${dst}\n`);
    try {
      const r = checkOk(`sftp get via ${t.side}`, await sftp(t, batch, bytes));
      checkSize(dst, bytes, `sftp get via ${t.side}`);
      return r.ms;
    } finally {
      rmSync(dst, { force: true });
    }
  };
}
