// Graceful drain of the production entry in in-process mode, with the real OpenSSH client: after
// SIGTERM the listener is closed and /readyz is 503, an open shell keeps working and new channels on
// its connection are still served, and the process exits 0 as soon as the shell ends; a connection
// still open when the drain timeout passes gets the SSH disconnect "ssh-proxy is restarting;
// reconnect" (OpenSSH prints it at LogLevel INFO); a second signal ends everything at once.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { Processes, waitWhileRunning, type Background } from '../fwd-helpers/proc.js';
import {
  freePort,
  GatewayProcess,
  httpGet,
  killAll,
  ssh,
  sshArgs,
  startServices,
  writeConfig,
  type ProdServices,
} from './harness.js';

const RESTART = 'ssh-proxy is restarting; reconnect';

describe('in-process drain, production entry', { timeout: 600_000 }, () => {
  let s: ProdServices;
  const procs = new Processes();
  const gateways: GatewayProcess[] = [];

  before(async () => {
    s = await startServices();
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(gateways.map((g) => g.stop(5000)));
    killAll();
    await s?.stop();
  });

  async function gateway(drainTimeout: number, metricsPort?: number): Promise<GatewayProcess> {
    const config = s.config(await freePort(), {
      server: { drainTimeout },
      ...(metricsPort ? { metrics: { address: `127.0.0.1:${metricsPort}` } } : {}),
    });
    const g = await GatewayProcess.start(writeConfig(s.dir, `gateway-${gateways.length}.yaml`, config));
    gateways.push(g);
    // The workspace is running before a shell is opened, so the shell is ready at once.
    const warm = await ssh(s, g.port, s.user, ['true']);
    assert.equal(warm.code, 0, warm.stderr);
    return g;
  }

  /** An interactive PTY shell (stdin is the test's); resolves once it ran a command. */
  async function shell(g: GatewayProcess, extra: string[] = []): Promise<Background> {
    const bg = procs.start('ssh', [
      ...sshArgs(s, g.port, { logLevel: 'INFO', extra }),
      '-tt',
      `${s.user}@127.0.0.1`,
    ]);
    // The PTY echoes what is typed; only the shell prints 42.
    bg.child.stdin?.write('echo $((40+2))-ready\n');
    await waitWhileRunning(bg, () => bg.stdout().includes('42-ready'), 'the shell', 60_000);
    return bg;
  }

  it('an open shell survives SIGTERM, its connection still opens channels, /readyz is 503, then exit 0', async () => {
    const metricsPort = await freePort();
    const g = await gateway(120, metricsPort);
    const sock = s.dir.join('mux.sock');
    const sh = await shell(g, [
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPath=${sock}`,
      '-o',
      'ControlPersist=no',
    ]);
    await waitFor(() => existsSync(sock), { timeoutMs: 20_000, what: 'the control socket' });
    const ready0 = await httpGet(`http://127.0.0.1:${metricsPort}/readyz`);
    assert.equal(ready0.status, 200, ready0.body);

    g.signal('SIGTERM');
    await g.waitLog((l) => l.msg === 'draining: waiting for connections to end', 'the drain to start');
    const ready = await httpGet(`http://127.0.0.1:${metricsPort}/readyz`);
    assert.equal(ready.status, 503);
    assert.ok((JSON.parse(ready.body) as { failed: string[] }).failed.includes('not_draining'), ready.body);
    const m = parsePrometheusText((await httpGet(`http://127.0.0.1:${metricsPort}/metrics`)).body);
    assert.equal(sampleValue(m, 'sshproxy_draining'), 1);

    // No new connections …
    const fresh = await ssh(s, g.port, s.user, ['true']);
    assert.equal(fresh.code, 255);
    assert.match(fresh.stderr, /Connection refused/);
    // … but a new channel on the open connection is served.
    const second = await ssh(s, g.port, s.user, ['echo', 'second-channel'], {
      extra: ['-o', 'ControlMaster=no', '-o', `ControlPath=${sock}`],
    });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout.toString(), 'second-channel\n');

    // The shell goes on until it exits by itself.
    sh.child.stdin?.write('echo $((6*7))-still-here; exit 3\n');
    const done = await withTimeout(sh.exited, 60_000, 'the shell to exit');
    assert.ok(sh.stdout().includes('42-still-here'), sh.stdout());
    assert.equal(done.code, 3, sh.stderr());
    const exit = await withTimeout(g.exited, 60_000, 'the gateway to exit');
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(
      g.find((l) => l.msg.startsWith('drain timeout')).length,
      0,
      'ended before the drain timeout',
    );
    assert.ok(!sh.stderr().includes(RESTART));
  });

  it('a connection still open after drainTimeout gets "ssh-proxy is restarting; reconnect"; exit 0', async () => {
    const g = await gateway(3);
    const sh = await shell(g);
    g.signal('SIGTERM');
    const done = await withTimeout(sh.exited, 60_000, 'the shell to be disconnected');
    assert.equal(done.code, 255);
    assert.match(
      sh.stderr(),
      new RegExp(`Received disconnect from 127\\.0\\.0\\.1 port \\d+:11: ${RESTART}`),
    );
    const exit = await withTimeout(g.exited, 60_000, 'the gateway to exit');
    assert.deepEqual(exit, { code: 0, signal: null });
    const timeout = g.find((l) => l.msg === 'drain timeout: disconnecting the rest');
    assert.equal(timeout.length, 1);
    assert.equal(timeout[0]?.connections, 1);
  });

  it('a second signal during the drain disconnects everyone at once', async () => {
    const g = await gateway(120);
    const sh = await shell(g);
    g.signal('SIGTERM');
    await g.waitLog((l) => l.msg === 'draining: waiting for connections to end', 'the drain to start');
    g.signal('SIGINT');
    const done = await withTimeout(sh.exited, 60_000, 'the shell to be disconnected');
    assert.equal(done.code, 255);
    const exit = await withTimeout(g.exited, 60_000, 'the gateway to exit');
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.equal(g.find((l) => l.msg === 'Second shutdown signal: disconnecting everyone now').length, 1);
  });
});
