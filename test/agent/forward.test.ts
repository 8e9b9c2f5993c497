// PortForward and UnixSocket (DIAL, LISTEN plain and multiplexed, owner restriction) over real gRPC
// against real TCP and unix-socket peers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { status } from '@grpc/grpc-js';
import {
  CommandDetails,
  StreamEvent,
  UnixSocketMode,
  UnixSocketStartRequest,
  type ExecResponse,
  type PortForwardResponse,
  type UnixSocketRequest,
  type UnixSocketResponse,
} from '../../src/gen/k8shelld/v1/k8shelld.js';
import { makeTempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { collect, md, newId, startTestAgent, type TestAgent } from './harness.js';

const dir = makeTempDir('agent-fwd-');
let t: TestAgent;
const servers: Server[] = [];

/** Echoes every byte back. */
function echoHandler(s: Socket): void {
  s.on('error', () => undefined);
  s.pipe(s);
}
/** Replies "got <n>" only after reading EOF, then closes (tests half-close). */
function replyAfterEof(s: Socket): void {
  let n = 0;
  s.on('error', () => undefined);
  s.on('data', (d: Buffer) => (n += d.length));
  s.on('end', () => s.end(`got ${n}`));
}
async function listenOn(handler: (s: Socket) => void, where: number | string): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, handler);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(where as number, '127.0.0.1', () => r()));
  return srv;
}
async function listenUnix(handler: (s: Socket) => void, path: string): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, handler);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(path, () => r()));
  return srv;
}
function portOf(s: Server): number {
  const a = s.address();
  return typeof a === 'object' && a ? a.port : 0;
}
function pfText(msgs: PortForwardResponse[]): string {
  return msgs.map((m) => m.data.toString()).join('');
}

before(async () => {
  t = await startTestAgent({ home: dir.path });
});
after(async () => {
  await t.close();
  for (const s of servers) s.close();
  dir.cleanup();
});

describe('agent PortForward', () => {
  test('relays to a TCP echo server and leaks no stream', async () => {
    const srv = await listenOn(echoHandler, 0);
    const call = t.ssh.portForward(md({ 'portforward-id': newId('pf') }));
    const c = collect(call);
    call.write({
      request: {
        $case: 'destination',
        destination: { ip: '127.0.0.1', port: portOf(srv), halfClose: false, confirmConnect: false },
      },
    });
    call.write({ request: { $case: 'data', data: Buffer.from('ping-1') } });
    await waitFor(() => pfText(c.messages) === 'ping-1');
    assert.equal(t.agent.stats().open.portforward, 1);
    call.end();
    assert.equal((await c.done).code, status.OK);
    for (const m of c.messages) assert.equal(m.event, StreamEvent.STREAM_EVENT_NONE);
    await waitFor(() => t.agent.stats().open.portforward === 0, { what: 'port-forward stream closed' });
  });

  test('half-close and dial confirmation: OPENED first, reply after client EOF, then EOF event, then OK', async () => {
    const srv = await listenOn(replyAfterEof, 0);
    const call = t.ssh.portForward(md({ 'portforward-id': newId('pf') }));
    const c = collect(call);
    call.write({
      request: {
        $case: 'destination',
        destination: { ip: '127.0.0.1', port: portOf(srv), halfClose: true, confirmConnect: true },
      },
    });
    await waitFor(() => c.messages.length > 0);
    assert.equal(c.messages[0]?.event, StreamEvent.STREAM_EVENT_OPENED);
    call.write({ request: { $case: 'data', data: Buffer.from('12345') } });
    call.end();
    assert.equal((await c.done).code, status.OK);
    assert.equal(pfText(c.messages), 'got 5');
    const last = c.messages.at(-1);
    assert.equal(last?.event, StreamEvent.STREAM_EVENT_EOF);
    assert.equal(last?.data.length, 0);
  });

  test('reference mode: client EOF tears the forward down at once (no reply, no events)', async () => {
    const srv = await listenOn(replyAfterEof, 0);
    const call = t.ssh.portForward(md({ 'portforward-id': newId('pf') }));
    const c = collect(call);
    call.write({
      request: {
        $case: 'destination',
        destination: { ip: '127.0.0.1', port: portOf(srv), halfClose: false, confirmConnect: false },
      },
    });
    call.write({ request: { $case: 'data', data: Buffer.from('abc') } });
    call.end();
    assert.equal((await c.done).code, status.OK);
    assert.equal(c.messages.length, 0);
  });

  test('dial to a closed port → UNAVAILABLE; wrong first message → INVALID_ARGUMENT', async () => {
    const srv = await listenOn(echoHandler, 0);
    const port = portOf(srv);
    await new Promise<void>((r) => srv.close(() => r()));
    const call = t.ssh.portForward(md({ 'portforward-id': newId('pf') }));
    const c = collect(call);
    call.write({
      request: {
        $case: 'destination',
        destination: { ip: '127.0.0.1', port, halfClose: false, confirmConnect: true },
      },
    });
    const fin = await c.done;
    assert.equal(fin.code, status.UNAVAILABLE);
    assert.match(fin.details, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.equal(c.messages.length, 0);

    const bad = t.ssh.portForward(md({ 'portforward-id': newId('pf') }));
    const b = collect(bad);
    bad.write({ request: { $case: 'data', data: Buffer.from('x') } });
    assert.equal((await b.done).code, status.INVALID_ARGUMENT);
    const noId = t.ssh.portForward();
    const n = collect(noId);
    noId.write({
      request: {
        $case: 'destination',
        destination: { ip: '127.0.0.1', port, halfClose: false, confirmConnect: false },
      },
    });
    assert.equal((await n.done).code, status.INVALID_ARGUMENT);
  });
});

function usStart(p: Partial<UnixSocketStartRequest>): UnixSocketRequest {
  return {
    request: { $case: 'startRequest', startRequest: UnixSocketStartRequest.fromPartial(p) },
    connectionId: 0,
    event: 0,
  };
}
function usData(data: string, connectionId = 0): UnixSocketRequest {
  return { request: { $case: 'data', data: Buffer.from(data) }, connectionId, event: 0 };
}
function usEvent(event: StreamEvent, connectionId: number): UnixSocketRequest {
  return { request: undefined, connectionId, event };
}
function usText(msgs: UnixSocketResponse[], conn?: number): string {
  return msgs
    .filter((m) => conn === undefined || m.connectionId === conn)
    .map((m) => m.data.toString())
    .join('');
}
/** A local client that records what it receives and when it is closed. */
function localClient(path: string) {
  const sock = connect(path);
  const st = { got: '', closed: false, ended: false, sock };
  sock.on('data', (d: Buffer) => (st.got += d.toString()));
  sock.on('end', () => (st.ended = true));
  sock.on('close', () => (st.closed = true));
  sock.on('error', () => undefined);
  return st;
}

describe('agent UnixSocket', () => {
  test('DIAL relays to an existing socket; a missing socket → INTERNAL', async () => {
    const path = dir.join('echo.sock');
    await listenUnix(echoHandler, path);
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(usStart({ mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL, socketPath: path }));
    call.write(usData('over-unix'));
    await waitFor(() => usText(c.messages) === 'over-unix');
    call.end();
    assert.equal((await c.done).code, status.OK);

    const miss = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const m = collect(miss);
    miss.write(usStart({ mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL, socketPath: dir.join('missing.sock') }));
    const fin = await m.done;
    assert.equal(fin.code, status.INTERNAL);
    assert.match(fin.details, /missing\.sock/);
  });

  test('DIAL with half_close: reply after EOF, then EOF event', async () => {
    const path = dir.join('eof.sock');
    await listenUnix(replyAfterEof, path);
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(usStart({ mode: UnixSocketMode.UNIX_SOCKET_MODE_DIAL, socketPath: path, halfClose: true }));
    call.write(usData('1234567'));
    call.end();
    assert.equal((await c.done).code, status.OK);
    assert.equal(usText(c.messages), 'got 7');
    assert.equal(c.messages.at(-1)?.event, StreamEvent.STREAM_EVENT_EOF);
  });

  test('LISTEN (reference mode): two sequential clients, mode 0700, file removed at the end', async () => {
    const path = dir.join('agent-plain.sock');
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(usStart({ mode: UnixSocketMode.UNIX_SOCKET_MODE_LISTEN, socketPath: path }));
    await waitFor(() => existsSync(path), { what: 'listen socket' });
    assert.equal(statSync(path).mode & 0o777, 0o700);
    for (const name of ['first', 'second']) {
      const before = usText(c.messages);
      const cl = localClient(path);
      cl.sock.write(`hello-${name}`);
      await waitFor(() => usText(c.messages) === `${before}hello-${name}`, { what: `bytes of ${name}` });
      call.write(usData(`reply-${name}`));
      await waitFor(() => cl.got === `reply-${name}`, { what: `reply to ${name}` });
      cl.sock.end();
      await waitFor(() => cl.closed, { what: `${name} closed` });
    }
    for (const m of c.messages) assert.equal(m.connectionId, 0);
    call.end();
    assert.equal((await c.done).code, status.OK);
    assert.equal(existsSync(path), false);
  });

  test('LISTEN multiplex: two concurrent clients each get their own bytes back', async () => {
    const path = dir.join('agent-mux.sock');
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(usStart({ mode: UnixSocketMode.UNIX_SOCKET_MODE_LISTEN, socketPath: path, multiplex: true }));
    // The listener announces itself as connection 0 once the socket is ready.
    await waitFor(() =>
      c.messages.some((m) => m.connectionId === 0 && m.event === StreamEvent.STREAM_EVENT_OPENED),
    );
    assert.ok(existsSync(path));
    const a = localClient(path);
    await waitFor(() =>
      c.messages.some((m) => m.connectionId === 1 && m.event === StreamEvent.STREAM_EVENT_OPENED),
    );
    const b = localClient(path);
    await waitFor(() =>
      c.messages.some((m) => m.connectionId === 2 && m.event === StreamEvent.STREAM_EVENT_OPENED),
    );
    a.sock.write('from-a');
    b.sock.write('from-b');
    await waitFor(() => usText(c.messages, 1) === 'from-a' && usText(c.messages, 2) === 'from-b');
    // Echo each connection's bytes back on its own id; an unknown id is dropped.
    call.write(usData('to-b', 2));
    call.write(usData('to-a', 1));
    call.write(usData('to-nobody', 9));
    await waitFor(() => a.got === 'to-a' && b.got === 'to-b');
    // Gateway EOF on 1 → client a sees end.
    call.write(usEvent(StreamEvent.STREAM_EVENT_EOF, 1));
    await waitFor(() => a.ended);
    // Client b closes → EOF for 2; the gateway's EOF completes it → CLOSED for 2.
    const has = (id: number, ev: StreamEvent) =>
      c.messages.some((m) => m.connectionId === id && m.event === ev);
    b.sock.destroy();
    await waitFor(() => has(2, StreamEvent.STREAM_EVENT_EOF));
    call.write(usEvent(StreamEvent.STREAM_EVENT_EOF, 2));
    await waitFor(() => has(2, StreamEvent.STREAM_EVENT_CLOSED));
    // Client a closed its side after the EOF (no half-open): connection 1 is gone too.
    await waitFor(() => has(1, StreamEvent.STREAM_EVENT_CLOSED));
    call.end();
    assert.equal((await c.done).code, status.OK);
    await waitFor(() => a.closed);
    assert.equal(existsSync(path), false);
    assert.equal(a.got + b.got, 'to-ato-b');
  });

  test('owner restriction: a non-descendant is refused, a descendant of the owner exec is served', async () => {
    const path = dir.join('agent-owner.sock');
    const exId = newId('ex');
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(
      usStart({
        mode: UnixSocketMode.UNIX_SOCKET_MODE_LISTEN,
        socketPath: path,
        multiplex: true,
        ownerId: exId,
      }),
    );
    await waitFor(() => existsSync(path));

    const ex = t.ssh.exec(md({ 'exec-id': exId }));
    const e = collect(ex);
    ex.write({
      request: {
        $case: 'commandDetails',
        commandDetails: CommandDetails.fromPartial({
          shellBinary: '/bin/sh',
          command: 'echo ready; read x; printf from-owner | socat -t 5 - UNIX-CONNECT:"$SOCK"',
          envVars: [`SOCK=${path}`],
        }),
      },
    });
    const stdout = () =>
      e.messages
        .map((m: ExecResponse) => (m.response?.$case === 'stdout' ? m.response.stdout.toString() : ''))
        .join('');
    await waitFor(() => stdout().includes('ready'));

    const stranger = localClient(path);
    stranger.sock.write('intruder');
    await waitFor(() => stranger.closed, { what: 'stranger refused' });
    // Only the listener-ready frame (connection 0): the stranger never became a connection.
    assert.deepEqual(
      c.messages.map((m) => [m.connectionId, m.event]),
      [[0, StreamEvent.STREAM_EVENT_OPENED]],
    );

    ex.write({ request: { $case: 'input', input: Buffer.from('go\n') } });
    await waitFor(() => usText(c.messages, 1) === 'from-owner', { what: 'bytes from the owner descendant' });
    assert.equal(c.messages.find((m) => m.connectionId === 1)?.event, StreamEvent.STREAM_EVENT_OPENED);
    assert.ok(!usText(c.messages).includes('intruder'));
    call.write(usEvent(StreamEvent.STREAM_EVENT_CLOSED, 1));
    assert.equal((await e.done).code, status.OK);
    call.end();
    assert.equal((await c.done).code, status.OK);
  });

  test('LISTEN on an impossible path → INTERNAL; an unknown mode → INVALID_ARGUMENT', async () => {
    const call = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const c = collect(call);
    call.write(usStart({ socketPath: dir.join('no-such-dir', 'a.sock') }));
    const fin = await c.done;
    assert.equal(fin.code, status.INTERNAL);
    assert.match(fin.details, /no-such-dir/);

    const bad = t.ssh.unixSocket(md({ 'unixsocket-id': newId('ux') }));
    const b = collect(bad);
    bad.write(usStart({ mode: 7 as UnixSocketMode, socketPath: dir.join('x.sock') }));
    assert.equal((await b.done).code, status.INVALID_ARGUMENT);
  });

  test('no stream of any kind is left open', async () => {
    await waitFor(() => Object.values(t.agent.stats().open).every((n) => n === 0), {
      what: `all streams closed (${JSON.stringify(t.agent.stats().open)})`,
    });
  });
});
