/**
 * CoapEndpoint: the RFC 7252 message layer and RFC 7959 block-wise transfer for one
 * link peer. Both ends of a link run one; either side may be client and server.
 *
 * Stateful and Clock-driven; never logs, never does I/O itself: frames leave through
 * the injected `send` and arrive through `receive`. Time comes from the injected
 * Clock, randomness (retransmission jitter; in 'random' token mode also the initial
 * Message ID and tokens) from RandomBytes.
 *
 * The message layer (RFC 7252 §4: CON/NON/ACK/RST, Message IDs, retransmission,
 * de-duplication, piggybacked and separate responses) is message-layer.ts.
 *
 * Requests and responses, whole or block by block (RFC 7959: Block1 reassembly, the
 * Block2 cache, the client side of both), with the client's exchanges and tokens
 * (RFC 7252 §5.3), are block-wise.ts.
 *
 * Responses are matched by token (RFC 7252 §5.3.2), here: a notification goes to its
 * observation, anything else to our request with that token. A separate CON response is
 * ACKed, and also ends retransmission of the request when the empty ACK was lost. An
 * unmatched CON response is answered with RST.
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
import { fromHex, toHex } from '../util/bytes.ts';
import {
  ACK, CON, Method, Opt, RST, Response, codeClass, codeToString, isRequestCode,
} from './numbers.ts';
import {
  getOption, getUintOption, rfc7252Codec, uintOption, withoutOptions,
  type CoapMessage, type CoapOption, type WireCodec,
} from './message.ts';
import {
  OBSERVE_DEREGISTER, OBSERVE_MODULUS, OBSERVE_REGISTER, isFresh, nextObserveValue, parseObservationRecords,
  type ObservationRecord,
} from './observe.ts';
import { decodeBlock, type BlockValue } from './block.ts';
import { MessageLayer, type SeenEntry, type ServerTask, type Transmission } from './message-layer.ts';
import { BlockWise, normalizeResponse, type ClientExchange } from './block-wise.ts';

export { MAX_CONCURRENT_REASSEMBLIES } from './block-wise.ts';

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

const EMPTY_BYTES = new Uint8Array(0);

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

function positive(name: string, v: number | undefined, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new ConfigError(`coap: ${name} must be a finite number ≥ ${min}, got ${String(v)}`, { key: name, value: v });
  }
  return v;
}

export class CoapEndpoint {
  private readonly clock: Clock;
  private readonly maxFrameLen: number;
  private readonly defaultResponseTimeoutMs: number;
  private readonly observeFreshnessMs: number;
  private readonly retryOnReceive: boolean;
  private readonly ml: MessageLayer;
  private readonly bw: BlockWise;

  private handler: RequestHandler | undefined;
  private readonly counters: CoapEndpointStats = {
    sent: 0, received: 0, retransmissions: 0, duplicates: 0, timeouts: 0, sendErrors: 0, dropped: {},
    notifications: 0, staleNotifications: 0, midWaits: 0, midSkips: 0, midReuse: 0, midWaiting: 0, midGuardMs: 0,
  };

  /** Client: our observations, by token (hex). */
  private readonly clientObs = new Map<string, ClientObservation>();
  /** Server: the peer's registrations, by token (hex). Kept (without timers) after close() for export. */
  private readonly serverObs = new Map<string, ServerObservation>();
  private readonly failedListeners = new Set<(token: Uint8Array, res: CoapResponse) => void>();
  private readonly deliveredListeners = new Set<(token: Uint8Array, res: CoapResponse, seq: number | undefined) => void>();
  private readonly endedListeners = new Set<(token: Uint8Array, reason: ObservationEndedReason) => void>();

  constructor(opts: CoapEndpointOptions) {
    this.clock = opts.clock;
    this.maxFrameLen = positive('maxFrameLen', opts.maxFrameLen, 0, 32);
    const codec = opts.wireCodec ?? rfc7252Codec;
    const mode = opts.tokenMode ?? 'sequence';
    if (mode !== 'sequence' && mode !== 'random') {
      throw new ConfigError(`coap: tokenMode must be 'sequence' or 'random', got ${String(mode)}`, { key: 'tokenMode' });
    }
    const sequenceMode = mode === 'sequence';
    const start = opts.sequenceStart ?? 1;
    if (!Number.isInteger(start) || start < 0 || start > 0xffffffff) {
      throw new ConfigError(`coap: sequenceStart must be an integer 0..2^32-1, got ${start}`, { key: 'sequenceStart' });
    }
    const tokenLength = sequenceMode ? 4 : positive('tokenLength', opts.tokenLength, 2, 1);
    if (!Number.isInteger(tokenLength) || tokenLength > 8) {
      throw new ConfigError(`coap: tokenLength must be an integer 1–8, got ${tokenLength}`, { key: 'tokenLength' });
    }
    const ack = opts.ackTimeoutMs;
    let ackTimeout: (frameLen: number) => number;
    if (typeof ack === 'number') {
      const base = positive('ackTimeoutMs', ack, 0, 1);
      ackTimeout = () => base;
    } else if (typeof ack === 'function') {
      ackTimeout = (len) => {
        const v = ack(len);
        return Number.isFinite(v) && v >= 1 ? v : 1;
      };
    } else {
      throw new ConfigError('coap: ackTimeoutMs is required (a number or a function of frame length)', { key: 'ackTimeoutMs' });
    }
    const ackRandomFactor = positive('ackRandomFactor', opts.ackRandomFactor, 1.5, 1);
    const maxRetransmit = positive('maxRetransmit', opts.maxRetransmit, 4, 0);
    const piggybackWindowMs = positive('piggybackWindowMs', opts.piggybackWindowMs,
      ackTimeout(4 + tokenLength) / 2, 0);
    const maxTransmitWait = ackTimeout(this.maxFrameLen) * (2 ** (maxRetransmit + 1) - 1) * ackRandomFactor;
    const exchangeLifetimeMs = positive('exchangeLifetimeMs', opts.exchangeLifetimeMs, 2 * maxTransmitWait, 1);
    // A peer with our lifetime remembers an id from its first receipt of it, which lags our
    // first transmission by up to one ACK round trip when that transmission is not lost.
    const midGuardMs = positive('midGuardMs', opts.midGuardMs,
      exchangeLifetimeMs + ackTimeout(this.maxFrameLen) * ackRandomFactor, exchangeLifetimeMs);
    const maxBodyBytes = positive('maxBodyBytes', opts.maxBodyBytes, 256 * 1024, 0);
    this.defaultResponseTimeoutMs = positive('responseTimeoutMs', opts.responseTimeoutMs, exchangeLifetimeMs, 1);
    this.observeFreshnessMs = opts.observeFreshnessMs === Infinity ? Infinity
      : positive('observeFreshnessMs', opts.observeFreshnessMs, Infinity, 0);
    const retry = opts.notificationRetry ?? 'on-receive';
    if (retry !== 'on-receive' && retry !== 'manual') {
      throw new ConfigError(`coap: notificationRetry must be 'on-receive' or 'manual', got ${String(retry)}`, { key: 'notificationRetry' });
    }
    this.retryOnReceive = retry === 'on-receive';
    this.ml = new MessageLayer({
      clock: opts.clock, randomBytes: opts.randomBytes, send: opts.send, codec, ackTimeout, ackRandomFactor, maxRetransmit,
      piggybackWindowMs, exchangeLifetimeMs, midGuardMs, sequenceMode, sequenceStart: start, counters: this.counters,
    }, {
      receiveRequest: (msg, entry) => this.bw.receiveRequest(msg, entry),
      receiveResponse: (msg, entry, frameLen) => this.receiveSeparateResponse(msg, entry, frameLen),
      peerHeard: () => { if (this.retryOnReceive) this.retryNotifications(); },
      pruneExpired: (now) => this.bw.pruneExpired(now),
    });
    this.bw = new BlockWise(this.ml, {
      randomBytes: opts.randomBytes, maxFrameLen: this.maxFrameLen, maxBodyBytes, tokenLength,
      defaultResponseTimeoutMs: this.defaultResponseTimeoutMs,
    }, {
      runHandler: (msg, entry, options, payload, preferredSzx, extra) => this.runHandler(msg, entry, options, payload, preferredSzx, extra),
      block2Served: (key, last) => this.notificationBlockServed(key, last),
    });
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
    return this.ml.onDrop(listener);
  }

  /**
   * 'sequence' mode: the sequence number the next CON/NON this endpoint originates
   * will carry (the next request's token is at least this). Save it to resume.
   */
  get nextSequence(): number {
    return this.ml.nextSequence;
  }

  /** A snapshot of the counters (and the Message ID guard in force). */
  stats(): CoapEndpointStats {
    return {
      ...this.counters, dropped: { ...this.counters.dropped },
      midWaiting: this.ml.midWaiting, midGuardMs: this.ml.midGuardMs,
    };
  }

  /**
   * Send a request and resolve with its (reassembled) response. Rejects with
   * TrickleError ERR_COAP_TIMEOUT, ERR_COAP_RESET, ERR_COAP_BLOCK, ERR_COAP_TOO_LARGE,
   * ERR_COAP_FORMAT or ERR_COAP_CLOSED.
   */
  request(req: CoapRequestInit, opts: RequestOptions = {}): Promise<CoapResponse> {
    return this.bw.request(req, opts);
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
    if (this.ml.closed) problem = new TrickleError('ERR_COAP_CLOSED', 'coap', 'observe on a closed CoAP endpoint');
    else if (!isRequestCode(req.code)) problem = new TrickleError('ERR_COAP_FORMAT', 'coap', `code ${codeToString(req.code)} is not a request method`);
    else if (!(responseTimeoutMs > 0)) problem = new ConfigError(`coap: responseTimeoutMs must be > 0, got ${responseTimeoutMs}`, { key: 'responseTimeoutMs' });
    let token: Uint8Array = EMPTY_BYTES;
    if (!problem) {
      this.ml.prune();
      try { token = this.bw.freshToken(); } catch (e) { problem = e as TrickleError; }
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
    this.bw.startExchange(ex);
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
    if (this.ml.closed) throw new TrickleError('ERR_COAP_CLOSED', 'coap', 'resumeObservation on a closed CoAP endpoint');
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
    if (obs.assembling) this.bw.fail(obs.assembling, 'ERR_COAP_CLOSED', 'observation ended during a Block2 fetch');
  }

  private async cancelClientObservation(obs: ClientObservation): Promise<void> {
    if (obs.ended) return;
    const registering = obs.registration;
    this.endClientObservation(obs);
    if (registering) {
      // Not answered yet: if the server registers anyway, its first response finds no
      // observation here and gets RST, which removes the registration (§3.6).
      this.bw.fail(registering, 'ERR_COAP_CLOSED', 'observation cancelled before its first response');
      return;
    }
    if (this.ml.closed) return;
    await new Promise<void>((resolve) => {
      this.bw.startExchange({
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
      if (msg.type === CON) entry.reply = this.ml.sendEmpty(ACK, msg.mid);
      obs.held.push({ msg, atMs, frameLen });
      return;
    }
    // Processed first, then acknowledged: the caller has what it needs before the server hears it arrived.
    const refused = this.processNotification(obs, msg, atMs, frameLen) === 'refused';
    if (msg.type === CON) entry.reply = this.ml.sendEmpty(refused ? RST : ACK, msg.mid);
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
      this.ml.drop(e instanceof WireError ? e.code : 'ERR_COAP_OPTION', frameLen, e instanceof WireError ? e : undefined);
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
      if (block && block.num !== 0) { obs.last = previous; this.ml.drop('ERR_COAP_BLOCK', frameLen); return undefined; }
      if (!this.deliverNotification(obs, stripForCaller(msg), seq)) { obs.last = previous; return 'refused'; }
      return undefined;
    }
    if (this.bw.exchange(obs.key)) {
      // Our own request with this token is still open (cannot happen but for a peer bug).
      obs.last = previous;
      this.ml.drop('unmatched', frameLen);
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
    obs.assembling = ex;
    this.bw.fetchBody(ex, msg);
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
    const size = (payload: Uint8Array): number => Math.max(...([CON, ACK] as const).map((type) => this.ml.sizeOf({
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
    if (!obs || this.ml.closed) return false;
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
    if (this.ml.closed) return;
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
      if (nf.tx) this.ml.cancelTransmission(nf.tx);
      if (nf.blocks) this.bw.dropResponse(obs.key);
    }
    for (const l of this.endedListeners) safeCall(() => l(obs.token.slice(), reason));
  }

  private pumpObservation(obs: ServerObservation): void {
    if (this.ml.closed || obs.inFlight || this.serverObs.get(obs.key) !== obs) return;
    const next = obs.queue.shift();
    if (!next) return;
    const nf: InFlightNotification = { ...next, observe: undefined, blocks: false, tx: undefined, idleTimer: undefined, stalled: false };
    obs.inFlight = nf;
    this.transmitNotification(obs, nf);
  }

  /** (Re-)send a notification as CON: a fresh Message ID (when one frees), its Observe value assigned once. */
  private transmitNotification(obs: ServerObservation, nf: InFlightNotification): void {
    this.ml.originate({
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
      first = this.bw.prepareResponse(obs.token, res, success ? [uintOption(Opt.OBSERVE, nf.observe!)] : [], undefined);
    } catch {
      first = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    nf.blocks = getOption(first.options, Opt.BLOCK2) !== undefined;
    const msg: CoapMessage = { type: CON, code: first.code, mid, token: obs.token, options: first.options, payload: first.payload };
    const tx = this.ml.newTransmission(msg, undefined, {
      onAck: () => {
        nf.tx = undefined;
        if (obs.inFlight !== nf) return;
        if (!nf.blocks) { this.notificationDone(obs, nf); return; }
        this.bw.keepResponse(obs.key);
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
      this.ml.startTransmission(tx);
    } catch {
      nf.tx = undefined;
      this.notificationFailed(obs, nf);
    }
  }

  private armBlockIdle(obs: ServerObservation, nf: InFlightNotification): void {
    nf.idleTimer?.cancel();
    nf.idleTimer = this.clock.setTimer(this.ml.exchangeLifetimeMs, () => {
      nf.idleTimer = undefined;
      if (obs.inFlight === nf && !nf.stalled && !this.ml.closed) this.notificationFailed(obs, nf);
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
    if (nf.blocks) this.bw.dropResponse(obs.key);
    nf.stalled = true;
    for (const l of this.failedListeners) safeCall(() => l(obs.token.slice(), nf.res));
  }

  /** Server side of a Block2 follow-up for a token: a notification's body is being fetched. */
  private notificationBlockServed(key: string, last: boolean): void {
    const obs = this.serverObs.get(key);
    const nf = obs?.inFlight;
    if (!obs || !nf || !nf.blocks || nf.stalled) return;
    // A follow-up proves block 0 arrived even if its ACK was lost.
    if (nf.tx) { this.ml.cancelTransmission(nf.tx); nf.tx = undefined; }
    if (last) this.notificationDone(obs, nf);
    else this.armBlockIdle(obs, nf);
  }

  /** Feed one received frame. Never throws; malformed frames are dropped and counted. */
  receive(frame: Uint8Array): void {
    this.ml.receive(frame);
  }

  /**
   * Cancel every timer, reject pending requests with ERR_COAP_CLOSED, forget all state
   * but the server's registrations (without their queues), which exportObservations()
   * still returns.
   */
  close(): void {
    if (this.ml.closed) return;
    this.ml.close();
    for (const obs of [...this.clientObs.values()]) { obs.ended = true; obs.held.length = 0; }
    this.clientObs.clear();
    for (const obs of this.serverObs.values()) {
      obs.inFlight?.idleTimer?.cancel();
      obs.inFlight = undefined;
      obs.queue.length = 0;
    }
    this.bw.close();
  }

  // -------------------------------------------------------------------------
  // Responses by token (RFC 7252 §5.3.2): a notification, or an answer to our request
  // -------------------------------------------------------------------------

  private receiveSeparateResponse(msg: CoapMessage, entry: SeenEntry, frameLen: number): void {
    entry.done = true;
    const key = toHex(msg.token);
    const ex = this.bw.exchange(key);
    const obs = this.clientObs.get(key);
    if (obs && (!obs.registration || ex !== obs.registration)) {
      this.receiveNotification(obs, msg, entry, frameLen);
      return;
    }
    if (ex?.deregister && getOption(msg.options, Opt.OBSERVE) !== undefined) {
      // A notification overtaking our deregistration: RST it too (RFC 7641 §3.6).
      if (msg.type === CON) entry.reply = this.ml.sendEmpty(RST, msg.mid);
      this.ml.drop('unmatched', frameLen);
      return;
    }
    if (!ex || !ex.leg) {
      // §5.3.2: a response we cannot match is rejected (RST for CON, silence for NON).
      if (msg.type === CON) entry.reply = this.ml.sendEmpty(RST, msg.mid);
      this.ml.drop('unmatched', frameLen);
      return;
    }
    if (msg.type === CON) entry.reply = this.ml.sendEmpty(ACK, msg.mid);
    this.bw.clientResponse(ex, ex.leg, msg);
  }

  // -------------------------------------------------------------------------
  // Server side
  // -------------------------------------------------------------------------

  private runHandler(
    msg: CoapMessage, entry: SeenEntry, options: CoapOption[], payload: Uint8Array,
    preferredSzx: number | undefined, extraResponseOptions: CoapOption[],
  ): void {
    const task = this.ml.startTask(msg, entry);
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
          this.bw.finishHandler(msg, entry, task, res, preferredSzx, extraResponseOptions);
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
    if (task.done || this.ml.closed) return false;
    const key = toHex(msg.token);
    if (!accept || codeClass(res.code) !== 2 || msg.type !== CON) {
      const old = this.serverObs.get(key);
      if (old) this.endServerObservation(old, 'deregistered');
      if (!accept || codeClass(res.code) !== 2) return false;
      // A NON registration: the answer is a NON with Observe; no delivery to wait for.
      const obs = this.addServerObservation(msg.token);
      const v = nextObserveValue(obs.sequence, this.ml.sequenceMode ? this.ml.nextSequence % OBSERVE_MODULUS : undefined);
      obs.sequence = v;
      this.bw.finishHandler(msg, entry, task, { ...res, options: [...res.options, uintOption(Opt.OBSERVE, v)] }, undefined, extra);
      return true;
    }
    this.ml.endTask(task);
    entry.done = true;
    this.ml.sendEmptyAck(msg, entry, task);
    const obs = this.serverObs.get(key) ?? this.addServerObservation(msg.token);
    obs.queue.unshift({ res: { code: res.code, options: [...res.options, ...extra], payload: res.payload }, first: true });
    this.pumpObservation(obs);
    return true;
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
