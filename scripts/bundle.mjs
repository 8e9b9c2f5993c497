#!/usr/bin/env node
// Assembles the self-contained production bundle (the `vendor` equivalent, docs/deploying.md): compiled
// JavaScript, production node_modules (native modules built, patches/ applied), the sample config, the
// licences and an operator README. The one script behind `make bundle`, the Dockerfile and
// test/delivery/bundle.test.ts, so what the tests run is what the image runs.
//
//   node scripts/bundle.mjs [--out DIR] [--deps copy|install] [--node PATH] [--tar FILE]
//
// Needs a fresh `npm run build` (dist/ with build-info.json) and, for --deps copy (the default), an
// installed node_modules (`npm ci`: native modules compiled for this machine's libc, patches applied
// by postinstall). --deps copy takes exactly the packages `npm ls --omit=dev` lists from it: fast, and
// the very files the test suite ran against. --deps install runs `npm ci --omit=dev` inside the bundle
// instead (needs the registry or a warm npm cache, python3, make and g++; slower).
// --node sets the interpreter of the `ssh-proxy` launcher's #! line (default: /usr/bin/env node).
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(new URL('..', import.meta.url).pathname);

function fail(message) {
  console.error(`bundle: ${message}`);
  process.exit(1);
}

const { values: opts } = parseArgs({
  options: {
    out: { type: 'string', default: join(ROOT, 'build', 'ssh-proxy') },
    deps: { type: 'string', default: 'copy' },
    node: { type: 'string', default: '/usr/bin/env node' },
    tar: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});
if (opts.help) {
  console.log(
    readFileSync(new URL(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 16)
      .join('\n'),
  );
  process.exit(0);
}
if (opts.deps !== 'copy' && opts.deps !== 'install')
  fail(`--deps must be copy or install, got "${opts.deps}"`);
// An absolute interpreter path and at most one argument, nothing a #! line could misread.
const shebang = opts.node.split(' ');
if (!shebang[0].startsWith('/') || shebang.length > 2 || !shebang.every((w) => /^[\w./+-]+$/.test(w)))
  fail(`--node must be an absolute path (and at most one argument), got "${opts.node}"`);

const out = resolve(opts.out);
// The output is wiped first: refuse anything that could be the checkout or a system directory.
if (out === ROOT || ROOT.startsWith(out + sep) || out.split(sep).length < 3)
  fail(`refusing to use ${out} as the output directory`);

const dist = join(ROOT, 'dist');
for (const f of ['cli/ssh-proxy.js', 'build-info.json'])
  if (!existsSync(join(dist, f))) fail(`dist/${f} is missing: run "npm run build" first`);

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const buildInfo = JSON.parse(readFileSync(join(dist, 'build-info.json'), 'utf8'));

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// 1. Compiled JavaScript. Source maps point into src/, which is not shipped.
cpSync(dist, join(out, 'dist'), { recursive: true, filter: (src) => !src.endsWith('.map') });

// 2. package.json for the bundle: what Node needs ("type": "module") and what an operator wants to read.
const runtimePkg = {
  name: pkg.name,
  version: pkg.version,
  description: pkg.description,
  license: pkg.license,
  private: true,
  type: pkg.type,
  engines: pkg.engines,
  bin: pkg.bin,
  dependencies: pkg.dependencies,
  buildInfo,
};

// 3. Production dependencies.
const modulesOut = join(out, 'node_modules');
if (opts.deps === 'copy') {
  copyProductionModules(modulesOut);
} else {
  // npm ci needs the full manifest (postinstall runs patch-package, allowScripts lets the native builds run).
  for (const f of ['package.json', 'package-lock.json', '.npmrc']) cpSync(join(ROOT, f), join(out, f));
  cpSync(join(ROOT, 'patches'), join(out, 'patches'), { recursive: true });
  execFileSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: out, stdio: 'inherit' });
  // Same layout as --deps copy: the patches are applied, the lockfile served its purpose.
  for (const f of ['package-lock.json', '.npmrc', 'patches']) rmSync(join(out, f), { recursive: true });
}
pruneModules(modulesOut);
writeFileSync(join(out, 'package.json'), `${JSON.stringify(runtimePkg, null, 2)}\n`);

// 4. Sample configuration, operator tools, licences, README.
mkdirSync(join(out, 'config'));
cpSync(join(ROOT, 'config', 'config.yaml'), join(out, 'config', 'config.yaml'));
mkdirSync(join(out, 'scripts'));
cpSync(join(ROOT, 'scripts', 'check-native.mjs'), join(out, 'scripts', 'check-native.mjs'));
cpSync(join(ROOT, 'LICENSE'), join(out, 'LICENSE'));
cpSync(join(ROOT, 'deploy', 'bundle', 'README.md'), join(out, 'README.md'));
writeFileSync(join(out, 'THIRD-PARTY-NOTICES.md'), thirdPartyNotices(modulesOut));

// 5. `./ssh-proxy`, as in the reference image (its chart runs `./ssh-proxy --config config/config.yaml`).
// A #! script needs no shell, so it also works in the distroless image.
const launcher = join(out, 'ssh-proxy');
writeFileSync(
  launcher,
  `#!${opts.node}\n` +
    `// Starts the gateway: ./ssh-proxy --config config/config.yaml (same as node dist/cli/ssh-proxy.js).\n` +
    `import('./dist/cli/ssh-proxy.js').catch((err) => {\n` +
    `  process.stderr.write(\`ssh-proxy: \${err instanceof Error ? err.message : String(err)}\\n\`);\n` +
    `  process.exit(1);\n` +
    `});\n`,
);
chmodSync(launcher, 0o755);

if (opts.tar) {
  const tarFile = resolve(opts.tar);
  mkdirSync(dirname(tarFile), { recursive: true });
  execFileSync('tar', ['-czf', tarFile, '-C', dirname(out), relative(dirname(out), out)], {
    stdio: 'inherit',
  });
  console.log(`bundle: wrote ${tarFile}`);
}
console.log(`bundle: ${out} (version ${buildInfo.version}, commit ${buildInfo.commit}, deps: ${opts.deps})`);

/** Copies every package `npm ls --omit=dev` lists, each without its nested node_modules (listed separately). */
function copyProductionModules(dest) {
  const listing = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  const source = join(ROOT, 'node_modules');
  const dirs = listing
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && l !== ROOT);
  if (dirs.length === 0) fail('npm ls listed no production packages: run "npm ci" first');
  for (const dir of dirs) {
    if (!isAbsolute(dir) || !dir.startsWith(source + sep))
      fail(`unexpected package path from npm ls: ${dir}`);
    if (!existsSync(join(dir, 'package.json')))
      fail(`${dir} is listed by npm ls but not installed: run "npm ci"`);
    const target = join(dest, relative(source, dir));
    const nested = join(dir, 'node_modules');
    cpSync(dir, target, {
      recursive: true,
      filter: (src) => src !== nested && !src.startsWith(nested + sep),
    });
  }
}

/** Drops what never runs here: build intermediates and prebuilt binaries for other platforms. */
function pruneModules(dir) {
  const platform = `${process.platform}-`;
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const p = join(d, entry.name);
      if (entry.name === 'obj.target' || entry.name === '.deps') {
        rmSync(p, { recursive: true, force: true });
      } else if (entry.name === 'prebuilds') {
        for (const target of readdirSync(p))
          if (!target.startsWith(platform)) rmSync(join(p, target), { recursive: true, force: true });
      } else if (entry.name !== '.bin') {
        walk(p);
      }
    }
  };
  walk(dir);
  rmSync(join(dir, '.bin'), { recursive: true, force: true });
  rmSync(join(dir, '.package-lock.json'), { force: true });
}

/** One line per bundled package: name, version, licence, and where its licence text is. */
function thirdPartyNotices(modules) {
  const rows = [];
  const visit = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
      const p = join(d, entry.name);
      if (entry.name.startsWith('@')) {
        visit(p);
        continue;
      }
      const manifest = join(p, 'package.json');
      if (existsSync(manifest)) {
        const m = JSON.parse(readFileSync(manifest, 'utf8'));
        const licenseFile = readdirSync(p).find((f) => /^(licen[cs]e|copying|notice)/i.test(f));
        // "license": "MIT" | {type} | the older "licenses": [{type}] (ssh2 still uses it).
        const license =
          typeof m.license === 'string'
            ? m.license
            : (m.license?.type ??
              (Array.isArray(m.licenses) ? m.licenses.map((l) => l.type ?? l).join(' OR ') : 'see package'));
        rows.push(
          `| ${m.name} | ${m.version} | ${license} | ${licenseFile ? relative(out, join(p, licenseFile)) : '(none shipped)'} |`,
        );
      }
      const nested = join(p, 'node_modules');
      if (existsSync(nested) && statSync(nested).isDirectory()) visit(nested);
    }
  };
  visit(modules);
  rows.sort();
  return (
    `# Third-party software in this bundle\n\n` +
    `ssh-proxy ${buildInfo.version} (${buildInfo.commit}) is licensed under ${pkg.license} (LICENSE). ` +
    `It ships these packages, each under its own licence:\n\n` +
    `| Package | Version | Licence | Licence text |\n|---|---|---|---|\n${rows.join('\n')}\n`
  );
}
