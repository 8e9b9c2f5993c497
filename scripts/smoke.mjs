#!/usr/bin/env node
// Smoke test of a built gateway (`make test-self`; also run on the bundle by test/delivery/smoke.test.ts):
//   1. `-v` prints "ssh-proxy version: <v> (commit: <c>)" and exits 0;
//   2. `-h` prints the usage on stderr and exits 0;
//   3. a start with the shipped sample config/config.yaml, whose services (identity, provisioner,
//      session) do not exist here, must never crash. Two outcomes pass:
//      - the gateway refuses to start with a clean, explained non-zero exit (an error log line saying
//        why, no stack trace, no signal), e.g. a listen port already in use or an unreadable host key;
//      - it starts, a login attempt is denied because identity is unreachable, the process stays up,
//        logs why, and SIGTERM stops it with exit 0.
// The sample is used as shipped except for what cannot be shared on a test machine: the ports (free
// ones), the bind address (loopback), proxyProtocol (this script connects directly, without a load
// balancer) and SECRET_FILES (a temp dir with a generated ECDSA host key, the key type the Helm chart
// generates, and the NATS token file the sample names).
//
//   node scripts/smoke.mjs [--entry dist/cli/ssh-proxy.js] [--config config/config.yaml]
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout, clearTimeout } from 'node:timers';
import { parseArgs } from 'node:util';
import ssh2 from 'ssh2';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const { values: opts } = parseArgs({
  options: {
    entry: { type: 'string', default: join(ROOT, 'dist', 'cli', 'ssh-proxy.js') },
    config: { type: 'string', default: join(ROOT, 'config', 'config.yaml') },
  },
  strict: true,
});
const ENTRY = resolve(opts.entry);
const START_DEADLINE_MS = 60_000;
const LOGIN_DEADLINE_MS = 90_000;
const STOP_DEADLINE_MS = 45_000;

const failures = [];
const check = (ok, what) => {
  console.log(`smoke: ${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

function runOnce(args) {
  return spawnSync(process.execPath, [ENTRY, ...args], { encoding: 'utf8', timeout: 30_000 });
}

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Replaces one `key: value` line of the sample; fails loudly when the sample changed shape. */
function setLine(text, key, from, to) {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.trim() === `${key}: ${from}`);
  if (i < 0) throw new Error(`sample config has no line "${key}: ${from}"; update scripts/smoke.mjs`);
  lines[i] = lines[i].replace(`${key}: ${from}`, `${key}: ${to}`);
  return lines.join('\n');
}

function logLines(text) {
  const lines = [];
  for (const l of text.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(l));
    } catch {
      // A torn line at the end of the stream: ignore.
    }
  }
  return lines;
}

const crashMarkers =
  /Uncaught|UnhandledPromiseRejection|^\s+at .+:\d+:\d+\)?$|FATAL ERROR|Segmentation fault/m;

async function main() {
  // 1 and 2: -v and -h.
  const v = runOnce(['-v']);
  check(
    v.status === 0 && /^ssh-proxy version: \S+ \(commit: \S+\)\n$/.test(v.stdout),
    `-v exits 0 and prints the version (${v.stdout.trim() || v.stderr.trim()})`,
  );
  const h = runOnce(['-h']);
  check(h.status === 0 && h.stderr.includes('--config'), '-h exits 0 and prints the usage on stderr');

  // 3: a start with the sample.
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'ssh-proxy-smoke-')));
  let child;
  try {
    const { privateKey } = generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    writeFileSync(join(dir, 'server_key'), privateKey, { mode: 0o600 });
    writeFileSync(join(dir, 'sshproxy_nats_token'), 'smoke-test-token\n', { mode: 0o600 });
    const sshPort = await freePort();
    const grpcPort = await freePort();
    let cfg = readFileSync(opts.config, 'utf8');
    cfg = setLine(cfg, 'port', '2022', String(sshPort));
    cfg = setLine(cfg, 'port', '9050', String(grpcPort));
    cfg = setLine(cfg, 'bindAddress', "''", "'127.0.0.1'");
    cfg = setLine(cfg, 'proxyProtocol', 'true', 'false');
    const cfgFile = join(dir, 'config.yaml');
    writeFileSync(cfgFile, cfg);

    let out = '';
    let err = '';
    child = spawn(process.execPath, [ENTRY, '--config', cfgFile], {
      cwd: dir,
      env: { ...process.env, SECRET_FILES: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal })));
    let exit;
    exited.then((e) => (exit = e));

    const listening = () => logLines(out).find((l) => l.msg === 'SSH proxy server listening');
    const startBy = Date.now() + START_DEADLINE_MS;
    while (!exit && !listening() && Date.now() < startBy) await new Promise((r) => setTimeout(r, 50));

    if (exit) {
      const errors = logLines(out).filter((l) => (l.level ?? 0) >= 50);
      const reason = errors.map((l) => l.msg).join(' | ') || err.trim();
      check(exit.signal === null && exit.code !== 0, `refused to start with exit code ${exit.code}`);
      check(errors.length > 0 && reason !== '', `the refusal is explained in an error log line: ${reason}`);
      check(!crashMarkers.test(err) && !crashMarkers.test(out), 'no crash (no stack trace, no fatal error)');
      return;
    }
    check(Boolean(listening()), `started with the sample config (listening on 127.0.0.1:${sshPort})`);
    if (!listening()) return;

    // A login attempt: identity (identity.k8shell-staging:9020) is unreachable here.
    const logBefore = logLines(out).length;
    const { privateKey: clientKey } = generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const outcome = await new Promise((r) => {
      const c = new ssh2.Client();
      const timer = setTimeout(() => {
        c.end();
        r('no answer within the deadline');
      }, LOGIN_DEADLINE_MS);
      c.on('ready', () => {
        clearTimeout(timer);
        c.end();
        r('ready');
      });
      c.on('error', (e) => {
        clearTimeout(timer);
        r(`error: ${e.message}`);
      });
      c.on('close', () => {
        clearTimeout(timer);
        r('closed');
      });
      c.connect({
        host: '127.0.0.1',
        port: sshPort,
        username: 'smoke',
        privateKey: clientKey,
        readyTimeout: LOGIN_DEADLINE_MS,
      });
    });
    check(outcome !== 'ready' && !outcome.startsWith('no answer'), `the login is denied (${outcome})`);
    check(exit === undefined, 'the gateway is still running after the failed login');
    const explained = logLines(out)
      .slice(logBefore)
      .filter((l) => (l.level ?? 0) >= 40);
    check(
      explained.length > 0,
      `the failure is logged: ${explained.map((l) => l.msg).join(' | ') || '(nothing at warn or above)'}`,
    );

    child.kill('SIGTERM');
    const stopBy = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
    const stopped = await exited;
    clearTimeout(stopBy);
    check(
      stopped.code === 0 && stopped.signal === null,
      `SIGTERM stops it with exit 0 (got ${stopped.code})`,
    );
    check(!crashMarkers.test(err), 'no crash (no stack trace, no fatal error)');
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => {
    if (failures.length) {
      console.error(`smoke: ${failures.length} check(s) failed`);
      process.exit(1);
    }
    console.log('smoke: passed');
  },
  (e) => {
    console.error(`smoke: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
