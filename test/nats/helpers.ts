// Helpers for the NATS tests: one real nats-server per test file (JetStream, loopback, temp dir),
// restartable in place; a plain test client; an in-memory logger to assert log lines.
import { pino, type Logger } from 'pino';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { startLocalNats, type LocalNats, type LocalNatsOptions } from '../../src/local/nats-server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';

export interface TestNats {
  dir: TempDir;
  server: LocalNats;
  url: string;
  /** Stops the server (the store stays). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same store. */
  restart(): Promise<void>;
  /** Stops the server and removes its directory. */
  cleanup(): Promise<void>;
}

export async function startTestNats(opts: Omit<LocalNatsOptions, 'dataDir'> = {}): Promise<TestNats> {
  const dir = makeTempDir('ssh-proxy-nats-');
  const quiet = pino({ level: 'silent' });
  let server = await startLocalNats({ ...opts, dataDir: dir.path, logger: quiet });
  const t: TestNats = {
    dir,
    server,
    url: server.url,
    stop: () => server.stop(),
    async restart() {
      server = await startLocalNats({ ...opts, port: server.port, dataDir: dir.path, logger: quiet });
      t.server = server;
    },
    async cleanup() {
      await server.stop();
      dir.cleanup();
    },
  };
  return t;
}

/** A test-side client: reconnects forever, short reconnect wait. */
export function testClient(url: string, extra: Parameters<typeof connect>[0] = {}): Promise<NatsConnection> {
  return withTimeout(
    connect({ servers: url, name: 'test', maxReconnectAttempts: -1, reconnectTimeWait: 250, ...extra }),
    10_000,
    'test NATS client connect',
  );
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A pino logger that keeps every line in memory. */
export function memoryLogger(): { log: Logger; lines: LogLine[]; messages: () => string[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug', messageKey: 'msg' },
    { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) },
  );
  return { log, lines, messages: () => lines.map((l) => l.msg) };
}

/** Settings of a NatsLink for tests (fast reconnects). */
export function linkSettings(
  url: string,
  extra: Partial<{ username: string; password: string; token: string }> = {},
) {
  return {
    url,
    username: '',
    password: '',
    token: '',
    maxReconnects: -1,
    reconnectWait: 0.25,
    ...extra,
  };
}
