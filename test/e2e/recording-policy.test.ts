// Issue 11 end to end, the other configurations: the local stack as `npm start` runs it records
// nothing until policy.yaml asks for it (session:record through the local policy service); failPolicy
// open lets a recorded shell run with the session service down; a tiny send queue drops and counts
// without slowing a fast download.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256 } from './fwd-helpers/servers.js';
import { ssh, startE2E, type E2E } from './harness.js';
import {
  castOutput,
  fileOf,
  finishedRecording,
  metric,
  readCast,
  recordingIds,
} from './recording-helpers.js';

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true }).map(String);
  } catch {
    return [];
  }
}

describe(
  'recording as npm start runs it: nothing by default, policy.yaml decides',
  { timeout: 150_000 },
  () => {
    let e: E2E;
    before(async () => {
      e = await startE2E();
    });
    after(async () => {
      await e?.stop();
    });

    test('no recording settings and no policy: nothing is recorded, the session is still tracked', async () => {
      const exec = await ssh(e, e.user, ['echo plain'], { timeoutMs: 60_000 });
      assert.equal(exec.code, 0, exec.stderr);
      const shell = await ssh(e, e.user, [], { options: ['-tt'], input: 'echo shell-$((1+1))\nexit 0\n' });
      assert.equal(shell.code, 0, shell.stderr);
      assert.match(shell.stdout.toString(), /shell-2/);
      assert.equal(e.stack.sessions.store.recordings.size, 0);
      assert.deepEqual(filesUnder(e.stack.sessions.recordingsDir), []);
      assert.ok(
        [...e.stack.sessions.store.sessions.values()].some((s) => s.username === e.user && s.endTime > 0),
        'the sessions were tracked',
      );
    });

    test('policy.yaml with a record obligation (shell, exec): an exec is recorded through the local policy service, sftp is not', async () => {
      writeFileSync(
        join(e.dir.join('data'), 'policy.yaml'),
        [
          'default: allow',
          'rules:',
          '  - name: record shells and commands',
          '    action: session:record',
          '    effect: allow',
          '    record: [shell, exec]',
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      const known = recordingIds(e);
      const exec = await ssh(e, e.user, ['echo via-policy']);
      assert.equal(exec.code, 0, exec.stderr);
      const r = await finishedRecording(e, 'exec', known);
      assert.equal(r.status, 'complete');
      assert.equal(castOutput(readCast(fileOf(e, r, 'cast'))), 'via-policy\n');
      // sftp is not in the obligation: a found obligation decides every kind (reference §15.1).
      const sftp = await ssh(e, e.user, ['sftp'], { options: ['-s'], input: '' });
      assert.notEqual(sftp.code, null);
      assert.deepEqual(
        [...e.stack.sessions.store.recordings.values()].filter((x) => !known.has(x.id)).map((x) => x.kind),
        ['exec'],
      );
    });

    test('failPolicy open (the default): with the session service down a recorded shell runs unrecorded', async () => {
      await e.stack.sessions.close();
      const shell = await ssh(e, e.user, [], {
        options: ['-tt'],
        input: 'echo ran-$((40+2))\nexit 3\n',
        timeoutMs: 60_000,
      });
      assert.equal(shell.code, 3, shell.stderr);
      assert.match(shell.stdout.toString(), /ran-42/);
      assert.doesNotMatch(shell.stderr, /ssh-proxy:/);
      assert.ok(
        (await metric(e, 'sshproxy_recording_drops_total', { kind: 'shell', reason: 'stream_error' })) >= 1,
      );
    });
  },
);

describe('a tiny recording queue drops and counts, never stalls', { timeout: 150_000 }, () => {
  const bufferBytes = 16 * 1024;
  let e: E2E;
  before(async () => {
    e = await startE2E({
      configure: (cfg) => {
        cfg.server.recording.recordExec = true;
        cfg.server.recording.bufferBytes = bufferBytes;
      },
    });
  });
  after(async () => {
    await e?.stop();
  });

  test('a fast 32 MiB download completes intact; recorded + dropped = sent', async () => {
    const file = e.dir.join('download.bin');
    const data = randomBytes(32 * 1024 * 1024);
    writeFileSync(file, data);
    const known = recordingIds(e);
    const res = await ssh(e, e.user, [`cat ${file}`], { timeoutMs: 120_000 });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.length, data.length);
    assert.equal(sha256(res.stdout), sha256(data));
    const r = await finishedRecording(e, 'exec', known, (x) => x.command === `cat ${file}`);
    assert.ok(r.dropped.output > 0, `dropped ${JSON.stringify(r.dropped)}`);
    assert.equal(r.bytes.output + r.dropped.output, data.length, JSON.stringify(r));
    const cast = readCast(fileOf(e, r, 'cast'));
    assert.ok(
      cast.events.some((ev) => ev[1] === 'm' && /bytes not recorded/.test(ev[2])),
      'gaps are marked in the cast',
    );
    assert.equal(
      await metric(e, 'sshproxy_recording_dropped_bytes_total', { kind: 'exec' }),
      r.dropped.output,
    );
    assert.ok((await metric(e, 'sshproxy_recording_drops_total', { kind: 'exec', reason: 'overflow' })) >= 1);
  });
});
