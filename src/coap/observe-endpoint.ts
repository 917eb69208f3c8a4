/**
 * ObserveEndpoint: RFC 7641 Observe in both roles for one CoapEndpoint: the client's
 * observations and the server's registrations with their notification queues, stalls and
 * retries. The pure parts (sequence arithmetic, freshness, the JSON form of registrations)
 * live in observe.ts; notifications travel as CONs of the message layer (message-layer.ts),
 * large ones as Block2 bodies (block-wise.ts).
 *
 * Observe (RFC 7641):
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
import type { Clock, TimerHandle } from '../util/clock.ts';
import { ConfigError, TrickleError, WireError } from '../errors.ts';
import { fromHex, toHex } from '../util/bytes.ts';
import { ACK, CON, Method, Opt, RST, Response, codeClass, codeToString, isRequestCode } from './numbers.ts';
import { getOption, getUintOption, uintOption, withoutOptions, type CoapMessage, type CoapOption } from './message.ts';
import {
  OBSERVE_DEREGISTER, OBSERVE_MODULUS, OBSERVE_REGISTER, isFresh, nextObserveValue, parseObservationRecords,
  type ObservationRecord,
} from './observe.ts';
import { decodeBlock, type BlockValue } from './block.ts';
import type { MessageLayer, SeenEntry, ServerTask, Transmission } from './message-layer.ts';
import { normalizeResponse, type BlockWise, type ClientExchange } from './block-wise.ts';
import type {
  CoapEndpointStats, CoapRequestInit, CoapResponse, CoapResponseInit, NotificationHandler, NotifyOptions, Observation,
  ObservationEndedReason, ObservationHandle, ObserveOptions, ResumeObservationOptions, ServerObservationInfo,
} from './endpoint.ts';

const EMPTY_BYTES = new Uint8Array(0);

/** The endpoint's options as the Observe part uses them, validated and with defaults applied. */
export interface ObserveConfig {
  /** Largest frame this endpoint sends (notificationPayloadLimit). */
  readonly maxFrameLen: number;
  readonly defaultResponseTimeoutMs: number;
  /** W of the RFC 7641 §3.4 freshness rule; Infinity: the sequence alone decides. */
  readonly observeFreshnessMs: number;
  /** notificationRetry 'on-receive': a stalled registration re-sends its head when the peer is heard. */
  readonly retryOnReceive: boolean;
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

export class ObserveEndpoint {
  private readonly clock: Clock;
  private readonly counters: CoapEndpointStats;
  private readonly maxFrameLen: number;
  private readonly defaultResponseTimeoutMs: number;
  private readonly observeFreshnessMs: number;
  private readonly retryOnReceive: boolean;

  /** Client: our observations, by token (hex). */
  private readonly clientObs = new Map<string, ClientObservation>();
  /** Server: the peer's registrations, by token (hex). Kept (without timers) after close() for export. */
  private readonly serverObs = new Map<string, ServerObservation>();
  private readonly failedListeners = new Set<(token: Uint8Array, res: CoapResponse) => void>();
  private readonly deliveredListeners = new Set<(token: Uint8Array, res: CoapResponse, seq: number | undefined) => void>();
  private readonly endedListeners = new Set<(token: Uint8Array, reason: ObservationEndedReason) => void>();

  constructor(private readonly ml: MessageLayer, private readonly bw: BlockWise, config: ObserveConfig) {
    this.clock = ml.clock;
    this.counters = ml.counters;
    this.maxFrameLen = config.maxFrameLen;
    this.defaultResponseTimeoutMs = config.defaultResponseTimeoutMs;
    this.observeFreshnessMs = config.observeFreshnessMs;
    this.retryOnReceive = config.retryOnReceive;
  }

  /**
   * End every observation of ours without deregistering, and drop the registrations' queues
   * and timers (the registrations stay, for exportObservations()). After MessageLayer.close().
   */
  close(): void {
    for (const obs of [...this.clientObs.values()]) { obs.ended = true; obs.held.length = 0; }
    this.clientObs.clear();
    for (const obs of this.serverObs.values()) {
      obs.inFlight?.idleTimer?.cancel();
      obs.inFlight = undefined;
      obs.queue.length = 0;
    }
  }

  // -------------------------------------------------------------------------
  // Client (RFC 7641 §3)
  // -------------------------------------------------------------------------

  /** CoapEndpoint.observe(). */
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

  /** CoapEndpoint.resumeObservation(). */
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

  /**
   * A CON/NON response for `key` that is a notification of one of our observations (anything
   * but the answer to its registration request, `ex` being our request with that token):
   * handled here, true.
   */
  takeNotification(key: string, ex: ClientExchange | undefined, msg: CoapMessage, entry: SeenEntry, frameLen: number): boolean {
    const obs = this.clientObs.get(key);
    if (!obs || (obs.registration && ex === obs.registration)) return false;
    this.receiveNotification(obs, msg, entry, frameLen);
    return true;
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
  // Server (RFC 7641 §4)
  // -------------------------------------------------------------------------

  /** CoapEndpoint.notificationPayloadLimit(). */
  notificationPayloadLimit(token: Uint8Array | string, code: number, options: readonly CoapOption[]): number {
    const t = typeof token === 'string' ? fromHex(token) : token;
    // Sized as BlockWise.prepareResponse() sizes it: the larger of the CON and the ACK form, else it
    // would go as Block2 after all.
    const size = (payload: Uint8Array): number => Math.max(...([CON, ACK] as const).map((type) => this.ml.sizeOf({
      type, code, mid: 0xffff, token: t, options: [...options, uintOption(Opt.OBSERVE, OBSERVE_MODULUS - 1)], payload,
    })));
    if (size(EMPTY_BYTES) > this.maxFrameLen) return 0;
    // Header and options cost the same for any non-empty payload (one marker byte).
    return Math.max(0, this.maxFrameLen - (size(Uint8Array.of(0)) - 1));
  }

  /** CoapEndpoint.notify(). */
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

  /** CoapEndpoint.observations(). */
  observations(): ServerObservationInfo[] {
    return [...this.serverObs.values()].map((o) => ({
      token: o.token.slice(), tokenHex: o.key, sequence: o.sequence ?? null,
      queued: o.queue.length, inFlight: o.inFlight !== undefined, stalled: o.inFlight?.stalled ?? false,
    }));
  }

  /** CoapEndpoint.exportObservations(). */
  exportObservations(): ObservationRecord[] {
    return [...this.serverObs.values()].map((o) => ({ token: o.key, sequence: o.sequence ?? null }));
  }

  /** CoapEndpoint.importObservations(). */
  importObservations(records: readonly ObservationRecord[]): void {
    for (const r of parseObservationRecords(records)) {
      const obs = this.serverObs.get(r.token) ?? this.addServerObservation(fromHex(r.token));
      if (r.sequence !== null && (obs.sequence === undefined || nextObserveValue(obs.sequence, r.sequence) === r.sequence)) {
        obs.sequence = r.sequence;
      }
    }
  }

  /** CoapEndpoint.removeObservation(). */
  removeObservation(token: Uint8Array | string): boolean {
    const obs = this.serverObs.get(typeof token === 'string' ? token.toLowerCase() : toHex(token));
    if (!obs) return false;
    this.endServerObservation(obs, 'removed');
    return true;
  }

  /** CoapEndpoint.retryNotifications(). */
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

  /** A frame from the peer decoded: in 'on-receive' mode, the link is back for stalled registrations. */
  peerHeard(): void {
    if (this.retryOnReceive) this.retryNotifications();
  }

  /** CoapEndpoint.onNotificationFailed(). */
  onNotificationFailed(listener: (token: Uint8Array, response: CoapResponse) => void): () => void {
    this.failedListeners.add(listener);
    return () => { this.failedListeners.delete(listener); };
  }

  /** CoapEndpoint.onNotificationDelivered(). */
  onNotificationDelivered(listener: (token: Uint8Array, response: CoapResponse, seq: number | undefined) => void): () => void {
    this.deliveredListeners.add(listener);
    return () => { this.deliveredListeners.delete(listener); };
  }

  /** CoapEndpoint.onObservationEnded(). */
  onObservationEnded(listener: (token: Uint8Array, reason: ObservationEndedReason) => void): () => void {
    this.endedListeners.add(listener);
    return () => { this.endedListeners.delete(listener); };
  }

  /** RFC 7641 §3.6 / §4.1: a request with Observe = 1 (or a refused re-registration) removes the token's registration. */
  deregister(key: string): void {
    const old = this.serverObs.get(key);
    if (old) this.endServerObservation(old, 'deregistered');
  }

  /**
   * The handler answered a registration (Observe = 0). Accepted (2.xx, `observe:
   * true`): the registration is added or updated (§4.1) and the first response queued
   * as a separate CON (empty ACK now), so its delivery is known before any
   * notification follows; true. Otherwise an existing registration for the token is
   * removed and the answer goes out as usual; false.
   */
  finishRegistration(
    msg: CoapMessage, entry: SeenEntry, task: ServerTask, res: CoapResponse, accept: boolean, extra: CoapOption[],
  ): boolean {
    if (task.done || this.ml.closed) return false;
    const key = toHex(msg.token);
    if (!accept || codeClass(res.code) !== 2 || msg.type !== CON) {
      this.deregister(key);
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
  notificationBlockServed(key: string, last: boolean): void {
    const obs = this.serverObs.get(key);
    const nf = obs?.inFlight;
    if (!obs || !nf || !nf.blocks || nf.stalled) return;
    // A follow-up proves block 0 arrived even if its ACK was lost.
    if (nf.tx) { this.ml.cancelTransmission(nf.tx); nf.tx = undefined; }
    if (last) this.notificationDone(obs, nf);
    else this.armBlockIdle(obs, nf);
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
