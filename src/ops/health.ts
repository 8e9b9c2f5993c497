// The operations HTTP listener on `metrics.address` (ours, §23.l): /metrics (Prometheus text),
// /healthz (liveness: the event loop answers) and /readyz (readiness: a set of checks the gateway
// supplies, e.g. listening, backends reachable within a short probe, not draining).
//
// It is a separate listener so that scraping never competes with SSH, and it can be bound to an
// internal interface. Every wait has a deadline: the readiness callback is bounded by `readyTimeoutMs`
// and slow HTTP clients by the server's header/request timeouts.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@grpc/grpc-js';
import { errText, type Logger } from './log.js';
import type { GatewayMetrics } from './metrics.js';

export interface CheckResult {
  ok: boolean;
  /** Short reason when not ok (shown in the /readyz body). */
  detail?: string;
}

export type ReadinessReport = Record<string, CheckResult>;

/** Returns the state of every readiness check; failures of the callback itself count as not ready. */
export type Readiness = () => Promise<ReadinessReport> | ReadinessReport;

export interface HealthServerOptions {
  /** `host:port`, `[v6]:port` or `:port` (all interfaces), as in config `metrics.address`. */
  address: string;
  metrics: GatewayMetrics;
  readiness: Readiness;
  /** Deadline for the readiness callback (default 3000 ms). */
  readyTimeoutMs?: number;
  /** Keep retrying an address in use for this long (default 0: fail at once). */
  bindRetryMs?: number;
  log?: Logger;
}

export interface HealthServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Splits `host:port`; `:port` and an empty host mean all interfaces. */
export function parseListenAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address.trim());
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new Error(`invalid listen address ${JSON.stringify(address)} (want host:port, [v6]:port or :port)`);
  }
  const host = m[1] ?? m[2];
  return { host: host ? host : undefined, port };
}

function send(res: http.ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

const JSON_TYPE = 'application/json; charset=utf-8';

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const { host, port } = parseListenAddress(opts.address);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 3000;

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    switch (path) {
      case '/metrics':
        opts.metrics.text().then(
          (text) => send(res, 200, opts.metrics.registry.contentType, text),
          (e: unknown) => {
            opts.log?.error({ err: errText(e) }, 'collecting metrics failed');
            send(res, 500, 'text/plain; charset=utf-8', 'collecting metrics failed\n');
          },
        );
        return;
      case '/healthz':
        // Answering at all is the liveness signal: the event loop is turning.
        send(res, 200, JSON_TYPE, '{"status":"ok"}\n');
        return;
      case '/readyz':
        withDeadline(Promise.resolve().then(opts.readiness), readyTimeoutMs, 'the readiness check').then(
          (checks) => {
            const ready = Object.values(checks).every((c) => c.ok);
            const failed = Object.keys(checks).filter((k) => !checks[k]?.ok);
            const body = { status: ready ? 'ready' : 'not ready', failed, checks };
            send(res, ready ? 200 : 503, JSON_TYPE, JSON.stringify(body) + '\n');
          },
          (e: unknown) => {
            const body = {
              status: 'not ready',
              failed: ['readiness'],
              checks: { readiness: { ok: false, detail: errText(e) } },
            };
            send(res, 503, JSON_TYPE, JSON.stringify(body) + '\n');
          },
        );
        return;
      default:
        send(res, 404, 'text/plain; charset=utf-8', 'not found (try /metrics, /healthz, /readyz)\n');
    }
  });
  // Bounded waits for slow or idle HTTP clients.
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5000;
  server.maxRequestsPerSocket = 1000;
  server.on('clientError', (_e, socket) => socket.destroy());

  // A new forking parent taking over (SIGUSR2) binds while the old one may still hold the port.
  const deadline = Date.now() + (opts.bindRetryMs ?? 0);
  for (;;) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  server.on('error', (e) => opts.log?.error({ err: errText(e) }, 'metrics listener error'));
  const addr = server.address() as AddressInfo;
  opts.log?.info({ address: `${addr.address}:${addr.port}` }, 'Serving /metrics, /healthz and /readyz');
  return {
    host: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// --- readiness building blocks ---

export type Probe = () => Promise<void>;

export interface ReadinessOptions {
  /** True while the SSH listener accepts. */
  listening: () => boolean;
  /** True once SIGTERM started the drain. */
  draining: () => boolean;
  /** Backend probes by name; each must settle within `probeTimeoutMs`. */
  backends?: Record<string, Probe>;
  /** Deadline per backend probe (default 1000 ms). */
  probeTimeoutMs?: number;
  /** Reuse backend results for this long so frequent probes do not hammer backends (default 2000 ms). */
  cacheMs?: number;
  now?: () => number;
}

/**
 * The gateway's readiness: `listening`, `not_draining` and one check per backend. Backend probes run
 * in parallel with a deadline each, at most once per `cacheMs`, and concurrent /readyz requests share
 * one round of probes.
 */
export function gatewayReadiness(o: ReadinessOptions): Readiness {
  const probeTimeoutMs = o.probeTimeoutMs ?? 1000;
  const cacheMs = o.cacheMs ?? 2000;
  const now = o.now ?? Date.now;
  let cached: { at: number; report: ReadinessReport } | undefined;
  let inflight: Promise<ReadinessReport> | undefined;

  const probeAll = async (): Promise<ReadinessReport> => {
    const entries = Object.entries(o.backends ?? {});
    const results = await Promise.all(
      entries.map(async ([name, probe]): Promise<[string, CheckResult]> => {
        try {
          await withDeadline(Promise.resolve().then(probe), probeTimeoutMs, name);
          return [name, { ok: true }];
        } catch (e) {
          return [name, { ok: false, detail: errText(e) }];
        }
      }),
    );
    return Object.fromEntries(results);
  };

  const backends = (): Promise<ReadinessReport> => {
    if (cached && now() - cached.at < cacheMs) return Promise.resolve(cached.report);
    inflight ??= probeAll().then((report) => {
      cached = { at: now(), report };
      inflight = undefined;
      return report;
    });
    return inflight;
  };

  return async () => {
    const listening = o.listening();
    const draining = o.draining();
    const report: ReadinessReport = {
      listening: listening ? { ok: true } : { ok: false, detail: 'the SSH listener is not accepting' },
      not_draining: draining ? { ok: false, detail: 'draining after a shutdown signal' } : { ok: true },
    };
    // While draining, readiness is false whatever the backends say; skip the probes.
    if (draining) return report;
    return { ...report, ...(await backends()) };
  };
}

/** A probe that succeeds once the gRPC client's channel is connected (or connects within the deadline). */
export function grpcProbe(client: Client, timeoutMs = 1000): Probe {
  return () =>
    new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
}
