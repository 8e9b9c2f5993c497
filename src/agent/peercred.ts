// Which processes hold the other end of an accepted unix-socket connection.
//
// Node exposes no SO_PEERCRED. Instead: our end's inode comes from /proc/self/fd/<fd>; `ss -xp`
// (sock_diag over netlink) names the peer inode of every unix socket and the processes holding it.
import { execFile } from 'node:child_process';
import { readlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Row {
  peer: number;
  pids: number[];
}

/** Parses `ss -xpH` output into local inode → {peer inode, pids}. */
export function parseSs(text: string): Map<number, Row> {
  const rows = new Map<number, Row>();
  // netid state recv-q send-q local-addr local-inode peer-addr peer-inode [users:(...)]
  const re = /^\S+\s+\S+\s+\d+\s+\d+\s+.*?\s(\d+)\s+\S*\s(\d+)(?:\s+users:\((.*)\))?\s*$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const pids = [...(m[3] ?? '').matchAll(/pid=(\d+)/g)].map((x) => Number(x[1]));
    rows.set(Number(m[1]), { peer: Number(m[2]), pids });
  }
  return rows;
}

function fdOf(sock: Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** Pids holding the peer end of `sock`; throws with a reason when they cannot be determined. */
export async function peerPids(sock: Socket): Promise<number[]> {
  const fd = fdOf(sock);
  if (fd === undefined) throw new Error('socket has no file descriptor');
  const link = await readlink(`/proc/self/fd/${fd}`);
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) throw new Error(`fd ${fd} is not a socket (${link})`);
  const own = Number(m[1]);
  const { stdout } = await run('ss', ['-xpH'], { timeout: 5000, maxBuffer: 64 * 1024 * 1024 });
  const rows = parseSs(stdout);
  const peer = rows.get(own)?.peer;
  if (!peer) throw new Error('peer socket not found');
  const pids = rows.get(peer)?.pids ?? [];
  if (pids.length === 0) throw new Error('no process holds the peer socket');
  return pids;
}
