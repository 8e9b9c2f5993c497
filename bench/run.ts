// `npm run bench`: the gateway (local stack) against Debian's OpenSSH sshd, side by side, on loopback.
import { resolve } from 'node:path';
import { errText } from '../src/ops/log.js';
import { createEnv, machineInfo } from './env.js';
import { startGateway, type RunningGateway } from './gateway.js';
import { parseOptions, USAGE, type BenchOptions, type ScenarioGroup } from './options.js';
import { checkOk, runProcess } from './proc.js';
import { formatTable, writeReport, type BenchReport } from './report.js';
import { failedScenario, type ScenarioResult } from './result.js';
import { startSshd, SSHD_PATH, type RunningSshd } from './sshd.js';
import { gatewayTarget, sshdTarget, type Target } from './target.js';
import { execDownload, execUpload } from './scenarios/exec.js';
import { startForwarding } from './scenarios/forward.js';
import { measureLatency } from './scenarios/latency.js';
import { measureRate, measureSessions } from './scenarios/sessions.js';
import { measureProcessModels } from './scenarios/process-model.js';
import { measureSetup } from './scenarios/setup.js';
import { sftpGet, sftpPut } from './scenarios/sftp.js';
import { measureThroughput } from './scenarios/throughput.js';

const log = (s: string) => process.stderr.write(`${s}\n`);

type Group = (
  targets: Target[],
  o: BenchOptions,
  dir: string,
  gw: RunningGateway,
) => Promise<ScenarioResult[]>;

const GROUPS: Record<ScenarioGroup, Group> = {
  setup: ([g, s], o) => measureSetup(g as Target, s as Target, o.setupRuns, log),
  latency: (ts, o) => measureLatency(ts, o.rttCount, log),
  exec: async (ts, o) => [
    ...(await measureThroughput('exec upload', o.size, ts, o.runs, execUpload(o.size), log)),
    ...(await measureThroughput('exec download', o.size, ts, o.runs, execDownload(o.size), log)),
  ],
  forward: async (ts, o) => {
    const f = await startForwarding(ts, o.fwdSize);
    try {
      return [
        ...(await measureThroughput('-L upload (to sink)', o.fwdSize, ts, o.runs, f.upload, log, false)),
        ...(await measureThroughput(
          '-L download (from source)',
          o.fwdSize,
          ts,
          o.runs,
          f.download,
          log,
          false,
        )),
      ];
    } finally {
      await f.stop();
    }
  },
  sftp: async (ts, o, dir) => [
    ...(await measureThroughput('sftp put', o.sftpSize, ts, o.runs, sftpPut(dir, o.sftpSize), log)),
    ...(await measureThroughput('sftp get', o.sftpSize, ts, o.runs, sftpGet(dir, o.sftpSize), log)),
  ],
  sessions: (ts, o) => measureSessions(ts, o.sessions, log),
  rate: (ts, o) => measureRate(ts, o.rateSessions, o.rateConcurrency, log),
  forking: ([, s], o, _dir, gw) => {
    const sshd = s as Target;
    return measureProcessModels(
      sshd.env,
      sshd,
      gw.services,
      { setupRuns: o.setupRuns, connections: o.forkConnections, tsx: o.tsxAgent },
      log,
    );
  },
};

/** Runs the selected scenarios; returns the report (also written to o.json). */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const env = createEnv(o.cipher, o.kex);
  let sshd: RunningSshd | undefined;
  let gw: RunningGateway | undefined;
  const stop = async () => {
    await gw?.stop().catch(() => undefined);
    await sshd?.stop().catch(() => undefined);
    if (!process.env.KEEP_BENCH) env.cleanup();
  };
  const onSignal = () => void stop().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    sshd = await startSshd(env);
    gw = await startGateway(env, o.tsxAgent);
    log(`sshd on 127.0.0.1:${sshd.port} (pid ${sshd.pid}), gateway on 127.0.0.1:${gw.port} (pid ${gw.pid})`);
    const targets = [gatewayTarget(env, gw.port, gw.pid), sshdTarget(env, sshd.port, sshd.pid)];
    // Warm-up: the first gateway connection starts the workspace agent; not part of any measurement.
    for (const t of targets) {
      const r = await runProcess('ssh', [...t.sshArgs(), t.destination, 'true'], { timeoutMs: 60_000 });
      checkOk(`warm-up ssh to ${t.side}`, r);
    }
    const scenarios: ScenarioResult[] = [];
    for (const g of o.scenarios) {
      log(`${g}…`);
      try {
        scenarios.push(...(await GROUPS[g](targets, o, env.dir, gw)));
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
