// Test rig for the Authenticator: a small ssh2 server that authenticates exactly as the gateway does
// (one Authenticator per connection, real identity client) and answers every exec with who logged in
// and how; an ssh2 client driven step by step (to see every partial success and prompt); and plain
// HTTP approval of a device-flow code on the local approval page.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import ssh2, { type AnyAuthMethod, type AuthenticationType, type Prompt } from 'ssh2';
import type { Logger } from 'pino';
import { serverAlgorithms } from '../../src/gateway/algorithms.js';
import { loadHostKeys } from '../../src/gateway/hostkeys.js';
import { Authenticator, type AuthHooks, type AuthSettings } from '../../src/gateway/auth.js';
import type { IdentityBackend } from '../../src/backends/identity.js';

export interface AuthServer {
  port: number;
  /** One per connection, in order. */
  auths: Authenticator[];
  /** onPromptPending calls per connection. */
  promptEvents: boolean[][];
  close(): Promise<void>;
}

export async function startAuthServer(
  hostKey: string,
  identity: IdentityBackend,
  settings: AuthSettings,
  log: Logger,
  hooks: Partial<Pick<AuthHooks, 'evaluate'>> = {},
): Promise<AuthServer> {
  const auths: Authenticator[] = [];
  const promptEvents: boolean[][] = [];
  const clients = new Set<ssh2.Connection>();
  const server = new ssh2.Server(
    { hostKeys: loadHostKeys(hostKey).keys, algorithms: serverAlgorithms() },
    (client) => {
      clients.add(client);
      const events: boolean[] = [];
      promptEvents.push(events);
      const auth = new Authenticator(identity, settings, log, {
        disconnect: () => client.end(),
        onPromptPending: (p) => events.push(p),
        evaluate: hooks.evaluate,
      });
      auths.push(auth);
      client.on('error', () => undefined);
      client.on('authentication', (ctx) => auth.handle(ctx));
      client.on('ready', () => {
        client.on('session', (accept) => {
          accept().on('exec', (acc) => {
            const ch = acc();
            ch.write(`user=${auth.result?.user.username} method=${auth.result?.method}\n`);
            ch.exit(0);
            ch.end();
          });
        });
      });
      client.on('close', () => {
        clients.delete(client);
        auth.close();
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    auths,
    promptEvents,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of clients) c.end();
        server.close(() => resolve());
      }),
  };
}

export interface TraceEntry {
  left: AuthenticationType[] | null;
  partial: boolean | null;
}

export interface PromptSeen {
  name: string;
  instructions: string;
  prompts: Prompt[];
}

/** One authentication step: what to send next, given the server's last answer; false = give up. */
export type Step = (last: TraceEntry) => AnyAuthMethod | false;

export interface ClientRun {
  trace: TraceEntry[];
  /** How it ended: authenticated, gave up after a failure, or the server closed the connection. */
  done: Promise<'ready' | 'failed' | 'closed'>;
  /** Runs `true` and returns what the test server said about the login. */
  whoami(): Promise<string>;
  end(): void;
}

export function runClient(port: number, username: string, steps: Step[]): ClientRun {
  const trace: TraceEntry[] = [];
  const client = new ssh2.Client();
  let settle: (v: 'ready' | 'failed' | 'closed') => void = () => undefined;
  const done = new Promise<'ready' | 'failed' | 'closed'>((resolve) => (settle = resolve));
  client.on('ready', () => settle('ready'));
  client.on('error', (e: Error & { level?: string }) => {
    if (e.level === 'client-authentication') settle('failed');
  });
  client.on('close', () => settle('closed'));
  client.connect({
    host: '127.0.0.1',
    port,
    username,
    readyTimeout: 120_000,
    authHandler: (left, partial, next) => {
      const entry = { left, partial } as TraceEntry;
      trace.push(entry);
      const step = steps.shift();
      next((step ? step(entry) : false) as AnyAuthMethod);
    },
  });
  return {
    trace,
    done,
    whoami: () =>
      new Promise<string>((resolve, reject) => {
        client.exec('true', (err, ch) => {
          if (err) return reject(err);
          let out = '';
          ch.on('data', (d: Buffer) => (out += d.toString()));
          ch.on('close', () => resolve(out.trim()));
        });
      }),
    end: () => client.end(),
  };
}

export const none =
  (username: string): Step =>
  () => ({ type: 'none', username });
export const pubkey =
  (username: string, keyPath: string): Step =>
  () => ({
    type: 'publickey',
    username,
    key: readFileSync(keyPath),
  });
export const password =
  (username: string, pw: string): Step =>
  () => ({
    type: 'password',
    username,
    password: pw,
  });
/** Keyboard-interactive; `answer` sees each prompt round and decides when to answer (Enter). */
export const kbd =
  (username: string, answer: (p: PromptSeen, round: number) => Promise<void>): Step =>
  () => {
    let round = 0;
    return {
      type: 'keyboard-interactive',
      username,
      prompt(name, instructions, _lang, prompts, finish) {
        const r = round++;
        void answer({ name, instructions, prompts }, r).then(() => finish(prompts.map(() => '')));
      },
    };
  };

/** Approves (or denies) a user code on the local approval page over plain HTTP. */
export async function decideOnPage(
  approvalUrl: string,
  code: string,
  decision: 'approve' | 'deny',
  key?: { fingerprint?: string; pasted?: string },
): Promise<string> {
  const token = async (html: string) => /name="token" value="([^"]+)"/.exec(html)?.[1] ?? '';
  const post = (url: string, fields: Record<string, string>) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    }).then((r) => r.text());
  const first = await (await fetch(approvalUrl)).text();
  const second = await post(approvalUrl, { token: await token(first), code });
  const fields: Record<string, string> = { token: await token(second), code, decision };
  if (key?.fingerprint) fields.key = key.fingerprint;
  if (key?.pasted !== undefined) Object.assign(fields, { key: 'pasted', pasted: key.pasted });
  return post(`${approvalUrl}/decide`, fields);
}
