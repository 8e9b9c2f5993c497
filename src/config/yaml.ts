// YAML front end of the config loader: parses the text, resolves `!file`, substitutes `${NAME}` in every
// scalar (keys and values) and turns the node tree into plain data for schema validation.
// Substitution works on parsed scalars, never on the raw text, so an environment value cannot inject
// YAML structure.
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
  type Document,
  type Node,
  type ScalarTag,
} from 'yaml';

/** A number or boolean written literally in YAML; keeps its source text for string-typed keys. */
export class YamlLiteral {
  constructor(
    readonly value: number | boolean,
    readonly source: string,
  ) {}
}

/** An error of the YAML/substitution phase; the loader wraps it with the file name. */
export class YamlLoadError extends Error {
  override name = 'YamlLoadError';
}

const FILE_TAG = '!file';
const VAR_RE = /\$\{([^}]+)\}/g;
// Anchors and aliases could otherwise expand a small file into a huge tree ("billion laughs").
const MAX_DEPTH = 64;
const MAX_NODES = 100_000;

/** Replaces every `${NAME}` in `s`; an unset variable is an error naming it. No default syntax. */
export function substituteEnv(s: string, env: NodeJS.ProcessEnv): string {
  return s.replace(VAR_RE, (_m, name: string) => {
    const v = env[name];
    if (v === undefined) throw new YamlLoadError(`environment variable '${name}' not set`);
    return v;
  });
}

function fileTag(baseDir: string, env: NodeJS.ProcessEnv, failures: Error[]): ScalarTag {
  return {
    tag: FILE_TAG,
    resolve(value: string): string {
      try {
        // Custom tags resolve during parsing, before the substitution pass, so expand the path here.
        const path = resolvePath(baseDir, substituteEnv(value, env));
        try {
          return readFileSync(path, 'utf8').trim();
        } catch (err) {
          throw new YamlLoadError(
            `read !file '${path}': ${err instanceof Error ? err.message : String(err)}`,
          );
        }
      } catch (err) {
        failures.push(err instanceof Error ? err : new YamlLoadError(String(err)));
        return '';
      }
    },
  };
}

function firstLine(msg: string): string {
  return (msg.split('\n')[0] ?? msg).replace(/:\s*$/, '');
}

class Converter {
  private nodes = 0;

  constructor(
    private readonly doc: Document.Parsed,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  convert(node: unknown, depth: number): unknown {
    if (++this.nodes > MAX_NODES || depth > MAX_DEPTH) {
      throw new YamlLoadError('YAML document is too large or too deeply nested (aliases?)');
    }
    if (isAlias(node)) return this.convert(node.resolve(this.doc), depth + 1);
    if (isScalar(node)) {
      const v: unknown = node.value;
      // Content read through !file is data, not configuration text: never substitute inside it.
      if (node.tag === FILE_TAG) return v;
      if (typeof v === 'string') return substituteEnv(v, this.env);
      if (typeof v === 'number' || typeof v === 'boolean')
        return new YamlLiteral(v, node.source ?? String(v));
      return v ?? null;
    }
    if (isSeq(node)) return node.items.map((item) => this.convert(item, depth + 1));
    if (isMap(node)) {
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        const key = this.key(pair.key, depth + 1);
        if (Object.prototype.hasOwnProperty.call(out, key)) throw new YamlLoadError(`duplicate key '${key}'`);
        // defineProperty so that a key such as `__proto__` is an ordinary (unknown) key.
        Object.defineProperty(out, key, {
          value: this.convert(pair.value, depth + 1),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    }
    if (node === null || node === undefined) return null;
    throw new YamlLoadError('unsupported YAML node');
  }

  private key(node: unknown, depth: number): string {
    const k = this.convert(node, depth);
    if (typeof k === 'string') return k;
    if (k instanceof YamlLiteral) return k.source;
    if (k === null) return '';
    throw new YamlLoadError('map keys must be scalars');
  }
}

export interface ParsedYaml {
  data: unknown;
  warnings: string[];
}

/**
 * Parses config YAML into plain data. `file` locates relative `!file` paths. Throws YamlLoadError
 * (unwrapped; the caller adds the file name).
 */
export function parseYaml(text: string, file: string, env: NodeJS.ProcessEnv): ParsedYaml {
  const failures: Error[] = [];
  const doc = parseDocument(text, {
    customTags: [fileTag(dirname(resolvePath(file)), env, failures)],
    uniqueKeys: true,
    prettyErrors: true,
  });
  const syntax = doc.errors[0];
  if (syntax) throw new YamlLoadError(firstLine(syntax.message));
  const failure = failures[0];
  if (failure) throw failure;
  const warnings: string[] = [];
  for (const w of doc.warnings) {
    // An unknown tag (say `!fiel`) would otherwise silently yield the path text as the value.
    if (w.code === 'TAG_RESOLVE_FAILED')
      throw new YamlLoadError(`${firstLine(w.message)} (only !file is supported)`);
    warnings.push(firstLine(w.message));
  }
  const root: Node | null = doc.contents;
  if (root === null || (isScalar(root) && (root.value === null || root.value === ''))) {
    throw new YamlLoadError('YAML content is empty');
  }
  return { data: new Converter(doc, env).convert(root, 0), warnings };
}
