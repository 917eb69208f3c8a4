/**
 * CoapEndpoint: the RFC 7252 message layer and RFC 7959 block-wise transfer for one
 * link peer. Both ends of a link run one; either side may be client and server.
 *
 * Stateful and Clock-driven; never logs, never does I/O itself: frames leave through
 * the injected `send` and arrive through `receive`. Time comes from the injected
 * Clock, randomness (retransmission jitter; in 'random' token mode also the initial
 * Message ID and tokens) from RandomBytes.
 *
 * Frames are made by a WireCodec (default RFC 7252; the radio uses the compact form
 * of compact.ts). Every frame is encoded when it is sent, retransmissions and re-sent
 * replies included, so a stateful codec sees frames in sending order; sizes are fitted
 * to maxFrameLen with the codec's state-independent `sizeBound`.
 *
 * Tokens ('sequence' mode, the default): every CON/NON this endpoint originates gets
 * the next 32-bit sequence number S, its Message ID is S mod 2^16, and a request's
 * token is the 4-byte S of its first message (block follow-ups keep it). Tokens are
 * unique and increasing for the endpoint's life: the gateway derives Matrix txn ids
 * from them (tokenSequence() in compact.ts); `nextSequence` / `sequenceStart` resume.
 *
 * Message layer (RFC 7252 §4):
 *  - Every request is CON. Retransmission (§4.2): first timeout = ackTimeoutMs ×
 *    uniform[1, ackRandomFactor), doubled after each of up to maxRetransmit
 *    retransmissions; then ERR_COAP_TIMEOUT. ackTimeoutMs is supplied by the caller
 *    (derived from airtime and duty-cycle wait), never CoAP's 2 s default.
 *  - Received CON/NON are de-duplicated by Message ID for exchangeLifetimeMs (§4.5).
 *    A duplicate re-sends exactly the frame answered before (piggybacked ACK, empty
 *    ACK, 2.31, RST …) or nothing while the handler still runs inside the piggyback
 *    window. Handlers never run twice for one message (see "Message IDs over a long
 *    life" for a Message ID the peer reused early).
 *  - Server side: the handler gets piggybackWindowMs to answer in the ACK (§5.2.1);
 *    after that an empty ACK goes out and the response follows as a separate CON
 *    with its own Message ID and retransmissions (§5.2.2).
 *  - Client side: piggybacked and separate responses are matched by token (§5.3.2);
 *    a separate CON response is ACKed, and also ends retransmission of the request
 *    when the empty ACK was lost. An unmatched CON response is answered with RST.
 *  - A CON that cannot be parsed, and a CON Empty message ("ping", §4.3), get RST
 *    when the header is readable (§4.2).
 *
 * Message IDs over a long life (RFC 7252 §4.4, §4.5, §4.8.2). 2^16 ids last 65,536
 * messages: a busy radio link uses them up in days, a cable or PTY in minutes, well
 * within EXCHANGE_LIFETIME.
 *  - Sender (§4.4: an id is not reused within EXCHANGE_LIFETIME): the endpoint records
 *    when it last used each id (the first transmission of the message that carried it)
 *    and never sends a message under an id used less than midGuardMs ago: this end's
 *    exchangeLifetimeMs plus one ACK round trip (ACK_TIMEOUT × ACK_RANDOM_FACTOR), since a
 *    receiver remembers an id for its lifetime from its first receipt (below), which lags
 *    our first transmission by that much when nothing is lost. Every origination (request, block
 *    follow-up, NON or separate response, notification) is assigned its S (its id) when
 *    it is made, in call order; ids of CONs still awaiting an ACK are passed over
 *    (midSkips). Ids come in counter order (S mod 2^16, or the 'random' mode counter), so
 *    the next one is the least recently used: skipping ahead to find a free one would
 *    find none. When the message's id is within its guard, the message WAITS in one FIFO
 *    queue, woken by one Clock timer when the head's id frees (or when its CON ends, if
 *    still in flight): no polling, nothing reordered, no id wasted. A link thus carries
 *    at most 65,536 originations per guard; stats().midWaits counts the waits,
 *    midWaiting the queue. A request's response timeout runs from its first
 *    transmission, so the wait does not eat into it.
 *  - Tokens: 'sequence' tokens are unique for 2^32 originations. Because S is assigned
 *    when a request is made, the nextSequence a caller reads before request() is the
 *    request's token even when it waits (the host derives txn ids from it), tokens
 *    increase in sending order, and a waiting request still has token = S of its first
 *    message (the compact form's 1-byte header). 'random' tokens are not drawn
 *    again within midGuardMs of their exchange's end (recentTokens, pruned lazily, so at
 *    most the requests of one guard: ≤ 65,536 with the id rule); when none is free the
 *    request fails with ERR_COAP_FORMAT rather than reuse one. A client never has two
 *    exchanges with one token (request() refuses a token in flight).
 *  - Receiver: an id is remembered for exchangeLifetimeMs from the first receipt of its
 *    message (not extended by the answer: no copy can come later than MAX_TRANSMIT_SPAN +
 *    MAX_LATENCY after the peer's first transmission, §4.8.2), so two ends with equal
 *    lifetimes agree: the receiver has forgotten an id before a sender reuses it.
 *  - Receiver, defence in depth: the two ends compute their own lifetimes (from their
 *    own ACK timeouts, which include the duty-cycle wait when the endpoint was made, so
 *    they can differ a lot), and a restarted peer has forgotten when it used its ids, so
 *    the sender's rule alone cannot keep a peer from reusing an id we still remember.
 *    Each `seen` entry keeps a digest of its message (type, code, token, options,
 *    payload; not the id). A copy (a retransmission is re-encoded from the same message)
 *    matches and is answered from the cache as §4.5 says. A CON/NON under a remembered
 *    id with other content cannot be a copy: it is a new message (midReuse), processed
 *    and answered on its own, and the old entry is superseded (if its handler still
 *    runs, its answer goes as a separate response, never under the reused id). Observe
 *    notifications (new Observe value) and block follow-ups (new block number) always
 *    differ from their predecessors. An identical message under a reused id is taken
 *    for a copy: with 'sequence' tokens every request differs, so only the same request
 *    again (same token) can be, and it gets the answer it got before.
 *
 * Block-wise (RFC 7959), transparent to callers:
 *  - Block1 (§2.5): a request whose frame would exceed maxFrameLen is split into
 *    blocks of the largest size that fits; each non-final block is answered 2.31
 *    Continue. All blocks use the request's token; the server reassembles by token
 *    (the peer is implicit: one endpoint per peer), bounded by maxBodyBytes (4.13
 *    with Size1 = the bound) and by a small number of concurrent reassemblies.
 *    Size1 rides in block 0 so an oversized body is refused at once.
 *  - Block2 (§2.4): a response that does not fit is cached whole by the server,
 *    keyed by the request token; block 0 goes out with Block2 and Size2. The client
 *    asks for NUM = 1, 2, … with the same token, the same request options, no
 *    payload and a Block2 option; the server answers from the cache (only the
 *    Block2 option and the slice: representation options ride in block 0 alone, to
 *    save airtime). The handler runs once per request, never for follow-ups.
 *    The entry is dropped after its last block or after exchangeLifetimeMs idle;
 *    a follow-up for a missing entry gets 4.08.
 *
 * Observe (RFC 7641), both roles; the pure parts live in observe.ts:
 *  - Client: observe() sends the request with Observe = 0 and delivers the first
 *    response and every later notification for its token, in order; freshness
 *    (§3.4) discards repeated and older Observe values (observe.ts explains why the
 *    128-second rule is off by default). CON notifications are ACKed; a notification
 *    for a token with no observation gets RST (§3.6), unless the caller re-attached it
 *    with resumeObservation() after a restart. cancel() deregisters with Observe = 1
 *    (§3.6); later notifications get RST.
 *  - Server: a handler sees `observe` (0 register, 1 deregister) and accepts a
 *    registration by answering 2.xx with `observe: true`. The first response then goes
 *    as a separate CON (an empty ACK first), so the server knows it arrived before any
 *    notification follows. notify() queues notifications; each registration has at
 *    most one in flight (CON, unacknowledged, or a Block2 body not yet fetched to its
 *    last block), so the client never sees them reordered; a caller-supplied merge
 *    may fold queued ones together. The Observe value is the notification's own
 *    sequence number S mod 2^24 when that is newer than the last (the compact form
 *    then carries it in no bytes), else last + 1.
 *  - A notification not ACKed after maxRetransmit (or whose Block2 body is not
 *    fetched within exchangeLifetimeMs) is reported to onNotificationFailed and the
 *    registration is KEPT, stalled with that notification at its head: RFC 7641 §4.5
 *    would drop the observer, but a radio link loses frames for long stretches and a
 *    silently dropped registration is a lost push (MSC3079's failure). A stalled
 *    registration re-sends its head, with the same Observe value (a client that
 *    already has it discards it as stale, so nothing is delivered twice), when a frame
 *    from the peer shows the link is back ('on-receive', default) or on
 *    retryNotifications(). The lead decides when to give up (removeObservation).
 *    A RST for a notification cancels the registration (§3.6).
 *  - Large notifications: block 0 rides in the notification (Block2, Size2); the
 *    client fetches the rest with the registration token from the Block2 cache
 *    (RFC 7959 §3.4), and the next notification waits until the last block is served.
 *  - Registrations export/import as plain JSON (token hex, last sequence); clients
 *    persist their token and re-attach with resumeObservation().
 */
import type { Clock, RandomBytes, TimerHandle } from '../util/clock.ts';
import { ConfigError, TrickleError, WireError, type ErrorCode } from '../errors.ts';
import { concatBytes, equalBytes, fromHex, toHex } from '../util/bytes.ts';
import {
  ACK, CON, EMPTY, Method, NON, Opt, RST, Response, codeClass, codeToString, isRequestCode, isResponseCode, type CoapType,
} from './numbers.ts';
import {
  getOption, getUintOption, rfc7252Codec, uintOption, withoutOptions,
  type CoapMessage, type CoapOption, type WireCodec,
} from './message.ts';
import { sequenceToken } from './compact.ts';
import {
  OBSERVE_DEREGISTER, OBSERVE_MODULUS, OBSERVE_REGISTER, isFresh, nextObserveValue, parseObservationRecords,
  type ObservationRecord,
} from './observe.ts';
import {
  BLOCK_NUM_MAX, blockOption, blockSize, chooseBlockSzx, decodeBlock, type BlockValue,
} from './block.ts';

export interface CoapRequestInit {
  /** A method code (class 0, detail > 0). */
  readonly code: number;
  /** Block1/Block2/Size1/Size2 are managed by the endpoint and stripped here. */
  readonly options: readonly CoapOption[];
  readonly payload?: Uint8Array;
}

export interface CoapResponse {
  readonly code: number;
  readonly options: readonly CoapOption[];
  readonly payload: Uint8Array;
}

export interface CoapResponseInit {
  /** A response code (class 2–5); anything else is sent as 5.00. */
  readonly code: number;
  readonly options?: readonly CoapOption[];
  readonly payload?: Uint8Array;
  /**
   * Only in the answer to a request with `observe: 0`: true accepts the registration
   * (RFC 7641 §4.1, with a 2.xx code only). The response goes out as the first
   * response with an Observe option; notify() sends the later ones.
   */
  readonly observe?: boolean;
}

/** A request as the handler sees it: block-wise reassembled, block options removed. */
export interface IncomingRequest {
  readonly code: number;
  readonly options: readonly CoapOption[];
  readonly payload: Uint8Array;
  readonly token: Uint8Array;
  readonly confirmable: boolean;
  /**
   * The request's Observe option (RFC 7641 §2): 0 asks to register (answer with
   * `observe: true` to accept), 1 deregisters (the registration for this token is
   * already gone when the handler runs); absent otherwise. The option itself is
   * removed from `options`.
   */
  readonly observe?: 0 | 1;
}

export type RequestHandler = (req: IncomingRequest) => Promise<CoapResponseInit>;

export interface RequestOptions {
  /**
   * Longest wait for the response to each message of this request (each block of a
   * block-wise transfer counts separately), measured from its first transmission.
   * Long polls pass their poll time plus a margin. Default: the endpoint's
   * responseTimeoutMs.
   */
  readonly responseTimeoutMs?: number;
  /**
   * Use this token instead of a fresh one: a retry of the same application-level request
   * (the gateway derives the Matrix txn id from it, so the homeserver sees the same txn).
   * It must not be the token of a request still in flight.
   */
  readonly token?: Uint8Array;
}

/**
 * Called with the first response and each later notification, with its Observe value, in order.
 * A single-frame CON notification is ACKed only after this returns (so what the handler
 * persisted is on disk before the server learns it arrived). Returning `false` REFUSES it: the
 * notification is answered with RST instead, which ends the registration at the server (RFC 7641
 * §3.6), and the observation ends here with reason 'refused' (a lead that cannot use what came,
 * e.g. a part out of order, registers again and the server starts over).
 */
export type NotificationHandler = (res: CoapResponse, seq: number) => unknown;

/** Why a client's observation ended other than by cancel(). */
export interface ObservationEnd {
  /**
   * 'not-registered': the first response had no Observe option or was not 2.xx;
   * 'ended-by-server': a notification without Observe (an error, RFC 7641 §3.2);
   * 'failed': the registration request failed (see `error`).
   */
  readonly reason: 'not-registered' | 'ended-by-server' | 'failed' | 'refused';
  readonly response?: CoapResponse;
  readonly error?: TrickleError;
}

export interface ObserveOptions {
  /** For the registration request and each Block2 fetch. Default: the endpoint's responseTimeoutMs. */
  readonly responseTimeoutMs?: number;
  readonly onEnd?: (end: ObservationEnd) => void;
  /**
   * A notification arrived as block 0 but the rest of its body could not be fetched.
   * Nothing is delivered; the server sees the transfer stall and re-sends it (same
   * Observe value, so it is not discarded as stale).
   */
  readonly onError?: (error: TrickleError) => void;
}

export interface ResumeObservationOptions extends ObserveOptions {
  /**
   * The registration's request (code and options; Observe is ignored), for Block2
   * fetches of large notifications and for cancel(). Default: GET without options.
   */
  readonly request?: CoapRequestInit;
  /** The last Observe value delivered before the restart: it and older ones are discarded. */
  readonly lastSequence?: number;
}

export interface ObservationHandle {
  /** The registration token: persist it (with the last sequence seen) to resume after a restart. */
  readonly token: Uint8Array;
  /**
   * Forget the observation at once (later notifications get RST) and deregister with
   * a GET carrying Observe = 1 (RFC 7641 §3.6). Resolves when that is answered or has
   * failed; never rejects.
   */
  cancel(): Promise<void>;
}

export interface Observation extends ObservationHandle {
  /**
   * The first response (also delivered to onNotification when it registered).
   * Rejects when the registration request fails (ERR_COAP_TIMEOUT, …, or
   * ERR_COAP_CLOSED when cancelled before it was answered).
   */
  readonly first: Promise<CoapResponse>;
}

export interface NotifyOptions {
  /**
   * Fold a queued (not yet sent) notification and a newer one into one. Called only
   * while an older notification of the same registration is queued behind the one in
   * flight; the merged response takes the older one's place in the queue.
   */
  readonly merge?: (older: CoapResponse, newer: CoapResponse) => CoapResponseInit;
}

/** A server-side registration as observations() lists it. */
export interface ServerObservationInfo {
  readonly token: Uint8Array;
  readonly tokenHex: string;
  /** The last Observe value sent, or null before the first response went out. */
  readonly sequence: number | null;
  /** Notifications waiting behind the one in flight. */
  readonly queued: number;
  readonly inFlight: boolean;
  /** The head notification failed and waits for a retry. */
  readonly stalled: boolean;
}

/** Why a server-side registration ended. */
export type ObservationEndedReason = 'reset' | 'deregistered' | 'final' | 'removed';

/** Why a received frame was dropped: a WireError code, or 'unmatched' (a late or foreign ACK/RST/response). */
export type CoapDropReason = ErrorCode | 'unmatched';

export interface CoapDrop {
  readonly reason: CoapDropReason;
  readonly frameLen: number;
  readonly error?: WireError;
}

export interface CoapEndpointStats {
  /** Frames handed to `send`, retransmissions included. */
  sent: number;
  /** Frames given to `receive`. */
  received: number;
  retransmissions: number;
  /** Duplicate CON/NON (by Message ID) and duplicate ACK/RST for finished transmissions. */
  duplicates: number;
  /** CONs given up after maxRetransmit, plus responses that did not come in time. */
  timeouts: number;
  /** `send` threw; the frame counts as lost. */
  sendErrors: number;
  /** Dropped received frames by reason. */
  dropped: Partial<Record<CoapDropReason, number>>;
  /** Client: first responses and notifications delivered to observers. */
  notifications: number;
  /** Client: notifications discarded as not fresh (RFC 7641 §3.4): duplicates, re-sends, reordering. */
  staleNotifications: number;
  /**
   * Messages this endpoint originated that had to wait for a Message ID: the next one was
   * used less than midGuardMs ago (RFC 7252 §4.4), so 65,536 ids were used within the guard.
   */
  midWaits: number;
  /**
   * Sequence numbers (ids, in 'random' mode) passed over: ids of CONs still awaiting an ACK,
   * and those of waiting messages that were no longer wanted when their id freed.
   */
  midSkips: number;
  /**
   * Received CON/NON whose Message ID was still remembered for another message (different
   * content): the peer reused it sooner than our EXCHANGE_LIFETIME (a shorter lifetime of its
   * own, or a restart). Processed as new messages, never answered from the old reply.
   */
  midReuse: number;
  /** Originations waiting for a Message ID right now (a gauge, not a counter). */
  midWaiting: number;
  /** The guard in force (configuration): at most 65,536 originations per this many ms. */
  midGuardMs: number;
}

export interface CoapEndpointOptions {
  readonly clock: Clock;
  readonly randomBytes: RandomBytes;
  /** Hands one frame to the link (scheduler). Should not call `receive` synchronously. */
  readonly send: (frame: Uint8Array) => void;
  /** Largest frame this endpoint sends; block sizes are chosen to fit it. ≥ 32. */
  readonly maxFrameLen: number;
  /**
   * ACK_TIMEOUT (RFC 7252 §4.8): the base retransmission timeout of a CON, as a
   * number or as a function of the CON's frame length (evaluated at its first
   * transmission). Derive it from airtime there and back plus duty-cycle wait.
   */
  readonly ackTimeoutMs: number | ((frameLen: number) => number);
  /** ACK_RANDOM_FACTOR, ≥ 1. Default 1.5. */
  readonly ackRandomFactor?: number;
  /** MAX_RETRANSMIT. Default 4. */
  readonly maxRetransmit?: number;
  /**
   * How long the server side waits for its handler before sending an empty ACK
   * (the response then follows as a separate CON). Must stay well below the peer's
   * ACK timeout. Default: half of ackTimeoutMs for a minimal frame.
   */
  readonly piggybackWindowMs?: number;
  /**
   * EXCHANGE_LIFETIME (RFC 7252 §4.8.2): how long Message IDs are remembered for
   * de-duplication and block-wise state is kept while idle. Default: twice
   * MAX_TRANSMIT_WAIT = 2 × ackTimeout(maxFrameLen) × (2^(maxRetransmit+1) − 1) × ackRandomFactor.
   */
  readonly exchangeLifetimeMs?: number;
  /**
   * How long a Message ID (and in 'random' mode a token) this endpoint used stays unused
   * after the first transmission of the message that carried it (RFC 7252 §4.4: not within
   * EXCHANGE_LIFETIME). Minimum exchangeLifetimeMs. Default exchangeLifetimeMs plus one
   * ACK_TIMEOUT(maxFrameLen) × ACK_RANDOM_FACTOR: a peer with our lifetime remembers an id for
   * a lifetime from its FIRST RECEIPT, which lags our first transmission by up to that much
   * when the transmission is not lost. Set it higher when the peer is known to remember
   * Message IDs longer than we do.
   */
  readonly midGuardMs?: number;
  /** Bound for block-wise reassembly in both directions. Default 256 KiB. */
  readonly maxBodyBytes?: number;
  /**
   * How request tokens are made (RFC 7252 §5.3.1 leaves it to the client):
   *  - 'sequence' (default): the endpoint numbers every CON/NON it originates with a
   *    32-bit sequence number S (Message ID = S mod 2^16) and a request's token is the
   *    4-byte big-endian S of its first message. Tokens are unique and strictly
   *    increasing for the endpoint's life (2^32 messages); the peer reads the number
   *    back with tokenSequence() (the gateway derives Matrix txn ids from it), and the
   *    compact codec carries mid and token of a fresh request in one byte. Tokens are
   *    guessable: the security layer below authenticates every frame, so RFC 7252
   *    §5.3.1's spoofing argument does not apply.
   *  - 'random': `tokenLength` random bytes, Message IDs from a random start (§4.4).
   */
  readonly tokenMode?: 'sequence' | 'random';
  /**
   * 'sequence' mode: the first sequence number (default 1). To resume a session after
   * a restart, pass the `nextSequence` saved before it, so tokens never repeat.
   */
  readonly sequenceStart?: number;
  /** Token length of requests in 'random' mode, 1–8. Default 2. */
  readonly tokenLength?: number;
  /**
   * Message ⇄ frame codec. Default RFC 7252 (`rfc7252Codec`); the radio uses the
   * compact form (`compactWireCodec()` from compact.ts, one per peer and session).
   * Every frame, retransmissions and re-sent replies included, is encoded at the
   * moment it is handed to `send`; sizes are fitted with `sizeBound`.
   */
  readonly wireCodec?: WireCodec;
  /** Default for RequestOptions.responseTimeoutMs. Default exchangeLifetimeMs. */
  readonly responseTimeoutMs?: number;
  /**
   * Client: W of the RFC 7641 §3.4 freshness rule (the RFC's 128 s). Default Infinity:
   * the 24-bit sequence alone decides (see observe.ts for why).
   */
  readonly observeFreshnessMs?: number;
  /**
   * Server: when a stalled registration re-sends its failed notification. 'on-receive'
   * (default): as soon as any frame from the peer arrives; 'manual': only on
   * retryNotifications().
   */
  readonly notificationRetry?: 'on-receive' | 'manual';
}

/** At most this many Block1 bodies are reassembled at once (each bounded by maxBodyBytes). */
export const MAX_CONCURRENT_REASSEMBLIES = 8;

const EMPTY_BYTES = new Uint8Array(0);

interface Transmission {
  readonly mid: number;
  /** Encoded anew for every (re)transmission (a stateful codec may choose another form). */
  readonly msg: CoapMessage;
  /** For requests: a piggybacked response must carry this token. */
  readonly token: Uint8Array | undefined;
  retransmits: number;
  timeoutMs: number;
  timer: TimerHandle | undefined;
  readonly onAck: (ack: CoapMessage) => void;
  readonly onReset: () => void;
  readonly onGiveUp: () => void;
}

interface SeenEntry {
  /**
   * First receipt + exchangeLifetimeMs, not extended by the answer: no copy can come later
   * (the peer stops retransmitting MAX_TRANSMIT_SPAN after its first transmission), and a
   * peer with our lifetime counts its guard from its first transmission (see midGuardMs).
   */
  readonly expiresAt: number;
  /** messageDigest() of the message: a copy has the same, a new message with a reused id another. */
  readonly digest: number;
  /** The message that answered this message, re-sent (re-encoded) on duplicates. */
  reply: CoapMessage | undefined;
  /** False while a handler runs: such entries never expire. */
  done: boolean;
  /**
   * The peer reused the Message ID for a new message while this one's handler ran: the id is
   * the new message's now, so nothing more is sent with it for this one (its answer goes as
   * a separate response).
   */
  superseded: boolean;
}

/** An origination of a CON/NON (RFC 7252 §4.4: it may have to wait for its Message ID). */
interface MidWaiter {
  /** False once the message is no longer wanted (its exchange ended, the registration went): skipped. */
  readonly alive: () => boolean;
  /** Build and send the message with this Message ID (and S, in 'sequence' mode). */
  readonly run: (mid: number, seq: number | undefined) => void;
  /** `run` threw. */
  readonly fail: (e: unknown) => void;
}

/** An origination waiting in the FIFO midQueue, with the counter value (S or id) it was assigned. */
interface QueuedOrigination {
  readonly counter: number;
  readonly w: MidWaiter;
}

interface Leg {
  readonly kind: 'plain' | 'block1' | 'block2';
  readonly block: BlockValue | undefined;
  tx: Transmission | undefined;
  responseTimer: TimerHandle | undefined;
}

interface Block2Assembly {
  readonly code: number;
  readonly options: CoapOption[];
  readonly chunks: Uint8Array[];
  received: number;
}

interface ClientExchange {
  readonly token: Uint8Array;
  readonly key: string;
  readonly code: number;
  readonly options: CoapOption[];
  readonly body: Uint8Array;
  readonly responseTimeoutMs: number;
  readonly resolve: (r: CoapResponse) => void;
  readonly reject: (e: TrickleError) => void;
  /** A deregistration (Observe = 1): a notification arriving for its token gets RST. */
  readonly deregister?: boolean;
  b1Offset: number;
  b1Szx: number;
  b2: Block2Assembly | undefined;
  leg: Leg | undefined;
  done: boolean;
}

interface ClientObservation {
  readonly token: Uint8Array;
  readonly key: string;
  /** The registration request without Observe and block options: for Block2 fetches and cancel(). */
  readonly code: number;
  readonly options: CoapOption[];
  readonly onNotification: NotificationHandler;
  readonly opts: ObserveOptions;
  readonly responseTimeoutMs: number;
  /** While the registration request is pending. */
  registration: ClientExchange | undefined;
  /** The newest Observe value accepted, and when (RFC 7641 §3.4). */
  last: { value: number; atMs: number } | undefined;
  /** A Block2 fetch of a notification's body. */
  assembling: ClientExchange | undefined;
  /** Notifications that arrived while `assembling`, in arrival order. */
  readonly held: { msg: CoapMessage; atMs: number; frameLen: number }[];
  ended: boolean;
}

interface QueuedNotification {
  readonly res: CoapResponse;
  /** The first response of a (re-)registration: never merged. */
  readonly first: boolean;
}

interface InFlightNotification extends QueuedNotification {
  /** Assigned at the first transmission, kept for re-sends. Undefined for a final (non-2.xx) one. */
  observe: number | undefined;
  /** Block 0 went out; the body is served from the Block2 cache. */
  blocks: boolean;
  tx: Transmission | undefined;
  idleTimer: TimerHandle | undefined;
  stalled: boolean;
}

interface ServerObservation {
  readonly token: Uint8Array;
  readonly key: string;
  sequence: number | undefined;
  readonly queue: QueuedNotification[];
  inFlight: InFlightNotification | undefined;
}

interface Reassembly {
  readonly chunks: Uint8Array[];
  received: number;
  expiresAt: number;
}

interface CachedResponse {
  readonly code: number;
  readonly payload: Uint8Array;
  readonly szx: number;
  expiresAt: number;
}

interface ServerTask {
  timer: TimerHandle | undefined;
  ackSent: boolean;
  done: boolean;
}

function positive(name: string, v: number | undefined, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new ConfigError(`coap: ${name} must be a finite number ≥ ${min}, got ${String(v)}`, { key: name, value: v });
  }
  return v;
}

export class CoapEndpoint {
  private readonly clock: Clock;
  private readonly randomBytes: RandomBytes;
  private readonly sendFn: (frame: Uint8Array) => void;
  private readonly maxFrameLen: number;
  private readonly ackTimeout: (frameLen: number) => number;
  private readonly ackRandomFactor: number;
  private readonly maxRetransmit: number;
  private readonly piggybackWindowMs: number;
  private readonly exchangeLifetimeMs: number;
  private readonly midGuardMs: number;
  private readonly maxBodyBytes: number;
  private readonly tokenLength: number;
  private readonly defaultResponseTimeoutMs: number;
  private readonly codec: WireCodec;
  private readonly sequenceMode: boolean;
  private readonly observeFreshnessMs: number;
  private readonly retryOnReceive: boolean;

  /** 'random' mode: the next Message ID. */
  private nextMid: number;
  /** 'sequence' mode: the next sequence number (uint32). */
  private nextSeq: number;
  private closed = false;
  private handler: RequestHandler | undefined;
  private readonly dropListeners = new Set<(d: CoapDrop) => void>();
  private readonly counters: CoapEndpointStats = {
    sent: 0, received: 0, retransmissions: 0, duplicates: 0, timeouts: 0, sendErrors: 0, dropped: {},
    notifications: 0, staleNotifications: 0, midWaits: 0, midSkips: 0, midReuse: 0, midWaiting: 0, midGuardMs: 0,
  };
  private nextPruneAt = 0;

  /** Our CONs awaiting ACK/RST, by our Message ID. */
  private readonly outgoing = new Map<number, Transmission>();
  /**
   * When each of our Message IDs was last used (first transmission of the message that carried
   * it, Clock ms; −Infinity: not since this endpoint started). An id is not used again within
   * midGuardMs of that.
   */
  private readonly midUsedAt = new Float64Array(0x10000).fill(-Infinity);
  /** Originations waiting for their Message ID, oldest first, from midQueueHead on. */
  private midQueue: QueuedOrigination[] = [];
  private midQueueHead = 0;
  /** Fires when the next Message ID frees (one timer for the whole queue). */
  private midTimer: TimerHandle | undefined;
  /** Our Message IDs already ACKed/RST, to tell duplicates from strays. */
  private readonly finishedMids = new Map<number, number>();
  /** The peer's Message IDs (CON/NON) seen recently. */
  private readonly seen = new Map<number, SeenEntry>();
  /** Client: our requests in flight, by token (hex). */
  private readonly exchanges = new Map<string, ClientExchange>();
  /** Client, 'random' mode: tokens recently used, not reused within midGuardMs. */
  private readonly recentTokens = new Map<string, number>();
  /** Server: Block1 reassembly by the peer's token. */
  private readonly reassembly = new Map<string, Reassembly>();
  /** Server: full responses served block by block, by the peer's token. */
  private readonly block2Cache = new Map<string, CachedResponse>();
  /** Server: handlers running (for their piggyback timers). */
  private readonly tasks = new Set<ServerTask>();
  /** Client: our observations, by token (hex). */
  private readonly clientObs = new Map<string, ClientObservation>();
  /** Server: the peer's registrations, by token (hex). Kept (without timers) after close() for export. */
  private readonly serverObs = new Map<string, ServerObservation>();
  private readonly failedListeners = new Set<(token: Uint8Array, res: CoapResponse) => void>();
  private readonly deliveredListeners = new Set<(token: Uint8Array, res: CoapResponse, seq: number | undefined) => void>();
  private readonly endedListeners = new Set<(token: Uint8Array, reason: ObservationEndedReason) => void>();
  /** Set when a received frame decoded: the peer is reachable (retry stalled notifications). */
  private heardPeer = false;

  constructor(opts: CoapEndpointOptions) {
    this.clock = opts.clock;
    this.randomBytes = opts.randomBytes;
    this.sendFn = opts.send;
    this.maxFrameLen = positive('maxFrameLen', opts.maxFrameLen, 0, 32);
    this.codec = opts.wireCodec ?? rfc7252Codec;
    const mode = opts.tokenMode ?? 'sequence';
    if (mode !== 'sequence' && mode !== 'random') {
      throw new ConfigError(`coap: tokenMode must be 'sequence' or 'random', got ${String(mode)}`, { key: 'tokenMode' });
    }
    this.sequenceMode = mode === 'sequence';
    const start = opts.sequenceStart ?? 1;
    if (!Number.isInteger(start) || start < 0 || start > 0xffffffff) {
      throw new ConfigError(`coap: sequenceStart must be an integer 0..2^32-1, got ${start}`, { key: 'sequenceStart' });
    }
    this.nextSeq = start;
    this.tokenLength = this.sequenceMode ? 4 : positive('tokenLength', opts.tokenLength, 2, 1);
    if (!Number.isInteger(this.tokenLength) || this.tokenLength > 8) {
      throw new ConfigError(`coap: tokenLength must be an integer 1–8, got ${this.tokenLength}`, { key: 'tokenLength' });
    }
    const ack = opts.ackTimeoutMs;
    if (typeof ack === 'number') {
      const base = positive('ackTimeoutMs', ack, 0, 1);
      this.ackTimeout = () => base;
    } else if (typeof ack === 'function') {
      this.ackTimeout = (len) => {
        const v = ack(len);
        return Number.isFinite(v) && v >= 1 ? v : 1;
      };
    } else {
      throw new ConfigError('coap: ackTimeoutMs is required (a number or a function of frame length)', { key: 'ackTimeoutMs' });
    }
    this.ackRandomFactor = positive('ackRandomFactor', opts.ackRandomFactor, 1.5, 1);
    this.maxRetransmit = positive('maxRetransmit', opts.maxRetransmit, 4, 0);
    this.piggybackWindowMs = positive('piggybackWindowMs', opts.piggybackWindowMs,
      this.ackTimeout(4 + this.tokenLength) / 2, 0);
    const maxTransmitWait = this.ackTimeout(this.maxFrameLen) * (2 ** (this.maxRetransmit + 1) - 1) * this.ackRandomFactor;
    this.exchangeLifetimeMs = positive('exchangeLifetimeMs', opts.exchangeLifetimeMs, 2 * maxTransmitWait, 1);
    // A peer with our lifetime remembers an id from its first receipt of it, which lags our
    // first transmission by up to one ACK round trip when that transmission is not lost.
    this.midGuardMs = positive('midGuardMs', opts.midGuardMs,
      this.exchangeLifetimeMs + this.ackTimeout(this.maxFrameLen) * this.ackRandomFactor, this.exchangeLifetimeMs);
    this.maxBodyBytes = positive('maxBodyBytes', opts.maxBodyBytes, 256 * 1024, 0);
    this.defaultResponseTimeoutMs = positive('responseTimeoutMs', opts.responseTimeoutMs, this.exchangeLifetimeMs, 1);
    this.observeFreshnessMs = opts.observeFreshnessMs === Infinity ? Infinity
      : positive('observeFreshnessMs', opts.observeFreshnessMs, Infinity, 0);
    const retry = opts.notificationRetry ?? 'on-receive';
    if (retry !== 'on-receive' && retry !== 'manual') {
      throw new ConfigError(`coap: notificationRetry must be 'on-receive' or 'manual', got ${String(retry)}`, { key: 'notificationRetry' });
    }
    this.retryOnReceive = retry === 'on-receive';
    const r = this.randomBytes(2);
    this.nextMid = ((r[0] ?? 0) << 8) | (r[1] ?? 0);
  }

  // -------------------------------------------------------------------------
  // Public surface
  // -------------------------------------------------------------------------

  /** Set the server-side handler (replacing any previous one). Without one, requests get 5.01. */
  onRequest(handler: RequestHandler): void {
    this.handler = handler;
  }

  /** Listen for dropped frames; returns an unsubscribe function. */
  onDrop(listener: (drop: CoapDrop) => void): () => void {
    this.dropListeners.add(listener);
    return () => { this.dropListeners.delete(listener); };
  }

  /**
   * 'sequence' mode: the sequence number the next CON/NON this endpoint originates
   * will carry (the next request's token is at least this). Save it to resume.
   */
  get nextSequence(): number {
    return this.nextSeq;
  }

  /** A snapshot of the counters (and the Message ID guard in force). */
  stats(): CoapEndpointStats {
    return {
      ...this.counters, dropped: { ...this.counters.dropped },
      midWaiting: this.midQueue.length - this.midQueueHead, midGuardMs: this.midGuardMs,
    };
  }

  /**
   * Send a request and resolve with its (reassembled) response. Rejects with
   * TrickleError ERR_COAP_TIMEOUT, ERR_COAP_RESET, ERR_COAP_BLOCK, ERR_COAP_TOO_LARGE,
   * ERR_COAP_FORMAT or ERR_COAP_CLOSED.
   */
  request(req: CoapRequestInit, opts: RequestOptions = {}): Promise<CoapResponse> {
    return new Promise<CoapResponse>((resolve, reject) => {
      if (this.closed) {
        reject(new TrickleError('ERR_COAP_CLOSED', 'coap', 'request on a closed CoAP endpoint'));
        return;
      }
      if (!isRequestCode(req.code)) {
        reject(new TrickleError('ERR_COAP_FORMAT', 'coap', `code ${codeToString(req.code)} is not a request method`));
        return;
      }
      const responseTimeoutMs = opts.responseTimeoutMs ?? this.defaultResponseTimeoutMs;
      if (!(responseTimeoutMs > 0)) {
        reject(new ConfigError(`coap: responseTimeoutMs must be > 0, got ${responseTimeoutMs}`, { key: 'responseTimeoutMs' }));
        return;
      }
      this.prune();
      let token: Uint8Array;
      try {
        token = opts.token ? opts.token.slice() : this.freshToken();
      } catch (e) {
        reject(e);
        return;
      }
      if (this.exchanges.has(toHex(token))) {
        reject(new TrickleError('ERR_COAP_FORMAT', 'coap', `token ${toHex(token)} is already in flight`));
        return;
      }
      this.startExchange({
        token, key: toHex(token), code: req.code,
        options: withoutOptions(req.options, Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE1, Opt.SIZE2),
        body: req.payload ?? EMPTY_BYTES,
        responseTimeoutMs, resolve, reject,
        b1Offset: 0, b1Szx: 0, b2: undefined, leg: undefined, done: false,
      });
    });
  }

  private startExchange(ex: ClientExchange): void {
    this.exchanges.set(ex.key, ex);
    try {
      this.startRequest(ex);
    } catch (e) {
      this.failWith(ex, e);
    }
  }

  // -------------------------------------------------------------------------
  // Observe: client (RFC 7641 §3)
  // -------------------------------------------------------------------------

  /**
   * Register an observation: `req` goes out with Observe = 0 under a fresh token, and
   * `onNotification` gets the first response and every later notification for that
   * token, in order, each once (stale ones are discarded, RFC 7641 §3.4). A first
   * response without Observe (the server did not register) or a failed request ends
   * the observation (opts.onEnd). Persist `token` to resume after a restart.
   */
  observe(req: CoapRequestInit, onNotification: NotificationHandler, opts: ObserveOptions = {}): Observation {
    let resolveFirst!: (r: CoapResponse) => void;
    let rejectFirst!: (e: unknown) => void;
    const first = new Promise<CoapResponse>((res, rej) => { resolveFirst = res; rejectFirst = rej; });
    first.catch(() => { /* the caller may ignore `first`; the rejection is reported through onEnd too */ });
    const responseTimeoutMs = opts.responseTimeoutMs ?? this.defaultResponseTimeoutMs;
    let problem: TrickleError | undefined;
    if (this.closed) problem = new TrickleError('ERR_COAP_CLOSED', 'coap', 'observe on a closed CoAP endpoint');
    else if (!isRequestCode(req.code)) problem = new TrickleError('ERR_COAP_FORMAT', 'coap', `code ${codeToString(req.code)} is not a request method`);
    else if (!(responseTimeoutMs > 0)) problem = new ConfigError(`coap: responseTimeoutMs must be > 0, got ${responseTimeoutMs}`, { key: 'responseTimeoutMs' });
    let token: Uint8Array = EMPTY_BYTES;
    if (!problem) {
      this.prune();
      try { token = this.freshToken(); } catch (e) { problem = e as TrickleError; }
    }
    if (problem) {
      rejectFirst(problem);
      return { token, first, cancel: () => Promise.resolve() };
    }
    const options = withoutOptions(req.options, Opt.OBSERVE, Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE1, Opt.SIZE2);
    const obs = this.addClientObservation(token, req.code, options, onNotification, opts, responseTimeoutMs, undefined);
    const ex: ClientExchange = {
      token, key: obs.key, code: req.code,
      options: [...options, uintOption(Opt.OBSERVE, OBSERVE_REGISTER)],
      body: req.payload ?? EMPTY_BYTES,
      responseTimeoutMs,
      resolve: (res) => {
        obs.registration = undefined;
        resolveFirst(stripForCaller(res));
        this.registrationAnswered(obs, res);
      },
      reject: (e) => {
        obs.registration = undefined;
        rejectFirst(e);
        if (obs.ended) return;
        this.endClientObservation(obs);
        safeCall(() => obs.opts.onEnd?.({ reason: 'failed', error: e }));
      },
      b1Offset: 0, b1Szx: 0, b2: undefined, leg: undefined, done: false,
    };
    obs.registration = ex;
    this.startExchange(ex);
    return { token: token.slice(), first, cancel: () => this.cancelClientObservation(obs) };
  }

  /**
   * Re-attach an observation registered before a restart (its token persisted by the
   * caller), so its notifications are delivered instead of answered with RST. In
   * 'sequence' token mode resume the endpoint from its saved nextSequence too, so the
   * token is never handed out again. Replaces an observation with the same token.
   */
  resumeObservation(token: Uint8Array | string, onNotification: NotificationHandler, opts: ResumeObservationOptions = {}): ObservationHandle {
    const t = typeof token === 'string' ? fromHex(token) : token.slice();
    if (this.closed) throw new TrickleError('ERR_COAP_CLOSED', 'coap', 'resumeObservation on a closed CoAP endpoint');
    const req = opts.request ?? { code: Method.GET, options: [] };
    const last = opts.lastSequence;
    if (last !== undefined && (!Number.isInteger(last) || last < 0 || last >= OBSERVE_MODULUS)) {
      throw new ConfigError(`coap: lastSequence must be an integer 0..2^24-1, got ${last}`, { key: 'lastSequence' });
    }
    const options = withoutOptions(req.options, Opt.OBSERVE, Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE1, Opt.SIZE2);
    const obs = this.addClientObservation(t, req.code, options, onNotification, opts,
      opts.responseTimeoutMs ?? this.defaultResponseTimeoutMs, last);
    return { token: t.slice(), cancel: () => this.cancelClientObservation(obs) };
  }

  private addClientObservation(
    token: Uint8Array, code: number, options: CoapOption[], onNotification: NotificationHandler,
    opts: ObserveOptions, responseTimeoutMs: number, lastSequence: number | undefined,
  ): ClientObservation {
    const key = toHex(token);
    const old = this.clientObs.get(key);
    if (old) this.endClientObservation(old);
    const obs: ClientObservation = {
      token, key, code, options, onNotification, opts, responseTimeoutMs,
      registration: undefined,
      last: lastSequence === undefined ? undefined : { value: lastSequence, atMs: this.clock.now() },
      assembling: undefined, held: [], ended: false,
    };
    this.clientObs.set(key, obs);
    return obs;
  }

  private endClientObservation(obs: ClientObservation): void {
    obs.ended = true;
    obs.held.length = 0;
    if (this.clientObs.get(obs.key) === obs) this.clientObs.delete(obs.key);
    if (obs.assembling) this.fail(obs.assembling, 'ERR_COAP_CLOSED', 'observation ended during a Block2 fetch');
  }

  private async cancelClientObservation(obs: ClientObservation): Promise<void> {
    if (obs.ended) return;
    const registering = obs.registration;
    this.endClientObservation(obs);
    if (registering) {
      // Not answered yet: if the server registers anyway, its first response finds no
      // observation here and gets RST, which removes the registration (§3.6).
      this.fail(registering, 'ERR_COAP_CLOSED', 'observation cancelled before its first response');
      return;
    }
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      this.startExchange({
        token: obs.token, key: obs.key, code: obs.code,
        options: [...obs.options, uintOption(Opt.OBSERVE, OBSERVE_DEREGISTER)],
        body: EMPTY_BYTES, responseTimeoutMs: obs.responseTimeoutMs,
        resolve: () => resolve(), reject: () => resolve(), deregister: true,
        b1Offset: 0, b1Szx: 0, b2: undefined, leg: undefined, done: false,
      });
    });
  }

  private registrationAnswered(obs: ClientObservation, res: CoapResponse): void {
    if (obs.ended) return;
    let seq: number | undefined;
    try { seq = getUintOption(res.options, Opt.OBSERVE, 3); } catch { seq = undefined; }
    const response = stripForCaller(res);
    if (seq === undefined || codeClass(res.code) !== 2) {
      this.endClientObservation(obs);
      safeCall(() => obs.opts.onEnd?.({ reason: 'not-registered', response }));
      return;
    }
    obs.last = { value: seq, atMs: this.clock.now() };
    this.deliverNotification(obs, response, seq);
  }

  /** Hand a notification to the caller; false when the caller refused it. */
  private deliverNotification(obs: ClientObservation, res: CoapResponse, seq: number): boolean {
    this.counters.notifications++;
    let accepted = true;
    safeCall(() => { accepted = obs.onNotification(res, seq) !== false; });
    return accepted;
  }

  /** A CON/NON response for an observed token, other than the registration's first response. */
  private receiveNotification(obs: ClientObservation, msg: CoapMessage, entry: SeenEntry, frameLen: number): void {
    const atMs = this.clock.now();
    if (obs.assembling) {
      // Held behind a Block2 fetch: acknowledged now, handed over in order once it is done.
      if (msg.type === CON) entry.reply = this.sendEmpty(ACK, msg.mid);
      obs.held.push({ msg, atMs, frameLen });
      return;
    }
    // Processed first, then acknowledged: the caller has what it needs before the server hears it arrived.
    const refused = this.processNotification(obs, msg, atMs, frameLen) === 'refused';
    if (msg.type === CON) entry.reply = this.sendEmpty(refused ? RST : ACK, msg.mid);
    if (refused) {
      this.endClientObservation(obs);
      safeCall(() => obs.opts.onEnd?.({ reason: 'refused' }));
    }
  }

  private processNotification(obs: ClientObservation, msg: CoapMessage, atMs: number, frameLen: number): 'refused' | undefined {
    if (obs.ended) return undefined;
    let seq: number | undefined;
    let block: BlockValue | undefined;
    try {
      seq = getUintOption(msg.options, Opt.OBSERVE, 3);
      const b2 = getOption(msg.options, Opt.BLOCK2);
      if (b2) block = decodeBlock(b2);
    } catch (e) {
      this.drop(e instanceof WireError ? e.code : 'ERR_COAP_OPTION', frameLen, e instanceof WireError ? e : undefined);
      return;
    }
    if (seq === undefined || codeClass(msg.code) !== 2) {
      // RFC 7641 §3.2, §4.2: a response without Observe ends the observation.
      this.endClientObservation(obs);
      const response = stripForCaller(msg);
      safeCall(() => obs.opts.onEnd?.({ reason: 'ended-by-server', response }));
      return;
    }
    if (!isFresh(obs.last, seq, atMs, this.observeFreshnessMs)) {
      this.counters.staleNotifications++;
      return;
    }
    const previous = obs.last;
    obs.last = { value: seq, atMs };
    if (!block || !block.more) {
      if (block && block.num !== 0) { obs.last = previous; this.drop('ERR_COAP_BLOCK', frameLen); return undefined; }
      if (!this.deliverNotification(obs, stripForCaller(msg), seq)) { obs.last = previous; return 'refused'; }
      return undefined;
    }
    if (this.exchanges.has(obs.key)) {
      // Our own request with this token is still open (cannot happen but for a peer bug).
      obs.last = previous;
      this.drop('unmatched', frameLen);
      return;
    }
    // Block 0 of a large notification: fetch the rest with the registration token (RFC 7959 §3.4).
    const value = seq;
    const ex: ClientExchange = {
      token: obs.token, key: obs.key, code: obs.code, options: obs.options, body: EMPTY_BYTES,
      responseTimeoutMs: obs.responseTimeoutMs,
      resolve: (res) => {
        obs.assembling = undefined;
        if (!obs.ended) this.deliverNotification(obs, stripForCaller(res), value);
        this.releaseHeld(obs);
      },
      reject: (e) => {
        obs.assembling = undefined;
        if (obs.ended) return;
        obs.last = previous;
        safeCall(() => obs.opts.onError?.(e));
        this.releaseHeld(obs);
      },
      b1Offset: 0, b1Szx: 0, b2: undefined, leg: undefined, done: false,
    };
    const leg: Leg = { kind: 'plain', block: undefined, tx: undefined, responseTimer: undefined };
    ex.leg = leg;
    obs.assembling = ex;
    this.exchanges.set(obs.key, ex);
    try {
      this.clientResponseBody(ex, leg, msg);
    } catch (e) {
      this.failWith(ex, e);
    }
  }

  private releaseHeld(obs: ClientObservation): void {
    while (!obs.ended && !obs.assembling && obs.held.length > 0) {
      const h = obs.held.shift()!;
      this.processNotification(obs, h.msg, h.atMs, h.frameLen);
    }
  }

  // -------------------------------------------------------------------------
  // Observe: server (RFC 7641 §4)
  // -------------------------------------------------------------------------

  /**
   * The largest payload a 2.xx notification with these options can carry in ONE frame
   * (CON, this token, the widest Observe value); 0 when not even an empty one fits.
   * A lead that must know each notification was received whole keeps its bodies within
   * this: the ACK of a single-frame CON proves receipt, while a Block2 notification's
   * last block has no acknowledgement the server can see (RFC 7959 §2.7).
   */
  notificationPayloadLimit(token: Uint8Array | string, code: number, options: readonly CoapOption[]): number {
    const t = typeof token === 'string' ? fromHex(token) : token;
    // Sized as prepareResponse() sizes it: the larger of the CON and the ACK form, else it
    // would go as Block2 after all.
    const size = (payload: Uint8Array): number => Math.max(...([CON, ACK] as const).map((type) => this.sizeOf({
      type, code, mid: 0xffff, token: t, options: [...options, uintOption(Opt.OBSERVE, OBSERVE_MODULUS - 1)], payload,
    })));
    if (size(EMPTY_BYTES) > this.maxFrameLen) return 0;
    // Header and options cost the same for any non-empty payload (one marker byte).
    return Math.max(0, this.maxFrameLen - (size(Uint8Array.of(0)) - 1));
  }

  /**
   * Queue a notification for a registration (token as bytes or hex). 2.xx responses
   * carry the next Observe value; any other code is a final notification without
   * Observe that ends the registration once delivered (RFC 7641 §3.2). Returns false
   * when there is no such registration (or the endpoint is closed).
   */
  notify(token: Uint8Array | string, response: CoapResponseInit, opts: NotifyOptions = {}): boolean {
    const obs = this.serverObs.get(typeof token === 'string' ? token.toLowerCase() : toHex(token));
    if (!obs || this.closed) return false;
    const res = normalizeResponse(response);
    const tail = obs.queue[obs.queue.length - 1];
    if (opts.merge && tail && !tail.first) {
      let merged: CoapResponse;
      try { merged = normalizeResponse(opts.merge(tail.res, res)); } catch { merged = normalizeResponse(undefined); }
      obs.queue[obs.queue.length - 1] = { res: merged, first: false };
    } else {
      obs.queue.push({ res, first: false });
    }
    this.pumpObservation(obs);
    return true;
  }

  /** The registrations this endpoint serves. */
  observations(): ServerObservationInfo[] {
    return [...this.serverObs.values()].map((o) => ({
      token: o.token.slice(), tokenHex: o.key, sequence: o.sequence ?? null,
      queued: o.queue.length, inFlight: o.inFlight !== undefined, stalled: o.inFlight?.stalled ?? false,
    }));
  }

  /** The registrations as plain JSON, to import after a restart (works after close() too). */
  exportObservations(): ObservationRecord[] {
    return [...this.serverObs.values()].map((o) => ({ token: o.key, sequence: o.sequence ?? null }));
  }

  /**
   * Restore registrations exported before a restart (validated; throws ConfigError
   * for a bad record). An existing registration keeps the newer of the two sequences.
   */
  importObservations(records: readonly ObservationRecord[]): void {
    for (const r of parseObservationRecords(records)) {
      const obs = this.serverObs.get(r.token) ?? this.addServerObservation(fromHex(r.token));
      if (r.sequence !== null && (obs.sequence === undefined || nextObserveValue(obs.sequence, r.sequence) === r.sequence)) {
        obs.sequence = r.sequence;
      }
    }
  }

  /** Drop a registration (and its queue) without telling the peer; its next notification would not come. */
  removeObservation(token: Uint8Array | string): boolean {
    const obs = this.serverObs.get(typeof token === 'string' ? token.toLowerCase() : toHex(token));
    if (!obs) return false;
    this.endServerObservation(obs, 'removed');
    return true;
  }

  /** Re-send the failed head notification of stalled registrations (all, or the one with this token). */
  retryNotifications(token?: Uint8Array | string): void {
    if (this.closed) return;
    const key = token === undefined ? undefined : typeof token === 'string' ? token.toLowerCase() : toHex(token);
    for (const obs of [...this.serverObs.values()]) {
      if (key !== undefined && obs.key !== key) continue;
      const nf = obs.inFlight;
      if (nf?.stalled) {
        nf.stalled = false;
        this.transmitNotification(obs, nf);
      }
    }
  }

  /** A notification was given up (no ACK after maxRetransmit, or its Block2 body not fetched). */
  onNotificationFailed(listener: (token: Uint8Array, response: CoapResponse) => void): () => void {
    this.failedListeners.add(listener);
    return () => { this.failedListeners.delete(listener); };
  }

  /**
   * A notification (or first response) reached the client: ACKed, and for a large one
   * its last block served. `seq` is its Observe value (undefined for a final one).
   */
  onNotificationDelivered(listener: (token: Uint8Array, response: CoapResponse, seq: number | undefined) => void): () => void {
    this.deliveredListeners.add(listener);
    return () => { this.deliveredListeners.delete(listener); };
  }

  /** A registration ended: RST from the client, deregistration, a final notification, or removeObservation(). */
  onObservationEnded(listener: (token: Uint8Array, reason: ObservationEndedReason) => void): () => void {
    this.endedListeners.add(listener);
    return () => { this.endedListeners.delete(listener); };
  }

  private addServerObservation(token: Uint8Array): ServerObservation {
    const obs: ServerObservation = { token: token.slice(), key: toHex(token), sequence: undefined, queue: [], inFlight: undefined };
    this.serverObs.set(obs.key, obs);
    return obs;
  }

  private endServerObservation(obs: ServerObservation, reason: ObservationEndedReason): void {
    if (this.serverObs.get(obs.key) !== obs) return;
    this.serverObs.delete(obs.key);
    const nf = obs.inFlight;
    obs.inFlight = undefined;
    obs.queue.length = 0;
    if (nf) {
      nf.idleTimer?.cancel();
      if (nf.tx) this.cancelTransmission(nf.tx);
      if (nf.blocks) this.block2Cache.delete(obs.key);
    }
    for (const l of this.endedListeners) safeCall(() => l(obs.token.slice(), reason));
  }

  private pumpObservation(obs: ServerObservation): void {
    if (this.closed || obs.inFlight || this.serverObs.get(obs.key) !== obs) return;
    const next = obs.queue.shift();
    if (!next) return;
    const nf: InFlightNotification = { ...next, observe: undefined, blocks: false, tx: undefined, idleTimer: undefined, stalled: false };
    obs.inFlight = nf;
    this.transmitNotification(obs, nf);
  }

  /** (Re-)send a notification as CON: a fresh Message ID (when one frees), its Observe value assigned once. */
  private transmitNotification(obs: ServerObservation, nf: InFlightNotification): void {
    this.originate({
      alive: () => obs.inFlight === nf && !nf.stalled && this.serverObs.get(obs.key) === obs,
      run: (mid, seq) => this.sendNotification(obs, nf, mid, seq),
      fail: () => this.notificationFailed(obs, nf),
    });
  }

  private sendNotification(obs: ServerObservation, nf: InFlightNotification, mid: number, seq: number | undefined): void {
    const success = codeClass(nf.res.code) === 2;
    if (success && nf.observe === undefined) {
      nf.observe = nextObserveValue(obs.sequence, seq === undefined ? undefined : seq % OBSERVE_MODULUS);
      obs.sequence = nf.observe;
    }
    let first: CoapResponse;
    try {
      const res = { ...nf.res, options: withoutOptions(nf.res.options, Opt.OBSERVE, Opt.BLOCK2, Opt.SIZE2) };
      first = this.prepareResponse(obs.token, res, success ? [uintOption(Opt.OBSERVE, nf.observe!)] : [], undefined);
    } catch {
      first = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    nf.blocks = getOption(first.options, Opt.BLOCK2) !== undefined;
    const msg: CoapMessage = { type: CON, code: first.code, mid, token: obs.token, options: first.options, payload: first.payload };
    const tx = this.newTransmission(msg, undefined, {
      onAck: () => {
        nf.tx = undefined;
        if (obs.inFlight !== nf) return;
        if (!nf.blocks) { this.notificationDone(obs, nf); return; }
        const cached = this.block2Cache.get(obs.key);
        if (cached) cached.expiresAt = this.clock.now() + this.exchangeLifetimeMs;
        this.armBlockIdle(obs, nf);
      },
      onReset: () => {
        nf.tx = undefined;
        // RFC 7641 §3.6: the client is no longer interested.
        if (obs.inFlight === nf) this.endServerObservation(obs, 'reset');
      },
      onGiveUp: () => {
        nf.tx = undefined;
        if (obs.inFlight === nf) this.notificationFailed(obs, nf);
      },
    });
    nf.tx = tx;
    try {
      this.startTransmission(tx);
    } catch {
      nf.tx = undefined;
      this.notificationFailed(obs, nf);
    }
  }

  private armBlockIdle(obs: ServerObservation, nf: InFlightNotification): void {
    nf.idleTimer?.cancel();
    nf.idleTimer = this.clock.setTimer(this.exchangeLifetimeMs, () => {
      nf.idleTimer = undefined;
      if (obs.inFlight === nf && !nf.stalled && !this.closed) this.notificationFailed(obs, nf);
    });
  }

  private notificationDone(obs: ServerObservation, nf: InFlightNotification): void {
    nf.idleTimer?.cancel();
    nf.idleTimer = undefined;
    obs.inFlight = undefined;
    for (const l of this.deliveredListeners) safeCall(() => l(obs.token.slice(), nf.res, nf.observe));
    if (nf.observe === undefined) {
      this.endServerObservation(obs, 'final');
      return;
    }
    this.pumpObservation(obs);
  }

  private notificationFailed(obs: ServerObservation, nf: InFlightNotification): void {
    nf.idleTimer?.cancel();
    nf.idleTimer = undefined;
    if (nf.blocks) this.block2Cache.delete(obs.key);
    nf.stalled = true;
    for (const l of this.failedListeners) safeCall(() => l(obs.token.slice(), nf.res));
  }

  /** Server side of a Block2 follow-up for a token: a notification's body is being fetched. */
  private notificationBlockServed(key: string, last: boolean): void {
    const obs = this.serverObs.get(key);
    const nf = obs?.inFlight;
    if (!obs || !nf || !nf.blocks || nf.stalled) return;
    // A follow-up proves block 0 arrived even if its ACK was lost.
    if (nf.tx) { this.cancelTransmission(nf.tx); nf.tx = undefined; }
    if (last) this.notificationDone(obs, nf);
    else this.armBlockIdle(obs, nf);
  }

  /** Feed one received frame. Never throws; malformed frames are dropped and counted. */
  receive(frame: Uint8Array): void {
    if (this.closed) return;
    this.counters.received++;
    this.heardPeer = false;
    try {
      this.prune();
      this.receiveFrame(frame);
      // The peer is reachable again: re-send notifications that failed while it was not.
      if (this.heardPeer && this.retryOnReceive) this.retryNotifications();
    } catch (e) {
      // Defensive: nothing above should throw, but a bug must not take the link down.
      this.drop(e instanceof TrickleError ? e.code : 'ERR_COAP_FORMAT', frame.length, e instanceof WireError ? e : undefined);
    }
  }

  /**
   * Cancel every timer, reject pending requests with ERR_COAP_CLOSED, forget all state
   * but the server's registrations (without their queues), which exportObservations()
   * still returns.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const obs of [...this.clientObs.values()]) { obs.ended = true; obs.held.length = 0; }
    this.clientObs.clear();
    for (const obs of this.serverObs.values()) {
      obs.inFlight?.idleTimer?.cancel();
      obs.inFlight = undefined;
      obs.queue.length = 0;
    }
    for (const tx of this.outgoing.values()) tx.timer?.cancel();
    this.outgoing.clear();
    this.midTimer?.cancel();
    this.midTimer = undefined;
    this.midQueue = [];
    this.midQueueHead = 0;
    for (const task of this.tasks) { task.timer?.cancel(); task.done = true; }
    this.tasks.clear();
    for (const ex of [...this.exchanges.values()]) {
      this.fail(ex, 'ERR_COAP_CLOSED', 'CoAP endpoint closed with the request pending');
    }
    this.exchanges.clear();
    this.seen.clear();
    this.finishedMids.clear();
    this.recentTokens.clear();
    this.reassembly.clear();
    this.block2Cache.clear();
  }

  // -------------------------------------------------------------------------
  // Sending and retransmission
  // -------------------------------------------------------------------------

  private sendFrame(frame: Uint8Array): void {
    this.counters.sent++;
    try {
      this.sendFn(frame);
    } catch {
      this.counters.sendErrors++;
    }
  }

  /** Encode now (a stateful codec sees frames in sending order) and send. */
  private sendMessage(msg: CoapMessage): void {
    let frame: Uint8Array;
    try {
      frame = this.codec.encode(msg);
    } catch {
      // Encoded once before (or built here from valid parts): cannot happen; count it as lost.
      this.counters.sendErrors++;
      return;
    }
    this.sendFrame(frame);
  }

  /** Upper bound of the message's frame length with this codec. */
  private sizeOf(msg: CoapMessage): number {
    return (this.codec.sizeBound ?? rfc7252Codec.sizeBound!)(msg);
  }

  // -------------------------------------------------------------------------
  // Message IDs (RFC 7252 §4.4): never reused within midGuardMs; originations wait in order
  // -------------------------------------------------------------------------

  /** The counter the next Message ID comes from: S in 'sequence' mode, else the id itself. */
  private get midCounter(): number {
    return this.sequenceMode ? this.nextSeq : this.nextMid;
  }

  private stepCounter(c: number): number {
    return this.sequenceMode ? (c + 1) >>> 0 : (c + 1) & 0xffff;
  }

  /**
   * Assign the next counter value (S, or the 'random' mode id) to an origination, passing
   * over ids of CONs still awaiting an ACK (possible only when midGuardMs is shorter than a
   * CON's transmit span; with 65,535 CONs in flight the last one is taken and waits).
   */
  private assignCounter(): number {
    let c = this.midCounter;
    let passed = 0;
    while (passed < 0xffff && this.outgoing.has(c & 0xffff)) {
      c = this.stepCounter(c);
      passed++;
    }
    this.counters.midSkips += passed;
    if (this.sequenceMode) this.nextSeq = this.stepCounter(c);
    else this.nextMid = this.stepCounter(c);
    return c;
  }

  /** RFC 7252 §4.4: the id is not in flight and was last used at least midGuardMs ago. */
  private midUsable(mid: number, now: number): boolean {
    return !this.outgoing.has(mid) && this.midUsedAt[mid]! + this.midGuardMs <= now;
  }

  /**
   * Originate one CON/NON. Its S (and Message ID) is assigned now, in call order, so
   * nextSequence read before a request is its token and tokens increase in sending order.
   * It is sent at once when that id may be used and nobody waits ahead; else it joins the
   * FIFO queue and goes when the id frees (one Clock timer for the queue, no polling).
   */
  private originate(w: MidWaiter): void {
    if (this.closed) return;
    const c = this.assignCounter();
    const mid = c & 0xffff;
    const now = this.clock.now();
    if (this.midQueue.length === this.midQueueHead && this.midUsable(mid, now)) {
      this.runOrigination(c, w, now);
      return;
    }
    this.counters.midWaits++;
    this.midQueue.push({ counter: c, w });
    this.armMidTimer();
  }

  private runOrigination(c: number, w: MidWaiter, now: number): void {
    const mid = c & 0xffff;
    this.midUsedAt[mid] = now;
    try { w.run(mid, this.sequenceMode ? c : undefined); } catch (e) { w.fail(e); }
  }

  private pumpMidQueue(): void {
    while (!this.closed && this.midQueueHead < this.midQueue.length) {
      const q = this.midQueue[this.midQueueHead]!;
      if (!q.w.alive()) {
        // No longer wanted (its exchange ended while it waited): its S goes unused.
        this.shiftMidQueue();
        this.counters.midSkips++;
        continue;
      }
      const now = this.clock.now();
      if (!this.midUsable(q.counter & 0xffff, now)) { this.armMidTimer(); return; }
      this.shiftMidQueue();
      this.runOrigination(q.counter, q.w, now);
    }
  }

  private shiftMidQueue(): void {
    this.midQueue[this.midQueueHead++] = undefined as unknown as QueuedOrigination;
    if (this.midQueueHead === this.midQueue.length) { this.midQueue = []; this.midQueueHead = 0; }
    else if (this.midQueueHead >= 1024 && this.midQueueHead * 2 >= this.midQueue.length) {
      this.midQueue = this.midQueue.slice(this.midQueueHead);
      this.midQueueHead = 0;
    }
  }

  /**
   * Wake the queue when its head's Message ID frees: at the end of its guard, or (the id
   * still in flight) when that CON ends (outgoingEnded). No polling.
   */
  private armMidTimer(): void {
    if (this.midTimer || this.closed || this.midQueueHead >= this.midQueue.length) return;
    const mid = this.midQueue[this.midQueueHead]!.counter & 0xffff;
    if (this.outgoing.has(mid)) return;
    const delayMs = Math.max(0, this.midUsedAt[mid]! + this.midGuardMs - this.clock.now());
    this.midTimer = this.clock.setTimer(delayMs, () => {
      this.midTimer = undefined;
      this.pumpMidQueue();
    });
  }

  /** A CON left `outgoing`: if every id was in flight, the queue may move now. */
  private outgoingEnded(): void {
    if (this.midQueue.length > this.midQueueHead && !this.midTimer) this.armMidTimer();
  }

  private random01(): number {
    const b = this.randomBytes(4);
    return ((((b[0] ?? 0) << 24) >>> 0) + ((b[1] ?? 0) << 16) + ((b[2] ?? 0) << 8) + (b[3] ?? 0)) / 2 ** 32;
  }

  private newTransmission(
    msg: CoapMessage, token: Uint8Array | undefined,
    handlers: Pick<Transmission, 'onAck' | 'onReset' | 'onGiveUp'>,
  ): Transmission {
    return {
      mid: msg.mid, msg, token, retransmits: 0, timer: undefined, timeoutMs: 0,
      ...handlers,
    };
  }

  /**
   * Encode, register, arm, then send (in that order, so a synchronous ACK finds it
   * registered). The timeout derives from the first frame's length. Throws when the
   * message cannot be encoded (nothing is registered then).
   */
  private startTransmission(tx: Transmission): void {
    const frame = this.codec.encode(tx.msg);
    tx.timeoutMs = this.ackTimeout(frame.length) * (1 + (this.ackRandomFactor - 1) * this.random01());
    this.outgoing.set(tx.mid, tx);
    this.armRetransmit(tx);
    this.sendFrame(frame);
  }

  private armRetransmit(tx: Transmission): void {
    tx.timer = this.clock.setTimer(tx.timeoutMs, () => {
      tx.timer = undefined;
      if (this.outgoing.get(tx.mid) !== tx) return;
      if (tx.retransmits >= this.maxRetransmit) {
        this.outgoing.delete(tx.mid);
        this.outgoingEnded();
        this.counters.timeouts++;
        tx.onGiveUp();
        return;
      }
      tx.retransmits++;
      tx.timeoutMs *= 2;
      this.counters.retransmissions++;
      this.armRetransmit(tx);
      this.sendMessage(tx.msg);
    });
  }

  private cancelTransmission(tx: Transmission): void {
    tx.timer?.cancel();
    tx.timer = undefined;
    if (this.outgoing.get(tx.mid) === tx) {
      this.outgoing.delete(tx.mid);
      // A late ACK/RST for it is then counted as a duplicate, not a stray.
      if (!this.closed) this.finishedMids.set(tx.mid, this.clock.now() + this.exchangeLifetimeMs);
      this.outgoingEnded();
    }
  }

  // -------------------------------------------------------------------------
  // Receiving
  // -------------------------------------------------------------------------

  private drop(reason: CoapDropReason, frameLen: number, error?: WireError): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    const ev: CoapDrop = error ? { reason, frameLen, error } : { reason, frameLen };
    for (const l of this.dropListeners) {
      try { l(ev); } catch { /* a listener's failure is not the link's */ }
    }
  }

  private sendEmpty(type: typeof ACK | typeof RST, mid: number): CoapMessage {
    const msg: CoapMessage = { type, code: EMPTY, mid, token: EMPTY_BYTES, options: [], payload: EMPTY_BYTES };
    this.sendMessage(msg);
    return msg;
  }

  private receiveFrame(frame: Uint8Array): void {
    let msg: CoapMessage;
    try {
      msg = this.codec.decode(frame);
    } catch (e) {
      const err = e instanceof WireError ? e : new WireError('ERR_COAP_FORMAT', 'coap', 'undecodable message');
      this.drop(err.code, frame.length, err);
      // RFC 7252 §4.2: reject a CON we cannot process with RST, when its header is
      // readable. Only the RFC 7252 layout has a header readable without decoding.
      const b0 = frame[0];
      if (this.codec === rfc7252Codec && frame.length >= 4 && b0 !== undefined && (b0 >> 6) === 1 && ((b0 >> 4) & 0x03) === CON) {
        this.sendEmpty(RST, (frame[2]! << 8) | frame[3]!);
      }
      return;
    }
    this.heardPeer = true;

    if (msg.type === ACK || msg.type === RST) {
      this.receiveAckOrReset(msg, frame.length);
      return;
    }
    if (msg.code === EMPTY) {
      // CON 0.00 is a "CoAP ping" (§4.3): answered with RST. (NON Empty fails decoding.)
      this.sendEmpty(RST, msg.mid);
      return;
    }
    const now = this.clock.now();
    const digest = messageDigest(msg);
    const dup = this.seen.get(msg.mid);
    if (dup && !(dup.done && dup.expiresAt <= now)) {
      if (dup.digest === digest) {
        // A copy (§4.5): answered as before, processed once.
        this.counters.duplicates++;
        if (dup.reply) this.sendMessage(dup.reply);
        return;
      }
      // Not a copy (retransmissions carry the same message): a new message under an id we still
      // remember. The peer reused it early (a shorter lifetime than ours, or a restart); answering
      // it from the old reply would hand it someone else's answer and wedge the link.
      this.counters.midReuse++;
      dup.superseded = true;
    }
    const entry: SeenEntry = { expiresAt: now + this.exchangeLifetimeMs, digest, reply: undefined, done: false, superseded: false };
    this.seen.delete(msg.mid);
    this.seen.set(msg.mid, entry);
    if (isRequestCode(msg.code)) this.receiveRequest(msg, entry);
    else this.receiveSeparateResponse(msg, entry, frame.length);
  }

  private receiveAckOrReset(msg: CoapMessage, frameLen: number): void {
    const tx = this.outgoing.get(msg.mid);
    if (!tx) {
      const finished = this.finishedMids.get(msg.mid);
      if (finished !== undefined && finished > this.clock.now()) this.counters.duplicates++;
      else this.drop('unmatched', frameLen);
      return;
    }
    if (msg.type === ACK && msg.code !== EMPTY && tx.token && !equalBytes(tx.token, msg.token)) {
      // A piggybacked response with someone else's token is no answer to this CON (§5.3.2).
      this.drop('unmatched', frameLen);
      return;
    }
    this.cancelTransmission(tx);
    if (msg.type === ACK) tx.onAck(msg);
    else tx.onReset();
  }

  // -------------------------------------------------------------------------
  // Client side
  // -------------------------------------------------------------------------

  private freshToken(): Uint8Array {
    // The request's first message gets this S (originate() assigns it next, in call order),
    // unless its id is still awaiting an ACK and is passed over (then S is a little higher).
    if (this.sequenceMode) return sequenceToken(this.nextSeq);
    for (let i = 0; i < 64; i++) {
      const t = this.randomBytes(this.tokenLength).slice(0, this.tokenLength);
      if (t.length !== this.tokenLength) break;
      const k = toHex(t);
      if (!this.exchanges.has(k) && !this.recentTokens.has(k)) return t;
    }
    throw new TrickleError('ERR_COAP_FORMAT', 'coap', 'no free token: too many requests in flight for the token length',
      { tokenLength: this.tokenLength, inFlight: this.exchanges.size });
  }

  private startRequest(ex: ClientExchange): void {
    const whole = this.sizeOf({ type: CON, code: ex.code, mid: 0, token: ex.token, options: ex.options, payload: ex.body });
    if (whole <= this.maxFrameLen || ex.body.length === 0) {
      this.sendLeg(ex, 'plain', undefined, ex.options, ex.body);
      return;
    }
    const szx = this.fitBlockSzx(ex.code, ex.token, ex.options, Opt.BLOCK1, Opt.SIZE1, ex.body.length, true);
    if (szx === undefined) {
      this.fail(ex, 'ERR_COAP_TOO_LARGE', `request options leave no room for a 16-byte block in ${this.maxFrameLen}-byte frames`);
      return;
    }
    ex.b1Szx = szx;
    ex.b1Offset = 0;
    this.sendBlock1(ex);
  }

  private sendBlock1(ex: ClientExchange): void {
    const size = blockSize(ex.b1Szx);
    const num = ex.b1Offset / size;
    const chunk = ex.body.subarray(ex.b1Offset, ex.b1Offset + size);
    const block: BlockValue = { num, more: ex.b1Offset + chunk.length < ex.body.length, szx: ex.b1Szx };
    const options = [...ex.options, blockOption(Opt.BLOCK1, block)];
    if (num === 0) options.push(uintOption(Opt.SIZE1, ex.body.length));
    this.sendLeg(ex, 'block1', block, options, chunk);
  }

  private sendLeg(ex: ClientExchange, kind: Leg['kind'], block: BlockValue | undefined, options: CoapOption[], payload: Uint8Array): void {
    const probe: CoapMessage = { type: CON, code: ex.code, mid: 0, token: ex.token, options, payload };
    const frameLen = this.sizeOf(probe);
    if (frameLen > this.maxFrameLen) {
      this.fail(ex, 'ERR_COAP_TOO_LARGE', `request frame of ${frameLen} bytes exceeds maxFrameLen ${this.maxFrameLen}`,
        { frameLen });
      return;
    }
    const leg: Leg = { kind, block, tx: undefined, responseTimer: undefined };
    ex.leg = leg;
    this.originate({
      alive: () => !ex.done && ex.leg === leg,
      run: (mid) => this.transmitLeg(ex, leg, { ...probe, mid }),
      fail: (e) => this.failWith(ex, e),
    });
  }

  /** The leg's message has its Message ID: arm the response timer (from the first transmission) and send. */
  private transmitLeg(ex: ClientExchange, leg: Leg, msg: CoapMessage): void {
    const mid = msg.mid;
    leg.responseTimer = this.clock.setTimer(ex.responseTimeoutMs, () => {
      leg.responseTimer = undefined;
      if (ex.leg !== leg) return;
      this.counters.timeouts++;
      this.fail(ex, 'ERR_COAP_TIMEOUT', `no response within ${ex.responseTimeoutMs} ms`);
    });
    const tx = this.newTransmission(msg, ex.token, {
      onAck: (ack) => {
        leg.tx = undefined;
        if (ack.code !== EMPTY) this.clientResponse(ex, leg, ack);
        // Empty ACK: the response will come separately; the response timer keeps running.
      },
      onReset: () => {
        leg.tx = undefined;
        if (ex.leg === leg) this.fail(ex, 'ERR_COAP_RESET', 'peer answered the request with RST');
      },
      onGiveUp: () => {
        leg.tx = undefined;
        if (ex.leg === leg) {
          this.fail(ex, 'ERR_COAP_TIMEOUT', `no ACK after ${this.maxRetransmit} retransmissions`, { mid });
        }
      },
    });
    leg.tx = tx;
    this.startTransmission(tx);
  }

  private endLeg(leg: Leg): void {
    leg.responseTimer?.cancel();
    leg.responseTimer = undefined;
    if (leg.tx) { this.cancelTransmission(leg.tx); leg.tx = undefined; }
  }

  private receiveSeparateResponse(msg: CoapMessage, entry: SeenEntry, frameLen: number): void {
    entry.done = true;
    const key = toHex(msg.token);
    const ex = this.exchanges.get(key);
    const obs = this.clientObs.get(key);
    if (obs && (!obs.registration || ex !== obs.registration)) {
      this.receiveNotification(obs, msg, entry, frameLen);
      return;
    }
    if (ex?.deregister && getOption(msg.options, Opt.OBSERVE) !== undefined) {
      // A notification overtaking our deregistration: RST it too (RFC 7641 §3.6).
      if (msg.type === CON) entry.reply = this.sendEmpty(RST, msg.mid);
      this.drop('unmatched', frameLen);
      return;
    }
    if (!ex || !ex.leg) {
      // §5.3.2: a response we cannot match is rejected (RST for CON, silence for NON).
      if (msg.type === CON) entry.reply = this.sendEmpty(RST, msg.mid);
      this.drop('unmatched', frameLen);
      return;
    }
    if (msg.type === CON) entry.reply = this.sendEmpty(ACK, msg.mid);
    this.clientResponse(ex, ex.leg, msg);
  }

  private clientResponse(ex: ClientExchange, leg: Leg, msg: CoapMessage): void {
    if (ex.done || ex.leg !== leg) return;
    // A response also acknowledges the request (its empty ACK may have been lost).
    this.endLeg(leg);
    ex.leg = undefined;
    try {
      if (leg.kind === 'block1' && msg.code === Response.CONTINUE) {
        const echoValue = getOption(msg.options, Opt.BLOCK1);
        const echo = echoValue ? decodeBlock(echoValue) : undefined;
        const sent = leg.block!;
        if (!echo || echo.num !== sent.num || !sent.more) {
          this.fail(ex, 'ERR_COAP_BLOCK', '2.31 Continue does not match the Block1 block sent',
            { sentNum: sent.num, echoNum: echo?.num });
          return;
        }
        ex.b1Offset += blockSize(sent.szx);
        // §2.5: the server may ask for smaller blocks; offsets stay aligned (sizes are powers of 2).
        ex.b1Szx = Math.min(sent.szx, echo.szx);
        this.sendBlock1(ex);
        return;
      }
      this.clientResponseBody(ex, leg, msg);
    } catch (e) {
      this.failWith(ex, e);
    }
  }

  private clientResponseBody(ex: ClientExchange, leg: Leg, msg: CoapMessage): void {
    const b2Value = getOption(msg.options, Opt.BLOCK2);
    if (!b2Value) {
      if (leg.kind === 'block2') {
        this.fail(ex, 'ERR_COAP_BLOCK', `Block2 follow-up answered ${codeToString(msg.code)} without a block`,
          { code: codeToString(msg.code) });
        return;
      }
      this.succeed(ex, { code: msg.code, options: withoutOptions(msg.options, Opt.BLOCK1), payload: msg.payload });
      return;
    }
    const b2 = decodeBlock(b2Value);
    if (!ex.b2) {
      if (b2.num !== 0) {
        this.fail(ex, 'ERR_COAP_BLOCK', `first response block has NUM ${b2.num}`);
        return;
      }
      const size2 = getUintOption(msg.options, Opt.SIZE2);
      if (size2 !== undefined && size2 > this.maxBodyBytes) {
        this.fail(ex, 'ERR_COAP_TOO_LARGE', `response of ${size2} bytes exceeds maxBodyBytes ${this.maxBodyBytes}`, { size2 });
        return;
      }
      ex.b2 = {
        code: msg.code,
        options: withoutOptions(msg.options, Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE2),
        chunks: [], received: 0,
      };
    }
    const asm = ex.b2;
    const size = blockSize(b2.szx);
    if (b2.num * size !== asm.received || (b2.more && msg.payload.length !== size) || msg.payload.length > size) {
      this.fail(ex, 'ERR_COAP_BLOCK', 'response block out of order or of the wrong size',
        { num: b2.num, szx: b2.szx, len: msg.payload.length, received: asm.received });
      return;
    }
    if (asm.received + msg.payload.length > this.maxBodyBytes) {
      this.fail(ex, 'ERR_COAP_TOO_LARGE', `response exceeds maxBodyBytes ${this.maxBodyBytes}`);
      return;
    }
    asm.chunks.push(msg.payload);
    asm.received += msg.payload.length;
    if (!b2.more) {
      this.succeed(ex, { code: asm.code, options: asm.options, payload: concatBytes(...asm.chunks) });
      return;
    }
    const next: BlockValue = { num: asm.received / size, more: false, szx: b2.szx };
    // Follow-ups never carry Observe (RFC 7959 §3.4): they fetch, they do not (re-)register.
    this.sendLeg(ex, 'block2', next, [...withoutOptions(ex.options, Opt.OBSERVE), blockOption(Opt.BLOCK2, next)], EMPTY_BYTES);
  }

  private finish(ex: ClientExchange): boolean {
    if (ex.done) return false;
    ex.done = true;
    if (ex.leg) { this.endLeg(ex.leg); ex.leg = undefined; }
    this.exchanges.delete(ex.key);
    // 'random' mode draws tokens: one used is not drawn again within the guard. ('sequence'
    // tokens are unique for 2^32 originations and need no such memory.)
    if (!this.closed && !this.sequenceMode) this.recentTokens.set(ex.key, this.clock.now() + this.midGuardMs);
    return true;
  }

  private succeed(ex: ClientExchange, res: CoapResponse): void {
    if (this.finish(ex)) ex.resolve(res);
  }

  private fail(ex: ClientExchange, code: ErrorCode, message: string, detail?: Record<string, unknown>): void {
    if (this.finish(ex)) ex.reject(new TrickleError(code, 'coap', message, { token: ex.key, ...detail }));
  }

  private failWith(ex: ClientExchange, e: unknown): void {
    if (e instanceof TrickleError) {
      const code = e.code === 'ERR_COAP_OPTION' ? 'ERR_COAP_BLOCK' : e.code;
      this.fail(ex, code, e.message, e.detail ? { ...e.detail } : undefined);
    } else {
      this.fail(ex, 'ERR_COAP_FORMAT', e instanceof Error ? e.message : String(e));
    }
  }

  // -------------------------------------------------------------------------
  // Server side
  // -------------------------------------------------------------------------

  private receiveRequest(msg: CoapMessage, entry: SeenEntry): void {
    const key = toHex(msg.token);
    let b1: BlockValue | undefined;
    let b2: BlockValue | undefined;
    try {
      const b1v = getOption(msg.options, Opt.BLOCK1);
      if (b1v) b1 = decodeBlock(b1v);
      const b2v = getOption(msg.options, Opt.BLOCK2);
      if (b2v) b2 = decodeBlock(b2v);
    } catch {
      // RFC 7959 §2.2: a reserved SZX (or an over-long value) is a 4.00.
      this.reply(msg, entry, { code: Response.BAD_REQUEST, options: [], payload: EMPTY_BYTES });
      return;
    }
    if (b2 && b2.num > 0) {
      this.serveBlock2(msg, entry, key, b2);
      return;
    }
    // Anything else with this token starts a new request: forget an older cached response.
    this.block2Cache.delete(key);
    if (b1) {
      this.receiveBlock1(msg, entry, key, b1, b2?.szx);
      return;
    }
    this.reassembly.delete(key);
    this.runHandler(msg, entry, withoutOptions(msg.options, Opt.BLOCK2, Opt.SIZE2), msg.payload, b2?.szx, []);
  }

  private receiveBlock1(msg: CoapMessage, entry: SeenEntry, key: string, b1: BlockValue, preferredSzx: number | undefined): void {
    const now = this.clock.now();
    const size = blockSize(b1.szx);
    const offset = b1.num * size;
    const tooLarge = (): void => {
      this.reassembly.delete(key);
      this.reply(msg, entry, {
        code: Response.REQUEST_ENTITY_TOO_LARGE,
        options: [uintOption(Opt.SIZE1, this.maxBodyBytes)],
        payload: EMPTY_BYTES,
      });
    };
    const fault = (code: number): void => {
      this.reassembly.delete(key);
      this.reply(msg, entry, { code, options: [], payload: EMPTY_BYTES });
    };
    if (b1.num === 0) {
      this.reassembly.delete(key);
      let size1: number | undefined;
      try { size1 = getUintOption(msg.options, Opt.SIZE1); } catch { fault(Response.BAD_REQUEST); return; }
      if (size1 !== undefined && size1 > this.maxBodyBytes) { tooLarge(); return; }
      if (b1.more) {
        if (this.reassembly.size >= MAX_CONCURRENT_REASSEMBLIES) { fault(Response.SERVICE_UNAVAILABLE); return; }
        this.reassembly.set(key, { chunks: [], received: 0, expiresAt: now + this.exchangeLifetimeMs });
      }
    }
    const st = b1.num === 0 && !b1.more
      ? { chunks: [], received: 0, expiresAt: now }
      : this.reassembly.get(key);
    if (!st || (b1.num !== 0 && st.expiresAt <= now) || offset !== st.received) {
      fault(Response.REQUEST_ENTITY_INCOMPLETE);
      return;
    }
    const len = msg.payload.length;
    if ((b1.more && len !== size) || len > size) { fault(Response.BAD_REQUEST); return; }
    if (st.received + len > this.maxBodyBytes) { tooLarge(); return; }
    st.chunks.push(msg.payload);
    st.received += len;
    st.expiresAt = now + this.exchangeLifetimeMs;
    if (b1.more) {
      this.reply(msg, entry, {
        code: Response.CONTINUE,
        options: [blockOption(Opt.BLOCK1, { num: b1.num, more: true, szx: b1.szx })],
        payload: EMPTY_BYTES,
      });
      return;
    }
    this.reassembly.delete(key);
    this.runHandler(msg, entry, withoutOptions(msg.options, Opt.BLOCK1, Opt.SIZE1, Opt.BLOCK2, Opt.SIZE2),
      concatBytes(...st.chunks), preferredSzx,
      // §2.3: the final response echoes Block1 with M=0.
      [blockOption(Opt.BLOCK1, { num: b1.num, more: false, szx: b1.szx })]);
  }

  private serveBlock2(msg: CoapMessage, entry: SeenEntry, key: string, b2: BlockValue): void {
    const now = this.clock.now();
    const cached = this.block2Cache.get(key);
    if (!cached || cached.expiresAt <= now) {
      this.block2Cache.delete(key);
      this.reply(msg, entry, { code: Response.REQUEST_ENTITY_INCOMPLETE, options: [], payload: EMPTY_BYTES });
      return;
    }
    // The client may ask for smaller blocks than offered (§2.4); never larger.
    const szx = Math.min(b2.szx, cached.szx);
    const offset = b2.num * blockSize(b2.szx);
    const size = blockSize(szx);
    if (offset >= cached.payload.length) {
      this.reply(msg, entry, { code: Response.BAD_OPTION, options: [], payload: EMPTY_BYTES });
      return;
    }
    const chunk = cached.payload.subarray(offset, offset + size);
    const more = offset + chunk.length < cached.payload.length;
    if (more) cached.expiresAt = now + this.exchangeLifetimeMs;
    else this.block2Cache.delete(key);
    this.reply(msg, entry, {
      code: cached.code,
      options: [blockOption(Opt.BLOCK2, { num: offset / size, more, szx })],
      payload: chunk,
    });
    this.notificationBlockServed(key, !more);
  }

  /** Answer at once: piggybacked in the ACK of a CON, or as a NON to a NON. */
  private reply(req: CoapMessage, entry: SeenEntry, res: CoapResponse): void {
    entry.done = true;
    const send = (type: CoapType, mid: number): void => {
      const msg: CoapMessage = { type, code: res.code, mid, token: req.token, options: res.options, payload: res.payload };
      entry.reply = msg;
      this.sendMessage(msg);
    };
    if (req.type === CON) {
      send(ACK, req.mid);
      return;
    }
    // A NON response is a message of our own: it needs a Message ID of ours.
    this.originate({ alive: () => true, run: (mid) => send(NON, mid), fail: () => { this.counters.sendErrors++; } });
  }

  private runHandler(
    msg: CoapMessage, entry: SeenEntry, options: CoapOption[], payload: Uint8Array,
    preferredSzx: number | undefined, extraResponseOptions: CoapOption[],
  ): void {
    const task: ServerTask = { timer: undefined, ackSent: false, done: false };
    this.tasks.add(task);
    if (msg.type === CON) {
      task.timer = this.clock.setTimer(this.piggybackWindowMs, () => {
        task.timer = undefined;
        if (task.done || this.closed) return;
        task.ackSent = true;
        // A superseded request's id belongs to a newer message now: no ACK under it.
        if (!entry.superseded) entry.reply = this.sendEmpty(ACK, msg.mid);
      });
    }
    const handler = this.handler;
    let observe: 0 | 1 | undefined;
    try {
      const v = getUintOption(options, Opt.OBSERVE, 3);
      if (v === OBSERVE_REGISTER || v === OBSERVE_DEREGISTER) observe = v;
    } catch { /* a malformed Observe is ignored (elective option, RFC 7252 §5.4.1) */ }
    // RFC 7641 §3.6 / §4.1: a deregistration removes the entry, then is processed as usual.
    if (observe === OBSERVE_DEREGISTER) {
      const old = this.serverObs.get(toHex(msg.token));
      if (old) this.endServerObservation(old, 'deregistered');
    }
    const incoming: IncomingRequest = {
      code: msg.code, options: withoutOptions(options, Opt.OBSERVE), payload, token: msg.token, confirmable: msg.type === CON,
      ...(observe !== undefined ? { observe } : {}),
    };
    Promise.resolve()
      .then(() => (handler ? handler(incoming) : { code: Response.NOT_IMPLEMENTED }))
      .then((r) => ({ res: normalizeResponse(r), accept: observe === OBSERVE_REGISTER && (r as CoapResponseInit | undefined)?.observe === true }),
        () => ({ res: normalizeResponse(undefined), accept: false }))
      .then(({ res, accept }) => {
        try {
          if (observe === OBSERVE_REGISTER && this.finishRegistration(msg, entry, task, res, accept, extraResponseOptions)) return;
          this.finishHandler(msg, entry, task, res, preferredSzx, extraResponseOptions);
        } catch {
          // Unreachable by construction; a handler's odd response must not become an unhandled rejection.
        }
      });
  }

  /**
   * The handler answered a registration (Observe = 0). Accepted (2.xx, `observe:
   * true`): the registration is added or updated (§4.1) and the first response queued
   * as a separate CON (empty ACK now), so its delivery is known before any
   * notification follows; true. Otherwise an existing registration for the token is
   * removed and the answer goes out as usual; false.
   */
  private finishRegistration(
    msg: CoapMessage, entry: SeenEntry, task: ServerTask, res: CoapResponse, accept: boolean, extra: CoapOption[],
  ): boolean {
    if (task.done || this.closed) return false;
    const key = toHex(msg.token);
    if (!accept || codeClass(res.code) !== 2 || msg.type !== CON) {
      const old = this.serverObs.get(key);
      if (old) this.endServerObservation(old, 'deregistered');
      if (!accept || codeClass(res.code) !== 2) return false;
      // A NON registration: the answer is a NON with Observe; no delivery to wait for.
      const obs = this.addServerObservation(msg.token);
      const v = nextObserveValue(obs.sequence, this.sequenceMode ? this.nextSeq % OBSERVE_MODULUS : undefined);
      obs.sequence = v;
      this.finishHandler(msg, entry, task, { ...res, options: [...res.options, uintOption(Opt.OBSERVE, v)] }, undefined, extra);
      return true;
    }
    task.done = true;
    task.timer?.cancel();
    task.timer = undefined;
    this.tasks.delete(task);
    entry.done = true;
    if (!task.ackSent) {
      task.ackSent = true;
      if (!entry.superseded) entry.reply = this.sendEmpty(ACK, msg.mid);
    }
    const obs = this.serverObs.get(key) ?? this.addServerObservation(msg.token);
    obs.queue.unshift({ res: { code: res.code, options: [...res.options, ...extra], payload: res.payload }, first: true });
    this.pumpObservation(obs);
    return true;
  }

  private finishHandler(
    msg: CoapMessage, entry: SeenEntry, task: ServerTask, res: CoapResponse,
    preferredSzx: number | undefined, extraResponseOptions: CoapOption[],
  ): void {
    if (task.done) return;
    task.done = true;
    task.timer?.cancel();
    task.timer = undefined;
    this.tasks.delete(task);
    if (this.closed) return;
    entry.done = true;
    let first: CoapResponse;
    try {
      first = this.prepareResponse(msg.token, res, extraResponseOptions, preferredSzx);
    } catch {
      // The handler's options cannot be encoded (bad number, oversized value).
      first = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    if (msg.type === CON && !task.ackSent && !entry.superseded) {
      this.reply(msg, entry, first);
      return;
    }
    if (msg.type === NON) {
      this.reply(msg, entry, first);
      return;
    }
    // Separate response (§5.2.2): a CON of its own; the request's entry keeps the empty ACK.
    const key = toHex(msg.token);
    this.originate({
      alive: () => true,
      run: (mid) => {
        const separate: CoapMessage = { type: CON, code: first.code, mid, token: msg.token, options: first.options, payload: first.payload };
        this.startTransmission(this.newTransmission(separate, undefined, {
          onAck: () => { /* delivered */ },
          onReset: () => { this.block2Cache.delete(key); },
          onGiveUp: () => { this.block2Cache.delete(key); },
        }));
      },
      fail: () => { this.counters.sendErrors++; },
    });
  }

  /**
   * The first message of a response: whole when it fits, else block 0 of a Block2
   * transfer with the full response cached under the request token.
   */
  private prepareResponse(token: Uint8Array, res: CoapResponse, extra: CoapOption[], preferredSzx: number | undefined): CoapResponse {
    const options = [...res.options, ...extra];
    // Sized as a separate CON response, which may cost more header than the ACK.
    const asAck = this.sizeOf({ type: ACK, code: res.code, mid: 0, token, options, payload: res.payload });
    const asCon = this.sizeOf({ type: CON, code: res.code, mid: 0, token, options, payload: res.payload });
    if (Math.max(asAck, asCon) <= this.maxFrameLen) return { code: res.code, options, payload: res.payload };
    let szx = this.fitBlockSzx(res.code, token, options, Opt.BLOCK2, Opt.SIZE2, res.payload.length, false);
    if (szx === undefined) {
      return { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    if (preferredSzx !== undefined) szx = Math.min(szx, preferredSzx);
    const size = blockSize(szx);
    this.block2Cache.set(toHex(token), {
      code: res.code, payload: res.payload, szx, expiresAt: this.clock.now() + this.exchangeLifetimeMs,
    });
    return {
      code: res.code,
      options: [
        ...options,
        blockOption(Opt.BLOCK2, { num: 0, more: true, szx }),
        uintOption(Opt.SIZE2, res.payload.length),
      ],
      payload: res.payload.subarray(0, size),
    };
  }

  /**
   * Largest SZX such that both block 0 (options + Block(0) + Size) and any later
   * block (options if repeated + Block at the largest NUM) fit maxFrameLen; also
   * NUM must stay < 2^20. Undefined when nothing fits.
   */
  private fitBlockSzx(
    code: number, token: Uint8Array, options: CoapOption[], blockNumber: number, sizeNumber: number,
    totalBytes: number, repeatOptions: boolean,
  ): number | undefined {
    // Everything but the payload bytes: the size with a 1-byte payload, less that byte.
    // CON and ACK both (responses go either way; requests only as CON, same bound).
    const one = Uint8Array.of(0);
    const len = (opts: CoapOption[]): number => Math.max(
      this.sizeOf({ type: CON, code, mid: 0, token, options: opts, payload: one }),
      isResponseCode(code) ? this.sizeOf({ type: ACK, code, mid: 0, token, options: opts, payload: one }) : 0,
    ) - 1;
    const first = len([...options, blockOption(blockNumber, { num: 0, more: true, szx: 0 }), uintOption(sizeNumber, totalBytes)]);
    const later = len([...(repeatOptions ? options : []), blockOption(blockNumber, { num: BLOCK_NUM_MAX, more: true, szx: 0 })]);
    const szx = chooseBlockSzx(Math.max(first, later), this.maxFrameLen);
    if (szx === undefined || Math.ceil(totalBytes / blockSize(szx)) > BLOCK_NUM_MAX + 1) return undefined;
    return szx;
  }

  // -------------------------------------------------------------------------
  // Housekeeping (lazy: no timers of its own)
  // -------------------------------------------------------------------------

  private prune(): void {
    const now = this.clock.now();
    if (now < this.nextPruneAt) return;
    this.nextPruneAt = now + Math.max(1, this.exchangeLifetimeMs / 8);
    for (const [mid, e] of this.seen) if (e.done && e.expiresAt <= now) this.seen.delete(mid);
    for (const [mid, t] of this.finishedMids) if (t <= now) this.finishedMids.delete(mid);
    for (const [k, t] of this.recentTokens) if (t <= now) this.recentTokens.delete(k);
    for (const [k, r] of this.reassembly) if (r.expiresAt <= now) this.reassembly.delete(k);
    for (const [k, c] of this.block2Cache) if (c.expiresAt <= now) this.block2Cache.delete(k);
  }
}

/** A response as an observer sees it: no Observe or block-wise options. */
function stripForCaller(res: CoapResponse | CoapMessage): CoapResponse {
  return { code: res.code, options: withoutOptions(res.options, Opt.OBSERVE, Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE2), payload: res.payload };
}

/** Run a caller's callback; its failure is not the link's. */
function safeCall(fn: () => void): void {
  try { fn(); } catch { /* ignored */ }
}

function normalizeResponse(r: unknown): CoapResponse {
  const bad = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
  if (typeof r !== 'object' || r === null) return bad;
  const { code, options, payload } = r as { code?: unknown; options?: unknown; payload?: unknown };
  if (typeof code !== 'number' || !isResponseCode(code)) return bad;
  if (options !== undefined && !Array.isArray(options)) return bad;
  if (payload !== undefined && !(payload instanceof Uint8Array)) return bad;
  return { code, options: (options as CoapOption[] | undefined) ?? [], payload: payload ?? EMPTY_BYTES };
}

/**
 * A 53-bit digest of everything that makes a message what it is except its Message ID: type,
 * code, token, options and payload (each length-prefixed). Copies of one message digest alike
 * (a retransmission is re-encoded from the same CoapMessage and the codec expands it to the same
 * message); two different messages collide with probability about 2^-53. Not cryptographic: the
 * security layer below authenticates every frame. (cyrb53's two-lane multiply-xorshift mix.)
 */
function messageDigest(msg: CoapMessage): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  const mix = (b: number): void => {
    h1 = Math.imul(h1 ^ b, 2654435761);
    h2 = Math.imul(h2 ^ b, 1597334677);
  };
  const mix16 = (n: number): void => { mix(n >>> 8); mix(n & 0xff); };
  const bytes = (v: Uint8Array): void => {
    mix16(v.length >>> 16);
    mix16(v.length & 0xffff);
    for (let i = 0; i < v.length; i++) mix(v[i]!);
  };
  mix(msg.type);
  mix(msg.code);
  bytes(msg.token);
  mix16(msg.options.length);
  for (const o of msg.options) {
    mix16(o.number);
    bytes(o.value);
  }
  bytes(msg.payload);
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 0x100000000 * (0x1fffff & h2) + (h1 >>> 0);
}
