// The shipped sample must keep loading and keep the reference sample's values (reference-behaviour.md §2.4).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/load.js';

const SAMPLE = fileURLToPath(new URL('../../config/config.yaml', import.meta.url));
const SECRETS = fileURLToPath(new URL('../fixtures/config/secrets', import.meta.url));

describe('config/config.yaml', () => {
  it('loads with SECRET_FILES set and matches the reference sample', async () => {
    const { config, warnings } = await loadConfig(SAMPLE, { SECRET_FILES: SECRETS });
    assert.deepEqual(warnings, []);
    const s = config.server;
    assert.equal(s.port, 2022);
    assert.deepEqual(s.serverKey, [`${SECRETS}/server_key`]);
    assert.equal(s.forking, false);
    assert.equal(s.proxyProtocol, true);
    assert.deepEqual(s.writerOptions, {
      showProvisionInfo: false,
      showPulse: true,
      showPercentage: true,
      showErrors: true,
      showSystemErrors: false,
    });
    assert.equal(s.SSHHandshakeTimeout, 15);
    assert.equal(s.maxDirectTCPIPConnections, 15);
    assert.equal(s.publishSshFailures.enabled, false);
    assert.equal(s.publishSshFailures.subject, 'ssh.failures');
    assert.equal(s.recording.recordShell, true);
    assert.equal(s.recording.recordDirectTCPIP, true);
    assert.equal(s.recording.directTCPIP.format, 'pcapng');
    assert.deepEqual(s.recording.directTCPIP.vscode, { terminals: true, recordInput: false });
    assert.equal(config.grpc.port, 9050);
    assert.equal(config.grpc.enableTLS, false);
    assert.equal(config.grpc.authEnabled, false);
    assert.equal(config.grpc.audience, 'ssh-proxy');
    // The fixture token has surrounding whitespace: !file trims it.
    assert.equal(config.nats.password, 'nats-test-token-123');
    assert.notEqual(config.identity.address, '');
    assert.notEqual(config.session.address, '');
    assert.notEqual(config.provisioner.address, '');
  });

  it('needs SECRET_FILES', async () => {
    await assert.rejects(loadConfig(SAMPLE, {}), /environment variable 'SECRET_FILES' not set/);
  });
});
