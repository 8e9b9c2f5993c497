// The one-copy recording chunk encoder writes exactly the generated encoder's bytes, for every frame
// type, from whole buffers and from parts; other frames still take the generated path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeChunkFrame, FastRecordingService } from '../../src/common/recording-wire.js';
import {
  Direction,
  ExecRecordingFrame,
  ShellRecordingFrame,
  SftpRecordingFrame,
  TcpipRecordingFrame,
  type DataChunk,
} from '../../src/gen/session/v1/session.js';

const chunkArb = fc.record({
  timeOffsetMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 31 }), fc.maxSafeNat()),
  data: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  direction: fc.constantFrom(Direction.DIRECTION_OUTPUT, Direction.DIRECTION_INPUT),
  droppedBytes: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 40 }), fc.maxSafeNat()),
});

const generated = (c: DataChunk): Buffer =>
  Buffer.from(ExecRecordingFrame.encode({ payload: { $case: 'chunk', chunk: c } }).finish());

test('encodeChunkFrame = the generated encoding (whole data and split into parts)', () => {
  fc.assert(
    fc.property(chunkArb, fc.array(fc.nat(), { maxLength: 4 }), (c, cuts) => {
      const want = generated(c);
      assert.deepEqual(encodeChunkFrame(c, c.data), want);
      const at = [...new Set(cuts.map((x) => x % (c.data.length + 1)))].sort((a, b) => a - b);
      const parts = [0, ...at, c.data.length]
        .slice(1)
        .map((end, i, ends) => c.data.subarray(i ? ends[i - 1] : 0, end));
      assert.deepEqual(encodeChunkFrame(c, parts), want);
      // And the service decodes it back.
      assert.deepEqual(ExecRecordingFrame.decode(want).payload, { $case: 'chunk', chunk: { ...c } });
    }),
    { numRuns: 500 },
  );
});

test('the fast service serializes chunks of every frame type like the generated one, headers too', () => {
  const chunk: DataChunk = {
    timeOffsetMs: 1234,
    data: Buffer.from('hello'),
    direction: Direction.DIRECTION_OUTPUT,
    droppedBytes: 7,
  };
  const cases = [
    [FastRecordingService.streamShellRecording.requestSerialize, ShellRecordingFrame],
    [FastRecordingService.streamExecRecording.requestSerialize, ExecRecordingFrame],
    [FastRecordingService.streamTcpipRecording.requestSerialize, TcpipRecordingFrame],
    [FastRecordingService.streamSftpRecording.requestSerialize, SftpRecordingFrame],
  ] as const;
  for (const [ser, codec] of cases) {
    const frame = { payload: { $case: 'chunk' as const, chunk } };
    const enc = (ser as (v: typeof frame) => Buffer)(frame);
    assert.deepEqual(enc, Buffer.from((codec as typeof ExecRecordingFrame).encode(frame).finish()));
  }
  const resize = {
    payload: { $case: 'resize' as const, resize: { timeOffsetMs: 5, width: 100, height: 40 } },
  };
  assert.deepEqual(
    FastRecordingService.streamShellRecording.requestSerialize(resize),
    Buffer.from(ShellRecordingFrame.encode(resize).finish()),
  );
  const header = ExecRecordingFrame.fromPartial({
    payload: { $case: 'header', header: { sessionId: 'ex-1', command: 'ls' } },
  });
  assert.deepEqual(
    FastRecordingService.streamExecRecording.requestSerialize(header),
    Buffer.from(ExecRecordingFrame.encode(header).finish()),
  );
  // Values the fast path does not write (negative) fall back to the generated encoder.
  const negative = { payload: { $case: 'chunk' as const, chunk: { ...chunk, timeOffsetMs: -1 } } };
  assert.equal(encodeChunkFrame(negative.payload.chunk, chunk.data), undefined);
  assert.deepEqual(
    FastRecordingService.streamExecRecording.requestSerialize(negative),
    Buffer.from(ExecRecordingFrame.encode(negative).finish()),
  );
});
