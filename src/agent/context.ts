// What every RPC handler of the agent shares.
import { existsSync, statSync } from 'node:fs';
import type { Logger } from '../ops/log.js';
import type { SessionStore } from './store.js';
import type { UserResolver } from './users.js';
import type { ListenerRegistry } from './unixsocket.js';

export interface AgentContext {
  store: SessionStore;
  users: UserResolver;
  listeners: ListenerRegistry;
  log: Logger;
  /** The agent's own environment, the base of every session's environment. */
  baseEnv: NodeJS.ProcessEnv;
  /** True once close() started: streams ending now report no exit status. */
  closing(): boolean;
}

/** A usable working directory: the home when it is a directory, else '/'. */
export function workDir(home: string): string {
  try {
    return existsSync(home) && statSync(home).isDirectory() ? home : '/';
  } catch {
    return '/';
  }
}
