// The production bundle (scripts/bundle.mjs, `make bundle`, the Dockerfile's last build step): built into a
// temp dir from the current dist/ and node_modules, then run the way an operator runs it on a machine with
// only Node 20: minimal environment (PATH=/usr/bin:/bin, HOME and cwd a temp dir), no checkout around it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEADLINE_MS = 120_000;

let tmp: TempDir;
let bundle = '';
let env: NodeJS.ProcessEnv = {};
let work = '';

function run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, args, {
    cwd: opts.cwd ?? work,
    env: opts.env ?? env,
    encoding: 'utf8',
    timeout: DEADLINE_MS,
  });
}

const builtInfo = (): { version: string; commit: string } =>
  JSON.parse(readFileSync(join(ROOT, 'dist', 'build-info.json'), 'utf8')) as {
    version: string;
    commit: string;
  };

describe('production bundle', () => {
  before(() => {
    if (
      !existsSync(join(ROOT, 'dist', 'cli', 'ssh-proxy.js')) ||
      !existsSync(join(ROOT, 'dist', 'build-info.json'))
    )
      throw new Error('dist/ is not built: run "npm run build" first (npm test does)');
    tmp = makeTempDir('ssh-proxy-bundle-');
    bundle = tmp.join('opt', 'ssh-proxy');
    work = tmp.join('work');
    mkdirSync(work);
    mkdirSync(tmp.join('home'));
    env = { PATH: '/usr/bin:/bin', HOME: tmp.join('home') };
    // The launcher's #! names this node: a clean Debian's would be /usr/bin/node. No --tar: gzip of
    // ~60 MB is CPU the suite does not need (make bundle exercises it).
    const r = spawnSync(
      process.execPath,
      ['scripts/bundle.mjs', '--out', bundle, '--node', process.execPath],
      { cwd: ROOT, encoding: 'utf8', timeout: DEADLINE_MS },
    );
    assert.equal(r.status, 0, `bundle.mjs failed:\n${r.stdout}\n${r.stderr}`);
  });
  after(() => tmp?.cleanup());

  test('has the documented layout', () => {
    for (const f of [
      'ssh-proxy',
      'package.json',
      'dist/cli/ssh-proxy.js',
      'dist/cli/agent.js',
      'dist/cli/healthcheck.js',
      'dist/build-info.json',
      'config/config.yaml',
      'scripts/check-native.mjs',
      'LICENSE',
      'THIRD-PARTY-NOTICES.md',
      'README.md',
    ])
      assert.ok(existsSync(join(bundle, f)), f);
    const pkg = JSON.parse(readFileSync(join(bundle, 'package.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(pkg.type, 'module');
    assert.equal(pkg.scripts, undefined, 'no npm scripts in the runtime manifest');
    assert.equal(pkg.devDependencies, undefined);
    assert.match(
      readFileSync(join(bundle, 'THIRD-PARTY-NOTICES.md'), 'utf8'),
      /\| ssh2 \| 1\.17\.0 \| MIT \|/,
    );
  });

  test('-v prints the version and commit injected at build time', () => {
    const info = builtInfo();
    const r = run([join(bundle, 'dist', 'cli', 'ssh-proxy.js'), '-v']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `ssh-proxy version: ${info.version} (commit: ${info.commit})\n`);
  });

  test('-v reads the build info of the bundle, not git (a re-stamped bundle reports the new values)', () => {
    const file = join(bundle, 'dist', 'build-info.json');
    const original = readFileSync(file, 'utf8');
    try {
      writeFileSync(file, JSON.stringify({ version: 'v9.8.7-delivery', commit: 'abc1234' }));
      const r = run([join(bundle, 'dist', 'cli', 'ssh-proxy.js'), '-v']);
      assert.equal(r.stdout, 'ssh-proxy version: v9.8.7-delivery (commit: abc1234)\n');
    } finally {
      writeFileSync(file, original);
    }
  });

  test('-h prints the usage on stderr; the ./ssh-proxy launcher runs the same CLI', () => {
    const h = run([join(bundle, 'dist', 'cli', 'ssh-proxy.js'), '-h']);
    assert.equal(h.status, 0);
    assert.match(h.stderr, /--config <path>/);
    const launcher = spawnSync(join(bundle, 'ssh-proxy'), ['-v'], { cwd: work, env, encoding: 'utf8' });
    assert.equal(launcher.status, 0, launcher.stderr);
    assert.equal(
      launcher.stdout,
      `ssh-proxy version: ${builtInfo().version} (commit: ${builtInfo().commit})\n`,
    );
  });

  test("ssh2's native crypto binding and node-pty load from the bundle", () => {
    const probe = `
      import { createRequire } from 'node:module';
      const require = createRequire(${JSON.stringify(join(bundle, 'package.json'))});
      const crypto = require('ssh2/lib/protocol/crypto.js');
      require('node-pty');
      const natives = Object.keys(require.cache).filter((f) => f.endsWith('.node'));
      console.log(JSON.stringify({ binding: crypto.bindingAvailable, natives }));`;
    const r = run(['--input-type=module', '-e', probe]);
    assert.equal(r.status, 0, r.stderr);
    const { binding, natives } = JSON.parse(r.stdout) as { binding: boolean; natives: string[] };
    assert.equal(binding, true, 'ssh2 crypto binding available');
    assert.ok(
      natives.some((f) => f.endsWith('sshcrypto.node')),
      natives.join(),
    );
    assert.ok(
      natives.some((f) => f.endsWith('pty.node')),
      natives.join(),
    );
    for (const f of natives) assert.ok(f.startsWith(bundle), `${f} is loaded from outside the bundle`);
    const check = run([join(bundle, 'scripts', 'check-native.mjs')]);
    assert.equal(check.status, 0, check.stderr);
  });

  test('ships the patched dependencies (patches/ applied)', () => {
    const patched = readdirSync(join(bundle, 'node_modules', 'ssh2', 'lib'), { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.js'))
      .some((f) =>
        readFileSync(join(bundle, 'node_modules', 'ssh2', 'lib', f), 'utf8').includes('ssh-proxy patch:'),
      );
    assert.ok(patched, 'no "ssh-proxy patch:" marker in the bundled ssh2');
  });

  test('holds production dependencies only, and every package the code imports', () => {
    for (const dev of ['typescript', 'eslint', 'tsx', 'prettier', 'playwright-core', 'fast-check', 'ajv'])
      assert.ok(!existsSync(join(bundle, 'node_modules', dev)), `dev dependency ${dev} is bundled`);
    const builtins = new Set(builtinModules);
    const missing = new Set<string>();
    const files = readdirSync(join(bundle, 'dist'), { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.js'));
    for (const f of files) {
      const text = readFileSync(join(bundle, 'dist', f), 'utf8');
      for (const m of text.matchAll(/(?:from|import\()\s*'([@a-z0-9][\w./@-]*)'/g)) {
        const spec = m[1] ?? '';
        if (spec.startsWith('node:') || builtins.has(spec)) continue;
        const name = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : (spec.split('/')[0] ?? spec);
        if (!existsSync(join(bundle, 'node_modules', name, 'package.json'))) missing.add(`${name} (${f})`);
      }
    }
    assert.ok(files.length > 50, `expected the compiled tree, found ${files.length} files`);
    assert.deepEqual([...missing], []);
  });

  test('starts with the sample config and fails cleanly on the unreachable services (scripts/smoke.mjs)', () => {
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, 'scripts', 'smoke.mjs'),
        '--entry',
        join(bundle, 'dist', 'cli', 'ssh-proxy.js'),
        '--config',
        join(bundle, 'config', 'config.yaml'),
      ],
      { cwd: work, env, encoding: 'utf8', timeout: 4 * DEADLINE_MS },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^smoke: passed$/m);
  });
});

describe('bundle.mjs arguments', () => {
  test('refuses an unknown dependency mode and a dangerous output directory', () => {
    const deps = spawnSync(process.execPath, ['scripts/bundle.mjs', '--deps', 'yolo'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(deps.status, 1);
    assert.match(deps.stderr, /--deps must be copy or install/);
    const out = spawnSync(process.execPath, ['scripts/bundle.mjs', '--out', ROOT], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(out.status, 1);
    assert.match(out.stderr, /refusing to use .* as the output directory/);
  });
});
