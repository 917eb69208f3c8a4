/**
 * Trickle's transport phase over a lossy, reordering radio link.
 *
 * After Split (Noise spec rev 34 §5.2) each direction has a key and a 64-bit counter n that is
 * used as the AEAD nonce exactly as a CipherState would (§5.1; ChaChaPoly nonce layout §12.3).
 * Because frames are lost and reordered, nonces are explicit (the approach of §11.4 "Out-of-order
 * transport messages" and of snow's StatelessTransportState), but only their low 8 bits travel:
 *
 *   frame = nonce[7:0] (1 byte) ‖ AEAD output          overhead = 1 + 16 = 17 bytes
 *
 *   encrypt mode:      AEAD output = ENCRYPT(k, n, ad = header, plaintext)  (ciphertext ‖ tag)
 *   authenticate mode: AEAD output = payload ‖ ENCRYPT(k, n, ad = len16(header) ‖ header ‖ payload, "")
 *     for bands where encrypting is unlawful: the payload is in clear, the 16-byte tag
 *     authenticates header and payload. len16 (big-endian header length) keeps the split
 *     between header and payload unambiguous. A session uses one mode for its whole life.
 *
 * Receiving: the full nonce is the unique n ≡ byte (mod 256) in
 * [highest − 63, highest + 192], where highest is the highest nonce accepted so far: 64 nonces
 * back are covered by a replay bitmap (duplicates and anything older are ERR_NOISE_REPLAY), and
 * up to 191 consecutive lost frames ahead are tolerated. State changes only after the AEAD tag
 * verifies, so forged or corrupted frames are dropped without effect (a radio link is noisy and
 * anyone can transmit: tearing the session down on a bad frame would be a free denial of
 * service; the handshake, by contrast, fails closed).
 *
 * Rekey (§11.3): nonce n is protected by key k_e with e = floor(n / 2^K): k_0 is the key from
 * Split and k_{e+1} = REKEY(k_e) (§4.2). Both sides derive e from the counter, so no bytes are
 * spent to agree on it. K ≥ 8 keeps the receive window (256 nonces) within two adjacent epochs;
 * the receiver keeps the previous epoch's key only while the window still reaches into it.
 * n = 2^64 − 1 is never used (§5.1); sending past 2^64 − 2 is ERR_NOISE_NONCE.
 *
 * Restart without a new handshake: exportState() returns a JSON-serialisable snapshot and
 * records it as the persisted high-water mark. From then on the sender never gets more than
 * `persistMargin` nonces past the last snapshot (the `persist` hook is called synchronously
 * when needed; without a hook, seal throws ERR_NOISE_STATE until exportState() is called).
 * importState() resumes sending at snapshot + margin, so no (key, nonce) pair is ever reused,
 * and treats every received nonce up to snapshot + receiveMargin − 1 as already seen, so no
 * frame is delivered twice: a frame is delivered without a new snapshot only while its nonce is
 * below highest + receiveMargin (default: persistMargin). The cost: up to receiveMargin − 1 of
 * the peer's frames after our restart are dropped and retransmitted by CoAP; receiveMargin 1
 * (SecureLink's choice) means one snapshot per newly highest received frame and no loss at all.
 * The snapshot must be durably stored before the next seal/open.
 * margin ≤ 128 keeps a peer's restart jump inside our 192-nonce look-ahead.
 *
 * Link frame format (`nonceBits: 7`, used by SecureLink, secure-link.ts): the first byte is
 * 0b0nnnnnnn, its top bit 0 marking a transport frame (control frames have it set), its low 7
 * bits the nonce's low bits; the byte itself is bound as associated data (ad = byte0 ‖ header),
 * so flipping the kind bit or the nonce bits fails the tag. The window is then 32 nonces back
 * and 96 ahead (32 + 96 = 128), persistMargin ≤ 96 (default 32).
 *
 * Resynchronisation (`resyncWraps: R`, 0..16): a frame whose in-window candidate fails the tag
 * (or is a replay) is also tried at the candidates 1..R wraps (2^nonceBits) further ahead, so
 * a long fade (up to look-ahead + R·2^nonceBits lost frames) or a peer's restart jump does not
 * wedge the session. The price is R extra AEAD trials for a forged frame and log2(R+1) bits off
 * the 128-bit forgery bound (Poly1305: ≈ 2^-100 per trial for short frames).
 */
import { TrickleError, WireError } from '../errors.ts';
import { concatBytes, fromHex, toHex } from '../util/bytes.ts';
import { ChaChaPoly, type CipherFunction, KEY_LEN, MAX_NONCE, TAG_LEN } from './cipher-functions.ts';
import type { HandshakeState } from './handshake-state.ts';

export type TransportMode = 'encrypt' | 'authenticate';

/** Bytes of nonce on air. */
export const NONCE_WIRE_LEN = 1;
/** Bytes a frame adds to its payload: the nonce byte and the AEAD tag. */
export const FRAME_OVERHEAD = NONCE_WIRE_LEN + TAG_LEN;
/** Nonces at and below the highest accepted one that the replay bitmap remembers (8-bit format). */
export const REPLAY_WINDOW = 64;
/** How far past the highest accepted nonce a frame may be (256 − REPLAY_WINDOW). */
export const NONCE_LOOKAHEAD = 256 - REPLAY_WINDOW;
export const DEFAULT_REKEY_INTERVAL_LOG2 = 16;
export const DEFAULT_PERSIST_MARGIN = 64;
export const MAX_PERSIST_MARGIN = 128;
export const MAX_RESYNC_WRAPS = 16;

export type NonceBits = 7 | 8;

/** Window geometry per on-air nonce width: window + lookAhead = 2^bits. */
export const NONCE_FORMATS: Readonly<Record<NonceBits, { readonly window: number; readonly lookAhead: number; readonly defaultMargin: number; readonly maxMargin: number }>> = Object.freeze({
  8: Object.freeze({ window: REPLAY_WINDOW, lookAhead: NONCE_LOOKAHEAD, defaultMargin: DEFAULT_PERSIST_MARGIN, maxMargin: MAX_PERSIST_MARGIN }),
  7: Object.freeze({ window: 32, lookAhead: 96, defaultMargin: 32, maxMargin: 96 }),
});

/** Largest nonce a message may use: 2^64 − 1 is reserved (§5.1). */
const LAST_MESSAGE_NONCE = MAX_NONCE - 1n;

export interface TransportOptions {
  readonly mode?: TransportMode;
  /** K: rekey every 2^K messages per direction, 8 ≤ K ≤ 62. Both peers must agree. */
  readonly rekeyIntervalLog2?: number;
  /** Nonces that may be used beyond the last persisted snapshot, 1 ≤ margin ≤ 128. */
  readonly persistMargin?: number;
  /** Received nonces deliverable beyond the last snapshot's highest (1..max margin; default persistMargin). */
  readonly receiveMargin?: number;
  /** Called synchronously with a snapshot that must be durable when the call returns. */
  readonly persist?: (snapshot: TransportSnapshot) => void;
  /** On-air nonce bits: 8 (byte 0 = nonce low byte) or 7 (byte 0 = 0b0nnnnnnn, bound as AD). Default 8. */
  readonly nonceBits?: NonceBits;
  /** Extra candidates, in wraps of 2^nonceBits ahead, tried when the in-window one fails (0..16, default 0). */
  readonly resyncWraps?: number;
}

/** Plain JSON: bigints are decimal strings, keys are hex. */
export interface TransportSnapshot {
  readonly version: 1;
  readonly mode: TransportMode;
  readonly rekeyIntervalLog2: number;
  readonly persistMargin: number;
  /** Absent: equal to persistMargin. */
  readonly receiveMargin?: number;
  /** Absent in snapshots of the 8-bit format written before it existed. */
  readonly nonceBits?: NonceBits;
  readonly resyncWraps?: number;
  readonly send: { readonly nonce: string; readonly epoch: string; readonly key: string };
  readonly receive: {
    /** Highest accepted nonce, "-1" if none. */
    readonly highest: string;
    /** Replay bitmap: bit i set = nonce (highest − i) accepted. */
    readonly bitmap: string;
    readonly epoch: string;
    readonly key: string;
    readonly previousKey: string | null;
  };
}

interface Settings {
  mode: TransportMode;
  k: bigint;
  margin: bigint;
  recvMargin: bigint;
  persist: ((s: TransportSnapshot) => void) | undefined;
  nonceBits: NonceBits;
  resyncWraps: number;
}

function settings(opts: TransportOptions | undefined): Settings {
  const mode = opts?.mode ?? 'encrypt';
  const nonceBits = opts?.nonceBits ?? 8;
  if (nonceBits !== 7 && nonceBits !== 8) throw stateError(`nonceBits must be 7 or 8, got ${String(nonceBits)}`);
  const fmt = NONCE_FORMATS[nonceBits];
  const k = opts?.rekeyIntervalLog2 ?? DEFAULT_REKEY_INTERVAL_LOG2;
  const margin = opts?.persistMargin ?? fmt.defaultMargin;
  const recvMargin = opts?.receiveMargin ?? margin;
  const resyncWraps = opts?.resyncWraps ?? 0;
  if (mode !== 'encrypt' && mode !== 'authenticate') throw stateError(`mode must be "encrypt" or "authenticate", got ${String(mode)}`);
  if (!Number.isInteger(k) || k < 8 || k > 62) throw stateError(`rekeyIntervalLog2 must be an integer in 8..62, got ${k}`);
  if (!Number.isInteger(margin) || margin < 1 || margin > fmt.maxMargin) {
    throw stateError(`persistMargin must be an integer in 1..${fmt.maxMargin}, got ${margin}`);
  }
  if (!Number.isInteger(recvMargin) || recvMargin < 1 || recvMargin > fmt.maxMargin) {
    throw stateError(`receiveMargin must be an integer in 1..${fmt.maxMargin}, got ${recvMargin}`);
  }
  if (!Number.isInteger(resyncWraps) || resyncWraps < 0 || resyncWraps > MAX_RESYNC_WRAPS) {
    throw stateError(`resyncWraps must be an integer in 0..${MAX_RESYNC_WRAPS}, got ${resyncWraps}`);
  }
  return { mode, k: BigInt(k), margin: BigInt(margin), recvMargin: BigInt(recvMargin), persist: opts?.persist, nonceBits, resyncWraps };
}

function stateError(message: string, detail?: Record<string, unknown>): TrickleError {
  return new TrickleError('ERR_NOISE_STATE', 'secure', message, detail);
}

interface InitialState {
  sendKey: Uint8Array;
  sendNonce: bigint;
  sendEpoch: bigint;
  recvKey: Uint8Array;
  recvEpoch: bigint;
  recvPrevKey: Uint8Array | null;
  highest: bigint;
  bitmap: bigint;
  /** null: persistence not engaged (no snapshot exists, so a restart cannot resume this session). */
  sendLimit: bigint | null;
  recvLimit: bigint | null;
}

export class SecureTransport {
  readonly mode: TransportMode;
  readonly rekeyIntervalLog2: number;
  readonly nonceBits: NonceBits;
  readonly resyncWraps: number;
  readonly #cipher: CipherFunction = ChaChaPoly;
  readonly #k: bigint;
  readonly #margin: bigint;
  readonly #recvMargin: bigint;
  readonly #persist: ((s: TransportSnapshot) => void) | undefined;
  readonly #window: bigint;
  readonly #bitmapMask: bigint;
  #s: InitialState;
  #closed = false;

  private constructor(st: Settings, state: InitialState) {
    this.mode = st.mode;
    this.rekeyIntervalLog2 = Number(st.k);
    this.nonceBits = st.nonceBits;
    this.resyncWraps = st.resyncWraps;
    this.#window = BigInt(NONCE_FORMATS[st.nonceBits].window);
    this.#bitmapMask = (1n << this.#window) - 1n;
    this.#k = st.k;
    this.#margin = st.margin;
    this.#recvMargin = st.recvMargin;
    this.#persist = st.persist;
    this.#s = state;
    if (st.persist !== undefined && state.sendLimit === null) {
      // A hook means the caller persists: engage the limits from the start.
      state.sendLimit = state.sendNonce + st.margin;
      state.recvLimit = state.highest + st.recvMargin;
    }
  }

  /**
   * Take the Split() keys of a finished interactive handshake (the CipherStates are wiped).
   * The initiator sends with c1 and receives with c2; the responder the other way round.
   */
  static fromHandshake(hs: HandshakeState, opts?: TransportOptions): SecureTransport {
    if (hs.protocol.pattern.oneWay) throw stateError('a one-way pattern has no return direction for a transport');
    if (hs.protocol.cipher.name !== 'ChaChaPoly') throw stateError('the transport implements ChaChaPoly only');
    const { c1, c2 } = hs.split();
    const [send, recv] = hs.role === 'initiator' ? [c1, c2] : [c2, c1];
    const s = send.detachKey();
    const r = recv.detachKey();
    return new SecureTransport(settings(opts), {
      sendKey: s.key,
      sendNonce: s.nonce,
      sendEpoch: 0n,
      recvKey: r.key,
      recvEpoch: 0n,
      recvPrevKey: null,
      highest: r.nonce - 1n,
      bitmap: 0n,
      sendLimit: null,
      recvLimit: null,
    });
  }

  /** For tests and key-agreement layers that already hold split keys. */
  static fromKeys(sendKey: Uint8Array, receiveKey: Uint8Array, opts?: TransportOptions): SecureTransport {
    if (sendKey.length !== KEY_LEN || receiveKey.length !== KEY_LEN) {
      throw new TrickleError('ERR_NOISE_KEY', 'secure', `transport keys must be ${KEY_LEN} bytes`);
    }
    return new SecureTransport(settings(opts), {
      sendKey: sendKey.slice(), sendNonce: 0n, sendEpoch: 0n,
      recvKey: receiveKey.slice(), recvEpoch: 0n, recvPrevKey: null,
      highest: -1n, bitmap: 0n, sendLimit: null, recvLimit: null,
    });
  }

  /**
   * Resume from a snapshot: sending continues at snapshot + margin, receiving treats every
   * nonce up to the snapshot's highest + margin as seen. A fresh snapshot must be persisted (the
   * hook does it) before the first frame is sent or delivered.
   */
  static importState(snapshot: TransportSnapshot, opts?: { readonly persist?: (snapshot: TransportSnapshot) => void }): SecureTransport {
    const bad = (what: string): TrickleError => stateError(`invalid transport snapshot: ${what}`);
    if (snapshot === null || typeof snapshot !== 'object' || snapshot.version !== 1) throw bad('version');
    // mode, K, margin and format come from the snapshot: the margin in force when it was taken
    // bounds what may have been used since.
    const st = settings({
      mode: snapshot.mode,
      rekeyIntervalLog2: snapshot.rekeyIntervalLog2,
      persistMargin: snapshot.persistMargin,
      receiveMargin: snapshot.receiveMargin ?? snapshot.persistMargin,
      nonceBits: snapshot.nonceBits ?? 8,
      resyncWraps: snapshot.resyncWraps ?? 0,
      ...(opts?.persist !== undefined ? { persist: opts.persist } : {}),
    });
    const margin = st.margin;
    const int = (s: unknown, what: string, min: bigint): bigint => {
      if (typeof s !== 'string' || !/^-?[0-9]{1,20}$/.test(s)) throw bad(what);
      const v = BigInt(s);
      if (v < min || v > MAX_NONCE) throw bad(what);
      return v;
    };
    const key = (s: unknown, what: string): Uint8Array => {
      if (typeof s !== 'string' || !/^[0-9a-f]{64}$/.test(s)) throw bad(what);
      return fromHex(s);
    };
    const { send, receive } = snapshot;
    if (send === null || typeof send !== 'object' || receive === null || typeof receive !== 'object') throw bad('send/receive');
    const sendNonce = int(send.nonce, 'send.nonce', 0n) + margin;
    const sendEpoch = int(send.epoch, 'send.epoch', 0n);
    // The epoch is that of the last nonce used (or of the next): anything else is a damaged file,
    // and one far behind would make the next seal derive keys for ever.
    const snapEpoch = (sendNonce - margin) >> st.k;
    if (sendEpoch > snapEpoch) throw bad('send.epoch ahead of send.nonce');
    if (snapEpoch - sendEpoch > 1n) throw bad('send.epoch far behind send.nonce');
    const highestSnap = int(receive.highest, 'receive.highest', -1n);
    const recvEpoch = int(receive.epoch, 'receive.epoch', 0n);
    const highEpoch = highestSnap < 0n ? 0n : highestSnap >> st.k;
    if (recvEpoch > highEpoch || highEpoch - recvEpoch > 1n) throw bad('receive.epoch does not match receive.highest');
    // Delivered without a newer snapshot: at most highest + receiveMargin − 1 (see exportState).
    const highest = highestSnap + st.recvMargin - 1n;
    int(receive.bitmap, 'receive.bitmap', 0n);
    return new SecureTransport(st, {
      sendKey: key(send.key, 'send.key'),
      sendNonce,
      sendEpoch,
      recvKey: key(receive.key, 'receive.key'),
      recvEpoch,
      recvPrevKey: receive.previousKey === null ? null : key(receive.previousKey, 'receive.previousKey'),
      highest,
      bitmap: (1n << BigInt(NONCE_FORMATS[st.nonceBits].window)) - 1n,
      // Nothing may be sent or delivered before a snapshot taken after this import is durable:
      // a second restart from the same snapshot would otherwise reuse nonces / replay frames.
      sendLimit: sendNonce,
      recvLimit: highest,
    });
  }

  /** Next nonce this side will send (for tests and diagnostics). */
  get sendNonce(): bigint {
    return this.#s.sendNonce;
  }

  /** Highest nonce accepted from the peer, −1 if none. */
  get highestReceived(): bigint {
    return this.#s.highest;
  }

  /**
   * Protect one frame: `header` travels in clear next to the frame and is bound as associated
   * data; returns nonce byte ‖ AEAD output (payload length + FRAME_OVERHEAD bytes).
   */
  seal(header: Uint8Array, plaintext: Uint8Array): Uint8Array {
    this.#live();
    const s = this.#s;
    const n = s.sendNonce;
    if (n > LAST_MESSAGE_NONCE) throw new TrickleError('ERR_NOISE_NONCE', 'secure', 'send nonces exhausted: re-handshake');
    if (s.sendLimit !== null && n >= s.sendLimit) {
      if (this.#persist === undefined) {
        throw stateError('send high-water mark not persisted: call exportState() and store it before sending more', { nonce: n.toString() });
      }
      this.#runPersist();
    }
    const epoch = n >> this.#k;
    while (s.sendEpoch < epoch) {
      const next = this.#cipher.rekey(s.sendKey);
      s.sendKey.fill(0);
      s.sendKey = next;
      s.sendEpoch++;
    }
    const byte0 = Number(n & ((1n << BigInt(this.nonceBits)) - 1n));
    const ad = this.#ad(byte0, header);
    const body = this.mode === 'encrypt'
      ? this.#cipher.encrypt(s.sendKey, n, ad, plaintext)
      : concatBytes(plaintext, this.#cipher.encrypt(s.sendKey, n, authOnlyAd(ad, plaintext), new Uint8Array(0)));
    s.sendNonce = n + 1n;
    const frame = new Uint8Array(NONCE_WIRE_LEN + body.length);
    frame[0] = byte0;
    frame.set(body, NONCE_WIRE_LEN);
    return frame;
  }

  /**
   * Verify and open one frame received with `header`. Throws WireError ERR_NOISE_DECRYPT
   * (forged, corrupted, wrong session or wrong header) or ERR_NOISE_REPLAY (duplicate or older
   * than the window); in both cases the transport state is unchanged.
   */
  open(header: Uint8Array, frame: Uint8Array): Uint8Array {
    this.#live();
    const s = this.#s;
    if (frame.length < FRAME_OVERHEAD) {
      throw new WireError('ERR_NOISE_DECRYPT', 'secure', `frame of ${frame.length} bytes is shorter than the ${FRAME_OVERHEAD}-byte overhead`);
    }
    const byte0 = frame[0]!;
    if (this.nonceBits === 7 && (byte0 & 0x80) !== 0) {
      throw new WireError('ERR_NOISE_DECRYPT', 'secure', 'not a transport frame (kind bit set)');
    }
    const primary = reconstructNonce(s.highest, byte0, this.nonceBits);
    // The in-window candidate first, then (resync) whole wraps further ahead.
    let firstError: WireError | null = null;
    const wrap = 1n << BigInt(this.nonceBits);
    for (let j = 0; j <= this.resyncWraps; j++) {
      const n = primary + BigInt(j) * wrap;
      const refusal = this.#refuse(n);
      if (refusal !== null) {
        firstError ??= refusal;
        continue;
      }
      if (s.recvLimit !== null && n >= s.recvLimit && this.#persist === undefined) {
        throw stateError('receive high-water mark not persisted: call exportState() and store it', { nonce: n.toString() });
      }
      const out = this.#tryOpen(n, byte0, header, frame);
      if (out !== null) return out;
      firstError ??= new WireError('ERR_NOISE_DECRYPT', 'secure', 'AEAD authentication failed');
    }
    throw firstError ?? new WireError('ERR_NOISE_DECRYPT', 'secure', 'AEAD authentication failed');
  }

  /** Why nonce n cannot be accepted before any crypto (null: worth a trial). */
  #refuse(n: bigint): WireError | null {
    const s = this.#s;
    if (n < 0n) return new WireError('ERR_NOISE_REPLAY', 'secure', 'nonce older than the replay window');
    if (n > LAST_MESSAGE_NONCE) return new WireError('ERR_NOISE_NONCE', 'secure', 'nonce beyond the last usable value');
    if (n <= s.highest) {
      if (s.highest - n >= this.#window) return new WireError('ERR_NOISE_REPLAY', 'secure', 'nonce older than the replay window');
      const bit = 1n << (s.highest - n);
      if ((s.bitmap & bit) !== 0n) return new WireError('ERR_NOISE_REPLAY', 'secure', 'nonce already accepted', { nonce: n.toString() });
    }
    const epoch = n >> this.#k;
    if (epoch < s.recvEpoch && !(epoch === s.recvEpoch - 1n && s.recvPrevKey !== null)) {
      return new WireError('ERR_NOISE_REPLAY', 'secure', 'nonce belongs to a retired key epoch');
    }
    return null;
  }

  /** Trial-open at nonce n; commits and returns the plaintext if the tag verifies, else null. */
  #tryOpen(n: bigint, byte0: number, header: Uint8Array, frame: Uint8Array): Uint8Array | null {
    const s = this.#s;
    // Derive (but do not yet adopt) the key of n's epoch: derived[i] is the key of recvEpoch + 1 + i.
    const epoch = n >> this.#k;
    const derived: Uint8Array[] = [];
    let key: Uint8Array;
    if (epoch === s.recvEpoch) key = s.recvKey;
    else if (epoch === s.recvEpoch - 1n && s.recvPrevKey !== null) key = s.recvPrevKey;
    else {
      key = s.recvKey;
      for (let e = s.recvEpoch; e < epoch; e++) {
        key = this.#cipher.rekey(key);
        derived.push(key);
      }
    }

    const ad = this.#ad(byte0, header);
    const body = frame.subarray(NONCE_WIRE_LEN);
    let plaintext: Uint8Array;
    try {
      if (this.mode === 'encrypt') {
        plaintext = this.#cipher.decrypt(key, n, ad, body);
      } else {
        const payload = body.subarray(0, body.length - TAG_LEN);
        this.#cipher.decrypt(key, n, authOnlyAd(ad, payload), body.subarray(body.length - TAG_LEN));
        plaintext = payload.slice();
      }
    } catch {
      for (const d of derived) d.fill(0);
      return null;
    }

    // Authentic: commit.
    if (derived.length > 0) {
      const before = derived.length >= 2 ? derived[derived.length - 2]! : s.recvKey;
      s.recvPrevKey?.fill(0);
      if (before !== s.recvKey) s.recvKey.fill(0);
      for (const d of derived.slice(0, -2)) d.fill(0);
      s.recvPrevKey = before;
      s.recvKey = key;
      s.recvEpoch = epoch;
    }
    if (n > s.highest) {
      const shift = n - s.highest;
      s.bitmap = shift >= this.#window ? 1n : ((s.bitmap << shift) | 1n) & this.#bitmapMask;
      s.highest = n;
    } else {
      s.bitmap |= 1n << (s.highest - n);
    }
    // Forward secrecy: drop the previous epoch's key once the window no longer reaches it.
    if (s.recvPrevKey !== null && (s.highest - (this.#window - 1n)) >> this.#k >= s.recvEpoch) {
      s.recvPrevKey.fill(0);
      s.recvPrevKey = null;
    }
    if (s.recvLimit !== null && s.highest >= s.recvLimit) this.#runPersist();
    return plaintext;
  }

  /** Associated data: the header (8-bit format); byte 0 ‖ header (7-bit link format). */
  #ad(byte0: number, header: Uint8Array): Uint8Array {
    return this.nonceBits === 8 ? header : concatBytes(new Uint8Array([byte0]), header);
  }

  /**
   * A JSON-serialisable snapshot, recorded as the persisted high-water mark: from now on the
   * sender stays below snapshot + margin until the next export. Contains secret keys.
   */
  exportState(): TransportSnapshot {
    this.#live();
    const s = this.#s;
    s.sendLimit = s.sendNonce + this.#margin;
    s.recvLimit = s.highest + this.#recvMargin;
    return {
      version: 1,
      mode: this.mode,
      rekeyIntervalLog2: this.rekeyIntervalLog2,
      persistMargin: Number(this.#margin),
      ...(this.#recvMargin !== this.#margin ? { receiveMargin: Number(this.#recvMargin) } : {}),
      ...(this.nonceBits !== 8 ? { nonceBits: this.nonceBits } : {}),
      ...(this.resyncWraps !== 0 ? { resyncWraps: this.resyncWraps } : {}),
      send: { nonce: s.sendNonce.toString(), epoch: s.sendEpoch.toString(), key: toHex(s.sendKey) },
      receive: {
        highest: s.highest.toString(),
        bitmap: s.bitmap.toString(),
        epoch: s.recvEpoch.toString(),
        key: toHex(s.recvKey),
        previousKey: s.recvPrevKey === null ? null : toHex(s.recvPrevKey),
      },
    };
  }

  /** Wipe all keys; every later call throws ERR_NOISE_STATE. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#s.sendKey.fill(0);
    this.#s.recvKey.fill(0);
    this.#s.recvPrevKey?.fill(0);
  }

  #runPersist(): void {
    try {
      this.#persist!(this.exportState());
    } catch (e) {
      // Cannot prove the high-water mark is durable: fail closed.
      this.destroy();
      throw new TrickleError('ERR_NOISE_STATE', 'secure', 'persist hook failed; transport closed', undefined, { cause: e });
    }
  }

  #live(): void {
    if (this.#closed) throw stateError('transport is closed');
  }
}

/**
 * The full nonce for on-air low bits: the unique n ≡ low (mod 2^bits) with
 * highest − (window − 1) ≤ n ≤ highest + lookAhead (NONCE_FORMATS). May be negative (none valid).
 */
export function reconstructNonce(highest: bigint, low: number, nonceBits: NonceBits = 8): bigint {
  const mask = (1n << BigInt(nonceBits)) - 1n;
  const lo = highest - BigInt(NONCE_FORMATS[nonceBits].window - 1);
  const diff = (BigInt(low) - lo) & mask; // (low − lo) mod 2^bits, two's-complement safe
  return lo + diff;
}

/** Associated data of authenticate-only mode: len16be(header) ‖ header ‖ payload. */
function authOnlyAd(header: Uint8Array, payload: Uint8Array): Uint8Array {
  if (header.length > 0xffff) throw new TrickleError('ERR_NOISE_STATE', 'secure', 'header longer than 65535 bytes');
  const len = new Uint8Array([header.length >>> 8, header.length & 0xff]);
  return concatBytes(len, header, payload);
}
