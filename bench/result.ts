// The shape of one scenario's outcome, as printed and written to the JSON result file.
import type { Side } from './target.js';
import { round } from './stats.js';

/** `value` is the headline figure the ratio is taken of; other keys are supporting figures. */
export type SideResult = { value: number } & Record<string, number>;

export interface ScenarioResult {
  name: string;
  unit: string;
  /** Which direction is better for `value` (throughput: higher; times, CPU, memory: lower). */
  better: 'higher' | 'lower';
  gateway: SideResult | null;
  sshd: SideResult | null;
  /** gateway.value / sshd.value, null when a side failed. */
  ratio: number | null;
  samples: { gateway: number[]; sshd: number[] };
  /** What failed, per side, when a side has no result. */
  error?: string;
  /**
   * Recorded scenarios: the unrecorded gateway of the same interleaved runs, and recorded/unrecorded
   * (the cost of recording is 1 - ratio for throughput, ratio - 1 for CPU).
   */
  baseline?: { name: string; value: number; ratio: number };
}

export interface SideOutcome {
  samples: number[];
  summary: SideResult | null;
  error?: string;
}

function roundAll(r: SideResult): SideResult {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(r)) out[k] = round(v, 4);
  return out as SideResult;
}

export function scenarioResult(
  name: string,
  unit: string,
  better: 'higher' | 'lower',
  sides: Record<Side, SideOutcome>,
): ScenarioResult {
  const g = sides.gateway.summary && roundAll(sides.gateway.summary);
  const s = sides.sshd.summary && roundAll(sides.sshd.summary);
  const errors = (['gateway', 'sshd'] as const)
    .filter((k) => sides[k].error !== undefined)
    .map((k) => `${k}: ${sides[k].error}`);
  const res: ScenarioResult = {
    name,
    unit,
    better,
    gateway: g,
    sshd: s,
    ratio: g && s && s.value > 0 ? round(g.value / s.value, 4) : null,
    samples: {
      gateway: sides.gateway.samples.map((x) => round(x, 5)),
      sshd: sides.sshd.samples.map((x) => round(x, 5)),
    },
  };
  if (errors.length) res.error = errors.join('; ');
  return res;
}

/** A scenario that could not run at all (e.g. setup failed). */
export function failedScenario(
  name: string,
  unit: string,
  better: 'higher' | 'lower',
  error: string,
): ScenarioResult {
  return {
    name,
    unit,
    better,
    gateway: null,
    sshd: null,
    ratio: null,
    samples: { gateway: [], sshd: [] },
    error,
  };
}
