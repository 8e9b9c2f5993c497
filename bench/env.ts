// The bench's scratch directory, client key and OpenSSH client configuration, and the machine description.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem, userInfo } from 'node:os';
import { join } from 'node:path';

export interface BenchEnv {
  dir: string;
  /** Private key (ed25519, OpenSSH format) both servers authorise. */
  key: string;
  publicKey: string;
  /** OS user both servers log in. */
  user: string;
  /** ssh_config used by every OpenSSH client invocation (ssh, sftp and the ProxyJump hop). */
  sshConfig: string;
  cipher: string;
  /** Key exchange pinned for every client; undefined = the OpenSSH client's default preference. */
  kex: string | undefined;
  cleanup(): void;
}

export function createEnv(cipher: string, kex?: string): BenchEnv {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'spx-bench-')));
  const key = join(dir, 'id_bench');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ssh-proxy bench', '-f', key]);
  const publicKey = readFileSync(`${key}.pub`, 'utf8').trim();
  const sshConfig = join(dir, 'ssh_config');
  // One config for every client so ProxyJump's inner ssh (which gets -F passed on) behaves the same.
  writeFileSync(
    sshConfig,
    [
      'Host *',
      '  StrictHostKeyChecking no',
      '  UserKnownHostsFile /dev/null',
      '  LogLevel ERROR',
      '  BatchMode yes',
      '  IdentitiesOnly yes',
      '  IdentityAgent none',
      `  IdentityFile ${key}`,
      `  Ciphers ${cipher}`,
      ...(kex ? [`  KexAlgorithms ${kex}`] : []),
      '  Compression no',
      '  ControlMaster no',
      '  ControlPath none',
      '',
    ].join('\n'),
  );
  return {
    dir,
    key,
    publicKey,
    user: userInfo().username,
    sshConfig,
    cipher,
    kex,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  opensshClient: string;
  opensshServer: string;
}

/** First line of `cmd -V` (OpenSSH prints its version on stderr, and sshd exits non-zero doing so). */
function versionOf(cmd: string): string {
  try {
    return (
      execFileSync('sh', ['-c', '"$0" -V 2>&1 || true', cmd], { encoding: 'utf8' }).split('\n')[0]?.trim() ??
      ''
    );
  } catch {
    return '';
  }
}

export function machineInfo(sshdPath: string): MachineInfo {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    node: process.version,
    opensshClient: versionOf('ssh') || 'unknown',
    opensshServer: versionOf(sshdPath) || 'unknown',
  };
}
