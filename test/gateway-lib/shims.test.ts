// The ssh2 shims against the real OpenSSH client.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';

import ssh2, { type Channel, type Connection } from 'ssh2';

import { ProxyError } from '../../src/common/errors.js';
import { serverAlgorithms } from '../../src/gateway/algorithms.js';
import {
  installUnknownChannelTypeMessage,
  OpenFailure,
  openAgentChannel,
  rejectOpen,
  serverSigAlgsValue,
} from '../../src/gateway/ssh2-shims/index.js';
import { waitFor } from '../helpers/wait.js';
import { keygen, runSsh, startServer, tempDir, type TestServer } from './sshHarness.js';

const tmp = tempDir('shims-');
let hostKey = '';
let edKey = '';
let rsaKey = '';
let server: TestServer;
const agentResults: string[] = [];
let refuseSessions = false;

/** SSH agent protocol: SSH2_AGENTC_REQUEST_IDENTITIES (11) → SSH2_AGENT_IDENTITIES_ANSWER (12). */
function requestIdentities(ch: Channel): Promise<{ type: number; count: number }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    ch.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) return;
      resolve({ type: buf[4] ?? -1, count: len >= 5 ? buf.readUInt32BE(5) : -1 });
    });
    ch.on('error', reject);
    ch.on('close', () => reject(new Error('agent channel closed before an answer')));
    ch.write(Buffer.from([0, 0, 0, 1, 11]));
  });
}

/** Exec commands understood by the test server. */
function onExec(client: Connection, command: string, ch: Channel, agentRequested: boolean): void {
  const finish = (text: string, code: number): void => {
    ch.write(`${text}\n`);
    ch.exit(code);
    ch.end();
  };
  if (command === 'echo') return finish('hello', 0);
  if (command === 'agent') {
    if (!agentRequested) return finish('no auth-agent request', 3);
    openAgentChannel(client)
      .then(async (agent) => {
        const answer = await requestIdentities(agent);
        agent.end();
        agentResults.push(`answer:${answer.type}:${answer.count}`);
        finish(`identities type=${answer.type} count=${answer.count}`, 0);
      })
      .catch((err: Error) => finish(`agent failed: ${err.message}`, 4));
    return;
  }
  if (command === 'agent-refused') {
    openAgentChannel(client)
      .then(() => finish('unexpectedly opened', 5))
      .catch((err: Error) => finish(`refused: ${err.message}`, 0));
    return;
  }
  finish(`unknown command ${command}`, 127);
}

before(async () => {
  hostKey = keygen(tmp.dir, 'host', 'ed25519');
  edKey = keygen(tmp.dir, 'user_ed', 'ed25519');
  rsaKey = keygen(tmp.dir, 'user_rsa', 'rsa');
  server = await startServer(hostKey, [`${edKey}.pub`, `${rsaKey}.pub`], (client) => {
    client.on('ready', () => installUnknownChannelTypeMessage(client));
    client.on('tcpip', (_accept, reject, info) => {
      if (info.destPort === 1) rejectOpen(client, reject, OpenFailure.CONNECT_FAILED, 'no route to the moon');
      else
        rejectOpen(
          client,
          reject,
          OpenFailure.RESOURCE_SHORTAGE,
          'maximum direct-tcpip connections exceeded (15)',
        );
    });
    client.on('session', (accept, reject) => {
      if (refuseSessions) {
        rejectOpen(client, reject, OpenFailure.ADMINISTRATIVELY_PROHIBITED, 'sessions are closed\r\nfor now');
        rejectOpen(client, reject, OpenFailure.CONNECT_FAILED, 'a second answer is never sent');
        return;
      }
      const session = accept();
      let agentRequested = false;
      session.on('auth-agent', (acceptAgent) => {
        agentRequested = true;
        acceptAgent?.();
      });
      session.on('exec', (acceptExec, _rejectExec, info) =>
        onExec(client, info.command, acceptExec(), agentRequested),
      );
    });
  });
});

after(async () => {
  await server?.close();
  tmp.cleanup();
});

describe('rejectOpen', () => {
  it('ssh -W sees the reason and the description', async () => {
    const r = await runSsh(server.port, edKey, ['-W', '127.0.0.1:1', 'u@127.0.0.1']);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /open failed: connect failed: no route to the moon/);
    const r2 = await runSsh(server.port, edKey, ['-W', '127.0.0.1:2', 'u@127.0.0.1']);
    assert.match(
      r2.stderr,
      /open failed: resource shortage: maximum direct-tcpip connections exceeded \(15\)/,
    );
  });

  it('refuses a session channel; control characters in the description become spaces', async () => {
    refuseSessions = true;
    try {
      const r = await runSsh(server.port, edKey, ['u@127.0.0.1', 'echo']);
      assert.equal(r.code, 255);
      assert.match(r.stderr, /open failed: administratively prohibited: sessions are closed for now\r?\n/);
      assert.doesNotMatch(r.stderr, /second answer/);
    } finally {
      refuseSessions = false;
    }
  });

  it('the connection keeps working after a refusal, and bad arguments throw', async () => {
    const r = await runSsh(server.port, edKey, ['u@127.0.0.1', 'echo']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello\n');
    const fake = {} as Connection;
    assert.throws(() => rejectOpen(fake, () => undefined, 0, 'x'), /invalid channel open failure reason/);
    assert.throws(() => rejectOpen(fake, () => undefined, 2, 'x'), /not an ssh2 server connection/);
  });
});

describe('installUnknownChannelTypeMessage', () => {
  it('refuses unknown channel types with UNKNOWN_CHANNEL_TYPE and the description', async () => {
    // `ssh -w` opens a tun@openssh.com channel, a type ssh2 does not know.
    const r = await runSsh(server.port, edKey, [
      '-w',
      'any',
      '-o',
      'ExitOnForwardFailure=yes',
      'u@127.0.0.1',
      'echo',
    ]);
    if (!/Tunnel device open failed/.test(r.stderr)) {
      assert.match(r.stderr, /channel \d+: open failed: unknown channel type: channel type not supported/);
      return;
    }
    // No tun device on this machine: send the open from ssh2's client instead.
    const description = await openUnknownChannelWithSsh2Client();
    assert.equal(description, '(SSH) Channel open failure: channel type not supported');
  });

  it('also with ssh2 as the client (forwarded-tcpip from the client side)', async () => {
    assert.equal(
      await openUnknownChannelWithSsh2Client(),
      '(SSH) Channel open failure: channel type not supported',
    );
  });
});

/** Opens a `forwarded-tcpip` channel from an ssh2 client (a type a server never accepts) and returns the error. */
async function openUnknownChannelWithSsh2Client(): Promise<string> {
  const { readFileSync } = await import('node:fs');
  const client = new ssh2.Client();
  try {
    await new Promise<void>((resolve, reject) => {
      client.on('ready', resolve).on('error', reject);
      client.connect({
        host: '127.0.0.1',
        port: server.port,
        username: 'u',
        privateKey: readFileSync(edKey),
        readyTimeout: 5000,
      });
    });
    // ssh2's client has no API for this type, so drive its channel manager and protocol directly.
    const internals = client as unknown as {
      _chanMgr: { add(cb: unknown): number };
      _protocol: {
        _packetRW: { write: { allocStart: number; alloc(n: number): Buffer; finalize(b: Buffer): Buffer } };
      };
    };
    const { sendPacket } = (await import('node:module')).createRequire(import.meta.url)(
      'ssh2/lib/protocol/utils.js',
    ) as {
      sendPacket(p: unknown, b: Buffer): void;
    };
    return await new Promise<string>((resolve) => {
      const cb = (err: Error | undefined): void => resolve(err ? err.message : 'opened');
      const id = internals._chanMgr.add(cb);
      const type = 'forwarded-tcpip';
      const proto = internals._protocol;
      const w = proto._packetRW.write;
      let p = w.allocStart;
      const pkt = w.alloc(1 + 4 + type.length + 12 + 4 + 9 + 4 + 4 + 9 + 4);
      pkt[p] = 90; // SSH_MSG_CHANNEL_OPEN
      pkt.writeUInt32BE(type.length, ++p);
      pkt.write(type, (p += 4), 'latin1');
      pkt.writeUInt32BE(id, (p += type.length));
      pkt.writeUInt32BE(2 * 1024 * 1024, (p += 4));
      pkt.writeUInt32BE(32 * 1024, (p += 4));
      for (const [s, n] of [
        ['127.0.0.1', 22],
        ['127.0.0.1', 5555],
      ] as const) {
        pkt.writeUInt32BE(s.length, (p += 4));
        pkt.write(s, (p += 4), 'latin1');
        pkt.writeUInt32BE(n, (p += s.length));
      }
      sendPacket(proto, w.finalize(pkt));
    });
  } finally {
    client.end();
  }
}

describe('openAgentChannel', () => {
  let agentPid = 0;
  let agentEnv: NodeJS.ProcessEnv = {};

  before(() => {
    const out = execFileSync('ssh-agent', ['-s', '-a', `${tmp.dir}/agent.sock`], { encoding: 'utf8' });
    const pid = /SSH_AGENT_PID=(\d+)/.exec(out)?.[1];
    assert.ok(pid, out);
    agentPid = Number(pid);
    agentEnv = { ...process.env, SSH_AUTH_SOCK: `${tmp.dir}/agent.sock` };
    execFileSync('ssh-add', ['-q', edKey], { env: agentEnv, stdio: 'ignore' });
  });

  after(() => {
    if (agentPid) process.kill(agentPid, 'SIGTERM');
  });

  it('ssh -A: an identities request through the channel returns the agent key', async () => {
    const r = await runSsh(server.port, edKey, ['-A', 'u@127.0.0.1', 'agent'], {
      env: agentEnv,
      agent: true,
    });
    assert.equal(r.stdout, 'identities type=12 count=1\n', r.stderr);
    assert.equal(r.code, 0);
    assert.ok(agentResults.includes('answer:12:1'));
  });

  it('without -A the client refuses and the promise rejects', async () => {
    const r = await runSsh(server.port, edKey, ['u@127.0.0.1', 'agent-refused']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^refused: \(SSH\) Channel open failure: .+\n$/);
  });

  it('rejects at once on a closed connection', async () => {
    let closedClient: Connection | undefined;
    const s2 = await startServer(hostKey, [`${edKey}.pub`], (client) => {
      client.on('session', (accept) => {
        accept().on('exec', (acc) => {
          const ch = acc();
          ch.exit(0);
          ch.end();
        });
      });
      client.on('close', () => (closedClient = client));
    });
    try {
      await runSsh(s2.port, edKey, ['u@127.0.0.1', 'x']);
      await waitFor(() => closedClient !== undefined, { timeoutMs: 5000, what: 'connection close' });
      await assert.rejects(openAgentChannel(closedClient as Connection), /connection closed/);
    } finally {
      await s2.close();
    }
  });
});

describe('algorithms and server-sig-algs', () => {
  it('server-sig-algs is a proper comma-separated list', async () => {
    assert.match(serverSigAlgsValue(), /ecdsa-sha2-nistp521,rsa-sha2-512,/);
    const r = await runSsh(server.port, edKey, ['-v', 'u@127.0.0.1', 'echo']);
    assert.equal(r.code, 0, r.stderr);
    const line = /server-sig-algs=<([^>]*)>/.exec(r.stderr)?.[1];
    assert.ok(line, 'client logged server-sig-algs');
    assert.deepEqual(line.split(','), serverSigAlgsValue().split(','));
    assert.ok(line.split(',').includes('rsa-sha2-512'));
  });

  it('an RSA user key logs in with rsa-sha2-512', async () => {
    const before = server.auths.length;
    const r = await runSsh(server.port, rsaKey, [
      '-o',
      'PubkeyAcceptedAlgorithms=rsa-sha2-512',
      'u@127.0.0.1',
      'echo',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello\n');
    assert.deepEqual(server.auths.slice(before), ['publickey:ssh-rsa:sha512']);
  });

  it('the reference cipher set is offered (the client picks chacha20); DH group exchange and 3DES are not', async () => {
    // OpenSSH's own order (chacha20, aes-ctr, aes-gcm) decides.
    const def = await runSsh(server.port, edKey, ['-v', 'u@127.0.0.1', 'echo']);
    assert.match(def.stderr, /server->client cipher: chacha20-poly1305@openssh\.com /);
    const gcm = await runSsh(server.port, edKey, [
      '-v',
      '-c',
      'aes256-gcm@openssh.com',
      'u@127.0.0.1',
      'echo',
    ]);
    assert.equal(gcm.stdout, 'hello\n', gcm.stderr);
    assert.match(gcm.stderr, /server->client cipher: aes256-gcm@openssh\.com /);
    const des = await runSsh(server.port, edKey, ['-c', '3des-cbc', 'u@127.0.0.1', 'echo']);
    assert.equal(des.code, 255);
    assert.match(des.stderr, /no matching cipher found/);
    const gex = await runSsh(server.port, edKey, [
      '-o',
      'KexAlgorithms=diffie-hellman-group-exchange-sha256',
      'u@127.0.0.1',
      'echo',
    ]);
    assert.equal(gex.code, 255);
    assert.match(gex.stderr, /no matching key exchange method found/);
  });

  it('serverAlgorithms validates a configured cipher list', () => {
    const def = serverAlgorithms();
    assert.deepEqual(def.compress, ['none']);
    assert.ok(Array.isArray(def.kex) && !def.kex.some((k) => k.includes('group-exchange')));
    assert.deepEqual(def.cipher, [
      'aes128-gcm@openssh.com',
      'aes256-gcm@openssh.com',
      'chacha20-poly1305@openssh.com',
      'aes128-ctr',
      'aes192-ctr',
      'aes256-ctr',
    ]);
    assert.ok(Array.isArray(def.kex) && def.kex[0] === 'curve25519-sha256');
    assert.ok((def.kex as string[]).includes('mlkem768x25519-sha256'));
    assert.deepEqual(serverAlgorithms(['chacha20-poly1305@openssh.com', 'aes128-gcm@openssh.com']).cipher, [
      'chacha20-poly1305@openssh.com',
      'aes128-gcm@openssh.com',
    ]);
    assert.throws(
      () => serverAlgorithms(['aes128-gcm@openssh.com', '3des-cbc']),
      (e: unknown) => e instanceof ProxyError && e.code === 'bad_config' && /3des-cbc/.test(e.message),
    );
  });
});
