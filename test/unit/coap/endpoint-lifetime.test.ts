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
async function carry(link: ReturnType<typeof memoryPipe>, total: number, batch: number, first = 0) {
  const runs = new Uint8Array(total);
  const order: number[] = [];
  link.b.onRequest(async (req) => {
    const n = readU32(req.payload) - first;
    runs[n]!++;
    order.push(n);
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
});
