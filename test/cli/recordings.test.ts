// `ssh-proxy recordings list|play|export` on a store written by the real local session service.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { createSessionClient } from '../../src/backends/session.js';
import { createRecorders } from '../../src/gateway/recorder.js';
import type { ChannelTap } from '../../src/gateway/tap.js';
import { applyDefaults, decodeConfig } from '../../src/config/validate.js';
import { startLocalSessionService } from '../../src/local/sessions/service.js';
import { runRecordingsCli } from '../../src/cli/recordings.js';
import { parseArgs } from '../../src/cli/args.js';
import { tempDirFor } from '../helpers/tmp.js';
import { context, fakeJwt, ManualClock } from '../session/helpers.js';

const run = promisify(execFile);
const quiet = pino({ level: 'silent' });
const REPO = new URL('../..', import.meta.url).pathname;

async function cli(argv: string[]): Promise<{ code: number; out: Buffer; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (d: Buffer) => out.push(d));
  stderr.on('data', (d: Buffer) => err.push(d));
  const code = await runRecordingsCli(argv, { stdout, stderr });
  return { code, out: Buffer.concat(out), err: Buffer.concat(err).toString() };
}

describe('ssh-proxy recordings', () => {
  const tmp = tempDirFor(after, 'ssh-proxy-reccli-');
  const dataDir = tmp.join('data');
  const shellOut = Buffer.from('\x1b[32mgreen\x1b[0m ünïcödé\r\n$ ');
  const ids = { shell: '', exec: '', tcpip: '' };

  before(async () => {
    const svc = await startLocalSessionService({ dataDir, logger: quiet });
    const client = createSessionClient({ address: svc.address });
    try {
      const c = applyDefaults(
        decodeConfig({
          server: { port: 1, recording: { exec: { gzip: true }, recordDirectTCPIP: true } },
          session: { address: svc.address },
        }),
      );
      const clock = new ManualClock();
      const rec = createRecorders({
        client,
        decision: { recording: c.server.recording, sessionAddress: c.session.address },
        bufferBytes: 1 << 20,
        failPolicy: 'closed',
        log: quiet,
        clock,
      });
      const sh = context('shell', { userToken: () => Promise.resolve(fakeJwt({ sub: 'carol' })) });
      const t1 = (await rec.open(sh)) as ChannelTap;
      t1.data('out', shellOut.subarray(0, 9));
      clock.advance(3000); // a 3 s pause: --idle-limit caps it
      t1.data('out', shellOut.subarray(9));
      clock.advance(100);
      await t1.close();
      const ex = context('exec', {
        command: 'date',
        userToken: () => Promise.resolve(fakeJwt({ sub: 'dave' })),
      });
      const t2 = (await rec.open(ex)) as ChannelTap;
      t2.data('out', Buffer.from('Thu Jan  1\n'));
      await t2.close();
      const pf = context('tcpip', {
        obligation: undefined,
        tcpip: { srcHost: '127.0.0.1', srcPort: 9, dstHost: 'db', dstPort: 5432 },
      });
      const t3 = (await rec.open(pf)) as ChannelTap;
      t3.data('in', Buffer.from('ping'));
      await t3.close();
      ids.shell = sh.channelId;
      ids.exec = ex.channelId;
      ids.tcpip = pf.channelId;
    } finally {
      client.close();
      await svc.close();
    }
  });

  test('list: all, filtered, JSON', async () => {
    const all = await cli(['list', '--data-dir', dataDir]);
    assert.equal(all.code, 0, all.err);
    const lines = all.out.toString().trim().split('\n');
    assert.match(lines[0] ?? '', /^ID\s+KIND\s+USER/);
    assert.equal(lines.length, 4);
    assert.ok(lines.some((l) => l.startsWith(ids.tcpip) && l.includes('db:5432')));
    const carol = await cli(['list', '--data-dir', dataDir, '--user', 'carol']);
    assert.equal(carol.out.toString().trim().split('\n').length, 2);
    const json = await cli(['list', '--data-dir', dataDir, '--kind', 'exec', '--json']);
    const rows = json.out
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; command: string });
    assert.deepEqual(
      rows.map((r) => [r.id, r.command]),
      [[ids.exec, 'date']],
    );
    assert.equal(
      (await cli(['list', '--data-dir', dataDir, '--since', '2999-01-01'])).out.toString().trim().split('\n')
        .length,
      1,
    );
    assert.equal((await cli(['list', '--data-dir', dataDir, '--kind', 'video'])).code, 2);
    assert.equal((await cli(['list', '--data-dir', tmp.join('nothing-here')])).code, 1);
  });

  test('play: the recorded output, exactly; a unique part of the id is enough', async () => {
    const r = await cli(['play', ids.shell.slice(-12), '--data-dir', dataDir, '--speed', '50']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out, shellOut);
    const gz = await cli(['play', ids.exec, '--data-dir', dataDir, '--speed', '100']);
    assert.equal(gz.out.toString(), 'Thu Jan  1\n');
    const pcap = await cli(['play', ids.tcpip, '--data-dir', dataDir]);
    assert.equal(pcap.code, 1);
    assert.match(pcap.err, /only shell and exec recordings play/);
    const ambiguous = await cli(['play', '-', '--data-dir', dataDir]);
    assert.equal(ambiguous.code, 1);
    assert.match(ambiguous.err, /matches 3 recordings/);
  });

  test('export: the main file (gzip undone) or a chosen one, to stdout or a file', async () => {
    const cast = await cli(['export', ids.exec, '--data-dir', dataDir]);
    assert.equal(cast.code, 0, cast.err);
    assert.equal(JSON.parse(cast.out.toString().split('\n')[0] as string).command, 'date');
    const dest = tmp.join('out.pcapng');
    const p = await cli(['export', ids.tcpip, '--data-dir', dataDir, '--out', dest]);
    assert.equal(p.code, 0, p.err);
    assert.equal(readFileSync(dest).readUInt32LE(0), 0x0a0d0d0a);
    const again = await cli(['export', ids.tcpip, '--data-dir', dataDir, '--out', dest]);
    assert.equal(again.code, 1, 'an existing file is not overwritten');
    const none = await cli(['export', ids.shell, '--data-dir', dataDir, '--file', 'pcapng']);
    assert.equal(none.code, 1);
    assert.match(none.err, /has no pcapng file/);
  });

  test('through the ssh-proxy binary; the reference flags are untouched', async () => {
    assert.deepEqual(parseArgs(['recordings', 'list']), { kind: 'recordings', argv: ['list'] });
    assert.equal(parseArgs(['--config', 'x', 'recordings']).kind, 'exit', 'only as the first word');
    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/cli/ssh-proxy.ts',
        'recordings',
        'play',
        ids.shell,
        '--data-dir',
        dataDir,
        '--speed',
        '100',
      ],
      { cwd: REPO, encoding: 'buffer', timeout: 60_000 },
    );
    assert.deepEqual(stdout, shellOut);
    const usage = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/ssh-proxy.ts', 'recordings', '-h'],
      {
        cwd: REPO,
        timeout: 60_000,
      },
    );
    assert.match(usage.stderr, /ssh-proxy recordings <command>/);
  });
});
