// The policy plane end to end: the real OpenSSH client against the local stack, whose gateway asks the
// local policy service (rules in policy.yaml, real authz.v1 gRPC) through a recording test authz server.
// For every action of reference-behaviour §14.2: an allowed case works, a denied case shows the reason
// the way §23.e says (a `ssh-proxy: …` line and exit 1 on session channels, an administratively
// prohibited open failure on forwards with nothing written onto the stream, Permission denied at login,
// the reference message for workspace:create, no SSH_AUTH_SOCK for agent forwarding), and the Evaluate
// request carries §14's fields, field by field, with the user JWT of the local identity as `token`.
// Also: a policy change applies to the next action of an open ControlMaster connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { EvaluateRequest } from '../../src/gen/authz/v1/authz.js';
import { DEFAULT_BLUEPRINT } from '../../src/local/blueprints.js';
import { hashPassword } from '../../src/local/password.js';
import { LOCAL_ISSUER, loadOrCreateSecret, verifyJwtHs256 } from '../../src/local/jwt.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { copyToolArgs, ssh, startE2E, type E2E } from './harness.js';
import { startSshAgent } from './fwd-helpers/agent.js';
import { Processes, runEnv, sshArgs, startForwarder, waitWhileRunning } from './fwd-helpers/proc.js';
import {
  closedPort,
  exchange,
  freePort,
  open,
  startEcho,
  startHttp,
  type Running,
} from './fwd-helpers/servers.js';
import { startTestAuthz, type TestAuthz } from './policy-helpers/test-authz.js';

type Expected = Pick<EvaluateRequest, 'action' | 'package' | 'resource' | 'context'>;

describe('policy: every action through authz.v1 and policy.yaml', { timeout: 600_000 }, () => {
  let e: E2E;
  let authz: TestAuthz;
  let tmp: TempDir;
  let master: string;
  let secret: Buffer;
  let workspace: string;
  const procs = new Processes();
  const servers: Running[] = [];

  const policyFile = () => e.dir.join('data', 'policy.yaml');
  /** Replaces policy.yaml as an editor saving a copy does (write, then rename over the old file). */
  const setPolicy = (yaml: string) => {
    writeFileSync(`${policyFile()}.new`, yaml, { mode: 0o600 });
    renameSync(`${policyFile()}.new`, policyFile());
  };
  const logLines = () =>
    readFileSync(e.logFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const viaMaster = () => ['-S', master];
  const owner = () => ({ owner: e.user });

  /** The last request of `action` the authz server received, checked field by field. */
  function assertRequest(want: Expected, user: string): void {
    const got = [...authz.received].reverse().find((r) => r.action === want.action);
    assert.ok(got, `no ${want.action} request reached the authz service`);
    const { token, patPreview, ...fields } = got;
    assert.deepEqual(fields, want, want.action);
    assert.equal(patPreview, '');
    const claims = verifyJwtHs256(token, secret);
    assert.equal(
      typeof claims,
      'object',
      `${want.action}: token is not the identity's JWT: ${String(claims)}`,
    );
    assert.equal((claims as { sub?: unknown }).sub, user);
    assert.equal((claims as { iss?: unknown }).iss, LOCAL_ISSUER);
  }

  function wsResource(attributes: Record<string, string>): EvaluateRequest['resource'] {
    return { type: 'workspace', id: workspace, attributes };
  }

  before(async () => {
    authz = await startTestAuthz();
    e = await startE2E({
      configure: (cfg) => {
        // The gateway talks to the recording server, which asks the stack's local policy service.
        authz.target = cfg.authz.address;
        cfg.authz.address = authz.address;
      },
    });
    tmp = makeTempDir('spx-pol-');
    secret = loadOrCreateSecret(e.dir.join('data'));
    master = tmp.join('master.sock');
    const m = procs.start('ssh', [
      ...sshArgs(e),
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPath=${master}`,
      '-o',
      'ControlPersist=no',
      '-N',
      `${e.user}@127.0.0.1`,
    ]);
    await waitWhileRunning(m, () => existsSync(master), 'the control socket');
    const warm = await ssh(e, e.user, ['true'], { options: viaMaster() });
    assert.equal(warm.code, 0, warm.stderr);
    const ws = e.stack.provisioner.workspaces();
    assert.equal(ws.length, 1);
    workspace = ws[0]?.name ?? '';
  });
  after(async () => {
    await procs.stopAll();
    await Promise.all(servers.map((s) => s.close()));
    await e?.stop();
    authz?.close();
    tmp?.cleanup();
  });

  test('user:auth: allowed with the methods of its obligation; denied means no methods at all', async () => {
    setPolicy(`rules:
  - action: user:auth
    user: bob
    effect: deny
    reason: bob is suspended
`);
    authz.received.length = 0;
    const denied = await ssh(e, 'bob', ['echo in'], { key: e.keys.bob });
    assert.equal(denied.code, 255);
    assert.match(denied.stderr, /bob@127\.0\.0\.1: Permission denied \(\)\./);
    assert.equal(denied.stdout.length, 0);
    assertRequest(
      {
        action: 'user:auth',
        package: 'user',
        resource: { type: 'user', id: 'bob', attributes: { idp: 'local', org: 'local' } },
        context: { surface: 'ssh' },
      },
      'bob',
    );
    await waitFor(
      () => logLines().some((l) => l.msg === 'user:auth denied' && l.reason === 'bob is suspended'),
      {
        what: 'the user:auth denial in the log',
      },
    );
    // Everyone else: allowed, with publickey and password (no obligation in the rule: the default).
    const ok = await ssh(e, e.user, ['echo in']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.toString(), 'in\n');

    // The auth_methods obligation decides the methods: password only (bob gets one), so bob's key is
    // not even asked for, and the password logs in.
    const usersFile = e.dir.join('data', 'users.yaml');
    const hash = await hashPassword('bob-secret');
    writeFileSync(
      usersFile,
      readFileSync(usersFile, 'utf8').replace(
        '  - name: bob\n',
        `  - name: bob\n    password: ${JSON.stringify(hash)}\n`,
      ),
    );
    setPolicy(`rules:
  - action: user:auth
    user: bob
    effect: allow
    authMethods: [password]
`);
    const keyOnly = await ssh(e, 'bob', ['echo in'], { key: e.keys.bob });
    assert.equal(keyOnly.code, 255);
    assert.match(keyOnly.stderr, /Permission denied \(password\)\./);
    const withPassword = await runEnv('sshpass', [
      '-p',
      'bob-secret',
      'ssh',
      ...withoutBatchMode(sshArgs(e, { key: e.keys.bob })),
      '-o',
      'BatchMode=no',
      '-o',
      'PubkeyAuthentication=no',
      'bob@127.0.0.1',
      'echo with-password',
    ]);
    assert.equal(withPassword.code, 0, withPassword.stderr);
    assert.equal(withPassword.stdout.toString(), 'with-password\n');
  });

  test('workspace:create: denied shows the reference message and provisions nothing', async () => {
    setPolicy(`rules:
  - action: workspace:create
    user: bob
    effect: deny
    reason: bob has no workspace quota
`);
    const message =
      'Access denied: user bob is not authorized to create this workspace: bob has no workspace quota';
    const provisioned = () => logLines().filter((l) => l.msg === 'provisioning workspace').length;
    const before = { workspaces: e.stack.provisioner.workspaces().length, provisioned: provisioned() };
    authz.received.length = 0;
    const exec = await ssh(e, 'bob', ['echo ran'], { key: e.keys.bob });
    assert.equal(exec.code, 1, exec.stderr);
    assert.equal(exec.stderr, `ssh-proxy: ${message}\n`);
    assert.equal(exec.stdout.length, 0);
    assertRequest(
      {
        action: 'workspace:create',
        package: 'workspace',
        resource: { type: 'workspace', id: '', attributes: { owner: 'bob' } },
        context: { mode: 'standalone', source: 'implicit' },
      },
      'bob',
    );
    // A PTY shell sees it once, in the progress output (stdout), and ends with exit 1.
    const shell = await ssh(e, 'bob', [], { key: e.keys.bob, options: ['-tt'], input: 'echo ran\nexit\n' });
    assert.equal(shell.code, 1, shell.stderr);
    assert.ok(shell.stdout.toString().includes(message), shell.stdout.toString());
    assert.doesNotMatch(shell.stdout.toString(), /^ran\r?$/m);
    assert.equal(e.stack.provisioner.workspaces().length, before.workspaces, 'no workspace was created');
    assert.equal(provisioned(), before.provisioned, 'nothing was provisioned');

    // Allowed: every new connection asks again (the reference does, even for a running workspace).
    authz.received.length = 0;
    const ok = await ssh(e, e.user, ['echo ran']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.toString(), 'ran\n');
    assertRequest(
      {
        action: 'workspace:create',
        package: 'workspace',
        resource: { type: 'workspace', id: '', attributes: owner() },
        context: { mode: 'standalone', source: 'implicit' },
      },
      e.user,
    );
  });

  test('ssh:shell: denied with the reason on stderr and exit 1 (PTY and not); allowed runs', async () => {
    setPolicy(`rules:
  - action: ssh:shell
    effect: deny
    reason: shells are closed today
`);
    authz.received.length = 0;
    for (const tty of ['-tt', '-T']) {
      const r = await ssh(e, e.user, [], { options: [...viaMaster(), tty], input: 'echo ran; exit 3\n' });
      assert.equal(r.code, 1, `${tty}: ${r.stderr}`);
      assert.match(r.stderr, /^ssh-proxy: shell denied by policy: shells are closed today\r?$/m, tty);
      assert.doesNotMatch(r.stdout.toString(), /ran/, tty);
    }
    // The last request was the -T shell: no PTY, so no `pty` key; the blueprint is the workspace's.
    assertRequest(
      {
        action: 'ssh:shell',
        package: 'ssh',
        resource: wsResource({ ...owner(), blueprint: DEFAULT_BLUEPRINT }),
        context: {},
      },
      e.user,
    );
    setPolicy('default: allow\n');
    const ok = await ssh(e, e.user, [], {
      options: [...viaMaster(), '-tt'],
      input: 'echo $((6*7)); exit 3\n',
    });
    assert.equal(ok.code, 3, ok.stderr);
    assert.match(ok.stdout.toString(), /^42\r?$/m);
    assertRequest(
      {
        action: 'ssh:shell',
        package: 'ssh',
        resource: wsResource({ ...owner(), blueprint: DEFAULT_BLUEPRINT }),
        context: { pty: 'true' },
      },
      e.user,
    );
  });

  test('ssh:exec: a command rule denies with its reason; other commands run', async () => {
    setPolicy(`rules:
  - name: no rm -rf /*
    action: ssh:exec
    command: '*rm -rf /\\**'
    effect: deny
    reason: rm -rf /* is not allowed
`);
    authz.received.length = 0;
    const denied = await ssh(e, e.user, ["echo 'rm -rf /*'"], { options: viaMaster() });
    assert.equal(denied.code, 1, denied.stderr);
    assert.equal(denied.stderr, 'ssh-proxy: exec denied by policy: rm -rf /* is not allowed\n');
    assert.equal(denied.stdout.length, 0);
    assertRequest(
      {
        action: 'ssh:exec',
        package: 'ssh',
        resource: wsResource(owner()),
        context: { command: "echo 'rm -rf /*'" },
      },
      e.user,
    );
    const ok = await ssh(e, e.user, ['echo fine'], { options: viaMaster() });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.toString(), 'fine\n');
  });

  test('ssh:sftp: denied with the reason on stderr; allowed transfers', async () => {
    setPolicy(`rules:
  - action: ssh:sftp
    effect: deny
    reason: file transfer is off
`);
    authz.received.length = 0;
    const sftp = (input: string) =>
      runEnv('sftp', [...copyToolArgs(e, e.keys.user), '-b', '-', `${e.user}@127.0.0.1`], { input });
    const denied = await sftp('pwd\n');
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /^ssh-proxy: sftp denied by policy: file transfer is off$/m);
    assertRequest({ action: 'ssh:sftp', package: 'ssh', resource: wsResource(owner()), context: {} }, e.user);
    setPolicy('default: allow\n');
    const ok = await sftp('pwd\n');
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout.toString(), /Remote working directory: \//);
  });

  test('ssh:direct-tcpip: -W, ProxyJump and VS Code-style -T -D get an open failure and no bytes', async () => {
    const echo = await startEcho();
    const http = await startHttp('allowed through -D\n');
    servers.push(echo, http);
    const deniedPort = await closedPort();
    setPolicy(`rules:
  - action: ssh:direct-tcpip
    port: [${echo.port}, ${http.port}, ${e.port}]
    effect: allow
  - action: ssh:direct-tcpip
    effect: deny
    reason: forwarding is limited to the team's services
`);
    const prohibited =
      /open failed: administratively prohibited: denied by policy: forwarding is limited to the team's services/;
    authz.received.length = 0;

    // -W (what ProxyJump runs): the open fails, and nothing is written onto the forwarded stream.
    const w = await runEnv(
      'ssh',
      [...sshArgs(e, { logLevel: 'INFO' }), '-W', `127.0.0.1:${deniedPort}`, `${e.user}@127.0.0.1`],
      {
        input: 'SSH-2.0-probe\r\n',
      },
    );
    assert.equal(w.code, 255);
    assert.equal(w.stdout.length, 0);
    assert.match(w.stderr, prohibited);
    assertRequest(
      {
        action: 'ssh:direct-tcpip',
        package: 'ssh',
        resource: wsResource(owner()),
        context: { host: '127.0.0.1', port: String(deniedPort) },
      },
      e.user,
    );
    const wOk = await runEnv('ssh', [...sshArgs(e), '-W', `127.0.0.1:${echo.port}`, `${e.user}@127.0.0.1`], {
      input: 'ping\n',
    });
    assert.equal(wOk.code, 0, wOk.stderr);
    assert.equal(wOk.stdout.toString(), 'ping\nEOF-SEEN\n');

    // ProxyJump through the gateway to itself (allowed), and to a denied port.
    // The destination's port replaces the gateway's (ssh takes the first -p it is given).
    const jump = (port: number) =>
      runEnv('ssh', [
        ...sshArgs(e).map((a) => (a === String(e.port) ? String(port) : a)),
        '-o',
        `ProxyCommand=ssh ${sshArgs(e, { logLevel: 'INFO' }).join(' ')} -W %h:%p ${e.user}@127.0.0.1`,
        `${e.user}@127.0.0.1`,
        'echo via-jump',
      ]);
    const jumped = await jump(e.port);
    assert.equal(jumped.code, 0, jumped.stderr);
    assert.equal(jumped.stdout.toString(), 'via-jump\n');
    const jumpDenied = await jump(deniedPort);
    assert.equal(jumpDenied.code, 255);
    assert.match(jumpDenied.stderr, prohibited);
    assert.equal(jumpDenied.stdout.length, 0);

    // VS Code: `ssh -T -D PORT host bash`, then connections through the SOCKS listener.
    const dport = await freePort();
    const bg = procs.start('ssh', [
      ...sshArgs(e, { logLevel: 'DEBUG1' }),
      '-T',
      '-D',
      `127.0.0.1:${dport}`,
      `${e.user}@127.0.0.1`,
      'bash',
    ]);
    await waitWhileRunning(
      bg,
      () => new RegExp(`Local forwarding listening on \\S+ port ${dport}\\.`).test(bg.stderr()),
      'the SOCKS listener',
    );
    const curl = (port: number) =>
      runEnv('curl', [
        '-sS',
        '--max-time',
        '20',
        '--socks5-hostname',
        `127.0.0.1:${dport}`,
        `http://127.0.0.1:${port}/`,
      ]);
    const refused = await curl(deniedPort);
    assert.notEqual(refused.code, 0);
    assert.equal(refused.stdout.length, 0);
    await waitWhileRunning(bg, () => prohibited.test(bg.stderr()), 'the open failure');
    const allowed = await curl(http.port);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(allowed.stdout.toString(), 'allowed through -D\n');
    bg.child.stdin?.end('echo bash-ok\n');
    const ended = await bg.exited;
    assert.equal(ended.code, 0, bg.stderr());
    assert.equal(bg.stdout(), 'bash-ok\n', 'nothing else on the session stream');
  });

  test('ssh:direct-streamlocal: a socket rule refuses the open with its reason; others connect', async () => {
    const okSock = tmp.join('ok.sock');
    const deniedSock = tmp.join('denied.sock');
    servers.push(await startEcho(okSock), await startEcho(deniedSock));
    setPolicy(`rules:
  - action: ssh:direct-streamlocal
    socketPath: "*/denied.sock"
    effect: deny
    reason: that socket is private
`);
    authz.received.length = 0;
    // OpenSSH 9.2 has no `-W /path`: -L local.sock:/remote.sock opens the same channel type.
    const localOk = tmp.join('l-ok.sock');
    const localDenied = tmp.join('l-denied.sock');
    const fwd = await startForwarder(
      procs,
      e,
      ['-L', `${localOk}:${okSock}`, '-L', `${localDenied}:${deniedSock}`],
      [localOk, localDenied],
    );
    // Denied: the open fails with the reason; the local client gets a close and not one byte.
    const refused = await bytesUntilClosed(localDenied, 'ping\n');
    assert.equal(refused.length, 0);
    await waitWhileRunning(
      fwd,
      () =>
        /open failed: administratively prohibited: denied by policy: that socket is private/.test(
          fwd.stderr(),
        ),
      'the open failure',
    );
    assertRequest(
      {
        action: 'ssh:direct-streamlocal',
        package: 'ssh',
        resource: wsResource(owner()),
        context: { socket_path: deniedSock },
      },
      e.user,
    );
    assert.equal((await exchange(localOk, 'ping\n')).toString(), 'ping\nEOF-SEEN\n');
  });

  test('ssh:agent-forward: denied means no SSH_AUTH_SOCK while the session runs on; allowed works', async () => {
    const agent = startSshAgent(tmp.join('agent.sock'), [e.keys.user]);
    try {
      const withAgent = (cmd: string) =>
        runEnv('ssh', [...sshArgs(e, { agentSock: agent.sock }), '-A', `${e.user}@127.0.0.1`, cmd]);
      setPolicy(`rules:
  - action: ssh:agent-forward
    effect: deny
    reason: no agents in workspaces
`);
      authz.received.length = 0;
      const denied = await withAgent('echo "sock=${SSH_AUTH_SOCK:-none}"; echo still-here');
      assert.equal(denied.code, 0, denied.stderr);
      assert.equal(denied.stdout.toString(), 'sock=none\nstill-here\n');
      assertRequest(
        { action: 'ssh:agent-forward', package: 'ssh', resource: wsResource(owner()), context: {} },
        e.user,
      );
      await waitFor(
        () =>
          logLines().some(
            (l) => l.msg === 'agent forwarding denied' && l.reason === 'no agents in workspaces',
          ),
        { what: 'the agent-forward denial in the log' },
      );
      setPolicy('default: allow\n');
      const ok = await withAgent('ssh-add -l');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.toString(), agent.list());
    } finally {
      agent.stop();
    }
  });

  test('session:record: its obligation records; a deny is not an access check', async () => {
    /** Files under the local session service's recordings directory. */
    const recordings = () => {
      const dir = e.stack.sessions.recordingsDir;
      if (!existsSync(dir)) return 0;
      return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).length;
    };
    setPolicy(`rules:
  - action: session:record
    sessionType: exec
    effect: allow
    record: [exec]
`);
    const before = recordings();
    authz.received.length = 0;
    const r = await ssh(e, e.user, ['echo recorded'], { options: viaMaster() });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'recorded\n');
    assertRequest(
      {
        action: 'session:record',
        package: 'session',
        resource: wsResource({ ...owner(), blueprint: DEFAULT_BLUEPRINT }),
        context: { session_type: 'exec', session_source: 'ssh-proxy' },
      },
      e.user,
    );
    await waitFor(() => recordings() > before, { timeoutMs: 30_000, what: 'the exec recording' });

    setPolicy(`rules:
  - action: session:record
    effect: deny
    reason: not an access check
`);
    const still = await ssh(e, e.user, ['echo still-runs'], { options: viaMaster() });
    assert.equal(still.code, 0, still.stderr);
    assert.equal(still.stdout.toString(), 'still-runs\n');
  });

  test('hot reload: a policy.yaml change applies to the next action on an open ControlMaster connection', async () => {
    setPolicy('default: allow\n');
    const first = await ssh(e, e.user, ['echo before-change'], { options: viaMaster() });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.toString(), 'before-change\n');
    // Written in place (no rename), as many editors and `>` do.
    writeFileSync(
      policyFile(),
      `rules:
  - action: ssh:exec
    command: "echo after-*"
    effect: deny
    reason: changed while you were connected
`,
    );
    const second = await ssh(e, e.user, ['echo after-change'], { options: viaMaster() });
    assert.equal(second.code, 1, second.stderr);
    assert.equal(second.stderr, 'ssh-proxy: exec denied by policy: changed while you were connected\n');
    writeFileSync(policyFile(), 'default: allow\n');
    const third = await ssh(e, e.user, ['echo after-change'], { options: viaMaster() });
    assert.equal(third.code, 0, third.stderr);
    assert.equal(third.stdout.toString(), 'after-change\n');
  });
});

/** The client options without `-o BatchMode=yes` (sshpass has to answer the password prompt). */
function withoutBatchMode(args: string[]): string[] {
  const i = args.indexOf('BatchMode=yes');
  return i > 0 ? [...args.slice(0, i - 1), ...args.slice(i + 1)] : args;
}

/** Connects, sends `data`, and returns every byte received until the peer closes or resets. */
async function bytesUntilClosed(target: string, data: string): Promise<Buffer> {
  const sock = await open(target);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((resolve) => {
    sock.once('close', () => resolve());
    sock.once('error', () => resolve());
  });
  sock.write(data);
  await withTimeout(closed, 30_000, 'the refused connection to close');
  sock.destroy();
  return Buffer.concat(chunks);
}
