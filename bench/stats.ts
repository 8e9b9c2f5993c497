// Small order statistics for benchmark samples.

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

/** Linear-interpolated percentile (p in 0..100); NaN for no samples. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = s[lo] as number;
  const b = s[hi] as number;
  return a + (b - a) * (rank - lo);
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Rounds for display and JSON without losing the magnitude of small values. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const mag = Math.max(0, digits - Math.ceil(Math.log10(Math.abs(x))));
  const f = 10 ** Math.min(mag, 6);
  return Math.round(x * f) / f;
}
