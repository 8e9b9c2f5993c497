#!/usr/bin/env node
// `node dist/cli/healthcheck.js [URL]`: exits 0 when GET URL answers 2xx within the deadline, 1 otherwise
// (one line on stderr saying why). The container images' HEALTHCHECK: the distroless image has no shell,
// curl or wget, only node. URL defaults to $SSH_PROXY_HEALTH_URL, then http://127.0.0.1:9090/healthz
// (the chart's metrics.address); the gateway serves it when `metrics.address` is set.
import { request } from 'node:http';
import { pathToFileURL } from 'node:url';

export const DEFAULT_HEALTH_URL = 'http://127.0.0.1:9090/healthz';
const DEADLINE_MS = 3000;

export type ProbeResult = { ok: true; status: number } | { ok: false; reason: string };

/** One GET with a deadline; only http: (the metrics listener is plain HTTP on the pod network). */
export function probe(url: string, deadlineMs = DEADLINE_MS): Promise<ProbeResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return Promise.resolve({ ok: false, reason: `not a URL: ${url}` });
  }
  if (target.protocol !== 'http:') return Promise.resolve({ ok: false, reason: `not an http: URL: ${url}` });
  return new Promise((resolve) => {
    const req = request(target, { method: 'GET', timeout: deadlineMs }, (res) => {
      res.resume(); // the body is not needed; drain it so the socket closes
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 300 ? { ok: true, status } : { ok: false, reason: `HTTP ${status}` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${deadlineMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, reason: err.message }));
    req.end();
  });
}

async function main(argv: readonly string[]): Promise<number> {
  const url = argv[0] ?? process.env.SSH_PROXY_HEALTH_URL ?? DEFAULT_HEALTH_URL;
  const r = await probe(url);
  if (!r.ok) process.stderr.write(`healthcheck: ${url}: ${r.reason}\n`);
  return r.ok ? 0 : 1;
}

// Run only as a program, not when a test imports probe().
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`healthcheck: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
