// The local provisioner over real gRPC on loopback, with real agent processes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { credentials, status, type ClientReadableStream } from '@grpc/grpc-js';
import type { WorkspaceDetails } from '../../src/gen/common/v1/common.js';
import type {
  GetWorkspacesResponse,
  ProvisionEvent,
  ProvisionWorkspaceResponse,
} from '../../src/gen/provisioner/v1/provisioner.js';
import { ProvisionerServiceClient } from '../../src/gen/provisioner/v1/provisioner.js';
import { parseUserStr, workspaceNameFor } from '../../src/gateway/userstr.js';
import { startLocalProvisioner, type LocalProvisioner } from '../../src/local/provisioner.js';
import { tempDirFor } from '../helpers/tmp.js';
import { pidAlive, waitFor } from '../helpers/wait.js';
import { captureLogger, grpcFailure, unaryP } from './helpers.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const realAgent = `${repo}src/cli/agent.ts`;
const fakeAgent = `${repo}test/local/fixtures/fake-agent.ts`;
// The real agent CLI when it exists, else the test fixture that speaks only Handshake.
const AGENT = ['--import', 'tsx', existsSync(realAgent) ? realAgent : fakeAgent];
const NEVER_READY = ['--import', 'tsx', fakeAgent, '--never-ready'];

interface Collected {
  messages: ProvisionWorkspaceResponse[];
  handshake: { workspace: string; jobid: string; error: string } | undefined;
  events: ProvisionEvent[];
}

function collect(stream: ClientReadableStream<ProvisionWorkspaceResponse>): Promise<Collected> {
  return new Promise((resolve, reject) => {
    const messages: ProvisionWorkspaceResponse[] = [];
    stream.on('data', (m: ProvisionWorkspaceResponse) => messages.push(m));
    stream.on('error', reject);
    stream.on('end', () => {
      const first = messages[0]?.data;
      const events = messages.flatMap((m) => (m.data?.$case === 'event' ? [m.data.event] : []));
      resolve({ messages, handshake: first?.$case === 'handshake' ? first.handshake : undefined, events });
    });
  });
}

/** Pids of live processes whose command line mentions `needle` (from /proc; Linux). */
function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(needle)) out.push(Number(d));
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
}

const nameOf = (userstr: string) => workspaceNameFor(parseUserStr(userstr));

function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

function lastStatus(events: ProvisionEvent[]): ProvisionEvent | undefined {
  return events.filter((e) => e.type === 'status').at(-1);
}

describe('local provisioner', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-prov-');
  const dataDir = tmp.join('data');
  let prov: LocalProvisioner;
  let client: ProvisionerServiceClient;
  const pids = new Set<number>();

  before(async () => {
    prov = await startLocalProvisioner({ dataDir, agentCommand: AGENT, logger: captureLogger().logger });
    client = new ProvisionerServiceClient(prov.address, credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await prov?.close();
  });

  const provision = (
    userstr: string,
    opts: { timeout?: number; progress?: boolean; events?: boolean } = {},
  ) =>
    collect(
      client.provisionWorkspaceStream({
        userstr,
        timeout: opts.timeout ?? 60,
        sendProgress: opts.progress ?? true,
        sendEvents: opts.events ?? true,
      }),
    );
  const start = (workspace: string) =>
    collect(client.startWorkspaceStream({ workspace, timeout: 60, sendProgress: true, sendEvents: true }));
  const byUserStr = (userstr: string) =>
    unaryP<GetWorkspacesResponse>((cb) => client.getWorkspacesByUserStr({ userstr }, cb));
  const find = (workspace: string) =>
    unaryP<WorkspaceDetails>((cb) => client.findWorkspace({ workspace }, cb));

  test('provisioning streams a handshake, progress and Running; the agent accepts connections', async () => {
    const name = nameOf('alice');
    assert.match(name, /^alice-[0-9a-f]{7}$/);
    const r = await provision('alice');
    assert.equal(r.messages[0]?.data?.$case, 'handshake', 'first message is the handshake');
    assert.equal(r.handshake?.workspace, name);
    assert.equal(r.handshake?.error, '');
    assert.match(r.handshake?.jobid ?? '', /^job-[0-9a-f]+$/);
    assert.ok(r.events.some((e) => e.type === 'event' && e.message === 'Creating workspace directory'));
    assert.deepEqual(
      r.events.filter((e) => e.type === 'progress').map((e) => e.status),
      ['0', '30', '60', '100'],
    );
    const statuses = r.events.filter((e) => e.type === 'status').map((e) => e.status);
    assert.deepEqual(statuses, ['Starting', 'Running']);
    const running = lastStatus(r.events);
    assert.equal(running?.objectName, name);
    for (const e of r.events)
      assert.ok(!Number.isNaN(Date.parse(e.timestamp)), `RFC 3339 timestamp ${e.timestamp}`);

    const list = await byUserStr('alice');
    assert.equal(list.workspaces.length, 1);
    const ws = list.workspaces[0];
    assert.equal(ws?.name, name);
    assert.equal(ws?.workspaceStatus?.status, 'Running');
    assert.equal(ws?.podIp, '127.0.0.1');
    assert.equal(ws?.tlsEnabled, false);
    assert.equal(ws?.serverName, `${name}.local`);
    assert.equal(ws?.username, 'alice');
    assert.equal(ws?.blueprint, 'default');
    assert.ok(ws?.appVersion, 'app_version is the agent version');
    assert.ok((ws?.port ?? 0) > 0);
    const sock = await tcpConnect(ws?.port ?? 0);
    sock.destroy();
    assert.equal((await find(name)).workspaceStatus?.status, 'Running');
    assert.ok(existsSync(`${dataDir}/workspaces/${name}/workspace.json`));
    const info = prov.workspaces().find((w) => w.name === name);
    assert.ok(info?.pid && pidAlive(info.pid));
    pids.add(info.pid);
  });

  test('provisioning an existing workspace is AlreadyExists in the handshake', async () => {
    const r = await provision('alice');
    assert.match(
      r.handshake?.error ?? '',
      /^rpc error: code = AlreadyExists desc = workspace ".*" already exists$/,
    );
    assert.equal(r.events.length, 0);
  });

  test('an unknown blueprint fails with a status Error event', async () => {
    const r = await provision('alice~nope');
    assert.equal(r.handshake?.error, '');
    const st = lastStatus(r.events);
    assert.equal(st?.status, 'Error');
    assert.equal(st?.message, 'unknown blueprint "nope"');
    assert.equal((await byUserStr('alice~nope')).workspaces.length, 0);
  });

  test('two concurrent provisions of one workspace share one start and one agent', async () => {
    writeFileSync(`${dataDir}/blueprints.yaml`, 'blueprints: [dev]\n');
    const name = nameOf('carol~dev');
    const [a, b] = await Promise.all([provision('carol~dev'), provision('carol~dev', { progress: false })]);
    assert.equal(lastStatus(a.events)?.status, 'Running');
    assert.equal(lastStatus(b.events)?.status, 'Running');
    assert.equal(a.handshake?.jobid, b.handshake?.jobid);
    assert.ok(!b.events.some((e) => e.type === 'progress'), 'send_progress=false means no progress events');
    const mine = prov.workspaces().filter((w) => w.name === name);
    assert.equal(mine.length, 1);
    assert.ok(mine[0]?.pid && pidAlive(mine[0].pid));
    pids.add(mine[0].pid);
    const starts = readFileSync(`${dataDir}/workspaces/${name}/agent.log`, 'utf8').match(
      /--- agent starting/g,
    );
    assert.equal(starts?.length, 1, 'exactly one agent was spawned');
    assert.equal((await byUserStr('carol~dev')).workspaces[0]?.blueprint, 'dev');
  });

  test('an agent that dies by itself leaves the workspace Stopped; Start brings it back', async () => {
    const name = nameOf('alice');
    const before = prov.workspaces().find((w) => w.name === name);
    assert.ok(before?.pid);
    process.kill(before.pid, 'SIGKILL');
    await waitFor(() => prov.workspaces().find((w) => w.name === name)?.status === 'Stopped', {
      what: 'workspace Stopped after its agent died',
    });
    const listed = (await byUserStr('alice')).workspaces[0];
    assert.equal(listed?.workspaceStatus?.status, 'Stopped');
    assert.equal(listed?.port, 0);
    const r = await start(name);
    assert.equal(r.handshake?.workspace, name);
    assert.equal(lastStatus(r.events)?.status, 'Running');
    const after = prov.workspaces().find((w) => w.name === name);
    assert.ok(after?.pid && after.pid !== before.pid);
    pids.add(after.pid);
    // Starting a running workspace is a no-op that reports Running.
    const again = await start(name);
    assert.equal(lastStatus(again.events)?.status, 'Running');
    assert.equal(prov.workspaces().find((w) => w.name === name)?.pid, after.pid);
  });

  test('unknown workspaces and bad input are clear errors', async () => {
    const e = await grpcFailure(find('nobody-0000000'));
    assert.equal(e.code, status.NOT_FOUND);
    assert.match(e.details, /nobody-0000000.*not found/);
    const r = await start('nobody-0000000');
    assert.match(r.handshake?.error ?? '', /^rpc error: code = NotFound desc = /);
    assert.equal((await byUserStr('nobody')).workspaces.length, 0);
    const bad = await grpcFailure(byUserStr('alice~a+b'));
    assert.equal(bad.code, status.INVALID_ARGUMENT);
    assert.match(bad.details, /invalid user string/);
    const badProv = await provision('~x');
    assert.match(
      badProv.handshake?.error ?? '',
      /^rpc error: code = InvalidArgument desc = invalid user string/,
    );
  });

  test('a named workspace is never provisioned, but reaches an existing workspace of its owner', async () => {
    const r = await provision('alice~pod=ws1');
    assert.equal(lastStatus(r.events)?.status, 'Error');
    assert.match(lastStatus(r.events)?.message ?? '', /never provisioned/);
    const name = nameOf('alice');
    assert.equal((await byUserStr(`alice~pod=${name}`)).workspaces[0]?.name, name);
    assert.equal((await byUserStr(`bob~pod=${name}`)).workspaces.length, 0, 'not reachable by another user');
  });

  test('close() stops every agent', async () => {
    const live = prov.workspaces().flatMap((w) => (w.pid ? [w.pid] : []));
    for (const p of live) pids.add(p);
    assert.ok(pids.size >= 3);
    await prov.close();
    for (const p of pids) assert.equal(pidAlive(p), false, `agent ${p} is gone`);
    assert.deepEqual(processesMentioning(`${dataDir}/workspaces/`), [], 'no agent process is left');
    assert.ok(prov.workspaces().every((w) => w.status === 'Stopped' && w.pid === undefined));
  });

  test('a new provisioner on the same data directory knows the workspaces as Stopped', async () => {
    const again = await startLocalProvisioner({
      dataDir,
      agentCommand: AGENT,
      logger: captureLogger().logger,
    });
    const c = new ProvisionerServiceClient(again.address, credentials.createInsecure());
    try {
      const listed = await unaryP<GetWorkspacesResponse>((cb) =>
        c.getWorkspacesByUserStr({ userstr: 'carol~dev' }, cb),
      );
      assert.equal(listed.workspaces[0]?.name, nameOf('carol~dev'));
      assert.equal(listed.workspaces[0]?.workspaceStatus?.status, 'Stopped');
      assert.equal(listed.workspaces[0]?.blueprint, 'dev');
      assert.equal(again.workspaces().length, 2);
    } finally {
      c.close();
      await again.close();
    }
  });
});

describe('local provisioner idle stop', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-prov-idle-');
  let prov: LocalProvisioner;
  let client: ProvisionerServiceClient;
  const IDLE_MS = 400;

  before(async () => {
    prov = await startLocalProvisioner({
      dataDir: tmp.join('data'),
      agentCommand: AGENT,
      idleTimeoutMs: IDLE_MS,
      idlePollMs: 50,
      logger: captureLogger().logger,
    });
    client = new ProvisionerServiceClient(prov.address, credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await prov?.close();
  });

  test('an agent without connections is stopped after the idle timeout and restarts on Start', async () => {
    const name = nameOf('dave');
    const first = await collect(
      client.provisionWorkspaceStream({ userstr: 'dave', timeout: 60, sendProgress: true, sendEvents: true }),
    );
    assert.equal(lastStatus(first.events)?.status, 'Running');
    const ws = prov.workspaces().find((w) => w.name === name);
    assert.ok(ws?.pid && ws.address);
    const port = Number(ws.address.split(':').at(-1));

    // While a connection is open the agent stays up: wait for enough idle checks to span several idle
    // timeouts (each check sees the connection), then it must still be running.
    const sock = await tcpConnect(port);
    const from = prov.idleChecks();
    await waitFor(() => prov.idleChecks() >= from + Math.ceil((IDLE_MS * 3) / 50) + 1, {
      what: 'idle checks while connected',
      timeoutMs: 30_000,
    });
    assert.equal(prov.workspaces().find((w) => w.name === name)?.status, 'Running');
    sock.destroy();

    await waitFor(() => prov.workspaces().find((w) => w.name === name)?.status === 'Stopped', {
      what: 'idle stop',
      timeoutMs: 10_000,
    });
    assert.equal(pidAlive(ws.pid), false);
    const listed = await unaryP<GetWorkspacesResponse>((cb) =>
      client.getWorkspacesByUserStr({ userstr: 'dave' }, cb),
    );
    assert.equal(listed.workspaces[0]?.workspaceStatus?.status, 'Stopped');

    const again = await collect(
      client.startWorkspaceStream({ workspace: name, timeout: 60, sendProgress: true, sendEvents: true }),
    );
    assert.equal(lastStatus(again.events)?.status, 'Running');
    const back = prov.workspaces().find((w) => w.name === name);
    assert.ok(back?.pid && back.pid !== ws.pid && back.address);
    const s2 = await tcpConnect(Number(back.address.split(':').at(-1)));
    s2.destroy();
  });
});

describe('local provisioner failures and service token', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-prov-fail-');
  const dataDir = tmp.join('data');
  const tokenFile = tmp.join('token');
  let prov: LocalProvisioner;

  before(async () => {
    writeFileSync(tokenFile, 'prov-token\n');
    prov = await startLocalProvisioner({
      dataDir,
      agentCommand: NEVER_READY,
      tokenFile,
      logger: captureLogger().logger,
    });
  });
  after(() => prov?.close());

  test('the provision timeout is enforced with a status Error event and kills the agent', async () => {
    const { bearerInterceptor } = await import('../../src/backends/grpc.js');
    const client = new ProvisionerServiceClient(prov.address, credentials.createInsecure(), {
      interceptors: [bearerInterceptor(tokenFile)],
    });
    try {
      const r = await collect(
        client.provisionWorkspaceStream({
          userstr: 'erin',
          timeout: 1,
          sendProgress: true,
          sendEvents: true,
        }),
      );
      const st = lastStatus(r.events);
      assert.equal(st?.status, 'Error');
      assert.match(st?.message ?? '', /within 1 s|timed out/);
      await waitFor(() => prov.workspaces().every((w) => w.status === 'Stopped' && w.pid === undefined), {
        what: 'the failed start to clean up',
      });
      assert.deepEqual(processesMentioning(`${dataDir}/workspaces/`), [], 'the never-ready agent was killed');
    } finally {
      client.close();
    }
  });

  test('calls without the service token are UNAUTHENTICATED, streams included', async () => {
    const client = new ProvisionerServiceClient(prov.address, credentials.createInsecure());
    try {
      const e = await grpcFailure(
        unaryP<WorkspaceDetails>((cb) => client.findWorkspace({ workspace: 'x' }, cb)),
      );
      assert.equal(e.code, status.UNAUTHENTICATED);
      const s = await grpcFailure(
        collect(
          client.provisionWorkspaceStream({ userstr: 'x', timeout: 1, sendProgress: true, sendEvents: true }),
        ),
      );
      assert.equal(s.code, status.UNAUTHENTICATED);
    } finally {
      client.close();
    }
  });
});

describe('local provisioner shutdown of a stubborn agent', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-prov-kill-');
  const dataDir = tmp.join('data');
  let prov: LocalProvisioner;

  before(async () => {
    prov = await startLocalProvisioner({
      dataDir,
      agentCommand: ['--import', 'tsx', fakeAgent, '--ignore-term'],
      agentStopGraceMs: 300,
      logger: captureLogger().logger,
    });
  });
  after(() => prov?.close());

  test('close() sends SIGKILL to an agent that ignores SIGTERM', async () => {
    const client = new ProvisionerServiceClient(prov.address, credentials.createInsecure());
    try {
      const r = await collect(
        client.provisionWorkspaceStream({
          userstr: 'frank',
          timeout: 60,
          sendProgress: false,
          sendEvents: false,
        }),
      );
      assert.equal(lastStatus(r.events)?.status, 'Running');
      assert.ok(!r.events.some((e) => e.type !== 'status'), 'only status events without progress/events');
    } finally {
      client.close();
    }
    const pid = prov.workspaces()[0]?.pid;
    assert.ok(pid && pidAlive(pid));
    await prov.close();
    assert.equal(pidAlive(pid), false);
    assert.deepEqual(processesMentioning(`${dataDir}/workspaces/`), []);
  });
});
