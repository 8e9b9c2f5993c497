// A real OpenSSH ssh-agent for the agent-forwarding tests, killed by its pid when the test ends.
import { execFileSync } from 'node:child_process';
import { pidAlive } from '../../helpers/wait.js';

export interface SshAgent {
  sock: string;
  pid: number;
  /** Fingerprints as `ssh-add -l` prints them (e.g. `256 SHA256:… comment (ED25519)`). */
  list(): string;
  stop(): void;
}

/** Starts `ssh-agent -a <sock>` and adds `keys` to it. */
export function startSshAgent(sock: string, keys: string[]): SshAgent {
  const out = execFileSync('ssh-agent', ['-s', '-a', sock]).toString();
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)?.[1]);
  const sockPath = /SSH_AUTH_SOCK=([^;]+);/.exec(out)?.[1];
  if (!pid || !sockPath) throw new Error(`cannot parse ssh-agent output: ${out}`);
  const env = { ...process.env, SSH_AUTH_SOCK: sockPath };
  for (const k of keys) execFileSync('ssh-add', ['-q', k], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  return {
    sock: sockPath,
    pid,
    list: () => execFileSync('ssh-add', ['-l'], { env }).toString(),
    stop: () => {
      if (pidAlive(pid)) process.kill(pid, 'SIGTERM');
    },
  };
}
