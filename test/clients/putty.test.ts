// PuTTY's command-line tools (Debian's putty-tools 0.78) with the user key converted by puttygen: plink
// exec with exit status, a PTY command with piped input and -nc (direct-tcpip); pscp over SFTP and SCP;
// psftp put/get. Every transfer is checked by SHA-256.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { run } from '../e2e/harness.js';
import {
  puttyArgs,
  randomPayload,
  sha256,
  sha256File,
  startClientsE2E,
  startEcho,
  type ClientsE2E,
  type EchoServer,
} from './harness.js';

let e: ClientsE2E;
let echo: EchoServer;
before(async () => {
  e = await startClientsE2E();
  echo = await startEcho();
});
after(async () => {
  await echo.close();
  await e.stop();
});

const dest = () => `${e.user}@127.0.0.1`;

describe('PuTTY tools', () => {
  test('plink exec: output and exit status', async () => {
    const r = await run('plink', ['-ssh', ...puttyArgs(e), dest(), 'echo out; echo err >&2; exit 4']);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(r.stdout.toString(), 'out\n');
    assert.match(r.stderr, /err/);
  });

  test('plink -t: a PTY command reads piped input and returns its status', async () => {
    const r = await run('plink', ['-ssh', '-t', ...puttyArgs(e), dest(), 'read x; echo "got-$x"; exit 6'], {
      input: 'abc\n',
    });
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stdout.toString(), /got-abc/);
  });

  test('plink -nc: direct-tcpip to a loopback service', async () => {
    const r = await run('plink', ['-ssh', ...puttyArgs(e), '-nc', `127.0.0.1:${echo.port}`, dest()], {
      input: 'through-the-forward\n',
    });
    assert.equal(r.stdout.toString(), 'through-the-forward\n', r.stderr);
  });

  test('pscp (SFTP and SCP) and psftp put/get keep every byte', async () => {
    const data = randomPayload(2 * 1024 * 1024 + 7);
    const src = e.dir.join('putty-src.bin');
    writeFileSync(src, data);
    for (const proto of ['-sftp', '-scp']) {
      const remote = `putty${proto}.bin`;
      const up = await run('pscp', [proto, ...puttyArgs(e), src, `${dest()}:${remote}`]);
      assert.equal(up.code, 0, up.stderr);
      const back = e.dir.join(`${remote}.back`);
      const down = await run('pscp', [proto, ...puttyArgs(e), `${dest()}:${remote}`, back]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(sha256File(back), sha256(data), proto);
    }
    const batch = e.dir.join('psftp.batch');
    const back = e.dir.join('psftp.back');
    writeFileSync(batch, `put ${src} psftp.bin\nget psftp.bin ${back}\n`);
    const r = await run('psftp', [...puttyArgs(e), '-b', batch, dest()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256File(back), sha256(data));
  });
});
