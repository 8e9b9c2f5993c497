// The SSH type of a host private key file, read without ssh2 (the forking parent must stay light, see
// forking.ts): it checks at start-up that `server.serverKey` is usable, and names the key types in the
// reference's start-up line, although only the children load the keys for real.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

const OPENSSH_BEGIN = '-----BEGIN OPENSSH PRIVATE KEY-----';
const OPENSSH_MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

const EC_CURVES: Record<string, string> = {
  prime256v1: 'ecdsa-sha2-nistp256',
  secp384r1: 'ecdsa-sha2-nistp384',
  secp521r1: 'ecdsa-sha2-nistp521',
};

/** Reads one length-prefixed SSH string at `at`; undefined when it does not fit. */
function sshString(buf: Buffer, at: number): { value: Buffer; next: number } | undefined {
  if (at + 4 > buf.length) return undefined;
  const n = buf.readUInt32BE(at);
  if (at + 4 + n > buf.length) return undefined;
  return { value: buf.subarray(at + 4, at + 4 + n), next: at + 4 + n };
}

/** The key type inside an OpenSSH-format private key (its first public key's type string). */
function opensshKeyType(text: string): string {
  const body = text.slice(text.indexOf(OPENSSH_BEGIN) + OPENSSH_BEGIN.length).split('-----END')[0] ?? '';
  const buf = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  if (!buf.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) throw new Error('not an OpenSSH key');
  let at = OPENSSH_MAGIC.length;
  const cipher = sshString(buf, at);
  if (!cipher) throw new Error('truncated OpenSSH key');
  if (cipher.value.toString('latin1') !== 'none') throw new Error('encrypted keys are not supported');
  at = cipher.next;
  for (let i = 0; i < 2; i++) {
    // kdfname, kdfoptions
    const s = sshString(buf, at);
    if (!s) throw new Error('truncated OpenSSH key');
    at = s.next;
  }
  if (at + 4 > buf.length || buf.readUInt32BE(at) < 1) throw new Error('OpenSSH key without keys');
  const pub = sshString(buf, at + 4);
  const type = pub && sshString(pub.value, 0);
  if (!type || type.value.length === 0) throw new Error('truncated OpenSSH key');
  return type.value.toString('latin1');
}

/** The SSH key type of a PEM private key in the formats ssh2 reads (PKCS#1 RSA, SEC1 EC; not PKCS#8). */
function pemKeyType(text: string): string {
  if (!/-----BEGIN (RSA|EC) PRIVATE KEY-----/.test(text))
    throw new Error('unsupported key format (want an OpenSSH, PEM RSA or PEM EC private key)');
  const key = createPrivateKey(text);
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'ssh-rsa';
    case 'ed25519':
      return 'ssh-ed25519';
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve ?? '';
      const t = EC_CURVES[curve];
      if (!t) throw new Error(`unsupported EC curve ${curve || '?'}`);
      return t;
    }
    default:
      throw new Error(`unsupported key type ${key.asymmetricKeyType ?? '?'}`);
  }
}

/** The SSH type of the private key in `path`; throws with the path named when it is not usable. */
export function hostKeyType(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read server key '${path}': ${(e as Error).message}`);
  }
  try {
    return text.includes(OPENSSH_BEGIN) ? opensshKeyType(text) : pemKeyType(text);
  } catch (e) {
    throw new Error(`cannot parse server key '${path}': ${(e as Error).message}`);
  }
}

/** The types of every configured host key (config `server.serverKey`, one path or a list). */
export function hostKeyTypes(paths: readonly string[]): string[] {
  const list = paths.filter((p) => p.trim() !== '');
  if (list.length === 0) throw new Error('server key path not configured');
  return list.map(hostKeyType);
}
