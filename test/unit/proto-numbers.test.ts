// Field numbers are law. This table pins the numbers that matter most: the Exec-PTY members whose
// numbers are a best estimate (wire-protocol.md §4 — correct them HERE and in proto/ together) and
// every project extension (§9, 100+). Each row encodes a message with only that field set and checks
// the tag on the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import {
  CommandDetails,
  Destination,
  ExecRequest,
  ExecResponse,
  HandshakeRequest,
  HandshakeResponse,
  PortForwardResponse,
  ResizeTerminalRequest,
  ShellRequest,
  ShellResponse,
  ShellStartRequest,
  StreamEvent,
  TerminalSize,
  UnixSocketRequest,
  UnixSocketResponse,
  UnixSocketStartRequest,
} from '../../src/gen/k8shelld/v1/k8shelld.js';

interface Row {
  what: string;
  kind: 'best-estimate' | 'extension' | 'reference';
  field: number;
  bytes: Uint8Array;
}

const exit = { code: 1, signal: '', coreDumped: false, message: '' };
const ROWS: Row[] = [
  // Exec PTY: best estimate (wire-protocol.md §4).
  {
    what: 'CommandDetails.use_pty',
    kind: 'best-estimate',
    field: 5,
    bytes: CommandDetails.encode(CommandDetails.fromPartial({ usePty: true })).finish(),
  },
  {
    what: 'CommandDetails.width',
    kind: 'best-estimate',
    field: 6,
    bytes: CommandDetails.encode(CommandDetails.fromPartial({ width: 80 })).finish(),
  },
  {
    what: 'CommandDetails.height',
    kind: 'best-estimate',
    field: 7,
    bytes: CommandDetails.encode(CommandDetails.fromPartial({ height: 24 })).finish(),
  },
  {
    what: 'ExecRequest.resize',
    kind: 'best-estimate',
    field: 4,
    bytes: ExecRequest.encode({ request: { $case: 'resize', resize: { width: 1, height: 1 } } }).finish(),
  },
  {
    what: 'ExecResponse.pty',
    kind: 'best-estimate',
    field: 4,
    bytes: ExecResponse.encode({ response: { $case: 'pty', pty: '/dev/pts/1' } }).finish(),
  },
  {
    what: 'TerminalSize.width',
    kind: 'best-estimate',
    field: 1,
    bytes: TerminalSize.encode({ width: 1, height: 0 }).finish(),
  },
  {
    what: 'TerminalSize.height',
    kind: 'best-estimate',
    field: 2,
    bytes: TerminalSize.encode({ width: 0, height: 1 }).finish(),
  },
  // Project extensions (wire-protocol.md §9.2).
  {
    what: 'HandshakeRequest.capabilities',
    kind: 'extension',
    field: 100,
    bytes: HandshakeRequest.encode({ clientVersion: '', capabilities: ['x'] }).finish(),
  },
  {
    what: 'HandshakeResponse.capabilities',
    kind: 'extension',
    field: 100,
    bytes: HandshakeResponse.encode(HandshakeResponse.fromPartial({ capabilities: ['x'] })).finish(),
  },
  {
    what: 'HandshakeResponse.workspace_name',
    kind: 'extension',
    field: 101,
    bytes: HandshakeResponse.encode(HandshakeResponse.fromPartial({ workspaceName: 'ws' })).finish(),
  },
  {
    what: 'ShellStartRequest.want_exit_status',
    kind: 'extension',
    field: 100,
    bytes: ShellStartRequest.encode(ShellStartRequest.fromPartial({ wantExitStatus: true })).finish(),
  },
  {
    what: 'ShellStartRequest.set_env_vars_raw',
    kind: 'extension',
    field: 101,
    bytes: ShellStartRequest.encode(
      ShellStartRequest.fromPartial({ setEnvVarsRaw: [Buffer.from('A=\xff', 'latin1')] }),
    ).finish(),
  },
  {
    what: 'ShellResponse.exit_status',
    kind: 'extension',
    field: 100,
    bytes: ShellResponse.encode({ response: { $case: 'exitStatus', exitStatus: exit } }).finish(),
  },
  {
    what: 'CommandDetails.want_exit_status',
    kind: 'extension',
    field: 100,
    bytes: CommandDetails.encode(CommandDetails.fromPartial({ wantExitStatus: true })).finish(),
  },
  {
    what: 'CommandDetails.command_raw',
    kind: 'extension',
    field: 101,
    bytes: CommandDetails.encode(
      CommandDetails.fromPartial({ commandRaw: Buffer.from('echo \xff', 'latin1') }),
    ).finish(),
  },
  {
    what: 'CommandDetails.env_vars_raw',
    kind: 'extension',
    field: 102,
    bytes: CommandDetails.encode(
      CommandDetails.fromPartial({ envVarsRaw: [Buffer.from('A=\xff', 'latin1')] }),
    ).finish(),
  },
  {
    what: 'ExecResponse.exit_status',
    kind: 'extension',
    field: 100,
    bytes: ExecResponse.encode({ response: { $case: 'exitStatus', exitStatus: exit } }).finish(),
  },
  {
    what: 'Destination.half_close',
    kind: 'extension',
    field: 100,
    bytes: Destination.encode(Destination.fromPartial({ halfClose: true })).finish(),
  },
  {
    what: 'Destination.confirm_connect',
    kind: 'extension',
    field: 101,
    bytes: Destination.encode(Destination.fromPartial({ confirmConnect: true })).finish(),
  },
  {
    what: 'PortForwardResponse.event',
    kind: 'extension',
    field: 100,
    bytes: PortForwardResponse.encode({
      data: Buffer.alloc(0),
      event: StreamEvent.STREAM_EVENT_EOF,
    }).finish(),
  },
  {
    what: 'UnixSocketStartRequest.multiplex',
    kind: 'extension',
    field: 100,
    bytes: UnixSocketStartRequest.encode(UnixSocketStartRequest.fromPartial({ multiplex: true })).finish(),
  },
  {
    what: 'UnixSocketStartRequest.half_close',
    kind: 'extension',
    field: 101,
    bytes: UnixSocketStartRequest.encode(UnixSocketStartRequest.fromPartial({ halfClose: true })).finish(),
  },
  {
    what: 'UnixSocketStartRequest.owner_id',
    kind: 'extension',
    field: 102,
    bytes: UnixSocketStartRequest.encode(UnixSocketStartRequest.fromPartial({ ownerId: 'sh-x1' })).finish(),
  },
  {
    what: 'UnixSocketStartRequest.confirm_connect',
    kind: 'extension',
    field: 103,
    bytes: UnixSocketStartRequest.encode(
      UnixSocketStartRequest.fromPartial({ confirmConnect: true }),
    ).finish(),
  },
  {
    what: 'UnixSocketRequest.connection_id',
    kind: 'extension',
    field: 100,
    bytes: UnixSocketRequest.encode({ request: undefined, connectionId: 3, event: 0 }).finish(),
  },
  {
    what: 'UnixSocketRequest.event',
    kind: 'extension',
    field: 101,
    bytes: UnixSocketRequest.encode({
      request: undefined,
      connectionId: 0,
      event: StreamEvent.STREAM_EVENT_CLOSED,
    }).finish(),
  },
  {
    what: 'UnixSocketResponse.connection_id',
    kind: 'extension',
    field: 100,
    bytes: UnixSocketResponse.encode({ data: Buffer.alloc(0), connectionId: 3, event: 0 }).finish(),
  },
  {
    what: 'UnixSocketResponse.event',
    kind: 'extension',
    field: 101,
    bytes: UnixSocketResponse.encode({
      data: Buffer.alloc(0),
      connectionId: 0,
      event: StreamEvent.STREAM_EVENT_OPENED,
    }).finish(),
  },
  // A few reference numbers with gaps that are easy to get wrong (§3.2).
  {
    what: 'ShellRequest.data (2 never used)',
    kind: 'reference',
    field: 3,
    bytes: ShellRequest.encode({
      request: { $case: 'data', data: Buffer.from('x') },
    }).finish(),
  },
  {
    what: 'ResizeTerminalRequest.width (1 never used)',
    kind: 'reference',
    field: 2,
    bytes: ResizeTerminalRequest.encode({
      width: 1,
      height: 0,
    }).finish(),
  },
];

for (const row of ROWS) {
  test(`${row.kind}: ${row.what} is field ${row.field}`, () => {
    const [field] = new BinaryReader(row.bytes).tag();
    assert.equal(field, row.field);
  });
}

test('extension numbers are all in 100–199, so reference peers skip them', () => {
  for (const r of ROWS.filter((x) => x.kind === 'extension'))
    assert.ok(r.field >= 100 && r.field <= 199, r.what);
});
