// The environment a session starts with, as OpenSSH's sshd builds it (UsePAM no): nothing from the
// agent's own environment except TZ; USER, LOGNAME, SHELL, HOME, PATH and MAIL from the target user;
// SSH_TTY for PTY sessions (set by the launch wrapper from the terminal's name). SSH_CONNECTION,
// SSH_CLIENT and TERM come from the gateway (src/gateway/env.ts), client variables on top.
import type { UserInfo } from './users.js';

/** Debian's OpenSSH build: --with-superuser-path / --with-default-path. */
export const SUPERUSER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const USER_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/games';

/** What sessions inherit from the agent's environment: only TZ, as sshd passes its own TZ on. */
export function inheritedEnv(agentEnv: NodeJS.ProcessEnv): Record<string, string> {
  return agentEnv.TZ ? { TZ: agentEnv.TZ } : {};
}

/** Defaults a client variable may override (the gateway already removed SHELL/USER/LOGNAME ones). */
export function sessionDefaults(user: UserInfo, shell: string): Record<string, string> {
  return {
    USER: user.name,
    LOGNAME: user.name,
    SHELL: shell,
    PATH: user.uid === 0 ? SUPERUSER_PATH : USER_PATH,
    MAIL: `/var/mail/${user.name}`,
  };
}
