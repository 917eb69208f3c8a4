/**
 * SymmetricState (Noise spec rev 34 §5.2): the CipherState plus the chaining key ck and the
 * handshake hash h.
 */
import { utf8 } from '../util/bytes.ts';
import type { CipherFunction } from './cipher-functions.ts';
import { CipherState } from './cipher-state.ts';
import type { HashFunction } from './hash.ts';

export class SymmetricState {
  readonly hash: HashFunction;
  readonly cipherState: CipherState;
  #ck: Uint8Array;
  #h: Uint8Array;

  /** InitializeSymmetric(protocol_name). `copyOf` is fork()'s: the other fields are ignored then. */
  constructor(protocolName: string, cipher: CipherFunction, hash: HashFunction, copyOf?: SymmetricState) {
    this.hash = hash;
    if (copyOf !== undefined) {
      this.#ck = copyOf.#ck.slice();
      this.#h = copyOf.#h.slice();
      this.cipherState = copyOf.cipherState.fork();
      return;
    }
    const name = utf8.encode(protocolName);
    // §5.2: name padded with zeros to HASHLEN if it fits, else HASH(name).
    if (name.length <= hash.HASHLEN) {
      this.#h = new Uint8Array(hash.HASHLEN);
      this.#h.set(name);
    } else {
      this.#h = hash.hash(name);
    }
    this.#ck = this.#h.slice();
    this.cipherState = new CipherState(cipher);
    this.cipherState.initializeKey(null);
  }

  /** MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k truncated to 32). */
  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = this.hash.hkdf(this.#ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.#ck.fill(0);
    this.#ck = ck;
    this.cipherState.initializeKey(tempK.subarray(0, 32));
    tempK.fill(0);
  }

  /** MixHash(data): h = HASH(h ‖ data). */
  mixHash(data: Uint8Array): void {
    const buf = new Uint8Array(this.#h.length + data.length);
    buf.set(this.#h, 0);
    buf.set(data, this.#h.length);
    this.#h = this.hash.hash(buf);
  }

  /** MixKeyAndHash(ikm) (§5.2, for psk): ck, temp_h, temp_k = HKDF(ck, ikm, 3). */
  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, tempK] = this.hash.hkdf(this.#ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.#ck.fill(0);
    this.#ck = ck;
    this.mixHash(tempH);
    this.cipherState.initializeKey(tempK.subarray(0, 32));
    tempK.fill(0);
  }

  /** GetHandshakeHash(): h (a copy). */
  getHandshakeHash(): Uint8Array {
    return this.#h.slice();
  }

  /** EncryptAndHash(plaintext): ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipherState.encryptWithAd(this.#h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  /** DecryptAndHash(ciphertext): plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipherState.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /**
   * Split(): temp_k1, temp_k2 = HKDF(ck, zerolen, 2); two CipherStates keyed with the first 32
   * bytes of each. c1 carries initiator→responder traffic, c2 responder→initiator. The chaining
   * key is wiped afterwards (§5.2 says it may be deleted).
   */
  split(): [CipherState, CipherState] {
    const [c1, c2] = this.splitWithResumption();
    c1.resumption.fill(0);
    return [c1.c1, c2];
  }

  /**
   * Split() plus a third HKDF output (Trickle extension): temp_k1, temp_k2, temp_k3 =
   * HKDF(ck, zerolen, 3). temp_k1 and temp_k2 are exactly Split()'s (RFC 5869 outputs chain:
   * asking for a third does not change the first two), so the transport keys and the test
   * vectors are unchanged. temp_k3 is a secret both parties hold after the handshake and that
   * nobody else can compute (it depends on ck, which mixes every DH output): Trickle uses it
   * as the psk of the next IKpsk1 handshake between the same two parties (secure-link.ts).
   * Like the split keys it must be wiped when no longer needed.
   */
  splitWithResumption(): [{ c1: CipherState; resumption: Uint8Array }, CipherState] {
    const [k1, k2, k3] = this.hash.hkdf(this.#ck, new Uint8Array(0), 3) as [Uint8Array, Uint8Array, Uint8Array];
    const c1 = new CipherState(this.cipherState.cipher);
    const c2 = new CipherState(this.cipherState.cipher);
    c1.initializeKey(k1.subarray(0, 32));
    c2.initializeKey(k2.subarray(0, 32));
    k1.fill(0);
    k2.fill(0);
    const resumption = k3.slice(0, 32);
    k3.fill(0);
    return [{ c1, resumption }, c2];
  }

  /** An independent copy (ck, h and the cipher key): to try a message without committing. */
  fork(): SymmetricState {
    return new SymmetricState('', this.cipherState.cipher, this.hash, this);
  }

  /** Wipe ck and the cipher key. */
  destroy(): void {
    this.#ck.fill(0);
    this.cipherState.destroy();
  }
}

