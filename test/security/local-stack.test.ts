// The local stack as an attacker on the same machine sees it (docs/security.md): every local service
// and every agent demands this run's token; a workspace process (bob's, through the gateway) and a
// process of another OS user (nobody) can neither read the tokens nor use any service or another
// workspace's agent; bob's sessions run as bob's own account; the agent refuses as_user spellings
// and users a workspace without sudo may not run as; a killed agent's sessions do not survive it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startE2E, ssh, type E2E } from '../e2e/harness.js';
import { WorkspaceClient } from '../../src/backends/k8shelld.js';
import { CommandDetails } from '../../src/gen/k8shelld/v1/k8shelld.js';
import { waitFor, pidAlive } from '../helpers/wait.js';

const PROBE = readFileSync(new URL('./fixtures/probe.mjs', import.meta.url), 'utf8');
const UNAUTHENTICATED = status.UNAUTHENTICATED;

interface ProbeResult {
  uid: number;
  files: Record<string, string>;
  grpc: { address: string; path: string; status: number; message: string }[];
  nats?: string;
}

interface ProbePlan {
  files: string[];
  grpc: { address: string; path: string; token?: string }[];
  nats?: string;
}

const isRoot = process.getuid?.() === 0;

describe('local stack: authenticated services, real users, agent rules', { timeout: 300_000 }, () => {
  let e: E2E;
  const agentOf = (prefix: string): string => {
    const w = e.stack.provisioner.workspaces().find((x) => x.name.startsWith(`${prefix}-`) && x.address);
    assert.ok(w?.address, `a running workspace of ${prefix}`);
    return w.address;
  };
  const plan = (extra: Partial<ProbePlan> = {}): ProbePlan => {
    const t = e.stack.tokens.files;
    const services = [
      [e.stack.identity.address, '/identity.v1.IdentityService/IssueUserToken'],
      [e.stack.identity.address, '/identity.v1.IdentityService/FindUser'],
      [e.stack.provisioner.address, '/provisioner.v1.ProvisionerService/GetWorkspacesByUserStr'],
      [e.stack.provisioner.address, '/provisioner.v1.ProvisionerService/ProvisionWorkspaceStream'],
      [e.stack.policy.address, '/authz.v1.AuthzService/Evaluate'],
      [e.stack.sessions.address, '/session.v1.SessionService/UpsertSession'],
      [agentOf(e.user), '/k8shelld.SystemService/Handshake'],
      [agentOf(e.user), '/k8shelld.SshService/Exec'],
      [agentOf('bob'), '/k8shelld.SshService/Exec'],
    ] as const;
    return {
      files: [...Object.values(t), join(e.dir.join('data'), 'ssh_host_ed25519_key')],
      grpc: services.flatMap(([address, path]) => [
        { address, path },
        { address, path, token: 'guessed-token' },
      ]),
      nats: e.stack.nats ? e.stack.nats.url.replace('nats://', '') : undefined,
      ...extra,
    };
  };
  const arg = (p: ProbePlan) => Buffer.from(JSON.stringify(p)).toString('base64');
  const assertLockedOut = (r: ProbeResult, who: string) => {
    for (const [f, outcome] of Object.entries(r.files))
      assert.equal(outcome, 'EACCES', `${who} reading ${f}`);
    for (const c of r.grpc)
      assert.equal(c.status, UNAUTHENTICATED, `${who} calling ${c.path} at ${c.address}: ${c.message}`);
    if (e.stack.nats)
      assert.match(r.nats ?? '', /^refused: -ERR 'Authorization Violation'/i, `${who} on NATS`);
  };

  before(async () => {
    e = await startE2E({ nats: true, maxWorkspacesPerUser: 3 });
    for (const login of [e.user, 'bob']) {
      const r = await ssh(e, login, ['true'], { key: login === 'bob' ? e.keys.bob : e.keys.user });
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(async () => {
    await e?.stop();
  });

  test('every service answers the gateway (right token) and nobody else', async () => {
    // Positive control from this (root) process with the real tokens: not UNAUTHENTICATED.
    const t = e.stack.tokens.files;
    const token = (f: string) => readFileSync(f, 'utf8').trim();
    const right: ProbePlan = {
      files: [],
      grpc: [
        {
          address: e.stack.identity.address,
          path: '/identity.v1.IdentityService/FindUser',
          token: token(t.identity),
        },
        { address: agentOf('bob'), path: '/k8shelld.SystemService/Handshake', token: token(t.agent) },
      ],
    };
    const ok = await runProbe(process.execPath, arg(right));
    for (const c of ok.grpc) assert.notEqual(c.status, UNAUTHENTICATED, `${c.path}: ${c.message}`);
    // Without the token, even root's own processes are refused by every service.
    const none = await runProbe(process.execPath, arg({ ...plan(), files: [] }));
    assertLockedOut(none, 'a local process without the token');
  });

  test('a process in bob’s workspace can use no local service and no agent', async () => {
    const r = await ssh(e, 'bob', ['node', '--input-type=module', '-', arg(plan())], {
      key: e.keys.bob,
      input: PROBE,
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout.toString()) as ProbeResult;
    if (isRoot) {
      assert.notEqual(res.uid, 0, 'bob runs as his own account');
      assertLockedOut(res, 'bob’s workspace');
    } else {
      // Single-tenant: bob runs as the stack's user, who can read its own tokens (documented).
      for (const c of res.grpc) assert.equal(c.status, UNAUTHENTICATED);
    }
  });

  test('a process of another OS user (nobody) can use no local service', async () => {
    // Only root can start a process as another user; as anyone else this is the same probe as above.
    const res = await runProbe(
      process.execPath,
      arg(plan()),
      isRoot ? { uid: 65534, gid: 65534 } : undefined,
    );
    if (!isRoot) return assertLockedOut({ ...res, files: {} }, 'another process');
    assert.equal(res.uid, 65534);
    assertLockedOut(res, 'nobody');
  });

  test('bob’s sessions run as bob, who owns his home and cannot read the stack’s files', async () => {
    const r = await ssh(
      e,
      'bob',
      ['id -un; id -u; stat -c %U .; cat ../workspace.json 2>&1; ls .. 2>&1; true'],
      {
        key: e.keys.bob,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const [name, uid, owner, ...rest] = r.stdout.toString().trim().split('\n');
    if (!isRoot) return assert.equal(name, e.user);
    assert.equal(name, 'bob');
    assert.notEqual(uid, '0');
    assert.equal(owner, 'bob');
    assert.match(rest.join('\n'), /Permission denied/);
  });

  test('user=root and other spellings are refused without sudo, by the gateway and by the agent', async () => {
    for (const login of ['bob~default+user=root', 'bob~default+user=root%20', `bob~default+user=${e.user}`]) {
      const r = await ssh(e, login, ['id -u'], { key: e.keys.bob });
      assert.notEqual(r.code, 0, `${login} must not run`);
      assert.doesNotMatch(r.stdout.toString(), /^0$/m);
    }
    // The agent itself, called with the gateway's token: only bob (or "") for bob's workspace.
    const [host, port] = agentOf('bob').split(':');
    const client = new WorkspaceClient(
      { podIp: host ?? '', port: Number(port), tlsEnabled: false, serverName: '' },
      { caCertPath: '', tokenFilePath: e.stack.tokens.files.agent },
    );
    try {
      const hs = await client.handshake(10_000);
      assert.match(hs.workspaceName, /^bob-/);
      const runAs = async (asUser: string) => {
        const call = client.exec(`ex-sec-${Math.random().toString(36).slice(2)}`);
        const out: string[] = [];
        const done = new Promise<{ code: number; exit?: number }>((resolve) => {
          let exit: number | undefined;
          call.on('data', (m: { response?: { $case: string; stdout?: Buffer; exitCode?: number } }) => {
            if (m.response?.$case === 'stdout' && m.response.stdout) out.push(m.response.stdout.toString());
            if (m.response?.$case === 'exitCode') exit = m.response.exitCode;
          });
          call.on('error', (err: { code: number }) => resolve({ code: err.code, exit }));
          call.on('status', (s: { code: number }) => resolve({ code: s.code, exit }));
        });
        call.write({
          request: {
            $case: 'commandDetails',
            commandDetails: CommandDetails.fromPartial({ command: 'id -un', asUser }),
          },
        });
        call.end();
        const r = await done;
        return { ...r, out: out.join('').trim() };
      };
      for (const bad of ['root', ' bob', 'bob ', 'root%20', 'BOB', '../root', '-r']) {
        const r = await runAs(bad);
        assert.equal(r.code, status.PERMISSION_DENIED, `as_user ${JSON.stringify(bad)}`);
      }
      const good = await runAs(isRoot ? 'bob' : '');
      assert.equal(good.code, status.OK);
      assert.equal(good.exit, 0);
      if (isRoot) assert.equal(good.out, 'bob');
    } finally {
      client.close();
    }
  });

  test('the per-user workspace cap refuses one more workspace', async () => {
    // bob has his default workspace; two more reach the cap of 3, the next is refused.
    for (const bp of ['w1', 'w2']) {
      const r = await ssh(e, `bob~default+workload=deployment%2F${bp}+ns=x`, ['true'], { key: e.keys.bob });
      assert.equal(r.code, 0, r.stderr);
    }
    const r = await ssh(e, 'bob~default+workload=deployment%2Fw3+ns=x', ['true'], { key: e.keys.bob });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already has 3 workspaces/);
  });

  test('a killed agent takes its sessions’ processes with it', async () => {
    const runningPid = await startHeldSession(e);
    const ws = e.stack.provisioner.workspaces().find((w) => w.name.startsWith('bob-') && w.pid);
    assert.ok(ws?.pid);
    process.kill(ws.pid, 'SIGKILL');
    await waitFor(() => !pidAlive(runningPid), {
      timeoutMs: 20_000,
      what: 'the held session’s sleep to be gone',
    });
  });
});

/** Starts `sleep` inside a long-running exec of bob's and returns its pid (the ssh keeps running). */
async function startHeldSession(e: E2E): Promise<number> {
  const { sshBaseArgs } = await import('../e2e/harness.js');
  const child = spawn('ssh', [...sshBaseArgs(e, e.keys.bob), 'bob@127.0.0.1', 'sleep 600 & echo $!; wait'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const pid = await waitFor(() => /^(\d+)$/m.exec(out)?.[1], { timeoutMs: 60_000, what: 'the sleep pid' });
  // The ssh ends when the agent dies; do not leave it behind either way.
  setTimeout(() => child.kill('SIGKILL'), 60_000).unref();
  return Number(pid);
}

function runProbe(node: string, planArg: string, ids?: { uid: number; gid: number }): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(node, ['--input-type=module', '-', planArg], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: '/',
      ...ids,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`probe exited ${code}: ${err}`));
      resolve(JSON.parse(out) as ProbeResult);
    });
    child.stdin.end(PROBE);
  });
}
