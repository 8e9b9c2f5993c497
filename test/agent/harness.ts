// Shared set-up for the agent tests: an in-process agent on 127.0.0.1:0, generated gRPC clients,
// and helpers that collect every frame and the final status of a stream.
import { credentials, Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { startAgent, type AgentOptions, type RunningAgent } from '../../src/agent/server.js';
import { SshServiceClient, SystemServiceClient } from '../../src/gen/k8shelld/v1/k8shelld.js';
import { getLogger } from '../../src/ops/log.js';
import { waitFor } from '../helpers/wait.js';

export interface TestAgent {
  agent: RunningAgent;
  ssh: SshServiceClient;
  sys: SystemServiceClient;
  close(): Promise<void>;
}

export function quietLogger() {
  const l = getLogger('agent-test');
  l.level = process.env.TEST_LOG_LEVEL ?? 'silent';
  return l;
}

export async function startTestAgent(opts: Partial<AgentOptions> = {}): Promise<TestAgent> {
  const agent = await startAgent({ listen: '127.0.0.1:0', logger: quietLogger(), ...opts });
  const ssh = new SshServiceClient(agent.address, credentials.createInsecure());
  const sys = new SystemServiceClient(agent.address, credentials.createInsecure());
  return {
    agent,
    ssh,
    sys,
    close: async () => {
      ssh.close();
      sys.close();
      await agent.close();
    },
  };
}

let counter = 0;
/** A fresh channel id with the gateway's shape, e.g. `sh-test-<pid>-abc<n>`. */
export function newId(prefix: string): string {
  return `${prefix}-t${process.pid}-${Date.now().toString(36)}-x${++counter}`;
}

export function md(pairs: Record<string, string>): Metadata {
  const m = new Metadata();
  for (const [k, v] of Object.entries(pairs)) m.set(k, v);
  return m;
}

export interface Final {
  code: number;
  details: string;
}

export interface Collected<Res> {
  messages: Res[];
  /** Resolves with the final status (OK included); never rejects. */
  done: Promise<Final>;
}

export function collect<Req, Res>(call: ClientDuplexStream<Req, Res>): Collected<Res> {
  const messages: Res[] = [];
  call.on('data', (m: Res) => messages.push(m));
  const done = new Promise<Final>((resolve) => {
    call.on('error', (e: ServiceError) => resolve({ code: e.code, details: e.details }));
    call.on('status', (s: { code: number; details: string }) =>
      resolve({ code: s.code, details: s.details }),
    );
  });
  return { messages, done };
}

/** Waits until `text()` matches `re`; returns the match. */
export async function waitText(text: () => string, re: RegExp, timeoutMs = 5000): Promise<RegExpExecArray> {
  return waitFor(() => re.exec(text()), {
    timeoutMs,
    what: `output matching ${re} (got ${JSON.stringify(text().slice(-300))})`,
  });
}

/** Unary call as a promise resolving with either the response or the error. */
export function unary<Res>(
  fn: (cb: (err: ServiceError | null, res: Res) => void) => void,
): Promise<{ err: ServiceError | null; res?: Res }> {
  return new Promise((resolve) => fn((err, res) => resolve({ err, res: err ? undefined : res })));
}
