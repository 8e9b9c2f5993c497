// Build identity, fixed at build time: `npm run build` (scripts/build-info.mjs) writes
// dist/build-info.json from `git describe` / `git rev-parse` or from SSH_PROXY_VERSION / SSH_PROXY_COMMIT,
// so nothing runs git at run time (an image has neither git nor a checkout). The same variables set at
// run time still win, for operators who re-tag a build. Unbuilt runs (tsx from src/) report the
// reference's defaults 0.0.0 / 0000000.
import { readFileSync } from 'node:fs';

export interface BuildInfo {
  version: string;
  commit: string;
}

export const DEFAULT_BUILD_INFO: BuildInfo = { version: '0.0.0', commit: '0000000' };

/** Reads a build-info.json; anything missing or malformed falls back to the defaults field by field. */
export function readBuildInfo(url: URL): BuildInfo {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(url, 'utf8'));
  } catch {
    return { ...DEFAULT_BUILD_INFO };
  }
  const field = (name: keyof BuildInfo): string => {
    const v = raw !== null && typeof raw === 'object' ? (raw as Record<string, unknown>)[name] : undefined;
    return typeof v === 'string' && v !== '' ? v : DEFAULT_BUILD_INFO[name];
  };
  return { version: field('version'), commit: field('commit') };
}

// dist/ops/version.js → dist/build-info.json (src/ops/version.ts → src/build-info.json, never present).
const built = readBuildInfo(new URL('../build-info.json', import.meta.url));

export const VERSION = process.env.SSH_PROXY_VERSION || built.version;
export const COMMIT = process.env.SSH_PROXY_COMMIT || built.commit;
export const DESCRIPTION =
  'Terminates SSH for k8shell workspaces and proxies channel traffic to the in-workspace k8shelld daemon.';

/** The SSH identification (`SSH-2.0-<this>`), as the reference: `ssh-proxy_<VERSION>/<COMMIT>_k8shell.io`. */
export function sshIdent(): string {
  return `ssh-proxy_${VERSION}/${COMMIT}_k8shell.io`;
}
