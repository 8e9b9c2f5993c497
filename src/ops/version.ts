// Build identity. VERSION/COMMIT may be injected through the environment at build or run time;
// otherwise the package version and the git revision of the checkout are used.
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ? `v${pkg.version}` : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short=7', 'HEAD'], {
      cwd: new URL('.', import.meta.url).pathname,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
  } catch {
    return '0000000';
  }
}

export const VERSION = process.env.SSH_PROXY_VERSION ?? packageVersion();
export const COMMIT = process.env.SSH_PROXY_COMMIT ?? gitCommit();
export const DESCRIPTION =
  'Terminates SSH for k8shell workspaces and proxies channel traffic to the in-workspace k8shelld daemon.';
