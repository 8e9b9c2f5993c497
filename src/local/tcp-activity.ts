// Counts ESTABLISHED TCP sockets by local port from /proc/net/tcp and /proc/net/tcp6 (Linux), so the
// local provisioner can tell whether anyone is still connected to a workspace agent.
import { readFile } from 'node:fs/promises';

const TCP_ESTABLISHED = '01';

/** Parses one /proc/net/tcp* table; adds the count of ESTABLISHED sockets per local port to `into`. */
export function countEstablished(table: string, into: Map<number, number> = new Map()): Map<number, number> {
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // f[1] = local "ADDR:PORT" (hex), f[3] = state (hex)
    if (f.length < 4 || f[3] !== TCP_ESTABLISHED) continue;
    const portHex = f[1]?.split(':')[1];
    if (!portHex) continue;
    const port = parseInt(portHex, 16);
    if (Number.isFinite(port)) into.set(port, (into.get(port) ?? 0) + 1);
  }
  return into;
}

/** ESTABLISHED sockets per local port, over IPv4 and IPv6. A missing table counts as empty. */
export async function establishedByLocalPort(): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      countEstablished(await readFile(f, 'utf8'), counts);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return counts;
}
