/**
 * MessageLayer: the RFC 7252 §4 message layer of one CoapEndpoint (one link peer):
 * CON/NON/ACK/RST, Message IDs, retransmission, de-duplication, and the message-layer half
 * of answering a request (piggybacked or separate, §5.2). It knows tokens only to match a
 * piggybacked response to its CON; requests, blocks and observations are the parts above
 * (block-wise.ts, observe-endpoint.ts), which reach it through `MessageLayerUser`.
 *
 * Stateful and Clock-driven; never logs, never does I/O itself: frames leave through the
 * injected `send` and arrive through `receive`. Randomness: retransmission jitter, and the
 * initial Message ID of the 'random' mode counter.
 *
 * Frames are made by a WireCodec (default RFC 7252; the radio uses the compact form of
 * compact.ts). Every frame is encoded when it is sent, retransmissions and re-sent replies
 * included, so a stateful codec sees frames in sending order; sizes are fitted to
 * maxFrameLen (by the parts above) with the codec's state-independent `sizeBound`.
 *
 * Sequence numbers ('sequence' token mode, the default): every CON/NON this endpoint
 * originates gets the next 32-bit sequence number S, and its Message ID is S mod 2^16
 * (block-wise.ts makes a request's token the 4-byte S of its first message).
 * `nextSequence` / `sequenceStart` resume. In 'random' mode Message IDs come from a
 * 16-bit counter with a random start (§4.4).
 *
 * Message layer (RFC 7252 §4):
 *  - Every request is CON. Retransmission (§4.2): first timeout = ackTimeoutMs ×
 *    uniform[1, ackRandomFactor), doubled after each of up to maxRetransmit
 *    retransmissions; then ERR_COAP_TIMEOUT. ackTimeoutMs is supplied by the caller
 *    (derived from airtime and duty-cycle wait), never CoAP's 2 s default. On a shared
 *    channel the peer's answer also waits for its turn among other stations, which no local
 *    computation knows: the layer measures round trips (exchanges answered without a
 *    retransmission only, Karn's rule) into SRTT/RTTVAR (RFC 6298, as CoCoA,
 *    draft-ietf-core-cocoa, does for CoAP), and the first timeout is the larger of the
 *    caller's and SRTT + 4·RTTVAR, capped at 8× the caller's, so a busy channel does not
 *    turn every slow answer into a spurious retransmission.
 *  - Received CON/NON are de-duplicated by Message ID for exchangeLifetimeMs (§4.5).
 *    A duplicate re-sends exactly the frame answered before (piggybacked ACK, empty
 *    ACK, 2.31, RST …) or nothing while the handler still runs inside the piggyback
 *    window. Handlers never run twice for one message (see "Message IDs over a long
 *    life" for a Message ID the peer reused early).
 *  - Server side: the handler gets piggybackWindowMs to answer in the ACK (§5.2.1);
 *    after that an empty ACK goes out and the response follows as a separate CON
 *    with its own Message ID and retransmissions (§5.2.2).
 *  - Client side: a piggybacked response must carry its CON's token (§5.3.2), else it
 *    is no answer to that CON and is dropped.
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
 * Housekeeping is lazy (no timers of its own): `prune()` runs on each request and received
 * frame, at most every exchangeLifetimeMs / 8, and lets the parts above prune theirs.
 */
import type { Clock, RandomBytes, TimerHandle } from '../util/clock.ts';
import { TrickleError, WireError } from '../errors.ts';
import { equalBytes } from '../util/bytes.ts';
import { ACK, CON, EMPTY, NON, RST, isRequestCode, type CoapType } from './numbers.ts';
import { rfc7252Codec, type CoapMessage, type WireCodec } from './message.ts';
import type { CoapDrop, CoapDropReason, CoapEndpointStats } from './endpoint.ts';

const EMPTY_BYTES = new Uint8Array(0);

/** The endpoint's options as the message layer uses them, validated and with defaults applied. */
/** The round-trip estimate (RFC 6298 §2); whoever outlives the endpoint may own it (a new link session keeps it). */
export class RttEstimate {
  srttMs: number | undefined;
  rttvarMs = 0;
  samples = 0;

  sample(r: number): void {
    if (!(r >= 0) || !Number.isFinite(r)) return;
    if (this.srttMs === undefined) { this.srttMs = r; this.rttvarMs = r / 2; }
    else { this.rttvarMs = 0.75 * this.rttvarMs + 0.25 * Math.abs(this.srttMs - r); this.srttMs = 0.875 * this.srttMs + 0.125 * r; }
    this.samples++;
  }

  /** SRTT + 4·RTTVAR, or 0 before the first sample. */
  timeoutMs(): number {
    return this.srttMs === undefined ? 0 : this.srttMs + 4 * this.rttvarMs;
  }
}

export interface MessageLayerConfig {
  /** Round-trip estimate to keep (default: the layer's own). */
  readonly rtt?: RttEstimate;
  /** True while a frame sent now would only wait below (a security handshake is under way): see CoapEndpointOptions.held. */
  readonly held?: () => boolean;
  readonly clock: Clock;
  readonly randomBytes: RandomBytes;
  readonly send: (frame: Uint8Array) => void;
  readonly codec: WireCodec;
  /** ACK_TIMEOUT as a function of the CON's frame length (RFC 7252 §4.8). */
  readonly ackTimeout: (frameLen: number) => number;
  readonly ackRandomFactor: number;
  readonly maxRetransmit: number;
  readonly piggybackWindowMs: number;
  readonly exchangeLifetimeMs: number;
  readonly midGuardMs: number;
  readonly sequenceMode: boolean;
  readonly sequenceStart: number;
  /**
   * The endpoint's counters, shared by its parts. This one keeps sent, received,
   * retransmissions, duplicates, timeouts (given-up CONs), sendErrors, dropped, midWaits,
   * midSkips and midReuse.
   */
  readonly counters: CoapEndpointStats;
}

/** What the message layer hands up, and asks of, the parts above it. */
export interface MessageLayerUser {
  /** A CON/NON request that is not a copy of one seen before. `entry` takes its answer. */
  receiveRequest(msg: CoapMessage, entry: SeenEntry): void;
  /** A CON/NON response (separate response or notification) that is not a copy. */
  receiveResponse(msg: CoapMessage, entry: SeenEntry, frameLen: number): void;
  /** A received frame decoded: the peer is reachable. Called once the frame is processed. */
  peerHeard(): void;
  /** Forget what expired by `now` (called from prune()). */
  pruneExpired(now: number): void;
}

export interface Transmission {
  readonly mid: number;
  /** Encoded anew for every (re)transmission (a stateful codec may choose another form). */
  readonly msg: CoapMessage;
  /** For requests: a piggybacked response must carry this token. */
  readonly token: Uint8Array | undefined;
  retransmits: number;
  timeoutMs: number;
  timer: TimerHandle | undefined;
  /** When the first transmission was handed to the codec (for the round-trip estimate). */
  startedAtMs?: number;
  readonly onAck: (ack: CoapMessage) => void;
  readonly onReset: () => void;
  readonly onGiveUp: () => void;
}

export interface SeenEntry {
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
export interface MidWaiter {
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

/** A received request whose answer is being made (its piggyback window, §5.2.1). */
export interface ServerTask {
  timer: TimerHandle | undefined;
  ackSent: boolean;
  done: boolean;
}

/** A response as the message layer sends it (CoapResponse). */
type Answer = Pick<CoapMessage, 'code' | 'options' | 'payload'>;

export class MessageLayer {
  readonly clock: Clock;
  private readonly randomBytes: RandomBytes;
  private readonly sendFn: (frame: Uint8Array) => void;
  private readonly codec: WireCodec;
  private readonly ackTimeout: (frameLen: number) => number;
  private readonly ackRandomFactor: number;
  readonly maxRetransmit: number;
  private readonly piggybackWindowMs: number;
  readonly exchangeLifetimeMs: number;
  readonly midGuardMs: number;
  readonly sequenceMode: boolean;
  readonly counters: CoapEndpointStats;
  private readonly user: MessageLayerUser;

  /** 'random' mode: the next Message ID. */
  private nextMid: number;
  /** 'sequence' mode: the next sequence number (uint32). */
  private nextSeq: number;
  private isClosed = false;
  private readonly dropListeners = new Set<(d: CoapDrop) => void>();
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
  /** Server: handlers running (for their piggyback timers). */
  private readonly tasks = new Set<ServerTask>();
  /** Set when a received frame decoded: the peer is reachable (retry stalled notifications). */
  private heardPeer = false;

  constructor(config: MessageLayerConfig, user: MessageLayerUser) {
    this.clock = config.clock;
    this.randomBytes = config.randomBytes;
    this.sendFn = config.send;
    this.codec = config.codec;
    this.ackTimeout = config.ackTimeout;
    this.ackRandomFactor = config.ackRandomFactor;
    this.maxRetransmit = config.maxRetransmit;
    this.piggybackWindowMs = config.piggybackWindowMs;
    this.exchangeLifetimeMs = config.exchangeLifetimeMs;
    this.midGuardMs = config.midGuardMs;
    this.sequenceMode = config.sequenceMode;
    this.counters = config.counters;
    this.rtt = config.rtt ?? new RttEstimate();
    this.held = config.held;
    this.user = user;
    this.nextSeq = config.sequenceStart;
    const r = this.randomBytes(2);
    this.nextMid = ((r[0] ?? 0) << 8) | (r[1] ?? 0);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** 'sequence' mode: the sequence number the next CON/NON this endpoint originates will carry. */
  get nextSequence(): number {
    return this.nextSeq;
  }

  /** Originations waiting for a Message ID right now. */
  get midWaiting(): number {
    return this.midQueue.length - this.midQueueHead;
  }

  onDrop(listener: (drop: CoapDrop) => void): () => void {
    this.dropListeners.add(listener);
    return () => { this.dropListeners.delete(listener); };
  }

  /**
   * Feed one received frame: decoded, de-duplicated, ACK/RST matched to our CONs, new
   * CON/NON handed to the user. Never throws; malformed frames are dropped and counted.
   */
  receive(frame: Uint8Array): void {
    if (this.isClosed) return;
    this.counters.received++;
    this.heardPeer = false;
    try {
      this.prune();
      this.receiveFrame(frame);
      // The peer is reachable again: re-send notifications that failed while it was not.
      if (this.heardPeer) this.user.peerHeard();
    } catch (e) {
      // Defensive: nothing above should throw, but a bug must not take the link down.
      this.drop(e instanceof TrickleError ? e.code : 'ERR_COAP_FORMAT', frame.length, e instanceof WireError ? e : undefined);
    }
  }

  /**
   * Cancel every timer (retransmissions, the Message ID queue's, piggyback windows) and forget
   * the messages seen and sent. Nothing is sent after this.
   */
  close(): void {
    this.isClosed = true;
    for (const tx of this.outgoing.values()) tx.timer?.cancel();
    this.outgoing.clear();
    this.midTimer?.cancel();
    this.midTimer = undefined;
    this.midQueue = [];
    this.midQueueHead = 0;
    for (const task of this.tasks) { task.timer?.cancel(); task.done = true; }
    this.tasks.clear();
    this.seen.clear();
    this.finishedMids.clear();
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
  sendMessage(msg: CoapMessage): void {
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
  sizeOf(msg: CoapMessage): number {
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
  originate(w: MidWaiter): void {
    if (this.isClosed) return;
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
    while (!this.isClosed && this.midQueueHead < this.midQueue.length) {
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
    if (this.midTimer || this.isClosed || this.midQueueHead >= this.midQueue.length) return;
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

  private readonly rtt: RttEstimate;
  private readonly held: (() => boolean) | undefined;

  private sampleRtt(r: number): void {
    this.rtt.sample(r);
    this.counters.rttSamples = this.rtt.samples;
    if (this.rtt.srttMs !== undefined) this.counters.srttMs = Math.round(this.rtt.srttMs);
  }

  private random01(): number {
    const b = this.randomBytes(4);
    return ((((b[0] ?? 0) << 24) >>> 0) + ((b[1] ?? 0) << 16) + ((b[2] ?? 0) << 8) + (b[3] ?? 0)) / 2 ** 32;
  }

  newTransmission(
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
  startTransmission(tx: Transmission): void {
    const frame = this.codec.encode(tx.msg);
    const computed = this.ackTimeout(frame.length);
    const measured = Math.min(this.rtt.timeoutMs(), 8 * computed);
    tx.timeoutMs = Math.max(computed, measured) * (1 + (this.ackRandomFactor - 1) * this.random01());
    tx.startedAtMs = this.clock.now();
    this.outgoing.set(tx.mid, tx);
    this.armRetransmit(tx);
    this.sendFrame(frame);
  }

  private armRetransmit(tx: Transmission): void {
    tx.timer = this.clock.setTimer(tx.timeoutMs, () => {
      tx.timer = undefined;
      if (this.outgoing.get(tx.mid) !== tx) return;
      if (this.held?.()) {
        // The message waits below (for a handshake), not lost on air: the wait is no attempt,
        // and its round trip is no sample (Karn).
        delete tx.startedAtMs;
        this.counters.heldTimeouts = (this.counters.heldTimeouts ?? 0) + 1;
        this.armRetransmit(tx);
        return;
      }
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

  cancelTransmission(tx: Transmission): void {
    tx.timer?.cancel();
    tx.timer = undefined;
    if (this.outgoing.get(tx.mid) === tx) {
      this.outgoing.delete(tx.mid);
      // A late ACK/RST for it is then counted as a duplicate, not a stray.
      if (!this.isClosed) this.finishedMids.set(tx.mid, this.clock.now() + this.exchangeLifetimeMs);
      this.outgoingEnded();
    }
  }

  // -------------------------------------------------------------------------
  // Receiving
  // -------------------------------------------------------------------------

  drop(reason: CoapDropReason, frameLen: number, error?: WireError): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    const ev: CoapDrop = error ? { reason, frameLen, error } : { reason, frameLen };
    for (const l of this.dropListeners) {
      try { l(ev); } catch { /* a listener's failure is not the link's */ }
    }
  }

  sendEmpty(type: typeof ACK | typeof RST, mid: number): CoapMessage {
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
    if (isRequestCode(msg.code)) this.user.receiveRequest(msg, entry);
    else this.user.receiveResponse(msg, entry, frame.length);
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
    if (msg.type === ACK && tx.retransmits === 0 && tx.startedAtMs !== undefined) this.sampleRtt(this.clock.now() - tx.startedAtMs);
    if (msg.type === ACK) tx.onAck(msg);
    else tx.onReset();
  }

  // -------------------------------------------------------------------------
  // Answering a request (RFC 7252 §5.2)
  // -------------------------------------------------------------------------

  /**
   * A request's handler starts: for a CON, an empty ACK goes out if it has not answered
   * within piggybackWindowMs (§5.2.2).
   */
  startTask(msg: CoapMessage, entry: SeenEntry): ServerTask {
    const task: ServerTask = { timer: undefined, ackSent: false, done: false };
    this.tasks.add(task);
    if (msg.type === CON) {
      task.timer = this.clock.setTimer(this.piggybackWindowMs, () => {
        task.timer = undefined;
        if (task.done || this.isClosed) return;
        this.sendEmptyAck(msg, entry, task);
      });
    }
    return task;
  }

  /** The handler has answered: its piggyback timer ends. False when it had ended already or the endpoint is closed. */
  endTask(task: ServerTask): boolean {
    if (task.done) return false;
    task.done = true;
    task.timer?.cancel();
    task.timer = undefined;
    this.tasks.delete(task);
    return !this.isClosed;
  }

  /** Acknowledge the CON request with an empty ACK unless that happened already; its response will follow separately. */
  sendEmptyAck(msg: CoapMessage, entry: SeenEntry, task: ServerTask): void {
    if (task.ackSent) return;
    task.ackSent = true;
    // A superseded request's id belongs to a newer message now: no ACK under it.
    if (!entry.superseded) entry.reply = this.sendEmpty(ACK, msg.mid);
  }

  /**
   * Answer the handler's response in time, if it still can be: piggybacked in the ACK of a CON
   * whose window is open (§5.2.1), or as a NON to a NON. False: it must go as a separate response.
   */
  replyInTime(msg: CoapMessage, entry: SeenEntry, task: ServerTask, res: Answer): boolean {
    if (msg.type === CON && !task.ackSent && !entry.superseded) {
      this.reply(msg, entry, res);
      return true;
    }
    if (msg.type === NON) {
      this.reply(msg, entry, res);
      return true;
    }
    return false;
  }

  /** Answer at once: piggybacked in the ACK of a CON, or as a NON to a NON. */
  reply(req: CoapMessage, entry: SeenEntry, res: Answer): void {
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

  /**
   * A separate response (§5.2.2): a CON of its own with its own Message ID and retransmissions;
   * the request's entry keeps the empty ACK. `onLost` runs when the client RSTs it or it is given up.
   */
  sendSeparate(token: Uint8Array, res: Answer, onLost: () => void): void {
    this.originate({
      alive: () => true,
      run: (mid) => {
        const separate: CoapMessage = { type: CON, code: res.code, mid, token, options: res.options, payload: res.payload };
        this.startTransmission(this.newTransmission(separate, undefined, {
          onAck: () => { /* delivered */ },
          onReset: onLost,
          onGiveUp: onLost,
        }));
      },
      fail: () => { this.counters.sendErrors++; },
    });
  }

  // -------------------------------------------------------------------------
  // Housekeeping (lazy: no timers of its own)
  // -------------------------------------------------------------------------

  prune(): void {
    const now = this.clock.now();
    if (now < this.nextPruneAt) return;
    this.nextPruneAt = now + Math.max(1, this.exchangeLifetimeMs / 8);
    for (const [mid, e] of this.seen) if (e.done && e.expiresAt <= now) this.seen.delete(mid);
    for (const [mid, t] of this.finishedMids) if (t <= now) this.finishedMids.delete(mid);
    this.user.pruneExpired(now);
  }
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
