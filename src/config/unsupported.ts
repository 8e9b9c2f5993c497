// Features the configuration can enable but this build does not have yet. A configured feature that
// silently does nothing is the worst kind of defect (an ignored authz is an open door), so the
// gateway refuses to start instead, naming the key. Each feature's entry goes when it is built.
import type { Config } from './load.js';

export interface Unsupported {
  key: string;
  feature: string;
}

const RECORD_FLAGS = ['recordShell', 'recordExec', 'recordSFTP', 'recordDirectTCPIP'] as const;

export function unsupportedFeatures(c: Config): Unsupported[] {
  const out: Unsupported[] = [];
  const add = (on: boolean, key: string, feature: string) => on && out.push({ key, feature });
  add(c.authz.address !== '', 'authz.address', 'authorization through authz.v1');
  add(c.session.address !== '', 'session.address', 'session tracking and recording');
  for (const f of RECORD_FLAGS) add(c.server.recording[f], `server.recording.${f}`, 'session recording');
  add(c.server.proxyProtocol, 'server.proxyProtocol', 'PROXY protocol');
  add(c.server.forking, 'server.forking', 'one process per connection');
  add(c.nats.enabled, 'nats.enabled', 'NATS user locks and recording overrides');
  add(
    c.server.publishSshFailures.enabled,
    'server.publishSshFailures.enabled',
    'failed-login events over NATS',
  );
  add(c.grpc.port !== 0, 'grpc.port', 'the gRPC control service');
  add(c.metrics.address !== '', 'metrics.address', 'metrics and health endpoints');
  return out;
}
