// The shape of one scenario's outcome, as printed and written to the JSON result file.
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
   * A/B run (`--baseline DIR`): the gateway built from another checkout, measured in the same interleaved
   * runs (current, baseline, sshd, …). `ratio` is gateway.value / ab.gateway.value (current/baseline),
   * `sshdRatio` the baseline's own ratio to sshd.
   */
  ab?: ABResult;
  /**
   * Recorded scenarios: the unrecorded gateway of the same interleaved runs, and recorded/unrecorded
   * (the cost of recording is 1 - ratio for throughput, ratio - 1 for CPU).
   */
  baseline?: { name: string; value: number; ratio: number };
}

export interface ABResult {
  gateway: SideResult | null;
  ratio: number | null;
  sshdRatio: number | null;
  samples: number[];
  error?: string;
}

/** The outcomes of one scenario per side; `base` only in an A/B run. */
export interface Sides {
  gateway: SideOutcome;
  sshd: SideOutcome;
  base?: SideOutcome;
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
  sides: Sides,
): ScenarioResult {
  const g = sides.gateway.summary && roundAll(sides.gateway.summary);
  const s = sides.sshd.summary && roundAll(sides.sshd.summary);
  const errors = (['gateway', 'sshd', 'base'] as const)
    .filter((k) => sides[k]?.error !== undefined)
    .map((k) => `${k === 'base' ? 'baseline' : k}: ${sides[k]?.error}`);
  const ratioOf = (a: SideResult | null, b: SideResult | null) =>
    a && b && b.value > 0 ? round(a.value / b.value, 4) : null;
  const res: ScenarioResult = {
    name,
    unit,
    better,
    gateway: g,
    sshd: s,
    ratio: ratioOf(g, s),
    samples: {
      gateway: sides.gateway.samples.map((x) => round(x, 5)),
      sshd: sides.sshd.samples.map((x) => round(x, 5)),
    },
  };
  if (sides.base) {
    const b = sides.base.summary && roundAll(sides.base.summary);
    res.ab = {
      gateway: b,
      ratio: ratioOf(g, b),
      sshdRatio: ratioOf(b, s),
      samples: sides.base.samples.map((x) => round(x, 5)),
    };
    if (sides.base.error !== undefined) res.ab.error = sides.base.error;
  }
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
