// SSH host keys: load and validate before ssh2 sees them (reference-behaviour.md §2.1 step 5).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

import ssh2, { type ParsedKey } from 'ssh2';

import { ProxyError } from '../common/errors.js';
import { errText } from '../ops/log.js';

export interface HostKeys {
  /** File contents, in the order given; pass as ssh2's `hostKeys`. */
  keys: Buffer[];
  /** Key type of each entry (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, …). */
  types: string[];
}

export function loadHostKeys(paths: string | string[]): HostKeys {
  const list = (Array.isArray(paths) ? paths : [paths]).filter((p) => p.trim() !== '');
  if (list.length === 0) throw new ProxyError('bad_config', 'server key path not configured');

  const keys: Buffer[] = [];
  const types: string[] = [];
  const fileOfType = new Map<string, string>();
  for (const path of list) {
    let data: Buffer;
    try {
      data = readFileSync(path);
    } catch (err) {
      throw new ProxyError('bad_config', `failed to read host key file '${path}': ${errText(err)}`, {
        cause: err,
      });
    }
    const type = parsePrivateKeyType(data, path);
    const other = fileOfType.get(type);
    if (other !== undefined) {
      // ssh2 keeps one key per type and silently drops the others.
      throw new ProxyError(
        'bad_config',
        `host keys '${other}' and '${path}' are both of type ${type}; only one key per type is allowed`,
      );
    }
    fileOfType.set(type, path);
    keys.push(data);
    types.push(type);
  }
  return { keys, types };
}

function parsePrivateKeyType(data: Buffer, path: string): string {
  const fail = (detail: string): never => {
    throw new ProxyError('bad_config', `failed to parse host key from '${path}': ${detail}`);
  };
  let parsed: ParsedKey | ParsedKey[] | Error;
  try {
    // ssh2's typings omit that an OpenSSH-format file yields an array (one entry per key in the file).
    parsed = ssh2.utils.parseKey(data) as ParsedKey | ParsedKey[] | Error;
  } catch (err) {
    return fail(errText(err));
  }
  if (parsed instanceof Error) return fail(parsed.message);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key === undefined) return fail('no key in file');
  if (!key.isPrivateKey() || key.getPrivatePEM() === null) return fail('not a private key');
  return key.type;
}

/** Creates an unencrypted ed25519 host key at `path` unless a file already exists there. */
export function generateHostKey(path: string): void {
  if (existsSync(path)) return;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ssh-proxy host key', '-f', path], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 30_000,
    });
  } catch (err) {
    throw new ProxyError('failed', `failed to generate host key '${path}': ${errText(err)}`, { cause: err });
  }
}
