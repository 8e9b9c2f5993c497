// Value coercions shared by the config schema. YAML literals arrive as YamlLiteral and `${VAR}`
// substitutions arrive as strings, so numbers, booleans and strings are coerced from either form.
// A null (`key:` with no value) counts as unset, as the reference's YAML decoder treats it.
import { isIP } from 'node:net';
import { z } from 'zod';
import { YamlLiteral } from './yaml.js';

const NUMBER_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const TRUE = new Set(['true', 'yes', 'on', '1']);
const FALSE = new Set(['false', 'no', 'off', '0']);

/** null → undefined; a literal is unwrapped so that e.g. `server: 5` fails as "expected a mapping". */
export function unset(v: unknown): unknown {
  if (v instanceof YamlLiteral) return v.value;
  return v === null ? undefined : v;
}

function toNumber(v: unknown): unknown {
  if (v instanceof YamlLiteral) return v.value;
  if (typeof v === 'string' && NUMBER_RE.test(v.trim())) return Number(v.trim());
  return unset(v);
}

function toBoolean(v: unknown): unknown {
  if (v instanceof YamlLiteral) return v.value;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (TRUE.has(s)) return true;
    if (FALSE.has(s)) return false;
  }
  return unset(v);
}

function toString(v: unknown): unknown {
  // The source text, so that `token: 0123` stays "0123".
  if (v instanceof YamlLiteral) return v.source;
  return v === null ? undefined : v;
}

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-9,
  us: 1e-6,
  µs: 1e-6,
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600,
};
const DURATION_RE = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/;

/** Go-style duration ("1m30s", "500ms") to seconds; undefined when not a duration. */
export function parseGoDuration(s: string): number | undefined {
  let rest = s.trim();
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  let total = 0;
  while (rest !== '') {
    const m = DURATION_RE.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * (DURATION_UNITS[m[2] ?? ''] ?? NaN);
    rest = rest.slice(m[0].length);
  }
  return Number.isFinite(total) ? total : undefined;
}

function toSeconds(v: unknown): unknown {
  const n = toNumber(v);
  if (typeof n === 'string') return parseGoDuration(n) ?? n;
  return n;
}

/** Renders an offending value for an error message (strings quoted, long ones shortened). */
export function show(v: unknown): string {
  if (v instanceof YamlLiteral) return v.source;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

interface NumOpts {
  min?: number;
  max?: number;
  /** Allow fractions (seconds); otherwise an integer is required. */
  fraction?: boolean;
}

function numberSchema(o: NumOpts, base: z.ZodNumber = z.number()): z.ZodNumber {
  let s = o.fraction ? base : base.int();
  if (o.min !== undefined) s = s.min(o.min);
  if (o.max !== undefined) s = s.max(o.max);
  return s;
}

/** A number with a default; `${VAR}` strings are coerced. */
export function num(def: number, o: NumOpts = {}) {
  return z.preprocess(toNumber, numberSchema(o).default(def));
}

/** Seconds as a number or a Go duration string ("2s", "1m"); normalised to seconds. */
export function seconds(def: number, o: Omit<NumOpts, 'fraction'> = {}) {
  const base = z.number({
    error: (iss) =>
      iss.code === 'invalid_type'
        ? `expected seconds or a duration like "2s", got ${show(iss.input)}`
        : undefined,
  });
  return z.preprocess(toSeconds, numberSchema({ ...o, fraction: true }, base).default(def));
}

export function bool(def: boolean) {
  return z.preprocess(toBoolean, z.boolean().default(def));
}

/** A boolean that may stay unset (the distinction matters, e.g. recording options). */
export function optBool() {
  return z.preprocess(toBoolean, z.boolean().optional());
}

export function str(def: string) {
  return z.preprocess(toString, z.string().default(def));
}

/** A list of strings; a single string is accepted as a one-element list. */
export function strList(def: string[], item: z.ZodType<string> = z.string()) {
  return z.preprocess((v) => {
    const u = toString(v);
    if (typeof u === 'string') return u === '' ? [] : [u];
    return Array.isArray(u) ? u.map(toString) : u;
  }, z.array(item).default(def));
}

/** A mapping section; absent or null becomes `{}` so that the inner defaults apply. */
export function section<S extends z.ZodRawShape>(shape: S) {
  // Cast: with a generic shape TypeScript cannot see that every key has a default.
  return z.preprocess(unset, z.object(shape).prefault({} as z.input<z.ZodObject<S>>));
}

/** A list of mappings. */
export function objList<S extends z.ZodRawShape>(shape: S) {
  return z.preprocess(unset, z.array(z.object(shape)).default([]));
}

export function isCidr(s: string): boolean {
  const [addr = '', bits, ...more] = s.split('/');
  const family = isIP(addr);
  if (family === 0 || more.length > 0) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}
