/**
 * Key fingerprints to compare over a voice channel, and the base64 form of public keys.
 *
 * fingerprint(pk) = the first 100 bits of BLAKE2s("Trickle fingerprint v1" ‖ pk), written as 20
 * Crockford base32 characters (https://www.crockford.com/base32.html: digits and letters without
 * I, L, O, U, so nothing reads like something else) in 5 groups of 4, e.g. "7Q2M-XK4D-0V9B-JH3T-WE8C".
 * 100 bits: a second-preimage search costs 2^100 work, far beyond anyone's means; reading it aloud
 * takes about 20 seconds. Parsing follows Crockford's decoding: case-insensitive, I/L read as 1,
 * O as 0, hyphens and spaces ignored.
 */
import { blake2s } from '@noble/hashes/blake2.js';
import { TrickleError } from '../errors.ts';
import { concatBytes, utf8 } from '../util/bytes.ts';

export const PUBLIC_KEY_LEN = 32;
export const FINGERPRINT_CHARS = 20;
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const DOMAIN = utf8.encode('Trickle fingerprint v1');

/** "XXXX-XXXX-XXXX-XXXX-XXXX" for a 32-byte public key. */
export function fingerprint(publicKey: Uint8Array): string {
  const digest = blake2s(concatBytes(DOMAIN, publicKey));
  let chars = '';
  let acc = 0;
  let bits = 0;
  for (const byte of digest) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5 && chars.length < FINGERPRINT_CHARS) {
      chars += ALPHABET[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
    if (chars.length === FINGERPRINT_CHARS) break;
  }
  return chars.match(/.{4}/g)!.join('-');
}

/** Canonical form of a typed fingerprint, or undefined if it is not one. */
export function normalizeFingerprint(input: string): string | undefined {
  const clean = input.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  if (clean.length !== FINGERPRINT_CHARS) return undefined;
  for (const c of clean) if (!ALPHABET.includes(c)) return undefined;
  return clean.match(/.{4}/g)!.join('-');
}

export function encodePublicKey(publicKey: Uint8Array): string {
  return Buffer.from(publicKey).toString('base64');
}

/** Standard base64 (RFC 4648 §4) of exactly 32 bytes; throws ERR_NOISE_KEY naming what is wrong. */
export function decodePublicKey(text: string, what = 'public key'): Uint8Array {
  const t = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) {
    throw new TrickleError('ERR_NOISE_KEY', 'secure', `${what} must be 44 characters of base64 (32 bytes, e.g. as printed by "trickle keys show"), got ${JSON.stringify(t.slice(0, 60))}`);
  }
  const bytes = new Uint8Array(Buffer.from(t, 'base64'));
  if (bytes.length !== PUBLIC_KEY_LEN || encodePublicKey(bytes) !== t) {
    throw new TrickleError('ERR_NOISE_KEY', 'secure', `${what} is not canonical base64 of 32 bytes`);
  }
  return bytes;
}
