// The Alpine image's restart-loop entrypoint (deploy/docker/entrypoint.sh), run by this machine's POSIX
// /bin/sh (dash; Alpine's is busybox ash) with a stand-in gateway that records what happens to it.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDirFor } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ENTRYPOINT = join(ROOT, 'deploy', 'docker', 'entrypoint.sh');
const DEADLINE_MS = 30_000;
const tmp = tempDirFor(after, 'ssh-proxy-entrypoint-');

// Stand-in for dist/cli/ssh-proxy.js. Each run appends "start <pid> <args>" to $STATE; run n exits with
// the n-th code of $EXITS ("wait" = run until SIGTERM, then record "term" and exit 0).
const FAKE = tmp.join('fake-gateway.mjs');
writeFileSync(
  FAKE,
  `import { appendFileSync, readFileSync } from 'node:fs';
const state = process.env.STATE;
const runs = readFileSync(state, 'utf8').split('\\n').filter((l) => l.startsWith('start')).length;
appendFileSync(state, \`start \${process.pid} \${process.argv.slice(2).join(' ')}\\n\`);
const plan = (process.env.EXITS ?? '').split(',')[runs] ?? 'wait';
if (plan === 'wait') {
  process.on('SIGTERM', () => { appendFileSync(state, 'term\\n'); process.exit(0); });
  appendFileSync(state, 'ready\\n');
  setInterval(() => {}, 1000);
} else {
  process.exit(Number(plan));
}
`,
);

function start(name: string, env: NodeJS.ProcessEnv) {
  const state = tmp.join(`${name}.state`);
  writeFileSync(state, '');
  const child = spawn('/bin/sh', [ENTRYPOINT, '--config', 'config/config.yaml'], {
    env: {
      PATH: '/usr/bin:/bin',
      SSH_PROXY_NODE: process.execPath,
      SSH_PROXY_APP: FAKE,
      STATE: state,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const lines = () => (existsSync(state) ? readFileSync(state, 'utf8').split('\n').filter(Boolean) : []);
  after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return { child, exited, lines, stderr: () => stderr };
}

describe('alpine entrypoint', () => {
  test('restarts a failed gateway, forwards SIGTERM and exits with the drained status', async () => {
    const run = start('restart', { EXITS: '3,wait' });
    await waitFor(() => run.lines().includes('ready'), { timeoutMs: DEADLINE_MS, what: 'the second run' });
    assert.match(run.stderr(), /ssh-proxy exited with status 3; restarting in 1s/);
    const starts = run.lines().filter((l) => l.startsWith('start'));
    assert.equal(starts.length, 2);
    for (const s of starts) assert.match(s, / --config config\/config\.yaml$/);
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0);
    assert.ok(run.lines().includes('term'), 'the gateway got SIGTERM');
    assert.equal(run.lines().filter((l) => l.startsWith('start')).length, 2, 'no restart after SIGTERM');
  });

  test('a signal during the back-off stops the loop at once, with the last exit status', async () => {
    const run = start('backoff', { EXITS: '5,5,5', SSH_PROXY_RESTART_DELAY: '600' });
    await waitFor(() => run.stderr().includes('restarting in 600s'), {
      timeoutMs: DEADLINE_MS,
      what: 'back-off',
    });
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 5);
    assert.equal(run.lines().filter((l) => l.startsWith('start')).length, 1);
  });

  test('SSH_PROXY_RESTART=0 execs the gateway: its pid and its exit status, no restart', async () => {
    const run = start('exec', { EXITS: '7', SSH_PROXY_RESTART: '0' });
    assert.equal(await run.exited, 7);
    const starts = run.lines().filter((l) => l.startsWith('start'));
    assert.deepEqual(starts, [`start ${run.child.pid} --config config/config.yaml`]);
  });
});
