/**
 * CoapEndpoint: CoAP for one link peer: the RFC 7252 message layer, RFC 7959 block-wise
 * transfer and RFC 7641 Observe, each in both roles. Both ends of a link run one; either
 * side may be client and server.
 *
 * This file is the public surface (the types, the options, the class) and the composition.
 * Each RFC's part lives in a file of its own, with its contract; at runtime they are one
 * object graph, a CoapEndpoint owning one of each:
 *
 *   message-layer.ts     MessageLayer     RFC 7252 §4 and §5.2: CON/NON/ACK/RST, Message IDs
 *                                         and their lifetime guard, retransmission,
 *                                         de-duplication, piggybacked and separate responses
 *   block-wise.ts        BlockWise        requests and responses, whole or in RFC 7959 blocks:
 *                                         the client's exchanges and tokens (RFC 7252 §5.3),
 *                                         Block1 reassembly, the Block2 cache
 *   observe-endpoint.ts  ObserveEndpoint  RFC 7641: our observations, the peer's registrations,
 *                                         notification queues, stalls and retries
 *
 * (observe.ts, block.ts, message.ts and compact.ts are the pure parts they use.) Frames come
 * in through the message layer, which hands up each new request (to BlockWise, which runs
 * the handler here once the request is whole) and each new response. Responses are matched
 * by token here (RFC 7252 §5.3.2): a notification goes to its observation, anything else to
 * our request with that token. A separate CON response is ACKed, and also ends
 * retransmission of the request when the empty ACK was lost. An unmatched CON response is
 * answered with RST.
 *
 * Stateful and Clock-driven; never logs, never does I/O itself: frames leave through
 * the injected `send` and arrive through `receive`. Time comes from the injected
 * Clock, randomness (retransmission jitter; in 'random' token mode also the initial
 * Message ID and tokens) from RandomBytes. Frames are made by a WireCodec (default
 * RFC 7252; the radio uses the compact form of compact.ts), each encoded when it is sent.
 *
 * Tokens ('sequence' mode, the default): every CON/NON this endpoint originates gets
 * the next 32-bit sequence number S, its Message ID is S mod 2^16, and a request's
 * token is the 4-byte S of its first message (block follow-ups keep it). Tokens are
 * unique and increasing for the endpoint's life: the gateway derives Matrix txn ids
 * from them (tokenSequence() in compact.ts); `nextSequence` / `sequenceStart` resume.
 */
import type { Clock, RandomBytes } from '../util/clock.ts';
import { ConfigError, TrickleError, WireError, type ErrorCode } from '../errors.ts';
import { toHex } from '../util/bytes.ts';
import { ACK, CON, Opt, RST, Response } from './numbers.ts';
import {
  getOption, getUintOption, rfc7252Codec, withoutOptions, type CoapMessage, type CoapOption, type WireCodec,
} from './message.ts';
import { OBSERVE_DEREGISTER, OBSERVE_REGISTER, type ObservationRecord } from './observe.ts';
import { MessageLayer, type RttEstimate, type SeenEntry } from './message-layer.ts';
import { BlockWise, normalizeResponse } from './block-wise.ts';
import { ObserveEndpoint } from './observe-endpoint.ts';

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
  /** Retransmission timeouts that found the message still waiting for a handshake (`held`): not counted as attempts. */
  heldTimeouts?: number;
  /** Round trips measured (answered without a retransmission) and their smoothed value, ms (message-layer.ts). */
  rttSamples?: number;
  srttMs?: number;
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
  /** Round-trip estimate to use and keep (message-layer.ts); default: this endpoint's own. */
  readonly rtt?: RttEstimate;
  /**
   * True while a message sent now would only wait below this endpoint (the field kit's security
   * handshake is under way and holds it in a queue). A retransmission timeout that finds it so
   * waits again instead of retransmitting and counting an attempt: a request is not given up
   * because the handshake before it took long on a busy channel. Default: never.
   */
  readonly held?: () => boolean;
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

function positive(name: string, v: number | undefined, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new ConfigError(`coap: ${name} must be a finite number ≥ ${min}, got ${String(v)}`, { key: name, value: v });
  }
  return v;
}

export class CoapEndpoint {
  private readonly ml: MessageLayer;
  private readonly bw: BlockWise;
  private readonly obs: ObserveEndpoint;

  private handler: RequestHandler | undefined;
  private readonly counters: CoapEndpointStats = {
    sent: 0, received: 0, retransmissions: 0, duplicates: 0, timeouts: 0, sendErrors: 0, dropped: {},
    notifications: 0, staleNotifications: 0, midWaits: 0, midSkips: 0, midReuse: 0, midWaiting: 0, midGuardMs: 0,
  };

  constructor(opts: CoapEndpointOptions) {
    const maxFrameLen = positive('maxFrameLen', opts.maxFrameLen, 0, 32);
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
    const maxTransmitWait = ackTimeout(maxFrameLen) * (2 ** (maxRetransmit + 1) - 1) * ackRandomFactor;
    const exchangeLifetimeMs = positive('exchangeLifetimeMs', opts.exchangeLifetimeMs, 2 * maxTransmitWait, 1);
    // A peer with our lifetime remembers an id from its first receipt of it, which lags our
    // first transmission by up to one ACK round trip when that transmission is not lost.
    const midGuardMs = positive('midGuardMs', opts.midGuardMs,
      exchangeLifetimeMs + ackTimeout(maxFrameLen) * ackRandomFactor, exchangeLifetimeMs);
    const maxBodyBytes = positive('maxBodyBytes', opts.maxBodyBytes, 256 * 1024, 0);
    const defaultResponseTimeoutMs = positive('responseTimeoutMs', opts.responseTimeoutMs, exchangeLifetimeMs, 1);
    const observeFreshnessMs = opts.observeFreshnessMs === Infinity ? Infinity
      : positive('observeFreshnessMs', opts.observeFreshnessMs, Infinity, 0);
    const retry = opts.notificationRetry ?? 'on-receive';
    if (retry !== 'on-receive' && retry !== 'manual') {
      throw new ConfigError(`coap: notificationRetry must be 'on-receive' or 'manual', got ${String(retry)}`, { key: 'notificationRetry' });
    }
    this.ml = new MessageLayer({
      ...(opts.rtt ? { rtt: opts.rtt } : {}),
      ...(opts.held ? { held: opts.held } : {}),
      clock: opts.clock, randomBytes: opts.randomBytes, send: opts.send, codec, ackTimeout, ackRandomFactor, maxRetransmit,
      piggybackWindowMs, exchangeLifetimeMs, midGuardMs, sequenceMode, sequenceStart: start, counters: this.counters,
    }, {
      receiveRequest: (msg, entry) => this.bw.receiveRequest(msg, entry),
      receiveResponse: (msg, entry, frameLen) => this.receiveResponse(msg, entry, frameLen),
      peerHeard: () => this.obs.peerHeard(),
      pruneExpired: (now) => this.bw.pruneExpired(now),
    });
    this.bw = new BlockWise(this.ml, {
      randomBytes: opts.randomBytes, maxFrameLen, maxBodyBytes, tokenLength, defaultResponseTimeoutMs,
    }, {
      runHandler: (msg, entry, options, payload, preferredSzx, extra) => this.runHandler(msg, entry, options, payload, preferredSzx, extra),
      block2Served: (key, last) => this.obs.notificationBlockServed(key, last),
    });
    this.obs = new ObserveEndpoint(this.ml, this.bw, {
      maxFrameLen, defaultResponseTimeoutMs, observeFreshnessMs, retryOnReceive: retry === 'on-receive',
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
    return this.obs.observe(req, onNotification, opts);
  }

  /**
   * Re-attach an observation registered before a restart (its token persisted by the
   * caller), so its notifications are delivered instead of answered with RST. In
   * 'sequence' token mode resume the endpoint from its saved nextSequence too, so the
   * token is never handed out again. Replaces an observation with the same token.
   */
  resumeObservation(token: Uint8Array | string, onNotification: NotificationHandler, opts: ResumeObservationOptions = {}): ObservationHandle {
    return this.obs.resumeObservation(token, onNotification, opts);
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
    return this.obs.notificationPayloadLimit(token, code, options);
  }

  /**
   * Queue a notification for a registration (token as bytes or hex). 2.xx responses
   * carry the next Observe value; any other code is a final notification without
   * Observe that ends the registration once delivered (RFC 7641 §3.2). Returns false
   * when there is no such registration (or the endpoint is closed).
   */
  notify(token: Uint8Array | string, response: CoapResponseInit, opts: NotifyOptions = {}): boolean {
    return this.obs.notify(token, response, opts);
  }

  /** The registrations this endpoint serves. */
  observations(): ServerObservationInfo[] {
    return this.obs.observations();
  }

  /** The registrations as plain JSON, to import after a restart (works after close() too). */
  exportObservations(): ObservationRecord[] {
    return this.obs.exportObservations();
  }

  /**
   * Restore registrations exported before a restart (validated; throws ConfigError
   * for a bad record). An existing registration keeps the newer of the two sequences.
   */
  importObservations(records: readonly ObservationRecord[]): void {
    this.obs.importObservations(records);
  }

  /** Drop a registration (and its queue) without telling the peer; its next notification would not come. */
  removeObservation(token: Uint8Array | string): boolean {
    return this.obs.removeObservation(token);
  }

  /** Re-send the failed head notification of stalled registrations (all, or the one with this token). */
  retryNotifications(token?: Uint8Array | string): void {
    this.obs.retryNotifications(token);
  }

  /** A notification was given up (no ACK after maxRetransmit, or its Block2 body not fetched). */
  onNotificationFailed(listener: (token: Uint8Array, response: CoapResponse) => void): () => void {
    return this.obs.onNotificationFailed(listener);
  }

  /**
   * A notification (or first response) reached the client: ACKed, and for a large one
   * its last block served. `seq` is its Observe value (undefined for a final one).
   */
  onNotificationDelivered(listener: (token: Uint8Array, response: CoapResponse, seq: number | undefined) => void): () => void {
    return this.obs.onNotificationDelivered(listener);
  }

  /** A registration ended: RST from the client, deregistration, a final notification, or removeObservation(). */
  onObservationEnded(listener: (token: Uint8Array, reason: ObservationEndedReason) => void): () => void {
    return this.obs.onObservationEnded(listener);
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
    this.obs.close();
    this.bw.close();
  }

  // -------------------------------------------------------------------------
  // Responses by token (RFC 7252 §5.3.2): a notification, or an answer to our request
  // -------------------------------------------------------------------------

  /** A CON/NON response (separate, or a notification) that the message layer has not seen before. */
  private receiveResponse(msg: CoapMessage, entry: SeenEntry, frameLen: number): void {
    entry.done = true;
    const key = toHex(msg.token);
    const ex = this.bw.exchange(key);
    if (this.obs.takeNotification(key, ex, msg, entry, frameLen)) return;
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
  // Requests to us: the handler runs once per (reassembled) request
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
    if (observe === OBSERVE_DEREGISTER) this.obs.deregister(toHex(msg.token));
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
          if (observe === OBSERVE_REGISTER && this.obs.finishRegistration(msg, entry, task, res, accept, extraResponseOptions)) return;
          this.bw.finishHandler(msg, entry, task, res, preferredSzx, extraResponseOptions);
        } catch {
          // Unreachable by construction; a handler's odd response must not become an unhandled rejection.
        }
      });
  }
}
