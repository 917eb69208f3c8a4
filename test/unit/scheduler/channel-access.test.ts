/**
 * ChannelAccess on a fake clock: receive windows, the answer slot, inter-frame spaces with a
 * contention window, listen before talk, and its place in TxQueue (after the ledger, never
 * counted as airtime). The same rules on the emulated RF medium with two boards:
 * test/sim/channel-access-medium.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { mulberry32 } from '../../helpers/prng.ts';
import { checkWindows, countOverlaps, type Transmission } from '../../sim/window-checker.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';
import { resolveChannel } from '../../../src/scheduler/regions.ts';
import { ChannelAccess, type ChannelAccessOptions, type SenseResult } from '../../../src/scheduler/channel-access.ts';
import { TxQueue } from '../../../src/scheduler/tx-queue.ts';
import { unpackFrame } from '../../../src/scheduler/packing.ts';

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const SF9_SYMBOL_MS = (2 ** 9 / 125_000) * 1000; // 4.096
const air = (n: number): number => loraAirtimeMs({ payloadBytes: n, sf: 9, bandwidthHz: 125_000, codingRate: 5 });

function access(clock: FakeClock, o: Partial<ChannelAccessOptions> = {}): ChannelAccess {
  return new ChannelAccess({
    clock, random: () => 0, symbolMs: SF9_SYMBOL_MS, frameAirtimeMs: air, maxFrameLen: 255,
    answerDelayMs: 500, turnaroundMs: 20, sendEndsAtTxDone: true, ...o,
  });
}

/** Send one frame through the access rules by hand: started, airtime passes, finished. */
function sendFrame(clock: FakeClock, a: ChannelAccess, len: number, expectsAnswer: boolean): void {
  a.started({ frameLen: len, airtimeMs: air(len), expectsAnswer });
  clock.advance(air(len));
  a.finished(true);
}

describe('ChannelAccess: timing rules', () => {
  it('slot = CAD of 2 symbols (+½ processing, AN1200.48) + turnaround', () => {
    const a = access(new FakeClock());
    expect(a.senseMs).toBeCloseTo(2.5 * SF9_SYMBOL_MS, 9);
    expect(a.slotMs).toBeCloseTo(2.5 * SF9_SYMBOL_MS + 20, 9);
  });

  it('after a frame that asks for an answer, nothing new starts until the window ends (no sensing: it covers a whole answer)', () => {
    const clock = new FakeClock();
    const a = access(clock);
    sendFrame(clock, a, 30, true);
    const end = clock.now();
    const window = 500 + 20 + air(255) + a.slotMs; // answer delay + turnaround + a largest answer + a slot
    expect(a.clearAt(end)).toBeCloseTo(end + window, 3);
    expect(a.clearAt(end + window - 1)).toBeGreaterThan(end + window - 1);
    // At its end the inter-frame space (2 slots with r = 0) has long passed: go.
    expect(a.clearAt(end + window)).toBeCloseTo(end + window, 3);
    expect(a.stats()).toMatchObject({ rxWindows: 1, rxWindowsAnswered: 0 });
  });

  it('with sensing the window only has to reach the answer\'s preamble: answer delay + turnaround + one slot', () => {
    const clock = new FakeClock();
    const a = access(clock, { sense: async () => ({ busy: false, durationMs: 10 }) });
    sendFrame(clock, a, 30, true);
    expect(a.clearAt(clock.now()) - clock.now()).toBeCloseTo(500 + 20 + a.slotMs, 3);
  });

  it('hearing the answer closes the window and opens the answer slot for one slot; then the inter-frame space applies', () => {
    const clock = new FakeClock();
    const a = access(clock, { random: () => 0.99 }); // r = CW = 3 at the lowest utilisation band
    sendFrame(clock, a, 30, true);
    clock.advance(150);
    a.heard(40);
    const h = clock.now();
    expect(a.clearAt(h)).toBe(h); // the peer is listening: answer at once
    expect(a.clearAt(h + a.slotMs)).toBe(h + a.slotMs);
    const later = h + a.slotMs + 1;
    const ifs = a.clearAt(later) - h;
    expect(ifs).toBeGreaterThanOrEqual(2 * a.slotMs);
    expect(a.stats()).toMatchObject({ rxWindowsAnswered: 1, heard: 1 });
  });

  it('two exchanges back to back at most: after the answer to a request sent in an answer slot, the station yields to every other (a backlog cannot keep others off the channel)', () => {
    const clock = new FakeClock();
    const a = access(clock, { random: () => 0.5 });
    sendFrame(clock, a, 30, true); // request 1, after the inter-frame space
    clock.advance(150);
    a.heard(40); // its answer
    expect(a.clearAt(clock.now())).toBe(clock.now());
    sendFrame(clock, a, 30, true); // request 2, in the answer slot
    clock.advance(150);
    a.heard(40); // its answer
    const h = clock.now();
    // Request 3 waits until every station waiting with the ordinary space (at most 2 + CW = 5
    // slots at this utilisation) had its chance: the space plus a whole contention window.
    expect(a.clearAt(h) - h).toBeGreaterThan(5 * a.slotMs);
    expect(a.clearAt(h) - h).toBeCloseTo((2 + 2 + 4) * a.slotMs, 3); // r = 2 of 0..3, then CW + 1 = 4 slots more
    // An ACK the answer may need is not held back: a frame that asked nothing keeps the slot.
    const b = access(clock);
    sendFrame(clock, b, 30, true);
    clock.advance(150);
    b.heard(40);
    sendFrame(clock, b, 4, false); // an ACK in the answer slot
    clock.advance(150);
    b.heard(40); // the peer's next frame
    expect(b.clearAt(clock.now())).toBe(clock.now());
  });

  it('the yield ends at the next frame heard: a station with answers to give is not starved by the stations waiting for them', () => {
    const clock = new FakeClock();
    const a = access(clock, { random: () => 0.5 });
    sendFrame(clock, a, 30, true);
    clock.advance(150);
    a.heard(40);
    sendFrame(clock, a, 30, true); // in the answer slot
    clock.advance(150);
    a.heard(40); // its answer: a yields
    expect(a.clearAt(clock.now())).toBeGreaterThan(clock.now());
    // Another kit's request (addressed to us) follows before a got on: the yield has done its
    // work; a answers it in the answer slot, as a gateway must to a kit that retransmits.
    clock.advance(60);
    a.heard(40);
    expect(a.clearAt(clock.now())).toBe(clock.now());
  });

  it('after a frame that asks nothing, the sender waits (2 + r) slots, r in 0..CW, so the hearer answers first', () => {
    for (const [u, r] of [[0, 0], [0.5, 2], [0.999, 3]] as const) {
      const clock = new FakeClock();
      const a = access(clock, { random: () => u });
      sendFrame(clock, a, 12, false);
      expect(a.clearAt(clock.now()) - clock.now()).toBeCloseTo((2 + r) * a.slotMs, 3);
    }
  });

  it('the contention window grows with channel utilisation (Meshtastic) and with each busy sense', async () => {
    const clock = new FakeClock();
    const a = access(clock, { random: () => 0.999, sense: async () => ({ busy: true, durationMs: 10 }) });
    // A channel 100 % used over the last minute: e = cwMax = 6, r = 63.
    for (let t = 0; t < 60; t++) { a.heard(255, { airtimeMs: 1000 }); clock.advance(1000); }
    sendFrame(clock, a, 12, false);
    expect(a.clearAt(clock.now()) - clock.now()).toBeCloseTo((2 + 63) * a.slotMs, 3);

    const quiet = new FakeClock();
    const b = access(quiet, { random: () => 0.999, sense: async () => ({ busy: true, durationMs: 10 }) });
    await b.grant(quiet.now()); // busy: streak 1
    quiet.advance(2 * air(255)); // the busy backoff is over
    sendFrame(quiet, b, 12, false);
    expect(b.clearAt(quiet.now()) - quiet.now()).toBeCloseTo((2 + 7) * b.slotMs, 3); // e = 2 + 1
  });

  it('a frame for another station opens no answer slot', () => {
    const clock = new FakeClock();
    const a = access(clock);
    sendFrame(clock, a, 30, false);
    clock.advance(5_000);
    a.heard(40, { addressedToUs: false });
    expect(a.clearAt(clock.now())).toBeCloseTo(clock.now() + 2 * a.slotMs, 3);
  });

  it('nothing starts while our own frame is going out', () => {
    const clock = new FakeClock();
    const a = access(clock);
    a.started({ frameLen: 10, airtimeMs: air(10), expectsAnswer: false });
    expect(a.clearAt(clock.now() + 10_000)).toBe(Infinity);
  });

  it('a modem without TX_DONE: the frame is taken to end one airtime after the write', () => {
    const clock = new FakeClock();
    const a = access(clock, { sendEndsAtTxDone: false });
    a.started({ frameLen: 10, airtimeMs: air(10), expectsAnswer: false });
    a.finished(true); // written at once; the radio sends it now
    expect(a.clearAt(clock.now()) - clock.now()).toBeCloseTo(air(10) + 2 * a.slotMs, 3);
  });
});

describe('ChannelAccess: listen before talk', () => {
  it('senses right before a frame; clear → granted at once, without sensing twice', async () => {
    const clock = new FakeClock();
    let senses = 0;
    const a = access(clock, { sense: async () => { senses++; return { busy: false, durationMs: 10 }; } });
    const g = a.grant(clock.now());
    expect(g).toBeInstanceOf(Promise);
    await g;
    expect(a.grant(clock.now())).toBe(clock.now());
    expect(senses).toBe(1);
  });

  it('a clear sense goes stale: once a frame is heard, or once time has passed, it senses again', async () => {
    const clock = new FakeClock();
    let senses = 0;
    const a = access(clock, { sense: async () => { senses++; return { busy: false, durationMs: 10 }; } });
    await a.grant(clock.now());
    a.heard(20);
    expect(a.grant(clock.now())).toBeInstanceOf(Promise);
    await a.grant(clock.now());
    clock.advance(1_000);
    expect(a.grant(clock.now())).toBeInstanceOf(Promise);
    expect(senses).toBe(3);
  });

  it('busy → backs off between ½ and 1½ largest-frame airtimes; hearing that frame ends the backoff (answer slot)', async () => {
    const clock = new FakeClock();
    const results: SenseResult[] = [{ busy: true, durationMs: 10 }, { busy: false, durationMs: 10 }];
    const a = access(clock, { random: () => 0.25, sense: async () => results.shift()! });
    await a.grant(clock.now());
    const now = clock.now();
    expect(a.clearAt(now) - now).toBeCloseTo(0.75 * air(255), 3);
    expect(a.stats()).toMatchObject({ senses: 1, busy: 1 });
    clock.advance(120);
    a.heard(50);
    const g = a.grant(clock.now()); // answer slot, but still sensed first
    expect(g).toBeInstanceOf(Promise);
    await g;
    expect(a.grant(clock.now())).toBe(clock.now());
  });

  it('a sense that fails counts as clear (the send will report a dead modem)', async () => {
    const clock = new FakeClock();
    const a = access(clock, { sense: () => Promise.reject(new Error('EIO')) });
    await a.grant(clock.now());
    expect(a.grant(clock.now())).toBe(clock.now());
    expect(a.stats().senseErrors).toBe(1);
  });

  it('acquire() waits out a receive window for a queue-less link, and is woken by the answer', async () => {
    const clock = new FakeClock();
    const a = access(clock);
    sendFrame(clock, a, 30, true);
    let got = false;
    void a.acquire().then(() => { got = true; });
    await settle();
    clock.advance(100);
    await settle();
    expect(got).toBe(false);
    a.heard(20);
    await settle();
    expect(got).toBe(true);
  });
});

describe('ChannelAccess in TxQueue', () => {
  const EU1 = resolveChannel('eu868', 868_100_000, 125_000).rules;
  const EU10 = resolveChannel('eu868', 869_525_000, 125_000).rules;

  it('a frame asked for while the receive window is open waits; the answer heard lets it go, packed with the ACK that answer needed', async () => {
    const clock = new FakeClock();
    const a = access(clock, { sendEndsAtTxDone: false, sense: async () => ({ busy: false, durationMs: 10 }) });
    const sent: { atMs: number; frame: Uint8Array }[] = [];
    const q = new TxQueue({ clock, rules: EU10, maxFrameLen: 255, frameAirtimeMs: air, access: a, transmit: async (frame) => { sent.push({ atMs: clock.now(), frame }); } });
    const flushAll = async (): Promise<void> => { for (let i = 0; i < 5; i++) await settle(); };
    void q.enqueue(new Uint8Array(30).fill(1), { priority: 'interactive', expectsAnswer: true });
    await flushAll();
    expect(sent).toHaveLength(1);
    void q.enqueue(new Uint8Array(30).fill(2), { priority: 'interactive', expectsAnswer: true });
    await flushAll();
    clock.advance(air(31) + 300);
    await flushAll();
    expect(sent).toHaveLength(1); // held by the receive window
    // The peer's answer arrives (a separate response, say), and we must ACK it.
    a.heard(40);
    const heardAt = clock.now();
    void q.enqueue(new Uint8Array(4).fill(3), { priority: 'control' });
    for (let ms = 0; ms < 3; ms++) { await flushAll(); clock.advance(1); } // the ledger answers in whole milliseconds
    await flushAll();
    expect(sent).toHaveLength(2);
    expect(sent[1]!.atMs - heardAt).toBeLessThanOrEqual(2); // in the answer slot, no inter-frame space
    expect(unpackFrame(sent[1]!.frame).map((m) => m[0])).toEqual([3, 2]);
    expect(a.stats()).toMatchObject({ rxWindowsAnswered: 1, answerSlots: 1 });
    q.close();
  });

  it('a modem that reports transmit-done: the frame counts over its own airtime, [end − airtime, end), so the ledger does not stay shut one airtime more', async () => {
    const clock = new FakeClock(0);
    const starts: number[] = [];
    const q = new TxQueue({
      clock, rules: EU10, maxFrameLen: 255, frameAirtimeMs: air,
      transmit: (frame) => new Promise((resolve) => {
        starts.push(clock.now());
        clock.setTimer(air(frame.length), () => resolve({ airtimeMs: air(frame.length), endedAtMs: clock.now() }));
      }),
    });
    const first = q.enqueue(new Uint8Array(100), { priority: 'interactive' });
    await settle();
    clock.advance(air(101));
    const r = await first;
    expect(r.sentAtMs).toBe(starts[0]);
    expect(q.airtimeHistory()).toEqual([{ startMs: starts[0], airtimeMs: air(101) }]);
    // The next frame may start the moment the first has left (to the ledger's millisecond).
    void q.enqueue(new Uint8Array(10), { priority: 'interactive' });
    await settle();
    clock.advance(1);
    await settle();
    expect(starts).toHaveLength(2);
    expect(starts[1]! - (starts[0]! + air(101))).toBeLessThanOrEqual(1);
    q.close();
  });

  it('sensing time and backoff never enter the ledger, and the ledger is never passed: an independent window check over a busy channel', async () => {
    const clock = new FakeClock(0);
    const rnd = mulberry32(7);
    const log: Transmission[] = [];
    let sensing = 0;
    const a = new ChannelAccess({
      clock, random: rnd, symbolMs: SF9_SYMBOL_MS, frameAirtimeMs: air, maxFrameLen: 255, answerDelayMs: 300, turnaroundMs: 20, sendEndsAtTxDone: true,
      // A channel busy 40 % of the senses; each sense takes 10.24 ms of listening.
      sense: () => new Promise<SenseResult>((resolve) => { sensing++; clock.setTimer(2.5 * SF9_SYMBOL_MS, () => resolve({ busy: rnd() < 0.4, durationMs: 10.24 })); }),
    });
    const q = new TxQueue({
      clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, access: a,
      transmit: (frame) => new Promise((resolve) => {
        log.push({ startMs: clock.now(), airtimeMs: air(frame.length) });
        clock.setTimer(air(frame.length), () => resolve({ airtimeMs: air(frame.length), endedAtMs: clock.now() })); // TX_DONE
      }),
    });
    // Saturate: 3 virtual hours of frames always queued, some asking for answers that sometimes come.
    const T = 3 * 3_600_000;
    const refill = (): void => {
      while (clock.now() < T && (q.status().queue.interactive.messages + q.status().queue.bulk.messages) < 8) {
        const expectsAnswer = rnd() < 0.5;
        void q.enqueue(new Uint8Array(20 + Math.floor(rnd() * 200)), { priority: rnd() < 0.5 ? 'interactive' : 'bulk', peer: 'p', expectsAnswer })
          .then(() => { if (expectsAnswer && rnd() < 0.7) clock.setTimer(100 + rnd() * 300, () => a.heard(30)); refill(); }, () => undefined);
      }
    };
    refill();
    while (clock.now() < T) {
      await settle();
      if (!clock.step()) break;
    }
    q.close();
    expect(log.length).toBeGreaterThan(50);
    expect(sensing).toBeGreaterThan(log.length); // busy senses were repeated
    expect(countOverlaps(log)).toBe(0);
    for (const l of EU1.limits) {
      const rep = checkWindows(log, l);
      expect(rep.violations).toBe(0);
      expect(rep.maxWindowRatio).toBeLessThanOrEqual(1 + 1e-9);
    }
    // Every ledger entry is one frame's airtime (never a sense or a wait), over the frame's own
    // time on air (the modem reported its end: TX_DONE).
    const entries = q.airtimeHistory();
    expect(entries.length).toBeGreaterThan(0);
    for (const e of entries) {
      const tx = log.find((t) => Math.abs(t.startMs - e.startMs) < 1e-3);
      expect(tx, `ledger entry at ${e.startMs}`).toBeDefined();
      expect(e.airtimeMs).toBeCloseTo(tx!.airtimeMs, 3);
    }
  });
});
