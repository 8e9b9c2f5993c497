// Field numbers of our own package sshproxy.admin.v1 (proto/sshproxy/admin/v1/admin.proto) are law
// too: clients outside this repository depend on them. Each row encodes one field alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import {
  Connection,
  EndConnectionRequest,
  ListConnectionsRequest,
  ListConnectionsResponse,
} from '../../src/gen/sshproxy/admin/v1/admin.js';

const conn = (over: Partial<Connection>): Uint8Array =>
  Connection.encode(Connection.fromPartial(over)).finish();

const ROWS: [string, number, Uint8Array][] = [
  ['Connection.id', 1, conn({ id: 'x' })],
  ['Connection.username', 2, conn({ username: 'x' })],
  ['Connection.workspace', 3, conn({ workspace: 'x' })],
  ['Connection.client_address', 4, conn({ clientAddress: 'x' })],
  ['Connection.client_version', 5, conn({ clientVersion: 'x' })],
  ['Connection.started_at', 6, conn({ startedAt: new Date(0) })],
  ['Connection.bytes_in', 7, conn({ bytesIn: 1 })],
  ['Connection.bytes_out', 8, conn({ bytesOut: 1 })],
  ['Connection.open_channels', 9, conn({ openChannels: 1 })],
  ['Connection.operations', 10, conn({ operations: ['s'] })],
  ['Connection.userstr_blueprint', 11, conn({ userstrBlueprint: 'x' })],
  ['Connection.workspace_blueprint', 12, conn({ workspaceBlueprint: 'x' })],
  ['ListConnectionsRequest.username', 1, ListConnectionsRequest.encode({ username: 'x' }).finish()],
  [
    'ListConnectionsResponse.connections',
    1,
    ListConnectionsResponse.encode({ connections: [Connection.fromPartial({})] }).finish(),
  ],
  ['EndConnectionRequest.id', 1, EndConnectionRequest.encode({ id: 'x', message: '' }).finish()],
  ['EndConnectionRequest.message', 2, EndConnectionRequest.encode({ id: '', message: 'x' }).finish()],
];

for (const [what, field, bytes] of ROWS) {
  test(`sshproxy.admin.v1 ${what} is field ${field}`, () => {
    assert.equal(new BinaryReader(bytes).tag()[0], field);
  });
}
