// Whether the process on the other end of an accepted unix-socket connection belongs to a given
// process tree (agent-socket owner checks, wire-protocol §5.7, §9.8).
//
// Node exposes no SO_PEERCRED. Our end's inode comes from /proc/self/fd/<fd>; `ss -xH src <path>`
// (sock_diag, filtered to this one socket path, without -p so it does not walk every process's fds)
// names the peer inode; then only the owner's own process tree is searched for that inode.
import { execFile } from 'node:child_process';
import { readdir, readlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { readStat } from './procs.js';

const run = promisify(execFile);
/** `ss` output for one socket path is a line per live connection: a small bound is plenty. */
const SS_MAX_BUFFER = 1024 * 1024;
const SS_TIMEOUT_MS = 5000;
/** A process tree larger than this is not an agent client's; refuse rather than scan without end. */
const MAX_TREE = 4096;

interface Row {
  peer: number;
  pids: number[];
}

/** Parses `ss -x[p]H` output into local inode → {peer inode, pids (with -p)}. */
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

/**
 * Connections accepted together share one `ss` run per socket path: requests made before the run
 * starts (it starts on the next turn of the event loop) join it; later ones get a run of their own,
 * which is sure to see their connection.
 */
const pending = new Map<string, Promise<Map<number, Row>>>();

function connectionsOf(socketPath: string): Promise<Map<number, Row>> {
  let p = pending.get(socketPath);
  if (!p) {
    p = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      pending.delete(socketPath);
      return run('ss', ['-xH', 'src', socketPath], { timeout: SS_TIMEOUT_MS, maxBuffer: SS_MAX_BUFFER }).then(
        ({ stdout }) => parseSs(stdout),
      );
    });
    pending.set(socketPath, p);
  }
  return p;
}

/** The owner and all its descendants (bounded). */
async function processTree(owner: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for (const name of await readdir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const st = readStat(pid);
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const out: number[] = [];
  const queue = [owner];
  while (queue.length && out.length < MAX_TREE) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

async function holdsInode(pid: number, inode: number): Promise<boolean> {
  const want = `socket:[${inode}]`;
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (link === want) return true;
  }
  return false;
}

/**
 * True when a process of `ownerPid`'s tree holds the client end of `sock` (accepted on the listener
 * bound at `socketPath`). Throws with a reason when the peer cannot be determined.
 */
export async function peerInTree(sock: Socket, socketPath: string, ownerPid: number): Promise<boolean> {
  const fd = fdOf(sock);
  if (fd === undefined) throw new Error('socket has no file descriptor');
  const link = await readlink(`/proc/self/fd/${fd}`);
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) throw new Error(`fd ${fd} is not a socket (${link})`);
  const peer = (await connectionsOf(socketPath)).get(Number(m[1]))?.peer;
  if (!peer) throw new Error('peer socket not found');
  for (const pid of await processTree(ownerPid)) if (await holdsInode(pid, peer)) return true;
  return false;
}
