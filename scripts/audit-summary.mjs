#!/usr/bin/env node
// `make test-static`'s dependency audit: `npm audit --omit=dev`, reduced to one summary line.
// It does not fail the build by default: advisories are published independently of any change to this
// code, so a red build would then block unrelated work and make old commits unreproducible. Gate on them
// in a scheduled job, or here with AUDIT_FAIL_LEVEL=low|moderate|high|critical (exit 1 when an advisory
// of that severity or worse affects a production dependency). An unreachable audit service is reported
// and never fails the build (some registries and mirrors have no audit endpoint).
import { spawnSync } from 'node:child_process';

const LEVELS = ['info', 'low', 'moderate', 'high', 'critical'];
const failLevel = process.env.AUDIT_FAIL_LEVEL ?? '';
if (failLevel !== '' && !LEVELS.includes(failLevel)) {
  console.error(`audit: AUDIT_FAIL_LEVEL must be one of ${LEVELS.slice(1).join(', ')}, got "${failLevel}"`);
  process.exit(2);
}

const root = new URL('..', import.meta.url).pathname;
const r = spawnSync('npm', ['audit', '--omit=dev', '--json'], {
  cwd: root,
  encoding: 'utf8',
  timeout: 120_000,
  maxBuffer: 64 * 1024 * 1024,
});
let report;
try {
  report = JSON.parse(r.stdout);
} catch {
  report = undefined;
}
const counts = report?.metadata?.vulnerabilities;
if (!counts || typeof counts !== 'object') {
  const why =
    report?.message ??
    report?.error?.summary ??
    (r.stderr || r.error?.message || 'no report').trim().split('\n')[0];
  console.log(`audit: skipped, the audit service could not be asked (${why})`);
  process.exit(0);
}
const summary = LEVELS.map((l) => `${counts[l] ?? 0} ${l}`).join(', ');
const deps = report.metadata.dependencies?.prod ?? report.metadata.dependencies?.total ?? '?';
console.log(`audit: production dependencies (${deps}): ${summary}`);
if (failLevel !== '') {
  const bad = LEVELS.slice(LEVELS.indexOf(failLevel)).reduce((n, l) => n + (counts[l] ?? 0), 0);
  if (bad > 0) {
    console.error(
      `audit: ${bad} advisories at ${failLevel} or worse (AUDIT_FAIL_LEVEL=${failLevel}); see npm audit`,
    );
    process.exit(1);
  }
}
