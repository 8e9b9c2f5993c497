// The chaos suite (docs/security.md): faults injected into real processes while real OpenSSH clients
// use the local stack. Each case asserts what the user sees (exit code and message; how long it took
// is reported, not asserted), that the gateway survives (it still answers with its version line),
// that the next login works, and that nothing is left running (the sessions' processes, the killed
// agent's children, agents no workspace owns). `chaosSuite` defines the tests; the short selection
// runs inside npm test, the full one is `npm run chaos`.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect as tcpConnect, type Server } from 'node:net';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { run, sshBaseArgs, startE2E, identityDown, identityUp, type E2E } from '../e2e/harness.js';
import { Processes, waitWhileRunning, type Background } from '../e2e/fwd-helpers/proc.js';
import { pidAlive, waitFor } from '../helpers/wait.js';
import { IDENTITY_UNAVAILABLE } from '../../src/gateway/auth.js';
import { PROVISIONER_UNAVAILABLE } from '../../src/gateway/workspace.js';
import { startFaultyProxy, type FaultyProxy, type ProxyMode } from './faulty-proxy.js';
import { startStackProcess } from '../../bench/load/stack.js';

export type ChaosCase =
  | 'agent-kill-exec'
  | 'agent-kill-shell'
  | 'agent-kill-forward'
  | 'agent-kill-sftp'
  | 'agent-stop-exec'
  | 'agent-stop-shell'
  | 'identity-kill'
  | 'identity-hang'
  | 'provisioner-kill'
  | 'provisioner-hang'
  | 'policy-kill'
  | 'policy-hang'
  | 'session-kill'
  | 'session-hang'
  | 'nats-kill'
  | 'nats-stop'
  | 'gateway-term'
  | 'gateway-kill';

export const SHORT_CASES: ChaosCase[] = ['agent-kill-exec', 'identity-hang', 'policy-kill', 'gateway-kill'];
export const ALL_CASES: ChaosCase[] = [
  'agent-kill-exec',
  'agent-kill-shell',
  'agent-kill-forward',
  'agent-kill-sftp',
  'agent-stop-exec',
  'agent-stop-shell',
  'identity-kill',
  'identity-hang',
  'provisioner-kill',
  'provisioner-hang',
  'policy-kill',
  'policy-hang',
  'session-kill',
  'session-hang',
  'nats-kill',
  'nats-stop',
  'gateway-term',
  'gateway-kill',
];

/** What one case observed (docs/security.md lists a full run's). */
export interface Outcome {
  case: ChaosCase;
  userSees: string;
  afterMs: number;
  next: string;
}

const KEEPALIVE_S = 2;
/** What the user sees when the workspace connection broke under a running session. */
const WORKSPACE_LOST = /ssh-proxy: the connection to the workspace was lost/;
/** Backend detail that must never reach the user (it belongs in the operator's log). */
const RAW_GRPC = /UNAVAILABLE:|DEADLINE_EXCEEDED|ECONNREFUSED|ECONNRESET|No connection established/;

/** The parent pid of `pid` (0 when it is gone). */
function ppidOf(pid: number): number {
  try {
    // Field 4 of /proc/<pid>/stat, after the parenthesised command name.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

/** Every descendant of `pid` (children first found by `pgrep -P`). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop() ?? 0;
    let kids: number[] = [];
    try {
      kids = execFileSync('pgrep', ['-P', String(p)])
        .toString()
        .trim()
        .split('\n')
        .map(Number);
    } catch {
      kids = []; // pgrep exits 1 when there is none
    }
    for (const k of kids) {
      if (k <= 0) continue;
      out.push(k);
      todo.push(k);
    }
  }
  return out;
}
const AUTHZ_TIMEOUT_S = 2;

export function chaosSuite(cases: ChaosCase[], outcomes: Outcome[] = []): void {
  const want = new Set(cases);
  const inStack = cases.filter((c) => !c.startsWith('gateway-'));
  describe('chaos', { timeout: 1_800_000 }, () => {
    let e: E2E;
    const procs = new Processes();
    const proxies: Record<'identity' | 'provisioner' | 'authz' | 'session', FaultyProxy> = {} as never;
    let echo: Server & { port: number };

    const sshArgv = (extra: string[] = []) => [
      ...sshBaseArgs(e, e.keys.user),
      ...extra,
      `${e.user}@127.0.0.1`,
    ];
    const login = async (what = 'echo ok') => run('ssh', [...sshArgv(), what], { timeoutMs: 120_000 });
    const assertLogin = async () => {
      const r = await login();
      assert.equal(r.stdout.toString().trim(), 'ok', `the next login works: ${r.stderr}`);
    };
    /**
     * After a fault: the gateway still answers (its version line), a login works again (a client
     * of a restarted service may first wait out its reconnect backoff: a deadline, reported), and
     * no agent runs that the provisioner does not own.
     */
    const survives = async (t: TestContext) => {
      const banner = await new Promise<string>((resolve) => {
        const s = tcpConnect({ host: '127.0.0.1', port: e.port });
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (!got.includes('\n')) return;
          s.destroy();
          resolve(got);
        });
        s.on('error', () => resolve(got));
        s.on('close', () => resolve(got));
      });
      assert.match(banner, /^SSH-2\.0-/, 'the gateway still answers');
      const t0 = Date.now();
      await waitFor(async () => (await login()).stdout.toString().trim() === 'ok', {
        timeoutMs: 90_000,
        intervalMs: 500,
        what: 'the next login to work',
      });
      t.diagnostic(`next login worked after ${Date.now() - t0} ms`);
      await waitFor(() => strayAgents().length === 0, { timeoutMs: 30_000, what: 'no stray agents' });
    };
    /** Agent processes of this stack that no workspace of the provisioner owns. */
    const strayAgents = () => {
      const owned = new Set(e.stack.provisioner.workspaces().map((w) => w.pid));
      let pids: number[] = [];
      try {
        pids = execFileSync('pgrep', ['-f', `${e.dir.path}/data/workspaces`])
          .toString()
          .trim()
          .split('\n')
          .map(Number);
      } catch {
        pids = [];
      }
      // Only agents (the direct children of this process); their sessions are checked per case.
      return pids.filter((p) => p > 0 && !owned.has(p) && ppidOf(p) === process.pid);
    };
    const agent = () => {
      const w = e.stack.provisioner.workspaces().find((x) => x.name.startsWith(`${e.user}-`) && x.pid);
      assert.ok(w?.pid, 'a running agent');
      return w;
    };
    /** Starts `ssh … cmd` in the background and waits until it printed a pid (of the sleeper). */
    const holdSession = async (cmd: string, tty = false): Promise<{ bg: Background; pid: number }> => {
      const bg = procs.start('ssh', [...sshArgv(tty ? ['-tt'] : []), cmd]);
      const pid = await waitWhileRunning(bg, () => /(\d+)/.exec(bg.stdout())?.[1], 'the session to start');
      return { bg, pid: Number(pid) };
    };
    const record = (t: TestContext, o: Omit<Outcome, 'case'> & { case?: ChaosCase }, c: ChaosCase) => {
      const full = { ...o, case: c };
      outcomes.push(full);
      t.diagnostic(`${c}: user sees "${full.userSees}" after ${full.afterMs} ms; next: ${full.next}`);
    };
    const firstLine = (s: string) => s.trim().split('\n').filter(Boolean).pop()?.slice(0, 160) ?? '(nothing)';

    before(async () => {
      if (inStack.length === 0) return;
      for (const k of ['identity', 'provisioner', 'authz', 'session'] as const)
        proxies[k] = await startFaultyProxy();
      e = await startE2E({
        nats: want.has('nats-kill') || want.has('nats-stop'),
        configure: (cfg) => {
          for (const k of ['identity', 'provisioner', 'authz', 'session'] as const) {
            proxies[k].target = cfg[k].address;
            cfg[k].address = proxies[k].address;
          }
          cfg.k8shelld.keepaliveTime = KEEPALIVE_S;
          cfg.k8shelld.keepaliveTimeout = KEEPALIVE_S;
          cfg.authz.timeout = AUTHZ_TIMEOUT_S;
          cfg.server.SSHHandshakeTimeout = 10;
        },
      });
      echo = await new Promise((resolve) => {
        const s = createServer((c) => {
          c.on('error', () => undefined);
          // An endless stream toward the client, so a transfer is in flight when the agent dies.
          const chunk = Buffer.alloc(16 * 1024, 1);
          const pump = () => {
            while (c.write(chunk));
          };
          c.on('drain', pump);
          pump();
        });
        s.listen(0, '127.0.0.1', () => {
          const a = s.address();
          resolve(Object.assign(s, { port: typeof a === 'object' && a ? a.port : 0 }));
        });
      });
      await assertLogin();
    });
    after(async () => {
      await procs.stopAll();
      echo?.close();
      await e?.stop();
      for (const p of Object.values(proxies)) await p?.close();
    });

    const agentCase = (c: ChaosCase, sig: 'SIGKILL' | 'SIGSTOP', kind: 'exec' | 'shell') =>
      test(`agent ${sig} during ${kind}`, async (t) => {
        const held = await holdSession(
          kind === 'exec' ? 'sleep 600 & echo $!; wait' : 'sleep 600 & echo $!; wait; exit',
          kind === 'shell',
        );
        const a = agent();
        const t0 = Date.now();
        process.kill(a.pid ?? 0, sig);
        try {
          const ex = await held.bg.exited;
          const afterMs = Date.now() - t0;
          assert.equal(ex.code, 1, `the session ends with status 1: ${held.bg.stderr()}`);
          assert.match(held.bg.stderr(), WORKSPACE_LOST);
          if (sig === 'SIGSTOP') process.kill(a.pid ?? 0, 'SIGCONT');
          const next = await login();
          record(
            t,
            {
              userSees: `exit ${ex.code}: ${firstLine(held.bg.stderr())}`,
              afterMs,
              next: next.code === 0 ? 'login works' : firstLine(next.stderr),
            },
            c,
          );
          if (sig === 'SIGKILL') assert.equal(next.stdout.toString().trim(), 'ok', next.stderr);
          else
            await waitFor(async () => (await login()).stdout.toString().trim() === 'ok', {
              timeoutMs: 60_000,
              what: 'logins to work again',
            });
          await waitFor(() => !pidAlive(held.pid), {
            timeoutMs: 30_000,
            what: 'the session’s sleep to be gone',
          });
          if (sig === 'SIGKILL') assert.ok(!pidAlive(a.pid ?? 0), 'the killed agent is gone');
          await survives(t);
        } finally {
          try {
            process.kill(a.pid ?? 0, 'SIGCONT');
          } catch {
            // gone
          }
        }
      });

    if (want.has('agent-kill-exec')) agentCase('agent-kill-exec', 'SIGKILL', 'exec');
    if (want.has('agent-kill-shell')) agentCase('agent-kill-shell', 'SIGKILL', 'shell');
    if (want.has('agent-stop-exec')) agentCase('agent-stop-exec', 'SIGSTOP', 'exec');
    if (want.has('agent-stop-shell')) agentCase('agent-stop-shell', 'SIGSTOP', 'shell');

    if (want.has('agent-kill-forward'))
      test('agent SIGKILL during a -L transfer', async (t) => {
        const localPort = 20000 + Math.floor(Math.random() * 20000);
        const fwd = procs.start('ssh', [
          ...sshArgv(['-N', '-L', `127.0.0.1:${localPort}:127.0.0.1:${echo.port}`]),
        ]);
        const sock = await waitWhileRunning(
          fwd,
          () =>
            new Promise<ReturnType<typeof tcpConnect> | undefined>((r) => {
              const s = tcpConnect({ host: '127.0.0.1', port: localPort });
              s.once('connect', () => r(s));
              s.once('error', () => r(undefined));
            }),
          'the forward to listen',
        );
        let got = 0;
        sock.on('data', (d: Buffer) => (got += d.length));
        const closed = new Promise<void>((r) => sock.once('close', () => r()));
        await waitFor(() => got > 1 << 20, { timeoutMs: 60_000, what: 'a transfer in flight' });
        const killed = agent().pid ?? 0;
        const children = descendants(killed);
        const t0 = Date.now();
        process.kill(killed, 'SIGKILL');
        await closed;
        const afterMs = Date.now() - t0;
        // The user's SSH connection outlives the workspace connection, and the same forward works
        // again once the workspace is back (the next channel re-resolves it).
        assert.equal(fwd.child.exitCode, null, `ssh -L is still connected: ${fwd.stderr()}`);
        await waitFor(
          () =>
            new Promise<boolean>((resolve) => {
              const s = tcpConnect({ host: '127.0.0.1', port: localPort });
              let n = 0;
              s.on('data', (d: Buffer) => {
                n += d.length;
                if (n <= 1 << 16) return;
                s.destroy();
                resolve(true);
              });
              s.on('error', () => resolve(false));
              s.on('close', () => resolve(n > 1 << 16));
            }),
          { timeoutMs: 90_000, intervalMs: 500, what: 'data through the same forward again' },
        );
        await waitFor(() => !pidAlive(killed) && children.every((p) => !pidAlive(p)), {
          timeoutMs: 30_000,
          what: 'the killed agent and its children to be gone',
        });
        const next = await login();
        record(
          t,
          {
            userSees: `forwarded connection closed after ${(got / 2 ** 20).toFixed(1)} MiB`,
            afterMs,
            next: next.code === 0 ? 'login works' : firstLine(next.stderr),
          },
          'agent-kill-forward',
        );
        assert.equal(next.stdout.toString().trim(), 'ok');
        await fwd.stop();
        await survives(t);
      });

    if (want.has('agent-kill-sftp'))
      test('agent SIGKILL during sftp', async (t) => {
        const mk = await login('head -c 300000000 /dev/zero > big.bin && echo ok');
        assert.equal(mk.stdout.toString().trim(), 'ok', mk.stderr);
        const { copyToolArgs } = await import('../e2e/harness.js');
        const sftp = procs.start('sftp', [...copyToolArgs(e, e.keys.user), '-b', '-', `${e.user}@127.0.0.1`]);
        sftp.child.stdin?.write(`get big.bin ${e.dir.join('big.copy')}\n`);
        sftp.child.stdin?.end();
        const { statSync } = await import('node:fs');
        await waitWhileRunning(
          sftp,
          () => {
            try {
              return statSync(e.dir.join('big.copy')).size > 1 << 20;
            } catch {
              return false;
            }
          },
          'the download to be under way',
        );
        const killed = agent().pid ?? 0;
        const children = descendants(killed);
        assert.ok(children.length > 0, 'the sftp server runs under the agent');
        const t0 = Date.now();
        process.kill(killed, 'SIGKILL');
        const ex = await sftp.exited;
        const afterMs = Date.now() - t0;
        assert.notEqual(ex.code, 0, 'the download fails');
        assert.match(sftp.stderr(), /Connection closed/);
        await waitFor(() => !pidAlive(killed) && children.every((p) => !pidAlive(p)), {
          timeoutMs: 30_000,
          what: 'the killed agent and its sftp server to be gone',
        });
        const next = await login();
        record(
          t,
          {
            userSees: `sftp exit ${ex.code}: ${firstLine(sftp.stderr())}`,
            afterMs,
            next: next.code === 0 ? 'login works' : firstLine(next.stderr),
          },
          'agent-kill-sftp',
        );
        assert.equal(next.stdout.toString().trim(), 'ok');
        await survives(t);
      });

    const serviceCase = (
      c: ChaosCase,
      svc: keyof typeof proxies,
      mode: ProxyMode,
      probe: () => Promise<{ ok: boolean; text: string }>,
      expect: (seen: { ok: boolean; text: string }) => void,
    ) =>
      test(`${svc} ${mode === 'down' ? 'killed' : 'hung'}, then back`, async (t) => {
        // A bound workspace first, so only what needs the service is affected.
        await assertLogin();
        proxies[svc].set(mode);
        const t0 = Date.now();
        let seen: { ok: boolean; text: string };
        try {
          seen = await probe();
        } finally {
          proxies[svc].set('up');
        }
        const afterMs = Date.now() - t0;
        record(t, { userSees: seen.text, afterMs, next: 'login works' }, c);
        expect(seen);
        assert.doesNotMatch(seen.text, RAW_GRPC, 'no gRPC detail reaches the user');
        await survives(t);
      });

    const loginProbe = async () => {
      const r = await login();
      return {
        ok: r.code === 0,
        text: r.code === 0 ? 'login works' : `exit ${r.code}: ${firstLine(r.stderr)}`,
      };
    };
    const loginWorks = (seen: { ok: boolean; text: string }) => assert.ok(seen.ok, seen.text);
    /** A hung or dead identity: the login ends with the gateway's message, not `Permission denied`. */
    const identityMessage = (seen: { ok: boolean; text: string }) => {
      assert.equal(seen.ok, false, 'no login without identity');
      assert.ok(seen.text.startsWith('exit 255: '), seen.text);
      assert.ok(seen.text.includes(IDENTITY_UNAVAILABLE), seen.text);
    };
    /** Authorization unavailable: fail closed, the client is offered no method. */
    const deniedClosed = (seen: { ok: boolean; text: string }) => {
      assert.equal(seen.ok, false, 'no login without authorization');
      assert.match(seen.text, /^exit 255: .*Permission denied/);
    };
    const provisionerMessage = (seen: { ok: boolean; text: string }) => {
      assert.equal(seen.ok, false, 'no new workspace without the provisioner');
      assert.ok(seen.text.startsWith('exit 1: '), seen.text);
      assert.ok(seen.text.includes(PROVISIONER_UNAVAILABLE), seen.text);
    };
    const newWorkspaceProbe = async () => {
      const r = await run(
        'ssh',
        [
          ...sshBaseArgs(e, e.keys.user),
          `${e.user}~default+workload=deployment%2Fchaos${Date.now()}+ns=x@127.0.0.1`,
          'echo ok',
        ],
        { timeoutMs: 200_000 },
      );
      return {
        ok: r.code === 0,
        text: r.code === 0 ? 'login works' : `exit ${r.code}: ${firstLine(r.stderr)}`,
      };
    };

    if (want.has('identity-kill'))
      test('identity killed (process gone), then restarted', async (t) => {
        const address = await identityDown(e);
        const t0 = Date.now();
        const seen = await loginProbe();
        const afterMs = Date.now() - t0;
        await identityUp(e, address);
        record(t, { userSees: seen.text, afterMs, next: 'login works' }, 'identity-kill');
        identityMessage(seen);
        assert.doesNotMatch(seen.text, RAW_GRPC, 'no gRPC detail reaches the user');
        await survives(t);
      });
    if (want.has('identity-hang'))
      serviceCase('identity-hang', 'identity', 'hang', loginProbe, identityMessage);
    if (want.has('provisioner-kill'))
      serviceCase('provisioner-kill', 'provisioner', 'down', newWorkspaceProbe, provisionerMessage);
    if (want.has('provisioner-hang'))
      serviceCase(
        'provisioner-hang',
        'provisioner',
        'hang',
        async () => {
          // A hung provisioner holds the lookup until its deadline; then the user gets the message.
          const r = await run(
            'ssh',
            [
              ...sshBaseArgs(e, e.keys.user),
              '-o',
              'ConnectTimeout=10',
              `${e.user}~default+workload=deployment%2Fhang${Date.now()}+ns=x@127.0.0.1`,
              'echo ok',
            ],
            { timeoutMs: 200_000 },
          );
          return {
            ok: r.code === 0,
            text: r.code === 0 ? 'login works' : `exit ${r.code}: ${firstLine(r.stderr)}`,
          };
        },
        provisionerMessage,
      );
    if (want.has('policy-kill')) serviceCase('policy-kill', 'authz', 'down', loginProbe, deniedClosed);
    if (want.has('policy-hang')) serviceCase('policy-hang', 'authz', 'hang', loginProbe, deniedClosed);
    // The session store is best effort: logins go on without it.
    if (want.has('session-kill')) serviceCase('session-kill', 'session', 'down', loginProbe, loginWorks);
    if (want.has('session-hang')) serviceCase('session-hang', 'session', 'hang', loginProbe, loginWorks);

    const natsCase = (c: ChaosCase, sig: 'SIGKILL' | 'SIGSTOP') =>
      test(`NATS ${sig}`, async (t) => {
        const pid = e.stack.nats?.pid;
        assert.ok(pid, 'nats-server runs');
        process.kill(pid, sig);
        const t0 = Date.now();
        const seen = await loginProbe();
        const afterMs = Date.now() - t0;
        if (sig === 'SIGSTOP') process.kill(pid, 'SIGCONT');
        record(t, { userSees: seen.text, afterMs, next: seen.ok ? 'login works' : 'failed' }, c);
        assert.ok(seen.ok, 'logins do not depend on NATS');
        await survives(t);
      });
    if (want.has('nats-stop')) natsCase('nats-stop', 'SIGSTOP');
    if (want.has('nats-kill')) natsCase('nats-kill', 'SIGKILL');

    const gatewayCase = (c: ChaosCase, sig: 'SIGTERM' | 'SIGKILL') =>
      test(`gateway ${sig} with sessions open`, async (t) => {
        const stack = await startStackProcess({ set: { 'server.drainTimeout': 3 } });
        const ssh = (extra: string[], cmd: string) => [
          '-F',
          '/dev/null',
          '-p',
          String(stack.info.port),
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'BatchMode=yes',
          '-o',
          'IdentitiesOnly=yes',
          '-i',
          stack.key,
          ...extra,
          `${stack.user}@127.0.0.1`,
          cmd,
        ];
        try {
          const sessions = await Promise.all(
            [0, 1, 2].map(async () => {
              const bg = procs.start('ssh', ssh([], 'sleep 600 & echo $!; wait'));
              const pid = await waitWhileRunning(bg, () => /(\d+)/.exec(bg.stdout())?.[1], 'a session');
              return { bg, pid: Number(pid) };
            }),
          );
          const agents = execFileSync('pgrep', ['-f', `${stack.dir.path}/data/workspaces`])
            .toString()
            .trim()
            .split('\n')
            .map(Number);
          const t0 = Date.now();
          stack.child.kill(sig);
          const exits = await Promise.all(sessions.map((s) => s.bg.exited));
          const afterMs = Date.now() - t0;
          // OpenSSH's status for a connection that ended under it, with its own line saying so.
          for (const [i, x] of exits.entries()) {
            assert.equal(x.code, 255, sessions[i]?.bg.stderr());
            assert.match(
              sessions[i]?.bg.stderr() ?? '',
              /closed by remote host|Disconnected from|Connection reset/,
            );
          }
          record(
            t,
            {
              userSees: `exit ${exits.map((x) => x.code).join('/')}: ${firstLine(sessions[0]?.bg.stderr() ?? '')}`,
              afterMs,
              next: 'a new gateway',
            },
            c,
          );
          await waitFor(() => sessions.every((s) => !pidAlive(s.pid)) && agents.every((p) => !pidAlive(p)), {
            timeoutMs: 30_000,
            what: 'sessions and agents to be gone',
          });
        } finally {
          await stack.stop();
        }
      });
    if (want.has('gateway-term')) gatewayCase('gateway-term', 'SIGTERM');
    if (want.has('gateway-kill')) gatewayCase('gateway-kill', 'SIGKILL');
  });
}
