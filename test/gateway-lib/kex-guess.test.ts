// RFC 4253 §7: a client may send its first key-exchange packet as a guess right behind KEXINIT. A wrong
// guess (the two sides' first kex methods differ) must be discarded, and the exchange goes on with the
// client's next packet. dbclient covers the right guess (test/clients/dropbear.test.ts); this hand-made
// client covers the wrong one: its guess is a malformed KEX_ECDH_INIT that would end the connection if
// the server used it, followed by a valid one that must get the server's KEX_ECDH_REPLY.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { SERVER_KEX } from '../../src/gateway/algorithms.js';
import { keygen, startServer, tempDir, type TestServer } from './sshHarness.js';

const MSG_DISCONNECT = 1;
const MSG_KEXINIT = 20;
const MSG_KEX_ECDH_INIT = 30;
const MSG_KEX_ECDH_REPLY = 31;

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const str = (s: string | Buffer) => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
};

/** An unencrypted binary packet (before the first NEWKEYS): block size 8, at least 4 bytes of padding. */
function packet(payload: Buffer): Buffer {
  let pad = 8 - ((5 + payload.length) % 8);
  if (pad < 4) pad += 8;
  return Buffer.concat([u32(1 + payload.length + pad), Buffer.from([pad]), payload, randomBytes(pad)]);
}

function kexinit(kex: string[], firstKexFollows: boolean): Buffer {
  const lists = [
    kex.join(','),
    'ssh-ed25519',
    'aes128-ctr',
    'aes128-ctr',
    'hmac-sha2-256',
    'hmac-sha2-256',
    'none',
    'none',
    '',
    '',
  ];
  return Buffer.concat([
    Buffer.from([MSG_KEXINIT]),
    randomBytes(16),
    ...lists.map((l) => str(l)),
    Buffer.from([firstKexFollows ? 1 : 0]),
    u32(0),
  ]);
}

type Outcome = 'got' | 'ended' | 'timeout';

/** Reads the version line, then packet types until `want`, a DISCONNECT or close (ended), or the deadline. */
function readUntil(
  sock: Socket,
  want: number,
  timeoutMs: number,
): Promise<{ outcome: Outcome; seen: number[] }> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let versionSeen = false;
    const seen: number[] = [];
    const done = (outcome: Outcome) => {
      clearTimeout(timer);
      sock.removeAllListeners('data');
      resolve({ outcome, seen });
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!versionSeen) {
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        versionSeen = true;
        buf = buf.subarray(nl + 1);
      }
      while (buf.length >= 6) {
        const len = buf.readUInt32BE(0);
        if (buf.length < 4 + len) return;
        const type = buf[5] ?? -1;
        seen.push(type);
        buf = buf.subarray(4 + len);
        if (type === want) return done('got');
        if (type === MSG_DISCONNECT) return done('ended');
      }
    });
    sock.once('close', () => done('ended'));
  });
}

let dir: ReturnType<typeof tempDir>;
let server: TestServer;
before(async () => {
  dir = tempDir('spx-kexguess-');
  const hostKey = keygen(dir.dir, 'host', 'ed25519');
  const user = keygen(dir.dir, 'user', 'ed25519');
  server = await startServer(hostKey, [`${user}.pub`], () => undefined);
});
after(async () => {
  await server.close();
  dir.cleanup();
});

test('a wrong guessed KEX packet is discarded and the key exchange completes with the next one', async () => {
  // The server prefers curve25519-sha256; this client prefers the libssh.org alias, so its guess is
  // wrong by RFC 4253's rule even though the negotiated method (the client's first) is the same math.
  assert.equal(SERVER_KEX[0], 'curve25519-sha256');
  assert.ok(SERVER_KEX.includes('curve25519-sha256@libssh.org'));
  const sock = connect(server.port, '127.0.0.1');
  sock.on('error', () => undefined);
  try {
    const reply = readUntil(sock, MSG_KEX_ECDH_REPLY, 30_000);
    sock.write('SSH-2.0-spx-kex-guess-test\r\n');
    sock.write(packet(kexinit(['curve25519-sha256@libssh.org', 'curve25519-sha256'], true)));
    // The guess: a 5-byte Q_C, which a server that used it would reject (X25519 keys are 32 bytes).
    sock.write(packet(Buffer.concat([Buffer.from([MSG_KEX_ECDH_INIT]), str(Buffer.alloc(5, 7))])));
    const q = generateKeyPairSync('x25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    sock.write(packet(Buffer.concat([Buffer.from([MSG_KEX_ECDH_INIT]), str(q)])));
    const r = await reply;
    assert.equal(r.outcome, 'got', `no KEX_ECDH_REPLY; packet types seen: ${r.seen.join(',')}`);
    assert.deepEqual(r.seen, [MSG_KEXINIT, MSG_KEX_ECDH_REPLY]);
  } finally {
    sock.destroy();
  }
});

test('control: the same malformed packet sent without the guess flag ends the connection', async () => {
  // Proves the first test's malformed packet is fatal when used, so its success means it was discarded.
  const sock = connect(server.port, '127.0.0.1');
  sock.on('error', () => undefined);
  try {
    const reply = readUntil(sock, MSG_KEX_ECDH_REPLY, 30_000);
    sock.write('SSH-2.0-spx-kex-guess-test\r\n');
    sock.write(packet(kexinit(['curve25519-sha256@libssh.org', 'curve25519-sha256'], false)));
    sock.write(packet(Buffer.concat([Buffer.from([MSG_KEX_ECDH_INIT]), str(Buffer.alloc(5, 7))])));
    const r = await reply;
    assert.equal(r.outcome, 'ended', `packet types seen: ${r.seen.join(',')}`);
  } finally {
    sock.destroy();
  }
});
