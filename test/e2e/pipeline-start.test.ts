// A slow workspace start shared by two PTY shells of one connection: Ctrl+C in one cancels only that
// channel's wait; the other shell gets its workspace and runs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';
import { startE2E, type E2E } from './harness.js';
import { Processes, sshArgs, startControlMaster, waitWhileRunning } from './fwd-helpers/proc.js';

describe('shared workspace start', { timeout: 180_000 }, () => {
  let e: E2E;
  let tmp: TempDir;
  const procs = new Processes();

  before(async () => {
    // Long enough that both shells are surely waiting when Ctrl+C is typed.
    e = await startE2E({ blueprints: ['slow'], pullDelayMs: 8000 });
    tmp = makeTempDir('spx-start-');
  });
  after(async () => {
    await procs.stopAll();
    await e?.stop();
    tmp?.cleanup();
  });

  test('Ctrl+C in one PTY shell cancels only that channel’s wait', async () => {
    const master = tmp.join('m.sock');
    const login = `${e.user}~slow@127.0.0.1`;
    await startControlMaster(procs, e, master, login);
    const shell = () => procs.start('ssh', [...sshArgs(e), '-S', master, '-tt', login]);
    const a = shell();
    const b = shell();
    for (const s of [a, b])
      await waitWhileRunning(
        s,
        () => s.stdout().includes('Starting workspace'),
        'the start progress',
        60_000,
      );
    a.child.stdin?.write('\x03');
    const ra = await a.exited;
    assert.equal(ra.code, 1, a.stdout());
    assert.match(a.stderr() + a.stdout(), /Workspace start cancelled/);
    // The other shell still gets its workspace.
    b.child.stdin?.write('echo mark-$((6*7)); exit 3\n');
    const rb = await b.exited;
    assert.equal(rb.code, 3, b.stdout() + b.stderr());
    assert.match(b.stdout(), /mark-42/);
  });
});
