// Schema validation with readable messages, unknown-key warnings, and the reference's defaults and
// cross-key rules (reference-behaviour.md §2.1 step 4 and §2.3) with their exact messages.
import { z } from 'zod';
import {
  configSchema,
  DEFAULT_RECORDING_BUFFER_BYTES,
  DEFAULT_SFTP_BINARY,
  type Config,
  type RecordingStreamName,
} from './schema.js';
import { show } from './primitives.js';
import { YamlLiteral } from './yaml.js';

/** A validation failure; `wrap` tells the loader to prefix "failed to load configuration from …". */
export class ConfigValidationError extends Error {
  override name = 'ConfigValidationError';
  constructor(
    message: string,
    readonly wrap: boolean,
  ) {
    super(message);
  }
}

const EXPECTED: Record<string, string> = {
  number: 'a number',
  int: 'an integer',
  boolean: 'a boolean (true or false)',
  string: 'a string',
  object: 'a mapping',
  array: 'a list',
};

function issueMessage(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type':
      return `expected ${EXPECTED[iss.expected] ?? iss.expected}, got ${show(iss.input)}`;
    case 'too_small':
      return `must be ${iss.inclusive ? 'at least' : 'greater than'} ${String(iss.minimum)}, got ${show(iss.input)}`;
    case 'too_big':
      return `must be ${iss.inclusive ? 'at most' : 'less than'} ${String(iss.maximum)}, got ${show(iss.input)}`;
    default:
      return undefined;
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out || '(top level)';
}

/** Runs the schema; throws ConfigValidationError naming every offending key path. */
export function decodeConfig(data: unknown): Config {
  if (data === null || typeof data !== 'object' || Array.isArray(data) || data instanceof YamlLiteral) {
    throw new ConfigValidationError(`expected a mapping at the top level, got ${show(data)}`, true);
  }
  const r = configSchema.safeParse(data, { error: issueMessage });
  if (!r.success) {
    const msgs = r.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new ConfigValidationError(msgs.join('; '), true);
  }
  return r.data;
}

// --- unknown keys ---

/** The object shape or array element a schema describes, looking through wrappers. */
export function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let s = schema;
  for (let i = 0; i < 10; i++) {
    if (s instanceof z.ZodPipe) s = s.out;
    else if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional) {
      s = s.unwrap();
    } else break;
  }
  return s;
}

function collectUnknown(schema: z.core.$ZodType, data: unknown, path: string, out: string[]): void {
  const s = unwrap(schema);
  if (data instanceof YamlLiteral) return;
  if (s instanceof z.ZodObject && data !== null && typeof data === 'object' && !Array.isArray(data)) {
    const shape = s.shape as Record<string, z.core.$ZodType>;
    for (const [key, value] of Object.entries(data)) {
      const child = path ? `${path}.${key}` : key;
      const sub = Object.prototype.hasOwnProperty.call(shape, key) ? shape[key] : undefined;
      if (sub === undefined) out.push(`unknown key '${child}' (ignored)`);
      else collectUnknown(sub, value, child, out);
    }
  } else if (s instanceof z.ZodArray && Array.isArray(data)) {
    data.forEach((item, i) => collectUnknown(s.element, item, `${path}[${i}]`, out));
  }
}

/** Keys the schema does not know: reported, never fatal (the reference ignores them silently). */
export function unknownKeys(data: unknown): string[] {
  const out: string[] = [];
  collectUnknown(configSchema, data, '', out);
  return out;
}

// --- reference defaults and rules ---

const STREAMS: readonly RecordingStreamName[] = ['shell', 'exec', 'sftp', 'directTCPIP'];
const FORMATS = new Set(['', 'asciinema', 'pcapng', 'none']);

function recordingError(cfg: Config): string | undefined {
  const rec = cfg.server.recording;
  for (const name of STREAMS) {
    const st = rec[name];
    if (!FORMATS.has(st.format)) {
      return `recording.${name}.format: unknown format ${JSON.stringify(st.format)} (want asciinema, pcapng or none)`;
    }
    if (st.vscode !== undefined && name !== 'directTCPIP') {
      return `recording.${name}.vscode: VS Code options are only valid for directTCPIP`;
    }
    if (st.format === 'none' && (name !== 'directTCPIP' || st.vscode?.terminals !== true)) {
      return `recording.${name}.format: none is only valid for directTCPIP with vscode.terminals enabled`;
    }
  }
  if (rec.bufferBytes < 0) return 'recording.bufferBytes must not be negative';
  return undefined;
}

/** Applies the reference's zero-value defaults and checks; mutates and returns `cfg`. */
export function applyDefaults(cfg: Config): Config {
  const s = cfg.server;
  if (s.SSHHandshakeTimeout === 0) s.SSHHandshakeTimeout = 30;
  if (s.maxDirectTCPIPConnections === 0) s.maxDirectTCPIPConnections = 15;
  if (s.sftpBinary === '') s.sftpBinary = DEFAULT_SFTP_BINARY;
  if (s.port === 0)
    throw new ConfigValidationError('missing required configuration values: port must be set', false);

  // The reference's temporary default (a TODO there): with a session service, VS Code terminal
  // extraction is on unless configured. Applied before validation, so `none` may rely on it.
  if (cfg.session.address !== '') {
    const dt = s.recording.directTCPIP;
    dt.vscode = {
      terminals: dt.vscode?.terminals ?? true,
      recordInput: dt.vscode?.recordInput ?? true,
    };
  }
  const bad = recordingError(cfg);
  if (bad) throw new ConfigValidationError(`invalid server configuration: ${bad}`, false);
  if (s.recording.bufferBytes === 0) s.recording.bufferBytes = DEFAULT_RECORDING_BUFFER_BYTES;

  if (cfg.nats.maxReconnects <= 0) cfg.nats.maxReconnects = -1;
  if (cfg.nats.reconnectWait === 0) cfg.nats.reconnectWait = 2;
  return cfg;
}
