// Bearer-token check on every RPC (unary and streaming), including a token rotated on disk.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { CommandDetails } from '../../src/gen/k8shelld/v1/k8shelld.js';
import { makeTempDir } from '../helpers/tmp.js';
import { collect, md, newId, startTestAgent, unary, type TestAgent } from './harness.js';

const dir = makeTempDir('agent-auth-');
const tokenFile = dir.join('token');
let t: TestAgent;

function setToken(value: string): void {
  // Replace atomically, as a projected service-account token is.
  writeFileSync(`${tokenFile}.new`, `${value}\n`);
  renameSync(`${tokenFile}.new`, tokenFile);
}
function handshake(auth?: string) {
  return unary<{ accepted: boolean }>((cb) =>
    t.sys.handshake({ clientVersion: '', capabilities: [] }, md(auth ? { authorization: auth } : {}), cb),
  );
}
async function exec(auth?: string) {
  const call = t.ssh.exec(md({ 'exec-id': newId('ex'), ...(auth ? { authorization: auth } : {}) }));
  const c = collect(call);
  call.write({
    request: { $case: 'commandDetails', commandDetails: CommandDetails.fromPartial({ command: 'exit 4' }) },
  });
  call.end();
  return { ...c, fin: await c.done };
}

before(async () => {
  setToken('first-secret');
  t = await startTestAgent({ tokenFile });
});
after(async () => {
  await t.close();
  dir.cleanup();
});

describe('agent bearer token', () => {
  test('unary: missing or wrong token → UNAUTHENTICATED, right token accepted', async () => {
    const none = await handshake();
    assert.equal(none.err?.code, status.UNAUTHENTICATED);
    assert.match(none.err?.details ?? '', /missing authorization/);
    const wrong = await handshake('Bearer nope');
    assert.equal(wrong.err?.code, status.UNAUTHENTICATED);
    assert.match(wrong.err?.details ?? '', /invalid bearer token/);
    const ok = await handshake('Bearer first-secret');
    assert.equal(ok.err, null);
    assert.equal(ok.res?.accepted, true);
  });

  test('streams are checked too', async () => {
    const none = await exec();
    assert.equal(none.fin.code, status.UNAUTHENTICATED);
    assert.equal(none.messages.length, 0);
    const ok = await exec('Bearer first-secret');
    assert.equal(ok.fin.code, status.OK);
    const last = ok.messages.at(-1)?.response;
    assert.equal(last?.$case === 'exitCode' ? last.exitCode : -1, 4);
  });

  test('a changed token file takes effect without a restart', async () => {
    setToken('second-secret');
    const old = await handshake('Bearer first-secret');
    assert.equal(old.err?.code, status.UNAUTHENTICATED);
    const fresh = await handshake('Bearer second-secret');
    assert.equal(fresh.err, null);
  });
});
