/**
 * Message IDs and tokens over a long life (RFC 7252 §4.4, §4.5, §4.8.2; issue 11 item 7).
 *
 * A fast link wraps the 16-bit Message ID space within EXCHANGE_LIFETIME: a cable or a PTY
 * carries 65,536 messages in minutes. Before the fix, the 65,537th message reused a Message ID
 * the peer still remembered, the peer answered it from its de-duplication cache with the old
 * reply, and the link was dead from then on. Everything here runs on the FakeClock: hours of
 * virtual time in a second or two.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock, flush } from '../../helpers/fake-clock.ts';
import { mulberry32 as prng } from '../../helpers/prng.ts';
import type { RandomBytes } from '../../../src/util/clock.ts';
import { TrickleError } from '../../../src/errors.ts';
import { CoapEndpoint, type CoapEndpointOptions, type CoapResponse } from '../../../src/coap/endpoint.ts';
import {
  compactWireCodec, createCompactContext, encodeCompact, decodeCompact, sequenceToken, tokenSequence,
} from '../../../src/coap/compact.ts';
import { decodeMessage, encodeMessage, stringOption, uintOption, type CoapMessage } from '../../../src/coap/message.ts';
import { blockOption } from '../../../src/coap/block.ts';
import { ACK, CON, Method, Opt, Response } from '../../../src/coap/numbers.ts';

const HOUR_MS = 3_600_000;

function randomBytesFrom(seed: number): RandomBytes {
  const rng = prng(seed);
  return (n) => Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
}

type EpOpts = Partial<Omit<CoapEndpointOptions, 'clock' | 'randomBytes' | 'send'>>;

/** A 4-byte big-endian number, the test's request body. */
const u32 = (n: number): Uint8Array => Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
const readU32 = (b: Uint8Array): number => ((b[0]! << 24) >>> 0) + (b[1]! << 16) + (b[2]! << 8) + b[3]!;
/** The answer a correct server gives to body n (depends on the request, so a stale reply shows). */
const answerOf = (n: number): Uint8Array => u32((Math.imul(n, 2654435761) ^ 0x5bd1e995) >>> 0);

/**
 * Two endpoints on one FakeClock joined by a memory pipe with `latencyMs` each way (no loss),
 * both with the compact codec, as the radio uses them. `a` is the client.
 */
function memoryPipe(o: { a?: EpOpts; b?: EpOpts; latencyMs?: number } = {}) {
  const clock = new FakeClock();
  const latencyMs = o.latencyMs ?? 1;
  const base = { maxFrameLen: 255, ackTimeoutMs: 2000, piggybackWindowMs: 500 };
  const endpoints: { a?: CoapEndpoint; b?: CoapEndpoint } = {};
  const wire = (to: 'a' | 'b') => (frame: Uint8Array): void => {
    const copy = frame.slice();
    clock.setTimer(latencyMs, () => endpoints[to]?.receive(copy));
  };
  const make = (side: 'a' | 'b', opts: EpOpts | undefined, seed: number): CoapEndpoint => new CoapEndpoint({
    clock, randomBytes: randomBytesFrom(seed), send: wire(side === 'a' ? 'b' : 'a'),
    ...base, ...opts,
  });
  endpoints.a = make('a', o.a, 1);
  endpoints.b = make('b', o.b, 2);
  return {
    clock,
    get a() { return endpoints.a!; },
    get b() { return endpoints.b!; },
    /** Replace `a` by a new endpoint (a restart), with a fresh compact context on both ends. */
    restartA(opts: EpOpts) {
      endpoints.a!.close();
      endpoints.a = make('a', opts, 3);
      return endpoints.a;
    },
  };
}

/** Let promise callbacks (handlers, resolutions) run: a few microtask turns, no macrotask. */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 8; i++) await null;
}

/** Run the clock and microtasks until `done()`; fails if nothing is left to run. */
async function until(clock: FakeClock, done: () => boolean): Promise<void> {
  for (;;) {
    await microtasks();
    if (done()) return;
    if (!clock.step()) {
      await flush();
      if (done()) return;
      throw new Error('simulation stalled: no timers left and not done');
    }
    clock.runUntil(clock.now()); // everything else due at this instant, before the next microtask turn
  }
}

interface Outcome { res?: CoapResponse; err?: unknown }
function settle(p: Promise<CoapResponse>): Outcome & { done: boolean } {
  const o: Outcome & { done: boolean } = { done: false };
  p.then((res) => { o.res = res; o.done = true; }, (err: unknown) => { o.err = err; o.done = true; });
  return o;
}

const put = (n: number) => ({ code: Method.PUT, options: [stringOption(Opt.URI_PATH, 'n')], payload: u32(n) });

/**
 * Send `total` requests, `batch` at a time, and check every answer. Returns the order in which
 * the server's handler saw the bodies and how often it ran for each.
 */
async function carry(link: ReturnType<typeof memoryPipe>, total: number, batch: number, first = 0, handlerMs = 0) {
  const runs = new Uint8Array(total);
  const order: number[] = [];
  link.b.onRequest(async (req) => {
    const n = readU32(req.payload) - first;
    runs[n]!++;
    order.push(n);
    if (handlerMs > 0) await new Promise<void>((r) => { link.clock.setTimer(handlerMs, r); });
    return { code: Response.CHANGED, payload: answerOf(n + first) };
  });
  let wrong: string | undefined;
  for (let i = 0; i < total && wrong === undefined; i += batch) {
    const outs: (Outcome & { done: boolean })[] = [];
    for (let k = i; k < Math.min(total, i + batch); k++) outs.push(settle(link.a.request(put(k + first))));
    await until(link.clock, () => outs.every((o) => o.done));
    outs.forEach((o, j) => {
      const n = i + j + first;
      if (wrong !== undefined) return;
      if (o.err !== undefined) wrong = `request ${n}: ${(o.err as Error).message}`;
      else if (readU32(o.res!.payload) !== readU32(answerOf(n))) wrong = `request ${n}: answered ${readU32(o.res!.payload)}, expected ${readU32(answerOf(n))}`;
    });
  }
  return { runs, order, wrong };
}

describe('CoapEndpoint: Message IDs and tokens over a long life (RFC 7252 §4.4)', () => {
  it('carries 200,000 requests over a fast link with long lifetimes: every one answered correctly, each handler run once, in order', async () => {
    // A 1 ms link and a one-hour EXCHANGE_LIFETIME on both ends: 65,536 messages take ~2 virtual
    // minutes, so without the rule the 65,537th reused a Message ID the server still remembered.
    const link = memoryPipe({ a: { exchangeLifetimeMs: HOUR_MS }, b: { exchangeLifetimeMs: HOUR_MS } });
    const start = link.clock.now();
    const total = 200_000;
    const { runs, order, wrong } = await carry(link, total, 4);
    expect(wrong).toBeUndefined();
    expect(runs.every((r) => r === 1)).toBe(true);
    expect(order).toEqual(Array.from({ length: total }, (_, i) => i));
    const sa = link.a.stats();
    const sb = link.b.stats();
    // The client waited for Message IDs to free (three times past 65,536), never reused one early.
    expect(link.a.nextSequence).toBeGreaterThan(3 * 65_536);
    expect(sa.midWaits).toBeGreaterThan(0);
    expect(sb.midReuse).toBe(0);
    expect(sb.duplicates).toBe(0);
    expect(sa.dropped).toEqual({});
    expect(sa.timeouts).toBe(0);
    // 200,000 originations at ≤ 65,536 per lifetime: at least three lifetimes of virtual time.
    expect(link.clock.now() - start).toBeGreaterThanOrEqual(3 * HOUR_MS);
  }, 60_000);

  it('two ends with equal lifetimes agree: the receiver has forgotten an id before the sender reuses it, even when its answer lags the receipt', async () => {
    // 50 ms each way and a 200 ms handler: the answer leaves 250 ms after the request did.
    const link = memoryPipe({ latencyMs: 50, a: { exchangeLifetimeMs: HOUR_MS }, b: { exchangeLifetimeMs: HOUR_MS } });
    const { runs, wrong } = await carry(link, 66_000, 8, 0, 200);
    expect(wrong).toBeUndefined();
    expect(runs.every((r) => r === 1)).toBe(true);
    expect(link.a.stats().midWaits).toBeGreaterThan(0);
    expect(link.b.stats()).toMatchObject({ midReuse: 0, duplicates: 0 });
  }, 30_000);

  it('a peer that remembers Message IDs longer than we wait (its lifetime 2 h, ours 10 min): every reused id is a new message, answered correctly', async () => {
    const link = memoryPipe({ a: { exchangeLifetimeMs: 10 * 60_000 }, b: { exchangeLifetimeMs: 2 * HOUR_MS } });
    const total = 66_000;
    const { runs, wrong } = await carry(link, total, 4);
    expect(wrong).toBeUndefined();
    expect(runs.every((r) => r === 1)).toBe(true);
    // a waited 10 minutes once, then reused the ids of requests 0…463 while b still held them.
    expect(link.a.stats().midWaits).toBeGreaterThan(0);
    expect(link.b.stats().midReuse).toBe(total - 65_536);
    expect(link.b.stats().duplicates).toBe(0);
  }, 30_000);

  it('a peer restarted with its sequence reset reuses Message IDs and tokens with new content: each is processed, none answered from the old reply', async () => {
    const link = memoryPipe({ a: { exchangeLifetimeMs: HOUR_MS }, b: { exchangeLifetimeMs: HOUR_MS } });
    const before = await carry(link, 50, 1, 0);
    expect(before.wrong).toBeUndefined();
    link.restartA({ exchangeLifetimeMs: HOUR_MS }); // sequenceStart 1 again: the same ids and tokens
    const after = await carry(link, 50, 1, 1000);
    expect(after.wrong).toBeUndefined();
    expect(after.runs.every((r) => r === 1)).toBe(true);
    expect(link.b.stats().midReuse).toBe(50);
    expect(link.b.stats().duplicates).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// One endpoint, the test as its peer (RFC 7252 frames)
// ---------------------------------------------------------------------------

function solo(opts: EpOpts = {}) {
  const clock = new FakeClock();
  const sent: { msg: CoapMessage; atMs: number }[] = [];
  const ep = new CoapEndpoint({
    clock, randomBytes: randomBytesFrom(7), send: (f) => sent.push({ msg: decodeMessage(f), atMs: clock.now() }),
    maxFrameLen: 255, ackTimeoutMs: 2000, piggybackWindowMs: 500, exchangeLifetimeMs: HOUR_MS, ...opts,
  });
  return { clock, ep, sent };
}

const frame = (m: Partial<CoapMessage> & Pick<CoapMessage, 'type' | 'code' | 'mid'>): Uint8Array =>
  encodeMessage({ token: new Uint8Array(0), options: [], payload: new Uint8Array(0), ...m });
const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const bytes = (t: string): Uint8Array => new TextEncoder().encode(t);

describe('CoapEndpoint: a remembered Message ID with new content is a new message (receiver, RFC 7252 §4.5)', () => {
  const post = (mid: number, token: string, body: string, extra: CoapMessage['options'] = []) => frame({
    type: CON, code: Method.POST, mid, token: bytes(token), options: [stringOption(Opt.URI_PATH, 'x'), ...extra], payload: bytes(body),
  });

  it('answers a copy from the cache and a new message under the same id on its own', async () => {
    const { ep, sent, clock } = solo();
    let runs = 0;
    ep.onRequest(async (req) => { runs++; return { code: Response.CHANGED, payload: bytes(`re:${text(req.payload)}`) }; });
    ep.receive(post(7, 'T1', 'a'));
    await microtasks();
    ep.receive(post(7, 'T1', 'a')); // a retransmission: a copy
    clock.advance(60_000);
    ep.receive(post(7, 'T2', 'b')); // the peer reused id 7 a minute later, for another request
    await microtasks();
    ep.receive(post(7, 'T2', 'b')); // and that one's retransmission
    expect(runs).toBe(2);
    expect(sent.map(({ msg }) => `${msg.type === ACK ? 'ACK' : '?'} ${msg.mid} ${text(msg.token)} ${text(msg.payload)}`)).toEqual([
      'ACK 7 T1 re:a', 'ACK 7 T1 re:a', 'ACK 7 T2 re:b', 'ACK 7 T2 re:b',
    ]);
    expect(ep.stats()).toMatchObject({ duplicates: 2, midReuse: 1 });
  });

  it('after the lifetime, the same id is new without counting as reuse', async () => {
    const { ep, clock } = solo({ exchangeLifetimeMs: 10_000 });
    let runs = 0;
    ep.onRequest(async () => { runs++; return { code: Response.CHANGED }; });
    ep.receive(post(9, 'T1', 'a'));
    await microtasks();
    clock.advance(10_000);
    ep.receive(post(9, 'T2', 'b'));
    await microtasks();
    expect(runs).toBe(2);
    expect(ep.stats()).toMatchObject({ duplicates: 0, midReuse: 0 });
  });

  it('a request superseded while its handler runs is answered separately, never under the reused id', async () => {
    const { ep, sent, clock } = solo();
    let release!: () => void;
    ep.onRequest(async (req) => {
      if (text(req.payload) === 'slow') await new Promise<void>((r) => { release = r; });
      return { code: Response.CHANGED, payload: bytes(`re:${text(req.payload)}`) };
    });
    ep.receive(post(30, 'T1', 'slow'));
    await microtasks();
    ep.receive(post(30, 'T2', 'fast')); // a restarted peer reuses id 30 inside the piggyback window
    await microtasks();
    clock.advance(1_000); // the slow request's piggyback window ends: no empty ACK under id 30
    release();
    await microtasks();
    const out = sent.map(({ msg }) => ({ type: msg.type, mid: msg.mid, token: text(msg.token), body: text(msg.payload) }));
    expect(out).toHaveLength(2);
    expect(out[0]).toEqual({ type: ACK, mid: 30, token: 'T2', body: 're:fast' });
    // The slow answer: a separate CON under an id of our own (no empty ACK went under id 30).
    expect(out[1]).toMatchObject({ type: CON, token: 'T1', body: 're:slow' });
    expect(out[1]!.mid).not.toBe(30);
    expect(ep.stats().midReuse).toBe(1);
  });

  it('Block2 follow-ups under a reused id get their own block, not the cached one', async () => {
    const { ep, sent } = solo();
    const body = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
    let runs = 0;
    ep.onRequest(async () => { runs++; return { code: Response.CONTENT, payload: body }; });
    const get = (mid: number, block?: { num: number; szx: number }) => frame({
      type: CON, code: Method.GET, mid, token: bytes('B'),
      options: [stringOption(Opt.URI_PATH, 'big'), ...(block ? [blockOption(Opt.BLOCK2, { num: block.num, more: false, szx: block.szx })] : [])],
    });
    ep.receive(get(40));
    await microtasks();
    const b0 = sent[0]!.msg;
    const szx = b0.options.find((o) => o.number === Opt.BLOCK2)!.value[0]! & 0x07;
    const size = 16 << szx;
    ep.receive(get(41, { num: 1, szx }));
    ep.receive(get(41, { num: 2, szx })); // the client reused id 41 early for the next block
    expect(runs).toBe(1);
    expect([...sent[1]!.msg.payload]).toEqual([...body.subarray(size, 2 * size)]);
    expect([...sent[2]!.msg.payload]).toEqual([...body.subarray(2 * size, 3 * size)]);
    expect(ep.stats().midReuse).toBe(1);
  });

  it('Observe notifications under a reused id (same token, new Observe value) are delivered; a copy is not', async () => {
    const { ep, sent } = solo();
    const got: string[] = [];
    const obs = ep.observe({ code: Method.GET, options: [stringOption(Opt.URI_PATH, 'feed')] }, (res, seq) => { got.push(`${seq}:${text(res.payload)}`); });
    const reg = sent[0]!.msg;
    ep.receive(frame({ type: ACK, code: Response.CONTENT, mid: reg.mid, token: obs.token, options: [uintOption(Opt.OBSERVE, 1)], payload: bytes('first') }));
    const ntf = (observe: number, body: string) => frame({
      type: CON, code: Response.CONTENT, mid: 100, token: obs.token, options: [uintOption(Opt.OBSERVE, observe)], payload: bytes(body),
    });
    ep.receive(ntf(2, 'two'));
    ep.receive(ntf(3, 'three')); // the server reused id 100 early
    ep.receive(ntf(3, 'three')); // a copy of that one
    await microtasks();
    expect(got).toEqual(['1:first', '2:two', '3:three']);
    expect(sent.slice(1).map(({ msg }) => `${msg.type === ACK ? 'ACK' : '?'} ${msg.mid}`)).toEqual(['ACK 100', 'ACK 100', 'ACK 100']);
    expect(ep.stats()).toMatchObject({ midReuse: 1, duplicates: 1 });
  });
});

describe('CoapEndpoint: waiting for a Message ID (sender, RFC 7252 §4.4)', () => {
  it('when all 65,536 ids were used within the lifetime, new messages wait on one timer, in order, each sent the moment its id is a lifetime old', async () => {
    const { ep, sent, clock } = solo();
    // Act as a server too: a NON request gets a NON response, a message of our own.
    ep.onRequest(async (req) => ({ code: Response.CONTENT, payload: req.payload }));
    const t0 = clock.now();
    const answered: Outcome[] = [];
    for (let i = 0; i < 65_536; i++) {
      const out = settle(ep.request(put(i)));
      answered.push(out);
      const req = sent[sent.length - 1]!.msg;
      ep.receive(frame({ type: ACK, code: Response.CHANGED, mid: req.mid, token: req.token, payload: answerOf(i) }));
      clock.advance(1);
    }
    await microtasks();
    expect(answered.every((o) => o.res !== undefined)).toBe(true);
    expect(ep.nextSequence).toBe(65_537);
    const sentBefore = sent.length;

    // Three requests (reading nextSequence first, as the host does for txn ids) and a NON answer.
    const tokens: number[] = [];
    const outs = [0, 1, 2].map((k) => {
      tokens.push(ep.nextSequence);
      return settle(ep.request(put(100_000 + k)));
    });
    ep.receive(frame({ type: 1, code: Method.GET, mid: 0x4242, token: bytes('nn'), options: [stringOption(Opt.URI_PATH, 'q')], payload: bytes('non') }));
    await microtasks();
    expect(sent.length).toBe(sentBefore);
    expect(ep.stats()).toMatchObject({ midWaits: 4, midWaiting: 4 });
    expect(clock.pending).toBe(1); // one timer for the whole queue: no polling

    // The guard: the lifetime plus one ACK round trip (2000 ms × 1.5), see midGuardMs.
    const guardMs = ep.stats().midGuardMs;
    expect(guardMs).toBe(HOUR_MS + 3000);
    clock.runUntil(t0 + guardMs - 1);
    expect(sent.length).toBe(sentBefore);
    clock.runUntil(t0 + guardMs + 3);
    const later = sent.slice(sentBefore);
    // In order; each at the instant its id (used 1 ms apart from t0 on) is one lifetime old.
    expect(later.map(({ msg }) => msg.mid)).toEqual([1, 2, 3, 4]);
    expect(later.map(({ atMs }) => atMs - t0)).toEqual([guardMs, guardMs + 1, guardMs + 2, guardMs + 3]);
    expect(later.slice(0, 3).map(({ msg }) => tokenSequence(msg.token))).toEqual(tokens);
    expect(tokens).toEqual([65_537, 65_538, 65_539]);
    expect(later[3]!.msg).toMatchObject({ type: 1, token: bytes('nn'), payload: bytes('non') });
    for (const [k, { msg }] of later.slice(0, 3).entries()) {
      ep.receive(frame({ type: ACK, code: Response.CHANGED, mid: msg.mid, token: msg.token, payload: answerOf(100_000 + k) }));
    }
    await microtasks();
    expect(outs.map((o) => readU32(o.res!.payload))).toEqual([0, 1, 2].map((k) => readU32(answerOf(100_000 + k))));
    expect(ep.stats()).toMatchObject({ midWaiting: 0, timeouts: 0, midSkips: 0 });

    // Ids 5… are still in their guard. A registration that is cancelled while it waits is
    // skipped (its S goes unused); the request behind it goes when its own id frees.
    const obs = ep.observe({ code: Method.GET, options: [] }, () => {});
    const waiting = settle(ep.request(put(7)));
    void obs.cancel();
    expect(ep.stats().midWaiting).toBe(2);
    clock.runUntil(t0 + guardMs + 5);
    expect(sent.slice(sentBefore + 4).map(({ msg }) => [msg.mid, tokenSequence(msg.token)])).toEqual([[6, 65_542]]);
    expect(ep.stats()).toMatchObject({ midSkips: 1, midWaiting: 0 });
    // close() rejects what waits and leaves no timer behind.
    void ep.request(put(8)).catch(() => {});
    expect(ep.stats().midWaiting).toBe(1);
    ep.close();
    await microtasks();
    expect((waiting.err as TrickleError).code).toBe('ERR_COAP_CLOSED');
    expect(clock.pending).toBe(0);
  }, 30_000);

  it("'random' mode: the same rule for ids, and no token drawn again within the guard", async () => {
    const { ep, sent, clock } = solo({ tokenMode: 'random', tokenLength: 1, exchangeLifetimeMs: 60_000 });
    const tokens = new Set<number>();
    for (let i = 0; i < 200; i++) {
      void ep.request(put(i));
      const req = sent[sent.length - 1]!.msg;
      tokens.add(req.token[0]!);
      ep.receive(frame({ type: ACK, code: Response.CHANGED, mid: req.mid, token: req.token }));
      clock.advance(10);
    }
    // 200 draws from 256 one-byte tokens would repeat one almost surely; none repeats.
    expect(tokens.size).toBe(200);
    // When none is free, the request fails rather than reuse one…
    const more = Array.from({ length: 100 }, (_, i) => settle(ep.request(put(i))));
    await microtasks();
    const refused = more.filter((o) => o.err !== undefined);
    expect(refused.length).toBeGreaterThan(0);
    expect((refused[0]!.err as TrickleError).code).toBe('ERR_COAP_FORMAT');
    const inFlight = new Set(sent.slice(200).map(({ msg }) => msg.token[0]!));
    expect([...inFlight].some((t) => tokens.has(t))).toBe(false);
    // …and after the guard every token is free again.
    clock.advance(ep.stats().midGuardMs);
    const again = settle(ep.request(put(0)));
    const req = sent[sent.length - 1]!.msg;
    ep.receive(frame({ type: ACK, code: Response.CHANGED, mid: req.mid, token: req.token }));
    await microtasks();
    expect(again.res).toBeDefined();
  });
});

describe('compact form: sequence numbers over a long life', () => {
  it('a block follow-up whose id equals its request token mod 2^16 (65,536 messages later) is encoded with its own S', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    const t = 5;
    const block = (s: number, num: number): CoapMessage => ({
      type: CON, code: Method.PUT, mid: s & 0xffff, token: sequenceToken(t),
      options: [stringOption(Opt.URI_PATH, 'x'), blockOption(Opt.BLOCK1, { num, more: true, szx: 3 })], payload: new Uint8Array(128),
    });
    // The sender's messages up to S = t + 65,535 were decoded and acknowledged.
    a.tx.hi = a.tx.lo = b.rx.ref = t + 65_535;
    const s = t + 65_536;
    const f = encodeCompact(block(s, 65_531), a);
    expect(decodeCompact(f, b)).toEqual(block(s, 65_531));
    expect(b.rx.ref).toBe(s); // before: S was taken for the token's (t), the ref stayed behind
    expect(a.tx.sent.get(s & 0x7f)?.seq).toBe(s);
  });

  it('S values passed over while messages waited still decode (the LSB forms are used only when unambiguous)', () => {
    const a = createCompactContext({ initialSeq: 0 });
    const b = createCompactContext({ initialSeq: 0 });
    let s = 1;
    for (const gap of [0, 1, 15, 16, 17, 100, 127, 128, 1000, 40_000, 0, 3]) {
      s += gap;
      const msg: CoapMessage = { type: CON, code: Method.GET, mid: s & 0xffff, token: sequenceToken(s), options: [stringOption(Opt.URI_PATH, 'x')], payload: new Uint8Array(0) };
      expect(decodeCompact(encodeCompact(msg, a), b)).toEqual(msg);
      a.tx.lo = s; // acknowledged
      s++;
    }
  });
});
