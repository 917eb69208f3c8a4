/**
 * BlockWise: the requests and responses of one CoapEndpoint, carried over the message layer
 * (message-layer.ts) whole or block by block (RFC 7959), transparently to callers. The client
 * side runs our requests as exchanges matched by token; the server side reassembles Block1
 * bodies, runs the handler once per request (through the endpoint), and serves large
 * responses from a Block2 cache. block.ts has the pure option arithmetic.
 *
 * Client exchanges (RFC 7252 §5.3): a request is an exchange under one token, made of legs,
 * one CON each: the whole request, or its Block1 blocks, then its Block2 follow-ups. Each
 * leg's response must come within responseTimeoutMs of its first transmission; a
 * piggybacked or separate response (or a 2.31) ends the leg, and the next one starts.
 *
 * Tokens (RFC 7252 §5.3.1). 'sequence' mode (the default): a request's token is the 4-byte
 * sequence number S (message-layer.ts) of its first message (block follow-ups keep it).
 * Tokens are unique and increasing for the endpoint's life: the gateway derives Matrix txn
 * ids from them (tokenSequence() in compact.ts).
 *  - 'sequence' tokens are unique for 2^32 originations. Because S is assigned
 *    when a request is made, the nextSequence a caller reads before request() is the
 *    request's token even when it waits for its Message ID (the host derives txn ids from
 *    it), tokens increase in sending order, and a waiting request still has token = S of
 *    its first message (the compact form's 1-byte header). 'random' tokens are not drawn
 *    again within midGuardMs of their exchange's end (recentTokens, pruned lazily, so at
 *    most the requests of one guard: ≤ 65,536 with the id rule); when none is free the
 *    request fails with ERR_COAP_FORMAT rather than reuse one. A client never has two
 *    exchanges with one token (request() refuses a token in flight).
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
 *  - A large notification (RFC 7959 §3.4) is a Block2 body like any other: its block 0
 *    rides in the notification and the client fetches the rest under the registration's
 *    token (fetchBody). The endpoint hears of each block served (block2Served): a
 *    notification's transfer ends with its last block.
 */
import type { Clock, RandomBytes, TimerHandle } from '../util/clock.ts';
import { ConfigError, TrickleError, type ErrorCode } from '../errors.ts';
import { concatBytes, toHex } from '../util/bytes.ts';
import { ACK, CON, EMPTY, Opt, Response, codeToString, isRequestCode, isResponseCode } from './numbers.ts';
import { getOption, getUintOption, uintOption, withoutOptions, type CoapMessage, type CoapOption } from './message.ts';
import { sequenceToken } from './compact.ts';
import { BLOCK_NUM_MAX, blockOption, blockSize, chooseBlockSzx, decodeBlock, type BlockValue } from './block.ts';
import type { MessageLayer, SeenEntry, ServerTask, Transmission } from './message-layer.ts';
import type { CoapEndpointStats, CoapRequestInit, CoapResponse, RequestOptions } from './endpoint.ts';

/** At most this many Block1 bodies are reassembled at once (each bounded by maxBodyBytes). */
export const MAX_CONCURRENT_REASSEMBLIES = 8;

const EMPTY_BYTES = new Uint8Array(0);

/** The endpoint's options as the block-wise part uses them, validated and with defaults applied. */
export interface BlockWiseConfig {
  readonly randomBytes: RandomBytes;
  /** Largest frame this endpoint sends; block sizes are chosen to fit it. */
  readonly maxFrameLen: number;
  readonly maxBodyBytes: number;
  /** Token length of requests in 'random' mode. */
  readonly tokenLength: number;
  readonly defaultResponseTimeoutMs: number;
}

/** What the block-wise part asks of the endpoint around it. */
export interface BlockWiseUser {
  /**
   * A request is complete (single-frame, or its last Block1 block): run the handler once,
   * and answer through finishHandler(). `options` are the request's without block options;
   * `preferredSzx` is the client's Block2 size wish; `extraResponseOptions` go into the
   * response (the Block1 echo).
   */
  runHandler(
    msg: CoapMessage, entry: SeenEntry, options: CoapOption[], payload: Uint8Array,
    preferredSzx: number | undefined, extraResponseOptions: CoapOption[],
  ): void;
  /** A Block2 follow-up for this token was served from the cache; `last`: it was the final block. */
  block2Served(key: string, last: boolean): void;
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

export interface ClientExchange {
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

export class BlockWise {
  private readonly clock: Clock;
  private readonly randomBytes: RandomBytes;
  private readonly maxFrameLen: number;
  private readonly maxBodyBytes: number;
  private readonly tokenLength: number;
  private readonly defaultResponseTimeoutMs: number;
  private readonly counters: CoapEndpointStats;

  /** Client: our requests in flight, by token (hex). */
  private readonly exchanges = new Map<string, ClientExchange>();
  /** Client, 'random' mode: tokens recently used, not reused within midGuardMs. */
  private readonly recentTokens = new Map<string, number>();
  /** Server: Block1 reassembly by the peer's token. */
  private readonly reassembly = new Map<string, Reassembly>();
  /** Server: full responses served block by block, by the peer's token. */
  private readonly block2Cache = new Map<string, CachedResponse>();

  constructor(private readonly ml: MessageLayer, config: BlockWiseConfig, private readonly user: BlockWiseUser) {
    this.clock = ml.clock;
    this.counters = ml.counters;
    this.randomBytes = config.randomBytes;
    this.maxFrameLen = config.maxFrameLen;
    this.maxBodyBytes = config.maxBodyBytes;
    this.tokenLength = config.tokenLength;
    this.defaultResponseTimeoutMs = config.defaultResponseTimeoutMs;
  }

  /** CoapEndpoint.request(). */
  request(req: CoapRequestInit, opts: RequestOptions = {}): Promise<CoapResponse> {
    return new Promise<CoapResponse>((resolve, reject) => {
      if (this.ml.closed) {
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
      this.ml.prune();
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

  /** Our request in flight with this token (hex), if any. */
  exchange(key: string): ClientExchange | undefined {
    return this.exchanges.get(key);
  }

  /** Reject every request in flight with ERR_COAP_CLOSED and forget all state (after MessageLayer.close()). */
  close(): void {
    for (const ex of [...this.exchanges.values()]) {
      this.fail(ex, 'ERR_COAP_CLOSED', 'CoAP endpoint closed with the request pending');
    }
    this.exchanges.clear();
    this.recentTokens.clear();
    this.reassembly.clear();
    this.block2Cache.clear();
  }

  pruneExpired(now: number): void {
    for (const [k, t] of this.recentTokens) if (t <= now) this.recentTokens.delete(k);
    for (const [k, r] of this.reassembly) if (r.expiresAt <= now) this.reassembly.delete(k);
    for (const [k, c] of this.block2Cache) if (c.expiresAt <= now) this.block2Cache.delete(k);
  }

  // -------------------------------------------------------------------------
  // Client side
  // -------------------------------------------------------------------------

  startExchange(ex: ClientExchange): void {
    this.exchanges.set(ex.key, ex);
    try {
      this.startRequest(ex);
    } catch (e) {
      this.failWith(ex, e);
    }
  }

  freshToken(): Uint8Array {
    // The request's first message gets this S (originate() assigns it next, in call order),
    // unless its id is still awaiting an ACK and is passed over (then S is a little higher).
    if (this.ml.sequenceMode) return sequenceToken(this.ml.nextSequence);
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
    const whole = this.ml.sizeOf({ type: CON, code: ex.code, mid: 0, token: ex.token, options: ex.options, payload: ex.body });
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
    const frameLen = this.ml.sizeOf(probe);
    if (frameLen > this.maxFrameLen) {
      this.fail(ex, 'ERR_COAP_TOO_LARGE', `request frame of ${frameLen} bytes exceeds maxFrameLen ${this.maxFrameLen}`,
        { frameLen });
      return;
    }
    const leg: Leg = { kind, block, tx: undefined, responseTimer: undefined };
    ex.leg = leg;
    this.ml.originate({
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
    const tx = this.ml.newTransmission(msg, ex.token, {
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
          this.fail(ex, 'ERR_COAP_TIMEOUT', `no ACK after ${this.ml.maxRetransmit} retransmissions`, { mid });
        }
      },
    });
    leg.tx = tx;
    this.ml.startTransmission(tx);
  }

  private endLeg(leg: Leg): void {
    leg.responseTimer?.cancel();
    leg.responseTimer = undefined;
    if (leg.tx) { this.ml.cancelTransmission(leg.tx); leg.tx = undefined; }
  }

  clientResponse(ex: ClientExchange, leg: Leg, msg: CoapMessage): void {
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

  /**
   * Fetch the rest of a body whose block 0 arrived in `msg` outside any request of ours (a
   * notification, RFC 7959 §3.4): `ex` carries the token and request options for the Block2
   * follow-ups and resolves with the whole response.
   */
  fetchBody(ex: ClientExchange, msg: CoapMessage): void {
    const leg: Leg = { kind: 'plain', block: undefined, tx: undefined, responseTimer: undefined };
    ex.leg = leg;
    this.exchanges.set(ex.key, ex);
    try {
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
    if (!this.ml.closed && !this.ml.sequenceMode) this.recentTokens.set(ex.key, this.clock.now() + this.ml.midGuardMs);
    return true;
  }

  private succeed(ex: ClientExchange, res: CoapResponse): void {
    if (this.finish(ex)) ex.resolve(res);
  }

  fail(ex: ClientExchange, code: ErrorCode, message: string, detail?: Record<string, unknown>): void {
    if (this.finish(ex)) ex.reject(new TrickleError(code, 'coap', message, { token: ex.key, ...detail }));
  }

  failWith(ex: ClientExchange, e: unknown): void {
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

  receiveRequest(msg: CoapMessage, entry: SeenEntry): void {
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
      this.ml.reply(msg, entry, { code: Response.BAD_REQUEST, options: [], payload: EMPTY_BYTES });
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
    this.user.runHandler(msg, entry, withoutOptions(msg.options, Opt.BLOCK2, Opt.SIZE2), msg.payload, b2?.szx, []);
  }

  private receiveBlock1(msg: CoapMessage, entry: SeenEntry, key: string, b1: BlockValue, preferredSzx: number | undefined): void {
    const now = this.clock.now();
    const size = blockSize(b1.szx);
    const offset = b1.num * size;
    const tooLarge = (): void => {
      this.reassembly.delete(key);
      this.ml.reply(msg, entry, {
        code: Response.REQUEST_ENTITY_TOO_LARGE,
        options: [uintOption(Opt.SIZE1, this.maxBodyBytes)],
        payload: EMPTY_BYTES,
      });
    };
    const fault = (code: number): void => {
      this.reassembly.delete(key);
      this.ml.reply(msg, entry, { code, options: [], payload: EMPTY_BYTES });
    };
    if (b1.num === 0) {
      this.reassembly.delete(key);
      let size1: number | undefined;
      try { size1 = getUintOption(msg.options, Opt.SIZE1); } catch { fault(Response.BAD_REQUEST); return; }
      if (size1 !== undefined && size1 > this.maxBodyBytes) { tooLarge(); return; }
      if (b1.more) {
        if (this.reassembly.size >= MAX_CONCURRENT_REASSEMBLIES) { fault(Response.SERVICE_UNAVAILABLE); return; }
        this.reassembly.set(key, { chunks: [], received: 0, expiresAt: now + this.ml.exchangeLifetimeMs });
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
    st.expiresAt = now + this.ml.exchangeLifetimeMs;
    if (b1.more) {
      this.ml.reply(msg, entry, {
        code: Response.CONTINUE,
        options: [blockOption(Opt.BLOCK1, { num: b1.num, more: true, szx: b1.szx })],
        payload: EMPTY_BYTES,
      });
      return;
    }
    this.reassembly.delete(key);
    this.user.runHandler(msg, entry, withoutOptions(msg.options, Opt.BLOCK1, Opt.SIZE1, Opt.BLOCK2, Opt.SIZE2),
      concatBytes(...st.chunks), preferredSzx,
      // §2.3: the final response echoes Block1 with M=0.
      [blockOption(Opt.BLOCK1, { num: b1.num, more: false, szx: b1.szx })]);
  }

  private serveBlock2(msg: CoapMessage, entry: SeenEntry, key: string, b2: BlockValue): void {
    const now = this.clock.now();
    const cached = this.block2Cache.get(key);
    if (!cached || cached.expiresAt <= now) {
      this.block2Cache.delete(key);
      this.ml.reply(msg, entry, { code: Response.REQUEST_ENTITY_INCOMPLETE, options: [], payload: EMPTY_BYTES });
      return;
    }
    // The client may ask for smaller blocks than offered (§2.4); never larger.
    const szx = Math.min(b2.szx, cached.szx);
    const offset = b2.num * blockSize(b2.szx);
    const size = blockSize(szx);
    if (offset >= cached.payload.length) {
      this.ml.reply(msg, entry, { code: Response.BAD_OPTION, options: [], payload: EMPTY_BYTES });
      return;
    }
    const chunk = cached.payload.subarray(offset, offset + size);
    const more = offset + chunk.length < cached.payload.length;
    if (more) cached.expiresAt = now + this.ml.exchangeLifetimeMs;
    else this.block2Cache.delete(key);
    this.ml.reply(msg, entry, {
      code: cached.code,
      options: [blockOption(Opt.BLOCK2, { num: offset / size, more, szx })],
      payload: chunk,
    });
    this.user.block2Served(key, !more);
  }

  /**
   * The handler's response (normalized): sent whole or as block 0 of a Block2 transfer,
   * piggybacked or separately as the message layer decides.
   */
  finishHandler(
    msg: CoapMessage, entry: SeenEntry, task: ServerTask, res: CoapResponse,
    preferredSzx: number | undefined, extraResponseOptions: CoapOption[],
  ): void {
    if (!this.ml.endTask(task)) return;
    entry.done = true;
    let first: CoapResponse;
    try {
      first = this.prepareResponse(msg.token, res, extraResponseOptions, preferredSzx);
    } catch {
      // The handler's options cannot be encoded (bad number, oversized value).
      first = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    if (this.ml.replyInTime(msg, entry, task, first)) return;
    // Separate response (§5.2.2): when the client RSTs it or it is given up, its Block2 body goes too.
    const key = toHex(msg.token);
    this.ml.sendSeparate(msg.token, first, () => { this.block2Cache.delete(key); });
  }

  /**
   * The first message of a response: whole when it fits, else block 0 of a Block2
   * transfer with the full response cached under the request token.
   */
  prepareResponse(token: Uint8Array, res: CoapResponse, extra: CoapOption[], preferredSzx: number | undefined): CoapResponse {
    const options = [...res.options, ...extra];
    // Sized as a separate CON response, which may cost more header than the ACK.
    const asAck = this.ml.sizeOf({ type: ACK, code: res.code, mid: 0, token, options, payload: res.payload });
    const asCon = this.ml.sizeOf({ type: CON, code: res.code, mid: 0, token, options, payload: res.payload });
    if (Math.max(asAck, asCon) <= this.maxFrameLen) return { code: res.code, options, payload: res.payload };
    let szx = this.fitBlockSzx(res.code, token, options, Opt.BLOCK2, Opt.SIZE2, res.payload.length, false);
    if (szx === undefined) {
      return { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
    }
    if (preferredSzx !== undefined) szx = Math.min(szx, preferredSzx);
    const size = blockSize(szx);
    this.block2Cache.set(toHex(token), {
      code: res.code, payload: res.payload, szx, expiresAt: this.clock.now() + this.ml.exchangeLifetimeMs,
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

  /** A Block2 body is still wanted (its block 0 was acknowledged): keep it another exchangeLifetimeMs. */
  keepResponse(key: string): void {
    const cached = this.block2Cache.get(key);
    if (cached) cached.expiresAt = this.clock.now() + this.ml.exchangeLifetimeMs;
  }

  /** Forget the Block2 body cached for this token. */
  dropResponse(key: string): void {
    this.block2Cache.delete(key);
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
      this.ml.sizeOf({ type: CON, code, mid: 0, token, options: opts, payload: one }),
      isResponseCode(code) ? this.ml.sizeOf({ type: ACK, code, mid: 0, token, options: opts, payload: one }) : 0,
    ) - 1;
    const first = len([...options, blockOption(blockNumber, { num: 0, more: true, szx: 0 }), uintOption(sizeNumber, totalBytes)]);
    const later = len([...(repeatOptions ? options : []), blockOption(blockNumber, { num: BLOCK_NUM_MAX, more: true, szx: 0 })]);
    const szx = chooseBlockSzx(Math.max(first, later), this.maxFrameLen);
    if (szx === undefined || Math.ceil(totalBytes / blockSize(szx)) > BLOCK_NUM_MAX + 1) return undefined;
    return szx;
  }
}

/** A handler's answer as a valid response: anything malformed becomes 5.00. */
export function normalizeResponse(r: unknown): CoapResponse {
  const bad = { code: Response.INTERNAL_SERVER_ERROR, options: [], payload: EMPTY_BYTES };
  if (typeof r !== 'object' || r === null) return bad;
  const { code, options, payload } = r as { code?: unknown; options?: unknown; payload?: unknown };
  if (typeof code !== 'number' || !isResponseCode(code)) return bad;
  if (options !== undefined && !Array.isArray(options)) return bad;
  if (payload !== undefined && !(payload instanceof Uint8Array)) return bad;
  return { code, options: (options as CoapOption[] | undefined) ?? [], payload: payload ?? EMPTY_BYTES };
}
