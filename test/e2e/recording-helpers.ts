// Helpers of the recording end-to-end tests: the local session store seen from a test (recordings of a
// kind, their files, cast events), pcapng payload counts through tshark, and the gateway's metrics.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StoredRecording, RecordingFile } from '../../src/local/sessions/store.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { waitFor } from '../helpers/wait.js';
import { run, type E2E } from './harness.js';

export type CastEvent = [number, string, string];

/** Recordings of `kind` in the store that are not in `known` (ids seen before the test's action). */
export function newRecordings(e: E2E, kind: StoredRecording['kind'], known: Set<string>): StoredRecording[] {
  return [...e.stack.sessions.store.recordings.values()].filter((r) => r.kind === kind && !known.has(r.id));
}

export function recordingIds(e: E2E): Set<string> {
  return new Set(e.stack.sessions.store.recordings.keys());
}

/** The one new recording of `kind` once its stream is finished (status complete or incomplete). */
export async function finishedRecording(
  e: E2E,
  kind: StoredRecording['kind'],
  known: Set<string>,
  match: (r: StoredRecording) => boolean = () => true,
): Promise<StoredRecording> {
  return waitFor(
    () => {
      const r = newRecordings(e, kind, known).filter(match);
      if (r.length > 1) throw new Error(`${r.length} new ${kind} recordings, expected one`);
      return r[0] && r[0].status !== 'recording' ? r[0] : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 50, what: `a finished ${kind} recording` },
  );
}

export function fileOf(e: E2E, r: StoredRecording, role: RecordingFile['role']): string {
  const f = r.files.find((x) => x.role === role);
  if (!f) throw new Error(`recording ${r.id} has no ${role} file: ${JSON.stringify(r.files)}`);
  return join(e.stack.sessions.recordingsDir, f.path);
}

export interface Cast {
  header: { version: number; width: number; height: number; command?: string };
  events: CastEvent[];
}

export function readCast(path: string): Cast {
  const [first, ...rest] = readFileSync(path, 'utf8').split('\n').filter(Boolean);
  return {
    header: JSON.parse(first ?? '{}') as Cast['header'],
    events: rest.map((l) => JSON.parse(l) as CastEvent),
  };
}

/** The concatenated text of the cast's output events. */
export function castOutput(c: Cast): string {
  return c.events
    .filter((ev) => ev[1] === 'o')
    .map((ev) => ev[2])
    .join('');
}

/** TCP payload bytes per direction in a pcapng, read by tshark: `up` = toward `serverPort`. */
export async function pcapPayload(path: string, serverPort: number): Promise<{ up: number; down: number }> {
  const r = await run('tshark', ['-r', path, '-T', 'fields', '-e', 'tcp.dstport', '-e', 'tcp.len'], {
    timeoutMs: 60_000,
  });
  if (r.code !== 0) throw new Error(`tshark -r ${path} exited ${r.code}: ${r.stderr}`);
  let up = 0;
  let down = 0;
  for (const line of r.stdout.toString().split('\n')) {
    const [port, len] = line.split('\t');
    if (!port || !len) continue;
    if (Number(port) === serverPort) up += Number(len);
    else down += Number(len);
  }
  return { up, down };
}

/** One series of the gateway's metrics (undefined when absent). */
export async function metric(e: E2E, name: string, labels: Record<string, string> = {}): Promise<number> {
  const families = parsePrometheusText(await e.stack.metrics.text());
  return sampleValue(families, name, labels) ?? 0;
}
