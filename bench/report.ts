// The printed table (ratios first) and the JSON result files.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { MachineInfo } from './env.js';
import type { BenchOptions } from './options.js';
import type { ScenarioResult, SideResult } from './result.js';

export interface BenchReport {
  tool: string;
  startedAt: string;
  finishedAt: string;
  options: BenchOptions;
  machine: MachineInfo;
  scenarios: ScenarioResult[];
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

function extras(r: SideResult | null): string {
  if (!r) return '';
  return Object.entries(r)
    .filter(([k]) => k !== 'value')
    .map(([k, v]) => `${k}=${fmt(v)}`)
    .join(' ');
}

/** --gateway-env as `K=V …` (empty when none; older result files have no such option). */
function envText(rep: BenchReport): string {
  return Object.entries(rep.options.gatewayEnv ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

/** Rows of the summary table; the A/B columns only when the run had a baseline. */
function tableRows(rep: BenchReport): { header: string[]; rows: string[][]; ab: boolean } {
  const ab = rep.scenarios.some((s) => s.ab);
  const header = [
    'scenario',
    'ratio g/s',
    'gateway',
    'sshd',
    ...(ab ? ['baseline', 'cur/base'] : []),
    'unit',
    'better',
  ];
  const rows = rep.scenarios.map((s) => [
    s.name,
    s.ratio === null ? 'n/a' : s.ratio.toFixed(2),
    s.gateway ? fmt(s.gateway.value) : 'error',
    s.sshd ? fmt(s.sshd.value) : s.error ? 'error' : '-',
    ...(ab
      ? [
          s.ab?.gateway ? fmt(s.ab.gateway.value) : s.ab ? 'error' : '-',
          s.ab?.ratio == null ? 'n/a' : s.ab.ratio.toFixed(3),
        ]
      : []),
    s.unit,
    s.better,
  ]);
  return { header, rows, ab };
}

export function formatTable(rep: BenchReport): string {
  const { header, rows, ab } = tableRows(rep);
  const textCols = new Set([0, header.length - 2, header.length - 1]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (textCols.has(i) ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  const notes: string[] = [];
  for (const s of rep.scenarios) {
    const g = extras(s.gateway);
    const d = extras(s.sshd);
    const b = s.ab ? extras(s.ab.gateway) : '';
    if (g || d || b)
      notes.push(
        `  ${s.name}: gateway ${g || '-'} | sshd ${d || '-'}${s.ab ? ` | baseline ${b || '-'}` : ''}`,
      );
    if (s.baseline) {
      const b = s.baseline;
      const cost = s.better === 'higher' ? 1 - b.ratio : b.ratio - 1;
      notes.push(
        `  ${s.name}: ${b.ratio.toFixed(3)} × unrecorded (${fmt(b.value)} ${s.unit}), recording costs ${(cost * 100).toFixed(1)} %`,
      );
    }
    if (s.error) notes.push(`  ${s.name}: ERROR ${s.error}`);
  }
  const m = rep.machine;
  return [
    ...out,
    '',
    'details:',
    ...notes,
    '',
    `machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}`,
    `client: ${m.opensshClient}; baseline server: ${m.opensshServer}; cipher ${rep.options.cipher}`,
    ...(ab
      ? [`A/B baseline gateway: ${rep.options.baseline ?? '?'} (cur/base = this checkout / baseline)`]
      : []),
  ].join('\n');
}

/** The short Markdown table written beside the JSON (for commit messages and the README). */
export function formatMarkdown(rep: BenchReport): string {
  const { header, rows, ab } = tableRows(rep);
  const m = rep.machine;
  return [
    `# ssh-proxy bench, ${rep.startedAt}`,
    '',
    `${m.cpuModel}, ${m.cores} cores, Node ${m.node}; ${m.opensshClient}; server ${m.opensshServer}; cipher ${rep.options.cipher}` +
      (ab ? `; baseline gateway ${rep.options.baseline ?? '?'}` : '') +
      (envText(rep) ? `; this build's gateway with ${envText(rep)}` : ''),
    '',
    `| ${header.slice(0, -1).join(' | ')} |`,
    `|${header
      .slice(0, -1)
      .map((_, i) => (i === 0 || i === header.length - 2 ? '---' : '---:'))
      .join('|')}|`,
    ...rows.map((r) => `| ${r.slice(0, -1).join(' | ')} |`),
    '',
  ].join('\n');
}

/** Writes the result file, a Markdown table beside it (`.md`) and timestamped copies of both; returns the paths. */
export function writeReport(rep: BenchReport, file: string): string[] {
  mkdirSync(dirname(file), { recursive: true });
  const text = `${JSON.stringify(rep, null, 2)}\n`;
  const md = formatMarkdown(rep);
  const base = file.replace(/\.json$/, '');
  const stamped = join(dirname(file), rep.startedAt.replace(/[:.]/g, '-'));
  const paths = [file, `${base}.md`, `${stamped}.json`, `${stamped}.md`];
  writeFileSync(file, text);
  writeFileSync(`${base}.md`, md);
  writeFileSync(`${stamped}.json`, text);
  writeFileSync(`${stamped}.md`, md);
  return paths;
}

export function readReport(file: string): BenchReport {
  const rep = JSON.parse(readFileSync(file, 'utf8')) as Partial<BenchReport>;
  if (!Array.isArray(rep.scenarios)) throw new Error(`${file} is not a bench result (no scenarios)`);
  return rep as BenchReport;
}

/** One scenario in `--compare`: the gateway's value in both files and the change, signed so + is better. */
export interface ScenarioChange {
  name: string;
  unit: string;
  old: number | null;
  new: number | null;
  /** new/old - 1 for "higher is better", old/new - 1 for "lower" (so + is always an improvement). */
  gain: number | null;
  /** gateway/sshd in each file: the change there is machine drift corrected by each run's own sshd. */
  oldRatio: number | null;
  newRatio: number | null;
}

export function compareReports(oldRep: BenchReport, newRep: BenchReport): ScenarioChange[] {
  const olds = new Map(oldRep.scenarios.map((s) => [s.name, s]));
  const names = [...newRep.scenarios.map((s) => s.name)];
  for (const s of oldRep.scenarios) if (!names.includes(s.name)) names.push(s.name);
  const newByName = new Map(newRep.scenarios.map((s) => [s.name, s]));
  return names.map((name) => {
    const o = olds.get(name);
    const n = newByName.get(name);
    const ov = o?.gateway?.value ?? null;
    const nv = n?.gateway?.value ?? null;
    const better = (n ?? o)?.better ?? 'higher';
    let gain: number | null = null;
    if (ov !== null && nv !== null && ov > 0 && nv > 0)
      gain = better === 'higher' ? nv / ov - 1 : ov / nv - 1;
    return {
      name,
      unit: (n ?? o)?.unit ?? '',
      old: ov,
      new: nv,
      gain,
      oldRatio: o?.ratio ?? null,
      newRatio: n?.ratio ?? null,
    };
  });
}

export function formatComparison(oldFile: string, newFile: string, changes: ScenarioChange[]): string {
  const header = ['scenario', 'old', 'new', 'unit', 'gain', 'g/s old', 'g/s new'];
  const pct = (x: number | null) => (x === null ? 'n/a' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`);
  const num = (x: number | null) => (x === null ? '-' : fmt(x));
  const rows = changes.map((c) => [
    c.name,
    num(c.old),
    num(c.new),
    c.unit,
    pct(c.gain),
    c.oldRatio === null ? '-' : c.oldRatio.toFixed(2),
    c.newRatio === null ? '-' : c.newRatio.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 || i === 3 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  return [
    `old: ${oldFile}`,
    `new: ${newFile}`,
    'gain: + is better whichever way the scenario counts (MB/s up, s/GiB down); g/s: gateway/sshd in each run',
    '',
    line(header),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
  ].join('\n');
}
