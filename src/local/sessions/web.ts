// The sessions page of the local stack (a route on the local web server): live sessions refreshing
// every 2 s, ended sessions, and every recording — casts replayed with asciinema-player (served from
// node_modules, no CDN), pcapng and SFTP logs as downloads with a summary. Read-only: ending a session
// needs the gateway's control path, which this page does not have (docs/recording.md).
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGunzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { escapeHtml, page, type WebRoute } from '../web/server.js';
import { inside } from './paths.js';
import type { SessionStore, StoredRecording, StoredSession, RecordingFile } from './store.js';

export interface SessionsPageOptions {
  store: SessionStore;
  recordingsDir: string;
  /** A session not heard of for this long is shown as "lost" (missed heartbeats); default 60 s. */
  staleAfterMs?: number;
  /** Ended sessions listed (latest first); default 200. */
  maxEnded?: number;
}

const PREFIX = '/sessions';
const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";

const OPS: Record<string, string> = {
  sh: 'shell',
  pt: 'pty',
  ex: 'exec',
  sf: 'sftp',
  af: 'agent forwarding',
  pf: 'port forward',
  ux: 'unix socket',
};

/** Rows of the SFTP log shown on a recording's page (the file itself is a download). */
const SFTP_ROWS = 500;

const requireFromHere = createRequire(import.meta.url);
const ASSETS: Record<string, { file: () => string; type: string }> = {
  'asciinema-player.min.js': {
    file: () => requireFromHere.resolve('asciinema-player/dist/bundle/asciinema-player.min.js'),
    type: 'text/javascript; charset=utf-8',
  },
  'asciinema-player.css': {
    file: () => requireFromHere.resolve('asciinema-player/dist/bundle/asciinema-player.css'),
    type: 'text/css; charset=utf-8',
  },
};

// Scripts are files (the CSP allows no inline script).
const REFRESH_JS = `(() => {
  const box = document.getElementById('tables');
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch('${PREFIX}/fragment', { cache: 'no-store' });
      if (r.ok) box.innerHTML = await r.text();
    } catch (e) {
      // The stack may be restarting; try again at the next tick.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 2000);
})();
`;

const PLAYER_JS = `(() => {
  const el = document.getElementById('player');
  window.sessionPlayer = AsciinemaPlayer.create(el.dataset.src, el, {
    autoPlay: true,
    idleTimeLimit: 2,
    fit: 'width',
    terminalFontSize: '14px',
  });
})();
`;

const STYLE =
  '<style>main{max-width:90rem}td.num{text-align:right;font-variant-numeric:tabular-nums}' +
  '.muted{color:#666}code{font-size:.9em}.pill{display:inline-block;padding:0 .4rem;border:1px solid #999;' +
  'border-radius:.6rem;font-size:.85em;margin:0 .2rem .2rem 0}</style>';

export function sessionsRoute(o: SessionsPageOptions): WebRoute {
  const staleAfter = o.staleAfterMs ?? 60_000;
  const maxEnded = o.maxEnded ?? 200;

  return async (req, res, url) => {
    const path = url.pathname;
    if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed');
      return true;
    }
    if (path === PREFIX || path === `${PREFIX}/`) {
      const body =
        `<p class="muted">Refreshes every 2 seconds. Recordings live under <code>${escapeHtml(o.recordingsDir)}</code>;` +
        ` replay them here or with <code>ssh-proxy recordings play</code>.</p>` +
        `<div id="tables">${tables(o.store, staleAfter, maxEnded)}</div>` +
        `<script src="${PREFIX}/assets/refresh.js"></script>`;
      send(res, 200, 'text/html; charset=utf-8', page('Sessions', body, STYLE));
      return true;
    }
    if (path === `${PREFIX}/fragment`) {
      send(res, 200, 'text/html; charset=utf-8', tables(o.store, staleAfter, maxEnded));
      return true;
    }
    const asset = /^\/sessions\/assets\/([\w.-]+)$/.exec(path)?.[1];
    if (asset !== undefined) {
      if (asset === 'refresh.js') send(res, 200, 'text/javascript; charset=utf-8', REFRESH_JS);
      else if (asset === 'player.js') send(res, 200, 'text/javascript; charset=utf-8', PLAYER_JS);
      else if (ASSETS[asset])
        await sendFile(req, res, ASSETS[asset].file(), ASSETS[asset].type, 'public, max-age=3600');
      else notFound(res);
      return true;
    }
    const m = /^\/sessions\/recording\/([^/]+)(?:\/(cast|file\/([\w-]+)))?$/.exec(path);
    if (m) {
      const r = o.store.recordings.get(decodeURIComponent(m[1] ?? ''));
      if (!r) {
        notFound(res);
        return true;
      }
      if (m[2] === 'cast') await sendCast(req, res, o.recordingsDir, r);
      else if (m[3] !== undefined) await sendDownload(req, res, o.recordingsDir, r, m[3]);
      else send(res, 200, 'text/html; charset=utf-8', recordingPage(o, r));
      return true;
    }
    notFound(res);
    return true;
  };
}

// --- rendering ---

function time(sec: number): string {
  return sec > 0
    ? new Date(sec * 1000)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
    : '—';
}

function duration(sec: number): string {
  if (sec < 0) return '—';
  const h = Math.floor(sec / 3600);
  const m = Math.floor((sec % 3600) / 60);
  const s = Math.floor(sec % 60);
  return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 100 ? 1 : 0)} ${units[u]}`;
}

function ops(list: string[]): string {
  return list
    .map((c) => `<span class="pill" title="${escapeHtml(c)}">${escapeHtml(OPS[c] ?? c)}</span>`)
    .join('');
}

function recordingLinks(rs: StoredRecording[]): string {
  if (rs.length === 0) return '<span class="muted">none</span>';
  return rs
    .map(
      (r) =>
        `<a href="${PREFIX}/recording/${encodeURIComponent(r.id)}">${escapeHtml(r.kind)}` +
        `${r.command ? `: <code>${escapeHtml(r.command.slice(0, 40))}</code>` : ''}` +
        `${r.tcpip ? ` → ${escapeHtml(`${r.tcpip.dstHost}:${r.tcpip.dstPort}`)}` : ''}</a>` +
        `${r.status === 'recording' ? ' <span class="muted">(recording)</span>' : ''}`,
    )
    .join('<br>');
}

function byConnection(store: SessionStore): Map<string, StoredRecording[]> {
  const m = new Map<string, StoredRecording[]>();
  for (const r of store.recordings.values()) {
    const l = m.get(r.connectionId) ?? [];
    l.push(r);
    m.set(r.connectionId, l);
  }
  return m;
}

/** The live and ended tables (also the refresh fragment). */
export function tables(store: SessionStore, staleAfterMs: number, maxEnded: number): string {
  const now = Date.now();
  const recs = byConnection(store);
  const all = [...store.sessions.values()];
  const isLive = (s: StoredSession) => s.endTime === 0 && now - s.updatedAt * 1000 < staleAfterMs;
  const live = all.filter(isLive).sort((a, b) => b.startTime - a.startTime);
  const ended = all
    .filter((s) => !isLive(s))
    .sort((a, b) => (b.endTime || b.updatedAt) - (a.endTime || a.updatedAt))
    .slice(0, maxEnded);
  const row = (s: StoredSession, withEnd: boolean) =>
    `<tr data-session="${escapeHtml(s.id)}"><td>${escapeHtml(s.username)}</td><td>${escapeHtml(s.workspace)}</td>` +
    `<td>${escapeHtml(s.client)}</td><td>${escapeHtml(s.clientIp)}</td><td>${time(s.startTime)}</td>` +
    (withEnd
      ? `<td>${s.endTime ? time(s.endTime) : `lost (last seen ${time(s.updatedAt)})`}</td>` +
        `<td>${duration((s.endTime || s.updatedAt) - s.startTime)}</td>`
      : `<td>${duration(Math.floor(now / 1000) - s.startTime)}</td>`) +
    `<td class="num" title="${s.bytesIn} bytes">${bytes(s.bytesIn)}</td>` +
    `<td class="num" title="${s.bytesOut} bytes">${bytes(s.bytesOut)}</td>` +
    `<td>${ops(s.operations)}</td><td>${recordingLinks(recs.get(s.id) ?? [])}</td></tr>`;
  const head = (cols: string[]) =>
    `<thead><tr>${cols.map((c) => `<th scope="col">${c}</th>`).join('')}</tr></thead>`;
  const common = ['User', 'Workspace', 'Client', 'From', 'Started'];
  const tail = ['In', 'Out', 'Operations', 'Recordings'];
  const untracked = [...recs.entries()].filter(([conn]) => !store.sessions.has(conn));
  return (
    `<h2>Live sessions (${live.length})</h2>` +
    (live.length
      ? `<table id="live">${head([...common, 'Duration', ...tail])}<tbody>${live.map((s) => row(s, false)).join('')}</tbody></table>`
      : '<p id="live" class="muted">No live sessions.</p>') +
    `<h2>Ended sessions</h2>` +
    (ended.length
      ? `<table id="ended">${head([...common, 'Ended', 'Duration', ...tail])}<tbody>${ended.map((s) => row(s, true)).join('')}</tbody></table>`
      : '<p id="ended" class="muted">No ended sessions.</p>') +
    (untracked.length
      ? `<h2>Other recordings</h2><p class="muted">Connections the session service has no session for ` +
        `(session tracking off, or the session was forgotten).</p><table id="other">${head(['Connection', 'Recordings'])}<tbody>` +
        untracked
          .map(
            ([conn, rs]) =>
              `<tr><td><code>${escapeHtml(conn)}</code></td><td>${recordingLinks(rs)}</td></tr>`,
          )
          .join('') +
        '</tbody></table>'
      : '')
  );
}

function fileLinks(r: StoredRecording): string {
  return r.files
    .map(
      (f) =>
        `<li><a href="${PREFIX}/recording/${encodeURIComponent(r.id)}/file/${f.role}" download>${escapeHtml(basename(f.path))}</a>` +
        ` <span class="muted">(${escapeHtml(f.role)}${f.gzip ? ', gzip' : ''})</span></li>`,
    )
    .join('');
}

function recordingPage(o: SessionsPageOptions, r: StoredRecording): string {
  const facts: Array<[string, string]> = [
    ['Kind', r.kind],
    ['User', r.username],
    ['Connection', r.connectionId],
    ['Started', time(r.startedAt)],
    ['Ended', r.endedAt ? time(r.endedAt) : 'still recording'],
    ['Status', r.status],
    ['Bytes', `${bytes(r.bytes.output)} from the workspace, ${bytes(r.bytes.input)} from the client`],
  ];
  if (r.dropped.input + r.dropped.output > 0) {
    facts.push(['Not recorded (queue full)', `${bytes(r.dropped.output)} out, ${bytes(r.dropped.input)} in`]);
  }
  if (r.command) facts.push(['Command', r.command]);
  if (r.tcpip) {
    facts.push(['Forward', `${r.tcpip.srcHost}:${r.tcpip.srcPort} → ${r.tcpip.dstHost}:${r.tcpip.dstPort}`]);
  }
  if (r.note) facts.push(['Note', r.note]);
  let body = `<p><a href="${PREFIX}">← all sessions</a></p><table>${facts
    .map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`)
    .join('')}</table>`;
  let head = STYLE;
  if (r.files.some((f) => f.role === 'cast')) {
    head += `<link rel="stylesheet" href="${PREFIX}/assets/asciinema-player.css">`;
    body +=
      `<h2>Replay</h2><div id="player" data-src="${PREFIX}/recording/${encodeURIComponent(r.id)}/cast"></div>` +
      `<script src="${PREFIX}/assets/asciinema-player.min.js"></script><script src="${PREFIX}/assets/player.js"></script>`;
  }
  if (r.summary) body += `<h2>Summary</h2>${summary(r)}`;
  const log = r.files.find((f) => f.role === 'sftp-log');
  if (log) body += sftpTable(o.recordingsDir, log);
  body += `<h2>Files</h2><ul>${fileLinks(r)}</ul>`;
  if (r.kind === 'tcpip') {
    body += `<p class="muted">Open the pcapng with Wireshark or <code>tshark -r FILE -qz conv,tcp</code>; the file holds every forward of this connection to the same destination.</p>`;
  }
  return page(`Recording ${r.id}`, body, head);
}

function summary(r: StoredRecording): string {
  const s = r.summary ?? {};
  const rows: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(s)) {
    if (k === 'operations' && typeof v === 'object' && v !== null) {
      rows.push([
        'SFTP operations',
        Object.entries(v as Record<string, number>)
          .map(([op, n]) => `${op} × ${n}`)
          .join(', '),
      ]);
    } else if (/bytes|payload/i.test(k) && typeof v === 'number') rows.push([k, `${bytes(v)} (${v})`]);
    else rows.push([k, String(v)]);
  }
  return `<table>${rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

function sftpTable(root: string, f: RecordingFile): string {
  const p = inside(root, f.path);
  if (!p || !existsSync(p)) return '';
  // Bounded read: the first rows of the log (the whole file is a download).
  const text = readHead(p, 256 * 1024);
  const rows = text
    .split('\n')
    .filter((l) => l.trim())
    .slice(0, SFTP_ROWS)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return undefined;
      }
    })
    .filter((x): x is Record<string, unknown> => x !== undefined);
  const cell = (v: unknown) => `<td>${v === undefined ? '' : escapeHtml(String(v))}</td>`;
  return (
    `<h2>SFTP operations</h2><table id="sftp-ops"><thead><tr><th>t (s)</th><th>Operation</th><th>Path</th><th>Target</th>` +
    `<th>Bytes</th><th>Status</th></tr></thead><tbody>` +
    rows
      .map(
        (r) =>
          `<tr>${cell(r.t)}${cell(r.op)}${cell(r.path)}${cell(r.target)}${cell(r.bytes ?? r.entries)}${cell(r.status)}</tr>`,
      )
      .join('') +
    `</tbody></table>`
  );
}

function readHead(path: string, max: number): string {
  const size = statSync(path).size;
  const buf = readFileSync(path).subarray(0, Math.min(size, max));
  const s = buf.toString('utf8');
  // Cut at the last complete line.
  return size > max ? s.slice(0, s.lastIndexOf('\n') + 1) : s;
}

// --- responses ---

function send(res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

function notFound(res: ServerResponse): void {
  send(
    res,
    404,
    'text/html; charset=utf-8',
    page('Not found', '<p>There is no such session or recording.</p>'),
  );
}

async function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  type: string,
  cache = 'no-store',
  extra: Record<string, string> = {},
): Promise<void> {
  res.writeHead(200, {
    'content-type': type,
    'content-length': String(statSync(path).size),
    'cache-control': cache,
    'x-content-type-options': 'nosniff',
    ...extra,
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  await pipeline(createReadStream(path), res);
}

async function sendCast(
  req: IncomingMessage,
  res: ServerResponse,
  root: string,
  r: StoredRecording,
): Promise<void> {
  const f = r.files.find((x) => x.role === 'cast');
  const p = f && inside(root, f.path);
  if (!f || !p || !existsSync(p)) return notFound(res);
  if (!f.gzip) return sendFile(req, res, p, 'application/x-asciicast');
  res.writeHead(200, {
    'content-type': 'application/x-asciicast',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  if (req.method === 'HEAD') return void res.end();
  await pipeline(createReadStream(p), createGunzip(), res);
}

const DOWNLOAD_TYPE: Record<string, string> = {
  cast: 'application/x-asciicast',
  pcapng: 'application/vnd.tcpdump.pcap',
  'sftp-log': 'application/jsonl',
  input: 'application/octet-stream',
  output: 'application/octet-stream',
};

async function sendDownload(
  req: IncomingMessage,
  res: ServerResponse,
  root: string,
  r: StoredRecording,
  role: string,
): Promise<void> {
  const f = r.files.find((x) => x.role === role);
  const p = f && inside(root, f.path);
  if (!f || !p || !existsSync(p)) return notFound(res);
  const name = basename(p).replace(/[^\w.-]/g, '_');
  await sendFile(
    req,
    res,
    p,
    f.gzip ? 'application/gzip' : (DOWNLOAD_TYPE[role] ?? 'application/octet-stream'),
    'no-store',
    {
      'content-disposition': `attachment; filename="${name}"`,
    },
  );
}
