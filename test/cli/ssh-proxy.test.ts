// Spawns the real CLI (through tsx) and checks exit codes, streams and log lines.
import { waitFor } from '../helpers/wait.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMIT, VERSION } from '../../src/ops/version.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'ssh-proxy.ts');
const DEADLINE_MS = 20_000;

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

function start(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = start(args, env);
  const timer = setTimeout(() => r.child.kill('SIGKILL'), DEADLINE_MS);
  const { code } = await r.exited;
  clearTimeout(timer);
  return { code, stdout: r.stdout(), stderr: r.stderr() };
}

function logLines(stdout: string): { msg?: string; component?: string; level?: number }[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; component?: string; level?: number });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  assert.ok(addr && typeof addr === 'object');
  return addr.port;
}

describe('ssh-proxy CLI', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssh-proxy-cli-'));
  });
  after(async () => {
    for (const c of running) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('-v prints the version and exits 0', async () => {
    const r = await run(['-v']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `ssh-proxy version: ${VERSION} (commit: ${COMMIT})\n`);
  });

  it('-h prints the usage on stderr and exits 0', async () => {
    const r = await run(['-h']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, '');
    for (const f of ['--config', '--logtext', '-v']) assert.ok(r.stderr.includes(f), f);
  });

  it('an unknown flag prints the usage and exits 2', async () => {
    const r = await run(['--no-such-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /flag provided but not defined: -no-such-flag/);
    assert.match(r.stderr, /--config/);
  });

  it('a bad config file (single-dash -config) exits 1 naming the problem', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'server:\n  port: abc\n');
    const r = await run(['-config', file]);
    assert.equal(r.code, 1);
    const errors = logLines(r.stdout).filter((l) => l.level === 50);
    assert.equal(errors.length, 1, r.stdout);
    assert.equal(errors[0]?.component, 'ssh-proxy');
    assert.equal(
      errors[0]?.msg,
      `Failed to create server: failed to load configuration from '${file}': server.port: expected a number, got "abc"`,
    );
  });

  it('--config=<missing file> with --logtext exits 1 with a text log line', async () => {
    const file = join(dir, 'absent.yaml');
    const r = await run([`--config=${file}`, '--logtext']);
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /ERROR .*Failed to create server: failed to load configuration from '.*absent\.yaml': ENOENT/,
    );
    assert.ok(!r.stdout.trimStart().startsWith('{'), 'expected text, not JSON');
  });

  it('an unset variable in the config exits 1 naming the variable', async () => {
    const file = join(dir, 'env.yaml');
    await writeFile(file, 'server:\n  port: ${SSH_PROXY_TEST_UNSET_PORT}\n');
    const r = await run(['--config', file], { SSH_PROXY_TEST_UNSET_PORT: undefined });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /environment variable 'SSH_PROXY_TEST_UNSET_PORT' not set/);
  });

  it('logs a warning for each unknown key', async () => {
    const file = join(dir, 'warn.yaml');
    const port = await freePort();
    await writeFile(
      file,
      `server:\n  port: ${port}\n  bindAddress: 127.0.0.1\n  serverKey: ${join(dir, 'no-key')}\n  prot: 1\n`,
    );
    const r = start(['--config', file]);
    // Whether the gateway then starts or fails is not this test's business: stop it either way.
    await waitFor(() => r.stdout().includes('Configuration warning') || r.child.exitCode !== null, {
      timeoutMs: DEADLINE_MS,
      what: 'the warning or the exit',
    });
    if (r.child.exitCode === null) r.child.kill('SIGTERM');
    const timer = setTimeout(() => r.child.kill('SIGKILL'), DEADLINE_MS);
    await r.exited;
    clearTimeout(timer);
    const warn = logLines(r.stdout()).find((l) => l.level === 40);
    assert.equal(warn?.msg, "Configuration warning: unknown key 'server.prot' (ignored)");
    assert.equal(warn?.component, 'ssh-proxy');
  });

  for (const forking of [false, true]) {
    it(`${forking ? 'forking' : 'in-process'} mode: an unusable server key fails the start (exit 1)`, async () => {
      const file = join(dir, `nokey-${forking}.yaml`);
      const port = await freePort();
      await writeFile(
        file,
        `server:\n  port: ${port}\n  bindAddress: 127.0.0.1\n  forking: ${forking}\n  serverKey: ${join(dir, 'absent-key')}\n`,
      );
      const r = await run(['--config', file]);
      assert.equal(r.code, 1, r.stdout);
      const errors = logLines(r.stdout).filter((l) => l.level === 50);
      assert.equal(errors.length, 1, r.stdout);
      assert.match(errors[0]?.msg ?? '', /^Failed to start server: .*absent-key/);
      // The forking parent checks the key itself, before it listens (its children load it).
      if (forking) assert.ok(!r.stdout.includes('SSH proxy server listening'), r.stdout);
    });
  }
});
