/**
 * SecureLink: the security layer for one peer over a lossy radio link (Noise Pipes, Noise spec
 * rev 34 §10.4, on Noise_*_25519_ChaChaPoly_BLAKE2s, with IK made replay-proof by a psk). A pure
 * state machine: frames in and out through callbacks, time from an injected Clock, randomness
 * injected; no I/O, no logging.
 *
 * ON-AIR FORMAT. Byte 0 says what a frame is:
 *
 *   0b0nnnnnnn  transport frame: [byte 0][ciphertext][16-byte tag] = plaintext + 17 bytes.
 *               n = the nonce's low 7 bits (window 32 back, 96 ahead, resync 8 wraps ahead:
 *               transport.ts); byte 0 is bound as AEAD associated data. An empty plaintext is a
 *               session confirmation and is never delivered.
 *   0x80 XX1    Noise_XX message 1  (e)                          1 + 32        = 33
 *   0x81 XX2    Noise_XX message 2  (e, ee, s, es)               1 + 96        = 97
 *   0x82 XX3    Noise_XX message 3  (s, se) + first queued data  1 + 64 + len  = 65 + len
 *   0x83 IK1    Noise_IKpsk1 message 1 (e, es, s, ss, psk) + 0-RTT data   1 + 96 + len  = 97 + len
 *   0x84 IK2    Noise_IKpsk1 message 2 (e, ee, se)               1 + 48        = 49
 *   0x85 FB1    Noise_XXfallback message 1 (responder: e, ee, s, es), answer to an unreadable IK1
 *   0x86 FB2    Noise_XXfallback message 2 (initiator: s, se) + the IK1 data again
 *   0x87 REFUSED          1 byte, responder → initiator: your static key is not authorized
 *   0x88 UNKNOWN_SESSION  1 byte, responder → initiator: I cannot open your transport frame
 *   0x89–0xff   reserved, dropped (ERR_NOISE_HANDSHAKE)
 *
 * The handshake messages are exactly the Noise messages after byte 0; each kind is readable at
 * one point of one pattern only, so a changed kind byte fails the Noise transcript. The prologue
 * is "Trickle v1 encrypt" or "Trickle v1 authenticate" plus the wire context: peers in different
 * modes or with different tables cannot agree.
 * Whole XX handshake with empty payloads: 33 + 97 + 65 = 195 bytes (Noise's 192 + 3 kind bytes).
 *
 * FLOWS. First contact (no pinned key, or no resumption secret yet): XX; the initiator pins the
 * responder's static key when XX2 verifies (trust on first use, event 'pinned'; a pinned key
 * that differs is 'key-changed'); its first queued plaintext rides in XX3.
 * Later: IKpsk1 with the first queued plaintext as 0-RTT payload (no extra round trip). If the
 * responder cannot read IK1 (its static key changed, it lost or never had the resumption
 * secret, or IK1 was damaged) it answers with XXfallback (Noise Pipes, §10.4) reusing the
 * initiator's IK ephemeral; the initiator resends its data in FB2 — unless FB1 reveals a static
 * key other than the pinned one: then it emits 'key-changed' with both fingerprints and refuses
 * every send until trustRemoteStatic().
 *
 * 0-RTT REPLAY (SECURITY.md). A recorded IK1 must never make the responder perform its payload
 * twice or replace a live session, whatever an unauthenticated sender does first and across
 * restarts. IK alone cannot promise that (its message 1 depends on nothing the responder
 * chose); a replay cache can be flushed by an attacker who floods it. So IK1 carries a psk
 * (Noise §9, pattern IKpsk1: the psk token follows "ss", so the 0-RTT payload is encrypted
 * under it): the RESUMPTION SECRET of the previous session between the same two static keys,
 * the third HKDF output of that session's Split (SymmetricState.splitWithResumption). Every
 * completed handshake (XX, XXfallback, IKpsk1) replaces it on both sides, and both persist it
 * (in the snapshot) before anything of the new session leaves or is delivered. An IK1 is
 * therefore readable exactly once: once processed, the responder holds the next secret and
 * the recorded IK1 no longer decrypts; one never processed (lost, or jammed and recorded)
 * stops decrypting as soon as any later handshake completes. No counter or clock is spent on
 * air: IK1 stays 97 + payload bytes. The responder picks the psk by the initiator's static key,
 * which IK reveals before the psk token (HandshakeState's resolvePsk). An IK1 from an
 * authorized key that does not decrypt is a replay (its ephemeral is among the IK1s this
 * responder completed for that key, a cache only authenticated handshakes enter: nothing an
 * attacker sends can evict it) or an initiator out of step (lost IK2, restored state): only the
 * latter gets XXfallback, from a reply budget of its own per key.
 *
 * LOSS. XX1 and IK1 are retransmitted (identical bytes) on the clock with backoff until
 * answered; the responder answers a duplicate with the identical cached XX2 / FB1 / IK2. XX3 and
 * FB2 get no answer of their own: the responder answers a transport frame it cannot open (no
 * session, a handshake waiting for its last message, or 3 failures in a row; the last two not
 * while its session opened a frame within twice the hint window, as the failures are then
 * someone else's frames on the kit's address) with
 * UNKNOWN_SESSION, and the initiator then resends its unconfirmed XX3/FB2 (once), or, with a
 * confirmed session (one the responder has spoken in, or a restored one), discards it and
 * re-establishes with one IK exchange.
 *
 * UNAUTHENTICATED INPUT IS CHEAP TO IGNORE. REFUSED and UNKNOWN_SESSION cannot be authenticated
 * (the responder may have lost every key when it sends them), so the initiator treats them as
 * hints: one that does not follow a frame of its own within the hint window, or that follows an
 * authentic frame of the responder sent after our last one (the responder holds our session), is
 * ignored; one that does is acted on only if no authentic frame from the responder arrives during the next window
 * (a forged one is then contradicted by the real traffic); during a handshake REFUSED does not
 * stop it (an authentic answer proves it forged; if none comes, the failure is reported as a
 * refusal). A handshake answer that does not verify is dropped and the handshake waits for the
 * genuine one. The responder tries a last handshake message (XX3/FB2) on a copy of each pending
 * handshake (up to MAX_PENDING, so a forged XX1 does not evict a genuine first contact), and
 * answers frames that prove nothing (XX2, FB1, a repeated IK2, REFUSED, UNKNOWN_SESSION) only
 * from a token bucket (`unauthenticatedReplies`: the radio sizes it as a fixed share of the
 * airtime budget); what it withholds is counted (ERR_NOISE_RATE).
 *
 * AUTHORIZATION (responder). isAuthorized(remoteStatic) is asked when XX3 / FB2 / IK1 reveals
 * the initiator's key and again before every delivery (so revoking works on a live session).
 * Unknown keys get REFUSED and nothing is ever delivered for them.
 *
 * AUTHENTICATE-ONLY MODE (amateur bands). Transport frames carry the payload in clear and a
 * tag over byte 0 and the payload. Handshake payloads stay empty (Noise would encrypt them),
 * except IK1's 0-RTT data, which follows the 96-byte Noise message in clear and is bound by
 * being the tail of that handshake's prologue (so IK1's tag authenticates it). What Noise still
 * encrypts are the static public keys and empty payloads: no message content (SECURITY.md).
 *
 * RESUMPTION. With `persist`, a JSON snapshot (session keys, nonce high-water marks with a
 * margin, remote static, pinned key, resumption secrets, replay caches) is handed over whenever
 * it changes, every 32 frames sent and on every received frame that advances the nonce
 * high-water mark (so a restarted end drops none of the peer's frames); it must be durable when
 * persist returns. Constructing with `restore` continues the session with no handshake: no
 * nonce is reused, no frame delivered twice.
 */
import { blake2s } from '@noble/hashes/blake2.js';
import type { ErrorCode } from '../errors.ts';
import { concatBytes, equalBytes, fromHex, toHex, utf8 } from '../util/bytes.ts';
import type { Clock, RandomBytes, TimerHandle } from '../util/clock.ts';
import { type KeyPair, X25519 } from './dh.ts';
import { fingerprint } from './fingerprint.ts';
import { HandshakeState } from './handshake-state.ts';
import { FRAME_OVERHEAD, SecureTransport, type TransportMode, type TransportSnapshot } from './transport.ts';

export const XX_PROTOCOL = 'Noise_XX_25519_ChaChaPoly_BLAKE2s';
export const IK_PROTOCOL = 'Noise_IKpsk1_25519_ChaChaPoly_BLAKE2s';
export const XXFALLBACK_PROTOCOL = 'Noise_XXfallback_25519_ChaChaPoly_BLAKE2s';

export const FrameKind = Object.freeze({
  XX1: 0x80, XX2: 0x81, XX3: 0x82, IK1: 0x83, IK2: 0x84, FB1: 0x85, FB2: 0x86, REFUSED: 0x87, UNKNOWN_SESSION: 0x88,
} as const);

/** Bytes a transport frame adds to its plaintext: kind/nonce byte + tag. */
export const LINK_FRAME_OVERHEAD = FRAME_OVERHEAD;
/** Bytes of IK1 before its payload: kind byte + e (32) + encrypted s (48) + payload tag (16). */
export const IK1_OVERHEAD = 97;
/** Bytes of XX3 / FB2 before the payload: kind byte + encrypted s (48) + payload tag (16). */
export const XX3_OVERHEAD = 65;
const IK1_NOISE_LEN = 96;
const DHLEN = 32;
const SEEN_EPHEMERALS_MAX = 64;
/** Authenticated IK1 ephemerals remembered per initiator key (only the responder's own successes enter). */
const IK_SEEN_MAX = 64;
/** Responder: handshakes waiting for their last message at once (a forged XX1 cannot evict a genuine one). */
const MAX_PENDING = 4;
const FINAL_RESENDS_MAX = 1;
const FAILURES_BEFORE_UNKNOWN = 3;
const BACKOFF_CAP = 4;
/** Transport parameters of the link format. */
const NONCE_BITS = 7;
const RESYNC_WRAPS = 8;
/** Default reply budget for unauthenticated frames: 4 at once, then one a minute. */
const DEFAULT_UNAUTH_REPLIES = { burst: 4, refillMs: 60_000 } as const;

export type SecureLinkRole = 'initiator' | 'responder';
export type HandshakePatternName = 'XX' | 'IK' | 'XXfallback';

/** Why a frame (received, or handed to send()) was dropped. */
export type SecureLinkDropCode = Extract<ErrorCode,
  'ERR_NOISE_DECRYPT' | 'ERR_NOISE_REPLAY' | 'ERR_NOISE_HANDSHAKE' | 'ERR_NOISE_KEY' | 'ERR_NOISE_STATE' | 'ERR_NOISE_NONCE' | 'ERR_QUEUE_FULL'
  | 'ERR_NOISE_RATE' | 'ERR_NOISE_CONTROL'>;

export type SecureLinkEvent =
  | { type: 'established'; pattern: HandshakePatternName; remoteStatic: Uint8Array; fingerprint: string; name?: string }
  | { type: 'pinned'; remoteStatic: Uint8Array; fingerprint: string }
  | { type: 'key-changed'; expectedFingerprint: string; receivedFingerprint: string; receivedKey: Uint8Array }
  | { type: 'refused'; reason: 'unauthorized' | 'revoked' | 'by-peer'; fingerprint?: string }
  | { type: 'session-lost'; reason: 'unknown-session' | 'persist-failed' | 'unconfirmed' }
  | { type: 'handshake-failed'; attempts: number }
  | { type: 'frames-dropped'; code: SecureLinkDropCode; count: number; detail?: string }
  | { type: 'restore-failed'; message: string };

export interface SecureLinkSnapshot {
  readonly version: 1;
  readonly role: SecureLinkRole;
  readonly mode: TransportMode;
  /** hex of our static public key: a snapshot of another identity is not resumed. */
  readonly localStatic: string;
  /** Initiator: the pinned responder key (hex), or null before first contact. */
  readonly pinnedRemoteStatic: string | null;
  readonly session: null | { readonly remoteStatic: string; readonly pattern: HandshakePatternName; readonly transport: TransportSnapshot };
  /** Responder: hex of BLAKE2s(e)[0..16] of the last handshakes seen (any: dedup only). */
  readonly seenEphemerals: readonly string[];
  /** Initiator: the psk of the next IKpsk1 with the pinned key (hex, secret), or null. */
  readonly resumption?: string | null;
  /** Responder: [initiator static (hex), psk of its next IKpsk1 (hex, secret)]. */
  readonly resumptions?: readonly (readonly [string, string])[];
  /** Responder: [initiator static (hex), ids of the IK1s completed for it, oldest first]. */
  readonly ikSeen?: readonly (readonly [string, readonly string[]])[];
  /** Responder: the last completed IK exchange (id of IK1, IK2 hex), to answer its duplicate. */
  readonly lastIk?: { readonly ik1: string; readonly ik2: string } | null;
}

/**
 * A snapshot that must not be resumed as it is (a copy of another process's state): the pins,
 * the replay caches and the identity stay; the session, the resumption secrets and the cached
 * IK exchange go, so nothing in it can reuse a nonce or accept a recorded IK1.
 */
export function withoutResumableState(snap: SecureLinkSnapshot): SecureLinkSnapshot {
  return { ...snap, session: null, resumption: null, resumptions: [], lastIk: null };
}

export interface SecureLinkOptions {
  readonly role: SecureLinkRole;
  readonly staticKeyPair: KeyPair;
  /** Initiator: the gateway key from the pinned-key file; wins over a snapshot's. */
  readonly remoteStaticPinned?: Uint8Array;
  /** Responder (required): the key's name if it may use this gateway, else undefined. */
  readonly isAuthorized?: (remoteStatic: Uint8Array) => string | undefined;
  readonly mode: TransportMode;
  readonly clock: Clock;
  readonly randomBytes: RandomBytes;
  /** Hand one frame to the radio. */
  readonly send: (frame: Uint8Array) => void;
  /** An authentic, authorized, fresh plaintext from the peer. */
  readonly deliver: (plaintext: Uint8Array) => void;
  readonly onEvent?: (e: SecureLinkEvent) => void;
  /** Store the snapshot durably before returning (e.g. writeStateFile). */
  readonly persist?: (snapshot: SecureLinkSnapshot) => void;
  readonly restore?: SecureLinkSnapshot;
  /** Wait before resending a handshake message of frameLen bytes (doubles per attempt, up to 4×). */
  readonly handshakeRetryMs: number | ((frameLen: number) => number);
  /**
   * Identifies everything both ends must share to read each other (e.g. "keys-v1 paths-v1
   * compact-v1 dict:matrix-v1/1a2b3c4d"); bound into the Noise prologue (spec §6).
   */
  readonly wireContext?: string;
  /** Give up a handshake after this many transmissions of its first message (default 10). */
  readonly maxHandshakeAttempts?: number;
  /** Largest frame the radio carries; data rides in a handshake message only if it fits (default 255). */
  readonly maxFrameLen?: number;
  /** Plaintexts held while a handshake runs (default 32; more are dropped, ERR_QUEUE_FULL). */
  readonly maxQueued?: number;
  /** Transport: rekey every 2^K frames per direction (both peers must agree; default 16). */
  readonly rekeyIntervalLog2?: number;
  /** Transport: nonces usable past the last persisted snapshot, 1..96 (default 32). */
  readonly persistMargin?: number;
  /**
   * Responder: replies to frames that prove nothing about their sender (XX2, FB1, a repeated
   * IK2, REFUSED, UNKNOWN_SESSION) come from a token bucket of `burst` replies refilled one per
   * `refillMs`; an authorized key that asks for XXfallback has a bucket of its own. Default 4,
   * one a minute; the radio stack sizes it from a fixed share of the airtime budget.
   */
  readonly unauthenticatedReplies?: { readonly burst: number; readonly refillMs: number };
  /**
   * Responder: the buckets of `unauthenticatedReplies` shared with other SecureLinks of the same
   * radio (a gateway keeps one per kit address): a stranger who sprays frames at every address
   * still gets one budget's worth of replies. Default: this link's own (createReplyBudget).
   */
  readonly replyBudget?: ReplyBudget;
}

/** Token buckets for replies to unauthenticated frames (one anonymous, one per claimed key). */
export interface ReplyBudget {
  readonly anon: Bucket;
  readonly claims: Map<string, Bucket>;
  /** The bucket's size now (default: unauthenticatedReplies.burst): a gateway grows it with the kits it knows, so their simultaneous first contacts all get an answer. */
  readonly burst?: () => number;
}

export function createReplyBudget(burst: number, nowMs: number): ReplyBudget {
  return { anon: { tokens: burst, atMs: nowMs }, claims: new Map() };
}

interface Session {
  transport: SecureTransport;
  remoteStatic: Uint8Array;
  pattern: HandshakePatternName;
  /** Initiator: the responder has been heard in this session (or it was restored). */
  confirmed: boolean;
  /** Initiator: XX3/FB2 as sent, resent on UNKNOWN_SESSION while unconfirmed. */
  finalFrame: Uint8Array | null;
  finalResends: number;
}

/** Initiator: a handshake waiting for its answer. */
interface InitiatorHandshake {
  pattern: 'XX' | 'IK';
  hs: HandshakeState;
  frame: Uint8Array;
  /** IK: our ephemeral, for XXfallback. */
  ephemeral: KeyPair | null;
  /** IK: the data sent as 0-RTT payload (resent in FB2). */
  payload: Uint8Array | null;
  attempts: number;
  /** A REFUSED arrived while it ran (it goes on: only an authentic answer or none decides). */
  refused: boolean;
}

/** Responder: a handshake waiting for its last message (XX3 or FB2). */
interface ResponderPending {
  pattern: 'XX' | 'XXfallback';
  hs: HandshakeState;
  trigger: Uint8Array;
  reply: Uint8Array;
}

/** Initiator: an unauthenticated control frame waiting to be confirmed by silence. */
interface Hint {
  kind: 'unknown-session' | 'refused';
  sinceMs: number;
  timer: TimerHandle;
}

export interface Bucket { tokens: number; atMs: number }

const EMPTY: Uint8Array = new Uint8Array(0);
const idOf = (bytes: Uint8Array): string => toHex(blake2s(bytes).subarray(0, 16));
const HEX32 = /^[0-9a-f]{64}$/;
const ID = /^[0-9a-f]{32}$/;

export class SecureLink {
  readonly role: SecureLinkRole;
  readonly mode: TransportMode;
  readonly #o: SecureLinkOptions;
  readonly #static: KeyPair;
  readonly #prologue: Uint8Array;
  readonly #maxFrameLen: number;
  readonly #maxAttempts: number;
  readonly #maxQueued: number;
  readonly #replyBurst: number;
  readonly #replyRefillMs: number;
  #pinned: Uint8Array | null = null;
  #session: Session | null = null;
  #queue: Uint8Array[] = [];
  #hs: InitiatorHandshake | null = null;
  #timer: TimerHandle | null = null;
  /** Initiator: a changed gateway key was seen; everything is refused until trusted. */
  #keyChanged = false;
  /** Initiator: refused by the responder; no new handshake before this time. */
  #refusedUntilMs = 0;
  /** Initiator: psk of the next IKpsk1 with the pinned key. */
  #resumption: Uint8Array | null = null;
  /** Initiator: when we last transmitted, and last heard an authentic frame. */
  #lastTxMs = -Infinity;
  #lastAuthenticRxMs = -Infinity;
  #hint: Hint | null = null;
  #pending: ResponderPending[] = [];
  /** Responder: the last completed IK exchange, to answer a duplicate IK1. */
  #lastIk: { ik1: string; ik2: Uint8Array } | null = null;
  /** Responder: the last completed XX3/FB2, to recognise a duplicate. */
  #lastFinal: Uint8Array | null = null;
  #seen: string[] = [];
  /** Responder: psk of each authorized key's next IKpsk1 (by key hex). */
  #resumptions = new Map<string, Uint8Array>();
  /** Responder: ids of the ephemerals of IK1s completed per key (authenticated only). */
  #ikSeen = new Map<string, string[]>();
  #anonBucket: Bucket;
  #budgetBurst: (() => number) | undefined;
  #claimBuckets: Map<string, Bucket>;
  #failuresInRow = 0;
  /** Responder: when the current session last opened a frame. */
  #lastOpenedMs = -Infinity;
  #lastUnknownSentMs = -Infinity;
  #dropped = new Map<SecureLinkDropCode, number>();
  #closed = false;

  constructor(opts: SecureLinkOptions) {
    if (opts.role !== 'initiator' && opts.role !== 'responder') throw new TypeError(`role must be "initiator" or "responder", got ${String(opts.role)}`);
    if (opts.mode !== 'encrypt' && opts.mode !== 'authenticate') throw new TypeError(`mode must be "encrypt" or "authenticate", got ${String(opts.mode)}`);
    if (opts.role === 'responder' && typeof opts.isAuthorized !== 'function') throw new TypeError('a responder needs isAuthorized');
    if (opts.staticKeyPair.privateKey.length !== 32) throw new TypeError('staticKeyPair.privateKey must be 32 bytes');
    this.role = opts.role;
    this.mode = opts.mode;
    this.#o = opts;
    this.#static = X25519.keyPairFromPrivate(opts.staticKeyPair.privateKey);
    if (!equalBytes(this.#static.publicKey, opts.staticKeyPair.publicKey)) throw new TypeError('staticKeyPair.publicKey does not belong to its private key');
    // The wire context (table versions, dictionary id) is bound into every handshake: two ends
    // that would read each other's messages differently cannot complete one.
    this.#prologue = utf8.encode(`Trickle v1 ${opts.mode}${opts.wireContext ? ` ${opts.wireContext}` : ''}`);
    this.#maxFrameLen = opts.maxFrameLen ?? 255;
    this.#maxAttempts = opts.maxHandshakeAttempts ?? 10;
    this.#maxQueued = opts.maxQueued ?? 32;
    const replies = opts.unauthenticatedReplies ?? DEFAULT_UNAUTH_REPLIES;
    if (!Number.isInteger(replies.burst) || replies.burst < 1 || !(replies.refillMs > 0)) {
      throw new TypeError(`unauthenticatedReplies needs an integer burst ≥ 1 and refillMs > 0, got ${JSON.stringify(replies)}`);
    }
    this.#replyBurst = replies.burst;
    this.#replyRefillMs = replies.refillMs;
    const budget = opts.replyBudget ?? createReplyBudget(replies.burst, opts.clock.now());
    this.#anonBucket = budget.anon;
    this.#budgetBurst = budget.burst;
    this.#claimBuckets = budget.claims;
    // Validate the transport options once, up front (throws ERR_NOISE_STATE naming the bad one).
    SecureTransport.fromKeys(new Uint8Array(32), new Uint8Array(32), this.#transportOptions()).destroy();
    if (opts.remoteStaticPinned !== undefined) {
      if (opts.remoteStaticPinned.length !== 32) throw new TypeError('remoteStaticPinned must be 32 bytes');
      this.#pinned = opts.remoteStaticPinned.slice();
    }
    if (opts.restore !== undefined) this.#restore(opts.restore);
  }

  // ───────────────────────────── public API ─────────────────────────────

  /** Protect and send one plaintext, or queue it until a session exists. */
  send(plaintext: Uint8Array): void {
    if (this.#closed) return;
    const s = this.#session;
    if (s !== null) {
      this.#sendTransport(s, plaintext);
      return;
    }
    if (this.role === 'responder') {
      // Only the initiator can start a handshake; CoAP retransmits once it has.
      this.#drop('ERR_NOISE_STATE', 'no session with the field kit yet');
      return;
    }
    if (this.#keyChanged) {
      this.#drop('ERR_NOISE_KEY', 'gateway key changed: refused until trusted');
      return;
    }
    if (this.#o.clock.now() < this.#refusedUntilMs) {
      this.#drop('ERR_NOISE_KEY', 'the gateway refused this field kit\'s key; waiting before asking again');
      return;
    }
    if (this.#queue.length >= this.#maxQueued) {
      this.#drop('ERR_QUEUE_FULL', 'queue of plaintexts awaiting a session is full');
      return;
    }
    this.#queue.push(plaintext.slice());
    if (this.#hs === null) this.#startHandshake();
  }

  /** One frame from the radio. Never throws: bad frames are dropped and counted. */
  receive(frame: Uint8Array): void {
    if (this.#closed) return;
    try {
      this.#receive(frame);
    } catch (e) {
      // Defensive: every expected failure is handled below; anything else is still a drop.
      this.#drop('ERR_NOISE_STATE', `unexpected: ${(e as Error).message}`);
    }
  }

  /** Initiator: accept this gateway key from now on (after `trickle keys trust`). */
  trustRemoteStatic(publicKey: Uint8Array): void {
    if (publicKey.length !== 32) throw new TypeError('public key must be 32 bytes');
    const changed = this.#pinned === null || !equalBytes(this.#pinned, publicKey);
    this.#pinned = publicKey.slice();
    this.#keyChanged = false;
    this.#refusedUntilMs = 0;
    if (changed) {
      // A secret shared with another key is of no use with this one.
      this.#resumption?.fill(0);
      this.#resumption = null;
      if (this.#session !== null && !equalBytes(this.#session.remoteStatic, publicKey)) this.#endSession();
    }
    this.#emit({ type: 'pinned', remoteStatic: publicKey.slice(), fingerprint: fingerprint(publicKey) });
    this.#persistNow();
  }

  /** True once frames can be sent without a handshake. */
  get established(): boolean {
    return this.#session !== null;
  }

  /** Initiator: true while plaintexts wait in the queue for a handshake that is under way. */
  get handshaking(): boolean {
    return this.#session === null && this.#hs !== null;
  }

  get pinnedRemoteStatic(): Uint8Array | null {
    return this.#pinned?.slice() ?? null;
  }

  get remoteStatic(): Uint8Array | null {
    return this.#session?.remoteStatic.slice() ?? null;
  }

  stats(): { state: string; pattern: HandshakePatternName | null; queued: number; dropped: Record<string, number>; resumable: boolean } {
    const state = this.#session !== null ? (this.#session.confirmed || this.role === 'responder' ? 'established' : 'unconfirmed')
      : this.#keyChanged ? 'key-changed' : this.#hs !== null ? `handshake-${this.#hs.pattern}` : 'idle';
    const resumable = this.role === 'initiator' ? this.#resumption !== null : this.#resumptions.size > 0;
    return { state, pattern: this.#session?.pattern ?? null, queued: this.#queue.length, dropped: Object.fromEntries(this.#dropped), resumable };
  }

  /** Stop timers and wipe keys. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    this.#timer = null;
    this.#hint?.timer.cancel();
    this.#hint = null;
    this.#hs?.hs.destroy();
    this.#hs = null;
    for (const p of this.#pending) p.hs.destroy();
    this.#pending = [];
    this.#session?.transport.destroy();
    this.#session = null;
    this.#resumption?.fill(0);
    for (const k of this.#resumptions.values()) k.fill(0);
    this.#resumptions.clear();
    this.#queue = [];
  }

  // ───────────────────────────── receiving ─────────────────────────────

  #receive(frame: Uint8Array): void {
    const kind = frame[0];
    if (kind === undefined) return this.#drop('ERR_NOISE_HANDSHAKE', 'empty frame');
    if ((kind & 0x80) === 0) return this.#receiveTransport(frame);
    const body = frame.subarray(1);
    if (this.role === 'responder') {
      switch (kind) {
        case FrameKind.XX1: return this.#onXx1(frame, body);
        case FrameKind.IK1: return this.#onIk1(frame, body);
        case FrameKind.XX3: return this.#onFinal(frame, body, 'XX');
        case FrameKind.FB2: return this.#onFinal(frame, body, 'XXfallback');
        default: return this.#drop(kind > FrameKind.UNKNOWN_SESSION ? 'ERR_NOISE_HANDSHAKE' : 'ERR_NOISE_STATE', `frame kind 0x${kind.toString(16)} is not for a responder`);
      }
    }
    switch (kind) {
      case FrameKind.XX2: return this.#onXx2(body);
      case FrameKind.IK2: return this.#onIk2(body);
      case FrameKind.FB1: return this.#onFb1(body);
      case FrameKind.REFUSED: return this.#onRefused(frame);
      case FrameKind.UNKNOWN_SESSION: return this.#onUnknownSession(frame);
      default: return this.#drop(kind > FrameKind.UNKNOWN_SESSION ? 'ERR_NOISE_HANDSHAKE' : 'ERR_NOISE_STATE', `frame kind 0x${kind.toString(16)} is not for an initiator`);
    }
  }

  #receiveTransport(frame: Uint8Array): void {
    const s = this.#session;
    if (s === null) {
      this.#drop('ERR_NOISE_STATE', 'transport frame without a session');
      if (this.role === 'responder') this.#maybeSendUnknown(frame);
      return;
    }
    let plaintext: Uint8Array;
    try {
      plaintext = s.transport.open(EMPTY, frame);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_NOISE_STATE' && this.#session === s) {
        // The persist hook failed: the transport closed itself (fail closed).
        this.#endSession();
        this.#emit({ type: 'session-lost', reason: 'persist-failed' });
        return;
      }
      this.#drop(code === 'ERR_NOISE_REPLAY' || code === 'ERR_NOISE_NONCE' ? code : 'ERR_NOISE_DECRYPT', (e as Error).message);
      if (this.role === 'responder' && code !== 'ERR_NOISE_REPLAY') {
        this.#failuresInRow++;
        // Not while the session is heard working (a frame opened within twice the initiator's
        // hint window): then the failures are someone else's frames on the kit's address (a
        // shared channel), and the UNKNOWN_SESSION they provoked, arriving right after the kit's
        // last frame, would end a good session. A kit whose frames we really cannot open gets it
        // once the window has passed (it keeps sending: CoAP retransmits).
        const working = this.#o.clock.now() - this.#lastOpenedMs < 2 * this.#retryMs(this.#maxFrameLen);
        if ((this.#pending.length > 0 || this.#failuresInRow >= FAILURES_BEFORE_UNKNOWN) && !working) this.#maybeSendUnknown(frame);
      }
      return;
    }
    this.#failuresInRow = 0;
    this.#lastOpenedMs = this.#o.clock.now();
    if (this.role === 'responder') {
      if (this.#o.isAuthorized!(s.remoteStatic) === undefined) {
        this.#drop('ERR_NOISE_KEY', 'key no longer authorized');
        this.#emit({ type: 'refused', reason: 'revoked', fingerprint: fingerprint(s.remoteStatic) });
        this.#forgetKey(s.remoteStatic);
        this.#endSession();
        this.#persistNow();
        this.#o.send(new Uint8Array([FrameKind.REFUSED]));
        return;
      }
      // The initiator speaks in the session: it has IK2, so a copy of that IK1 is a replay now.
      if (this.#lastIk !== null && s.pattern === 'IK') this.#lastIk = null;
    } else {
      this.#lastAuthenticRxMs = this.#o.clock.now();
      if (!s.confirmed) {
        s.confirmed = true;
        s.finalFrame = null;
      }
    }
    if (plaintext.length > 0) this.#o.deliver(plaintext);
  }

  // Responder side.

  #onXx1(frame: Uint8Array, body: Uint8Array): void {
    const dup = this.#pending.find((p) => equalBytes(p.trigger, frame));
    if (dup !== undefined) {
      // A retransmitted XX1: the same XX2 again (if the reply budget allows).
      if (this.#spend(this.#anonBucket, 'XX2 again')) this.#o.send(dup.reply);
      return;
    }
    if (body.length !== DHLEN) return this.#drop('ERR_NOISE_HANDSHAKE', `XX1 must be ${DHLEN} bytes after the kind byte`);
    // Checked before anything is recorded: a withheld XX1 is answered when its sender retries.
    if (!this.#canSpend(this.#anonBucket)) return this.#drop('ERR_NOISE_RATE', 'XX1 not answered: the reply budget for unauthenticated handshakes is spent');
    if (!this.#markSeen(body)) return this.#drop('ERR_NOISE_REPLAY', 'XX1 ephemeral seen before');
    let hs: HandshakeState | null = null;
    try {
      hs = new HandshakeState({ protocolName: XX_PROTOCOL, initiator: false, prologue: this.#prologue, s: this.#static, randomBytes: this.#o.randomBytes });
      hs.readMessage(body);
      const reply = concatBytes(new Uint8Array([FrameKind.XX2]), hs.writeMessage(EMPTY));
      this.#addPending({ pattern: 'XX', hs, trigger: frame.slice(), reply });
      this.#persistNow();
      this.#spend(this.#anonBucket, 'XX2');
      this.#o.send(reply);
    } catch (e) {
      hs?.destroy();
      this.#drop('ERR_NOISE_HANDSHAKE', (e as Error).message);
    }
  }

  #onIk1(frame: Uint8Array, body: Uint8Array): void {
    const id = idOf(frame);
    if (this.#lastIk !== null && this.#lastIk.ik1 === id) {
      // IK2 was lost: the same IK2 again. Nothing is processed or delivered twice.
      if (this.#spend(this.#anonBucket, 'IK2 again')) this.#o.send(this.#lastIk.ik2);
      return;
    }
    const dup = this.#pending.find((p) => equalBytes(p.trigger, frame));
    if (dup !== undefined) {
      if (this.#spend(this.#anonBucket, 'FB1 again')) this.#o.send(dup.reply); // FB1 was lost
      return;
    }
    if (body.length < IK1_NOISE_LEN) return this.#drop('ERR_NOISE_HANDSHAKE', `IK1 shorter than ${IK1_NOISE_LEN} bytes`);
    const re = body.subarray(0, DHLEN);
    if (this.#seen.includes(idOf(re))) return this.#drop('ERR_NOISE_REPLAY', 'IK1 ephemeral seen before');
    const [noiseMsg, clear] = this.mode === 'authenticate' ? [body.subarray(0, IK1_NOISE_LEN), body.subarray(IK1_NOISE_LEN)] : [body, EMPTY];
    let claimed: Uint8Array | null = null;
    let unauthorized = false;
    let hs: HandshakeState | null = null;
    let payload: Uint8Array;
    try {
      hs = new HandshakeState({
        protocolName: IK_PROTOCOL, initiator: false, prologue: concatBytes(this.#prologue, clear), s: this.#static, randomBytes: this.#o.randomBytes,
        resolvePsk: (rs) => {
          claimed = rs;
          if (rs === null || this.#o.isAuthorized!(rs) === undefined) {
            unauthorized = true;
            throw new Error('static key not authorized');
          }
          // No secret yet (a handshake that never completed here): a random one fails like a stale one.
          return this.#resumptions.get(toHex(rs)) ?? this.#o.randomBytes(32);
        },
      });
      payload = hs.readMessage(noiseMsg);
    } catch {
      hs?.destroy();
      this.#ik1Failed(frame, re, claimed, unauthorized);
      return;
    }
    this.#markSeen(re);
    const rs = hs.getRemoteStatic()!;
    const name = this.#o.isAuthorized!(rs);
    if (name === undefined) { // cannot happen (resolvePsk checked), kept as a guard
      hs.destroy();
      return this.#refuse(rs);
    }
    let ik2: Uint8Array;
    try {
      ik2 = concatBytes(new Uint8Array([FrameKind.IK2]), hs.writeMessage(EMPTY));
    } catch (e) {
      this.#drop('ERR_NOISE_HANDSHAKE', (e as Error).message);
      return;
    }
    const keyHex = toHex(rs);
    const seen = this.#ikSeen.get(keyHex) ?? [];
    seen.push(idOf(re));
    if (seen.length > IK_SEEN_MAX) seen.shift();
    this.#ikSeen.set(keyHex, seen);
    this.#lastIk = { ik1: id, ik2 };
    this.#establish(hs, 'IK', rs, name); // persists the new resumption secret before anything leaves
    if (this.#session === null) return; // persist failed: nothing may be sent or delivered
    this.#o.send(ik2);
    const data = this.mode === 'authenticate' ? clear : payload;
    if (data.length > 0) this.#deliverChecked(data);
  }

  /**
   * An IK1 that did not decrypt. Its static key unreadable: our key is not the one it was made
   * for (or it is damaged): XXfallback. Readable but not authorized: REFUSED. Authorized: a
   * replay of an IK1 completed here (silence) or an initiator out of step (XXfallback, from
   * that key's own reply budget, so strangers cannot spend it).
   */
  #ik1Failed(frame: Uint8Array, re: Uint8Array, claimed: Uint8Array | null, unauthorized: boolean): void {
    if (claimed === null) return this.#startFallback(frame, re, this.#anonBucket);
    if (unauthorized) {
      if (this.#spend(this.#anonBucket, 'REFUSED')) this.#refuse(claimed);
      return;
    }
    const keyHex = toHex(claimed);
    if (this.#ikSeen.get(keyHex)?.includes(idOf(re))) {
      return this.#drop('ERR_NOISE_REPLAY', 'IK1 of a handshake already completed: a replay');
    }
    let bucket = this.#claimBuckets.get(keyHex);
    if (bucket === undefined) {
      bucket = { tokens: this.#replyBurst, atMs: this.#o.clock.now() };
      this.#claimBuckets.set(keyHex, bucket);
    }
    this.#startFallback(frame, re, bucket);
  }

  #startFallback(trigger: Uint8Array, re: Uint8Array, bucket: Bucket): void {
    if (!this.#canSpend(bucket)) return this.#drop('ERR_NOISE_RATE', 'IK1 not answered with XXfallback: the reply budget is spent');
    this.#markSeen(re);
    let hs: HandshakeState | null = null;
    try {
      hs = new HandshakeState({ protocolName: XXFALLBACK_PROTOCOL, initiator: false, prologue: this.#prologue, s: this.#static, re, randomBytes: this.#o.randomBytes });
      const reply = concatBytes(new Uint8Array([FrameKind.FB1]), hs.writeMessage(EMPTY));
      this.#addPending({ pattern: 'XXfallback', hs, trigger: trigger.slice(), reply });
      this.#persistNow();
      this.#spend(bucket, 'FB1');
      this.#o.send(reply);
    } catch (e) {
      hs?.destroy();
      this.#drop('ERR_NOISE_HANDSHAKE', (e as Error).message);
    }
  }

  #addPending(p: ResponderPending): void {
    this.#pending.push(p);
    while (this.#pending.length > MAX_PENDING) this.#pending.shift()!.hs.destroy();
  }

  /** XX3 (XX) or FB2 (XXfallback): the initiator's last message. */
  #onFinal(frame: Uint8Array, body: Uint8Array, pattern: 'XX' | 'XXfallback'): void {
    if (this.#lastFinal !== null && equalBytes(this.#lastFinal, frame)) {
      return this.#drop('ERR_NOISE_REPLAY', 'duplicate final handshake message');
    }
    const candidates = this.#pending.filter((p) => p.pattern === pattern);
    if (candidates.length === 0) return this.#drop('ERR_NOISE_STATE', `${pattern === 'XX' ? 'XX3' : 'FB2'} without a handshake waiting for it`);
    // Each pending handshake is tried on a copy: a forged last message must not wipe a genuine one.
    let done: { p: ResponderPending; hs: HandshakeState; payload: Uint8Array } | null = null;
    for (let i = candidates.length - 1; i >= 0 && done === null; i--) {
      const p = candidates[i]!;
      const fork = p.hs.fork();
      try {
        done = { p, hs: fork, payload: fork.readMessage(body) };
      } catch {
        fork.destroy();
      }
    }
    if (done === null) return this.#drop('ERR_NOISE_HANDSHAKE', `${pattern === 'XX' ? 'XX3' : 'FB2'} does not complete any handshake waiting here`);
    this.#pending = this.#pending.filter((p) => p !== done.p);
    done.p.hs.destroy();
    const rs = done.hs.getRemoteStatic()!;
    const name = this.#o.isAuthorized!(rs);
    if (name === undefined) {
      done.hs.destroy();
      if (this.#spend(this.#anonBucket, 'REFUSED')) this.#refuse(rs);
      return;
    }
    this.#lastFinal = frame.slice();
    this.#establish(done.hs, pattern, rs, name);
    if (this.#session !== null && done.payload.length > 0) this.#deliverChecked(done.payload);
  }

  #refuse(rs: Uint8Array): void {
    this.#drop('ERR_NOISE_KEY', 'static key not authorized');
    this.#emit({ type: 'refused', reason: 'unauthorized', fingerprint: fingerprint(rs) });
    this.#o.send(new Uint8Array([FrameKind.REFUSED]));
  }

  #maybeSendUnknown(frame: Uint8Array): void {
    if (frame.length < FRAME_OVERHEAD) return; // noise, not a transport frame worth answering
    const now = this.#o.clock.now();
    if (now - this.#lastUnknownSentMs < this.#retryMs(1)) return;
    if (!this.#spend(this.#anonBucket, 'UNKNOWN_SESSION')) return;
    this.#lastUnknownSentMs = now;
    this.#o.send(new Uint8Array([FrameKind.UNKNOWN_SESSION]));
  }

  /** Record a handshake ephemeral; false if it was seen before (replay). */
  #markSeen(e: Uint8Array): boolean {
    const id = idOf(e);
    if (this.#seen.includes(id)) return false;
    this.#seen.push(id);
    if (this.#seen.length > SEEN_EPHEMERALS_MAX) this.#seen.shift();
    return true;
  }

  #deliverChecked(plaintext: Uint8Array): void {
    const s = this.#session;
    if (s === null) return;
    if (this.role === 'responder' && this.#o.isAuthorized!(s.remoteStatic) === undefined) return this.#drop('ERR_NOISE_KEY', 'key not authorized');
    this.#o.deliver(plaintext);
  }

  /** A revoked key: its secrets go, so a later authorization starts with a full handshake. */
  #forgetKey(rs: Uint8Array): void {
    const keyHex = toHex(rs);
    this.#resumptions.get(keyHex)?.fill(0);
    this.#resumptions.delete(keyHex);
    this.#ikSeen.delete(keyHex);
    this.#claimBuckets.delete(keyHex);
  }

  /** Token bucket: refill, then say whether one reply may go. */
  #canSpend(b: Bucket): boolean {
    const now = this.#o.clock.now();
    const burst = this.#budgetBurst?.() ?? this.#replyBurst;
    const refill = Math.floor((now - b.atMs) / this.#replyRefillMs);
    if (refill > 0) {
      b.tokens = Math.min(burst, b.tokens + refill);
      b.atMs = b.tokens === burst ? now : b.atMs + refill * this.#replyRefillMs;
    }
    return b.tokens >= 1;
  }

  #spend(b: Bucket, what: string): boolean {
    if (!this.#canSpend(b)) {
      this.#drop('ERR_NOISE_RATE', `${what} withheld: the reply budget for unauthenticated frames is spent`);
      return false;
    }
    b.tokens--;
    return true;
  }

  // Initiator side.

  /** Build XX1 or IK1 and transmit it; `attempts` carries over from a restarted handshake. */
  #startHandshake(attempts = 0): void {
    this.#cancelTimer();
    const ik = this.#pinned !== null && this.#resumption !== null;
    let payload: Uint8Array | null = null;
    let clear: Uint8Array = EMPTY;
    const first = this.#queue[0];
    if (ik && first !== undefined && IK1_OVERHEAD + first.length <= this.#maxFrameLen) {
      payload = this.#queue.shift()!;
      if (this.mode === 'authenticate') clear = payload;
    }
    let ephemeral: KeyPair | null = null;
    const rnd: RandomBytes = (n) => {
      const b = this.#o.randomBytes(n);
      if (n === 32 && ephemeral === null) ephemeral = X25519.keyPairFromPrivate(b);
      return b;
    };
    let hs: HandshakeState;
    let frame: Uint8Array;
    if (ik) {
      hs = new HandshakeState({
        protocolName: IK_PROTOCOL, initiator: true, prologue: concatBytes(this.#prologue, clear), s: this.#static, rs: this.#pinned!,
        psks: [this.#resumption!], randomBytes: rnd,
      });
      const noisePayload = this.mode === 'encrypt' && payload !== null ? payload : EMPTY;
      frame = concatBytes(new Uint8Array([FrameKind.IK1]), hs.writeMessage(noisePayload), clear);
    } else {
      hs = new HandshakeState({ protocolName: XX_PROTOCOL, initiator: true, prologue: this.#prologue, s: this.#static, randomBytes: this.#o.randomBytes });
      frame = concatBytes(new Uint8Array([FrameKind.XX1]), hs.writeMessage(EMPTY));
    }
    this.#hs = { pattern: ik ? 'IK' : 'XX', hs, frame, ephemeral, payload, attempts, refused: false };
    this.#transmitHandshake();
  }

  #transmitHandshake(): void {
    const h = this.#hs;
    if (h === null || this.#closed) return;
    if (h.attempts >= this.#maxAttempts) {
      this.#abandonHandshake();
      if (h.refused) this.#refusedByPeer();
      else this.#emit({ type: 'handshake-failed', attempts: h.attempts });
      return;
    }
    h.attempts++;
    const waitMs = this.#retryMs(h.frame.length) * Math.min(2 ** (h.attempts - 1), BACKOFF_CAP);
    this.#timer = this.#o.clock.setTimer(waitMs, () => {
      this.#timer = null;
      this.#transmitHandshake();
    });
    this.#sendOwn(h.frame);
  }

  #abandonHandshake(): void {
    this.#cancelTimer();
    const h = this.#hs;
    this.#hs = null;
    h?.hs.destroy();
    h?.ephemeral?.privateKey.fill(0);
    const n = this.#queue.length + (h?.payload !== null && h?.payload !== undefined ? 1 : 0);
    this.#queue = [];
    for (let i = 0; i < n; i++) this.#drop('ERR_NOISE_STATE', 'handshake abandoned');
  }

  /** Read a handshake answer on a copy: a forged or damaged one is dropped, the handshake waits on. */
  #readAnswer(h: InitiatorHandshake, body: Uint8Array, what: string): { hs: HandshakeState; payload: Uint8Array } | null {
    const fork = h.hs.fork();
    try {
      return { hs: fork, payload: fork.readMessage(body) };
    } catch (e) {
      fork.destroy();
      this.#drop('ERR_NOISE_HANDSHAKE', `${what}: ${(e as Error).message}`);
      return null;
    }
  }

  #onXx2(body: Uint8Array): void {
    const h = this.#hs;
    if (h === null || h.pattern !== 'XX') return this.#drop('ERR_NOISE_STATE', 'XX2 without an XX1 waiting');
    const r = this.#readAnswer(h, body, 'XX2');
    if (r === null) return;
    this.#lastAuthenticRxMs = this.#o.clock.now();
    h.hs.destroy();
    h.hs = r.hs;
    const rs = r.hs.getRemoteStatic()!;
    if (this.#pinned !== null && !equalBytes(this.#pinned, rs)) return this.#keyChangedSeen(rs);
    if (this.#pinned === null) {
      this.#pinned = rs.slice();
      this.#emit({ type: 'pinned', remoteStatic: rs.slice(), fingerprint: fingerprint(rs) });
    }
    this.#finish(h, 'XX', FrameKind.XX3, r.hs, rs, this.#takeForFinal());
  }

  #onFb1(body: Uint8Array): void {
    const h = this.#hs;
    if (h === null || h.pattern !== 'IK' || h.ephemeral === null) return this.#drop('ERR_NOISE_STATE', 'FB1 without an IK1 waiting');
    let fb: HandshakeState | null = null;
    try {
      // A copy: a failed HandshakeState wipes its keys, and a genuine FB1 may still follow.
      const e = { privateKey: h.ephemeral.privateKey.slice(), publicKey: h.ephemeral.publicKey.slice() };
      fb = new HandshakeState({ protocolName: XXFALLBACK_PROTOCOL, initiator: true, prologue: this.#prologue, s: this.#static, e, randomBytes: this.#o.randomBytes });
      fb.readMessage(body);
    } catch (e) {
      fb?.destroy();
      // The IK state and our ephemeral are untouched: a genuine FB1 may still come.
      return this.#drop('ERR_NOISE_HANDSHAKE', (e as Error).message);
    }
    this.#lastAuthenticRxMs = this.#o.clock.now();
    const rs = fb.getRemoteStatic()!;
    if (this.#pinned !== null && !equalBytes(this.#pinned, rs)) {
      fb.destroy();
      return this.#keyChangedSeen(rs);
    }
    // Resend the data the responder could not read, if it is allowed inside the handshake.
    let payload: Uint8Array | null = h.payload;
    h.payload = null;
    if (payload !== null && (this.mode === 'authenticate' || XX3_OVERHEAD + payload.length > this.#maxFrameLen)) {
      this.#queue.unshift(payload);
      payload = null;
    }
    h.hs.destroy();
    this.#finish(h, 'XXfallback', FrameKind.FB2, fb, rs, payload ?? this.#takeForFinal());
  }

  #onIk2(body: Uint8Array): void {
    const h = this.#hs;
    if (h === null || h.pattern !== 'IK') return this.#drop('ERR_NOISE_STATE', 'IK2 without an IK1 waiting');
    const r = this.#readAnswer(h, body, 'IK2');
    if (r === null) return;
    this.#lastAuthenticRxMs = this.#o.clock.now();
    this.#cancelTimer();
    this.#hs = null;
    h.hs.destroy();
    h.ephemeral?.privateKey.fill(0);
    this.#establish(r.hs, 'IK', this.#pinned!, undefined);
    if (this.#session === null) return;
    this.#session.confirmed = true;
    if (r.payload.length > 0) this.#o.deliver(r.payload);
    this.#flushQueue();
  }

  /** Write XX3/FB2 with `payload`, establish the (unconfirmed) session, send, flush the queue. */
  #finish(h: InitiatorHandshake, pattern: 'XX' | 'XXfallback', kind: number, hs: HandshakeState, rs: Uint8Array, payload: Uint8Array | null): void {
    this.#cancelTimer();
    this.#hs = null;
    let frame: Uint8Array;
    try {
      frame = concatBytes(new Uint8Array([kind]), hs.writeMessage(payload ?? EMPTY));
    } catch (e) {
      this.#drop('ERR_NOISE_HANDSHAKE', (e as Error).message);
      if (payload !== null) this.#queue.unshift(payload);
      if (h.payload !== null) this.#queue.unshift(h.payload);
      h.ephemeral?.privateKey.fill(0);
      this.#startHandshake(h.attempts);
      return;
    }
    h.ephemeral?.privateKey.fill(0);
    this.#establish(hs, pattern, rs, undefined);
    const s = this.#session;
    if (s === null) return;
    s.finalFrame = frame;
    this.#sendOwn(frame);
    this.#flushQueue();
  }

  /** The first queued plaintext if it may ride in XX3/FB2 (encrypt mode, fits the frame). */
  #takeForFinal(): Uint8Array | null {
    const first = this.#queue[0];
    if (this.mode !== 'encrypt' || first === undefined || XX3_OVERHEAD + first.length > this.#maxFrameLen) return null;
    return this.#queue.shift()!;
  }

  #keyChangedSeen(rs: Uint8Array): void {
    const expected = this.#pinned!;
    this.#keyChanged = true;
    this.#abandonHandshake();
    this.#drop('ERR_NOISE_KEY', 'gateway static key differs from the pinned one');
    this.#emit({ type: 'key-changed', expectedFingerprint: fingerprint(expected), receivedFingerprint: fingerprint(rs), receivedKey: rs.slice() });
  }

  #onRefused(frame: Uint8Array): void {
    if (frame.length !== 1) return this.#drop('ERR_NOISE_HANDSHAKE', 'REFUSED is one byte');
    if (this.#hs !== null) {
      // Anyone can send this byte: the handshake goes on, and an authentic answer proves it forged.
      this.#hs.refused = true;
      return this.#drop('ERR_NOISE_CONTROL', 'REFUSED during a handshake: noted; the handshake goes on');
    }
    if (this.#session === null || this.#session.confirmed) return this.#drop('ERR_NOISE_CONTROL', 'REFUSED outside a handshake');
    this.#hintReceived('refused');
  }

  #onUnknownSession(frame: Uint8Array): void {
    if (frame.length !== 1) return this.#drop('ERR_NOISE_HANDSHAKE', 'UNKNOWN_SESSION is one byte');
    if (this.#session === null) return this.#drop('ERR_NOISE_CONTROL', 'UNKNOWN_SESSION without a session'); // a handshake runs or will run on the next send
    this.#hintReceived('unknown-session');
  }

  /**
   * An unauthenticated REFUSED / UNKNOWN_SESSION about the current session. It counts only as an
   * answer to a frame of ours (the responder sends it when it cannot use one) and only if no
   * authentic frame from the responder arrives in the window that follows.
   */
  #hintReceived(kind: Hint['kind']): void {
    const now = this.#o.clock.now();
    const windowMs = this.#retryMs(this.#maxFrameLen);
    if (now - this.#lastTxMs > windowMs) return this.#drop('ERR_NOISE_CONTROL', `${kind} that answers no recent frame of ours: ignored`);
    // The responder spoke in our session after our last frame: it holds our session, whatever
    // this says (forged, or provoked from the responder by someone else's frames on our address).
    if (this.#lastAuthenticRxMs > this.#lastTxMs) return this.#drop('ERR_NOISE_CONTROL', `${kind} after an authentic answer to our last frame: ignored`);
    if (this.#hint !== null) {
      if (kind === 'refused') this.#hint.kind = kind;
      return;
    }
    const timer = this.#o.clock.setTimer(windowMs, () => this.#hintExpired());
    this.#hint = { kind, sinceMs: now, timer };
  }

  #hintExpired(): void {
    const h = this.#hint;
    this.#hint = null;
    if (h === null || this.#closed) return;
    if (this.#lastAuthenticRxMs >= h.sinceMs) {
      return this.#drop('ERR_NOISE_CONTROL', `${h.kind} contradicted by an authentic frame from the gateway: forged or stale, ignored`);
    }
    const s = this.#session;
    if (s === null) return;
    if (h.kind === 'refused') {
      this.#endSession();
      this.#refusedByPeer();
      return;
    }
    if (!s.confirmed && s.finalFrame !== null && s.finalResends < FINAL_RESENDS_MAX) {
      s.finalResends++;
      this.#sendOwn(s.finalFrame);
      return;
    }
    this.#endSession();
    this.#emit({ type: 'session-lost', reason: s.confirmed ? 'unknown-session' : 'unconfirmed' });
    this.#persistNow();
    if (this.#queue.length > 0 && this.#hs === null && !this.#keyChanged) this.#startHandshake();
  }

  #refusedByPeer(): void {
    this.#queue = [];
    this.#refusedUntilMs = this.#o.clock.now() + this.#retryMs(IK1_OVERHEAD) * BACKOFF_CAP * 4;
    this.#emit({ type: 'refused', reason: 'by-peer' });
    this.#persistNow();
  }

  /** Initiator: transmit one of our own frames (remembered for the hint window). */
  #sendOwn(frame: Uint8Array): void {
    this.#lastTxMs = this.#o.clock.now();
    this.#o.send(frame);
  }

  // ───────────────────────────── sessions ─────────────────────────────

  #establish(hs: HandshakeState, pattern: HandshakePatternName, rs: Uint8Array, name: string | undefined): void {
    const old = this.#session;
    // The secret for the next IKpsk1 between these two keys; the previous one is spent.
    const resumption = hs.split().resumption.slice();
    const transport = SecureTransport.fromHandshake(hs, { ...this.#transportOptions(), ...this.#persistHook() });
    hs.destroy();
    old?.transport.destroy();
    this.#hint?.timer.cancel();
    this.#hint = null;
    if (this.role === 'initiator') {
      this.#resumption?.fill(0);
      this.#resumption = resumption;
    } else {
      const keyHex = toHex(rs);
      this.#resumptions.get(keyHex)?.fill(0);
      this.#resumptions.set(keyHex, resumption);
      this.#claimBuckets.delete(keyHex);
    }
    this.#session = { transport, remoteStatic: rs.slice(), pattern, confirmed: false, finalFrame: null, finalResends: 0 };
    this.#failuresInRow = 0;
    this.#persistNow();
    if (this.#session === null) return; // persist failed: the session is gone, nothing leaves
    this.#emit({ type: 'established', pattern, remoteStatic: rs.slice(), fingerprint: fingerprint(rs), ...(name !== undefined ? { name } : {}) });
  }

  #endSession(): void {
    const s = this.#session;
    this.#session = null;
    try {
      s?.transport.destroy();
    } catch { /* already closed */ }
  }

  #flushQueue(): void {
    while (this.#session !== null && this.#queue.length > 0) this.#sendTransport(this.#session, this.#queue.shift()!);
  }

  #sendTransport(s: Session, plaintext: Uint8Array): void {
    let frame: Uint8Array;
    try {
      frame = s.transport.seal(EMPTY, plaintext);
    } catch (e) {
      // Persist failed (transport closed itself) or nonces exhausted: fail closed, re-handshake.
      this.#drop('ERR_NOISE_STATE', (e as Error).message);
      if (this.#session === s) {
        this.#endSession();
        this.#emit({ type: 'session-lost', reason: 'persist-failed' });
      }
      return;
    }
    if (this.role === 'initiator') this.#sendOwn(frame);
    else this.#o.send(frame);
  }

  #transportOptions() {
    return {
      mode: this.mode,
      nonceBits: NONCE_BITS,
      resyncWraps: RESYNC_WRAPS,
      ...(this.#o.rekeyIntervalLog2 !== undefined ? { rekeyIntervalLog2: this.#o.rekeyIntervalLog2 } : {}),
      ...(this.#o.persistMargin !== undefined ? { persistMargin: this.#o.persistMargin } : {}),
      // A snapshot per newly highest received frame: a restart never drops the peer's frames.
      receiveMargin: 1,
    } as const;
  }

  #persistHook(): { persist?: (t: TransportSnapshot) => void } {
    const persist = this.#o.persist;
    if (persist === undefined) return {};
    return { persist: (t) => persist(this.#snapshot(t)) };
  }

  /** Persist now (pin, session change, secrets, replay caches); the transport engages its margin. */
  #persistNow(): void {
    if (this.#o.persist === undefined) return;
    try {
      this.#o.persist(this.#snapshot(this.#session?.transport.exportState()));
    } catch (e) {
      // Without a durable snapshot a restart could reuse nonces or accept a replayed IK1: drop the session.
      if (this.#session !== null) {
        this.#endSession();
        this.#emit({ type: 'session-lost', reason: 'persist-failed' });
      }
      this.#drop('ERR_NOISE_STATE', `persist failed: ${(e as Error).message}`);
    }
  }

  #snapshot(transport: TransportSnapshot | undefined): SecureLinkSnapshot {
    const s = this.#session;
    const base = {
      version: 1 as const,
      role: this.role,
      mode: this.mode,
      localStatic: toHex(this.#static.publicKey),
      pinnedRemoteStatic: this.#pinned === null ? null : toHex(this.#pinned),
      session: s === null || transport === undefined ? null : { remoteStatic: toHex(s.remoteStatic), pattern: s.pattern, transport },
      seenEphemerals: [...this.#seen],
    };
    if (this.role === 'initiator') return { ...base, resumption: this.#resumption === null ? null : toHex(this.#resumption) };
    return {
      ...base,
      resumptions: [...this.#resumptions].map(([k, v]) => [k, toHex(v)] as const),
      ikSeen: [...this.#ikSeen].map(([k, v]) => [k, [...v]] as const),
      lastIk: this.#lastIk === null ? null : { ik1: this.#lastIk.ik1, ik2: toHex(this.#lastIk.ik2) },
    };
  }

  #restore(snap: SecureLinkSnapshot): void {
    const fail = (message: string): void => this.#emit({ type: 'restore-failed', message });
    if (snap === null || typeof snap !== 'object' || snap.version !== 1) return fail('unknown snapshot version');
    if (snap.role !== this.role) return fail(`snapshot is of a ${String(snap.role)}, this link is the ${this.role}`);
    if (snap.localStatic !== toHex(this.#static.publicKey)) return fail('snapshot belongs to another static key; starting fresh');
    if (Array.isArray(snap.seenEphemerals)) this.#seen = snap.seenEphemerals.filter((x) => typeof x === 'string' && ID.test(x)).slice(-SEEN_EPHEMERALS_MAX);
    if (this.role === 'initiator') {
      const fromSnapshot = typeof snap.pinnedRemoteStatic === 'string' && HEX32.test(snap.pinnedRemoteStatic) ? snap.pinnedRemoteStatic : null;
      if (this.#pinned === null && fromSnapshot !== null) this.#pinned = fromHex(fromSnapshot);
      // The secret belongs to the key it was agreed with: a pin changed on disk voids it.
      if (typeof snap.resumption === 'string' && HEX32.test(snap.resumption) && this.#pinned !== null && fromSnapshot === toHex(this.#pinned)) {
        this.#resumption = fromHex(snap.resumption);
      }
    } else {
      for (const e of Array.isArray(snap.resumptions) ? snap.resumptions : []) {
        if (!Array.isArray(e) || typeof e[0] !== 'string' || !HEX32.test(e[0]) || typeof e[1] !== 'string' || !HEX32.test(e[1])) continue;
        if (this.#o.isAuthorized!(fromHex(e[0])) === undefined) continue;
        this.#resumptions.set(e[0], fromHex(e[1]));
      }
      for (const e of Array.isArray(snap.ikSeen) ? snap.ikSeen : []) {
        if (!Array.isArray(e) || typeof e[0] !== 'string' || !HEX32.test(e[0]) || !Array.isArray(e[1])) continue;
        this.#ikSeen.set(e[0], (e[1] as unknown[]).filter((x): x is string => typeof x === 'string' && ID.test(x)).slice(-IK_SEEN_MAX));
      }
      const l = snap.lastIk;
      if (l !== null && l !== undefined && typeof l.ik1 === 'string' && ID.test(l.ik1) && typeof l.ik2 === 'string' && /^[0-9a-f]{98}$/.test(l.ik2)) {
        this.#lastIk = { ik1: l.ik1, ik2: fromHex(l.ik2) };
      }
    }
    const ss = snap.session;
    if (ss === null || ss === undefined) return;
    if (snap.mode !== this.mode) return fail(`snapshot session is in ${String(snap.mode)} mode, this link in ${this.mode}`);
    if (typeof ss.remoteStatic !== 'string' || !HEX32.test(ss.remoteStatic)) return fail('snapshot session has no valid remote static key');
    const rs = fromHex(ss.remoteStatic);
    if (this.role === 'initiator' && (this.#pinned === null || !equalBytes(this.#pinned, rs))) return fail('snapshot session is with a key that is not the pinned one; starting fresh');
    if (this.role === 'responder' && this.#o.isAuthorized!(rs) === undefined) return fail('snapshot session is with a key no longer authorized; starting fresh');
    let transport: SecureTransport;
    try {
      transport = SecureTransport.importState(ss.transport, this.#persistHook());
    } catch (e) {
      return fail((e as Error).message);
    }
    if (transport.nonceBits !== NONCE_BITS || transport.mode !== this.mode) {
      transport.destroy();
      return fail('snapshot transport has another frame format');
    }
    const pattern: HandshakePatternName = ss.pattern === 'IK' || ss.pattern === 'XXfallback' ? ss.pattern : 'XX';
    this.#session = { transport, remoteStatic: rs, pattern, confirmed: true, finalFrame: null, finalResends: 0 };
  }

  // ───────────────────────────── helpers ─────────────────────────────

  #retryMs(frameLen: number): number {
    const r = this.#o.handshakeRetryMs;
    return Math.max(1, typeof r === 'number' ? r : r(frameLen));
  }

  #cancelTimer(): void {
    this.#timer?.cancel();
    this.#timer = null;
  }

  #drop(code: SecureLinkDropCode, detail: string): void {
    const count = (this.#dropped.get(code) ?? 0) + 1;
    this.#dropped.set(code, count);
    this.#emit({ type: 'frames-dropped', code, count, detail });
  }

  #emit(e: SecureLinkEvent): void {
    try {
      this.#o.onEvent?.(e);
    } catch { /* an observer's bug must not break the state machine */ }
  }
}
