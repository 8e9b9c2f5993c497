// Debian's OpenSSH server on a loopback port with its own config, host key and authorized key: the baseline.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchEnv } from './env.js';
import { canConnect, freePort, waitFor } from './proc.js';

export const SSHD_PATH = '/usr/sbin/sshd';
const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

export interface RunningSshd {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

export async function startSshd(env: BenchEnv): Promise<RunningSshd> {
  if (!existsSync(SSHD_PATH))
    throw new Error(`${SSHD_PATH} not found: install the baseline with "apt-get install -y openssh-server"`);
  // Privilege separation directory; Debian creates it from the service unit, which we do not use.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = join(env.dir, 'sshd');
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, `${env.publicKey}\n`, { mode: 0o600 });
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const port = await freePort();
  const cfg = join(dir, 'sshd_config');
  writeFileSync(
    cfg,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      // A second loopback address as the ProxyJump hop: ssh refuses a jump host equal to the destination.
      'ListenAddress 127.0.0.2',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorized}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'UsePAM no',
      // The scratch directory is under /tmp, which StrictModes rejects.
      'StrictModes no',
      'PermitRootLogin yes',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      `Subsystem sftp ${SFTP_SERVER}`,
      'AllowTcpForwarding yes',
      // One connection per idle session in the concurrency scenario.
      'MaxStartups 2000',
      'MaxSessions 10',
      'UseDNS no',
      'PrintMotd no',
      'PrintLastLog no',
      'X11Forwarding no',
      'LogLevel ERROR',
      // Same as the gateway's workspace home: no dotfiles of the real user (e.g. a slow .bashrc) in the runs.
      `SetEnv HOME=${home}`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(SSHD_PATH, ['-f', cfg, '-D', '-e'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 10_000) stderr += d.toString();
  });
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  child.once('error', () => undefined);
  const stop = async () => {
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exit;
    clearTimeout(t);
  };
  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`sshd exited: ${stderr.trim()}`);
        return canConnect(port);
      },
      10_000,
      'sshd to listen',
    );
  } catch (e) {
    await stop();
    throw e;
  }
  if (child.pid === undefined) throw new Error('sshd has no pid');
  return { port, pid: child.pid, stop };
}
