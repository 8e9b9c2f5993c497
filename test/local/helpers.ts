// Small helpers for the local-service tests: promisified unary calls, key generation, log capture.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import type { ServiceError } from '@grpc/grpc-js';

/** Runs a callback-style unary call as a promise. */
export function unaryP<Res>(fn: (cb: (err: ServiceError | null, res: Res) => void) => unknown): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    fn((err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Resolves to the ServiceError a call failed with; fails the test when the call succeeds. */
export async function grpcFailure<Res>(p: Promise<Res>): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as ServiceError;
  }
  throw new Error('expected the call to fail');
}

export interface KeyPair {
  /** Private key file. */
  path: string;
  /** The .pub line: `<type> <base64> <comment>`. */
  pubLine: string;
  /** `<type> <base64>` as the gateway sends it. */
  wire: string;
}

/** Generates a real key with ssh-keygen. */
export function makeKey(path: string, type: 'ed25519' | 'rsa' = 'ed25519', comment = 'test@local'): KeyPair {
  const args = ['-q', '-t', type, '-N', '', '-C', comment, '-f', path];
  if (type === 'rsa') args.push('-b', '2048');
  execFileSync('ssh-keygen', args, { stdio: 'ignore' });
  const pubLine = readFileSync(`${path}.pub`, 'utf8').trim();
  const [t, b] = pubLine.split(/\s+/);
  return { path, pubLine, wire: `${t} ${b}` };
}

/** A pino logger whose JSON lines are collected in `lines`. */
export function captureLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void raw.push(s) });
  return { logger, lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>) };
}
