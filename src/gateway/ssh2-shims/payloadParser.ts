// ssh2's own decoders of SSH_MSG_CHANNEL_OPEN and SSH_MSG_CHANNEL_REQUEST payloads, callable on a
// single payload (the fuzz suite feeds them hostile bytes, then our validators what they produce).
// The handlers need only a protocol-like object: its `_handlers` receive the decoded message, and a
// malformed payload goes through doFatalError (disconnect, _destruct, _onError).
import { createRequire } from 'node:module';
import { protocolConstants } from './internals.js';

const require = createRequire(import.meta.url);
const HANDLERS = require('ssh2/lib/protocol/handlers.js') as Array<
  ((self: any, payload: Buffer) => unknown) | undefined
>;

export type Decoded<T> = { ok: true; value: T } | { ok: false; fatal: string };

export interface ChannelOpenInfo {
  type: string;
  sender: number;
  window: number;
  packetSize: number;
  data: Record<string, unknown>;
}

export interface ChannelRequestInfo {
  recipient: number;
  type: string;
  wantReply: boolean;
  data: unknown;
}

function decode<T>(msg: number, payload: Buffer, key: string, take: (...args: any[]) => T): Decoded<T> {
  let out: Decoded<T> | undefined;
  const self: any = {
    _debug: undefined,
    _handlers: { [key]: (_self: unknown, ...args: any[]) => (out = { ok: true, value: take(...args) }) },
    disconnect: () => undefined,
    _destruct: () => undefined,
    _onError: (e: Error) => (out = { ok: false, fatal: e.message }),
  };
  const h = HANDLERS[msg];
  if (!h) throw new Error(`ssh2 has no handler for message ${msg}`);
  h(self, Buffer.concat([Buffer.from([msg]), payload]));
  return out ?? { ok: false, fatal: 'no message decoded' };
}

/** Decodes a CHANNEL_OPEN payload (after the message byte) exactly as the gateway's ssh2 does. */
export function decodeChannelOpen(payload: Buffer): Decoded<ChannelOpenInfo> {
  const M = protocolConstants.MESSAGE.CHANNEL_OPEN ?? 90;
  return decode(M, payload, 'CHANNEL_OPEN', (info: any) => info as ChannelOpenInfo);
}

/** Decodes a CHANNEL_REQUEST payload (after the message byte) exactly as the gateway's ssh2 does. */
export function decodeChannelRequest(payload: Buffer): Decoded<ChannelRequestInfo> {
  const M = protocolConstants.MESSAGE.CHANNEL_REQUEST ?? 98;
  return decode(
    M,
    payload,
    'CHANNEL_REQUEST',
    (recipient: number, type: string, wantReply: boolean, data: unknown) => ({
      recipient,
      type,
      wantReply,
      data,
    }),
  );
}
