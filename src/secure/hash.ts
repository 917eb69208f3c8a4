/**
 * Noise hash functions (Noise spec rev 34 §4.3, §12.8–§12.11) and the HMAC-based HKDF that
 * every SymmetricState uses.
 *
 * HASHLEN is the digest length; BLOCKLEN is the block length HMAC needs (RFC 2104):
 *   SHA256 32/64, SHA512 64/128, BLAKE2s 32/64, BLAKE2b 64/128 (§12.8–§12.11).
 * BLAKE2 is used unkeyed with its full-length digest, never its built-in keyed mode (§12.10).
 */
import { blake2b, blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import type { CHash } from '@noble/hashes/utils.js';
import { TrickleError } from '../errors.ts';

export type HashName = 'SHA256' | 'SHA512' | 'BLAKE2s' | 'BLAKE2b';

type NobleHash = CHash;

export interface HashFunction {
  readonly name: HashName;
  readonly HASHLEN: 32 | 64;
  readonly BLOCKLEN: 64 | 128;
  /** HASH(data) (§4.3). */
  hash(data: Uint8Array): Uint8Array;
  /** HMAC-HASH(key, data) as RFC 2104 (§4.3). */
  hmac(key: Uint8Array, data: Uint8Array): Uint8Array;
  /**
   * HKDF(chaining_key, input_key_material, num_outputs) (§4.3): RFC 5869 with the chaining key as
   * salt and an empty info, each output HASHLEN bytes:
   *   temp_key = HMAC(ck, ikm); out1 = HMAC(temp_key, 0x01); out_i = HMAC(temp_key, out_{i-1} ‖ i).
   */
  hkdf(chainingKey: Uint8Array, ikm: Uint8Array, numOutputs: 2 | 3): Uint8Array[];
}

function make(name: HashName, h: NobleHash, HASHLEN: 32 | 64, BLOCKLEN: 64 | 128): HashFunction {
  if (h.outputLen !== HASHLEN || h.blockLen !== BLOCKLEN) {
    // A guard against a library change silently altering the constants of §12.
    throw new TrickleError('ERR_NOISE_PATTERN', 'secure', `hash ${name} has unexpected lengths`);
  }
  const mac = (key: Uint8Array, data: Uint8Array): Uint8Array => hmac(h, key, data);
  return Object.freeze({
    name,
    HASHLEN,
    BLOCKLEN,
    hash: (data: Uint8Array): Uint8Array => h(data),
    hmac: mac,
    hkdf(chainingKey: Uint8Array, ikm: Uint8Array, numOutputs: 2 | 3): Uint8Array[] {
      const tempKey = mac(chainingKey, ikm);
      const outputs: Uint8Array[] = [];
      let prev: Uint8Array = new Uint8Array(0);
      for (let i = 1; i <= numOutputs; i++) {
        const input = new Uint8Array(prev.length + 1);
        input.set(prev, 0);
        input[prev.length] = i;
        prev = mac(tempKey, input);
        outputs.push(prev);
      }
      tempKey.fill(0);
      return outputs;
    },
  });
}

export const SHA256: HashFunction = make('SHA256', sha256, 32, 64);
export const SHA512: HashFunction = make('SHA512', sha512, 64, 128);
export const BLAKE2s: HashFunction = make('BLAKE2s', blake2s, 32, 64);
export const BLAKE2b: HashFunction = make('BLAKE2b', blake2b, 64, 128);

export const HASH_FUNCTIONS: Readonly<Record<HashName, HashFunction>> = Object.freeze({
  SHA256, SHA512, BLAKE2s, BLAKE2b,
});
