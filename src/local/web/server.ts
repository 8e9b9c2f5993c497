// The local stack's small web server (loopback only): the onboarding approval page and the sessions
// page register routes here. Plain HTML, no external assets.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errText, type Logger } from '../../ops/log.js';

/** Handles a request and returns true, or returns false to let the next route try. */
export type WebRoute = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean;

export interface LocalWeb {
  /** http://host:port */
  readonly url: string;
  /** Routes are tried in registration order. */
  route(r: WebRoute): void;
  close(): Promise<void>;
}

export async function startLocalWeb(listen: { host: string; port: number }, log: Logger): Promise<LocalWeb> {
  const routes: WebRoute[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://local');
    void (async () => {
      for (const r of routes) if (await r(req, res, url)) return;
      sendHtml(res, 404, page('Not found', '<p>There is nothing here.</p>'));
    })().catch((e: unknown) => {
      log.error({ err: errText(e), path: url.pathname }, 'web request failed');
      if (!res.headersSent) sendHtml(res, 500, page('Error', '<p>Something went wrong; see the log.</p>'));
      else res.destroy();
    });
  });
  // Loopback pages: bounded headers and idle sockets.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const host = a.address.includes(':') ? `[${a.address}]` : a.address;
  return {
    url: `http://${host}:${a.port}`,
    route: (r) => void routes.push(r),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A complete, accessible HTML page; `body` must already be escaped. */
export function page(title: string, body: string, head = ''): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)} · ssh-proxy</title>` +
    `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}` +
    `label{display:block;margin-top:1rem}input,textarea{font:inherit;width:100%}` +
    `.error{color:#a00}.ok{color:#060}table{border-collapse:collapse}td,th{padding:.2rem .6rem;` +
    `border-bottom:1px solid #ccc;text-align:left}</style>${head}</head>` +
    `<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`
  );
}

export function sendHtml(res: ServerResponse, code: number, html: string): void {
  res.writeHead(code, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'",
    'x-content-type-options': 'nosniff',
  });
  res.end(html);
}

/** Reads a small request body (forms); rejects beyond `limit` bytes. */
export function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (d: Buffer) => {
      n += d.length;
      if (n > limit) {
        reject(new Error('request body too large'));
        req.destroy();
      } else parts.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}
