import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';
import { resolveChannel } from '../../../src/scheduler/regions.ts';
import { DutyCycleError, TxQueue, coapAckTimeoutMs, type Priority, type SentReceipt } from '../../../src/scheduler/tx-queue.ts';
import { unpackFrame } from '../../../src/scheduler/packing.ts';
import { isTrickleError } from '../../../src/errors.ts';

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const EU1 = resolveChannel('eu868', 868_100_000, 125_000).rules;
const air = (n: number): number => loraAirtimeMs({ payloadBytes: n, sf: 9, bandwidthHz: 125_000, codingRate: 5 });

function setup(opts: { rules?: typeof EU1; packing?: boolean } = {}) {
  const clock = new FakeClock();
  const sent: { atMs: number; frame: Uint8Array }[] = [];
  const q = new TxQueue({
    clock, rules: opts.rules ?? EU1, maxFrameLen: 255, frameAirtimeMs: air,
    ...(opts.packing === undefined ? {} : { packing: opts.packing }),
    transmit: async (frame) => { sent.push({ atMs: clock.now(), frame }); },
  });
  /** Spend the whole hourly budget right now (a frame as long as the budget, recorded as sent). */
  const exhaust = (): void => { q.ledger.record(clock.now(), 36_000); };
  /** Run timers until `until`, letting promise callbacks run in between. */
  const run = async (until: number): Promise<void> => {
    for (;;) {
      await settle();
      const before = clock.now();
      clock.runUntil(Math.min(until, before)); // fire anything due now
      await settle();
      if (!clock.step() || clock.now() > until) { clock.runUntil(until); await settle(); return; }
    }
  };
  return { clock, q, sent, exhaust, run };
}

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

describe('TxQueue: priority under a full budget', () => {
  it('a control message (ACK) enqueued after bulk goes first when the budget frees', async () => {
    const { clock, q, sent, exhaust, run } = setup({ packing: false });
    const t0 = clock.now();
    exhaust();
    const order: Priority[] = [];
    const track = (p: Priority) => (r: SentReceipt) => { order.push(p); return r; };
    const bulk = q.enqueue(bytes(40, 0xb), { priority: 'bulk', peer: 'x' }).then(track('bulk'));
    const sync = q.enqueue(bytes(40, 0x5), { priority: 'sync', peer: 'y' }).then(track('sync'));
    await settle();
    const ack = q.enqueue(bytes(4, 0xa), { priority: 'control', peer: 'z' }).then(track('control'));
    await run(t0 + 3 * 3_600_000);
    await Promise.all([bulk, sync, ack]);
    expect(order).toEqual(['control', 'sync', 'bulk']);
    expect(sent[0]!.frame[0]).toBe(0xa);
    // the ACK went at the first millisecond the law allowed it
    const r = await ack;
    expect(r.sentAtMs - t0).toBe(3_600_000); // the 36 s burst at t0 must slide out by air(4) ms: window [t+a−H, t+a)
  });

  it('bulk never takes more than half the hourly budget, even alone', async () => {
    const { clock, q, run } = setup({ packing: false });
    const t0 = clock.now();
    const all: Promise<SentReceipt>[] = [];
    for (let i = 0; i < 200; i++) all.push(q.enqueue(bytes(200), { priority: 'bulk' }));
    await run(t0 + 3_600_000 - 1);
    const used = q.status().subBands[0]!.airtimeUsedLastHourMs;
    expect(used).toBeLessThanOrEqual(18_000);
    expect(used).toBeGreaterThan(18_000 - air(201));
    q.close();
    await Promise.allSettled(all);
  });
});

describe('TxQueue: deadlines and ERR_DUTY_CYCLE', () => {
  it('rejects at once with a correct retryAfterMs when the ledger alone rules the deadline out', async () => {
    const { clock, q, run } = setup();
    exhaust(q, clock.now());
    let err: unknown;
    try { await q.enqueue(bytes(20), { priority: 'interactive', deadlineMs: 10_000 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(DutyCycleError);
    expect(isTrickleError(err, 'ERR_DUTY_CYCLE')).toBe(true);
    const retry = (err as DutyCycleError).retryAfterMs;
    expect((err as DutyCycleError).detail?.['retryAfterMs']).toBe(retry);
    expect(retry).toBe(3_600_000); // the burst must slide out far enough for a 21-byte frame
    // One ms before retryAfterMs it still cannot go at once; at retryAfterMs it goes at once.
    await run(clock.now() + retry - 1);
    await expect(q.enqueue(bytes(20), { priority: 'interactive', deadlineMs: 0 })).rejects.toBeInstanceOf(DutyCycleError);
    await run(clock.now() + 1);
    const t = clock.now();
    const r = q.enqueue(bytes(20), { priority: 'interactive', deadlineMs: 0 });
    await settle();
    await expect(r).resolves.toMatchObject({ sentAtMs: t, waitedMs: 0 });
  });

  it('rejects when the deadline passes behind higher-priority traffic, never hangs', async () => {
    const { clock, q, run } = setup({ packing: false });
    const t0 = clock.now();
    q.ledger.record(t0, 35_000); // 1 s of budget left
    // Enough control traffic to use that second and more
    const ctrl = Array.from({ length: 10 }, () => q.enqueue(bytes(12), { priority: 'control' }));
    const late = q.enqueue(bytes(30), { priority: 'sync', deadlineMs: 60_000 });
    let err: unknown;
    late.catch((e: unknown) => { err = e; });
    await run(t0 + 60_001);
    expect(err).toBeInstanceOf(DutyCycleError);
    expect((err as DutyCycleError).retryAfterMs).toBeGreaterThan(0);
    q.close();
    await Promise.allSettled(ctrl);
  });

  it('estimateWaitMs replays the queue ahead of the message', async () => {
    const { clock, q } = setup({ packing: false });
    expect(q.estimateWaitMs(20, 'interactive')).toBe(0);
    q.ledger.record(clock.now(), 36_000);
    const w = q.estimateWaitMs(20, 'interactive');
    expect(w).toBe(q.ledger.nextAllowedAt(air(20), clock.now()) - clock.now());
    void q.enqueue(bytes(20), { priority: 'control' }).catch(() => {});
    expect(q.estimateWaitMs(20, 'interactive')).toBeGreaterThan(w); // one more frame ahead
    expect(q.estimateWaitMs(20, 'control')).toBeGreaterThan(w);
    q.close();
  });

  it('coapAckTimeoutMs grows with the expected wait', () => {
    expect(coapAckTimeoutMs({ ownWaitMs: 0, ownAirtimeMs: 100, ackAirtimeMs: 50 })).toBe(Math.ceil((0 + 100 + 200 + 0 + 50) * 1.5));
    expect(coapAckTimeoutMs({ ownWaitMs: 60_000, ownAirtimeMs: 100, ackAirtimeMs: 50 })).toBeGreaterThan(90_000);
  });
});

function exhaust(q: TxQueue, nowMs: number): void { q.ledger.record(nowMs, 36_000); }

describe('TxQueue: packing', () => {
  it('packs small messages to the same peer into one frame, others stay apart', async () => {
    const { clock, q, sent, run } = setup();
    q.ledger.record(clock.now(), 35_000); // busy channel: messages accumulate while waiting
    const ps = [
      q.enqueue(bytes(10, 1), { priority: 'sync', peer: 'gw' }),
      q.enqueue(bytes(12, 2), { priority: 'control', peer: 'gw' }),
      q.enqueue(bytes(14, 3), { priority: 'bulk', peer: 'other' }),
      q.enqueue(bytes(16, 4), { priority: 'interactive', peer: 'gw' }),
    ];
    await run(clock.now() + 4 * 3_600_000);
    const receipts = await Promise.all(ps);
    const first = sent[0]!.frame;
    const msgs = unpackFrame(first);
    expect(msgs.map((m) => m[0])).toEqual([2, 4, 1]); // control head, then interactive, then sync: one frame
    expect(receipts[0]!.messagesInFrame).toBe(3);
    expect(unpackFrame(sent[1]!.frame).map((m) => m[0])).toEqual([3]);
    // one packed frame costs less airtime than three
    expect(receipts[0]!.airtimeMs).toBeLessThan(air(11) + air(13) + air(17));
  });

  it('refuses oversize messages and a full queue', async () => {
    const clock = new FakeClock();
    const q = new TxQueue({ clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, maxQueued: 1, transmit: async () => {} });
    await expect(q.enqueue(bytes(255), { priority: 'sync' })).rejects.toMatchObject({ code: 'ERR_MODEM_MTU' });
    q.ledger.record(clock.now(), 36_000);
    const p = q.enqueue(bytes(10), { priority: 'sync' });
    await expect(q.enqueue(bytes(10), { priority: 'sync' })).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL' });
    q.close();
    await expect(p).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });

  it('a frame over the per-transmission dwell is refused with ERR_DWELL_TIME', async () => {
    const clock = new FakeClock();
    const us = resolveChannel('us915', 903_900_000, 125_000).rules;
    const q = new TxQueue({ clock, rules: us, maxFrameLen: 255, frameAirtimeMs: (n) => loraAirtimeMs({ payloadBytes: n, sf: 10, bandwidthHz: 125_000, codingRate: 5 }), transmit: async () => {} });
    await expect(q.enqueue(bytes(25), { priority: 'sync' })).rejects.toMatchObject({ code: 'ERR_DWELL_TIME' });
    await expect(q.enqueue(bytes(24), { priority: 'sync' })).resolves.toMatchObject({ frameLen: 24 }); // a lone message has no container byte
  });
});

describe('TxQueue: status()', () => {
  it('reports per sub-band use, budget left, next allowed send and the queue by class', async () => {
    const { clock, q } = setup();
    const t0 = clock.now();
    q.ledger.record(t0, 36_000);
    const p = q.enqueue(bytes(20), { priority: 'interactive' });
    await settle();
    clock.advance(36_000); // the burst is over, and all of it lies in the last hour
    const s = q.status();
    expect(JSON.parse(JSON.stringify(s))).toEqual(s); // plain JSON
    const sb = s.subBands[0]!;
    expect(sb.id).toBe('eu868-868.0-868.6');
    expect(sb.budgetPerHourMs).toBe(36_000);
    expect(sb.limits[0]).toMatchObject({ kind: 'duty-cycle', usedMs: 36_000, leftMs: 0 });
    expect(sb.nextAllowedSendAtMs).toBe(q.ledger.nextAllowedAt(air(21), clock.now()));
    expect(sb.nextAllowedSendInMs).toBe(sb.nextAllowedSendAtMs - clock.now());
    expect(sb.airtimeUsedLastHourMs).toBe(36_000);
    expect(sb.budgetLeftMs).toBe(0);
    expect(sb.sendableNowMs).toBe(0);
    expect(s.queue.interactive).toEqual({ messages: 1, bytes: 20, oldestWaitMs: 36_000 });
    expect(s.queue.control.messages).toBe(0);
    q.close();
    await expect(p).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });
});

describe('TxQueue: the duty cycle survives a restart (history)', () => {
  it('a queue built from the previous run\'s airtimeHistory() waits exactly as the old one would have', async () => {
    const a = setup({ packing: false });
    const t0 = a.clock.now();
    // The old run sends 35 s of its 36 s hourly budget (1 % in EU868 g), then "crashes".
    for (let i = 0; i < 35; i++) void a.q.enqueue(bytes(200), { priority: 'interactive' });
    for (let i = 0; i < 100 && a.sent.length < 35; i++) { await settle(); a.clock.runUntil(a.clock.now() + 1_000); }
    expect(a.sent.length).toBe(35);
    const history = JSON.parse(JSON.stringify(a.q.airtimeHistory())) as ReturnType<TxQueue['airtimeHistory']>;
    expect(history.length).toBe(35);
    const now = a.clock.now();
    const big = air(250);
    const oldAt = a.q.ledger.nextAllowedAt(big, now);
    expect(oldAt - t0).toBeGreaterThan(3_500_000); // a 250-byte frame no longer fits this hour
    a.q.close();
    // "Restart": a new queue on the same clock, fed the history, answers the same.
    const b = new TxQueue({ clock: a.clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, packing: false, history, transmit: async () => {} });
    expect(b.airtimeHistory()).toEqual(history);
    expect(b.status().subBands[0]!.airtimeUsedLastHourMs).toBeCloseTo(a.q.status().subBands[0]!.airtimeUsedLastHourMs, 3);
    expect(b.ledger.nextAllowedAt(big, now)).toBe(oldAt);
    // Without the history a restarted radio would send at once: the hole this closes.
    const fresh = new TxQueue({ clock: a.clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, packing: false, transmit: async () => {} });
    expect(fresh.ledger.nextAllowedAt(big, now)).toBe(now);
    fresh.close();
    b.close();
  });

  it('keeps entries from the future (the clock went back) where they are: the radio waits for them', () => {
    const clock = new FakeClock();
    const now = clock.now();
    const q = new TxQueue({ clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, packing: false, transmit: async () => {},
      history: [{ startMs: now + 600_000, airtimeMs: 36_000 }, { startMs: Number.NaN, airtimeMs: 5 }] });
    // Not sent until that "future" budget has slid out of its window again.
    expect(q.estimateWaitMs(20, 'interactive')).toBeGreaterThan(600_000 + 3_600_000 - 1);
    q.close();
  });
});
