// Forking mode of the production entry (`server.forking: true`) with the real OpenSSH client: 20
// concurrent sessions each served by its own child (the parent's child table, /proc: parent, process
// group), a killed child ends only its own connection, the SIGUSR2 hand-over keeps running sessions
// alive while a new parent accepts on the same port, and SIGTERM drains (running sessions finish, new
// connections are refused, exit 0).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { Processes, waitWhileRunning, type Background } from '../fwd-helpers/proc.js';
import {
  childrenOf,
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

const SESSIONS = 20;
/** Prints the client's address, then waits for one line on stdin. */
const GATED = 'echo "started $SSH_CLIENT"; read line; echo "got $line"';

/** ppid and process group of a live process (/proc/<pid>/stat fields 4 and 5). */
function procStat(pid: number): { ppid: number; pgrp: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), pgrp: Number(f[2]) };
}

describe('forking mode, production entry', { timeout: 900_000 }, () => {
  let s: ProdServices;
  let config = '';
  let metricsUrl = '';
  let parent: GatewayProcess;
  const procs = new Processes();
  const parents: GatewayProcess[] = [];

  before(async () => {
    s = await startServices();
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}`;
    config = writeConfig(
      s.dir,
      'forking.yaml',
      s.config(await freePort(), {
        // 20 concurrent logins from one address: above the default per-source pre-auth cap (10),
        // which the parent enforces across children (test/e2e/prod/forking-preauth.test.ts).
        server: { forking: true, drainTimeout: 60, maxStartupsPerSource: 100 },
        metrics: { address: `127.0.0.1:${metricsPort}` },
      }),
    );
    parent = await GatewayProcess.start(config);
    parents.push(parent);
    const warm = await ssh(s, parent.port, s.user, ['true']);
    assert.equal(warm.code, 0, warm.stderr);
  });

  after(async () => {
    await procs.stopAll();
    await Promise.all(parents.map((p) => p.stop(5000)));
    killAll();
    await s?.stop();
  });

  /** A session running GATED through `p`; resolves with its client port once it printed `started`. */
  async function gated(p: GatewayProcess): Promise<{ bg: Background; clientPort: number }> {
    const bg = procs.start('ssh', [...sshArgs(s, p.port), `${s.user}@127.0.0.1`, GATED]);
    const m = await waitWhileRunning(
      bg,
      () => /started 127\.0\.0\.1 (\d+) /.exec(bg.stdout()),
      'the session',
      120_000,
    );
    return { bg, clientPort: Number(m[1]) };
  }

  /** The child the parent `p` started for the connection from 127.0.0.1:clientPort. */
  async function childOf(p: GatewayProcess, clientPort: number): Promise<{ pid: number; conn: string }> {
    const l = await p.waitLog(
      (l) => l.msg === 'Child process started' && l.pid === p.pid && l.peer === `127.0.0.1:${clientPort}`,
      `the child of port ${clientPort}`,
    );
    return { pid: Number(l.childPid), conn: String(l.conn) };
  }

  async function finish(bg: Background, line: string): Promise<void> {
    bg.child.stdin?.end(`${line}\n`);
    const done = await withTimeout(bg.exited, 60_000, 'the session to end');
    assert.equal(done.code, 0, bg.stderr());
    assert.ok(bg.stdout().includes(`got ${line}`), bg.stdout());
  }

  it(`${SESSIONS} concurrent OpenSSH sessions, each served by its own child process`, async () => {
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, () => gated(parent)));
    const children = await Promise.all(sessions.map((x) => childOf(parent, x.clientPort)));
    const pids = new Set(children.map((c) => c.pid));
    assert.equal(pids.size, SESSIONS, 'one child per connection');
    assert.equal(new Set(children.map((c) => c.conn)).size, SESSIONS);
    const live = new Set(childrenOf(parent.pid));
    for (const c of children) {
      assert.ok(live.has(c.pid), `child ${c.pid} is a child of the parent`);
      assert.deepEqual(procStat(c.pid), { ppid: parent.pid, pgrp: c.pid }, 'its own process group');
      // The child serves the connection under the id the parent logged.
      const auth = parent.find((l) => l.msg === 'user authenticated' && l.conn === c.conn);
      assert.equal(auth.length, 1);
      assert.equal(auth[0]?.pid, c.pid);
    }
    const m = parsePrometheusText((await httpGet(`${metricsUrl}/metrics`)).body);
    assert.ok((sampleValue(m, 'sshproxy_child_processes') ?? 0) >= SESSIONS);
    assert.ok((sampleValue(m, 'sshproxy_child_processes_started_total') ?? 0) >= SESSIONS + 1);
    await Promise.all(sessions.map((x, i) => finish(x.bg, `line-${i}`)));
    await waitFor(() => children.every((c) => !childrenOf(parent.pid).includes(c.pid)), {
      timeoutMs: 60_000,
      what: 'the children to be reaped',
    });
  });

  it('a killed child ends only its own connection; the parent logs it and keeps accepting', async () => {
    const [a, b] = await Promise.all([gated(parent), gated(parent)]);
    assert.ok(a && b);
    const ca = await childOf(parent, a.clientPort);
    process.kill(ca.pid, 'SIGKILL');
    const aDone = await withTimeout(a.bg.exited, 60_000, 'the killed connection to end');
    assert.equal(aDone.code, 255);
    await parent.waitLog(
      (l) =>
        l.msg === `Subprocess exited with error, pid: ${ca.pid}, error: signal: SIGKILL` &&
        l.conn === ca.conn,
      'the reference line for the killed child',
    );
    await finish(b.bg, 'still-here');
    const r = await ssh(s, parent.port, s.user, ['echo', 'after-crash']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'after-crash\n');
  });

  it('SIGUSR2 hand-over: running sessions go on while a new parent accepts on the same port', async () => {
    const old = parent;
    // The literal case of the issue, and a gated one the test decides when to end.
    const sleeper = procs.start('ssh', [
      ...sshArgs(s, old.port),
      `${s.user}@127.0.0.1`,
      'sleep 5; echo done',
    ]);
    const running = await gated(old);
    await old.waitLog(
      (l) => l.msg === 'exec started' && l.pid !== old.pid && childrenOf(old.pid).includes(l.pid),
      'the sleeper to run',
    );
    const next = GatewayProcess.spawn(config);
    parents.push(next);
    await next.waitLog(
      (l) => l.msg === 'Port in use (an old parent handing over?); retrying',
      'the new parent to wait',
    );
    old.signal('SIGUSR2');
    assert.deepEqual(await withTimeout(old.exited, 30_000, 'the old parent to exit'), {
      code: 0,
      signal: null,
    });
    assert.equal(await next.listening(), old.port);
    parent = next;
    // The new parent serves a new connection while the old child still serves the running session.
    const r = await ssh(s, next.port, s.user, ['echo', 'via-new-parent']);
    assert.equal(r.code, 0, `${r.stderr}\n${next.tail()}`);
    assert.equal(r.stdout.toString(), 'via-new-parent\n');
    const served = next.find((l) => l.msg === 'Child process started' && l.pid === next.pid);
    assert.equal(served.length, 1);
    // The metrics listener moved over too (the old parent released it on exit): the new counters.
    await waitFor(
      async () => {
        const m = parsePrometheusText((await httpGet(`${metricsUrl}/metrics`)).body);
        return sampleValue(m, 'sshproxy_child_processes_started_total') === 1;
      },
      { timeoutMs: 30_000, what: "the new parent's metrics" },
    );
    assert.equal(running.bg.child.exitCode, null, 'the old session is still running');
    await finish(running.bg, 'after-handover');
    const slept = await withTimeout(sleeper.exited, 60_000, 'the sleeper to finish');
    assert.equal(slept.code, 0, sleeper.stderr());
    assert.equal(sleeper.stdout(), 'done\n');
  });

  it('SIGTERM drains: new connections refused, the running session finishes, the parent exits 0', async () => {
    const p = parent;
    const running = await gated(p);
    const child = await childOf(p, running.clientPort);
    p.signal('SIGTERM');
    await p.waitLog((l) => l.msg === 'Draining: forwarding SIGTERM to children', 'the drain');
    await p.waitLog((l) => l.msg === 'Draining connection' && l.pid === child.pid, 'the child to drain');
    const refused = await ssh(s, p.port, s.user, ['true']);
    assert.equal(refused.code, 255);
    assert.match(refused.stderr, /Connection refused/);
    await finish(running.bg, 'drained');
    assert.deepEqual(await withTimeout(p.exited, 90_000, 'the parent to exit'), { code: 0, signal: null });
    assert.equal(
      p.find((l) => /^Subprocess exited with error/.test(l.msg) && l.childPid === child.pid).length,
      0,
    );
  });
});
