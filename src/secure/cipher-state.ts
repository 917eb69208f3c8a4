/**
 * CipherState (Noise spec rev 34 §5.1): a key k (or empty) and a 64-bit nonce n.
 *
 * Fail closed (CONVENTIONS: security state machines): an authentication failure in
 * DecryptWithAd wipes k and leaves the object unusable (every later call throws
 * ERR_NOISE_STATE). Trickle's lossy-link transport does not use this class for its frames;
 * it takes the keys out with `detachKey()` after Split (see transport.ts).
 */
import { TrickleError } from '../errors.ts';
import { type CipherFunction, KEY_LEN, MAX_NONCE } from './cipher-functions.ts';

export class CipherState {
  readonly cipher: CipherFunction;
  #k: Uint8Array | null = null;
  #n = 0n;
  #failed = false;

  constructor(cipher: CipherFunction) {
    this.cipher = cipher;
  }

  /** InitializeKey(key): k = key (null = empty), n = 0. */
  initializeKey(key: Uint8Array | null): void {
    this.#live();
    if (key !== null && key.length !== KEY_LEN) {
      throw new TrickleError('ERR_NOISE_KEY', 'secure', `cipher key must be ${KEY_LEN} bytes`);
    }
    this.#k?.fill(0);
    this.#k = key === null ? null : key.slice();
    this.#n = 0n;
  }

  /** An independent copy (key and nonce), for HandshakeState.fork(). */
  fork(): CipherState {
    this.#live();
    const c = new CipherState(this.cipher);
    c.#k = this.#k === null ? null : this.#k.slice();
    c.#n = this.#n;
    return c;
  }

  /** HasKey(): true if k is non-empty. */
  hasKey(): boolean {
    return this.#k !== null;
  }

  /** SetNonce(nonce): for out-of-order transport messages (§5.1, §11.4). */
  setNonce(nonce: bigint): void {
    this.#live();
    if (nonce < 0n || nonce > MAX_NONCE) throw new TrickleError('ERR_NOISE_NONCE', 'secure', `nonce out of range: ${nonce}`);
    this.#n = nonce;
  }

  /** The next nonce n (for tests and the transport). */
  get nonce(): bigint {
    return this.#n;
  }

  /** EncryptWithAd(ad, plaintext): ENCRYPT(k, n++, ad, plaintext) if k is set, else plaintext. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    this.#live();
    if (this.#k === null) return plaintext.slice();
    this.#checkNonce();
    const out = this.cipher.encrypt(this.#k, this.#n, ad, plaintext);
    this.#n++;
    return out;
  }

  /**
   * DecryptWithAd(ad, ciphertext): DECRYPT(k, n++, ad, ciphertext) if k is set, else ciphertext.
   * On authentication failure the state is wiped and unusable (fail closed).
   */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    this.#live();
    if (this.#k === null) return ciphertext.slice();
    this.#checkNonce();
    try {
      const out = this.cipher.decrypt(this.#k, this.#n, ad, ciphertext);
      this.#n++;
      return out;
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  /** Rekey(): k = REKEY(k) (§4.2, §11.3); n is unchanged. */
  rekey(): void {
    this.#live();
    if (this.#k === null) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'Rekey on a CipherState without a key');
    const next = this.cipher.rekey(this.#k);
    this.#k.fill(0);
    this.#k = next;
  }

  /**
   * Move the key and nonce out (ownership transfer to a transport that manages explicit nonces);
   * this CipherState is wiped and unusable afterwards, so the same (k, n) cannot be used twice.
   */
  detachKey(): { key: Uint8Array; nonce: bigint } {
    this.#live();
    if (this.#k === null) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'no key to detach');
    const out = { key: this.#k.slice(), nonce: this.#n };
    this.destroy();
    return out;
  }

  /** Wipe the key; every later call throws ERR_NOISE_STATE. */
  destroy(): void {
    this.#k?.fill(0);
    this.#k = null;
    this.#failed = true;
  }

  #checkNonce(): void {
    // §5.1: n = 2^64−1 is reserved; exhausting the nonce space is an error.
    if (this.#n >= MAX_NONCE) throw new TrickleError('ERR_NOISE_NONCE', 'secure', 'nonce exhausted');
  }

  #live(): void {
    if (this.#failed) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'CipherState is closed (failed or detached)');
  }
}
