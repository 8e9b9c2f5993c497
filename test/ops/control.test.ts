import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { credentials, Metadata, status, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';

import { decodeConfig } from '../../src/config/validate.js';
import { ConnectionRegistry, type LiveConnectionInfo } from '../../src/gateway/registry.js';
import { SSHProxyAdminServiceClient, type Connection } from '../../src/gen/sshproxy/admin/v1/admin.js';
import { SSHProxyServiceClient } from '../../src/gen/sshproxy/v1/sshproxy.js';
import {
  sanitizeMessage,
  startControlFromConfig,
  startControlServer,
  type ControlServer,
} from '../../src/ops/control.js';
import { isAllowed, JwksCache, ServiceAccountVerifier } from '../../src/ops/sa-token.js';
import { COMMIT, DESCRIPTION, VERSION } from '../../src/ops/version.js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const logged: { msg: string }[] = [];
const log = pino(
  { base: {} },
  new Writable({
    write(chunk: Buffer, _e, cb) {
      logged.push(JSON.parse(chunk.toString()) as { msg: string });
      cb();
    },
  }),
);
const build = { version: VERSION, commit: COMMIT, description: DESCRIPTION };

// --- helpers ---

type Client = InstanceType<typeof SSHProxyServiceClient>;

function versionClient(port: number, creds: ChannelCredentials = credentials.createInsecure()): Client {
  // A private subchannel pool: every client makes its own connection (and TLS handshake).
  return new SSHProxyServiceClient(`127.0.0.1:${port}`, creds, { 'grpc.use_local_subchannel_pool': 1 });
}

function getVersion(
  c: Client,
  token?: string,
): Promise<{ version: string; commitId: string; description: string }> {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) =>
    c.getVersionInfo({}, md, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r))),
  );
}

async function rejectsWith(p: Promise<unknown>, code: status, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: ServiceError) => {
    assert.equal(e.code, code, `${e.code} ${e.details}`);
    if (re) assert.match(e.details, re);
    return true;
  });
}

function b64(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

function jwt(key: KeyObject, header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const data = `${b64(header)}.${b64(claims)}`;
  const ec = key.asymmetricKeyType === 'ec';
  const sig = sign('sha256', Buffer.from(data), ec ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${data}.${sig.toString('base64url')}`;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa2 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });

/** A JWKS endpoint on loopback whose key set the test changes; counts fetches. */
async function jwksServer(): Promise<{
  url: string;
  issuer: string;
  keys: Record<string, unknown>[];
  fetches: number;
  close(): Promise<void>;
}> {
  const state = {
    keys: [
      { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'r1', use: 'sig', alg: 'RS256' },
      { ...ec.publicKey.export({ format: 'jwk' }), kid: 'e1', use: 'sig', alg: 'ES256' },
    ] as Record<string, unknown>[],
    fetches: 0,
  };
  const server = http.createServer((req, res) => {
    if (req.url !== '/openid/v1/jwks') {
      res.writeHead(404).end();
      return;
    }
    state.fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${issuer}/openid/v1/jwks`,
    issuer,
    get keys() {
      return state.keys;
    },
    set keys(k) {
      state.keys = k;
    },
    get fetches() {
      return state.fetches;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const now = (): number => Math.floor(Date.now() / 1000);

// --- tests ---

describe('GetVersionInfo (plaintext, no auth)', () => {
  let srv: ControlServer;
  before(async () => {
    srv = await startControlServer({ host: '127.0.0.1', port: 0, build, log });
  });
  after(() => srv.close());

  it('answers the build version, commit and the reference description', async () => {
    const c = versionClient(srv.port);
    const r = await getVersion(c);
    c.close();
    assert.deepEqual(r, { version: VERSION, commitId: COMMIT, description: DESCRIPTION });
    assert.equal(
      r.description,
      'Terminates SSH for k8shell workspaces and proxies channel traffic to the in-workspace k8shelld daemon.',
    );
    assert.ok(logged.some((l) => l.msg === 'Starting gRPC control interface'));
  });
});

describe('TLS with certificate reload', () => {
  const dir = tempDirFor(after, 'control-tls-');
  let srv: ControlServer;
  const ssl = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir.path, stdio: 'ignore' });
  };
  /** A CA and a server certificate for 127.0.0.1 signed by it, in dir/<name>/. */
  function pki(name: string): { ca: Buffer; cert: string; key: string } {
    mkdirSync(dir.join(name));
    const p = (f: string): string => `${name}/${f}`;
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    ssl([
      'req',
      '-x509',
      ...ec,
      '-keyout',
      p('ca.key'),
      '-out',
      p('ca.crt'),
      '-days',
      '2',
      '-subj',
      `/CN=ca-${name}`,
    ]);
    ssl(['req', ...ec, '-keyout', p('tls.key'), '-out', p('tls.csr'), '-subj', `/CN=control-${name}`]);
    writeFileSync(dir.join(name, 'ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl(
      [
        'x509',
        '-req',
        '-in',
        p('tls.csr'),
        '-CA',
        p('ca.crt'),
        '-CAkey',
        p('ca.key'),
        '-CAcreateserial',
      ].concat(['-out', p('tls.crt'), '-days', '2', '-extfile', p('ext')]),
    );
    return {
      ca: Buffer.from(execFileSync('cat', [dir.join(name, 'ca.crt')])),
      cert: dir.join(name, 'tls.crt'),
      key: dir.join(name, 'tls.key'),
    };
  }
  let a: ReturnType<typeof pki>;
  let b: ReturnType<typeof pki>;

  before(async () => {
    a = pki('a');
    b = pki('b');
    mkdirSync(dir.join('live'));
    copyFileSync(a.cert, dir.join('live', 'tls.crt'));
    copyFileSync(a.key, dir.join('live', 'tls.key'));
    srv = await startControlServer({
      host: '127.0.0.1',
      port: 0,
      tls: {
        certFile: dir.join('live', 'tls.crt'),
        keyFile: dir.join('live', 'tls.key'),
        reloadDelayMs: 100,
        pollMs: 500,
      },
      build,
      log,
    });
  });
  after(() => srv.close());

  it('serves TLS with the configured certificate; a client trusting another CA fails', async () => {
    const good = versionClient(srv.port, credentials.createSsl(a.ca));
    assert.equal((await getVersion(good)).version, VERSION);
    good.close();
    const other = versionClient(srv.port, credentials.createSsl(b.ca));
    await rejectsWith(getVersion(other), status.UNAVAILABLE);
    other.close();
    const plain = versionClient(srv.port);
    await rejectsWith(getVersion(plain), status.UNAVAILABLE);
    plain.close();
  });

  it('a half-rotated (mismatched) pair is refused and the old certificate stays; the full pair is picked up', async () => {
    const early = versionClient(srv.port, credentials.createSsl(a.ca));
    await getVersion(early); // an established connection from before the rotation
    logged.length = 0;
    copyFileSync(b.cert, dir.join('live', 'tls.crt'));
    assert.equal(await srv.reloadCertificate(), false);
    assert.ok(logged.some((l) => /reload failed; keeping the previous certificate/.test(l.msg)));
    const stillA = versionClient(srv.port, credentials.createSsl(a.ca));
    assert.equal((await getVersion(stillA)).version, VERSION);
    stillA.close();

    copyFileSync(b.key, dir.join('live', 'tls.key'));
    // Picked up by the watcher after reloadDelayMs, without calling reloadCertificate.
    await waitFor(
      async () => {
        const c = versionClient(srv.port, credentials.createSsl(b.ca));
        try {
          return (await getVersion(c)).version === VERSION;
        } catch {
          return false;
        } finally {
          c.close();
        }
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'the new certificate to be served' },
    );
    assert.ok(logged.some((l) => l.msg === 'gRPC TLS certificate reloaded'));
    // The connection established before the rotation keeps working.
    assert.equal((await getVersion(early)).version, VERSION);
    early.close();
    const oldCa = versionClient(srv.port, credentials.createSsl(a.ca));
    await rejectsWith(getVersion(oldCa), status.UNAVAILABLE);
    oldCa.close();
  });
});

describe('service-account token verification', () => {
  let jw: Awaited<ReturnType<typeof jwksServer>>;
  let verifier: ServiceAccountVerifier;
  const claims = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
    iss: jw.issuer,
    aud: ['ssh-proxy', 'other'],
    sub: 'system:serviceaccount:k8shell:session',
    exp: now() + 600,
    nbf: now() - 10,
    'kubernetes.io': { namespace: 'k8shell', serviceaccount: { name: 'session', uid: 'x' } },
    ...over,
  });
  before(async () => {
    jw = await jwksServer();
    verifier = new ServiceAccountVerifier({
      issuer: jw.issuer,
      audience: 'ssh-proxy',
      jwks: new JwksCache({ url: jw.url, minRefreshMs: 0 }),
    });
  });
  after(() => jw.close());

  it('accepts RS256 and ES256 tokens from the JWKS and reports the caller', async () => {
    const r = await verifier.verify(jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims()));
    assert.deepEqual(r, { ok: true, caller: { namespace: 'k8shell', serviceAccount: 'session' } });
    const e = await verifier.verify(
      jwt(
        ec.privateKey,
        { alg: 'ES256', kid: 'e1' },
        claims({ sub: 'system:serviceaccount:ops:bot', 'kubernetes.io': undefined }),
      ),
    );
    assert.deepEqual(e, { ok: true, caller: { namespace: 'ops', serviceAccount: 'bot' } });
  });

  const cases: [string, () => string, RegExp][] = [
    ['empty', () => '', /missing bearer token/],
    ['not a JWT', () => 'abc.def', /not a JWT/],
    ['garbage parts', () => 'a.b.c', /not a JWT/],
    ['alg none', () => `${b64({ alg: 'none' })}.${b64(claims())}.`, /algorithm "none"/],
    [
      'HS256 keyed with public material',
      () => `${b64({ alg: 'HS256', kid: 'r1' })}.${b64(claims())}.AAAA`,
      /algorithm "HS256"/,
    ],
    ['unknown kid', () => jwt(rsa2.privateKey, { alg: 'RS256', kid: 'nope' }, claims()), /unknown key/],
    [
      'kid of another algorithm',
      () => jwt(rsa.privateKey, { alg: 'ES256', kid: 'r1' }, claims()),
      /unknown key/,
    ],
    [
      'signed by another key',
      () => jwt(rsa2.privateKey, { alg: 'RS256', kid: 'r1' }, claims()),
      /signature is invalid/,
    ],
    [
      'payload changed after signing',
      () => {
        const [h, , s] = jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims()).split('.');
        return `${h}.${b64(claims({ sub: 'system:serviceaccount:kube-system:admin' }))}.${s}`;
      },
      /signature is invalid/,
    ],
    [
      'wrong issuer',
      () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ iss: 'https://evil' })),
      /issuer/,
    ],
    [
      'wrong audience',
      () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ aud: 'kubernetes' })),
      /audience/,
    ],
    [
      'expired',
      () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ exp: now() - 120 })),
      /expired/,
    ],
    ['no exp', () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ exp: undefined })), /expired/],
    [
      'not yet valid',
      () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ nbf: now() + 600 })),
      /not valid yet/,
    ],
    [
      'user subject',
      () => jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims({ sub: 'alice' })),
      /not a service account/,
    ],
    [
      'kubernetes.io claim disagreeing with sub',
      () =>
        jwt(
          rsa.privateKey,
          { alg: 'RS256', kid: 'r1' },
          claims({ 'kubernetes.io': { namespace: 'other', serviceaccount: { name: 'session' } } }),
        ),
      /disagrees/,
    ],
  ];
  for (const [name, token, re] of cases) {
    it(`rejects: ${name}`, async () => {
      const r = await verifier.verify(token());
      assert.ok(!r.ok && r.code === 'unauthenticated', JSON.stringify(r));
      assert.match(r.reason, re);
    });
  }

  it('key rotation: a token with a new kid triggers one refetch and is accepted', async () => {
    const before = jw.fetches;
    jw.keys = [...jw.keys, { ...rsa2.publicKey.export({ format: 'jwk' }), kid: 'r2' }];
    const r = await verifier.verify(jwt(rsa2.privateKey, { alg: 'RS256', kid: 'r2' }, claims()));
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(jw.fetches, before + 1);
  });

  it('unknown kids refetch at most once per minRefreshMs; TTL expiry refetches', async () => {
    let t = 0;
    const cache = new JwksCache({ url: jw.url, minRefreshMs: 10_000, ttlMs: 60_000, now: () => t });
    const v = new ServiceAccountVerifier({ issuer: jw.issuer, audience: 'ssh-proxy', jwks: cache });
    const start = jw.fetches;
    for (let i = 0; i < 20; i++)
      await v.verify(jwt(rsa2.privateKey, { alg: 'RS256', kid: `x${i}` }, claims()));
    assert.equal(jw.fetches, start + 1);
    t = 10_000;
    await v.verify(jwt(rsa2.privateKey, { alg: 'RS256', kid: 'y' }, claims()));
    assert.equal(jw.fetches, start + 2);
    t = 70_001;
    assert.ok((await v.verify(jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims()))).ok);
    assert.equal(jw.fetches, start + 3);
  });

  it('JWKS unreachable and nothing cached: unavailable; a bounded fetch deadline applies', async () => {
    const hang = http.createServer(() => {
      /* never answers */
    });
    hang.listen(0, '127.0.0.1');
    await new Promise((r) => hang.once('listening', r));
    try {
      const v = new ServiceAccountVerifier({
        issuer: jw.issuer,
        audience: 'ssh-proxy',
        jwks: new JwksCache({
          url: `http://127.0.0.1:${(hang.address() as AddressInfo).port}/openid/v1/jwks`,
          timeoutMs: 200,
        }),
      });
      const r = await withTimeout(
        v.verify(jwt(rsa.privateKey, { alg: 'RS256', kid: 'r1' }, claims())),
        10_000,
      );
      assert.ok(!r.ok && r.code === 'unavailable', JSON.stringify(r));
      assert.match(r.reason, /timed out after 200 ms/);
    } finally {
      hang.closeAllConnections();
      await new Promise((r) => hang.close(r));
    }
  });

  it('isAllowed: exact, wildcard, own namespace (unknown own namespace matches nothing), empty list', () => {
    const c = { namespace: 'k8shell', serviceAccount: 'session' };
    assert.equal(isAllowed(c, [{ namespace: 'k8shell', serviceAccount: 'session' }], undefined), true);
    assert.equal(isAllowed(c, [{ namespace: 'k8shell', serviceAccount: 'other' }], undefined), false);
    assert.equal(isAllowed(c, [{ namespace: '*', serviceAccount: 'session' }], undefined), true);
    assert.equal(isAllowed(c, [{ namespace: 'k8shell', serviceAccount: '*' }], undefined), true);
    assert.equal(isAllowed(c, [{ namespace: '', serviceAccount: 'session' }], 'k8shell'), true);
    assert.equal(isAllowed(c, [{ namespace: '', serviceAccount: 'session' }], 'other'), false);
    assert.equal(isAllowed(c, [{ namespace: '', serviceAccount: 'session' }], undefined), false);
    assert.equal(isAllowed(c, [{ namespace: 'k8shell', serviceAccount: '' }], undefined), false);
    assert.equal(isAllowed(c, [], 'k8shell'), false);
  });
});

describe('control service with authentication and the admin extension', () => {
  let jw: Awaited<ReturnType<typeof jwksServer>>;
  let srv: ControlServer;
  const registry = new ConnectionRegistry();
  const ended: [string, string][] = [];

  function fake(id: string, over: Partial<LiveConnectionInfo> = {}): LiveConnectionInfo {
    return {
      id,
      clientIp: '203.0.113.9',
      clientPort: 50000,
      clientVersion: 'SSH-2.0-OpenSSH_9.2p1',
      startedAt: new Date('2026-01-02T03:04:05.678Z'),
      username: 'alice',
      userstrBlueprint: 'py',
      workspace: { name: 'alice-ws', blueprint: 'python', appVersion: '1' },
      bytes: { in: 1234, out: 98765 },
      operations: () => ['s', 'x'],
      openChannels: () => 2,
      end: (m) => ended.push([id, m]),
      ...over,
    };
  }

  const token = (sub: string): string =>
    jwt(
      rsa.privateKey,
      { alg: 'RS256', kid: 'r1' },
      { iss: jw.issuer, aud: 'ssh-proxy', sub, exp: now() + 600 },
    );

  before(async () => {
    jw = await jwksServer();
    registry.add(fake('c1'));
    registry.add(fake('c2', { clientIp: '2001:db8::5', username: 'bob', workspace: undefined }));
    registry.add(fake('c3', { username: undefined }));
    srv = await startControlServer({
      host: '127.0.0.1',
      port: 0,
      auth: {
        verifier: new ServiceAccountVerifier({
          issuer: jw.issuer,
          audience: 'ssh-proxy',
          jwks: new JwksCache({ url: jw.url }),
        }),
        allowed: [
          { namespace: '', serviceAccount: 'session' },
          { namespace: 'ops', serviceAccount: '*' },
        ],
        ownNamespace: 'k8shell',
      },
      admin: registry,
      build,
      log,
    });
  });
  after(async () => {
    await srv.close();
    await jw.close();
  });

  it('GetVersionInfo: absent or bad token UNAUTHENTICATED, good token OK, not allowed PERMISSION_DENIED', async () => {
    const c = versionClient(srv.port);
    await rejectsWith(getVersion(c), status.UNAUTHENTICATED, /missing bearer token/);
    await rejectsWith(getVersion(c, 'not-a-jwt'), status.UNAUTHENTICATED, /not a JWT/);
    assert.equal((await getVersion(c, token('system:serviceaccount:k8shell:session'))).version, VERSION);
    assert.equal((await getVersion(c, token('system:serviceaccount:ops:anyone'))).version, VERSION);
    await rejectsWith(
      getVersion(c, token('system:serviceaccount:default:session')),
      status.PERMISSION_DENIED,
      /default\/session is not allowed/,
    );
    c.close();
  });

  function admin(): InstanceType<typeof SSHProxyAdminServiceClient> {
    return new SSHProxyAdminServiceClient(`127.0.0.1:${srv.port}`, credentials.createInsecure());
  }
  const md = (t?: string): Metadata => {
    const m = new Metadata();
    if (t) m.set('authorization', `Bearer ${t}`);
    return m;
  };

  it('ListConnections: every live connection with its fields; a username filter; auth applies', async () => {
    const a = admin();
    const list = (username: string, t?: string): Promise<Connection[]> =>
      new Promise((resolve, reject) =>
        a.listConnections({ username }, md(t), { deadline: Date.now() + 10_000 }, (e, r) =>
          e ? reject(e) : resolve(r.connections),
        ),
      );
    await rejectsWith(list(''), status.UNAUTHENTICATED);
    const good = token('system:serviceaccount:k8shell:session');
    const all = await list('', good);
    assert.deepEqual(
      all.map((c) => c.id),
      ['c1', 'c2', 'c3'],
    );
    assert.deepEqual(all[0], {
      id: 'c1',
      username: 'alice',
      workspace: 'alice-ws',
      clientAddress: '203.0.113.9:50000',
      clientVersion: 'SSH-2.0-OpenSSH_9.2p1',
      startedAt: new Date('2026-01-02T03:04:05.678Z'),
      bytesIn: 1234,
      bytesOut: 98765,
      openChannels: 2,
      operations: ['s', 'x'],
      userstrBlueprint: 'py',
      workspaceBlueprint: 'python',
    });
    assert.equal(all[1]?.clientAddress, '[2001:db8::5]:50000');
    assert.equal(all[1]?.workspace, '');
    assert.equal(all[2]?.username, '');
    assert.deepEqual(
      (await list('bob', good)).map((c) => c.id),
      ['c2'],
    );
    a.close();
  });

  it('EndConnection: ends with the (sanitised) message; NOT_FOUND and INVALID_ARGUMENT; denied callers cannot', async () => {
    const a = admin();
    const end = (id: string, message: string, t?: string): Promise<unknown> =>
      new Promise((resolve, reject) =>
        a.endConnection({ id, message }, md(t), { deadline: Date.now() + 10_000 }, (e, r) =>
          e ? reject(e) : resolve(r),
        ),
      );
    const good = token('system:serviceaccount:ops:oncall');
    await rejectsWith(end('c1', 'bye', token('system:serviceaccount:default:x')), status.PERMISSION_DENIED);
    assert.deepEqual(ended, []);
    await end('c1', 'maintenance\r\n\u001b[31mnow', good);
    assert.deepEqual(ended, [['c1', 'maintenance [31mnow']]);
    await end('c3', '', good);
    assert.deepEqual(ended[1], ['c3', 'Connection ended by an administrator']);
    await rejectsWith(end('nope', 'x', good), status.NOT_FOUND, /no live connection nope/);
    await rejectsWith(end('', 'x', good), status.INVALID_ARGUMENT);
    a.close();
  });

  it('sanitizeMessage bounds the text', () => {
    assert.equal(sanitizeMessage('x'.repeat(2000)).length, 512);
    assert.equal(sanitizeMessage('\u0000\u0007'), 'Connection ended by an administrator');
  });

  it('without an admin registry the extension is not served (UNIMPLEMENTED)', async () => {
    const plain = await startControlServer({ host: '127.0.0.1', port: 0, build, log });
    const a = new SSHProxyAdminServiceClient(`127.0.0.1:${plain.port}`, credentials.createInsecure());
    await rejectsWith(
      new Promise((resolve, reject) =>
        a.listConnections({ username: '' }, (e, r) => (e ? reject(e) : resolve(r))),
      ),
      status.UNIMPLEMENTED,
    );
    a.close();
    await plain.close();
  });
});

describe('startControlFromConfig', () => {
  const cfg = (
    grpc: Record<string, unknown>,
    server: Record<string, unknown> = {},
  ): ReturnType<typeof decodeConfig> => decodeConfig({ server: { port: 2022, ...server }, grpc });

  it('disabled with port 0 (reference log line) and in forking mode', async () => {
    logged.length = 0;
    const registry = new ConnectionRegistry();
    assert.equal(await startControlFromConfig(cfg({ port: 0 }), { registry, log, build }), undefined);
    assert.ok(logged.some((l) => l.msg === 'gRPC control interface disabled (no grpc.port configured)'));
    assert.equal(
      await startControlFromConfig(cfg({ port: 1 }, { forking: true }), { registry, log, build }),
      undefined,
    );
  });

  it('configuration errors: TLS without files, auth without audience', async () => {
    const registry = new ConnectionRegistry();
    await assert.rejects(
      startControlFromConfig(cfg({ port: 1, enableTLS: true }), { registry, log, build }),
      /needs grpc.certFile and grpc.keyFile/,
    );
    await assert.rejects(
      startControlFromConfig(cfg({ port: 1, authEnabled: true, audience: '' }), { registry, log, build }),
      /needs grpc.audience/,
    );
  });

  it('auth from config: own namespace from the service-account directory', async () => {
    const dir = tempDirFor(after, 'sa-');
    writeFileSync(dir.join('namespace'), 'k8shell\n');
    const jw = await jwksServer();
    try {
      // Port 0 means "disabled" in the config, so find a free port by binding one first.
      const probe = await startControlServer({ host: '127.0.0.1', port: 0, build, log });
      const port = probe.port;
      await probe.close();
      const srv = await startControlFromConfig(
        cfg({
          port,
          authEnabled: true,
          issuerURL: jw.issuer,
          audience: 'ssh-proxy',
          allowed: [{ namespace: '', serviceAccount: 'session' }],
        }),
        { registry: new ConnectionRegistry(), log, build, saDir: dir.path },
      );
      assert.ok(srv);
      const c = versionClient(srv.port);
      const t = (sub: string): string =>
        jwt(
          rsa.privateKey,
          { alg: 'RS256', kid: 'r1' },
          { iss: jw.issuer, aud: 'ssh-proxy', sub, exp: now() + 60 },
        );
      assert.equal((await getVersion(c, t('system:serviceaccount:k8shell:session'))).version, VERSION);
      await rejectsWith(getVersion(c, t('system:serviceaccount:other:session')), status.PERMISSION_DENIED);
      c.close();
      await srv.close();
    } finally {
      await jw.close();
    }
  });
});
