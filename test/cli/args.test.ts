import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseArgs, USAGE } from '../../src/cli/args.js';
import { COMMIT, VERSION } from '../../src/ops/version.js';

describe('ssh-proxy flags', () => {
  it('defaults', () => {
    assert.deepEqual(parseArgs([]), {
      kind: 'run',
      configPath: 'config/config.yaml',
      logtext: false,
      child: false,
    });
  });

  it('accepts -x, --x, separate and inline values', () => {
    for (const argv of [
      ['--config', '/c.yaml', '--logtext'],
      ['-config', '/c.yaml', '-logtext'],
      ['--config=/c.yaml', '-logtext=true'],
      ['-config=/c.yaml', '--logtext=1'],
    ]) {
      assert.deepEqual(
        parseArgs(argv),
        { kind: 'run', configPath: '/c.yaml', logtext: true, child: false },
        argv.join(' '),
      );
    }
    assert.deepEqual(parseArgs(['--child', '--logtext=false']), {
      kind: 'run',
      configPath: 'config/config.yaml',
      logtext: false,
      child: true,
    });
  });

  it('-v prints the version to stdout and exits 0', () => {
    const r = parseArgs(['-v']);
    assert.deepEqual(r, {
      kind: 'exit',
      code: 0,
      stdout: `ssh-proxy version: ${VERSION} (commit: ${COMMIT})\n`,
    });
    assert.equal(parseArgs(['--config', 'x', '--v']).kind, 'exit');
  });

  it('-h prints the usage to stderr and exits 0', () => {
    for (const flag of ['-h', '--h', '-help', '--help']) {
      assert.deepEqual(parseArgs([flag]), { kind: 'exit', code: 0, stderr: USAGE }, flag);
    }
    for (const f of ['--config', '--logtext', '-v']) assert.ok(USAGE.includes(f), f);
    assert.ok(!USAGE.includes('child'));
  });

  it('rejects unknown flags, missing values, bad booleans and stray arguments with exit 2', () => {
    const cases: [string[], RegExp][] = [
      [['--bogus'], /^flag provided but not defined: -bogus\n/],
      [['-v', '-x'], /^flag provided but not defined: -x\n/],
      [['--config'], /^flag needs an argument: -config\n/],
      [['--logtext=maybe'], /^invalid boolean value "maybe" for -logtext\n/],
      [['extra'], /^unexpected argument: extra\n/],
      [['---config', 'x'], /^bad flag syntax: ---config\n/],
    ];
    for (const [argv, re] of cases) {
      const r = parseArgs(argv);
      assert.equal(r.kind, 'exit', argv.join(' '));
      if (r.kind !== 'exit') continue;
      assert.equal(r.code, 2);
      assert.match(r.stderr ?? '', re);
      assert.ok(r.stderr?.endsWith(USAGE));
    }
  });
});
