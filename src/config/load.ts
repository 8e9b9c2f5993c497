// Configuration loading, compatible with the reference (reference-behaviour.md §2): YAML with `${NAME}`
// substitution and `!file`, schema validation, reference defaults. Unknown keys become warnings.
import { readFile } from 'node:fs/promises';
import { ProxyError } from '../common/errors.js';
import { parseYaml, YamlLoadError } from './yaml.js';
import { applyDefaults, ConfigValidationError, decodeConfig, unknownKeys } from './validate.js';
import type { Config } from './schema.js';

export type { Config, ClientConfig, RecordingStreamConfig, RecordingStreamName } from './schema.js';
export { KNOWN_CIPHERS, DEFAULT_CIPHERS } from './schema.js';

export const DEFAULT_CONFIG_PATH = 'config/config.yaml';

export interface LoadedConfig {
  config: Config;
  /** Non-fatal findings (unknown keys, YAML warnings), one sentence each, for the log. */
  warnings: string[];
}

export interface ParseOptions {
  /** The file the text came from: named in errors, and the base for relative `!file` paths. */
  file: string;
  env?: NodeJS.ProcessEnv;
}

function loadFailure(file: string, detail: string, cause?: unknown): ProxyError {
  return new ProxyError('bad_config', `failed to load configuration from '${file}': ${detail}`, { cause });
}

/** Parses and validates config YAML held in memory. Throws ProxyError('bad_config'). */
export function parseConfig(yamlText: string, opts: ParseOptions): LoadedConfig {
  const env = opts.env ?? process.env;
  try {
    const { data, warnings } = parseYaml(yamlText, opts.file, env);
    const config = applyDefaults(decodeConfig(data));
    return { config, warnings: [...warnings, ...unknownKeys(data)] };
  } catch (err) {
    if (err instanceof YamlLoadError) throw loadFailure(opts.file, err.message, err);
    if (err instanceof ConfigValidationError) {
      throw err.wrap ? loadFailure(opts.file, err.message, err) : new ProxyError('bad_config', err.message);
    }
    throw err;
  }
}

/** Reads, parses and validates the config file at `path`. Throws ProxyError('bad_config'). */
export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw loadFailure(path, err instanceof Error ? err.message : String(err), err);
  }
  return parseConfig(text, { file: path, env });
}
