// The printed table (ratios first) and the JSON result files.
import { mkdirSync, writeFileSync } from 'node:fs';
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

export function formatTable(rep: BenchReport): string {
  const header = ['scenario', 'ratio g/s', 'gateway', 'sshd', 'unit', 'better'];
  const rows = rep.scenarios.map((s) => [
    s.name,
    s.ratio === null ? 'n/a' : s.ratio.toFixed(2),
    s.gateway ? fmt(s.gateway.value) : 'error',
    s.sshd ? fmt(s.sshd.value) : 'error',
    s.unit,
    s.better,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 || i >= 4 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  const notes: string[] = [];
  for (const s of rep.scenarios) {
    const g = extras(s.gateway);
    const d = extras(s.sshd);
    if (g || d) notes.push(`  ${s.name}: gateway ${g || '-'} | sshd ${d || '-'}`);
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
  ].join('\n');
}

/** Writes the result file and a timestamped copy next to it; returns both paths. */
export function writeReport(rep: BenchReport, file: string): string[] {
  mkdirSync(dirname(file), { recursive: true });
  const text = `${JSON.stringify(rep, null, 2)}\n`;
  const stamped = join(dirname(file), `${rep.startedAt.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, text);
  writeFileSync(stamped, text);
  return [file, stamped];
}
