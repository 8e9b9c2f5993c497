// What the gateway takes from decoded SSH request payloads (ssh2 decodes the bytes; these decide what
// is usable). Pure functions, fuzzed by `npm run fuzz` together with ssh2's decoders.

/** RFC 4254 sizes are uint32; terminals larger than this are nonsense (clamped like the daemon's 16 bits). */
export function clampSize(n: unknown): number {
  const v = typeof n === 'number' && Number.isFinite(n) ? Math.trunc(n) : 0;
  return Math.max(0, Math.min(v, 0xffff));
}

export interface TcpipDest {
  host: string;
  port: number;
  srcIP: string;
  srcPort: number;
}

/** The destination of a direct-tcpip open, or undefined for a malformed one. */
export function tcpipPayload(
  info: { destIP?: unknown; destPort?: unknown; srcIP?: unknown; srcPort?: unknown } | undefined,
): TcpipDest | undefined {
  if (!info || typeof info.destIP !== 'string') return undefined;
  const port = info.destPort;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  return {
    host: info.destIP || 'localhost',
    port,
    srcIP: typeof info.srcIP === 'string' ? info.srcIP : '',
    srcPort: typeof info.srcPort === 'number' ? info.srcPort : 0,
  };
}

/** The socket path of a direct-streamlocal open, or undefined for a missing or empty one. */
export function streamLocalPath(info: { socketPath?: unknown } | undefined): string | undefined {
  const p = info?.socketPath;
  return typeof p === 'string' && p !== '' ? p : undefined;
}
