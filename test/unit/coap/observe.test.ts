import { describe, expect, it } from 'vitest';
import { FakeClock, drive, flush } from '../../helpers/fake-clock.ts';
import type { TrickleError } from '../../../src/errors.ts';
import type { RandomBytes } from '../../../src/util/clock.ts';
import { toHex, utf8 } from '../../../src/util/bytes.ts';
import {
  CoapEndpoint, type CoapEndpointOptions, type CoapResponse, type IncomingRequest, type ObservationEnd,
} from '../../../src/coap/endpoint.ts';
import {
  decodeMessage, encodeMessage, getOption, getUintOption, stringOption, uintOption, type CoapMessage, type WireCodec,
} from '../../../src/coap/message.ts';
import { decodeBlock } from '../../../src/coap/block.ts';
import { ACK, CON, EMPTY, Method, Opt, RST, Response, ContentFormat } from '../../../src/coap/numbers.ts';
import { compactRuleFor, compactWireCodec, createCompactContext, type CompactContext } from '../../../src/coap/compact.ts';
import { isFresh, nextObserveValue, observeNewer, parseObservationRecords } from '../../../src/coap/observe.ts';
import { mulberry32 as prng } from '../../helpers/prng.ts';

type CodecName = 'rfc7252' | 'compact';
const CODECS: readonly CodecName[] = ['rfc7252', 'compact'];
type Side = 'A' | 'B';
type EpOpts = Partial<Omit<CoapEndpointOptions, 'clock' | 'randomBytes' | 'send' | 'wireCodec' | 'sequenceStart'>>;

const randomBytesFrom = (rng: () => number): RandomBytes => (n) => Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));

/** Run every timer there is (nothing left in flight). */
async function settle(clock: FakeClock, maxVirtualMs = 48 * 3600_000): Promise<void> {
  const start = clock.now();
  await flush();
  while (clock.step()) {
    await flush();
    if (clock.now() - start > maxVirtualMs) throw new Error('did not settle');
  }
}

interface AirFrame { len: number; msg: CoapMessage }

/**
 * Host (A, client) and gateway (B, server) on one FakeClock, joined by a lossy channel
 * with latency. Either side can restart: its endpoint is closed and a new one built with
 * what radio-stack.ts persists (nextSequence and the compact LSB state); frames on the
 * air reach whichever endpoint is current when they land.
 */
function makeHarness(o: { codec: CodecName; seed?: number; loss?: number; latencyMs?: number; common?: EpOpts; maxFrameLen?: number }) {
  const clock = new FakeClock();
  const seed = o.seed ?? 1;
  const rng = prng(seed);
  const loss: Record<Side, number> = { A: o.loss ?? 0, B: o.loss ?? 0 };
  const latencyMs = o.latencyMs ?? 100;
  const air: Record<Side, AirFrame[]> = { A: [], B: [] };
  const eps = {} as Record<Side, CoapEndpoint>;
  const ctxs = {} as Record<Side, CompactContext | undefined>;
  let builds = 0;
  const build = (side: Side, resume?: { nextSequence: number; compact: CompactContext | undefined }): CoapEndpoint => {
    let codec: WireCodec;
    if (o.codec === 'compact') {
      const ctx = createCompactContext();
      const r = resume?.compact;
      if (r) { ctx.tx.hi = r.tx.hi; ctx.tx.lo = r.tx.lo; ctx.tx.tokenHi = r.tx.tokenHi; ctx.rx.ref = r.rx.ref; ctx.rx.tokenHi = r.rx.tokenHi; }
      ctxs[side] = ctx;
      const inner = compactWireCodec(ctx);
      codec = {
        encode: (m) => { const f = inner.encode(m); air[side].push({ len: f.length, msg: m }); return f; },
        decode: (f) => inner.decode(f),
        sizeBound: (m) => inner.sizeBound!(m),
      };
    } else {
      codec = {
        encode: (m) => { const f = encodeMessage(m); air[side].push({ len: f.length, msg: m }); return f; },
        decode: decodeMessage,
        sizeBound: (m) => encodeMessage(m).length,
      };
    }
    const other: Side = side === 'A' ? 'B' : 'A';
    const ep = new CoapEndpoint({
      clock, randomBytes: randomBytesFrom(prng(seed * 31 + builds++)), maxFrameLen: o.maxFrameLen ?? 255,
      ackTimeoutMs: 2000, piggybackWindowMs: 500, wireCodec: codec, ...o.common,
      ...(resume ? { sequenceStart: resume.nextSequence } : {}),
      send: (frame) => {
        if (rng() < loss[side]) return;
        const copy = frame.slice();
        clock.setTimer(latencyMs, () => eps[other].receive(copy));
      },
    });
    eps[side] = ep;
    return ep;
  };
  build('A');
  build('B');
  return {
    clock, air, loss,
    get a(): CoapEndpoint { return eps.A; },
    get b(): CoapEndpoint { return eps.B; },
    /** Close the side's endpoint and build a new one from its persisted session state. */
    restart(side: Side, resumeSession = true): CoapEndpoint {
      const old = eps[side];
      const state = { nextSequence: old.nextSequence, compact: ctxs[side] };
      old.close();
      return build(side, resumeSession ? state : undefined);
    },
  };
}

const path = (...segments: string[]) => segments.map((s) => stringOption(Opt.URI_PATH, s));
const cbor = uintOption(Opt.CONTENT_FORMAT, ContentFormat.CBOR);
/** A notification body: its id in the first two bytes, padded to `len` bytes. */
const body = (id: number, len = 8): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (i === 0 ? id >> 8 : i === 1 ? id & 0xff : (id * 7 + i) & 0xff));
const idOf = (p: Uint8Array): number => (p[0]! << 8) | p[1]!;

interface Got { id: number; seq: number; len: number }

/** Gateway handler: accepts registrations on /7 with a first response `firstLen` bytes long. */
function acceptObservations(seen: IncomingRequest[] = [], firstLen = 8) {
  return async (req: IncomingRequest) => {
    seen.push(req);
    if (req.observe === 0) return { code: Response.CONTENT, options: [cbor], payload: body(0xffff, firstLen), observe: true };
    return { code: Response.CONTENT, options: [cbor], payload: utf8.encode('plain') };
  };
}

describe.each(CODECS)('Observe over a lossy link (%s on the channel)', (codec) => {
  it.each([42, 7])('delivers 200 notifications over 30 percent loss each way exactly once and in order (seed %i)', async (seed) => {
    const h = makeHarness({ codec, seed, loss: 0.3 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    const o = h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: res.payload.length }));
    // The lead: retry a failed notification a while later (the default MAX_RETRANSMIT = 4
    // fails ~3.5 % of notifications at this loss); the registration is never dropped.
    const failed: number[] = [];
    h.b.onNotificationFailed((_t, res) => { failed.push(idOf(res.payload)); h.clock.setTimer(20_000, () => h.b.retryNotifications()); });
    const delivered: number[] = [];
    h.b.onNotificationDelivered((_t, res) => delivered.push(idOf(res.payload)));
    await drive(h.clock, () => got.length === 1);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.observe).toBe(0);
    expect(seen[0]!.options.map((x) => x.number)).toEqual([Opt.URI_PATH]); // Observe is surfaced, not passed on
    const token = seen[0]!.token;
    expect(toHex(token)).toBe(toHex(o.token));
    for (let i = 0; i < 200; i++) {
      // Bursts of four: notifications queue behind the one in flight.
      h.clock.setTimer(Math.floor(i / 4) * 6000 + (i % 4) * 10, () => {
        expect(h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i) })).toBe(true);
      });
    }
    await drive(h.clock, () => got.length === 201);
    await settle(h.clock);
    expect(got[0]!.id).toBe(0xffff);
    expect(got.slice(1).map((g) => g.id)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    for (let i = 1; i < got.length; i++) expect(observeNewer(got[i - 1]!.seq, got[i]!.seq)).toBe(true);
    expect(delivered).toEqual([0xffff, ...Array.from({ length: 200 }, (_, i) => i)]);
    // Loss did happen, and it was repaired below the caller.
    expect(h.b.stats().retransmissions).toBeGreaterThan(50);
    expect(h.a.stats().duplicates).toBeGreaterThan(10);
    expect(failed.length).toBeGreaterThan(0);
    expect(h.a.stats().notifications).toBe(201);
    expect(h.b.observations()).toEqual([expect.objectContaining({ tokenHex: toHex(token), queued: 0, inFlight: false, stalled: false })]);
  });

  it('carries notifications larger than one frame (Block2 with the registration token), in order, over loss', async () => {
    const h = makeHarness({ codec, seed: 9, loss: 0.15, common: { maxRetransmit: 8 } });
    const seen: IncomingRequest[] = [];
    let runs = 0;
    h.b.onRequest(async (req) => { runs++; return acceptObservations(seen, 700)(req); });
    const got: Got[] = [];
    const errors: TrickleError[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: res.payload.length }),
      { onError: (e) => errors.push(e) });
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    const sizes = [40, 1000, 3, 600, 255, 2000, 10];
    sizes.forEach((n, i) => h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i, n) }));
    await drive(h.clock, () => got.length === 1 + sizes.length);
    await settle(h.clock);
    expect(got.map((g) => g.len)).toEqual([700, ...sizes]);
    expect(got.map((g) => g.id)).toEqual([0xffff, ...sizes.map((_, i) => i)]);
    got.forEach((g, i) => { if (i > 0) expect(observeNewer(got[i - 1]!.seq, g.seq)).toBe(true); });
    expect(runs).toBe(1); // Block2 follow-ups are served from the cache, never by the handler
    expect(errors).toEqual([]);
    for (const f of [...h.air.A, ...h.air.B]) expect(f.len).toBeLessThanOrEqual(255);
    // The follow-ups use the registration token, carry no Observe, and ask for NUM ≥ 1.
    const followUps = h.air.A.map((f) => f.msg).filter((m) => m.type === CON && getOption(m.options, Opt.BLOCK2));
    expect(followUps.length).toBeGreaterThan(10);
    for (const m of followUps) {
      expect(toHex(m.token)).toBe(toHex(token));
      expect(getOption(m.options, Opt.OBSERVE)).toBeUndefined();
      expect(decodeBlock(getOption(m.options, Opt.BLOCK2)!).num).toBeGreaterThan(0);
    }
  });

  it('keeps the observation across a restart of the client (token and sequence persisted, resumeObservation)', async () => {
    const h = makeHarness({ codec, seed: 3 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    const o = h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    for (let i = 0; i < 5; i++) h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i) });
    await drive(h.clock, () => got.length === 6);
    // What the host persisted: the token and the last sequence delivered.
    const persisted = { token: toHex(o.token), lastSequence: got[got.length - 1]!.seq };
    const a2 = h.restart('A');
    // While the host is down, the gateway keeps pushing: the frames meet the new endpoint.
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(5) });
    const got2: Got[] = [];
    a2.resumeObservation(persisted.token, (res, seq) => got2.push({ id: idOf(res.payload), seq, len: 0 }),
      { request: { code: Method.GET, options: path('7') }, lastSequence: persisted.lastSequence });
    for (let i = 6; i < 10; i++) h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i) });
    await drive(h.clock, () => got2.length === 5);
    await settle(h.clock);
    expect(got2.map((g) => g.id)).toEqual([5, 6, 7, 8, 9]);
    expect(observeNewer(persisted.lastSequence, got2[0]!.seq)).toBe(true);
    expect(a2.stats().dropped.unmatched ?? 0).toBe(0);
  });

  it('keeps the observation across a restart of the gateway (exportObservations / importObservations)', async () => {
    const h = makeHarness({ codec, seed: 4 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    for (let i = 0; i < 5; i++) h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i) });
    await drive(h.clock, () => got.length === 6);
    const saved = JSON.parse(JSON.stringify(h.b.exportObservations())) as unknown;
    expect(saved).toEqual([{ token: toHex(token), sequence: got[5]!.seq }]);
    const b2 = h.restart('B');
    b2.onRequest(acceptObservations(seen));
    expect(b2.notify(token, { code: Response.CONTENT, payload: body(99) })).toBe(false); // not imported yet
    b2.importObservations(parseObservationRecords(saved));
    for (let i = 5; i < 10; i++) expect(b2.notify(toHex(token), { code: Response.CONTENT, options: [cbor], payload: body(i) })).toBe(true);
    await drive(h.clock, () => got.length === 11);
    await settle(h.clock);
    expect(got.map((g) => g.id)).toEqual([0xffff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (let i = 1; i < got.length; i++) expect(observeNewer(got[i - 1]!.seq, got[i]!.seq)).toBe(true);
    expect(h.a.stats().staleNotifications).toBe(0);
  });

  it('answers a notification for a token it does not know (not resumed after a restart) with RST, which ends the registration', async () => {
    const h = makeHarness({ codec, seed: 6 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    const ended: string[] = [];
    h.b.onObservationEnded((t, reason) => ended.push(`${toHex(t)}:${reason}`));
    const a2 = h.restart('A'); // the host forgot the observation
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(1) });
    await settle(h.clock);
    expect(ended).toEqual([`${toHex(token)}:reset`]);
    expect(h.b.observations()).toEqual([]);
    expect(h.air.A.filter((f) => f.msg.type === RST)).toHaveLength(1);
    expect(a2.stats().dropped.unmatched).toBe(1);
    expect(h.b.notify(token, { code: Response.CONTENT, payload: body(2) })).toBe(false);
  });

  it('cancel() deregisters with Observe = 1; the server stops, later notify() is refused', async () => {
    const h = makeHarness({ codec, seed: 8 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    const o = h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    const ended: string[] = [];
    h.b.onObservationEnded((_t, reason) => ended.push(reason));
    const token = seen[0]!.token;
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(1) });
    await drive(h.clock, () => got.length === 2);
    let cancelled = false;
    void o.cancel().then(() => { cancelled = true; });
    await drive(h.clock, () => cancelled);
    expect(seen).toHaveLength(2);
    expect(seen[1]!.observe).toBe(1);
    expect(toHex(seen[1]!.token)).toBe(toHex(token));
    expect(seen[1]!.options.map((x) => x.number)).toEqual([Opt.URI_PATH]);
    expect(ended).toEqual(['deregistered']);
    expect(h.b.notify(token, { code: Response.CONTENT, payload: body(2) })).toBe(false);
    await settle(h.clock);
    expect(got.map((g) => g.id)).toEqual([0xffff, 1]);
  });

  it('reports a notification the client never ACKs, keeps the registration, merges what queues, and resumes when the peer is heard', async () => {
    const h = makeHarness({ codec, seed: 10 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: res.payload.length }));
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    const failed: number[] = [];
    h.b.onNotificationFailed((t, res) => { expect(toHex(t)).toBe(toHex(token)); failed.push(idOf(res.payload)); });
    h.loss.B = 1; // the field kit is out of range
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(1) });
    await settle(h.clock);
    expect(failed).toEqual([1]);
    expect(h.b.observations()).toEqual([expect.objectContaining({ stalled: true, inFlight: true, queued: 0 })]);
    // Deltas pile up meanwhile; the lead merges them (here: keep ids, concatenate).
    const merge = (older: CoapResponse, newer: CoapResponse) => ({ code: Response.CONTENT, options: [cbor], payload: new Uint8Array([...older.payload, ...newer.payload]) });
    for (let i = 2; i <= 4; i++) h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i, 2) }, { merge });
    expect(h.b.observations()[0]!.queued).toBe(1);
    h.loss.B = 0;
    // The kit comes back and sends anything: the gateway hears it and re-sends.
    h.b.onRequest(async () => ({ code: Response.CHANGED }));
    void h.a.request({ code: Method.POST, options: path('x') });
    await settle(h.clock);
    expect(got.map((g) => g.id)).toEqual([0xffff, 1, 2]);
    expect(got[2]!.len).toBe(6); // the three queued deltas, merged into one notification
    expect(h.b.observations()).toEqual([expect.objectContaining({ stalled: false, inFlight: false, queued: 0 })]);
  });

  it('acknowledges a notification only after the handler ran; a refused one gets RST, which ends the registration on both sides', async () => {
    const h = makeHarness({ codec, seed: 14 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: number[] = [];
    const acksAtHandler: number[] = [];
    const ends: ObservationEnd[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res) => {
      const id = idOf(res.payload);
      got.push(id);
      acksAtHandler.push(h.air.A.filter((f) => f.msg.type === ACK).length);
      return id !== 2; // refuse notification 2
    }, { onEnd: (e) => ends.push(e) });
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    const ended: string[] = [];
    h.b.onObservationEnded((_t, reason) => ended.push(reason));
    const delivered: number[] = [];
    h.b.onNotificationDelivered((_t, res) => delivered.push(idOf(res.payload)));
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(1) });
    await drive(h.clock, () => delivered.includes(1));
    const acksBefore = h.air.A.filter((f) => f.msg.type === ACK).length;
    expect(acksAtHandler[1]).toBe(acksBefore - 1); // the handler ran before its ACK went out
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(2) });
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(3) });
    await settle(h.clock);
    expect(got).toEqual([0xffff, 1, 2]);
    expect(delivered.filter((x) => x !== 0xffff)).toEqual([1]); // 2 was refused: never counted as delivered, 3 never sent
    expect(ended).toEqual(['reset']);
    expect(ends.map((e) => e.reason)).toEqual(['refused']);
    expect(h.a.stats().notifications).toBe(3);
  });

  it('ends the observation on a final (non-2.xx) notification and when the server does not register', async () => {
    const h = makeHarness({ codec, seed: 12 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(async (req) => {
      seen.push(req);
      if (utf8.decode(getOption(req.options, Opt.URI_PATH)!) === 'no') return { code: Response.CONTENT, options: [cbor], payload: body(7) };
      return { code: Response.CONTENT, options: [cbor], payload: body(0), observe: true };
    });
    const ends: ObservationEnd[] = [];
    const got: Got[] = [];
    const refused = h.a.observe({ code: Method.GET, options: path('no') }, () => { throw new Error('not an observation'); }, { onEnd: (e) => ends.push(e) });
    let first: CoapResponse | undefined;
    void refused.first.then((r) => { first = r; });
    await drive(h.clock, () => first !== undefined);
    expect(idOf(first!.payload)).toBe(7);
    expect(ends).toEqual([expect.objectContaining({ reason: 'not-registered' })]);
    expect(h.b.observations()).toEqual([]);
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }), { onEnd: (e) => ends.push(e) });
    await drive(h.clock, () => got.length === 1);
    const token = seen[1]!.token;
    h.b.notify(token, { code: Response.NOT_FOUND, options: [cbor], payload: body(404) });
    await settle(h.clock);
    expect(ends[1]).toMatchObject({ reason: 'ended-by-server', response: { code: Response.NOT_FOUND } });
    expect(h.b.observations()).toEqual([]);
    expect(got).toHaveLength(1);
  });
});

describe('Observe: the compact form of a notification (budget)', () => {
  it('costs 4 header bytes for a CON notification with a 40-byte CBOR payload, and 2 for its ACK', async () => {
    const h = makeHarness({ codec: 'compact' });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen, 40));
    const got: Got[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    const token = seen[0]!.token;
    for (let i = 0; i < 3; i++) {
      h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(i, 40) });
      await drive(h.clock, () => got.length === 2 + i);
    }
    await settle(h.clock);
    const notifications = h.air.B.filter((f) => f.msg.type === CON);
    const acks = h.air.A.filter((f) => f.msg.type === ACK);
    // First response (separate CON after a 2-byte empty ACK), then three notifications.
    expect(notifications.map((f) => compactRuleFor(f.msg).name)).toEqual(Array(4).fill('notify-cbor'));
    expect(notifications.map((f) => f.len)).toEqual([44, 44, 44, 44]);
    expect(acks.map((f) => f.len)).toEqual([2, 2, 2, 2]);
    expect(h.air.B.filter((f) => f.msg.type === ACK).map((f) => f.len)).toEqual([2]);
    // Their RFC 7252 expansion: 4 header + 4 token + Observe (1–3) + Content-Format (2) + marker + 40.
    for (const f of notifications) {
      const len = encodeMessage(f.msg).length;
      expect(len).toBeGreaterThanOrEqual(4 + 4 + 1 + 2 + 1 + 40);
      expect(getUintOption(f.msg.options, Opt.OBSERVE)).toBe(f.msg.mid); // S mod 2^24; here S < 2^16
    }
  });
});

describe('Observe: client freshness and tokens (RFC 7252 frames injected)', () => {
  function solo(opts: EpOpts = {}) {
    const clock = new FakeClock();
    const sent: CoapMessage[] = [];
    const ep = new CoapEndpoint({
      clock, randomBytes: randomBytesFrom(prng(7)), send: (f) => sent.push(decodeMessage(f)),
      maxFrameLen: 255, ackTimeoutMs: 2000, piggybackWindowMs: 500, ...opts,
    });
    return { clock, ep, sent };
  }
  const notification = (token: Uint8Array, mid: number, seq: number | undefined, payload = Uint8Array.of(mid & 0xff)): Uint8Array => encodeMessage({
    type: CON, code: Response.CONTENT, mid, token,
    options: seq === undefined ? [] : [uintOption(Opt.OBSERVE, seq)], payload,
  });

  async function registered(opts: EpOpts = {}) {
    const s = solo(opts);
    const got: number[] = [];
    const o = s.ep.observe({ code: Method.GET, options: path('7') }, (_res, seq) => got.push(seq));
    await flush();
    const req = s.sent[0]!;
    expect(getUintOption(req.options, Opt.OBSERVE)).toBe(0);
    s.ep.receive(encodeMessage({ type: ACK, code: EMPTY, mid: req.mid, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) }));
    s.ep.receive(notification(req.token, 0x500, 100));
    await o.first;
    return { ...s, got, token: req.token, o };
  }

  it('discards stale and reordered notifications (24-bit serial arithmetic), ACKing each CON', async () => {
    const { ep, sent, got, token } = await registered();
    // 102 after 103: reordered; 103 again: a re-send; 2^23 + 104 and 2^24 − 1 are more than
    // 2^23 ahead of the last, which §3.4 reads as behind.
    const values = [101, 103, 102, 103, 100 + 2 ** 23 + 4, 104, 2 ** 24 - 1];
    values.forEach((v, i) => ep.receive(notification(token, 0x600 + i, v)));
    expect(got).toEqual([100, 101, 103, 104]);
    expect(ep.stats().staleNotifications).toBe(4);
    // Steps just under 2^23 are fresh, and so is the wrap past 2^24.
    const later = [104 + 2 ** 23 - 1, 16_777_000, 3];
    later.forEach((v, i) => ep.receive(notification(token, 0x700 + i, v)));
    expect(got).toEqual([100, 101, 103, 104, ...later]);
    const acks = sent.filter((m) => m.type === ACK && m.mid >= 0x600);
    expect(acks).toHaveLength(values.length + later.length);
  });

  it('applies the RFC 7641 time rule only when observeFreshnessMs is set', async () => {
    const { clock, ep, got, token } = await registered({ observeFreshnessMs: 128_000 });
    clock.advance(129_000);
    ep.receive(notification(token, 0x600, 50)); // older value, but more than 128 s later: accepted
    expect(got).toEqual([100, 50]);
    const d = await registered();
    d.clock.advance(3_600_000);
    d.ep.receive(notification(d.token, 0x600, 50));
    expect(d.got).toEqual([100]);
  });

  it('RSTs a notification for an unknown token, and delivers it once resumeObservation() re-attached the token', () => {
    const { ep, sent } = solo();
    const token = Uint8Array.of(0, 0, 0, 42);
    ep.receive(notification(token, 0x10, 7));
    expect(sent.map((m) => `${m.type}:${m.mid}`)).toEqual([`${RST}:${0x10}`]);
    const got: number[] = [];
    ep.resumeObservation(token, (_r, seq) => got.push(seq), { lastSequence: 7 });
    ep.receive(notification(token, 0x11, 7));  // what it had before the restart: stale
    ep.receive(notification(token, 0x12, 8));
    expect(got).toEqual([8]);
    expect(sent.slice(1).map((m) => `${m.type}:${m.mid}`)).toEqual([`${ACK}:${0x11}`, `${ACK}:${0x12}`]);
    expect(() => ep.resumeObservation(token, () => {}, { lastSequence: 2 ** 24 })).toThrow(/lastSequence/);
  });

  it('RSTs a notification that overtakes its deregistration', async () => {
    const { ep, sent, token, o } = await registered();
    void o.cancel();
    await flush();
    const dereg = sent[sent.length - 1]!;
    expect(dereg.type).toBe(CON);
    expect(getUintOption(dereg.options, Opt.OBSERVE)).toBe(1);
    expect(toHex(dereg.token)).toBe(toHex(token));
    ep.receive(notification(token, 0x900, 120));
    expect(sent[sent.length - 1]).toMatchObject({ type: RST, mid: 0x900 });
  });
});

describe('Observe: server details', () => {
  it('sends the first response as a separate CON and numbers notifications S mod 2^24, or last + 1 when S went back', async () => {
    const h = makeHarness({ codec: 'rfc7252', seed: 2 });
    const seen: IncomingRequest[] = [];
    h.b.onRequest(acceptObservations(seen));
    const got: Got[] = [];
    h.a.observe({ code: Method.GET, options: path('7') }, (res, seq) => got.push({ id: idOf(res.payload), seq, len: 0 }));
    await drive(h.clock, () => got.length === 1);
    expect(h.air.B.map((f) => `${f.msg.type}:${f.msg.code}`)).toEqual([`${ACK}:${EMPTY}`, `${CON}:${Response.CONTENT}`]);
    const token = seen[0]!.token;
    h.b.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(1) });
    await drive(h.clock, () => got.length === 2);
    const saved = h.b.exportObservations();
    // A gateway that lost its session (sequence numbers start over) but kept the registrations.
    const b2 = h.restart('B', false);
    // (Its Message IDs start over too: wait out EXCHANGE_LIFETIME, as RFC 7252 §4.4 asks.)
    h.clock.advance(200_000);
    b2.importObservations(saved);
    b2.notify(token, { code: Response.CONTENT, options: [cbor], payload: body(2) });
    await drive(h.clock, () => got.length === 3);
    expect(got[2]!.seq).toBe(got[1]!.seq + 1);
    expect(nextObserveValue(5, 3)).toBe(6);
    expect(nextObserveValue(5, 9)).toBe(9);
    expect(nextObserveValue(2 ** 24 - 1, undefined)).toBe(0);
    expect(isFresh(undefined, 0, 0, Infinity)).toBe(true);
  });

  it('validates imported records', () => {
    expect(() => parseObservationRecords([{ token: 'XYZ', sequence: 1 }])).toThrow(/token/);
    expect(() => parseObservationRecords([{ token: '0a0b', sequence: 2 ** 24 }])).toThrow(/sequence/);
    expect(() => parseObservationRecords({})).toThrow(/array/);
    expect(parseObservationRecords([{ token: '0a0b', sequence: null }])).toEqual([{ token: '0a0b', sequence: null }]);
  });
});
