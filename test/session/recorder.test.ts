// The recorder (the relay's tap) against real gRPC servers: the wire (header fields, metadata, chunk
// sizes and flush timing with a manual clock), the bounded queue, the fail policies and
// EndRecordingSession once per connection that recorded.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { pino } from 'pino';
import { createSessionClient, type SessionBackend } from '../../src/backends/session.js';
import {
  createRecorders,
  FLUSH_INTERVAL_MS,
  MAX_CHUNK_BYTES,
  NO_RECORDING_IDS,
  NO_SESSION_CLIENT,
  RECORDING_BROKEN,
  RECORDING_UNAVAILABLE,
  recordingConfigWarning,
  recordersObserver,
  type RecordersOptions,
} from '../../src/gateway/recorder.js';
import { RecordingRefused, type ChannelTap } from '../../src/gateway/tap.js';
import { ConnectionRegistry, type LiveConnectionInfo } from '../../src/gateway/registry.js';
import { Direction, RecordingFormat } from '../../src/gen/session/v1/session.js';
import { decodeConfig, applyDefaults } from '../../src/config/validate.js';
import { waitFor } from '../helpers/wait.js';
import {
  chunksOf,
  context,
  fakeJwt,
  ManualClock,
  startCaptureServer,
  type CaptureServer,
} from './helpers.js';

const quiet = pino({ level: 'silent' });

function decisionConfig(recording: Record<string, unknown> = {}, sessionAddress = '127.0.0.1:1') {
  const cfg = applyDefaults(
    decodeConfig({ server: { port: 2222, recording }, session: { address: sessionAddress } }),
  );
  return { recording: cfg.server.recording, sessionAddress: cfg.session.address };
}

/** A loopback port nobody listens on. */
async function deadAddress(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `127.0.0.1:${port}`;
}

describe('recorder against a capturing session.v1 server', () => {
  let cap: CaptureServer;
  let client: SessionBackend;
  before(async () => {
    cap = await startCaptureServer();
    client = createSessionClient({ address: cap.address });
  });
  after(async () => {
    client.close();
    await cap.close();
  });

  function recorders(over: Partial<RecordersOptions> = {}) {
    return createRecorders({
      client,
      decision: decisionConfig(),
      bufferBytes: 8 * 1024 * 1024,
      failPolicy: 'open',
      log: quiet,
      ...over,
    });
  }

  test('headers carry every field of wire-protocol §5.12, per kind, with affinity for sftp/tcpip only', async () => {
    const clock = new ManualClock();
    const rec = recorders({
      clock,
      decision: decisionConfig({
        shell: { format: 'asciinema', gzip: true },
        recordDirectTCPIP: true,
        directTCPIP: { format: 'pcapng' },
      }),
    });
    const token = fakeJwt({ sub: 'alice' });
    const startSec = Math.floor(clock.t / 1000);
    const shell = context('shell', { pty: { cols: 132, rows: 43 }, userToken: () => Promise.resolve(token) });
    const exec = context('exec', {
      command: 'uname -a',
      connectionId: shell.connectionId,
      channelId: `ex-${shell.connectionId}2`,
    });
    const sftp = context('sftp', {
      connectionId: shell.connectionId,
      channelId: `sf-${shell.connectionId}3`,
    });
    const tcpip = context('tcpip', {
      connectionId: shell.connectionId,
      channelId: `pf-${shell.connectionId}4`,
      tcpip: { srcHost: '127.0.0.1', srcPort: 50000, dstHost: 'localhost', dstPort: 8080 },
      // No obligation: the static flags decide (and the VS Code defaults of §2.1 apply).
      obligation: undefined,
    });
    const before = cap.streams.length;
    const taps = [];
    for (const ctx of [shell, exec, sftp, tcpip]) {
      const tap = await rec.open(ctx);
      assert.ok(tap, `${ctx.kind} is recorded`);
      taps.push(tap);
    }
    await Promise.all(taps.map((t) => t.close()));
    await rec.connectionClosed(shell.connectionId);
    const got = cap.streams.slice(before);
    assert.deepEqual(
      got.map((s) => s.rpc),
      ['shell', 'exec', 'sftp', 'tcpip'],
    );
    const header = (i: number) => (got[i]?.frames[0] as { header: Record<string, unknown> }).header;
    for (const s of got) assert.equal(s.frames[0]?.$case, 'header', 'the header is the first frame');
    assert.deepEqual(header(0), {
      sessionId: shell.channelId,
      userToken: token,
      startedAt: startSec,
      width: 132,
      height: 43,
      connectionId: shell.connectionId,
      options: { format: RecordingFormat.RECORDING_FORMAT_ASCIINEMA, gzip: true, vscode: undefined },
    });
    assert.deepEqual(header(1), {
      sessionId: exec.channelId,
      userToken: fakeJwt({ sub: 'alice' }),
      startedAt: startSec,
      command: 'uname -a',
      connectionId: shell.connectionId,
      options: undefined,
    });
    assert.deepEqual(header(2), {
      sessionId: sftp.channelId,
      userToken: fakeJwt({ sub: 'alice' }),
      startedAt: startSec,
      connectionId: shell.connectionId,
      options: undefined,
    });
    assert.deepEqual(header(3), {
      sessionId: tcpip.channelId,
      userToken: fakeJwt({ sub: 'alice' }),
      startedAt: startSec,
      srcHost: '127.0.0.1',
      srcPort: 50000,
      dstHost: 'localhost',
      dstPort: 8080,
      connectionId: shell.connectionId,
      // session.address set → VS Code options default to true (§2.1).
      options: {
        format: RecordingFormat.RECORDING_FORMAT_PCAPNG,
        gzip: undefined,
        vscode: { terminals: true, recordInput: true },
      },
    });
    assert.equal(got[0]?.metadata['x-connection-affinity'], undefined);
    assert.equal(got[1]?.metadata['x-connection-affinity'], undefined);
    assert.equal(got[2]?.metadata['x-connection-affinity'], shell.connectionId);
    assert.equal(got[3]?.metadata['x-connection-affinity'], shell.connectionId);
  });

  test('chunks: ≤ 32 KiB, batched for 50 ms, split on direction change, offsets since the start', async () => {
    const clock = new ManualClock();
    const rec = recorders({ clock });
    const ctx = context('tcpip', {
      tcpip: { srcHost: '127.0.0.1', srcPort: 1, dstHost: '127.0.0.1', dstPort: 2 },
    });
    const tap = (await rec.open(ctx)) as ChannelTap;
    await waitFor(() =>
      cap.streams.find((s) => (s.frames[0]?.header as { sessionId: string })?.sessionId === ctx.channelId),
    );
    // Small writes within one flush interval become one chunk.
    clock.advance(5);
    tap.data('in', Buffer.from('abc'));
    clock.advance(20);
    tap.data('in', Buffer.from('def'));
    clock.advance(FLUSH_INTERVAL_MS); // flushes "abcdef" (offset 5)
    // A direction change ends the open chunk at once.
    tap.data('in', Buffer.from('ghi'));
    clock.advance(1);
    tap.data('out', Buffer.from('reply'));
    clock.advance(FLUSH_INTERVAL_MS);
    // A large write is split at 32 KiB; full chunks go without waiting, the rest with the timer.
    const big = Buffer.alloc(MAX_CHUNK_BYTES * 2 + 100, 7);
    clock.advance(100);
    tap.data('out', big);
    // The caller may reuse its buffer: the recorder copied it.
    big.fill(0);
    clock.advance(FLUSH_INTERVAL_MS);
    // Input that a tcpip recording keeps; stderr it does not.
    tap.data('err', Buffer.from('not recorded'));
    await tap.close();
    const stream = cap.streams.find(
      (s) => (s.frames[0]?.header as { sessionId: string })?.sessionId === ctx.channelId,
    );
    assert.ok(stream);
    assert.equal(stream.ended, 'ok', 'half-closed and answered');
    const chunks = chunksOf(stream);
    assert.deepEqual(
      chunks.map((c) => [c.direction, c.data.length, c.timeOffsetMs, c.droppedBytes]),
      [
        [Direction.DIRECTION_INPUT, 6, 5, 0],
        [Direction.DIRECTION_INPUT, 3, 75, 0],
        [Direction.DIRECTION_OUTPUT, 5, 76, 0],
        [Direction.DIRECTION_OUTPUT, MAX_CHUNK_BYTES, 226, 0],
        [Direction.DIRECTION_OUTPUT, MAX_CHUNK_BYTES, 226, 0],
        [Direction.DIRECTION_OUTPUT, 100, 226, 0],
      ],
    );
    assert.equal(chunks[0]?.data.toString(), 'abcdef');
    assert.ok(
      chunks.slice(3).every((c) => c.data.every((b) => b === 7)),
      'the recorded bytes are the original ones',
    );
    assert.equal(clock.pending(), 0, 'no timer left behind');
  });

  test('shell: output only (stdout and stderr), resizes after the pending output', async () => {
    const clock = new ManualClock();
    const rec = recorders({ clock });
    const ctx = context('shell', { pty: { cols: 80, rows: 24 } });
    const tap = (await rec.open(ctx)) as ChannelTap;
    tap.data('in', Buffer.from('typed'));
    tap.data('out', Buffer.from('$ '));
    clock.advance(10);
    tap.resize(100, 30);
    tap.data('err', Buffer.from('warn'));
    await tap.close();
    const stream = await waitFor(() =>
      cap.streams.find(
        (s) =>
          (s.frames[0]?.header as { sessionId: string })?.sessionId === ctx.channelId && s.ended === 'ok',
      ),
    );
    const kinds = stream.frames
      .slice(1)
      .map((f) =>
        f.$case === 'resize'
          ? `resize ${JSON.stringify(f.resize)}`
          : `chunk ${(f.chunk as { direction: number }).direction} ${(f.chunk as { data: Buffer }).data.toString()}`,
      );
    assert.deepEqual(kinds, [
      `chunk ${Direction.DIRECTION_OUTPUT} $ `,
      `resize ${JSON.stringify({ timeOffsetMs: 10, width: 100, height: 30 })}`,
      `chunk ${Direction.DIRECTION_OUTPUT} warn`,
    ]);
  });

  test('a full queue drops and counts: next chunk of that direction, trailing drops as empty chunks', async () => {
    const clock = new ManualClock();
    const bufferBytes = 40 * 1024;
    const rec = recorders({ clock, bufferBytes });
    const ctx = context('sftp');
    const tap = (await rec.open(ctx)) as ChannelTap;
    // Everything below happens synchronously: nothing can leave the queue meanwhile.
    const piece = Buffer.alloc(16 * 1024, 1);
    const sent = { in: 0, out: 0 };
    for (let i = 0; i < 3; i++) {
      tap.data('out', piece); // 16 + 16 fit, the third is dropped
      sent.out += piece.length;
    }
    tap.data('in', Buffer.alloc(20 * 1024, 2)); // dropped: 32 KiB queued + 20 > 40
    sent.in += 20 * 1024;
    tap.data('in', Buffer.alloc(1024, 3)); // fits (33 KiB): carries the 20 KiB drop
    sent.in += 1024;
    tap.data('in', Buffer.alloc(16 * 1024, 4)); // dropped again, never followed by data: trailing
    sent.in += 16 * 1024;
    assert.equal(rec.stats().droppedBytes >= 52 * 1024, true);
    await tap.close();
    const stream = await waitFor(() =>
      cap.streams.find(
        (s) =>
          (s.frames[0]?.header as { sessionId: string })?.sessionId === ctx.channelId && s.ended === 'ok',
      ),
    );
    const chunks = chunksOf(stream);
    const sum = (d: Direction, f: (c: (typeof chunks)[number]) => number) =>
      chunks.filter((c) => c.direction === d).reduce((a, c) => a + f(c), 0);
    assert.equal(
      sum(Direction.DIRECTION_OUTPUT, (c) => c.data.length),
      32 * 1024,
    );
    assert.equal(
      sum(Direction.DIRECTION_OUTPUT, (c) => c.droppedBytes),
      16 * 1024,
    );
    assert.equal(
      sum(Direction.DIRECTION_INPUT, (c) => c.data.length),
      1024,
    );
    assert.equal(
      sum(Direction.DIRECTION_INPUT, (c) => c.droppedBytes),
      36 * 1024,
    );
    const firstIn = chunks.find((c) => c.direction === Direction.DIRECTION_INPUT);
    assert.equal(firstIn?.droppedBytes, 20 * 1024, 'the drop travels on the next chunk of its direction');
    const trailing = chunks.filter((c) => c.data.length === 0);
    assert.deepEqual(
      trailing.map((c) => [c.direction, c.droppedBytes]).sort(),
      [
        [Direction.DIRECTION_INPUT, 16 * 1024],
        [Direction.DIRECTION_OUTPUT, 16 * 1024],
      ].sort(),
    );
    assert.equal(sent.out + sent.in, 32 * 1024 + 1024 + 52 * 1024);
  });

  test('EndRecordingSession once per connection that recorded, after its streams finished', async () => {
    const rec = recorders();
    const a = context('exec');
    const b = context('sftp', { connectionId: a.connectionId, channelId: `sf-${a.connectionId}9` });
    const ta = (await rec.open(a)) as ChannelTap;
    const tb = (await rec.open(b)) as ChannelTap;
    ta.data('out', Buffer.from('x'));
    await ta.close();
    // tb is still open: connectionClosed finishes it first.
    tb.data('in', Buffer.from('y'));
    const before = cap.endRecordingSessions.length;
    await rec.connectionClosed(a.connectionId);
    await rec.connectionClosed(a.connectionId);
    const mine = cap.endRecordingSessions.filter((r) => r.connectionId === a.connectionId);
    assert.equal(mine.length, 1);
    assert.equal(cap.endRecordingSessions.length, before + 1);
    const order = cap.events.filter(
      (e) => e.id === a.channelId || e.id === b.channelId || e.id === a.connectionId,
    );
    assert.deepEqual(
      order.map((e) => e.kind),
      ['stream-end', 'stream-end', 'end-recording-session'],
    );
    assert.ok(mine[0] && mine[0].endTime > 0);

    // Through the registry: the observer adapter calls connectionClosed.
    const viaRegistry = recorders();
    const d = context('exec');
    const td = (await viaRegistry.open(d)) as ChannelTap;
    td.data('out', Buffer.from('z'));
    const registry = new ConnectionRegistry();
    registry.observe(recordersObserver(viaRegistry));
    const info = { id: d.connectionId } as LiveConnectionInfo;
    registry.add(info);
    await registry.closed(info);
    assert.equal(cap.endRecordingSessions.filter((r) => r.connectionId === d.connectionId).length, 1);

    // A connection whose channels were not recorded never calls it.
    const none = recorders({ decision: decisionConfig() });
    const c = context('shell', { obligation: 'exec' });
    assert.equal(await none.open(c), undefined);
    await none.connectionClosed(c.connectionId);
    assert.equal(cap.endRecordingSessions.filter((r) => r.connectionId === c.connectionId).length, 0);
  });

  test('failPolicy closed: a break mid-stream reports RecordingRefused through onFailure, once', async () => {
    const rec = recorders({ failPolicy: 'closed' });
    const failures: RecordingRefused[] = [];
    const ctx = context('exec', { onFailure: (e) => failures.push(e) });
    cap.breakAfterFrames = 2;
    try {
      const tap = (await rec.open(ctx)) as ChannelTap;
      tap.data('out', Buffer.alloc(MAX_CHUNK_BYTES, 1)); // a full chunk goes at once: frame 2
      await waitFor(() => failures.length > 0, { what: 'the failure callback' });
      tap.data('out', Buffer.alloc(10)); // inert now
      await tap.close();
      assert.equal(failures.length, 1);
      assert.ok(failures[0] instanceof RecordingRefused);
      assert.equal(failures[0]?.userMessage, RECORDING_BROKEN);
      assert.equal(rec.stats().failures, 1);
      assert.equal(rec.stats().active, 0);
    } finally {
      cap.breakAfterFrames = undefined;
    }
  });

  test('failPolicy open: a break mid-stream is logged, never reported to the channel', async () => {
    const rec = recorders({ failPolicy: 'open' });
    const failures: RecordingRefused[] = [];
    const ctx = context('exec', { onFailure: (e) => failures.push(e) });
    cap.breakAfterFrames = 2;
    try {
      const tap = (await rec.open(ctx)) as ChannelTap;
      tap.data('out', Buffer.alloc(MAX_CHUNK_BYTES, 1));
      await waitFor(() => rec.stats().failures === 1, { what: 'the break' });
      tap.data('out', Buffer.alloc(10));
      await tap.close();
      assert.equal(failures.length, 0);
    } finally {
      cap.breakAfterFrames = undefined;
    }
  });
});

describe('recorder without a reachable session service', () => {
  test('failPolicy closed: open() throws RecordingRefused with a user message', async () => {
    const client = createSessionClient({ address: await deadAddress() });
    try {
      const rec = createRecorders({
        client,
        decision: decisionConfig(),
        bufferBytes: 1024,
        failPolicy: 'closed',
        log: quiet,
        openTimeoutMs: 1500,
      });
      await assert.rejects(rec.open(context('shell')), (e: unknown) => {
        assert.ok(e instanceof RecordingRefused);
        assert.equal(e.userMessage, RECORDING_UNAVAILABLE);
        return true;
      });
      assert.equal(rec.stats().active, 0);
      assert.equal(rec.stats().failures, 1);
    } finally {
      client.close();
    }
  });

  test('failPolicy open: the channel gets a tap that swallows data, close() resolves', async () => {
    const client = createSessionClient({ address: await deadAddress() });
    try {
      const rec = createRecorders({
        client,
        decision: decisionConfig(),
        bufferBytes: 1024,
        failPolicy: 'open',
        log: quiet,
      });
      const ctx = context('exec');
      const tap = await rec.open(ctx);
      assert.ok(tap);
      for (let i = 0; i < 100; i++) tap.data('out', Buffer.alloc(100)); // beyond bufferBytes: dropped, not kept
      await tap.close();
      await rec.connectionClosed(ctx.connectionId);
      await waitFor(() => rec.stats().failures === 1, { what: 'the failed stream to be counted' });
      assert.equal(rec.stats().active, 0);
    } finally {
      client.close();
    }
  });

  test('no session client: the reference message, whatever the fail policy; unrecorded channels pass', async () => {
    for (const failPolicy of ['open', 'closed'] as const) {
      const rec = createRecorders({
        client: undefined,
        decision: decisionConfig({}, ''),
        bufferBytes: 1024,
        failPolicy,
        log: quiet,
      });
      await assert.rejects(
        rec.open(context('shell')),
        (e: unknown) => e instanceof RecordingRefused && e.userMessage === NO_SESSION_CLIENT,
      );
      assert.equal(await rec.open(context('shell', { obligation: 'none' })), undefined);
      assert.equal(
        await rec.open(context('shell', { obligation: undefined })),
        undefined,
        'recordShell is off',
      );
    }
    const rec = createRecorders({
      client: undefined,
      decision: decisionConfig(),
      bufferBytes: 1024,
      failPolicy: 'open',
      log: quiet,
    });
    await assert.rejects(
      rec.open(context('exec', { connectionId: '' })),
      (e: unknown) => e instanceof RecordingRefused && e.userMessage === NO_SESSION_CLIENT,
    );
    const withClient = createRecorders({
      client: createSessionClient({ address: await deadAddress() }),
      decision: decisionConfig(),
      bufferBytes: 1024,
      failPolicy: 'open',
      log: quiet,
    });
    await assert.rejects(
      withClient.open(context('exec', { channelId: '' })),
      (e: unknown) => e instanceof RecordingRefused && e.userMessage === NO_RECORDING_IDS,
    );
  });

  test('start-up warning: static recording without a session service', () => {
    const cfg = (recording: Record<string, unknown>, address: string) =>
      applyDefaults(decodeConfig({ server: { port: 1, recording }, session: { address } }));
    assert.equal(recordingConfigWarning(cfg({ recordShell: true }, 'x:1')), undefined);
    assert.equal(recordingConfigWarning(cfg({}, '')), undefined);
    assert.match(
      recordingConfigWarning(cfg({ recordShell: true, recordDirectTCPIP: true }, '')) ?? '',
      /server\.recording\.recordShell, server\.recording\.recordDirectTCPIP set but session\.address is empty/,
    );
  });
});
