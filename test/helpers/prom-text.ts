// A small strict parser of the Prometheus text exposition format (0.0.4), for tests: it rejects what
// Prometheus would reject (bad names, bad escapes, samples without or before their TYPE, a family's
// samples split up, duplicate series) and checks histogram consistency (cumulative buckets, +Inf equal
// to _count).

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** As Prometheus reads values (Go's strconv.ParseFloat): Inf/NaN in any letter case. */
function parseValue(s: string, line: number): number {
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  // prom-client writes "Nan" (e.g. an event-loop statistic before its first sample).
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(s))
    throw new Error(`line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

/** Parses `{a="x",b="y"}` starting at `i` (the `{`); returns the labels and the index after `}`. */
function parseLabels(text: string, i: number, line: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let p = i + 1;
  for (;;) {
    if (text[p] === '}') return [labels, p + 1];
    const eq = text.indexOf('=', p);
    if (eq < 0) throw new Error(`line ${line}: label without '='`);
    const name = text.slice(p, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`line ${line}: duplicate label ${name}`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`);
    let v = '';
    let q = eq + 2;
    for (;;) {
      const c = text[q];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const n = text[q + 1];
        if (n === '\\') v += '\\';
        else if (n === '"') v += '"';
        else if (n === 'n') v += '\n';
        else throw new Error(`line ${line}: bad escape \\${n ?? ''}`);
        q += 2;
        continue;
      }
      v += c;
      q++;
    }
    labels[name] = v;
    p = q + 1;
    if (text[p] === ',') p++;
    else if (text[p] !== '}') throw new Error(`line ${line}: expected ',' or '}' after a label`);
  }
}

function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  const f = families.get(sample);
  if (f) return f;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const base = families.get(sample.slice(0, -suffix.length));
      if (base && (base.type === 'histogram' || (base.type === 'summary' && suffix !== '_bucket')))
        return base;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const closed = new Set<string>();
  let current: Family | undefined;
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('exposition must end with a newline');
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (!m) return; // a plain comment
      const [, kind, name = '', rest = ''] = m;
      if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      let f = families.get(name);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`line ${line}: bad type ${rest}`);
        if (f?.samples.length) throw new Error(`line ${line}: TYPE of ${name} after its samples`);
        if (f && f.type !== 'untyped') throw new Error(`line ${line}: second TYPE for ${name}`);
        f ??= { name, type: 'untyped', help: undefined, samples: [] };
        f.type = rest as Family['type'];
      } else {
        if (f?.help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`);
        f ??= { name, type: 'untyped', help: undefined, samples: [] };
        f.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      }
      families.set(name, f);
      return;
    }
    const nameEnd = raw.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`line ${line}: not a sample: ${raw}`);
    const name = raw.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
    let labels: Record<string, string> = {};
    let p = nameEnd;
    if (raw[p] === '{') [labels, p] = parseLabels(raw, p, line);
    if (raw[p] !== ' ') throw new Error(`line ${line}: expected a space before the value`);
    const [valueText = '', ts, extra] = raw.slice(p + 1).split(' ');
    if (extra !== undefined || (ts !== undefined && !/^-?\d+$/.test(ts)))
      throw new Error(`line ${line}: trailing garbage`);
    const value = parseValue(valueText, line);
    const f = familyOf(name, families);
    if (!f) throw new Error(`line ${line}: sample ${name} has no TYPE`);
    if (current !== f) {
      if (closed.has(f.name)) throw new Error(`line ${line}: samples of ${f.name} are not contiguous`);
      if (current) closed.add(current.name);
      current = f;
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`line ${line}: duplicate series ${key}`);
    seen.add(key);
    f.samples.push({ name, labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, { le: number; v: number }[]>();
  const counts = new Map<string, number>();
  const key = (l: Record<string, string>): string =>
    JSON.stringify(
      Object.entries(l)
        .filter(([k]) => k !== 'le')
        .sort(),
    );
  for (const s of f.samples) {
    if (s.name === `${f.name}_bucket`) {
      const le = s.labels.le;
      if (le === undefined) throw new Error(`${f.name}: bucket without le`);
      const g = groups.get(key(s.labels)) ?? [];
      g.push({ le: parseValue(le, 0), v: s.value });
      groups.set(key(s.labels), g);
    } else if (s.name === `${f.name}_count`) counts.set(key(s.labels), s.value);
  }
  for (const [k, g] of groups) {
    g.sort((a, b) => a.le - b.le);
    for (let i = 1; i < g.length; i++) {
      if ((g[i]?.v ?? 0) < (g[i - 1]?.v ?? 0)) throw new Error(`${f.name}${k}: buckets not cumulative`);
    }
    const inf = g.at(-1);
    if (inf?.le !== Infinity) throw new Error(`${f.name}${k}: no +Inf bucket`);
    if (counts.get(k) !== inf.v) throw new Error(`${f.name}${k}: +Inf bucket differs from _count`);
  }
}

/** The value of one series, or undefined. */
export function sampleValue(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const want = Object.entries(labels);
      if (want.every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === want.length)
        return s.value;
    }
  }
  return undefined;
}
