// ssh2 1.17.0 sends the `server-sig-algs` extension with a missing comma
// (`…ecdsa-sha2-nistp521rsa-sha2-512,…`, ssh2 PR #1485), so clients believe rsa-sha2-512 and
// ecdsa-sha2-nistp521 signatures are unsupported. The value is a literal inside a private function, so
// instead of editing files on disk we suppress that EXT_INFO and send a correct one ourselves, right after
// the first key exchange of every server connection.
//
// Hook point: Protocol's constructor assigns `this._onHandshakeComplete = …` (kex.js calls it after
// NEWKEYS). An accessor of that name on Protocol.prototype receives the assignment, so every Protocol built
// after fixServerSigAlgs() gets a wrapped callback; client-mode connections pass straight through.
import { ProtocolClass, protocolConstants, protocolUtils, type ProtocolInternals } from './internals.js';

export function serverSigAlgsValue(): string {
  const algs = [
    'ecdsa-sha2-nistp256',
    'ecdsa-sha2-nistp384',
    'ecdsa-sha2-nistp521',
    'rsa-sha2-512',
    'rsa-sha2-256',
    'ssh-rsa',
    'ssh-dss',
  ];
  if (protocolConstants.eddsaSupported) algs.unshift('ssh-ed25519');
  return algs.join(',');
}

function sendExtInfo(proto: ProtocolInternals): void {
  const name = 'server-sig-algs';
  const value = serverSigAlgsValue();
  const w = proto._packetRW.write;
  let p = w.allocStart;
  const packet = w.alloc(1 + 4 + 4 + name.length + 4 + value.length);
  packet[p] = protocolConstants.MESSAGE.EXT_INFO ?? 7;
  packet.writeUInt32BE(1, ++p); // one extension
  packet.writeUInt32BE(name.length, (p += 4));
  packet.write(name, (p += 4), 'latin1');
  packet.writeUInt32BE(value.length, (p += name.length));
  packet.write(value, (p += 4), 'latin1');
  protocolUtils.sendPacket(proto, w.finalize(packet));
}

const SLOT = Symbol('ssh-proxy.onHandshakeComplete');
type HandshakeFn = (...args: unknown[]) => unknown;
type Holder = ProtocolInternals & { [SLOT]?: HandshakeFn };

let installed = false;

/** Idempotent; must run before the ssh2 Server accepts connections (importing the shims does it). */
export function fixServerSigAlgs(): void {
  if (installed) return;
  const proto = ProtocolClass.prototype;
  const existing = Object.getOwnPropertyDescriptor(proto, '_onHandshakeComplete');
  if (existing) {
    installed = true;
    return;
  }
  Object.defineProperty(proto, '_onHandshakeComplete', {
    configurable: true,
    enumerable: false,
    get(this: Holder): HandshakeFn | undefined {
      return this[SLOT];
    },
    set(this: Holder, fn: HandshakeFn) {
      let first = true;
      // Arrow function: `this` stays the Protocol instance being constructed.
      const wrapped: HandshakeFn = (...args) => {
        const kex = this._kex;
        if (!first || !this._server || !kex || !kex.remoteExtInfoEnabled) {
          first = false;
          return fn(...args);
        }
        first = false;
        kex.remoteExtInfoEnabled = false; // ssh2 skips its own (broken) EXT_INFO
        try {
          return fn(...args);
        } finally {
          kex.remoteExtInfoEnabled = true;
          sendExtInfo(this);
        }
      };
      Object.defineProperty(this, SLOT, {
        value: wrapped,
        writable: true,
        configurable: true,
        enumerable: false,
      });
    },
  });
  installed = true;
}
