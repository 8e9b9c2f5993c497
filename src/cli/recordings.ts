// `ssh-proxy recordings list|play|export`: the local session store's recordings for operators without
// a browser. Reads `<data-dir>/sessions/sessions.jsonl` (never writes it) and the files under
// `<data-dir>/recordings`.
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createGunzip } from 'node:zlib';
import type { Readable, Writable } from 'node:stream';
import { errText } from '../ops/log.js';
import { inside, recordingsRoot } from '../local/sessions/paths.js';
import {
  readStoreFile,
  storeFile,
  type RecordingFile,
  type StoredRecording,
} from '../local/sessions/store.js';

export const RECORDINGS_USAGE = `Usage: ssh-proxy recordings <command> [options]

Commands:
  list                 recordings, newest last
      --user NAME        only this user's
      --kind KIND        shell, exec, sftp or tcpip
      --connection ID    only this connection's
      --since DATE       started at or after DATE (YYYY-MM-DD, ISO time or unix seconds)
      --json             one JSON object per line
  play ID              replay a shell or exec recording in this terminal, with its timing
      --speed N          N times faster (default 1)
      --idle-limit S     cap pauses at S seconds (default 2; 0 = keep them)
  export ID            write a recording's file (gzip is undone) to --out or stdout
      --file ROLE        cast, pcapng, sftp-log, input or output (default: the main file)
      --out PATH         output file ("-" = stdout, the default)

Common:
  --data-dir DIR       the local stack's data directory (default ./.ssh-proxy)

ID may be any unique part of a recording id (e.g. its last characters).
`;

export interface CliIo {
  stdout: Writable;
  stderr: Writable;
}

const KINDS = new Set(['shell', 'exec', 'sftp', 'tcpip']);

export async function runRecordingsCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    io.stderr.write(RECORDINGS_USAGE);
    return command ? 0 : 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        'data-dir': { type: 'string', default: './.ssh-proxy' },
        user: { type: 'string' },
        kind: { type: 'string' },
        connection: { type: 'string' },
        since: { type: 'string' },
        json: { type: 'boolean', default: false },
        speed: { type: 'string', default: '1' },
        'idle-limit': { type: 'string', default: '2' },
        file: { type: 'string' },
        out: { type: 'string', default: '-' },
      },
    });
  } catch (e) {
    io.stderr.write(`${errText(e)}\n${RECORDINGS_USAGE}`);
    return 2;
  }
  const v = parsed.values;
  const dataDir = v['data-dir'] ?? './.ssh-proxy';
  const file = storeFile(dataDir);
  if (!existsSync(file)) {
    io.stderr.write(`no session store at ${file} (is --data-dir the local stack's data directory?)\n`);
    return 1;
  }
  const { recordings } = readStoreFile(file);
  const root = recordingsRoot(dataDir);
  try {
    switch (command) {
      case 'list':
        return list([...recordings.values()], v, io);
      case 'play':
      case 'export': {
        const id = parsed.positionals[0];
        if (!id || parsed.positionals.length > 1) {
          io.stderr.write(`${command} needs exactly one recording id\n${RECORDINGS_USAGE}`);
          return 2;
        }
        const r = pick([...recordings.values()], id, io);
        if (!r) return 1;
        return command === 'play'
          ? await play(root, r, Number(v.speed), Number(v['idle-limit']), io)
          : await exportFile(root, r, v.file, v.out ?? '-', io);
      }
      default:
        io.stderr.write(`unknown command "${command}"\n${RECORDINGS_USAGE}`);
        return 2;
    }
  } catch (e) {
    io.stderr.write(`ssh-proxy recordings: ${errText(e)}\n`);
    return 1;
  }
}

function sinceSeconds(s: string): number | undefined {
  if (/^\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.floor(t / 1000);
}

function list(
  all: StoredRecording[],
  v: { user?: string; kind?: string; connection?: string; since?: string; json?: boolean },
  io: CliIo,
): number {
  if (v.kind && !KINDS.has(v.kind)) {
    io.stderr.write(`--kind must be shell, exec, sftp or tcpip, got "${v.kind}"\n`);
    return 2;
  }
  const since = v.since === undefined ? undefined : sinceSeconds(v.since);
  if (v.since !== undefined && since === undefined) {
    io.stderr.write(`--since: cannot read "${v.since}" as a date\n`);
    return 2;
  }
  const rows = all
    .filter((r) => !v.user || r.username === v.user)
    .filter((r) => !v.kind || r.kind === v.kind)
    .filter((r) => !v.connection || r.connectionId === v.connection)
    .filter((r) => since === undefined || r.startedAt >= since)
    .sort((a, b) => a.startedAt - b.startedAt);
  if (v.json) {
    for (const r of rows) io.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  const table = [['ID', 'KIND', 'USER', 'STARTED', 'SECONDS', 'OUT', 'IN', 'STATUS', 'DETAIL']];
  for (const r of rows) {
    table.push([
      r.id,
      r.kind,
      r.username,
      new Date(r.startedAt * 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
      r.endedAt ? String(r.endedAt - r.startedAt) : '-',
      String(r.bytes.output),
      String(r.bytes.input),
      r.status,
      r.command ?? (r.tcpip ? `${r.tcpip.dstHost}:${r.tcpip.dstPort}` : ''),
    ]);
  }
  const widths = table[0]?.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length))) ?? [];
  for (const row of table) {
    io.stdout.write(
      `${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')}\n`,
    );
  }
  return 0;
}

function pick(all: StoredRecording[], id: string, io: CliIo): StoredRecording | undefined {
  const exact = all.find((r) => r.id === id);
  if (exact) return exact;
  const matches = all.filter((r) => r.id.includes(id));
  if (matches.length === 1) return matches[0];
  io.stderr.write(
    matches.length === 0
      ? `no recording matches "${id}"\n`
      : `"${id}" matches ${matches.length} recordings; give more of the id:\n${matches.map((r) => `  ${r.id}\n`).join('')}`,
  );
  return undefined;
}

function open(root: string, f: RecordingFile): Readable {
  const p = inside(root, f.path);
  if (!p || !existsSync(p)) throw new Error(`the file ${f.path} is missing under ${root}`);
  const s = createReadStream(p);
  return f.gzip ? s.pipe(createGunzip()) : s;
}

/** Replays the cast's output with its timing (bounded memory: one line at a time). */
async function play(
  root: string,
  r: StoredRecording,
  speed: number,
  idleLimit: number,
  io: CliIo,
): Promise<number> {
  const f = r.files.find((x) => x.role === 'cast');
  if (!f) {
    io.stderr.write(`${r.id} is a ${r.kind} recording; only shell and exec recordings play (use export)\n`);
    return 1;
  }
  if (!(speed > 0) || !(idleLimit >= 0)) {
    io.stderr.write('--speed must be > 0 and --idle-limit >= 0\n');
    return 2;
  }
  const lines = createInterface({ input: open(root, f), crlfDelay: Infinity });
  let first = true;
  let last = 0;
  for await (const line of lines) {
    if (first) {
      first = false; // the header
      continue;
    }
    if (!line.trim()) continue;
    const ev = JSON.parse(line) as [number, string, string];
    let wait = Math.max(0, ev[0] - last);
    if (idleLimit > 0) wait = Math.min(wait, idleLimit);
    last = ev[0];
    if (wait > 0) await sleep((wait * 1000) / speed);
    if (ev[1] === 'o' && !io.stdout.write(ev[2])) {
      await new Promise((resolve) => io.stdout.once('drain', resolve));
    }
  }
  return 0;
}

const MAIN_ROLE: Record<StoredRecording['kind'], RecordingFile['role']> = {
  shell: 'cast',
  exec: 'cast',
  tcpip: 'pcapng',
  sftp: 'sftp-log',
};

async function exportFile(
  root: string,
  r: StoredRecording,
  role: string | undefined,
  out: string,
  io: CliIo,
): Promise<number> {
  const want = role ?? MAIN_ROLE[r.kind];
  const f = r.files.find((x) => x.role === want);
  if (!f) {
    io.stderr.write(
      `${r.id} has no ${want} file (it has: ${r.files.map((x) => x.role).join(', ') || 'none'})\n`,
    );
    return 1;
  }
  const dest = out === '-' ? io.stdout : createWriteStream(out, { flags: 'wx', mode: 0o600 });
  await pipeline(open(root, f), dest, { end: out !== '-' });
  return 0;
}
