// Runs fuzz properties with a seed the runner chooses (so every failure can be replayed exactly),
// and keeps failures as regression cases in regressions.json (replayed by the short run in npm test).
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import type { FuzzProperty } from './properties.js';

export const REGRESSIONS_FILE = new URL('./regressions.json', import.meta.url);

export interface Regression {
  property: string;
  seed: number;
  path: string;
  /** First line of the failure when it was found. */
  error: string;
  found: string;
}

export interface RunResult {
  property: string;
  runs: number;
  seed: number;
  ms: number;
  failure?: Regression;
}

export function loadRegressions(): Regression[] {
  try {
    return JSON.parse(readFileSync(REGRESSIONS_FILE, 'utf8')) as Regression[];
  } catch {
    return [];
  }
}

export function saveRegression(r: Regression): void {
  const all = loadRegressions();
  if (!all.some((x) => x.property === r.property && x.seed === r.seed && x.path === r.path)) all.push(r);
  writeFileSync(REGRESSIONS_FILE, `${JSON.stringify(all, null, 2)}\n`);
}

/** Runs one property `runs` times from `seed`; a failure is returned with its seed and shrunk path. */
export async function runProperty(p: FuzzProperty, runs: number, seed: number): Promise<RunResult> {
  const start = Date.now();
  fc.configureGlobal({ seed, numRuns: runs });
  try {
    await p.run(runs);
    return { property: p.name, runs, seed, ms: Date.now() - start };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const s = /seed: (-?\d+)/.exec(msg)?.[1];
    const path = /path: "([^"]*)"/.exec(msg)?.[1] ?? '';
    return {
      property: p.name,
      runs,
      seed,
      ms: Date.now() - start,
      failure: {
        property: p.name,
        seed: s ? Number(s) : seed,
        path,
        error: msg
          .split('\n')
          .filter((l) => l.trim())
          .slice(0, 8)
          .join(' ')
          .slice(0, 800),
        found: new Date().toISOString(),
      },
    };
  } finally {
    fc.resetConfigureGlobal();
  }
}

/** Replays one recorded failure exactly (its seed and shrink path); throws if it still fails. */
export async function replay(p: FuzzProperty, r: Regression): Promise<void> {
  // `path` is not a documented global parameter, but fast-check merges global parameters into each
  // run's, so it applies (the replay test proves it).
  fc.configureGlobal({ seed: r.seed, path: r.path || undefined, endOnFailure: true } as fc.GlobalParameters);
  try {
    await p.run(1);
  } finally {
    fc.resetConfigureGlobal();
  }
}
