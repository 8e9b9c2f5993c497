// Connection and channel identifiers (wire-protocol.md §7, reference-behaviour.md §9.1–9.2).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
const POD_HASH = /^[a-z0-9]{5}$/;

/** Last `-` segment of a Kubernetes Deployment pod name (`ssh-proxy-7d9c8b6f5-x7k2p` → `x7k2p`), else `local`. */
export function proxyIdFromHostname(host: string): string {
  const segments = host.split('-');
  const last = segments[segments.length - 1] ?? '';
  return segments.length >= 3 && POD_HASH.test(last) ? last : 'local';
}

let defaultProxyId: string | undefined;

/** This host's proxy id (computed once): the connection-id prefix and the failure events' `proxy_id`. */
export function localProxyId(): string {
  return (defaultProxyId ??= proxyIdFromHostname(hostname()));
}

/** 130 random bits as 26 lowercase base32 characters. */
function randomPart(): string {
  const bytes = randomBytes(17); // 136 bits; the first 130 are used
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < 26) {
      bits -= 5;
      out += BASE32[(acc >>> bits) & 31];
    }
  }
  return out;
}

/** `<proxyID>-<pid>-<26 chars [a-z2-7]>`; defaults to this host's proxy id and this process's pid. */
export function newConnectionId(proxyId?: string, pid?: number): string {
  const id = proxyId ?? localProxyId();
  return `${id}-${pid ?? process.pid}-${randomPart()}`;
}

export type ChannelIdPrefix = 'sh' | 'ex' | 'sf' | 'pf' | 'ux';

/** Per-connection channel id source: `<prefix>-<connection id><n>`, n counting from 1 with no separator. */
export class ChannelIds {
  private n = 0;

  constructor(readonly connectionId: string) {}

  next(prefix: ChannelIdPrefix): string {
    this.n += 1;
    return `${prefix}-${this.connectionId}${this.n}`;
  }
}

export function agentSocketPath(agentSocketId: string): string {
  return `/var/run/ssh-agent-${agentSocketId}.sock`;
}
