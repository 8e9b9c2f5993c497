// Blueprints known to the local provisioner: the implicit `default`, plus `<dataDir>/blueprints.yaml`
// (`blueprints: [name, …]`, optional). Read on every provisioning request, so edits apply at once.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

export const DEFAULT_BLUEPRINT = 'default';

const schema = z.object({ blueprints: z.array(z.string().min(1)).nullish() }).strict();

/** The known blueprint names; throws an Error naming the file and problem when it is malformed. */
export function loadBlueprints(dataDir: string): Set<string> {
  const file = join(dataDir, 'blueprints.yaml');
  const names = new Set([DEFAULT_BLUEPRINT]);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return names;
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true }) ?? {};
  } catch (e) {
    throw new Error(`invalid ${file}: ${(e as Error).message.split('\n')[0] ?? ''}`);
  }
  const r = schema.safeParse(doc);
  if (!r.success) throw new Error(`invalid ${file}: ${z.prettifyError(r.error).replace(/\n+/g, '; ')}`);
  for (const b of r.data.blueprints ?? []) names.add(b);
  return names;
}
