// The local session store: sessions (live and ended) and recordings, kept in memory and in an
// append-only JSON-lines file `<data-dir>/sessions/sessions.jsonl` that survives a restart. Each line is
// the complete current state of one entity (last line wins), so recovery is a replay and a torn last
// line after a crash costs only that update. The file is compacted (rewritten with one line per
// entity, then renamed over the old one) when it grows past a bound, and the oldest ended sessions
// are forgotten beyond a count, so neither memory nor the file grows without bound.
//
// Why JSON lines and not SQLite: the store is small (thousands of entities), written by one process,
// and read whole at start; JSON lines need no native module (better-sqlite3 must compile on every
// install), can be read and repaired with a text editor or `jq`, and the CLI reads the same file.
import { appendFile, rename, writeFile } from 'node:fs/promises';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../ops/log.js';
import { errText } from '../../ops/log.js';

export type RecordingKind = 'shell' | 'exec' | 'sftp' | 'tcpip';

export interface StoredSession {
  id: string;
  username: string;
  client: string;
  clientIp: string;
  workspace: string;
  blueprint: string;
  k8shelldVer: string;
  /** Unix seconds; endTime 0 while live. */
  startTime: number;
  updatedAt: number;
  endTime: number;
  bytesIn: number;
  bytesOut: number;
  operations: string[];
}

/** A file of a recording, relative to `<data-dir>/recordings`. */
export interface RecordingFile {
  role: 'cast' | 'pcapng' | 'sftp-log' | 'input' | 'output';
  path: string;
  gzip: boolean;
}

export interface StoredRecording {
  /** The channel id (the header's session_id). */
  id: string;
  connectionId: string;
  kind: RecordingKind;
  username: string;
  /** Unix seconds (header started_at); endedAt 0 while streaming. */
  startedAt: number;
  endedAt: number;
  /** recording → complete | incomplete (the stream broke, or the service stopped meanwhile). */
  status: 'recording' | 'complete' | 'incomplete';
  format: string;
  files: RecordingFile[];
  bytes: { input: number; output: number };
  dropped: { input: number; output: number };
  command?: string;
  width?: number;
  height?: number;
  tcpip?: { srcHost: string; srcPort: number; dstHost: string; dstPort: number };
  /** Kind-specific figures (sftp operation counts, pcapng packets, cast events). */
  summary?: Record<string, unknown>;
  note?: string;
}

type Line = ({ type: 'session' } & StoredSession) | ({ type: 'recording' } & StoredRecording);

export interface SessionStoreOptions {
  dataDir: string;
  log: Logger;
  /** Compact when the file exceeds this many bytes (and twice its compacted size); default 8 MiB. */
  compactBytes?: number;
  /** Ended sessions kept (the oldest are forgotten, with their recordings' entries); default 2000. */
  maxEndedSessions?: number;
  /** Recording entries kept; default 20000. */
  maxRecordings?: number;
}

export function storeFile(dataDir: string): string {
  return join(dataDir, 'sessions', 'sessions.jsonl');
}

/** Reads a store file (also used read-only by the CLI); bad lines are skipped. */
export function readStoreFile(file: string): {
  sessions: Map<string, StoredSession>;
  recordings: Map<string, StoredRecording>;
  badLines: number;
} {
  const sessions = new Map<string, StoredSession>();
  const recordings = new Map<string, StoredRecording>();
  let badLines = 0;
  if (!existsSync(file)) return { sessions, recordings, badLines };
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    if (!raw.trim()) continue;
    let line: Line;
    try {
      line = JSON.parse(raw) as Line;
    } catch {
      badLines++;
      continue;
    }
    if (line.type === 'session' && typeof line.id === 'string') {
      const { type: _t, ...s } = line;
      sessions.delete(s.id); // keep insertion order = order of last update
      sessions.set(s.id, s);
    } else if (line.type === 'recording' && typeof line.id === 'string') {
      const { type: _t, ...r } = line;
      recordings.delete(r.id);
      recordings.set(r.id, r);
    } else badLines++;
  }
  return { sessions, recordings, badLines };
}

export class SessionStore {
  readonly sessions: Map<string, StoredSession>;
  readonly recordings: Map<string, StoredRecording>;
  readonly file: string;
  private chain: Promise<void> = Promise.resolve();
  private fileBytes = 0;
  private compactedBytes = 0;
  private readonly compactBytes: number;
  private readonly maxEnded: number;
  private readonly maxRecordings: number;
  private readonly log: Logger;

  constructor(o: SessionStoreOptions) {
    this.log = o.log;
    this.file = storeFile(o.dataDir);
    mkdirSync(join(o.dataDir, 'sessions'), { recursive: true, mode: 0o700 });
    this.compactBytes = o.compactBytes ?? 8 * 1024 * 1024;
    this.maxEnded = o.maxEndedSessions ?? 2000;
    this.maxRecordings = o.maxRecordings ?? 20_000;
    const loaded = readStoreFile(this.file);
    this.sessions = loaded.sessions;
    this.recordings = loaded.recordings;
    if (loaded.badLines > 0)
      this.log.warn({ file: this.file, badLines: loaded.badLines }, 'skipped unreadable lines');
    // Streams that were running when the service stopped cannot continue.
    for (const r of this.recordings.values()) {
      if (r.status === 'recording') {
        r.status = 'incomplete';
        r.note = 'the session service stopped while recording';
      }
    }
    this.fileBytes = existsSync(this.file) ? statSync(this.file).size : 0;
    this.enforceBounds();
    // Start from a compact file: it also persists the repairs above.
    this.compact();
  }

  /** Inserts or replaces a session and persists it. */
  putSession(s: StoredSession): void {
    this.sessions.delete(s.id);
    this.sessions.set(s.id, s);
    this.append({ type: 'session', ...s });
    if (s.endTime > 0) this.enforceBounds();
  }

  putRecording(r: StoredRecording): void {
    this.recordings.delete(r.id);
    this.recordings.set(r.id, r);
    this.append({ type: 'recording', ...r });
    if (this.recordings.size > this.maxRecordings) this.enforceBounds();
  }

  recordingsOf(connectionId: string): StoredRecording[] {
    return [...this.recordings.values()].filter((r) => r.connectionId === connectionId);
  }

  /** Resolves when everything written so far is in the file. */
  flush(): Promise<void> {
    return this.chain;
  }

  private append(line: Line): void {
    const text = `${JSON.stringify(line)}\n`;
    this.fileBytes += Buffer.byteLength(text);
    this.enqueue(() => appendFile(this.file, text, { mode: 0o600 }));
    if (this.fileBytes > this.compactBytes && this.fileBytes > 2 * this.compactedBytes) this.compact();
  }

  private enqueue(f: () => Promise<void>): void {
    this.chain = this.chain.then(f).catch((e: unknown) => {
      this.log.error({ file: this.file, err: errText(e) }, 'session store write failed');
    });
  }

  /** Rewrites the file with the current state (temp file + rename: never a half-written store). */
  private compact(): void {
    const lines: string[] = [];
    for (const s of this.sessions.values()) lines.push(JSON.stringify({ type: 'session', ...s }));
    for (const r of this.recordings.values()) lines.push(JSON.stringify({ type: 'recording', ...r }));
    const text = lines.length ? `${lines.join('\n')}\n` : '';
    this.fileBytes = Buffer.byteLength(text);
    this.compactedBytes = this.fileBytes;
    const tmp = `${this.file}.tmp`;
    this.enqueue(async () => {
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, this.file);
    });
  }

  /** Forgets the oldest ended sessions and recordings beyond the limits (files on disk stay). */
  private enforceBounds(): void {
    const ended = [...this.sessions.values()]
      .filter((s) => s.endTime > 0)
      .sort((a, b) => a.endTime - b.endTime);
    let changed = false;
    for (const s of ended.slice(0, Math.max(0, ended.length - this.maxEnded))) {
      this.sessions.delete(s.id);
      for (const r of this.recordingsOf(s.id)) this.recordings.delete(r.id);
      changed = true;
    }
    while (this.recordings.size > this.maxRecordings) {
      const oldest = this.recordings.keys().next().value;
      if (oldest === undefined) break;
      this.recordings.delete(oldest);
      changed = true;
    }
    if (changed) this.compact();
  }
}
