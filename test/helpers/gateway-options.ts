// Complete gateway options for tests that build a gateway directly (not through the local stack).
import { DEFAULT_ACCEPT_ENV } from '../../src/config/schema.js';
import type { GatewayOptions } from '../../src/gateway/server.js';

export function testGatewayOptions(hostKey: Buffer, over: Partial<GatewayOptions> = {}): GatewayOptions {
  return {
    host: '127.0.0.1',
    port: 0,
    hostKeys: [hostKey],
    handshakeTimeoutMs: 30_000,
    maxAuthTries: 6,
    keepaliveIntervalMs: 15_000,
    keepaliveCountMax: 3,
    ciphers: ['aes128-gcm@openssh.com'],
    authzTimeoutMs: 5000,
    channels: {
      sftpBinary: '/usr/lib/openssh/sftp-server',
      maxDirectTcpip: 15,
      maxStreamLocal: 15,
      maxSessions: 10,
      acceptEnv: DEFAULT_ACCEPT_ENV,
      maxEnvCount: 64,
      maxEnvBytes: 65536,
      dialTimeoutMs: 30_000,
      logCommands: 'summary',
      writerOptions: {
        showProvisionInfo: false,
        showPulse: false,
        showPercentage: false,
        showErrors: true,
        showSystemErrors: true,
      },
    },
    workspace: {
      provisionTimeoutS: 30,
      handshakeTimeoutMs: 5000,
      k8shelld: { caCertPath: '/nonexistent' },
    },
    ...over,
  };
}
