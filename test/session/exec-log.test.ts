// Exec command lines in the gateway's logs (config `log.commands`): by default only the program name
// and the length reach info level, because command lines carry passwords; `full` logs them whole.
// Unit cases for the program name and the config key, then the production entry with the real
// OpenSSH client, reading the gateway's own log lines for a `mysql -p<secret>` command.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeConfig } from '../../src/config/validate.js';
import { programName } from '../../src/gateway/exec-log.js';
import {
  freePort,
  GatewayProcess,
  killAll,
  ssh,
  startServices,
  writeConfig,
  type ProdServices,
} from '../e2e/prod/harness.js';

describe('exec command logging: program name and config key', () => {
  it('the program is the first word after leading NAME=value assignments, never an argument', () => {
    assert.equal(programName('mysql -psecret'), 'mysql');
    assert.equal(programName('  /usr/bin/mysql --password=x'), '/usr/bin/mysql');
    assert.equal(programName('MYSQL_PWD=secret TOKEN=t mysql -e "select 1"'), 'mysql');
    assert.equal(programName('A=1'), '');
    assert.equal(programName(''), '');
    // Not an assignment: `=` inside an option or a name that is not a POSIX name.
    assert.equal(programName('--opt=x cmd'), '--opt=x');
    assert.equal(programName('1A=x cmd'), '1A=x');
    assert.equal(programName('x'.repeat(100)), 'x'.repeat(64));
  });

  it('log.commands is summary by default, full when set, and refuses anything else', () => {
    assert.equal(decodeConfig({}).log.commands, 'summary');
    assert.equal(decodeConfig({ log: { commands: 'full' } }).log.commands, 'full');
    assert.equal(decodeConfig({ log: { commands: null } }).log.commands, 'summary');
    assert.throws(
      () => decodeConfig({ log: { commands: 'verbose' } }),
      /log\.commands: expected "summary" or "full", got/,
    );
  });
});

describe(
  'exec command logging: the gateway log lines of `ssh host mysql -p<secret>`',
  { timeout: 300_000 },
  () => {
    let s: ProdServices;
    const gateways: GatewayProcess[] = [];
    const SECRET = `s3cret-${process.pid}`;

    before(async () => {
      s = await startServices();
    });
    after(async () => {
      for (const g of gateways) await g.stop();
      killAll();
      await s?.stop();
    });

    /** Everything the gateway wrote: its JSON lines, other stdout and stderr. */
    const output = (g: GatewayProcess): string =>
      [...g.lines.map((l) => JSON.stringify(l)), ...g.other, g.stderr].join('\n');

    for (const mode of ['summary', 'full'] as const) {
      it(`log.commands: ${mode}`, async () => {
        const config = s.config(await freePort(), mode === 'full' ? { log: { commands: 'full' } } : {});
        const g = await GatewayProcess.start(writeConfig(s.dir, `gateway-${mode}.yaml`, config), {
          LOG_LEVEL: 'info',
        });
        gateways.push(g);
        const command = `MYSQL_PWD=${SECRET}-env mysql -p${SECRET}-arg -e 'select 1'`;
        const r = await ssh(s, g.port, s.user, [command]);
        // No mysql in the workspace: the shell says so. The point is what the gateway logged.
        assert.equal(r.code, 127, r.stderr);
        const line = await g.waitLog((l) => l.msg === 'exec requested', 'the exec requested line');
        assert.equal(line.program, 'mysql');
        assert.equal(line.length, Buffer.byteLength(command));
        await g.waitLog((l) => l.msg === 'exec ended', 'the exec ended line');
        if (mode === 'summary') {
          assert.equal(line.command, undefined);
          assert.ok(!output(g).includes(SECRET), `the secret is in the gateway's output:\n${g.tail(30)}`);
        } else {
          assert.equal(line.command, command);
        }
      });
    }
  },
);
