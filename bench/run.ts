// `npm run bench`: the gateway (local stack) against Debian's OpenSSH sshd, side by side, on loopback.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { errText } from '../src/ops/log.js';
import { createEnv, machineInfo, type BenchEnv } from './env.js';
import { startGateway, type RunningGateway, type RunningSink } from './gateway.js';
import { parseOptions, USAGE, type BenchOptions, type ScenarioGroup } from './options.js';
import { checkOk, childrenOf, rssKiB, runProcess } from './proc.js';
import { startProduction, type ProcessModel, type ProductionGateway } from './production.js';
import {
  compareReports,
  formatComparison,
  formatTable,
  readReport,
  writeReport,
  type BenchReport,
} from './report.js';
import { failedScenario, type ScenarioResult } from './result.js';
import { round } from './stats.js';
import { startSshd, SSHD_PATH, type RunningSshd } from './sshd.js';
import { gatewayTarget, sshdTarget, type Target } from './target.js';
import { measureAging, type AgingSubject } from './scenarios/aging.js';
import { measureCores, productionGatewayTarget } from './scenarios/cores.js';
import { execDownload, execUpload } from './scenarios/exec.js';
import { startForwarding } from './scenarios/forward.js';
import { measureLatency } from './scenarios/latency.js';
import { measureRate, measureSessions } from './scenarios/sessions.js';
import { measureProcessModels } from './scenarios/process-model.js';
import { measureSetup } from './scenarios/setup.js';
import { sftpGet, sftpPut } from './scenarios/sftp.js';
import { measureThroughput } from './scenarios/throughput.js';

const log = (s: string) => process.stderr.write(`${s}\n`);

/**
 * The targets of a run: the gateway and sshd (and, with --baseline, the baseline build's gateway
 * between them: `both` is then current, baseline, sshd, the order of every interleaved round), plus the
 * recording gateway (undefined with --no-recording), which joins only the download scenarios.
 */
interface Targets {
  gateway: Target;
  sshd: Target;
  base: Target | undefined;
  both: Target[];
  recorded: { target: Target; sink: RunningSink } | undefined;
}

/** What a group may need beyond the targets: the scratch env, the main stack, the baseline's build. */
interface GroupContext {
  env: BenchEnv;
  gw: RunningGateway;
  baseDist: string | undefined;
}

type Group = (t: Targets, o: BenchOptions, ctx: GroupContext) => Promise<ScenarioResult[]>;

interface Stoppable {
  stop(): Promise<void>;
}

/**
 * Aging: fresh gateways of their own (the production entry, in-process, authz and session tracking on,
 * beside a fresh stack whose agent they reach; and the same from the baseline's build), and sshd.
 */
async function agingGroup(t: Targets, o: BenchOptions, ctx: GroupContext): Promise<ScenarioResult[]> {
  const started: Stoppable[] = [];
  try {
    const subjects: AgingSubject[] = [];
    const variants: { side: 'gateway' | 'base'; dist: string | undefined }[] = [
      { side: 'gateway', dist: undefined },
      ...(ctx.baseDist ? [{ side: 'base' as const, dist: ctx.baseDist }] : []),
    ];
    for (const v of variants) {
      const gwEnv = v.side === 'gateway' ? o.gatewayEnv : {};
      const stack = await startGateway(ctx.env, o.tsxAgent, {
        dist: v.dist,
        name: `aging-${v.side}-stack`,
        env: gwEnv,
      });
      started.push(stack);
      const g = await startProduction(ctx.env, {
        model: 'in-process',
        services: stack.services,
        tsx: o.tsxAgent,
        dist: v.dist,
        tracking: true,
        stats: true,
        name: `aging-${v.side}`,
        env: gwEnv,
      });
      started.push(g);
      subjects.push({
        target: gatewayTarget(ctx.env, g.port, g.pid, undefined, v.side, stack.pid),
        memKiB: () => rssKiB(g.pid),
        agentKiB: () => childrenOf(stack.pid).reduce((a, p) => a + rssKiB(p), 0),
        stats: g.stats,
      });
    }
    subjects.push({ target: t.sshd, memKiB: () => t.sshd.memory().treePss, agentKiB: () => 0 });
    return await measureAging(subjects, { ...o.aging, runs: o.runs }, log);
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
  }
}

/** Cores: the production entry in-process and forking, against the main stack's agent, and sshd. */
async function coresGroup(t: Targets, o: BenchOptions, ctx: GroupContext): Promise<ScenarioResult[]> {
  const started: ProductionGateway[] = [];
  try {
    const variants: { name: string; target: Target }[] = [];
    for (const model of ['in-process', 'forking'] as ProcessModel[]) {
      const g = await startProduction(ctx.env, {
        model,
        services: ctx.gw.services,
        tsx: o.tsxAgent,
        name: `cores-${model}`,
        env: o.gatewayEnv,
      });
      started.push(g);
      const target = productionGatewayTarget(ctx.env, g, ctx.gw.pid);
      checkOk(
        `warm-up ssh to ${target.label}`,
        await runProcess('ssh', [...target.sshArgs(), target.destination, 'true'], { timeoutMs: 60_000 }),
      );
      variants.push({ name: model, target });
    }
    return await measureCores(variants, t.sshd, { ...o.cores, runs: o.runs }, log);
  } finally {
    for (const g of started) await g.stop().catch(() => undefined);
  }
}

/**
 * A download measured on the gateway, the recording gateway and sshd in the same interleaved runs;
 * the recorded result also says what share of the bytes reached the session sink.
 */
async function recordedDownload(
  t: Targets,
  measure: (targets: Target[]) => Promise<ScenarioResult[]>,
): Promise<ScenarioResult[]> {
  const rec = t.recorded;
  if (!rec) return measure(t.both);
  const before = rec.sink.received();
  const results = await measure([t.gateway, ...(t.base ? [t.base] : []), rec.target, t.sshd]);
  const after = rec.sink.received();
  const bytes = after.bytes - before.bytes;
  const dropped = after.dropped - before.dropped;
  for (const r of results)
    if (r.baseline && r.gateway && r.unit === 'MB/s')
      r.gateway.recordedShare = bytes + dropped > 0 ? round(bytes / (bytes + dropped), 4) : 0;
  return results;
}

const GROUPS: Record<ScenarioGroup, Group> = {
  setup: (t, o) => measureSetup(t.gateway, t.sshd, o.setupRuns, log, t.base),
  latency: ({ both }, o) => measureLatency(both, o.rttCount, log),
  exec: async (t, o) => [
    ...(await measureThroughput('exec upload', o.size, t.both, o.runs, execUpload(o.size), log)),
    ...(await recordedDownload(t, (ts) =>
      measureThroughput('exec download', o.size, ts, o.runs, execDownload(o.size), log),
    )),
  ],
  forward: async (t, o) => {
    const f = await startForwarding([...t.both, ...(t.recorded ? [t.recorded.target] : [])], o.fwdSize);
    try {
      return [
        ...(await measureThroughput('-L upload (to sink)', o.fwdSize, t.both, o.runs, f.upload, log, false)),
        ...(await recordedDownload(t, (ts) =>
          measureThroughput('-L download (from source)', o.fwdSize, ts, o.runs, f.download, log, false),
        )),
      ];
    } finally {
      await f.stop();
    }
  },
  sftp: async ({ both }, o, { env: { dir } }) => [
    ...(await measureThroughput('sftp put', o.sftpSize, both, o.runs, sftpPut(dir, o.sftpSize), log)),
    ...(await measureThroughput('sftp get', o.sftpSize, both, o.runs, sftpGet(dir, o.sftpSize), log)),
  ],
  sessions: ({ both }, o) => measureSessions(both, o.sessions, log),
  rate: ({ both }, o) => measureRate(both, o.rateSessions, o.rateConcurrency, log),
  forking: ({ sshd }, o, { gw }) => {
    return measureProcessModels(
      sshd.env,
      sshd,
      gw.services,
      { setupRuns: o.setupRuns, connections: o.forkConnections, tsx: o.tsxAgent },
      log,
    );
  },
  aging: agingGroup,
  cores: coresGroup,
};

/** `--baseline DIR`: DIR's dist/ (a checkout), or DIR itself when it is a built tree. */
function baselineDist(dir: string): string {
  const d = resolve(dir);
  for (const c of [join(d, 'dist'), d]) if (existsSync(join(c, 'cli/agent.js'))) return c;
  throw new Error(`--baseline ${dir}: no built gateway there (run "npm ci && npm run build" in it)`);
}

/** Runs the selected scenarios; returns the report (also written to o.json). */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const env = createEnv(o.cipher, o.kex);
  let sshd: RunningSshd | undefined;
  let gw: RunningGateway | undefined;
  let rgw: RunningGateway | undefined;
  let bgw: RunningGateway | undefined;
  const stop = async () => {
    await gw?.stop().catch(() => undefined);
    await rgw?.stop().catch(() => undefined);
    await bgw?.stop().catch(() => undefined);
    await sshd?.stop().catch(() => undefined);
    if (!process.env.KEEP_BENCH) env.cleanup();
  };
  const onSignal = () => void stop().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // The recording gateway only matters for the exec and forward groups.
    const wantRecorded = o.recording && o.scenarios.some((g) => g === 'exec' || g === 'forward');
    const baseDist = o.baseline === undefined ? undefined : baselineDist(o.baseline);
    const started = await Promise.allSettled([
      startSshd(env),
      startGateway(env, o.tsxAgent, { env: o.gatewayEnv }),
      wantRecorded
        ? startGateway(env, o.tsxAgent, { record: true, env: o.gatewayEnv })
        : Promise.resolve(undefined),
      baseDist
        ? startGateway(env, false, { dist: baseDist, name: 'gateway-baseline' })
        : Promise.resolve(undefined),
    ]);
    if (started[0].status === 'fulfilled') sshd = started[0].value;
    if (started[1].status === 'fulfilled') gw = started[1].value;
    if (started[2].status === 'fulfilled') rgw = started[2].value;
    if (started[3].status === 'fulfilled') bgw = started[3].value;
    for (const r of started) if (r.status === 'rejected') throw r.reason;
    if (!sshd || !gw) throw new Error('sshd or the gateway did not start');
    log(`sshd on 127.0.0.1:${sshd.port} (pid ${sshd.pid}), gateway on 127.0.0.1:${gw.port} (pid ${gw.pid})`);
    if (bgw) log(`baseline gateway (${baseDist}) on 127.0.0.1:${bgw.port} (pid ${bgw.pid})`);
    const gatewayT = gatewayTarget(env, gw.port, gw.pid);
    const sshdT = sshdTarget(env, sshd.port, sshd.pid);
    const baseT = bgw && gatewayTarget(env, bgw.port, bgw.pid, undefined, 'base');
    const both = [gatewayT, ...(baseT ? [baseT] : []), sshdT];
    const recordedTarget = rgw?.sink && gatewayTarget(env, rgw.port, rgw.pid, rgw.sink.pid);
    if (rgw?.sink)
      log(`recording gateway on 127.0.0.1:${rgw.port} (pid ${rgw.pid}), sink pid ${rgw.sink.pid}`);
    const targets: Targets = {
      gateway: gatewayT,
      sshd: sshdT,
      base: baseT,
      both,
      recorded: recordedTarget && rgw?.sink ? { target: recordedTarget, sink: rgw.sink } : undefined,
    };
    // Warm-up: the first gateway connection starts the workspace agent; not part of any measurement.
    for (const t of [...both, ...(recordedTarget ? [recordedTarget] : [])]) {
      const r = await runProcess('ssh', [...t.sshArgs(), t.destination, 'true'], { timeoutMs: 60_000 });
      checkOk(`warm-up ssh to ${t.label}`, r);
    }
    const scenarios: ScenarioResult[] = [];
    for (const g of o.scenarios) {
      log(`${g}…`);
      try {
        scenarios.push(...(await GROUPS[g](targets, o, { env, gw, baseDist })));
      } catch (e) {
        log(`  ${g} failed: ${errText(e)}`);
        scenarios.push(failedScenario(g, '', 'higher', errText(e)));
      }
    }
    const report: BenchReport = {
      tool: 'ssh-proxy bench',
      startedAt,
      finishedAt: new Date().toISOString(),
      options: o,
      machine: machineInfo(SSHD_PATH),
      scenarios,
    };
    if (process.env.KEEP_BENCH) log(`kept ${env.dir} (gateway log ${gw.logFile})`);
    return report;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stop();
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  let o: BenchOptions;
  try {
    o = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`${errText(e)}\n${USAGE}`);
    process.exit(2);
  }
  if (o.compare !== undefined) {
    const oldFile = resolve(o.compare);
    const newFile = resolve(o.json);
    const changes = compareReports(readReport(oldFile), readReport(newFile));
    process.stdout.write(`${formatComparison(oldFile, newFile, changes)}\n`);
    return;
  }
  const report = await runBench(o);
  const files = writeReport(report, resolve(o.json));
  process.stdout.write(`${formatTable(report)}\n`);
  log(`results: ${files.join(', ')}`);
  const failed = report.scenarios.filter((s) => s.error);
  process.exitCode = failed.length ? 1 : 0;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${errText(e)}\n`);
  process.exit(1);
});
