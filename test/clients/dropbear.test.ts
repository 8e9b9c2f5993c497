// dropbear's client (Debian's dropbear-bin 2022.83) with the user key converted by dropbearconvert. It
// sends its first key-exchange packet as a guess (RFC 4253 §7.1; ssh2 patch 011) and has no ETM MACs.
// exec with exit status, a PTY command driven through expect (dbclient needs a terminal for -t), a
// file round trip over exec (dropbear has no sftp client) and -B (netcat-like direct-tcpip).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { run } from '../e2e/harness.js';
import {
  dropbearArgs,
  randomPayload,
  sha256,
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

describe('dropbear dbclient', () => {
  test('exec: output and exit status (its guessed KEX_ECDH_INIT is used, not dropped)', async () => {
    const r = await run('dbclient', [...dropbearArgs(e), dest(), 'echo out; echo err >&2; exit 3'], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout.toString(), 'out\n');
    assert.match(r.stderr, /err/);
  });

  test('-t under expect: a PTY command reads typed input and returns its status', async () => {
    const script = e.dir.join('dbclient.exp');
    writeFileSync(
      script,
      [
        'set timeout 60',
        `spawn dbclient ${dropbearArgs(e).join(' ')} -t ${dest()} {read x; echo "got-$x"; exit 6}`,
        'send "abc\\r"',
        // Not `expect eof`: expect closes the terminal at eof, and dbclient closes its terminal fds
        // (channel removed) a moment before it exits with the status; under load the hang-up lands
        // in that moment, dbclient dies of SIGHUP and `wait` reports value 0 (CI once saw exit 0).
        // So: the remote output, then wait for dbclient with its terminal still open.
        'expect { "got-abc" {} timeout { exit 90 } eof { exit 91 } }',
        'set w [wait]',
        'if {[lindex $w 4] eq "CHILDKILLED"} { puts "dbclient killed: $w"; exit 92 }',
        'exit [lindex $w 3]',
        '',
      ].join('\n'),
    );
    const r = await run('expect', [script]);
    // On failure, say which side lost the status: the gateway's own account of the exec's end.
    const ended = () =>
      readFileSync(e.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"exec ended"'))
        .slice(-3)
        .join('\n');
    assert.equal(r.code, 6, `${r.stdout.toString()}\n${r.stderr}\ngateway: ${ended()}`);
    assert.match(r.stdout.toString(), /got-abc/);
  });

  test('a file up and down through exec keeps every byte', async () => {
    const data = randomPayload(1024 * 1024 + 5);
    const up = await run('dbclient', [...dropbearArgs(e), dest(), 'cat > dropbear.bin'], { input: data });
    assert.equal(up.code, 0, up.stderr);
    const down = await run('dbclient', [...dropbearArgs(e), dest(), 'cat dropbear.bin']);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(sha256(down.stdout), sha256(data));
  });

  test('-B: direct-tcpip to a loopback service', async () => {
    const r = await run('dbclient', [...dropbearArgs(e), '-B', `127.0.0.1:${echo.port}`, dest()], {
      input: 'through-the-forward\n',
    });
    assert.equal(r.stdout.toString(), 'through-the-forward\n', r.stderr);
  });
});
