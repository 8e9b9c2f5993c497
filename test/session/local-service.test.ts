// The local session service end to end with the real recorder over gRPC: what lands on disk is
// checked with the real tools — `asciinema cat` (under tmux, it wants a TTY) for casts, `tshark -r`
// for pcapng, and the SFTP log of a real OpenSSH sftp client talking to a real sftp-server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { pino } from 'pino';
import { status } from '@grpc/grpc-js';
import { createSessionClient, type SessionBackend } from '../../src/backends/session.js';
import { createRecorders, type SessionRecorders } from '../../src/gateway/recorder.js';
import type { ChannelTap } from '../../src/gateway/tap.js';
import { applyDefaults, decodeConfig } from '../../src/config/validate.js';
import { startLocalSessionService, type LocalSessionService } from '../../src/local/sessions/service.js';
import { readStoreFile, storeFile, type StoredRecording } from '../../src/local/sessions/store.js';
import { SftpDecoder } from '../../src/local/sessions/sftp-decoder.js';
import { RecordingServiceClient } from '../../src/gen/session/v1/session.js';
import { credentials } from '@grpc/grpc-js';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { context, fakeJwt, ManualClock } from './helpers.js';

const run = promisify(execFile);
const quiet = pino({ level: 'silent' });

function decision(recording: Record<string, unknown> = {}) {
  const c = applyDefaults(decodeConfig({ server: { port: 1, recording }, session: { address: 'x:1' } }));
  return { recording: c.server.recording, sessionAddress: c.session.address };
}

/** Runs `asciinema cat` in a tmux pane (it opens /dev/tty) with stdout to a file; returns the bytes. */
async function asciinemaCat(dir: string, cast: string): Promise<Buffer> {
  const sock = `h4-${process.pid}-${Date.now()}`;
  const out = join(dir, `cat-${Date.now()}.out`);
  const rc = `${out}.rc`;
  execFileSync(
    'tmux',
    [
      '-L',
      sock,
      '-f',
      '/dev/null',
      'new-session',
      '-d',
      '-x',
      '200',
      '-y',
      '50',
      `asciinema cat '${cast}' > '${out}'; echo $? > '${rc}'`,
    ],
    {
      env: { ...process.env, ASCIINEMA_CONFIG_HOME: join(dir, 'asciinema-config') },
    },
  );
  try {
    await waitFor(() => existsSync(rc) && readFileSync(rc, 'utf8').trim() !== '', {
      timeoutMs: 30_000,
      what: 'asciinema cat',
    });
    assert.equal(readFileSync(rc, 'utf8').trim(), '0', 'asciinema cat exits 0');
    return readFileSync(out);
  } finally {
    try {
      execFileSync('tmux', ['-L', sock, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // already gone with its only session
    }
  }
}

describe('local session service with the recorder', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-sess-');
  const dataDir = tmp.join('data');
  let svc: LocalSessionService;
  let client: SessionBackend;

  before(async () => {
    svc = await startLocalSessionService({ dataDir, logger: quiet });
    client = createSessionClient({ address: svc.address });
  });
  after(async () => {
    client.close();
    await svc.close();
  });

  function recorders(clock?: ManualClock, recording: Record<string, unknown> = {}): SessionRecorders {
    return createRecorders({
      client,
      decision: decision(recording),
      bufferBytes: 8 << 20,
      failPolicy: 'closed',
      log: quiet,
      clock,
    });
  }

  function stored(id: string): StoredRecording {
    const r = svc.store.recordings.get(id);
    assert.ok(r, `recording ${id} is stored`);
    return r;
  }

  function fileOf(r: StoredRecording, role: string): string {
    const f = r.files.find((x) => x.role === role);
    assert.ok(f, `${role} file of ${r.id}`);
    return join(svc.recordingsDir, f.path);
  }

  test('shell → asciicast v2 that asciinema cat replays byte for byte, with resize events', async () => {
    const clock = new ManualClock();
    const rec = recorders(clock);
    const ctx = context('shell', {
      pty: { cols: 100, rows: 30 },
      userToken: () => Promise.resolve(fakeJwt({ sub: 'alice' })),
    });
    const tap = (await rec.open(ctx)) as ChannelTap;
    const euro = Buffer.from('€'); // 3 bytes, split across two chunks below
    const parts = [
      Buffer.concat([Buffer.from('\x1b[1mhello\x1b[0m '), euro.subarray(0, 2)]),
      Buffer.concat([euro.subarray(2), Buffer.from('\r\n$ ls\r\nfile-ä.txt\r\n')]),
      Buffer.from('$ exit\r\n'),
    ];
    tap.data('out', parts[0] as Buffer);
    clock.advance(60); // flushed: the € is split between two chunks
    tap.data('in', Buffer.from('ls\r')); // not recorded for shells
    tap.data('out', parts[1] as Buffer);
    clock.advance(500);
    tap.resize(120, 40);
    clock.advance(1500);
    tap.data('out', parts[2] as Buffer);
    await tap.close();
    await rec.connectionClosed(ctx.connectionId);

    const r = stored(ctx.channelId);
    assert.equal(r.status, 'complete');
    assert.equal(r.username, 'alice');
    assert.equal(r.kind, 'shell');
    const cast = fileOf(r, 'cast');
    assert.ok(cast.startsWith(join(svc.recordingsDir, 'alice', ctx.connectionId)), cast);
    const lines = readFileSync(cast, 'utf8').trim().split('\n');
    const header = JSON.parse(lines[0] as string) as Record<string, unknown>;
    assert.equal(header.version, 2);
    assert.equal(header.width, 100);
    assert.equal(header.height, 30);
    assert.equal(header.timestamp, Math.floor(clock.t / 1000) - 2); // started 2.06 s before the end
    const events = lines.slice(1).map((l) => JSON.parse(l) as [number, string, string]);
    assert.deepEqual(
      events.map((e) => [e[0], e[1]]),
      [
        [0, 'o'],
        [0.06, 'o'],
        [0.56, 'r'],
        [2.06, 'o'],
      ],
    );
    assert.equal(events[2]?.[2], '120x40');
    const replayed = await asciinemaCat(tmp.path, cast);
    assert.deepEqual(replayed, Buffer.concat(parts), 'asciinema cat prints exactly the recorded output');
  });

  test('exec → stdout and stderr both as output; gzip gives .cast.gz', async () => {
    const rec = recorders(undefined, { exec: { gzip: true } });
    const ctx = context('exec', { command: 'make test' });
    const tap = (await rec.open(ctx)) as ChannelTap;
    tap.data('out', Buffer.from('building\n'));
    tap.data('err', Buffer.from('warning: x\n'));
    tap.data('in', Buffer.from('stdin is not recorded'));
    tap.data('out', Buffer.from('done\n'));
    await tap.close();
    const r = stored(ctx.channelId);
    assert.equal(r.command, 'make test');
    const file = fileOf(r, 'cast');
    assert.ok(file.endsWith('.cast.gz'));
    const lines = gunzipSync(readFileSync(file)).toString('utf8').trim().split('\n');
    assert.equal((JSON.parse(lines[0] as string) as { command: string }).command, 'make test');
    const text = lines
      .slice(1)
      .map((l) => JSON.parse(l) as [number, string, string])
      .map((e) => {
        assert.equal(e[1], 'o');
        return e[2];
      })
      .join('');
    assert.equal(text, 'building\nwarning: x\ndone\n');
    assert.deepEqual(r.bytes, { input: 0, output: 25 });
  });

  test('tcpip → one pcapng per (connection, destination); tshark sees the exact payload each way', async () => {
    const rec = recorders(undefined, { recordDirectTCPIP: true, directTCPIP: { format: 'pcapng' } });
    const conn = context('tcpip').connectionId;
    const dst = { dstHost: '127.0.0.1', dstPort: 8080 };
    const a = context('tcpip', {
      connectionId: conn,
      channelId: `pf-${conn}1`,
      tcpip: { srcHost: '127.0.0.1', srcPort: 50001, ...dst },
    });
    const b = context('tcpip', {
      connectionId: conn,
      channelId: `pf-${conn}2`,
      tcpip: { srcHost: '127.0.0.1', srcPort: 50001, ...dst },
    });
    const ta = (await rec.open(a)) as ChannelTap;
    const tb = (await rec.open(b)) as ChannelTap;
    const sent = { a: { in: 0, out: 0 }, b: { in: 0, out: 0 } };
    for (let i = 0; i < 20; i++) {
      const req = Buffer.alloc(1000 + i, 0x41);
      const res = Buffer.alloc(40_000 + i * 7, 0x42);
      ta.data('in', req);
      sent.a.in += req.length;
      ta.data('out', res);
      sent.a.out += res.length;
      if (i % 2 === 0) {
        tb.data('in', req.subarray(0, 10));
        sent.b.in += 10;
        tb.data('out', res.subarray(0, 70_000));
        sent.b.out += Math.min(res.length, 70_000);
      }
    }
    await Promise.all([ta.close(), tb.close()]);
    await rec.connectionClosed(conn);
    const ra = stored(a.channelId);
    const rb = stored(b.channelId);
    const pcap = fileOf(ra, 'pcapng');
    assert.equal(fileOf(rb, 'pcapng'), pcap, 'one file for both forwards to the same destination');
    const { stdout } = await run(
      'tshark',
      [
        '-r',
        pcap,
        '-T',
        'fields',
        '-e',
        'tcp.stream',
        '-e',
        'tcp.srcport',
        '-e',
        'tcp.len',
        '-e',
        'tcp.flags.str',
      ],
      {
        maxBuffer: 16 << 20,
      },
    );
    const perStream = new Map<string, { fromClient: number; fromServer: number; syn: number; fin: number }>();
    for (const line of stdout.trim().split('\n')) {
      const [stream = '', srcport = '', len = '0', flags = ''] = line.split('\t');
      const s = perStream.get(stream) ?? { fromClient: 0, fromServer: 0, syn: 0, fin: 0 };
      if (srcport === '8080') s.fromServer += Number(len);
      else s.fromClient += Number(len);
      if (flags.includes('S')) s.syn++;
      if (flags.includes('F')) s.fin++;
      perStream.set(stream, s);
    }
    assert.equal(perStream.size, 2, 'two TCP conversations');
    const byBytes = [...perStream.values()].sort((x, y) => y.fromServer - x.fromServer);
    assert.deepEqual(byBytes[0], { fromClient: sent.a.in, fromServer: sent.a.out, syn: 2, fin: 2 });
    assert.deepEqual(byBytes[1], { fromClient: sent.b.in, fromServer: sent.b.out, syn: 2, fin: 2 });
    // Correct seq/ack: Wireshark's analysis finds nothing to complain about.
    const analysis = await run('tshark', [
      '-r',
      pcap,
      '-Y',
      'tcp.analysis.flags || ip.checksum.status == 0 || tcp.checksum.status == 0',
      '-o',
      'tcp.check_checksum:TRUE',
      '-o',
      'ip.check_checksum:TRUE',
    ]);
    assert.equal(analysis.stdout.trim(), '', 'no TCP analysis warnings, no bad checksums');
    assert.deepEqual(ra.summary?.payloadFromServer, sent.a.out);
    assert.notEqual(ra.summary?.clientPort, rb.summary?.clientPort, 'distinct conversations in one file');
  });

  test('sftp → raw streams and a log of the operations of a real sftp session', async () => {
    const work = tmp.join('sftp-root');
    mkdirSync(work);
    const local = tmp.join('sftp-local');
    mkdirSync(local);
    const payload = Buffer.alloc(100_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;
    writeFileSync(join(local, 'up.bin'), payload);
    const rec = recorders();
    const ctx = context('sftp');
    const sockPath = tmp.join('sftp.sock');
    let finished: Promise<void> | undefined;
    const seen: Array<['in' | 'out', Buffer]> = [];
    // The gateway's place: the bytes between the client and sftp-server go through the tap.
    const server: NetServer = createServer((sock) => {
      finished = (async () => {
        const tap = (await rec.open(ctx)) as ChannelTap;
        const child = spawn('/usr/lib/openssh/sftp-server', ['-d', work], {
          stdio: ['pipe', 'pipe', 'ignore'],
        });
        sock.on('data', (d: Buffer) => {
          seen.push(['in', d]);
          tap.data('in', d);
          child.stdin.write(d);
        });
        sock.on('end', () => child.stdin.end());
        child.stdout.on('data', (d: Buffer) => {
          seen.push(['out', d]);
          tap.data('out', d);
          sock.write(d);
        });
        await new Promise((r) => child.on('close', r));
        sock.end();
        await tap.close();
      })();
    });
    await new Promise<void>((r) => server.listen(sockPath, r));
    try {
      const batch = tmp.join('batch');
      writeFileSync(
        batch,
        [
          'put up.bin remote.bin',
          'get remote.bin down.bin',
          'mkdir dir',
          'rename remote.bin dir/moved.bin',
          'ls dir',
          'rm dir/moved.bin',
          'rmdir dir',
          'get missing.bin',
        ].join('\n') + '\n',
      );
      // `-` before the last command: its failure must not stop the batch (the error is what we check).
      writeFileSync(batch, readFileSync(batch, 'utf8').replace('get missing.bin', '-get missing.bin'));
      await run('sftp', ['-b', batch, '-D', `socat - UNIX-CONNECT:${sockPath}`], {
        cwd: local,
        timeout: 60_000,
      });
      await waitFor(() => finished !== undefined, { what: 'the sftp connection' });
      await withTimeout(finished as Promise<void>, 30_000, 'the sftp session');
    } finally {
      server.close();
    }
    assert.deepEqual(readFileSync(join(local, 'down.bin')), payload);
    const r = stored(ctx.channelId);
    assert.equal(r.status, 'complete');
    const ops = readFileSync(fileOf(r, 'sftp-log'), 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            op: string;
            path?: string;
            target?: string;
            bytes?: number;
            flags?: string;
            status?: string;
            entries?: number;
          },
      );
    const all = JSON.stringify(ops);
    const find = (op: string, pathEnd: string) =>
      ops.find((o) => o.op === op && (o.path ?? '').endsWith(pathEnd));
    assert.equal(ops[0]?.op, 'init');
    assert.equal(find('open', '/remote.bin')?.flags, 'wct', 'put opens for write, create, truncate');
    assert.equal(find('write', '/remote.bin')?.bytes, payload.length);
    assert.equal(find('read', '/remote.bin')?.bytes, payload.length);
    assert.ok(find('close', '/remote.bin'));
    assert.equal(find('mkdir', '/dir')?.status, 'ok');
    const rename = ops.find((o) => o.op === 'rename' || o.op === 'posix-rename@openssh.com');
    assert.ok(
      rename?.path?.endsWith('/remote.bin') && rename.target?.endsWith('/dir/moved.bin'),
      JSON.stringify(rename),
    );
    assert.equal(find('readdir', '/dir/')?.entries, 3, all); // ., .. and moved.bin
    assert.equal(find('remove', '/dir/moved.bin')?.status, 'ok');
    assert.equal(find('rmdir', '/dir')?.status, 'ok');
    const missing = ops.find((o) => (o.path ?? '').endsWith('/missing.bin') && o.status !== 'ok');
    assert.ok(missing, 'the failed get is logged with its error');
    assert.match(missing.status ?? '', /no such file/i);
    // The raw streams are exactly what passed.
    const input = readFileSync(fileOf(r, 'input'));
    const output = readFileSync(fileOf(r, 'output'));
    assert.equal(input.length, r.bytes.input);
    assert.equal(output.length, r.bytes.output);
    assert.ok(input.length > payload.length && output.length > payload.length);
    assert.deepEqual((r.summary as { bytesWritten: number }).bytesWritten, payload.length);

    // The decoder tolerates any split: the same bytes in the same order, cut into pieces of 1..13
    // bytes, give the same operations. (The order across directions matters: clients reuse ids.)
    assert.deepEqual(Buffer.concat(seen.filter((x) => x[0] === 'in').map((x) => x[1])), input);
    const again: string[] = [];
    const d = new SftpDecoder((op) =>
      again.push(`${op.op} ${op.path ?? ''} ${op.bytes ?? ''} ${op.status ?? ''}`),
    );
    let n = 1;
    for (const [dir, buf] of seen) {
      for (let at = 0; at < buf.length; at += n, n = (n % 13) + 1) {
        if (dir === 'in') d.input(0, buf.subarray(at, at + n));
        else d.output(0, buf.subarray(at, at + n));
      }
    }
    d.finish(0);
    assert.deepEqual(
      again,
      ops.map((o) => `${o.op} ${o.path ?? ''} ${o.bytes ?? ''} ${o.status ?? ''}`),
    );
    // Garbage stops decoding (reported once), it never throws.
    const stopped: string[] = [];
    const bad = new SftpDecoder((op) => stopped.push(op.op));
    bad.input(0, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    bad.input(0, Buffer.alloc(100, 9));
    assert.deepEqual(stopped, ['decoder-stopped']);
  });

  test('the stream must start with a header; ids are required', async () => {
    const raw = new RecordingServiceClient(svc.address, credentials.createInsecure());
    try {
      const err = await new Promise<{ code: number; details: string }>((resolve) => {
        const call = raw.streamExecRecording((e) =>
          resolve(e as unknown as { code: number; details: string }),
        );
        call.write({
          payload: {
            $case: 'chunk',
            chunk: { timeOffsetMs: 0, data: Buffer.from('x'), direction: 0, droppedBytes: 0 },
          },
        });
        call.end();
      });
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(err.details, /first frame must be the header/);
      const err2 = await new Promise<{ code: number }>((resolve) => {
        const call = raw.streamSftpRecording((e) => resolve(e as unknown as { code: number }));
        call.write({
          payload: {
            $case: 'header',
            header: { sessionId: '', userToken: '', startedAt: 1, connectionId: 'c', options: undefined },
          },
        });
        call.end();
      });
      assert.equal(err2.code, status.INVALID_ARGUMENT);
    } finally {
      raw.close();
    }
  });

  test('usernames become safe path segments; unknown users fall back to the session username', async () => {
    const rec = recorders();
    const evil = context('exec', { userToken: () => Promise.resolve(fakeJwt({ sub: '../../etc/passwd' })) });
    const t1 = (await rec.open(evil)) as ChannelTap;
    t1.data('out', Buffer.from('x'));
    await t1.close();
    const f = fileOf(stored(evil.channelId), 'cast');
    assert.ok(f.startsWith(svc.recordingsDir + '/'), f);
    assert.ok(!f.includes('/../'), f);
    assert.equal(stored(evil.channelId).username, '../../etc/passwd');

    await client.upsertSession({
      sessionId: 'conn-no-token',
      username: 'bob',
      k8shelldVer: '',
      client: '',
      clientIp: '',
      startTime: 1,
      endTime: 0,
      workspace: '',
      bytesIn: 0,
      bytesOut: 0,
      operations: [],
      blueprint: '',
      updatedAt: 1,
      recordings: [],
      execRecordings: 0,
    });
    const noToken = context('exec', {
      connectionId: 'conn-no-token',
      channelId: 'ex-conn-no-token1',
      userToken: () => Promise.resolve(''),
    });
    const t2 = (await rec.open(noToken)) as ChannelTap;
    await t2.close();
    assert.ok(fileOf(stored(noToken.channelId), 'cast').startsWith(join(svc.recordingsDir, 'bob') + '/'));
  });
});

describe('session store', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-store-');

  const session = (id: string, over: Record<string, unknown> = {}) => ({
    sessionId: id,
    username: 'alice',
    k8shelldVer: '1.2.3',
    client: 'SSH-2.0-OpenSSH_9.2p1',
    clientIp: '127.0.0.1',
    startTime: 1000,
    endTime: 0,
    workspace: 'ws',
    bytesIn: 1,
    bytesOut: 2,
    operations: ['sh'],
    blueprint: '',
    updatedAt: 1000,
    recordings: [],
    execRecordings: 0,
    ...over,
  });

  test('sessions survive a restart; an ended session is not revived by a late heartbeat', async () => {
    const dataDir = tmp.join('restart');
    let svc = await startLocalSessionService({ dataDir, logger: quiet });
    let c = createSessionClient({ address: svc.address });
    await c.upsertSession(session('s1'));
    await c.upsertSession(
      session('s1', { startTime: 0, bytesIn: 50, operations: ['ex', 'sh'], updatedAt: 1010 }),
    );
    await c.upsertSession(session('s2'));
    await c.endSession({ sessionId: 's2', endTime: 1100, bytesIn: 7, bytesOut: 8 });
    const echoed = await c.upsertSession(session('s2', { startTime: 0, bytesIn: 99 }));
    assert.equal(echoed?.endTime, 1100, 'the answer shows the stored (ended) session');
    c.close();
    await svc.close();

    svc = await startLocalSessionService({ dataDir, logger: quiet });
    c = createSessionClient({ address: svc.address });
    try {
      const s1 = svc.store.sessions.get('s1');
      assert.equal(s1?.startTime, 1000, 'start_time kept when a heartbeat sends 0');
      assert.equal(s1?.bytesIn, 50);
      assert.deepEqual(s1?.operations, ['ex', 'sh']);
      assert.equal(s1?.client, 'SSH-2.0-OpenSSH_9.2p1');
      const s2 = svc.store.sessions.get('s2');
      assert.deepEqual([s2?.endTime, s2?.bytesIn, s2?.bytesOut], [1100, 7, 8]);
      await assert.rejects(
        c.endSession({ sessionId: 'nope', endTime: 1, bytesIn: 0, bytesOut: 0 }),
        /NOT_FOUND/,
      );
    } finally {
      c.close();
      await svc.close();
    }
  });

  test('the file stays bounded: compaction and a cap on ended sessions', async () => {
    const dataDir = tmp.join('bounded');
    const svc = await startLocalSessionService({
      dataDir,
      logger: quiet,
      store: { compactBytes: 16 * 1024, maxEndedSessions: 5 },
    });
    const c = createSessionClient({ address: svc.address });
    try {
      for (let i = 0; i < 400; i++) await c.upsertSession(session('live', { bytesIn: i, startTime: 0 }));
      for (let i = 0; i < 20; i++) {
        await c.upsertSession(session(`e${i}`));
        await c.endSession({ sessionId: `e${i}`, endTime: 2000 + i, bytesIn: 0, bytesOut: 0 });
      }
      await svc.store.flush();
      const size = statSync(storeFile(dataDir)).size;
      assert.ok(size < 64 * 1024, `store file is ${size} bytes`);
      const onDisk = readStoreFile(storeFile(dataDir));
      assert.equal(onDisk.sessions.get('live')?.bytesIn, 399);
      const ended = [...onDisk.sessions.values()].filter((s) => s.endTime > 0).map((s) => s.id);
      assert.deepEqual(ended.sort(), ['e15', 'e16', 'e17', 'e18', 'e19']);
    } finally {
      c.close();
      await svc.close();
    }
  });
});
