/**
 * Formats of the key files (pure: text/JSON in, values out; the files are read and written by
 * src/cli/keys.ts through src/util/state-file.ts).
 *
 *   identity.json         { "type": "trickle-static-key-v1", "curve": "25519",
 *                           "publicKey": base64, "privateKey": base64, "fingerprint": "XXXX-…" }
 *                         mode 0600; the public key must be the private key's (checked on load).
 *   authorized_keys       gateway: one field kit per line, "<base64 public key> <name>";
 *                         "#" starts a comment line; blank lines ignored. A name is 1–64 of
 *                         A–Z a–z 0–9 . _ @ + -; keys and names are unique.
 *   pinned-gateway.json   host: { "type": "trickle-pinned-gateway-v1", "publicKey": base64,
 *                           "fingerprint": "XXXX-…", "pinnedAt": ISO time }
 *   offered-gateway.json  host: same shape ("trickle-offered-gateway-v1", "seenAt"): the key a
 *                         gateway presented that differs from the pinned one, for `keys trust`.
 */
import { TrickleError } from '../errors.ts';
import { equalBytes } from '../util/bytes.ts';
import { type KeyPair, X25519 } from './dh.ts';
import { decodePublicKey, encodePublicKey, fingerprint } from './fingerprint.ts';

export const KEY_FILE_TYPE = 'trickle-static-key-v1';
export const PINNED_FILE_TYPE = 'trickle-pinned-gateway-v1';
export const OFFERED_FILE_TYPE = 'trickle-offered-gateway-v1';
export const NAME_PATTERN = /^[A-Za-z0-9._@+-]{1,64}$/;

function bad(message: string, where: string): TrickleError {
  return new TrickleError('ERR_CONFIG', 'secure', `${where}: ${message}`, { path: where });
}

export interface KeyFile {
  readonly type: typeof KEY_FILE_TYPE;
  readonly curve: '25519';
  readonly publicKey: string;
  readonly privateKey: string;
  readonly fingerprint: string;
}

export function formatKeyFile(kp: KeyPair): KeyFile {
  return {
    type: KEY_FILE_TYPE,
    curve: '25519',
    publicKey: encodePublicKey(kp.publicKey),
    privateKey: Buffer.from(kp.privateKey).toString('base64'),
    fingerprint: fingerprint(kp.publicKey),
  };
}

export function parseKeyFile(json: unknown, where: string): KeyPair {
  if (json === null || typeof json !== 'object') throw bad('not a key file (expected a JSON object)', where);
  const o = json as Record<string, unknown>;
  if (o['type'] !== KEY_FILE_TYPE) throw bad(`not a Trickle key file ("type" must be "${KEY_FILE_TYPE}")`, where);
  if (o['curve'] !== '25519') throw bad('"curve" must be "25519"', where);
  if (typeof o['privateKey'] !== 'string' || typeof o['publicKey'] !== 'string') throw bad('"privateKey" and "publicKey" must be base64 strings', where);
  let privateKey: Uint8Array;
  let publicKey: Uint8Array;
  try {
    privateKey = decodePublicKey(o['privateKey'], 'privateKey');
    publicKey = decodePublicKey(o['publicKey'], 'publicKey');
  } catch (e) {
    throw bad((e as Error).message, where);
  }
  const kp = X25519.keyPairFromPrivate(privateKey);
  if (!equalBytes(kp.publicKey, publicKey)) throw bad('"publicKey" does not belong to "privateKey" (file damaged or edited?)', where);
  return kp;
}

export interface AuthorizedKey {
  readonly publicKey: Uint8Array;
  readonly name: string;
  readonly fingerprint: string;
  /** 1-based line number in the file. */
  readonly line: number;
}

/** Parse an authorized_keys file; every problem names the file and line. */
export function parseAuthorizedKeys(text: string, where: string): AuthorizedKey[] {
  const out: AuthorizedKey[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const at = `${where}:${i + 1}`;
    const parts = line.split(/\s+/);
    if (parts.length !== 2) throw bad(`expected "<base64 public key> <name>", got ${JSON.stringify(line.slice(0, 80))}`, at);
    const [keyText, name] = parts as [string, string];
    let publicKey: Uint8Array;
    try {
      publicKey = decodePublicKey(keyText);
    } catch (e) {
      throw bad((e as Error).message, at);
    }
    if (!NAME_PATTERN.test(name)) throw bad(`name ${JSON.stringify(name)} must be 1–64 of A–Z a–z 0–9 . _ @ + -`, at);
    const dupKey = out.find((k) => equalBytes(k.publicKey, publicKey));
    if (dupKey !== undefined) throw bad(`key already listed on line ${dupKey.line} (as "${dupKey.name}")`, at);
    const dupName = out.find((k) => k.name === name);
    if (dupName !== undefined) throw bad(`name "${name}" already used on line ${dupName.line}`, at);
    out.push({ publicKey, name, fingerprint: fingerprint(publicKey), line: i + 1 });
  });
  return out;
}

export function formatAuthorizedKeyLine(publicKey: Uint8Array, name: string): string {
  return `${encodePublicKey(publicKey)} ${name}`;
}

/** isAuthorized for SecureLink from a parsed list. */
export function authorizerFor(keys: readonly AuthorizedKey[]): (remoteStatic: Uint8Array) => string | undefined {
  const byKey = new Map(keys.map((k) => [encodePublicKey(k.publicKey), k.name]));
  return (rs) => byKey.get(encodePublicKey(rs));
}

export interface PinnedKeyFile {
  readonly type: typeof PINNED_FILE_TYPE | typeof OFFERED_FILE_TYPE;
  readonly publicKey: string;
  readonly fingerprint: string;
  readonly pinnedAt?: string;
  readonly seenAt?: string;
}

export function formatPinnedKey(publicKey: Uint8Array, at: Date, type: typeof PINNED_FILE_TYPE | typeof OFFERED_FILE_TYPE = PINNED_FILE_TYPE): PinnedKeyFile {
  return {
    type,
    publicKey: encodePublicKey(publicKey),
    fingerprint: fingerprint(publicKey),
    ...(type === PINNED_FILE_TYPE ? { pinnedAt: at.toISOString() } : { seenAt: at.toISOString() }),
  };
}

export function parsePinnedKey(json: unknown, where: string, type: typeof PINNED_FILE_TYPE | typeof OFFERED_FILE_TYPE = PINNED_FILE_TYPE): Uint8Array {
  if (json === null || typeof json !== 'object' || (json as Record<string, unknown>)['type'] !== type) {
    throw bad(`not a ${type === PINNED_FILE_TYPE ? 'pinned gateway key' : 'offered gateway key'} file ("type" must be "${type}")`, where);
  }
  const keyText = (json as Record<string, unknown>)['publicKey'];
  if (typeof keyText !== 'string') throw bad('"publicKey" must be a base64 string', where);
  try {
    return decodePublicKey(keyText);
  } catch (e) {
    throw bad((e as Error).message, where);
  }
}
