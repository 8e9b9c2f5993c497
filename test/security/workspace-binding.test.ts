// A connection never follows a workspace's old address (docs/security.md, "Workspace binding"):
// with a ControlMaster connection open, the agent is killed and a stand-in listens on its old port
// and even claims the same workspace name; the user's next command is served by the workspace's new
// agent and the stand-in never receives a call. And an agent that names another workspace is refused
// before anything is sent to it, with a security log line.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Server, ServerCredentials, status, type ServerDuplexStream } from '@grpc/grpc-js';
import { startE2E, type E2E } from '../e2e/harness.js';
import { Processes, runEnv, sshArgs, waitWhileRunning } from '../e2e/fwd-helpers/proc.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import {
  HandshakeResponse,
  SshServiceService,
  SystemServiceService,
  type HandshakeRequest,
} from '../../src/gen/k8shelld/v1/k8shelld.js';
import { startAgent } from '../../src/agent/server.js';
import { WorkspaceResolver, WorkspaceError } from '../../src/gateway/workspace.js';
import type { ProvisionerBackend, WorkspaceDetails } from '../../src/backends/provisioner.js';
import { getLogger } from '../../src/ops/log.js';
import { WorkspaceDetails as WorkspaceDetailsMsg } from '../../src/gen/common/v1/common.js';
import type { User } from '../../src/backends/identity.js';
import { parseUserStr } from '../../src/gateway/userstr.js';

/** A k8shelld stand-in on a given port that answers the handshake and records every call it gets. */
async function standIn(port: number, workspaceName: string) {
  const calls: string[] = [];
  const server = new Server();
  server.addService(SystemServiceService, {
    handshake: (call: { request: HandshakeRequest }, cb: (e: null, r: HandshakeResponse) => void) => {
      calls.push('Handshake');
      cb(
        null,
        HandshakeResponse.fromPartial({ serverVersion: 'v9-impostor', accepted: true, workspaceName }),
      );
    },
  });
  const stream = (name: string) => (call: ServerDuplexStream<unknown, unknown>) => {
    calls.push(name);
    call.emit('error', { code: status.UNAVAILABLE, details: 'impostor' });
  };
  const unary = (name: string) => (_c: unknown, cb: (e: { code: number; details: string }) => void) => {
    calls.push(name);
    cb({ code: status.UNAVAILABLE, details: 'impostor' });
  };
  server.addService(SshServiceService, {
    shell: stream('Shell'),
    exec: stream('Exec'),
    portForward: stream('PortForward'),
    unixSocket: stream('UnixSocket'),
    resizeTerminal: unary('ResizeTerminal'),
    acquireSession: unary('AcquireSession'),
    listSessions: unary('ListSessions'),
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  return { calls, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

describe('workspace binding after an agent is replaced', { timeout: 240_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  const procs = new Processes();

  before(async () => {
    e = await startE2E();
    tmp = makeTempDir('spx-imp-');
  });
  after(async () => {
    await procs.stopAll();
    await e?.stop();
    tmp?.cleanup();
  });

  test('ControlMaster open, agent killed, stand-in on the old port: the next command reaches the new agent only', async () => {
    const ctl = tmp.join('ctl');
    const host = `${e.user}@127.0.0.1`;
    const master = procs.start('ssh', [
      ...sshArgs(e),
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPath=${ctl}`,
      '-o',
      'ControlPersist=no',
      '-N',
      host,
    ]);
    await waitWhileRunning(master, () => existsSync(ctl), 'the control socket');
    const via = (cmd: string) => runEnv('ssh', [...sshArgs(e), '-S', ctl, host, cmd], { timeoutMs: 120_000 });
    const first = await via('pwd');
    assert.equal(first.code, 0, first.stderr);
    const home = first.stdout.toString().trim();

    const ws = e.stack.provisioner.workspaces().find((w) => w.pid && w.name.startsWith(`${e.user}-`));
    assert.ok(ws?.pid && ws.address);
    const oldPort = Number(ws.address.split(':').pop());
    process.kill(ws.pid, 'SIGKILL');
    await waitFor(
      () => e.stack.provisioner.workspaces().find((w) => w.name === ws.name)?.status === 'Stopped',
      {
        timeoutMs: 30_000,
        what: 'the workspace to be Stopped',
      },
    );
    // The worst case: the stand-in even claims the same workspace name.
    const fake = await standIn(oldPort, ws.name);
    try {
      const next = await via('pwd');
      assert.equal(next.code, 0, next.stderr);
      assert.equal(next.stdout.toString().trim(), home, 'served by the workspace, not the stand-in');
      assert.deepEqual(fake.calls, [], 'the stand-in received nothing');
      const now = e.stack.provisioner.workspaces().find((w) => w.name === ws.name);
      assert.notEqual(now?.address, ws.address, 'the workspace runs on a new address');
    } finally {
      await fake.close();
      await master.stop();
    }
  });

  test('an agent that names another workspace is refused and logged as a security event', async () => {
    const agent = await startAgent({
      listen: '127.0.0.1:0',
      workspaceName: 'mallory-1234567',
      logger: quiet(),
    });
    const port = Number(agent.address.split(':').pop());
    const details: WorkspaceDetails = WorkspaceDetailsMsg.fromPartial({
      name: 'alice-7654321',
      podIp: '127.0.0.1',
      port,
      serverName: 'alice-7654321.local',
      workspaceStatus: { status: 'Running' },
    });
    const provisioner: ProvisionerBackend = {
      workspacesByUserStr: () => Promise.resolve([details]),
      findWorkspace: () => Promise.resolve(details),
      provision: () => (async function* () {})(),
      start: () => (async function* () {})(),
      ready: () => Promise.resolve(),
      close: () => undefined,
    };
    const lines: string[] = [];
    const log = getLogger('binding-test').child({});
    const capture = {
      ...log,
      error: (o: unknown, msg?: string) => lines.push(`${JSON.stringify(o)} ${msg ?? ''}`),
    } as unknown as typeof log;
    capture.info = () => undefined;
    const resolver = new WorkspaceResolver(
      provisioner,
      { provisionTimeoutS: 10, handshakeTimeoutMs: 5000, k8shelld: { caCertPath: '' } },
      quiet(),
    );
    const progress = {
      startProvisioning: () => undefined,
      event: () => undefined,
      endProvisioning: () => undefined,
      userError: () => undefined,
      systemError: () => undefined,
      connecting: () => undefined,
      close: () => undefined,
    };
    const user = { username: 'alice', isValid: true, locked: false } as unknown as User;
    try {
      await assert.rejects(
        resolver.bind(user, parseUserStr('alice'), progress, new AbortController().signal, capture, () =>
          Promise.resolve(),
        ),
        (err: unknown) => err instanceof WorkspaceError && err.code === 'denied',
      );
      assert.equal(lines.length, 1);
      assert.match(lines[0] ?? '', /"security":"workspace-mismatch"/);
      assert.match(lines[0] ?? '', /mallory-1234567/);
    } finally {
      await agent.close();
    }
  });
});

function quiet() {
  const l = getLogger('binding-test');
  l.level = 'silent';
  return l;
}
