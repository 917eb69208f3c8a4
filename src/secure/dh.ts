/**
 * Noise DH functions (Noise spec rev 34 §4.1, §12.1): Curve25519 (X25519, RFC 7748), DHLEN = 32.
 *
 * Randomness is injected: GENERATE_KEYPAIR draws its 32 secret bytes from the caller's
 * RandomBytes (X25519 clamps any 32 bytes into a valid scalar, RFC 7748 §5).
 */
import { x25519 } from '@noble/curves/ed25519.js';
import { TrickleError, WireError } from '../errors.ts';
import type { RandomBytes } from '../util/clock.ts';

export type DhName = '25519';

export interface KeyPair {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

export interface DhFunction {
  readonly name: DhName;
  readonly DHLEN: 32;
  /** GENERATE_KEYPAIR() (§4.1) with injected randomness. */
  generateKeyPair(randomBytes: RandomBytes): KeyPair;
  /** The key pair of a given private key (for configured statics and test vectors). */
  keyPairFromPrivate(privateKey: Uint8Array): KeyPair;
  /**
   * DH(key_pair, public_key) (§4.1). A low-order public key gives an all-zero output, which noble
   * rejects; §12.1 allows either behaviour and we reject, as a malformed handshake message.
   */
  dh(keyPair: KeyPair, publicKey: Uint8Array): Uint8Array;
}

function checkLen(b: Uint8Array, what: string): void {
  if (b.length !== 32) {
    throw new TrickleError('ERR_NOISE_KEY', 'secure', `${what} must be 32 bytes, got ${b.length}`);
  }
}

export const X25519: DhFunction = Object.freeze({
  name: '25519' as const,
  DHLEN: 32 as const,
  generateKeyPair(randomBytes: RandomBytes): KeyPair {
    const privateKey = randomBytes(32);
    checkLen(privateKey, 'random private key');
    return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
  },
  keyPairFromPrivate(privateKey: Uint8Array): KeyPair {
    checkLen(privateKey, 'private key');
    return { privateKey: privateKey.slice(), publicKey: x25519.getPublicKey(privateKey) };
  },
  dh(keyPair: KeyPair, publicKey: Uint8Array): Uint8Array {
    checkLen(publicKey, 'public key');
    try {
      return x25519.getSharedSecret(keyPair.privateKey, publicKey);
    } catch (cause) {
      throw new WireError('ERR_NOISE_HANDSHAKE', 'secure', 'X25519 rejected the peer public key (low order point)', { cause: String(cause) });
    }
  },
});
