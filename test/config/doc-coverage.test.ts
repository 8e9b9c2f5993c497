// docs/configuration.md must name every key the config schema accepts, so a key added to
// src/config/schema.ts without documentation fails here instead of going unnoticed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../../src/config/schema.js';
import { unwrap } from '../../src/config/validate.js';

const DOC = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');

/** Every leaf key path; a list of mappings contributes `list[].field`. */
function leafKeys(schema: z.core.$ZodType, path: string, out: string[]): string[] {
  const s = unwrap(schema);
  if (s instanceof z.ZodObject) {
    for (const [k, v] of Object.entries(s.shape as Record<string, z.core.$ZodType>))
      leafKeys(v, path ? `${path}.${k}` : k, out);
  } else if (s instanceof z.ZodArray && unwrap(s.element) instanceof z.ZodObject) {
    leafKeys(s.element, `${path}[]`, out);
  } else out.push(path);
  return out;
}

test('docs/configuration.md names every key of the config schema', () => {
  const keys = leafKeys(configSchema, '', []);
  // Guards the walk itself: a schema refactor that hid the keys would make this test pass vacuously.
  assert.ok(keys.length > 100, `only ${keys.length} keys found`);
  assert.ok(keys.includes('server.recording.directTCPIP.vscode.recordInput'));
  assert.ok(keys.includes('grpc.allowed[].serviceAccount'));
  const missing = keys.filter((k) => !DOC.includes(`\`${k}\``));
  assert.deepEqual(missing, [], `keys missing from docs/configuration.md: ${missing.join(', ')}`);
});
