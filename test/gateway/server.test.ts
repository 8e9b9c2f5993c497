// Gateway SSH-level behaviour that needs no workspace: version string, login grace time, and the
// limit on authentication attempts. Real local identity/provisioner, real OpenSSH client.
import { testGatewayOptions } from '../helpers/gateway-options.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { createIdentityClient } from '../../src/backends/identity.js';
import { createProvisionerClient } from '../../src/backends/provisioner.js';
import { createGateway, sshIdent, type RunningGateway } from '../../src/gateway/server.js';
import { startLocalIdentity, type LocalIdentity } from '../../src/local/identity.js';
import { startLocalProvisioner, type LocalProvisioner } from '../../src/local/provisioner.js';
import { generateHostKey } from '../../src/gateway/hostkeys.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';
import { run } from '../e2e/harness.js';

describe('gateway SSH server', { timeout: 60_000 }, () => {
  let dir: TempDir;
  let identity: LocalIdentity;
  let provisioner: LocalProvisioner;
  let gw: RunningGateway;
  const close: Array<() => void> = [];
  const wrongKeys: string[] = [];

  before(async () => {
    dir = makeTempDir('spx-gw-');
    const hostKey = dir.join('host_key');
    generateHostKey(hostKey);
    for (let i = 0; i < 8; i++) {
      const k = dir.join(`wrong${i}`);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', k]);
      wrongKeys.push(k);
    }
    writeFileSync(dir.join('users.yaml'), 'users: []\n');
    identity = await startLocalIdentity({ dataDir: dir.path, homeDir: dir.join('nohome') });
    provisioner = await startLocalProvisioner({ dataDir: dir.path });
    const id = createIdentityClient({ address: identity.address });
    const prov = createProvisionerClient({ address: provisioner.address });
    close.push(
      () => id.close(),
      () => prov.close(),
    );
    gw = await createGateway(testGatewayOptions(readFileSync(hostKey), { handshakeTimeoutMs: 3000 }), {
      identity: id,
      provisioner: prov,
    });
  });
  after(async () => {
    await gw?.stop();
    close.forEach((f) => f());
    await provisioner?.close();
    await identity?.close();
    dir?.cleanup();
  });

  test('announces the reference version string and closes a silent client after the login grace time', async () => {
    const sock = net.connect(gw.port, '127.0.0.1');
    let banner = '';
    sock.on('data', (d: Buffer) => (banner += d.toString('latin1')));
    await withTimeout(
      new Promise((r) => sock.once('close', r)),
      20_000,
      'the gateway to drop a silent client',
    );
    assert.match(
      banner,
      new RegExp(`^SSH-2\\.0-${sshIdent().replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\r\\n`),
    );
    assert.match(sshIdent(), /^ssh-proxy_[^/]+\/[0-9a-f]{7}_k8shell\.io$/);
  });

  test('at most 6 authentication attempts per connection', async () => {
    const args = ['-F', '/dev/null', '-p', String(gw.port), '-v', '-o', 'StrictHostKeyChecking=no'];
    args.push('-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes');
    args.push('-o', 'IdentityAgent=none', '-o', 'PreferredAuthentications=publickey');
    for (const k of wrongKeys) args.push('-i', k);
    // The OS user exists in the local identity, so every key is a real, failing attempt.
    const r = await run('ssh', [...args, `${userInfo().username}@127.0.0.1`, 'true'], { timeoutMs: 20_000 });
    assert.equal(r.code, 255);
    const offered = r.stderr.match(/Offering public key/g)?.length ?? 0;
    assert.equal(offered, 6, `the client got to offer ${offered} keys:\n${r.stderr}`);
    // Like sshd, the client is told why it was cut off.
    assert.match(r.stderr, /Received disconnect from .*: ?2: Too many authentication failures/);
  });
});
