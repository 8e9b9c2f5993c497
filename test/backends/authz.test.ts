// The authz.v1 client against small real gRPC servers: the exact request of every action (§14.2), the
// service token and TLS options, local validation, and fail-closed behaviour when the service is down,
// hangs past `authz.timeout`, or answers garbage.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import {
  Server,
  ServerCredentials,
  type sendUnaryData,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { AuthzServiceService, EvaluateRequest, EvaluateResponse } from '../../src/gen/authz/v1/authz.js';
import {
  createAuthorizer,
  createAuthzClient,
  deniedText,
  responseWireProblem,
  toWire,
} from '../../src/backends/authz.js';
import { buildRequest, type Action, type ActionRequest, type Subject } from '../../src/gateway/authorize.js';
import { isProxyError } from '../../src/common/errors.js';
import { tempDirFor } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';

type Mode = 'answer' | 'hang';

interface TestAuthz {
  address: string;
  received: EvaluateRequest[];
  metadata: Array<Record<string, string>>;
  mode: Mode;
  answer: EvaluateResponse;
  close(): void;
}

async function listen(server: Server, creds = ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (e, port) => (e ? reject(e) : resolve(port))),
  );
}

/** A real authz server recording what it receives. */
async function startAuthz(creds?: ServerCredentials): Promise<TestAuthz> {
  const server = new Server();
  const pending: Array<sendUnaryData<EvaluateResponse>> = [];
  const t: TestAuthz = {
    address: '',
    received: [],
    metadata: [],
    mode: 'answer',
    answer: { allowed: true, reason: '', obligations: {} },
    close: () => server.forceShutdown(),
  };
  server.addService(AuthzServiceService, {
    evaluate(call: ServerUnaryCall<EvaluateRequest, EvaluateResponse>, cb: sendUnaryData<EvaluateResponse>) {
      t.received.push(call.request);
      t.metadata.push(
        Object.fromEntries(Object.entries(call.metadata.getMap()).map(([k, v]) => [k, String(v)])),
      );
      if (t.mode === 'hang') pending.push(cb);
      else cb(null, t.answer);
    },
  });
  t.address = `127.0.0.1:${await listen(server, creds)}`;
  return t;
}

/** A server whose Evaluate answers with the given raw bytes instead of an EvaluateResponse. */
async function startRawAuthz(bytes: Buffer): Promise<{ address: string; close(): void }> {
  const server = new Server();
  const def = {
    evaluate: { ...AuthzServiceService.evaluate, responseSerialize: () => bytes },
  };
  const impl: UntypedServiceImplementation = {
    evaluate: (_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => cb(null, {}),
  };
  server.addService(def, impl);
  return { address: `127.0.0.1:${await listen(server)}`, close: () => server.forceShutdown() };
}

const never = new AbortController().signal;
const subject: Subject = {
  username: 'alice',
  source: 'github',
  organization: 'acme',
  workspace: 'ws-alice-1',
  blueprint: 'prod',
  pty: true,
  asUser: 'root',
  command: 'rm -rf /tmp/x',
  host: 'db.internal',
  port: 5432,
  socketPath: '/run/docker.sock',
  mode: 'standalone',
  sessionType: 'shell',
};
const ws = (attributes: Record<string, string>) => ({ type: 'workspace', id: 'ws-alice-1', attributes });

/** §14.2, written out by hand: what the authz service must receive for each action. */
const EXPECTED: Record<Action, Omit<EvaluateRequest, 'token' | 'action' | 'patPreview'>> = {
  'user:auth': {
    package: 'user',
    resource: { type: 'user', id: 'alice', attributes: { idp: 'github', org: 'acme' } },
    context: { surface: 'ssh' },
  },
  'workspace:create': {
    package: 'workspace',
    resource: { type: 'workspace', id: '', attributes: { owner: 'alice' } },
    context: { mode: 'standalone' },
  },
  'ssh:shell': {
    package: 'ssh',
    resource: ws({ owner: 'alice', blueprint: 'prod' }),
    context: { pty: 'true', as_user: 'root' },
  },
  'ssh:exec': { package: 'ssh', resource: ws({ owner: 'alice' }), context: { command: 'rm -rf /tmp/x' } },
  'ssh:sftp': { package: 'ssh', resource: ws({ owner: 'alice' }), context: {} },
  'ssh:direct-tcpip': {
    package: 'ssh',
    resource: ws({ owner: 'alice' }),
    context: { host: 'db.internal', port: '5432' },
  },
  'ssh:direct-streamlocal': {
    package: 'ssh',
    resource: ws({ owner: 'alice' }),
    context: { socket_path: '/run/docker.sock' },
  },
  'ssh:agent-forward': { package: 'ssh', resource: ws({ owner: 'alice' }), context: {} },
  'session:record': {
    package: 'session',
    resource: ws({ owner: 'alice', blueprint: 'prod' }),
    context: { session_type: 'shell', session_source: 'ssh-proxy' },
  },
};

function withToken(req: ActionRequest, token = 'user.jwt.token'): ActionRequest {
  return { ...req, token };
}

/** Resolves to 'deny' when the client refuses (a deny or a throw: the dispatcher denies on both). */
async function outcome(p: Promise<{ allowed: boolean }>): Promise<'allow' | 'deny'> {
  try {
    return (await p).allowed ? 'allow' : 'deny';
  } catch {
    return 'deny';
  }
}

describe('authz.v1 client', { timeout: 60_000 }, () => {
  const tmp = tempDirFor(after, 'spx-authz-');
  let authz: TestAuthz;
  const closers: Array<() => void> = [];

  before(async () => {
    authz = await startAuthz();
    closers.push(() => authz.close());
  });
  after(() => closers.forEach((c) => c()));

  test('every action of §14.2 reaches the service with exactly the reference fields', async () => {
    const tokenFile = tmp.join('svc-token');
    writeFileSync(tokenFile, '  service-token\n');
    const client = createAuthzClient({ address: authz.address, tokenFilePath: tokenFile });
    closers.push(() => client.close());
    assert.equal(client.configured, true);
    for (const action of Object.keys(EXPECTED) as Action[]) {
      authz.received.length = 0;
      authz.metadata.length = 0;
      const d = await client.evaluate(withToken(buildRequest(action, subject)), never);
      assert.deepEqual(d, { allowed: true, reason: '', obligations: {} }, action);
      assert.equal(authz.received.length, 1, action);
      assert.deepEqual(
        authz.received[0],
        { token: 'user.jwt.token', action, patPreview: '', ...EXPECTED[action] },
        action,
      );
      assert.equal(authz.metadata[0]?.authorization, 'Bearer service-token', action);
    }
  });

  test('context keys without a value are left out', async () => {
    const client = createAuthzClient({ address: authz.address });
    closers.push(() => client.close());
    authz.received.length = 0;
    await client.evaluate(withToken(buildRequest('ssh:shell', { username: 'bob', workspace: 'w' })), never);
    await client.evaluate(withToken(buildRequest('user:auth', { username: 'bob' })), never);
    assert.deepEqual(authz.received[0]?.context, {});
    assert.deepEqual(authz.received[0]?.resource?.attributes, { owner: 'bob' });
    assert.deepEqual(authz.received[1]?.resource?.attributes, {});
    assert.equal(authz.metadata.at(-1)?.authorization, undefined, 'no token file, no header');
  });

  test('the answer is passed on; a denial keeps its reason', async () => {
    const client = createAuthzClient({ address: authz.address });
    closers.push(() => client.close());
    authz.answer = { allowed: false, reason: 'exec is not allowed here', obligations: { x: 'y' } };
    const d = await client.evaluate(withToken(buildRequest('ssh:exec', subject)), never);
    assert.deepEqual(d, { allowed: false, reason: 'exec is not allowed here', obligations: { x: 'y' } });
    assert.equal(deniedText('ssh:exec', d.reason), 'action "ssh:exec" denied: exec is not allowed here');
    authz.answer = { allowed: true, reason: '', obligations: { auth_methods: '["publickey"]' } };
    const ok = await client.evaluate(withToken(buildRequest('user:auth', subject)), never);
    assert.deepEqual(ok.obligations, { auth_methods: '["publickey"]' });
  });

  test('requests failing local validation are denied without a call', async () => {
    const client = createAuthzClient({ address: authz.address });
    closers.push(() => client.close());
    authz.received.length = 0;
    const cases: Array<[ActionRequest, string]> = [
      [
        withToken(buildRequest('ssh:exec', { username: 'alice' })),
        'authz: invalid request: missing workspace name',
      ],
      [
        withToken(buildRequest('ssh:exec', { username: '', workspace: 'w' })),
        'authz: invalid request: missing owner',
      ],
      [withToken(buildRequest('user:auth', { username: '' })), 'authz: invalid request: missing user'],
      [
        buildRequest('ssh:sftp', { username: 'alice', workspace: 'w' }),
        'authz: invalid request: missing user token',
      ],
    ];
    for (const [req, reason] of cases) {
      assert.deepEqual(await client.evaluate(req, never), { allowed: false, reason, obligations: {} });
    }
    assert.equal(authz.received.length, 0);
  });

  test('TLS with a CA file and a server-name override', async () => {
    const cert = tmp.join('cert.pem');
    const key = tmp.join('key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=authz.test',
        '-addext',
        'subjectAltName=DNS:authz.test',
      ],
      { stdio: 'ignore' },
    );
    const tls = await startAuthz(
      ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(cert), private_key: readFileSync(key) }]),
    );
    closers.push(() => tls.close());
    const client = createAuthzClient({ address: tls.address, caCertPath: cert, serverName: 'authz.test' });
    closers.push(() => client.close());
    const d = await client.evaluate(withToken(buildRequest('ssh:sftp', subject)), never);
    assert.equal(d.allowed, true);
    assert.equal(tls.received.length, 1);
    // Without the override the certificate (authz.test) does not match the address: refused.
    const wrong = createAuthzClient({
      address: tls.address.replace('127.0.0.1', 'localhost'),
      caCertPath: cert,
      timeout: 5,
    });
    closers.push(() => wrong.close());
    assert.equal(await outcome(wrong.evaluate(withToken(buildRequest('ssh:sftp', subject)), never)), 'deny');
  });

  test('a service that is down: every action refused, with the §14.1 error text', async () => {
    const gone = await startAuthz();
    const address = gone.address;
    gone.close();
    const client = createAuthzClient({ address, timeout: 5 });
    closers.push(() => client.close());
    for (const action of Object.keys(EXPECTED) as Action[]) {
      const err = await client.evaluate(withToken(buildRequest(action, subject)), never).then(
        () => assert.fail(`${action} was not refused`),
        (e: unknown) => e,
      );
      assert.ok(isProxyError(err), action);
      assert.match(err.message, new RegExp(`^authz: evaluate ${action}: UNAVAILABLE: `));
    }
  });

  test('a service hanging longer than authz.timeout: refused at the deadline', async () => {
    const hang = await startAuthz();
    hang.mode = 'hang';
    closers.push(() => hang.close());
    const client = createAuthzClient({ address: hang.address, timeout: 0.3 });
    closers.push(() => client.close());
    const err = await withTimeout(
      client.evaluate(withToken(buildRequest('ssh:shell', subject)), never).then(
        () => assert.fail('allowed'),
        (e: unknown) => e,
      ),
      20_000,
      'the deadline',
    );
    assert.ok(isProxyError(err));
    assert.equal(err.code, 'timeout');
    assert.match(err.message, /^authz: evaluate ssh:shell: DEADLINE_EXCEEDED/);
    assert.equal(hang.received.length, 1, 'the call was made');
    // The caller's abort cancels a call in flight too.
    const ac = new AbortController();
    const p = client.evaluate(withToken(buildRequest('ssh:exec', subject)), ac.signal);
    ac.abort();
    assert.equal(await outcome(p), 'deny');
  });

  test('garbage answers are refused as failed calls, never read as a decision', async () => {
    // Truncated after allowed=true (undecodable), and a well-formed message of another type (field 1
    // as a string): neither may become a decision built from defaults.
    for (const bytes of [
      Buffer.from([0x08, 0x01, 0x12, 0xff, 0xff]),
      Buffer.from([0x0a, 0x03, 0x79, 0x65, 0x73]),
      Buffer.from(EvaluateRequest.encode(toWire(withToken(buildRequest('ssh:exec', subject)))).finish()),
    ]) {
      const raw = await startRawAuthz(bytes);
      closers.push(() => raw.close());
      const client = createAuthzClient({ address: raw.address, timeout: 5 });
      closers.push(() => client.close());
      const err = await client.evaluate(withToken(buildRequest('ssh:exec', subject)), never).then(
        (d) => assert.fail(`${bytes.toString('hex')} was read as ${JSON.stringify(d)}`),
        (e: unknown) => e,
      );
      assert.ok(isProxyError(err), bytes.toString('hex'));
      assert.match(err.message, /^authz: evaluate ssh:exec: INTERNAL: Response message parsing error/);
    }
  });

  test('the strict decoder: well-formed answers and unknown fields pass, wrong wire types do not', () => {
    const ok = EvaluateResponse.encode({
      allowed: true,
      reason: 'why',
      obligations: { auth_methods: '["publickey"]', record: 'shell' },
    }).finish();
    assert.equal(responseWireProblem(ok), undefined);
    assert.equal(responseWireProblem(new Uint8Array()), undefined, 'an empty answer is a plain deny');
    // Field 99 (unknown, varint) after a valid message: a newer service, still accepted.
    assert.equal(responseWireProblem(Buffer.concat([ok, Buffer.from([0x98, 0x06, 0x01])])), undefined);
    assert.match(responseWireProblem(Buffer.from([0x0a, 0x00])) ?? '', /field 1 has wire type 2/);
    assert.match(responseWireProblem(Buffer.from([0x10, 0x01])) ?? '', /field 2 has wire type 0/);
    // An obligations entry whose value is a varint.
    assert.match(
      responseWireProblem(Buffer.from([0x1a, 0x05, 0x0a, 0x01, 0x6b, 0x10, 0x01])) ?? '',
      /obligations entry field 2/,
    );
    assert.ok(responseWireProblem(Buffer.from([0x12, 0x05, 0x61])), 'truncated');
  });

  test('without an address the reference behaviour: everything allowed, not configured', async () => {
    const a = createAuthorizer({ address: '' });
    assert.equal(a.configured, false);
    assert.deepEqual(await a.evaluate(buildRequest('ssh:exec', subject), never), {
      allowed: true,
      reason: '',
      obligations: {},
    });
    a.close();
    const b = createAuthorizer({ address: authz.address });
    closers.push(() => b.close());
    assert.equal(b.configured, true);
  });
});
