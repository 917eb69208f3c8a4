/**
 * HandshakeState (Noise spec rev 34 §5.3): runs a handshake pattern over a SymmetricState.
 *
 * Fail closed: any error while writing or reading a message (a failed decrypt, a short or
 * overlong message, a bad public key, a call out of turn) wipes every secret and leaves the
 * object unusable; later calls throw ERR_NOISE_STATE.
 *
 * Randomness is injected (`randomBytes`). `fixedEphemeralKeyForTestingOnly` replaces
 * GENERATE_KEYPAIR's output for the ephemeral and exists only for test vectors.
 */
import { TrickleError, WireError } from '../errors.ts';
import { concatBytes } from '../util/bytes.ts';
import type { RandomBytes } from '../util/clock.ts';
import { CIPHER_FUNCTIONS, type CipherFunction, TAG_LEN } from './cipher-functions.ts';
import type { CipherState } from './cipher-state.ts';
import { type DhFunction, type KeyPair, X25519 } from './dh.ts';
import { HASH_FUNCTIONS, type HashFunction } from './hash.ts';
import { type HandshakePattern, type PreMessageToken, type Role, parseHandshakePattern, splitProtocolName } from './patterns.ts';
import { SymmetricState } from './symmetric-state.ts';

/** §3: every Noise message is at most 65535 bytes. */
export const MAX_MESSAGE_LEN = 65535;
/** §9: a psk is 32 bytes. */
export const PSK_LEN = 32;

export interface Protocol {
  readonly name: string;
  readonly pattern: HandshakePattern;
  readonly dh: DhFunction;
  readonly cipher: CipherFunction;
  readonly hash: HashFunction;
}

/** Resolve `Noise_<pattern>_<dh>_<cipher>_<hash>`; unknown parts throw ERR_NOISE_PATTERN. */
export function resolveProtocol(name: string): Protocol {
  const parts = splitProtocolName(name);
  const pattern = parseHandshakePattern(parts.pattern);
  if (parts.dh !== '25519') {
    throw new TrickleError('ERR_NOISE_PATTERN', 'secure', `unsupported DH "${parts.dh}" (only 25519)`, { name, unsupported: 'dh' });
  }
  const cipher = (CIPHER_FUNCTIONS as Record<string, CipherFunction | undefined>)[parts.cipher];
  if (cipher === undefined) {
    throw new TrickleError('ERR_NOISE_PATTERN', 'secure', `unsupported cipher "${parts.cipher}" (only ChaChaPoly)`, { name, unsupported: 'cipher' });
  }
  const hash = (HASH_FUNCTIONS as Record<string, HashFunction | undefined>)[parts.hash];
  if (hash === undefined) {
    throw new TrickleError('ERR_NOISE_PATTERN', 'secure', `unsupported hash "${parts.hash}"`, { name, unsupported: 'hash' });
  }
  return Object.freeze({ name, pattern, dh: X25519, cipher, hash });
}

export interface HandshakeOptions {
  /** e.g. "Noise_XX_25519_ChaChaPoly_BLAKE2s" */
  readonly protocolName: string;
  readonly initiator: boolean;
  readonly prologue?: Uint8Array;
  /** The local static key pair. */
  readonly s?: KeyPair;
  /** A local ephemeral that is already known to the peer (a pre-message "e", §10.2 fallback). */
  readonly e?: KeyPair;
  /** The remote static public key, when a pre-message carries it (e.g. IK, NK, KK). */
  readonly rs?: Uint8Array;
  /** The remote ephemeral public key, for a pre-message "e" (fallback). */
  readonly re?: Uint8Array;
  /** Pre-shared keys, used in the order their "psk" tokens appear (§9). */
  readonly psks?: readonly Uint8Array[];
  /**
   * Instead of `psks`: called at each "psk" token with the remote static key known at that point
   * (null if none yet), for a responder that picks the psk by the initiator's identity, which
   * IKpsk1 reveals (token "s") before its "psk" token. It may throw to refuse the handshake;
   * the error is passed through (the state fails closed).
   */
  readonly resolvePsk?: (remoteStatic: Uint8Array | null) => Uint8Array;
  /** Source of GENERATE_KEYPAIR's secret bytes. */
  readonly randomBytes?: RandomBytes;
  /** Test vectors only: the ephemeral private key GENERATE_KEYPAIR returns. */
  readonly fixedEphemeralKeyForTestingOnly?: Uint8Array;
}

export interface SplitResult {
  /** Initiator → responder. */
  readonly c1: CipherState;
  /** Responder → initiator (unused by one-way patterns, §7.4). */
  readonly c2: CipherState;
  readonly handshakeHash: Uint8Array;
  /**
   * Trickle extension: the third HKDF output of Split (SymmetricState.splitWithResumption), a
   * secret of both parties used as the next IKpsk1 psk. Wiped with the state.
   */
  readonly resumption: Uint8Array;
}

/** HandshakeState.fork()'s private constructor argument. */
const FORK_OF = Symbol('fork of');

function keyError(message: string): TrickleError {
  return new TrickleError('ERR_NOISE_KEY', 'secure', message);
}

export class HandshakeState {
  readonly protocol: Protocol;
  readonly role: Role;
  #ss: SymmetricState;
  #s: KeyPair | null;
  #e: KeyPair | null;
  #rs: Uint8Array | null;
  #re: Uint8Array | null;
  #psks: Uint8Array[];
  #resolvePsk: ((remoteStatic: Uint8Array | null) => Uint8Array) | undefined;
  #pskIndex = 0;
  #msgIndex = 0;
  #randomBytes: RandomBytes | undefined;
  #fixedEphemeral: Uint8Array | undefined;
  #split: SplitResult | null = null;
  #failed = false;

  /** Initialize(handshake_pattern, initiator, prologue, s, e, rs, re) plus psks (§5.3, §9). */
  constructor(opts: HandshakeOptions) {
    const src = (opts as { [FORK_OF]?: HandshakeState })[FORK_OF];
    if (src !== undefined) {
      // fork(): copy every field (keys are copied, never shared: each copy wipes its own).
      this.protocol = src.protocol;
      this.role = src.role;
      this.#ss = src.#ss.fork();
      const copyPair = (k: KeyPair | null): KeyPair | null => (k === null ? null : { privateKey: k.privateKey.slice(), publicKey: k.publicKey.slice() });
      this.#s = src.#s; // the caller's static key: never wiped here, so shared
      this.#e = copyPair(src.#e);
      this.#rs = src.#rs?.slice() ?? null;
      this.#re = src.#re?.slice() ?? null;
      this.#psks = src.#psks.map((p) => p.slice());
      this.#resolvePsk = src.#resolvePsk;
      this.#pskIndex = src.#pskIndex;
      this.#msgIndex = src.#msgIndex;
      this.#randomBytes = src.#randomBytes;
      this.#fixedEphemeral = src.#fixedEphemeral?.slice();
      return;
    }
    this.protocol = resolveProtocol(opts.protocolName);
    this.role = opts.initiator ? 'initiator' : 'responder';
    const { pattern, dh } = this.protocol;
    this.#s = opts.s ?? null;
    this.#e = opts.e ?? null;
    this.#rs = opts.rs?.slice() ?? null;
    this.#re = opts.re?.slice() ?? null;
    this.#randomBytes = opts.randomBytes;
    this.#fixedEphemeral = opts.fixedEphemeralKeyForTestingOnly?.slice();
    for (const [k, what] of [[this.#s?.publicKey, 's'], [this.#e?.publicKey, 'e'], [this.#rs, 'rs'], [this.#re, 're']] as const) {
      if (k !== undefined && k !== null && k.length !== dh.DHLEN) throw keyError(`${what} must be ${dh.DHLEN} bytes`);
    }

    const pskTokens = pattern.messages.reduce((n, m) => n + m.tokens.filter((t) => t === 'psk').length, 0);
    const psks = opts.psks ?? [];
    this.#resolvePsk = opts.resolvePsk;
    if (psks.length !== pskTokens && !(psks.length === 0 && this.#resolvePsk !== undefined)) {
      throw keyError(`${pattern.name} needs ${pskTokens} psk(s), got ${psks.length}`);
    }
    if (psks.some((p) => p.length !== PSK_LEN)) throw keyError(`a psk must be ${PSK_LEN} bytes`);
    this.#psks = psks.map((p) => p.slice());

    const mine = pattern.messages.filter((m) => m.from === this.role);
    if (this.#s === null && mine.some((m) => m.tokens.includes('s'))) throw keyError(`${pattern.name} needs a local static key`);
    if (this.#e === null && this.#fixedEphemeral === undefined && this.#randomBytes === undefined && mine.some((m) => m.tokens.includes('e'))) {
      throw keyError('randomBytes is required to generate an ephemeral key');
    }

    this.#ss = new SymmetricState(this.protocol.name, this.protocol.cipher, this.protocol.hash);
    this.#ss.mixHash(opts.prologue ?? new Uint8Array(0));
    // §5.3: initiator's pre-message keys first, then the responder's, in listed order.
    this.#preMessage('initiator', pattern.initiatorPreMessage);
    this.#preMessage('responder', pattern.responderPreMessage);
  }

  #preMessage(owner: Role, tokens: readonly PreMessageToken[]): void {
    const local = owner === this.role;
    for (const t of tokens) {
      const key = t === 's' ? (local ? this.#s?.publicKey : this.#rs) : (local ? this.#e?.publicKey : this.#re);
      if (key === undefined || key === null) {
        throw keyError(`${this.protocol.pattern.name} pre-message needs ${local ? '' : 'the remote '}${t === 's' ? 'static' : 'ephemeral'} key`);
      }
      this.#ss.mixHash(key);
      // §9.2: in a PSK handshake every "e" MixHash is followed by MixKey(e.public_key).
      if (t === 'e' && this.protocol.pattern.psk) this.#ss.mixKey(key);
    }
  }

  /** True once the last handshake message has been written or read. */
  isFinished(): boolean {
    return this.#split !== null;
  }

  /** True if the next handshake message is ours to write. */
  isMyTurn(): boolean {
    const m = this.protocol.pattern.messages[this.#msgIndex];
    return m !== undefined && m.from === this.role && !this.#failed;
  }

  /** GetHandshakeHash() (§5.2): the channel binding value, final once the handshake is finished. */
  getHandshakeHash(): Uint8Array {
    this.#live();
    return this.#split?.handshakeHash.slice() ?? this.#ss.getHandshakeHash();
  }

  /** The peer's static public key once known (to pin it for a later IK). */
  getRemoteStatic(): Uint8Array | null {
    return this.#rs?.slice() ?? null;
  }

  /** The Split() result, available once finished. */
  split(): SplitResult {
    this.#live();
    if (this.#split === null) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'handshake not finished');
    return this.#split;
  }

  /** WriteMessage(payload, message_buffer) (§5.3): returns the message bytes. */
  writeMessage(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    this.#live();
    const msg = this.#nextMessage('write');
    try {
      const parts: Uint8Array[] = [];
      for (const token of msg.tokens) {
        switch (token) {
          case 'e': {
            if (this.#e !== null) throw keyError('ephemeral already set');
            this.#e = this.#generateEphemeral();
            parts.push(this.#e.publicKey);
            this.#ss.mixHash(this.#e.publicKey);
            if (this.protocol.pattern.psk) this.#ss.mixKey(this.#e.publicKey);
            break;
          }
          case 's':
            if (this.#s === null) throw keyError('no local static key');
            parts.push(this.#ss.encryptAndHash(this.#s.publicKey));
            break;
          case 'psk':
            this.#mixPsk();
            break;
          default:
            this.#dhToken(token);
        }
      }
      parts.push(this.#ss.encryptAndHash(payload));
      const out = concatBytes(...parts);
      if (out.length > MAX_MESSAGE_LEN) throw new TrickleError('ERR_NOISE_HANDSHAKE', 'secure', `handshake message of ${out.length} bytes exceeds ${MAX_MESSAGE_LEN}`);
      this.#advance();
      return out;
    } catch (e) {
      this.#fail();
      throw e;
    }
  }

  /** ReadMessage(message, payload_buffer) (§5.3): returns the decrypted payload. */
  readMessage(message: Uint8Array): Uint8Array {
    this.#live();
    const msg = this.#nextMessage('read');
    try {
      if (message.length > MAX_MESSAGE_LEN) throw new WireError('ERR_NOISE_HANDSHAKE', 'secure', `handshake message of ${message.length} bytes exceeds ${MAX_MESSAGE_LEN}`);
      const { DHLEN } = this.protocol.dh;
      let off = 0;
      const take = (n: number): Uint8Array => {
        if (off + n > message.length) {
          throw new WireError('ERR_NOISE_HANDSHAKE', 'secure', `handshake message too short (${message.length} bytes)`);
        }
        const b = message.slice(off, off + n);
        off += n;
        return b;
      };
      for (const token of msg.tokens) {
        switch (token) {
          case 'e': {
            const re = take(DHLEN);
            this.#re = re;
            this.#ss.mixHash(re);
            if (this.protocol.pattern.psk) this.#ss.mixKey(re);
            break;
          }
          case 's': {
            const len = DHLEN + (this.#ss.cipherState.hasKey() ? TAG_LEN : 0);
            this.#rs = this.#ss.decryptAndHash(take(len));
            break;
          }
          case 'psk':
            this.#mixPsk();
            break;
          default:
            this.#dhToken(token);
        }
      }
      const payload = this.#ss.decryptAndHash(message.subarray(off));
      this.#advance();
      return payload;
    } catch (e) {
      this.#fail();
      throw e;
    }
  }

  /**
   * An independent copy of a handshake in progress (not finished), to try reading a message that
   * may be forged without losing this state: readMessage fails closed, so a responder that read
   * an attacker's last message on its only copy would lose the genuine handshake.
   */
  fork(): HandshakeState {
    this.#live();
    if (this.#split !== null) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'a finished handshake cannot be forked');
    return new HandshakeState({ protocolName: this.protocol.name, initiator: this.role === 'initiator', [FORK_OF]: this } as HandshakeOptions);
  }

  /** Wipe every secret; the object is unusable afterwards. */
  destroy(): void {
    this.#fail();
  }

  #nextMessage(op: 'write' | 'read') {
    const msg = this.protocol.pattern.messages[this.#msgIndex];
    if (msg === undefined) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'handshake already finished');
    const mine = msg.from === this.role;
    if ((op === 'write') !== mine) {
      this.#fail();
      throw new TrickleError('ERR_NOISE_STATE', 'secure', `out of turn: message ${this.#msgIndex + 1} is the ${msg.from}'s to write`);
    }
    return msg;
  }

  #generateEphemeral(): KeyPair {
    const { dh } = this.protocol;
    if (this.#fixedEphemeral !== undefined) return dh.keyPairFromPrivate(this.#fixedEphemeral);
    if (this.#randomBytes === undefined) throw keyError('randomBytes is required to generate an ephemeral key');
    return dh.generateKeyPair(this.#randomBytes);
  }

  #mixPsk(): void {
    let psk = this.#psks[this.#pskIndex++];
    if (psk === undefined && this.#resolvePsk !== undefined) {
      psk = this.#resolvePsk(this.#rs?.slice() ?? null);
      if (psk.length !== PSK_LEN) throw keyError(`a psk must be ${PSK_LEN} bytes`);
      psk = psk.slice();
      this.#psks.push(psk);
    }
    if (psk === undefined) throw keyError('not enough psks');
    this.#ss.mixKeyAndHash(psk);
  }

  /** ee, es, se, ss (§5.3): the first letter is the initiator's key, the second the responder's. */
  #dhToken(token: 'ee' | 'es' | 'se' | 'ss'): void {
    const initiatorKey = token[0] === 'e' ? 'e' : 's';
    const responderKey = token[1] === 'e' ? 'e' : 's';
    const [localWhich, remoteWhich] = this.role === 'initiator' ? [initiatorKey, responderKey] : [responderKey, initiatorKey];
    const local = localWhich === 'e' ? this.#e : this.#s;
    const remote = remoteWhich === 'e' ? this.#re : this.#rs;
    if (local === null) throw keyError(`${token}: no local ${localWhich === 'e' ? 'ephemeral' : 'static'} key`);
    if (remote === null) throw keyError(`${token}: no remote ${remoteWhich === 'e' ? 'ephemeral' : 'static'} key`);
    const shared = this.protocol.dh.dh(local, remote);
    this.#ss.mixKey(shared);
    shared.fill(0);
  }

  #advance(): void {
    this.#msgIndex++;
    if (this.#msgIndex === this.protocol.pattern.messages.length) {
      const handshakeHash = this.#ss.getHandshakeHash();
      const [{ c1, resumption }, c2] = this.#ss.splitWithResumption();
      this.#split = { c1, c2, handshakeHash, resumption };
      this.#ss.destroy();
      this.#wipeKeys();
    }
  }

  #wipeKeys(): void {
    this.#e?.privateKey.fill(0);
    this.#e = null;
    this.#fixedEphemeral?.fill(0);
    for (const p of this.#psks) p.fill(0);
  }

  #fail(): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#ss.destroy();
    this.#wipeKeys();
    if (this.#split !== null) {
      this.#split.c1.destroy();
      this.#split.c2.destroy();
      this.#split.resumption.fill(0);
    }
  }

  #live(): void {
    if (this.#failed) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'handshake failed or destroyed');
  }
}
