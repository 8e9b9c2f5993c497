// Typed access to the ssh2 1.17.0 internals the shims rely on. Nothing outside ssh2-shims/ may use this.
import { createRequire } from 'node:module';

import type { Connection } from 'ssh2';

const require = createRequire(import.meta.url);

/** The exact ssh2 version whose internals these shims were written against and tested with. */
export const SSH2_SHIM_VERSION = '1.17.0';

const installed = (require('ssh2/package.json') as { version: string }).version;
if (installed !== SSH2_SHIM_VERSION) {
  // The shims reach into private fields; a different version must be re-verified before use.
  throw new Error(`ssh2 shims were written for ssh2 ${SSH2_SHIM_VERSION}, found ${installed}`);
}

export interface ChannelOpenInfo {
  type: string;
  sender: number;
  window: number;
  packetSize: number;
  data: unknown;
}

export interface PacketWriter {
  allocStart: number;
  alloc(size: number, force?: boolean): Buffer;
  finalize(packet: Buffer, force?: boolean): Buffer;
}

export interface ProtocolInternals {
  _server: boolean;
  _kex?: { remoteExtInfoEnabled?: boolean };
  _packetRW: { write: PacketWriter };
  _handlers: Record<string, ((...args: any[]) => void) | undefined>;
  channelOpenFail(remote: number, reason: number, desc?: string): void;
  channelClose(remote: number): void;
  openssh_authAgent(chan: number, initWindow: number, maxPacket: number): void;
}

export interface ChannelManagerInternals {
  add(value?: unknown): number;
  remove(id: number): void;
}

export interface ConnectionInternals {
  _protocol: ProtocolInternals;
  _chanMgr: ChannelManagerInternals;
  _sock: { destroyed?: boolean; writable?: boolean } | undefined;
  authenticated: boolean;
}

export function internalsOf(client: Connection): ConnectionInternals {
  const c = client as unknown as Partial<ConnectionInternals>;
  if (
    typeof c !== 'object' ||
    c === null ||
    typeof c._protocol !== 'object' ||
    typeof c._chanMgr !== 'object' ||
    typeof c._protocol.channelOpenFail !== 'function'
  ) {
    throw new TypeError('not an ssh2 server connection');
  }
  return c as ConnectionInternals;
}

export const channelModule = require('ssh2/lib/Channel.js') as { MAX_WINDOW: number; PACKET_SIZE: number };
export const protocolUtils = require('ssh2/lib/protocol/utils.js') as {
  sendPacket(proto: ProtocolInternals, packet: Buffer, bypass?: boolean): boolean;
};
export const protocolConstants = require('ssh2/lib/protocol/constants.js') as {
  eddsaSupported: boolean;
  MESSAGE: Record<string, number>;
};
export const ProtocolClass = require('ssh2/lib/protocol/Protocol.js') as { prototype: object };

/** ssh2's key-exchange module; `registerKexProvider` is added by patches/…013+kex-providers.patch. */
export const kexModule = require('ssh2/lib/protocol/kex.js') as {
  registerKexProvider?: (name: string, provider: unknown) => void;
};
