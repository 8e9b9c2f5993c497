// Registers key exchanges that ssh2 does not implement itself (patch 013, `registerKexProvider`).
import { mlkem768x25519, MLKEM768X25519, type KexProvider } from '../pq/mlkem768x25519.js';
import { kexModule } from './internals.js';

let registered = false;

/** Makes `mlkem768x25519-sha256` available to ssh2 servers and clients (idempotent). */
export function registerPqKex(): void {
  if (registered) return;
  const register = kexModule.registerKexProvider;
  if (typeof register !== 'function')
    throw new Error(
      'ssh2 lacks registerKexProvider: patches/ssh2+1.17.0+013+kex-providers.patch is not applied',
    );
  const provider: KexProvider = mlkem768x25519;
  register(MLKEM768X25519, provider);
  registered = true;
}
