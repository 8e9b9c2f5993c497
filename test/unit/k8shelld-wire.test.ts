// The data-frame fast path must produce exactly the generated encoding and read every message the
// generated decoder reads, including the ones it leaves to the generated code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  ExecRequest,
  ExecResponse,
  PortForwardResponse,
  ShellRequest,
  StreamEvent,
  UnixSocketRequest,
} from '../../src/gen/k8shelld/v1/k8shelld.js';
import { decodeBytesField, encodeBytesField, FastSshService } from '../../src/common/k8shelld-wire.js';

const sizes = [0, 1, 127, 128, 300, 16_383, 16_384, 32 * 1024, 2_097_152 + 3];

test('encodeBytesField is byte-identical to the generated encoder for every length class', () => {
  for (const n of sizes) {
    const data = randomBytes(n);
    const generated = Buffer.from(
      ExecResponse.encode({ response: { $case: 'stdout', stdout: data } }).finish(),
    );
    assert.ok(encodeBytesField(1, data).equals(generated), `length ${n}`);
    assert.ok(decodeBytesField(generated, 1)?.equals(data), `decode length ${n}`);
  }
});

test('decodeBytesField declines anything but exactly one such field', () => {
  const one = encodeBytesField(2, Buffer.from('abc'));
  assert.equal(decodeBytesField(one, 1), undefined, 'other field');
  assert.equal(
    decodeBytesField(Buffer.concat([one, Buffer.from([0x18, 1])]), 2),
    undefined,
    'trailing field',
  );
  assert.equal(decodeBytesField(one.subarray(0, 3), 2), undefined, 'truncated');
  assert.equal(decodeBytesField(Buffer.alloc(0), 2), undefined, 'empty');
});

test('FastSshService codecs round-trip data frames and fall back for everything else', () => {
  const data = randomBytes(40_000);
  const cases: Array<
    [
      string,
      { requestSerialize: (v: never) => Buffer; requestDeserialize: (b: Buffer) => unknown },
      unknown,
      (v: never) => Uint8Array,
    ]
  > = [
    [
      'exec input',
      FastSshService.exec,
      { request: { $case: 'input', input: data } },
      (v) => ExecRequest.encode(v).finish(),
    ],
    [
      'exec signal',
      FastSshService.exec,
      { request: { $case: 'signal', signal: 'INT' } },
      (v) => ExecRequest.encode(v).finish(),
    ],
    [
      'shell data',
      FastSshService.shell,
      { request: { $case: 'data', data } },
      (v) => ShellRequest.encode(v).finish(),
    ],
    [
      'unixsocket multiplexed data',
      FastSshService.unixSocket,
      { request: { $case: 'data', data }, connectionId: 3, event: StreamEvent.STREAM_EVENT_NONE },
      (v) => UnixSocketRequest.encode(v).finish(),
    ],
  ];
  for (const [what, m, msg, generated] of cases) {
    const wire = m.requestSerialize(msg as never);
    assert.ok(wire.equals(Buffer.from(generated(msg as never))), `${what}: same bytes as generated`);
    assert.deepEqual(m.requestDeserialize(wire), msg, `${what}: round trip`);
  }
  const eof = { data: Buffer.alloc(0), event: StreamEvent.STREAM_EVENT_EOF };
  const wire = FastSshService.portForward.responseSerialize(eof);
  assert.ok(wire.equals(Buffer.from(PortForwardResponse.encode(eof).finish())));
  assert.deepEqual(FastSshService.portForward.responseDeserialize(wire), eof);
  const exit = { response: { $case: 'exitCode' as const, exitCode: 3 } };
  assert.deepEqual(
    FastSshService.exec.responseDeserialize(FastSshService.exec.responseSerialize(exit)),
    exit,
  );
});
