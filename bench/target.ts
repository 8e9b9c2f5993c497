// What a scenario needs to know about one side: how to reach it, and how to read its CPU and memory.
import type { BenchEnv } from './env.js';
import { childrenOf, rssKiB, selfCpu, settle, treeCpu, treePssKiB } from './proc.js';

/** `base`: the A/B baseline's gateway (another checkout's build, `--baseline`). */
export type Side = 'gateway' | 'base' | 'sshd';

/** CPU seconds so far; `total` is the whole server side (relay processes plus the commands they ran). */
export interface CpuReading {
  total: number;
  parts: Record<string, number>;
}

export interface MemReading {
  /** PSS of the whole server-side process tree, KiB. */
  treePss: number;
  parts: Record<string, number>;
}

export interface Target {
  side: Side;
  /** The gateway that records its exec and -L channels (bench/session-sink.ts receives them). */
  recorded: boolean;
  /** side, `baseline` or `gateway (recorded)`: for logs and file names. */
  label: string;
  port: number;
  user: string;
  env: BenchEnv;
  /** ssh options that pick this target (before the destination). */
  sshArgs(): string[];
  destination: string;
  cpu(): CpuReading;
  memory(): MemReading;
  /** Waits (bounded) until per-connection processes of earlier runs are gone, so readings are complete. */
  settle(timeoutMs?: number): Promise<void>;
}

function baseArgs(env: BenchEnv, port: number): string[] {
  return ['-F', env.sshConfig, '-p', String(port), '-c', env.cipher];
}

export function sshdTarget(env: BenchEnv, port: number, pid: number): Target {
  return {
    side: 'sshd',
    recorded: false,
    label: 'sshd',
    port,
    user: env.user,
    env,
    destination: `${env.user}@127.0.0.1`,
    sshArgs: () => baseArgs(env, port),
    // Reaped connection children are in the listener's cutime, live ones are read one by one.
    cpu: () => ({ total: treeCpu(pid), parts: {} }),
    memory: () => ({ treePss: treePssKiB(pid), parts: {} }),
    settle: async (timeoutMs = 5000) => {
      await settle(() => childrenOf(pid).length === 0, timeoutMs);
    },
  };
}

/**
 * The stack process runs the gateway; its children are the workspace agents (one here). A recorded
 * gateway's session sink is another process: its CPU is a part, not in the total (a real session
 * service runs elsewhere). `agentParent`: the stack process whose agents this gateway reaches, when the
 * gateway is a process of its own (the production entry beside a stack).
 */
export function gatewayTarget(
  env: BenchEnv,
  port: number,
  pid: number,
  sinkPid?: number,
  side: 'gateway' | 'base' = 'gateway',
  agentParent = pid,
): Target {
  const agents = () => childrenOf(agentParent);
  return {
    side,
    recorded: sinkPid !== undefined,
    label: sinkPid !== undefined ? 'gateway (recorded)' : side === 'base' ? 'baseline' : 'gateway',
    port,
    user: env.user,
    env,
    destination: `${env.user}@127.0.0.1`,
    sshArgs: () => baseArgs(env, port),
    cpu: () => {
      const gateway = selfCpu(pid);
      let agent = 0;
      let tree = 0;
      for (const a of agents()) {
        agent += selfCpu(a);
        tree += treeCpu(a);
      }
      const parts: Record<string, number> = { gateway, agent, commands: tree - agent };
      if (sinkPid !== undefined) parts.sessionSink = selfCpu(sinkPid);
      return { total: gateway + tree, parts };
    },
    memory: () => {
      const as = agents();
      return {
        treePss: treePssKiB(pid) + (agentParent === pid ? 0 : as.reduce((s, a) => s + treePssKiB(a), 0)),
        parts: { gatewayRss: rssKiB(pid), agentRss: as.reduce((s, a) => s + rssKiB(a), 0) },
      };
    },
    settle: async (timeoutMs = 5000) => {
      await settle(() => agents().every((a) => childrenOf(a).length === 0), timeoutMs);
    },
  };
}
