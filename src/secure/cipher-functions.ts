/**
 * Noise cipher functions (Noise spec rev 34 §4.2, §12.3): ChaChaPoly = ChaCha20-Poly1305 of
 * RFC 8439, 32-byte key, 16-byte tag. The 96-bit nonce is 32 zero bits followed by the 64-bit
 * counter n in little-endian (§12.3). n = 2^64−1 is reserved for REKEY (§4.2, §5.1).
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { TrickleError, WireError } from '../errors.ts';

export type CipherName = 'ChaChaPoly';

/** Length of the AEAD authentication tag appended by ENCRYPT (§4.2). */
export const TAG_LEN = 16;
/** Noise keys are always 32 bytes (§4.2). */
export const KEY_LEN = 32;
/** 2^64 − 1: never used for a message; REKEY encrypts with it (§4.2). */
export const MAX_NONCE = (1n << 64n) - 1n;

export interface CipherFunction {
  readonly name: CipherName;
  /** ENCRYPT(k, n, ad, plaintext) → ciphertext ‖ tag (§4.2). */
  encrypt(k: Uint8Array, n: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** DECRYPT(k, n, ad, ciphertext); throws WireError ERR_NOISE_DECRYPT on authentication failure. */
  decrypt(k: Uint8Array, n: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  /** REKEY(k) = first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros) (§4.2 default). */
  rekey(k: Uint8Array): Uint8Array;
}

/** §12.3: 4 zero bytes, then the counter as 64-bit little-endian. */
export function chachaPolyNonce(n: bigint): Uint8Array {
  if (n < 0n || n > MAX_NONCE) throw new TrickleError('ERR_NOISE_NONCE', 'secure', `nonce out of range: ${n}`);
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, n, true);
  return nonce;
}

function checkKey(k: Uint8Array): void {
  if (k.length !== KEY_LEN) throw new TrickleError('ERR_NOISE_KEY', 'secure', `cipher key must be ${KEY_LEN} bytes`);
}

const EMPTY = new Uint8Array(0);
const ZEROS32 = new Uint8Array(32);

export const ChaChaPoly: CipherFunction = Object.freeze({
  name: 'ChaChaPoly' as const,
  encrypt(k: Uint8Array, n: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    checkKey(k);
    return chacha20poly1305(k, chachaPolyNonce(n), ad).encrypt(plaintext);
  },
  decrypt(k: Uint8Array, n: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    checkKey(k);
    if (ciphertext.length < TAG_LEN) {
      throw new WireError('ERR_NOISE_DECRYPT', 'secure', `ciphertext shorter than the ${TAG_LEN}-byte tag`);
    }
    try {
      return chacha20poly1305(k, chachaPolyNonce(n), ad).decrypt(ciphertext);
    } catch {
      throw new WireError('ERR_NOISE_DECRYPT', 'secure', 'AEAD authentication failed');
    }
  },
  rekey(k: Uint8Array): Uint8Array {
    checkKey(k);
    return chacha20poly1305(k, chachaPolyNonce(MAX_NONCE), EMPTY).encrypt(ZEROS32).slice(0, KEY_LEN);
  },
});

export const CIPHER_FUNCTIONS: Readonly<Record<CipherName, CipherFunction>> = Object.freeze({ ChaChaPoly });
