import { describe, expect, it } from 'vitest';
import { FakeClock, drive, flush } from '../../helpers/fake-clock.ts';
import { TrickleError } from '../../../src/errors.ts';
import type { RandomBytes } from '../../../src/util/clock.ts';
import { toHex, utf8 } from '../../../src/util/bytes.ts';
import { CoapEndpoint, type CoapEndpointOptions, type IncomingRequest, type CoapResponseInit } from '../../../src/coap/endpoint.ts';
import { decodeMessage, encodeMessage, getOption, getUintOption, stringOption, uintOption, type CoapMessage } from '../../../src/coap/message.ts';
import { blockOption, decodeBlock } from '../../../src/coap/block.ts';
import { ACK, CON, EMPTY, Method, NON, Opt, RST, Response, codeToString } from '../../../src/coap/numbers.ts';
import { compactWireCodec, createCompactContext, tokenSequence } from '../../../src/coap/compact.ts';
import type { WireCodec } from '../../../src/coap/message.ts';
import { mulberry32 as prng } from '../../helpers/prng.ts';

type CodecName = 'rfc7252' | 'compact';
const CODECS: readonly CodecName[] = ['rfc7252', 'compact'];

// ---------------------------------------------------------------------------
// Harness: two endpoints on one FakeClock, joined by a lossy channel with latency
// ---------------------------------------------------------------------------

function randomBytesFrom(rng: () => number): RandomBytes {
  return (n) => Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
}


interface Tracked<T> { settled: boolean; value?: T; error?: unknown }
function track<T>(p: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { settled: false };
  p.then((v) => { t.settled = true; t.value = v; }, (e: unknown) => { t.settled = true; t.error = e; });
  return t;
}

type EpOpts = Partial<Omit<CoapEndpointOptions, 'clock' | 'randomBytes' | 'send'>>;

interface LinkOptions {
  seed?: number;
  lossAtoB?: number;
  lossBtoA?: number;
  latencyMs?: number;
  a?: EpOpts;
  b?: EpOpts;
  common?: EpOpts;
  /** What the channel carries. Logs always hold the RFC 7252 expansion of each frame. */
  codec?: CodecName;
}

/**
 * Wraps the endpoint's codec so the test logs see the RFC 7252 form of every frame
 * sent (the channel carries the codec's bytes) and the on-air lengths separately.
 */
function loggingCodec(name: CodecName, rfcLog: Uint8Array[], airLog: number[]): WireCodec | undefined {
  if (name === 'rfc7252') return undefined;
  const inner = compactWireCodec(createCompactContext());
  return {
    encode: (msg) => { const f = inner.encode(msg); rfcLog.push(encodeMessage(msg)); airLog.push(f.length); return f; },
    decode: (f) => inner.decode(f),
    sizeBound: (msg) => inner.sizeBound!(msg),
  };
}

function makeLinkWith(o: LinkOptions = {}) {
  const clock = new FakeClock();
  const rng = prng(o.seed ?? 1);
  const latencyMs = o.latencyMs ?? 100;
  const sentByA: Uint8Array[] = [];
  const sentByB: Uint8Array[] = [];
  const airA: number[] = [];
  const airB: number[] = [];
  const codec = o.codec ?? 'rfc7252';
  const codecA = loggingCodec(codec, sentByA, airA);
  const codecB = loggingCodec(codec, sentByB, airB);
  const base: CoapEndpointOptions = {
    clock, randomBytes: randomBytesFrom(rng), send: () => {},
    maxFrameLen: 255, ackTimeoutMs: 2000, piggybackWindowMs: 500,
  };
  let b: CoapEndpoint | undefined;
  const channel = (log: Uint8Array[], air: number[], loss: number, to: () => CoapEndpoint) => (frame: Uint8Array): void => {
    if (codec === 'rfc7252') { log.push(frame); air.push(frame.length); }
    if (rng() < loss) return;
    const copy = frame.slice();
    clock.setTimer(latencyMs, () => to().receive(copy));
  };
  const a: CoapEndpoint = new CoapEndpoint({
    ...base, ...o.common, ...o.a, ...(codecA ? { wireCodec: codecA } : {}), send: channel(sentByA, airA, o.lossAtoB ?? 0, () => b!),
  });
  b = new CoapEndpoint({
    ...base, ...o.common, ...o.b, ...(codecB ? { wireCodec: codecB } : {}),
    randomBytes: randomBytesFrom(prng((o.seed ?? 1) + 1000)), send: channel(sentByB, airB, o.lossBtoA ?? 0, () => a),
  });
  return { clock, a, b: b as CoapEndpoint, sentByA, sentByB, airA, airB };
}

const makeLink = (o: LinkOptions = {}) => makeLinkWith(o);

/** One endpoint whose peer is the test itself. */
function makeSolo(opts: EpOpts = {}) {
  const clock = new FakeClock();
  const sent: CoapMessage[] = [];
  const ep = new CoapEndpoint({
    clock, randomBytes: randomBytesFrom(prng(7)), send: (f) => sent.push(decodeMessage(f)),
    maxFrameLen: 255, ackTimeoutMs: 2000, piggybackWindowMs: 500, ...opts,
  });
  return { clock, ep, sent };
}

const path = (...segments: string[]) => segments.map((s) => stringOption(Opt.URI_PATH, s));
const bytesOf = (n: number, seed = 3): Uint8Array => {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
};
const types = (frames: Uint8Array[]) => frames.map((f) => {
  const m = decodeMessage(f);
  return `${['CON', 'NON', 'ACK', 'RST'][m.type]} ${codeToString(m.code)}`;
});

// ---------------------------------------------------------------------------

describe.each(CODECS)('CoapEndpoint: request/response (%s on the channel)', (codec) => {
  const makeLink = (o: LinkOptions = {}) => makeLinkWith({ codec, ...o });
  it('answers in a piggybacked ACK when the handler is quick', async () => {
    const { clock, a, b, sentByA, sentByB } = makeLink();
    const seen: IncomingRequest[] = [];
    b.onRequest(async (req) => {
      seen.push(req);
      return { code: Response.CONTENT, options: [uintOption(Opt.CONTENT_FORMAT, 0)], payload: utf8.encode('22.5 C') };
    });
    const t = track(a.request({ code: Method.GET, options: path('temperature') }));
    await drive(clock, () => t.settled);
    expect(t.error).toBeUndefined();
    expect(t.value!.code).toBe(Response.CONTENT);
    expect(utf8.decode(t.value!.payload)).toBe('22.5 C');
    expect(getUintOption(t.value!.options, Opt.CONTENT_FORMAT)).toBe(0);
    expect(seen).toHaveLength(1);
    expect(utf8.decode(getOption(seen[0]!.options, Opt.URI_PATH)!)).toBe('temperature');
    expect(seen[0]!.confirmable).toBe(true);
    expect(types(sentByA)).toEqual(['CON 0.01']);
    expect(types(sentByB)).toEqual(['ACK 2.05']);
    // Token and Message ID match between request and piggybacked response.
    const req = decodeMessage(sentByA[0]!);
    const res = decodeMessage(sentByB[0]!);
    expect(res.mid).toBe(req.mid);
    expect(toHex(res.token)).toBe(toHex(req.token));
    // 'sequence' tokens: 4 bytes, the request's first sequence number (mid = its low 16 bits).
    expect(req.token).toHaveLength(4);
    expect(tokenSequence(req.token)! & 0xffff).toBe(req.mid);
    expect(a.stats()).toMatchObject({ sent: 1, received: 1, retransmissions: 0, timeouts: 0 });
  });

  it('sends an empty ACK, then a separate CON response, for a slow handler (30 s long poll)', async () => {
    const { clock, a, b, sentByA, sentByB } = makeLink();
    let runs = 0;
    b.onRequest((req) => {
      runs++;
      return new Promise<CoapResponseInit>((resolve) => {
        clock.setTimer(30_000, () => resolve({ code: Response.CONTENT, payload: req.payload }));
      });
    });
    const start = clock.now();
    const t = track(a.request({ code: Method.POST, options: path('sync'), payload: utf8.encode('since=s1') }));
    await drive(clock, () => t.settled);
    expect(t.error).toBeUndefined();
    expect(utf8.decode(t.value!.payload)).toBe('since=s1');
    expect(clock.now() - start).toBeGreaterThanOrEqual(30_000);
    expect(runs).toBe(1);
    expect(types(sentByA)).toEqual(['CON 0.02', 'ACK 0.00']);
    expect(types(sentByB)).toEqual(['ACK 0.00', 'CON 2.05']);
    const emptyAck = decodeMessage(sentByB[0]!);
    expect(emptyAck.mid).toBe(decodeMessage(sentByA[0]!).mid);
    const separate = decodeMessage(sentByB[1]!);
    expect(decodeMessage(sentByA[1]!).mid).toBe(separate.mid);
    expect(a.stats().retransmissions).toBe(0);
    expect(b.stats().retransmissions).toBe(0);
    // The empty ACK went out when the piggyback window closed, not later.
    expect(b.stats().sent).toBe(2);
  });

  it('keeps several requests in flight at once and matches responses by token', async () => {
    const { clock, a, b } = makeLink();
    b.onRequest((req) => new Promise((resolve) => {
      const n = req.payload[0]!;
      // Later requests answer sooner: responses arrive out of order.
      clock.setTimer((10 - n) * 300, () => resolve({ code: Response.CONTENT, payload: Uint8Array.of(n * 2) }));
    }));
    const ts = Array.from({ length: 10 }, (_, n) => track(a.request({ code: Method.POST, options: [], payload: Uint8Array.of(n) })));
    await drive(clock, () => ts.every((t) => t.settled));
    ts.forEach((t, n) => expect(t.value!.payload[0]).toBe(n * 2));
  });

  it('runs both directions on one link', async () => {
    const { clock, a, b } = makeLink();
    a.onRequest(async () => ({ code: Response.CHANGED, payload: utf8.encode('from a') }));
    b.onRequest(async () => ({ code: Response.CONTENT, payload: utf8.encode('from b') }));
    const t1 = track(a.request({ code: Method.GET, options: [] }));
    const t2 = track(b.request({ code: Method.PUT, options: [] }));
    await drive(clock, () => t1.settled && t2.settled);
    expect(utf8.decode(t1.value!.payload)).toBe('from b');
    expect(utf8.decode(t2.value!.payload)).toBe('from a');
  });

  it('answers 5.00 when the handler throws and 5.01 without a handler', async () => {
    const { clock, a, b } = makeLink();
    const t0 = track(a.request({ code: Method.GET, options: [] }));
    await drive(clock, () => t0.settled);
    expect(t0.value!.code).toBe(Response.NOT_IMPLEMENTED);
    b.onRequest(() => { throw new Error('boom'); });
    const t1 = track(a.request({ code: Method.GET, options: [] }));
    await drive(clock, () => t1.settled);
    expect(t1.value!.code).toBe(Response.INTERNAL_SERVER_ERROR);
  });
});

describe.each(CODECS)('CoapEndpoint: loss (%s on the channel)', (codec) => {
  const makeLink = (o: LinkOptions = {}) => makeLinkWith({ codec, ...o });
  it.each([42, 7, 2024])('completes 200 requests over 30 %% loss each way; every handler runs exactly once (seed %i)', async (seed) => {
    // At 30 % loss each way an attempt (CON there, ACK back) succeeds with p = 0.49, so
    // MAX_RETRANSMIT = 4 would lose ~3.5 % of exchanges; a lossy-link profile raises it.
    const { clock, a, b } = makeLink({ seed, lossAtoB: 0.3, lossBtoA: 0.3, common: { maxRetransmit: 12 } });
    const runs = new Map<number, number>();
    const rng = prng(seed + 99);
    b.onRequest((req) => {
      const id = (req.payload[0]! << 8) | req.payload[1]!;
      runs.set(id, (runs.get(id) ?? 0) + 1);
      // A third of the handlers are slower than the piggyback window: separate responses too.
      const delay = rng() < 0.33 ? 500 + Math.floor(rng() * 5000) : Math.floor(rng() * 300);
      return new Promise((resolve) => clock.setTimer(delay, () => resolve({ code: Response.CONTENT, payload: req.payload })));
    });
    const ts = Array.from({ length: 200 }, (_, id) =>
      track(a.request({ code: Method.POST, options: path('rooms', 'send'), payload: Uint8Array.of(id >> 8, id & 0xff, 0xaa) })));
    await drive(clock, () => ts.every((t) => t.settled));
    const failures = ts.filter((t) => t.error !== undefined).map((t) => (t.error as TrickleError).code);
    expect(failures).toEqual([]);
    ts.forEach((t, id) => expect(Array.from(t.value!.payload)).toEqual([id >> 8, id & 0xff, 0xaa]));
    expect(runs.size).toBe(200);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    const sa = a.stats();
    const sb = b.stats();
    expect(sa.retransmissions).toBeGreaterThan(50);
    expect(sb.duplicates).toBeGreaterThan(10);   // retransmitted CONs whose ACK was lost
    expect(sa.timeouts + sb.timeouts).toBe(0);
  });
});

describe.each(CODECS)('CoapEndpoint: block-wise over a link (%s on the channel)', (codec) => {
  const makeLink = (o: LinkOptions = {}) => makeLinkWith({ codec, ...o });
  const sizes = [0, 1, 16, 128, 200, 229, 230, 231, 232, 240, 255, 256, 1024, 1025, 4096, 65536];

  it.each(sizes)('carries a %i-byte body both ways in ≤ 255-byte frames; handler runs once', async (n) => {
    const { clock, a, b, sentByA, sentByB, airA, airB } = makeLink({ latencyMs: 50 });
    const body = bytesOf(n, n + 1);
    const reply = bytesOf(n, n + 2);
    let runs = 0;
    let got: Uint8Array | undefined;
    b.onRequest(async (req) => {
      runs++;
      got = req.payload;
      expect(req.options.map((o) => o.number)).toEqual([Opt.URI_PATH, Opt.URI_PATH, Opt.CONTENT_FORMAT]);
      return { code: Response.CHANGED, options: [uintOption(Opt.CONTENT_FORMAT, 60)], payload: reply };
    });
    const t = track(a.request({ code: Method.PUT, options: [...path('media', 'upload'), uintOption(Opt.CONTENT_FORMAT, 42)], payload: body }));
    await drive(clock, () => t.settled);
    expect(t.error).toBeUndefined();
    expect(runs).toBe(1);
    expect(toHex(got!)).toBe(toHex(body));
    expect(t.value!.code).toBe(Response.CHANGED);
    expect(toHex(t.value!.payload)).toBe(toHex(reply));
    // Block options are transparent: the caller sees only the representation's options.
    expect(t.value!.options.map((o) => o.number)).toEqual([Opt.CONTENT_FORMAT]);
    for (const len of [...airA, ...airB]) expect(len).toBeLessThanOrEqual(255);
    if (n >= 1024) {
      // Blocks are as large as the frame allows (128 B at 255 B frames): no tiny-block waste.
      const requests = sentByA.map(decodeMessage).filter((m) => m.type === CON);
      expect(requests.length).toBeLessThanOrEqual(2 * Math.ceil(n / 128) + 1);
      const b1 = decodeBlock(getOption(requests[0]!.options, Opt.BLOCK1)!);
      expect(b1.szx).toBe(3);
      expect(getUintOption(requests[0]!.options, Opt.SIZE1)).toBe(n);
    }
    expect(a.stats().retransmissions + b.stats().retransmissions).toBe(0);
  });

  it('moves 64 KiB each way over a lossy link with the handler run once', async () => {
    const { clock, a, b, airA, airB } = makeLink({ seed: 5, lossAtoB: 0.15, lossBtoA: 0.15, common: { maxRetransmit: 10 } });
    const body = bytesOf(65536, 11);
    let runs = 0;
    b.onRequest((req) => {
      runs++;
      // Slow enough that the first Block2 block goes as a separate response.
      return new Promise((resolve) => clock.setTimer(3000, () => resolve({ code: Response.CONTENT, payload: req.payload.slice().reverse() })));
    });
    const t = track(a.request({ code: Method.POST, options: path('x'), payload: body }));
    await drive(clock, () => t.settled);
    expect(t.error).toBeUndefined();
    expect(runs).toBe(1);
    expect(toHex(t.value!.payload)).toBe(toHex(body.slice().reverse()));
    for (const len of [...airA, ...airB]) expect(len).toBeLessThanOrEqual(255);
    expect(a.stats().retransmissions).toBeGreaterThan(0);
  });

  it('refuses a body over maxBodyBytes with 4.13 and Size1, without running the handler', async () => {
    const { clock, a, b } = makeLink({ b: { maxBodyBytes: 4096 } });
    let runs = 0;
    b.onRequest(async () => { runs++; return { code: Response.CHANGED }; });
    const t = track(a.request({ code: Method.POST, options: [], payload: bytesOf(8192) }));
    await drive(clock, () => t.settled);
    expect(t.value!.code).toBe(Response.REQUEST_ENTITY_TOO_LARGE);
    expect(getUintOption(t.value!.options, Opt.SIZE1)).toBe(4096);
    expect(runs).toBe(0);
  });

  it('rejects a response larger than the client bound', async () => {
    const { clock, a, b } = makeLink({ a: { maxBodyBytes: 1000 } });
    b.onRequest(async () => ({ code: Response.CONTENT, payload: bytesOf(5000) }));
    const t = track(a.request({ code: Method.GET, options: [] }));
    await drive(clock, () => t.settled);
    expect((t.error as TrickleError).code).toBe('ERR_COAP_TOO_LARGE');
  });
});

describe('CoapEndpoint: block-wise server and client details (RFC 7252 frames injected)', () => {
  it('enforces the bound while reassembling even without Size1', async () => {
    const { clock, ep, sent } = makeSolo({ maxBodyBytes: 300 });
    let runs = 0;
    ep.onRequest(async () => { runs++; return { code: Response.CHANGED }; });
    const token = Uint8Array.of(1, 2);
    const block = (num: number, more: boolean, mid: number) => encodeMessage({
      type: CON, code: Method.POST, mid, token,
      options: [blockOption(Opt.BLOCK1, { num, more, szx: 3 })], payload: bytesOf(128, num),
    });
    ep.receive(block(0, true, 10));
    ep.receive(block(1, true, 11));
    ep.receive(block(2, true, 12));
    await flush();
    clock.advance(1);
    expect(sent.map((m) => codeToString(m.code))).toEqual(['2.31', '2.31', '4.13']);
    expect(getUintOption(sent[2]!.options, Opt.SIZE1)).toBe(300);
    // The reassembly is gone: the next block is out of sequence.
    ep.receive(block(3, false, 13));
    expect(codeToString(sent[3]!.code)).toBe('4.08');
    expect(runs).toBe(0);
  });

  it('answers an out-of-order Block1 block with 4.08 and a reserved SZX with 4.00', () => {
    const { ep, sent } = makeSolo();
    const token = Uint8Array.of(9);
    ep.receive(encodeMessage({ type: CON, code: Method.POST, mid: 1, token, options: [blockOption(Opt.BLOCK1, { num: 2, more: true, szx: 0 })], payload: bytesOf(16) }));
    ep.receive(encodeMessage({ type: CON, code: Method.POST, mid: 2, token, options: [{ number: Opt.BLOCK1, value: Uint8Array.of(0x0f) }], payload: bytesOf(16) }));
    expect(sent.map((m) => `${m.type} ${codeToString(m.code)}`)).toEqual([`${ACK} 4.08`, `${ACK} 4.00`]);
  });

  it('follows a server that asks for smaller Block1 blocks (RFC 7959 §2.5)', async () => {
    const { clock, ep, sent } = makeSolo();
    const body = bytesOf(1000);
    const t = track(ep.request({ code: Method.POST, options: [], payload: body }));
    await flush();
    const first = sent[0]!;
    expect(decodeBlock(getOption(first.options, Opt.BLOCK1)!)).toEqual({ num: 0, more: true, szx: 3 });
    ep.receive(encodeMessage({
      type: ACK, code: Response.CONTINUE, mid: first.mid, token: first.token,
      options: [blockOption(Opt.BLOCK1, { num: 0, more: true, szx: 1 })], payload: new Uint8Array(0),
    }));
    const second = sent[1]!;
    // 128 bytes went in block 0; the next 32-byte block is NUM 4.
    expect(decodeBlock(getOption(second.options, Opt.BLOCK1)!)).toEqual({ num: 4, more: true, szx: 1 });
    expect(toHex(second.payload)).toBe(toHex(body.subarray(128, 160)));
    ep.close();
    await drive(clock, () => t.settled);
  });

  it('serves Block2 follow-ups from the cache (never re-running the handler) and 4.08 once it is gone', async () => {
    const { ep, sent } = makeSolo();
    let runs = 0;
    ep.onRequest(async () => { runs++; return { code: Response.CONTENT, payload: bytesOf(1000) }; });
    const token = Uint8Array.of(5, 5);
    ep.receive(encodeMessage({ type: CON, code: Method.GET, mid: 100, token, options: [], payload: new Uint8Array(0) }));
    await flush();
    const first = sent[0]!;
    expect(first.type).toBe(ACK);
    const b0 = decodeBlock(getOption(first.options, Opt.BLOCK2)!);
    expect(b0).toEqual({ num: 0, more: true, szx: 3 });
    expect(getUintOption(first.options, Opt.SIZE2)).toBe(1000);
    const follow = (num: number, mid: number, t = token) => encodeMessage({
      type: CON, code: Method.GET, mid, token: t, options: [blockOption(Opt.BLOCK2, { num, more: false, szx: 3 })], payload: new Uint8Array(0),
    });
    for (let num = 1; num < 8; num++) ep.receive(follow(num, 100 + num));
    expect(runs).toBe(1);
    const last = sent[7]!;
    expect(decodeBlock(getOption(last.options, Opt.BLOCK2)!)).toEqual({ num: 7, more: false, szx: 3 });
    expect(last.payload.length).toBe(1000 - 7 * 128);
    // After the last block the cache entry is gone.
    ep.receive(follow(3, 200));
    expect(codeToString(sent[8]!.code)).toBe('4.08');
    // A client may ask for smaller blocks: served from the same cached body.
    ep.receive(encodeMessage({ type: CON, code: Method.GET, mid: 300, token: Uint8Array.of(6), options: [], payload: new Uint8Array(0) }));
    await flush();
    ep.receive(encodeMessage({
      type: CON, code: Method.GET, mid: 301, token: Uint8Array.of(6), options: [blockOption(Opt.BLOCK2, { num: 3, more: false, szx: 2 })], payload: new Uint8Array(0),
    }));
    const small = sent[10]!;
    expect(decodeBlock(getOption(small.options, Opt.BLOCK2)!)).toEqual({ num: 3, more: true, szx: 2 });
    expect(runs).toBe(2);
  });
});

describe('CoapEndpoint: reliability edges', () => {
  it('times out after MAX_RETRANSMIT with exponential backoff', async () => {
    const { clock, ep, sent } = makeSolo({ ackTimeoutMs: 1000, ackRandomFactor: 1.5, maxRetransmit: 4 });
    const start = clock.now();
    const times: number[] = [];
    const t = track(ep.request({ code: Method.GET, options: [] }));
    const origLen = () => sent.length;
    let seenCount = 0;
    await drive(clock, () => {
      while (seenCount < origLen()) { times.push(clock.now() - start); seenCount++; }
      return t.settled;
    });
    expect((t.error as TrickleError).code).toBe('ERR_COAP_TIMEOUT');
    expect(sent).toHaveLength(5);
    expect(new Set(sent.map((m) => m.mid)).size).toBe(1);
    // Gaps double: t0 ∈ [1000, 1500), then ×2 each time.
    const gaps = times.slice(1).map((x, i) => x - times[i]!);
    expect(gaps[0]!).toBeGreaterThanOrEqual(1000);
    expect(gaps[0]!).toBeLessThan(1500);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBeCloseTo(gaps[i - 1]! * 2, 2);
    const total = clock.now() - start;
    expect(total).toBeGreaterThanOrEqual(1000 * 31);
    expect(total).toBeLessThan(1500 * 31);
    expect(ep.stats()).toMatchObject({ retransmissions: 4, timeouts: 1 });
  });

  it('does not count a retransmission timeout while the message is held below (a handshake is under way)', async () => {
    let held = true;
    const { clock, ep, sent } = makeSolo({ ackTimeoutMs: 1000, ackRandomFactor: 1, maxRetransmit: 2, responseTimeoutMs: 60_000, held: () => held });
    const t = track(ep.request({ code: Method.GET, options: [] }));
    await flush();
    expect(sent).toHaveLength(1);
    // Longer than the whole retransmission span (1+2+4 s): nothing is resent, nothing given up.
    clock.advance(12_000);
    await flush();
    expect(t.settled).toBe(false);
    expect(sent).toHaveLength(1);
    expect(ep.stats()).toMatchObject({ retransmissions: 0, timeouts: 0 });
    expect(ep.stats().heldTimeouts).toBeGreaterThanOrEqual(11);
    // The handshake is done: from now on the timer counts, and the request is given up as usual.
    held = false;
    await drive(clock, () => t.settled);
    expect((t.error as TrickleError).code).toBe('ERR_COAP_TIMEOUT');
    expect(sent).toHaveLength(3);
    expect(ep.stats()).toMatchObject({ retransmissions: 2, timeouts: 1 });
  });

  it('uses the ackTimeoutMs function of frame length', async () => {
    const lens: number[] = [];
    const { clock, ep } = makeSolo({ ackTimeoutMs: (len) => { lens.push(len); return 10 * len; }, maxRetransmit: 0, ackRandomFactor: 1 });
    const start = clock.now();
    const t = track(ep.request({ code: Method.GET, options: path('abc') }));
    await drive(clock, () => t.settled);
    const frameLen = 4 + 4 + 4; // header, 4-byte sequence token, Uri-Path "abc"

    expect(lens).toContain(frameLen);
    expect(clock.now() - start).toBe(10 * frameLen);
  });

  it('rejects with ERR_COAP_TIMEOUT when no response comes within responseTimeoutMs', async () => {
    const { clock, a, b } = makeLink();
    b.onRequest(() => new Promise(() => { /* never */ }));
    const start = clock.now();
    const t = track(a.request({ code: Method.GET, options: [] }, { responseTimeoutMs: 45_000 }));
    await drive(clock, () => t.settled);
    expect((t.error as TrickleError).code).toBe('ERR_COAP_TIMEOUT');
    expect(clock.now() - start).toBe(45_000);
  });

  it('rejects with ERR_COAP_RESET on RST', async () => {
    const { clock, ep, sent } = makeSolo();
    const t = track(ep.request({ code: Method.GET, options: [] }));
    await flush();
    ep.receive(encodeMessage({ type: RST, code: EMPTY, mid: sent[0]!.mid, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) }));
    await drive(clock, () => t.settled);
    expect((t.error as TrickleError).code).toBe('ERR_COAP_RESET');
  });

  it('de-duplicates CONs: the handler runs once; the cached reply (or empty ACK) is re-sent', async () => {
    const { clock, ep, sent } = makeSolo({ piggybackWindowMs: 500 });
    let runs = 0;
    let release: (() => void) | undefined;
    ep.onRequest(() => { runs++; return new Promise((resolve) => { release = () => resolve({ code: Response.CONTENT, payload: utf8.encode('ok') }); }); });
    const req = encodeMessage({ type: CON, code: Method.GET, mid: 0x4242, token: Uint8Array.of(1), options: [], payload: new Uint8Array(0) });
    ep.receive(req);
    await flush();
    ep.receive(req);               // within the piggyback window: nothing to re-send yet
    expect(sent).toHaveLength(0);
    clock.advance(500);            // window closes: empty ACK
    expect(sent.map((m) => `${m.type} ${m.code}`)).toEqual([`${ACK} ${EMPTY}`]);
    ep.receive(req);               // duplicate while the handler runs: the empty ACK again
    expect(sent).toHaveLength(2);
    expect(sent[1]!.mid).toBe(0x4242);
    release!();
    await flush();
    expect(sent[2]!.type).toBe(CON); // separate response
    ep.receive(req);               // still only the empty ACK: the response has its own exchange
    expect(sent[3]!.type).toBe(ACK);
    expect(sent[3]!.code).toBe(EMPTY);
    expect(runs).toBe(1);
    expect(ep.stats().duplicates).toBe(3);
    // A piggybacked answer is cached whole.
    ep.onRequest(async () => ({ code: Response.VALID }));
    const req2 = encodeMessage({ type: CON, code: Method.GET, mid: 0x4243, token: Uint8Array.of(2), options: [], payload: new Uint8Array(0) });
    ep.receive(req2);
    await flush();
    ep.receive(req2);
    const n = sent.length;
    expect(toHex(encodeMessage(sent[n - 1]!))).toBe(toHex(encodeMessage(sent[n - 2]!)));
    expect(sent[n - 1]!.code).toBe(Response.VALID);
  });

  it('answers NON requests with NON responses', async () => {
    const { ep, sent } = makeSolo();
    ep.onRequest(async (req) => ({ code: Response.CONTENT, payload: req.payload }));
    ep.receive(encodeMessage({ type: NON, code: Method.GET, mid: 7, token: Uint8Array.of(3), options: [], payload: Uint8Array.of(1) }));
    await flush();
    expect(sent).toHaveLength(1);
    expect(sent[0]!.type).toBe(NON);
    expect(toHex(sent[0]!.token)).toBe('03');
  });

  it('ACKs a separate response that arrives before the lost empty ACK, and stops retransmitting', async () => {
    const { clock, ep, sent } = makeSolo();
    const t = track(ep.request({ code: Method.GET, options: [] }));
    await flush();
    const req = sent[0]!;
    ep.receive(encodeMessage({ type: CON, code: Response.CONTENT, mid: 0x0900, token: req.token, options: [], payload: utf8.encode('x') }));
    await drive(clock, () => t.settled);
    expect(utf8.decode(t.value!.payload)).toBe('x');
    expect(sent.map((m) => `${m.type}:${m.mid}`)).toEqual([`${CON}:${req.mid}`, `${ACK}:${0x0900}`]);
    // The duplicate of that response is ACKed again, not delivered twice.
    ep.receive(encodeMessage({ type: CON, code: Response.CONTENT, mid: 0x0900, token: req.token, options: [], payload: utf8.encode('x') }));
    expect(sent[2]!.type).toBe(ACK);
    expect(sent[2]!.mid).toBe(0x0900);
    expect(ep.stats().duplicates).toBe(1);
    // The request is never retransmitted afterwards.
    clock.advance(600_000);
    expect(sent).toHaveLength(3);
    expect(ep.stats().retransmissions).toBe(0);
  });

  it('answers an unmatched CON response and a CoAP ping with RST', () => {
    const { ep, sent } = makeSolo();
    ep.receive(encodeMessage({ type: CON, code: Response.CONTENT, mid: 77, token: Uint8Array.of(0xee), options: [], payload: new Uint8Array(0) }));
    ep.receive(encodeMessage({ type: CON, code: EMPTY, mid: 78, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) }));
    expect(sent.map((m) => `${m.type}:${m.mid}`)).toEqual([`${RST}:77`, `${RST}:78`]);
    expect(ep.stats().dropped.unmatched).toBe(1);
  });

  it('drops and counts malformed frames, RSTs unparseable CONs, and keeps working', async () => {
    const { clock, a, b, sentByB } = makeLink();
    b.onRequest(async () => ({ code: Response.CONTENT, payload: utf8.encode('still here') }));
    const drops: string[] = [];
    b.onDrop((d) => drops.push(d.reason));
    const garbage = [
      new Uint8Array(0), Uint8Array.of(0x40), Uint8Array.of(0x80, 1, 0, 1), Uint8Array.of(0x49, 1, 0, 2),
      Uint8Array.of(0x40, 1, 0, 3, 0xf1, 0x61), Uint8Array.of(0x40, 1, 0, 4, 0xff), Uint8Array.of(0x41, 0, 0, 5, 0xaa),
      Uint8Array.of(0x60, 0x45, 0x33, 0x33), // ACK for nothing
    ];
    for (const g of garbage) expect(() => b.receive(g)).not.toThrow();
    expect(b.stats().dropped).toEqual({
      ERR_COAP_TRUNCATED: 2, ERR_COAP_VERSION: 1, ERR_COAP_TOKEN_LENGTH: 1, ERR_COAP_OPTION: 1,
      ERR_COAP_PAYLOAD_MARKER: 1, ERR_COAP_FORMAT: 1, unmatched: 1,
    });
    expect(drops).toHaveLength(8);
    // RST for the CONs whose header was readable: mids 2, 3, 4, 5 (not the version-2 frame).
    expect(sentByB.map((f) => decodeMessage(f)).map((m) => `${m.type}:${m.mid}`)).toEqual([`${RST}:2`, `${RST}:3`, `${RST}:4`, `${RST}:5`]);
    const t = track(a.request({ code: Method.GET, options: [] }));
    await drive(clock, () => t.settled);
    expect(utf8.decode(t.value!.payload)).toBe('still here');
  });

  it('survives random garbage without throwing', () => {
    const { ep } = makeSolo();
    const r = prng(123);
    for (let i = 0; i < 5000; i++) {
      const f = Uint8Array.from({ length: Math.floor(r() * 40) }, () => Math.floor(r() * 256));
      if (r() < 0.5 && f.length > 0) f[0] = 0x40 | (f[0]! & 0x3f);
      ep.receive(f);
    }
    expect(ep.stats().received).toBe(5000);
  });

  it('rejects a request whose options alone overflow the frame', async () => {
    const { ep } = makeSolo();
    await expect(ep.request({ code: Method.GET, options: [{ number: Opt.URI_PATH, value: new Uint8Array(300) }] }))
      .rejects.toMatchObject({ code: 'ERR_COAP_TOO_LARGE' });
  });

  it('close() rejects pending requests, cancels every timer, and refuses new work', async () => {
    const { clock, ep } = makeSolo();
    ep.onRequest(() => new Promise(() => {}));
    const t = track(ep.request({ code: Method.GET, options: [] }));
    ep.receive(encodeMessage({ type: CON, code: Method.GET, mid: 1, token: Uint8Array.of(1), options: [], payload: new Uint8Array(0) }));
    await flush();
    expect(clock.pending).toBeGreaterThan(0);
    ep.close();
    await flush();
    expect((t.error as TrickleError).code).toBe('ERR_COAP_CLOSED');
    expect(clock.pending).toBe(0);
    await expect(ep.request({ code: Method.GET, options: [] })).rejects.toMatchObject({ code: 'ERR_COAP_CLOSED' });
    expect(() => ep.receive(Uint8Array.of(1, 2, 3))).not.toThrow();
  });

  it('rejects bad configuration with a clear ConfigError', () => {
    const clock = new FakeClock();
    const base = { clock, randomBytes: randomBytesFrom(prng(1)), send: () => {}, maxFrameLen: 255, ackTimeoutMs: 1000 };
    expect(() => new CoapEndpoint({ ...base, maxFrameLen: 10 })).toThrow(/maxFrameLen/);
    expect(() => new CoapEndpoint({ ...base, tokenMode: 'random', tokenLength: 9 })).toThrow(/tokenLength/);
    expect(() => new CoapEndpoint({ ...base, tokenMode: 'counter' as never })).toThrow(/tokenMode/);
    expect(() => new CoapEndpoint({ ...base, sequenceStart: 2 ** 32 })).toThrow(/sequenceStart/);
    expect(() => new CoapEndpoint({ ...base, ackTimeoutMs: -1 })).toThrow(/ackTimeoutMs/);
  });
});

describe('CoapEndpoint: sequence tokens and the compact codec', () => {
  it('numbers requests: token = 4-byte S of the first message, strictly increasing, resumable', async () => {
    const { clock, a, b, sentByA } = makeLinkWith({ codec: 'compact', a: { sequenceStart: 41 } });
    b.onRequest(async (req) => ({ code: Response.CONTENT, payload: req.payload.length > 200 ? Uint8Array.of(1) : bytesOf(400) }));
    expect(a.nextSequence).toBe(41);
    const t1 = track(a.request({ code: Method.GET, options: path('7') }));          // Block2 answer: follow-ups reuse the token
    const t2 = track(a.request({ code: Method.PUT, options: path('x'), payload: bytesOf(300) })); // Block1
    const t3 = track(a.request({ code: Method.GET, options: path('7') }));
    await drive(clock, () => t1.settled && t2.settled && t3.settled);
    const cons = sentByA.map(decodeMessage).filter((m) => m.type === CON);
    const seqs = cons.map((m) => tokenSequence(m.token)!);
    const firsts = [...new Set(seqs)];
    expect(firsts).toEqual([41, 42, 43]);
    // Each request's token is the sequence number of its first message; mids follow the sequence.
    for (const s of firsts) expect(cons.find((m) => tokenSequence(m.token) === s)!.mid).toBe(s);
    expect(cons.map((m) => m.mid)).toEqual(cons.map((_, i) => 41 + i));
    expect(a.nextSequence).toBe(41 + cons.length);
    // A fresh endpoint resumed from nextSequence never reuses a token.
    const resumed = makeLinkWith({ codec: 'compact', a: { sequenceStart: a.nextSequence } });
    resumed.b.onRequest(async () => ({ code: Response.CONTENT }));
    const t4 = track(resumed.a.request({ code: Method.GET, options: path('7') }));
    await drive(resumed.clock, () => t4.settled);
    expect(tokenSequence(decodeMessage(resumed.sentByA[0]!).token)).toBe(41 + cons.length);
  });

  it('carries "send Hello World" in 14 bytes and its event id in 34 (compact), 44 + 44 as RFC 7252', async () => {
    const { clock, a, b, airA, airB, sentByA, sentByB } = makeLinkWith({ codec: 'compact' });
    // Warm up: the first exchange of a session is no different, but a second shows the steady state.
    b.onRequest(async () => ({ code: Response.CONTENT, options: [uintOption(Opt.CONTENT_FORMAT, 65001)], payload: bytesOf(32) }));
    const send = () => a.request({
      code: Method.PUT,
      options: [...path('9', '~3', 'm.room.message'), uintOption(Opt.CONTENT_FORMAT, 65000)],
      payload: utf8.encode('Hello World'),
    });
    for (let i = 0; i < 2; i++) {
      const t = track(send());
      await drive(clock, () => t.settled);
      expect(t.value!.code).toBe(Response.CONTENT);
    }
    expect(airA).toEqual([14, 14]);
    expect(airB).toEqual([34, 34]);
    expect(sentByA.map((f) => f.length)).toEqual([44, 44]);
    expect(sentByB.map((f) => f.length)).toEqual([44, 44]);
  });

  it('a slow handler costs a 2-byte empty ACK, a separate response with a 3-byte header, and a 2-byte ACK', async () => {
    const { clock, a, b, airA, airB } = makeLinkWith({ codec: 'compact' });
    b.onRequest(() => new Promise((resolve) => clock.setTimer(30_000, () => resolve({
      code: Response.CONTENT, options: [uintOption(Opt.CONTENT_FORMAT, 60)], payload: bytesOf(40),
    }))));
    const t = track(a.request({ code: Method.GET, options: [...path('7'), stringOption(Opt.URI_QUERY, 'since=~7'), stringOption(Opt.URI_QUERY, 'timeout=30000')] }));
    await drive(clock, () => t.settled);
    expect(t.value!.payload).toHaveLength(40);
    expect(airA).toEqual([6, 2]);       // sync request, ACK of the separate response
    expect(airB).toEqual([2, 4 + 40]);  // empty ACK, separate CON 2.05 (rule + S + token LSBs + CBOR)
  });
});
