// Resource counts for the no-leak checks: open file descriptors of a process (/proc) and the
// gateway's open gRPC calls, read from grpc-js channelz (the gateway runs in the test process).
import { readdirSync } from 'node:fs';
import { getChannelzHandlers } from '@grpc/grpc-js';

/** Open file descriptors of `pid` (default: this process, which hosts the gateway). */
export function fdCount(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

interface TopChannel {
  data: { target: string; calls_started: number; calls_succeeded: number; calls_failed: number };
}

/**
 * gRPC calls started but not yet finished on every client channel of this process whose target
 * contains `targetPart` (e.g. the agent's address). Closed channels drop out of channelz.
 */
export function openGrpcCalls(targetPart: string): Promise<number> {
  const handlers = getChannelzHandlers();
  return new Promise((resolve, reject) => {
    // The channelz handlers are plain functions of (call, callback); a request object suffices.
    const call = { request: { start_channel_id: 0, max_results: 10_000 } };
    const cb = (err: unknown, res?: { channel: TopChannel[] }) => {
      if (err || !res) return reject(new Error(`channelz GetTopChannels failed: ${String(err)}`));
      let open = 0;
      for (const c of res.channel) {
        if (!c.data.target.includes(targetPart)) continue;
        open += Number(c.data.calls_started) - Number(c.data.calls_succeeded) - Number(c.data.calls_failed);
      }
      resolve(open);
    };
    (
      handlers.GetTopChannels as unknown as (
        c: typeof call,
        cb: (e: unknown, r?: { channel: TopChannel[] }) => void,
      ) => void
    )(call, cb);
  });
}
