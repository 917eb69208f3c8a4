/**
 * TxQueue: fair sharing of the radio's duty-cycle budget across peers (issue 12): weighted fair
 * queueing by airtime (start tags and virtual time as in SFQ), control first, class reserves
 * kept. Everything runs on the fake clock and every run is checked by the independent window
 * checker (test/sim/window-checker.ts): fairness must never buy a millisecond past the law.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { checkWindows, countOverlaps, type Transmission } from '../../sim/window-checker.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';
import { resolveChannel, type ChannelRules } from '../../../src/scheduler/regions.ts';
import { unpackFrame } from '../../../src/scheduler/packing.ts';
import { MAX_PEERS, PRIORITIES, TxQueue, type Priority, type SentReceipt, type TxQueueOptions } from '../../../src/scheduler/tx-queue.ts';

const HOUR = 3_600_000;
const T0 = 1_700_000_000_000;
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const EU1 = resolveChannel('eu868', 868_100_000, 125_000).rules; // 1 %: 36 s per hour
const EU10 = resolveChannel('eu868', 869_525_000, 125_000).rules; // 10 %: 360 s per hour
const air = (n: number): number => loraAirtimeMs({ payloadBytes: n, sf: 9, bandwidthHz: 125_000, codingRate: 5 });

/** A message: byte 0 names its peer (1-based index into `peers`), byte 1 its class; below 0xF0 as packing requires. */
function message(peerIx: number, priority: Priority, len: number): Uint8Array {
  const m = new Uint8Array(len);
  m[0] = peerIx + 1;
  m[1] = PRIORITIES.indexOf(priority);
  return m;
}

interface Sent extends Transmission { peer: string; messages: { priority: Priority; len: number }[] }

function sim(peers: readonly string[], opts: Partial<TxQueueOptions> & { rules: ChannelRules }) {
  const clock = new FakeClock(T0);
  const log: Sent[] = [];
  const q = new TxQueue({
    clock, maxFrameLen: 255, frameAirtimeMs: air, ...opts,
    transmit: async (frame) => {
      const msgs = unpackFrame(frame);
      const owners = new Set(msgs.map((m) => m[0]!));
      expect(owners.size).toBe(1); // a frame carries messages for one peer only
      log.push({
        startMs: clock.now(), airtimeMs: air(frame.length), peer: peers[msgs[0]![0]! - 1]!,
        messages: msgs.map((m) => ({ priority: PRIORITIES[m[1]!]!, len: m.length })),
      });
    },
  });
  const send = (peer: string, priority: Priority, len: number): Promise<SentReceipt> =>
    q.enqueue(message(peers.indexOf(peer), priority, len), { priority, peer });
  /** Keep `n` messages of this peer and class outstanding: each one sent is replaced at once. */
  const backlog = (peer: string, priority: Priority, len: number, n: number): { stop: () => void } => {
    let on = true;
    const one = (): void => {
      send(peer, priority, len).then(() => { if (on) one(); }, () => {});
    };
    for (let i = 0; i < n; i++) one();
    return { stop: () => { on = false; } };
  };
  /** Fire timers in time order up to `until` (never past it), letting promise callbacks run in between. */
  const runUntil = async (until: number): Promise<void> => {
    let reached = false;
    const sentinel = clock.setTimer(until - clock.now(), () => { reached = true; });
    for (let i = 0; i < 1_000_000 && !reached; i++) {
      await settle();
      if (!clock.step()) break;
    }
    sentinel.cancel();
    await settle();
  };
  const airtimeOf = (peer: string, from: number, to: number): number =>
    log.filter((t) => t.peer === peer && t.startMs >= from && t.startMs < to).reduce((s, t) => s + t.airtimeMs, 0);
  /** The law held in every window of every limit, and the radio never overlapped itself. */
  const expectLegal = (): void => {
    for (const l of opts.rules.limits) {
      const rep = checkWindows(log, { windowMs: l.windowMs, budgetMs: l.budgetMs });
      expect(rep.violations).toBe(0);
      expect(rep.maxWindowRatio).toBeLessThanOrEqual(1 + 1e-9);
    }
    expect(countOverlaps(log)).toBe(0);
  };
  return { clock, q, log, send, backlog, runUntil, airtimeOf, expectLegal };
}

/** Measured in the fairness tests, for the commit message (printed once). */
const measured: Record<string, unknown> = {};

describe('TxQueue: fair sharing across peers', () => {
  it('a peer offering 10× more traffic gets the same airtime as a light one, over each simulated hour (EU868 1 % and 10 %)', async () => {
    for (const [name, rules] of [['1%', EU1], ['10%', EU10]] as const) {
      const s = sim(['busy', 'light'], { rules });
      // Both stay backlogged all the time: busy keeps 100 messages of 50 B queued, light 10 of 24 B.
      s.backlog('busy', 'sync', 50, 100);
      s.backlog('light', 'sync', 24, 10);
      await s.runUntil(T0 + 2 * HOUR);
      const perHour = [0, 1].map((h) => {
        const busy = s.airtimeOf('busy', T0 + h * HOUR, T0 + (h + 1) * HOUR);
        const light = s.airtimeOf('light', T0 + h * HOUR, T0 + (h + 1) * HOUR);
        return { busyS: +(busy / 1000).toFixed(2), lightS: +(light / 1000).toFixed(2), ratio: +(busy / light).toFixed(3) };
      });
      measured[`fairness ${name}`] = perHour;
      for (const h of perHour) {
        expect(h.ratio).toBeGreaterThanOrEqual(0.8);
        expect(h.ratio).toBeLessThanOrEqual(1.25);
        // and the budget was used, not left idle for the sake of fairness
        expect(h.busyS + h.lightS).toBeGreaterThan((rules.dutyCycle! * HOUR) / 1000 - 1);
      }
      // status() accounts the same airtime per peer as the radio saw
      const st = s.q.status().peers;
      for (const p of ['busy', 'light']) {
        const row = st.find((x) => x.peer === p)!;
        expect(row.airtimeMs).toBeCloseTo(s.airtimeOf(p, T0, Infinity), 2);
        expect(row.frames).toBe(s.log.filter((t) => t.peer === p).length);
        expect(row.queuedMessages).toBe(p === 'busy' ? 100 : 10);
      }
      s.expectLegal();
      s.q.close();
    }
  }, 60_000);

  it('a light peer\'s interactive message waits for at most one frame of a busy peer, not its backlog', async () => {
    const s = sim(['busy', 'light'], { rules: EU1 });
    s.backlog('busy', 'interactive', 40, 50); // 50 interactive messages always queued: ~8 packed frames
    const framesAhead: number[] = [];
    const waits: number[] = [];
    for (let k = 0; k < 6; k++) {
      // at random-ish moments: while the budget is spent (waiting for the ledger) and while it flows
      await s.runUntil(s.clock.now() + 7 * 60_000 + k * 3_111);
      const at = s.clock.now();
      const before = s.log.length;
      const r = await new Promise<SentReceipt>((resolve, reject) => {
        s.send('light', 'interactive', 30).then(resolve, reject);
        void s.runUntil(at + 2 * HOUR);
      });
      const mine = s.log.findIndex((t, i) => i >= before && t.peer === 'light');
      framesAhead.push(s.log.slice(before, mine).filter((t) => t.peer === 'busy').length);
      waits.push(r.waitedMs);
    }
    measured['light peer: busy frames ahead'] = framesAhead;
    for (const n of framesAhead) expect(n).toBeLessThanOrEqual(1);
    s.expectLegal();
    s.q.close();
  }, 60_000);

  it('control still goes first, even for the peer that is furthest behind in fair order', async () => {
    const s = sim(['busy', 'slow'], { rules: EU1, peerWeights: { slow: 0.01 } });
    s.q.ledger.record(T0, 36_000); // the whole hour's budget is spent: everything queues
    s.backlog('busy', 'interactive', 40, 20);
    const sync = s.send('slow', 'sync', 30); // weight 0.01: its turn comes after ~100 busy frames
    await s.runUntil(T0 + 60_000);
    const ack = s.send('slow', 'control', 4);
    await s.runUntil(T0 + HOUR + 60_000);
    const r = await ack;
    // The first frame after the budget returned is the control message, at the first legal millisecond.
    expect(s.log[0]!.peer).toBe('slow');
    expect(s.log[0]!.messages[0]).toEqual({ priority: 'control', len: 4 });
    expect(r.sentAtMs).toBe(T0 + HOUR);
    // Packing let the slow peer's sync ride along; otherwise it would have waited its (slow) turn.
    expect(s.log[0]!.messages.map((m) => m.priority)).toEqual(['control', 'sync']);
    await expect(sync).resolves.toMatchObject({ sentAtMs: T0 + HOUR });
    s.expectLegal();
    s.q.close();
  });

  it('weights 2:1 give 2:1 airtime', async () => {
    const s = sim(['a', 'b'], { rules: EU10, peerWeights: { a: 2 } });
    s.backlog('a', 'sync', 40, 30);
    s.backlog('b', 'sync', 40, 30);
    await s.runUntil(T0 + HOUR);
    const a = s.airtimeOf('a', T0, T0 + HOUR);
    const b = s.airtimeOf('b', T0, T0 + HOUR);
    measured['weights 2:1'] = { aS: +(a / 1000).toFixed(2), bS: +(b / 1000).toFixed(2), ratio: +(a / b).toFixed(3) };
    expect(a / b).toBeGreaterThan(1.8);
    expect(a / b).toBeLessThan(2.2);
    // setPeerWeight changes it from the next frame: now 1:1
    s.q.setPeerWeight('a', 1);
    await s.runUntil(T0 + 2 * HOUR);
    const a2 = s.airtimeOf('a', T0 + HOUR, T0 + 2 * HOUR);
    const b2 = s.airtimeOf('b', T0 + HOUR, T0 + 2 * HOUR);
    expect(a2 / b2).toBeGreaterThan(0.8);
    expect(a2 / b2).toBeLessThan(1.25);
    expect(s.q.status().peers.map((p) => [p.peer, p.weight])).toEqual([['a', 1], ['b', 1]]);
    s.expectLegal();
    s.q.close();
  }, 60_000);

  it('a peer that was idle gets no burst credit for its idle time: it shares from the moment it returns', async () => {
    const s = sim(['a', 'b'], { rules: EU10 });
    await s.send('b', 'sync', 40); // b is known (its tags exist) ...
    s.backlog('a', 'sync', 40, 30); // ... then idles for an hour while a has the radio to itself
    await s.runUntil(T0 + HOUR);
    const back = s.clock.now();
    const before = s.log.length;
    s.backlog('b', 'sync', 40, 30);
    await s.runUntil(back + 10 * 60_000);
    const next = s.log.slice(before, before + 40);
    const bShare = next.filter((t) => t.peer === 'b').reduce((x, t) => x + t.airtimeMs, 0) / next.reduce((x, t) => x + t.airtimeMs, 0);
    measured['returning idle peer: share of the next 40 frames'] = +bShare.toFixed(3);
    // Credit for its idle hour would give b every frame until it had caught up (share 1).
    expect(next.length).toBe(40);
    expect(bShare).toBeGreaterThan(0.4);
    expect(bShare).toBeLessThan(0.6);
    s.expectLegal();
    s.q.close();
  }, 60_000);

  it('a peer whose bulk is held by its reserve does not block another peer\'s sync, and bulk stays within half the budget', async () => {
    // b's weight makes it last in fair order, so the held bulk of a is really ahead of it.
    const s = sim(['a', 'b'], { rules: EU1, peerWeights: { b: 0.1 } });
    s.backlog('a', 'bulk', 120, 20);
    await s.runUntil(T0 + 10 * 60_000);
    const bulkS = s.airtimeOf('a', T0, Infinity);
    expect(bulkS).toBeLessThanOrEqual(18_000); // bulk ≤ 50 % of 36 s
    expect(bulkS).toBeGreaterThan(18_000 - air(255));
    const at = s.clock.now();
    const r = await new Promise<SentReceipt>((resolve, reject) => {
      s.send('b', 'sync', 60).then(resolve, reject);
      void s.runUntil(at + 60_000);
    });
    expect(r.sentAtMs).toBe(at); // at once: the law has 18 s left, only the bulk reserve is spent
    await s.runUntil(T0 + HOUR - 1);
    const bulkFrames = s.log.filter((t) => t.messages.every((m) => m.priority === 'bulk'));
    expect(checkWindows(bulkFrames, { windowMs: HOUR, budgetMs: 18_000 }).violations).toBe(0);
    s.expectLegal();
    s.q.close();
  });
});

describe('TxQueue: one peer cannot lock the others out of a full queue (longest queue drop)', () => {
  it('a busy peer fills all 1024 slots while the budget is spent; a light peer\'s message still gets in (the busy one\'s newest goes) and is sent first', async () => {
    const s = sim(['busy', 'light'], { rules: EU1 });
    s.q.ledger.record(T0, 36_000); // the hour's budget is spent: everything waits
    const busy = Array.from({ length: 1024 }, () => s.send('busy', 'sync', 30));
    for (const b of busy) b.catch(() => {}); // what is still queued at close() is rejected then
    await settle();
    // Alone, a peer may use the whole queue; then it is refused, as before.
    await expect(s.send('busy', 'sync', 30)).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL' });
    const light = s.send('light', 'interactive', 20);
    await expect(busy[1023]).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL', detail: { peer: 'busy', forPeer: 'light' } });
    const st = s.q.status();
    expect(st.peers.map((p) => [p.peer, p.queuedMessages, p.queueFullDrops])).toEqual([['busy', 1023, 2], ['light', 1, 0]]);
    await s.runUntil(T0 + HOUR + 60_000);
    const r = await light;
    expect(r.sentAtMs).toBe(T0 + HOUR); // the first frame once the budget is back (control aside, fair order puts it first)
    expect(s.log[0]!.peer).toBe('light');
    s.expectLegal();
    s.q.close();
  });

  it('a peer is refused only while it holds at least as many messages as every other: 3 peers end with a third each', async () => {
    const peers = ['a', 'b', 'c'];
    const s = sim(peers, { rules: EU1, maxQueued: 12 });
    s.q.ledger.record(T0, 36_000);
    const outcome: Record<string, { sent: number; full: number }> = { a: { sent: 0, full: 0 }, b: { sent: 0, full: 0 }, c: { sent: 0, full: 0 } };
    const offer = (p: string, n: number): void => {
      for (let i = 0; i < n; i++) {
        s.send(p, 'sync', 10).then(() => { outcome[p]!.sent++; }, (e: { code?: string }) => { expect(e.code).toBe('ERR_QUEUE_FULL'); outcome[p]!.full++; });
      }
    };
    offer('a', 12); // a alone: all 12 slots
    offer('b', 20); // b takes slots from a until they are level (6 each), then is refused
    expect(s.q.status().peers.map((p) => p.queuedMessages)).toEqual([6, 6]);
    offer('c', 20); // c levels all three at 4
    expect(s.q.status().peers.map((p) => p.queuedMessages)).toEqual([4, 4, 4]);
    offer('a', 5); // a holds as many as any other: refused, pushes nobody out
    expect(s.q.status().peers.map((p) => p.queuedMessages)).toEqual([4, 4, 4]);
    await s.runUntil(T0 + 2 * HOUR);
    expect(Object.values(outcome).map((o) => o.sent)).toEqual([4, 4, 4]);
    expect(Object.values(outcome).map((o) => o.sent + o.full)).toEqual([17, 20, 20]); // every promise settled, none hangs
    expect(s.q.status().peers.map((p) => p.queueFullDrops)).toEqual([13, 16, 16]);
    s.expectLegal();
    s.q.close();
  });

  it('random arrivals from 4 peers: admitted while there is room or another peer holds more (its newest goes), refused otherwise; never over the bound', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({ peer: fc.integer({ min: 0, max: 3 }), priority: fc.constantFrom<Priority>(...PRIORITIES), n: fc.integer({ min: 1, max: 12 }) }), { minLength: 1, maxLength: 40 }),
      async (arrivals) => {
        const peers = ['p0', 'p1', 'p2', 'p3'];
        const s = sim(peers, { rules: EU1, maxQueued: 16 });
        s.q.ledger.record(T0, 36_000); // nothing leaves: only the room decides
        const held = (): Map<string, number> => new Map(s.q.status().peers.map((p) => [p.peer, p.queuedMessages]));
        const sum = (m: Map<string, number>): number => [...m.values()].reduce((x, y) => x + y, 0);
        for (const a of arrivals) {
          const p = peers[a.peer]!;
          for (let i = 0; i < a.n; i++) {
            const before = held();
            const mine = before.get(p) ?? 0;
            const longestOther = Math.max(0, ...[...before].filter(([q]) => q !== p).map(([, n]) => n));
            s.q.enqueue(message(a.peer, a.priority, 8), { priority: a.priority, peer: p }).catch(() => {}); // full, or closed at the end
            const after = held(); // enqueue admits, pushes out or refuses at once
            expect(sum(after)).toBeLessThanOrEqual(16);
            if (sum(before) < 16 || longestOther > mine) {
              expect(after.get(p)).toBe(mine + 1);
              if (sum(before) === 16) {
                // exactly one message of a peer holding the most went
                const lost = [...before].filter(([q, n]) => (after.get(q) ?? 0) === n - 1);
                expect(lost.length).toBe(1);
                expect(lost[0]![1]).toBe(longestOther);
              }
            } else {
              expect(after).toEqual(before);
            }
          }
        }
        s.q.close();
      },
    ), { numRuns: 60 });
  });
});

describe('TxQueue: the law and the reserves hold whatever the peers do', () => {
  it('random peers, weights, classes and arrivals: legal in every window, reserves kept, every frame one peer\'s', async () => {
    const peers = ['p0', 'p1', 'p2', 'p3'];
    await fc.assert(fc.asyncProperty(
      fc.constantFrom<[string, ChannelRules]>(['eu868 1%', EU1], ['eu868 10%', EU10]),
      fc.array(fc.constantFrom(0.25, 1, 3), { minLength: 4, maxLength: 4 }),
      fc.boolean(),
      fc.array(fc.record({
        atMs: fc.oneof(fc.integer({ min: 0, max: 60_000 }), fc.integer({ min: 0, max: 3 * HOUR })),
        peer: fc.integer({ min: 0, max: 3 }),
        priority: fc.constantFrom<Priority>(...PRIORITIES),
        len: fc.integer({ min: 4, max: 120 }),
        burst: fc.integer({ min: 1, max: 12 }),
      }), { minLength: 1, maxLength: 60 }),
      async ([, rules], weights, syncReserve, arrivals) => {
        const shares = syncReserve ? { sync: 0.9, bulk: 0.5 } : { bulk: 0.5 };
        const s = sim(peers, { rules, classShares: shares, peerWeights: Object.fromEntries(peers.map((p, i) => [p, weights[i]!])) });
        const results: Promise<unknown>[] = [];
        for (const a of arrivals) {
          s.clock.setTimer(a.atMs, () => {
            for (let i = 0; i < a.burst; i++) results.push(s.send(peers[a.peer]!, a.priority, a.len).catch((e: unknown) => e));
          });
        }
        await s.runUntil(T0 + 6 * HOUR);
        for (const o of await Promise.all(results)) expect(o).not.toBeInstanceOf(Error);
        s.expectLegal();
        // Each reserve, measured as the queue does (a message's share of the bytes is its share of the airtime).
        const B = rules.dutyCycle! * HOUR;
        for (const [from, share] of Object.entries(shares)) {
          const rank = PRIORITIES.indexOf(from as Priority);
          const portions = s.log.map((t) => {
            const total = t.messages.reduce((x, m) => x + m.len, 0);
            const mine = t.messages.filter((m) => PRIORITIES.indexOf(m.priority) >= rank).reduce((x, m) => x + m.len, 0);
            return { startMs: t.startMs, airtimeMs: (t.airtimeMs * mine) / total };
          }).filter((t) => t.airtimeMs > 0);
          expect(checkWindows(portions, { windowMs: HOUR, budgetMs: B * share }, 1e-6).violations).toBe(0);
        }
        s.q.close();
      },
    ), { numRuns: 25 });
  }, 120_000);
});

describe('TxQueue: per-peer status and the peer table', () => {
  it('status().peers: airtime (total, last hour), frames, messages, queued messages and bytes, oldest wait', async () => {
    const s = sim(['a', 'b'], { rules: EU1 });
    s.q.ledger.record(T0, 500); // the radio is busy for half a second: both messages queue behind it
    const sent = [s.send('a', 'sync', 20), s.send('a', 'sync', 30)];
    await s.runUntil(T0 + 1_000);
    const r = await sent[0]!;
    expect(r.messagesInFrame).toBe(2);
    s.q.ledger.record(s.clock.now(), 36_000); // nothing more goes this hour
    const waiting = s.send('b', 'interactive', 25);
    await s.runUntil(T0 + 60_000);
    let st = s.q.status();
    expect(JSON.parse(JSON.stringify(st))).toEqual(st);
    expect(st.peers).toEqual([
      { peer: 'a', weight: 1, airtimeMs: +r.airtimeMs.toFixed(3), airtimeLastHourMs: +r.airtimeMs.toFixed(3), frames: 1, messagesSent: 2, queuedMessages: 0, queuedBytes: 0, oldestWaitMs: null, queueFullDrops: 0 },
      { peer: 'b', weight: 1, airtimeMs: 0, airtimeLastHourMs: 0, frames: 0, messagesSent: 0, queuedMessages: 1, queuedBytes: 25, oldestWaitMs: 59_000, queueFullDrops: 0 },
    ]);
    // the old fields are all still there
    expect(st.queue.interactive).toEqual({ messages: 1, bytes: 25, oldestWaitMs: 59_000 });
    expect(st.totals).toMatchObject({ frames: 1, messages: 2 });
    // an hour later a's airtime has left the last hour but stays in its total
    await s.runUntil(T0 + 2 * HOUR);
    await waiting;
    st = s.q.status();
    expect(st.peers[0]).toMatchObject({ peer: 'a', airtimeLastHourMs: 0, airtimeMs: +r.airtimeMs.toFixed(3) });
    expect(st.peers[1]).toMatchObject({ peer: 'b', frames: 1, messagesSent: 1, queuedMessages: 0 });
    s.q.close();
  });

  it(`the peer table is bounded: beyond ${MAX_PEERS}, peers with nothing queued and no airtime in the last hour are forgotten`, async () => {
    const clock = new FakeClock(T0);
    const q = new TxQueue({ clock, rules: EU10, maxFrameLen: 255, frameAirtimeMs: air, transmit: async () => {} });
    const one = async (peer: string): Promise<void> => {
      let done = false;
      const p = q.enqueue(new Uint8Array(10).fill(1), { priority: 'sync', peer }).then(() => { done = true; });
      for (let i = 0; i < 10 && !done; i++) { await settle(); if (!clock.step()) break; }
      expect(done).toBe(true); // (a newcomer once evicted itself here and its message never went)
      await p;
    };
    for (let i = 0; i < 300; i++) await one(`kit-${i}`);
    expect(q.status().peers.length).toBe(300); // all sent within the hour: all kept
    clock.advance(HOUR + 1_000);
    await one('late'); // its arrival trims the table
    const ids = q.status().peers.map((p) => p.peer);
    expect(ids.length).toBe(MAX_PEERS);
    expect(ids).toContain('late');
    expect(ids).not.toContain('kit-0'); // the least recently active went first
    expect(ids).toContain('kit-299');
    q.close();
  });

  it('rejects a weight that is not a finite number > 0', () => {
    const clock = new FakeClock(T0);
    expect(() => new TxQueue({ clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, transmit: async () => {}, peerWeights: { x: 0 } }))
      .toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    const q = new TxQueue({ clock, rules: EU1, maxFrameLen: 255, frameAirtimeMs: air, transmit: async () => {} });
    for (const w of [-1, Number.NaN, Infinity]) expect(() => q.setPeerWeight('x', w)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
  });

  it('estimateWaitMs(len, priority, peer) replays the fair order: exact without packing, shorter for the light peer', async () => {
    const s = sim(['busy', 'light'], { rules: EU1, packing: false });
    s.backlog('busy', 'interactive', 40, 30);
    await s.runUntil(T0 + 20 * 60_000); // the budget is spent; busy's backlog waits for it
    const light = s.q.estimateWaitMs(30, 'interactive', 'light');
    const busy = s.q.estimateWaitMs(30, 'interactive', 'busy');
    expect(light).toBeGreaterThan(0);
    expect(busy).toBeGreaterThan(light); // busy's own 30 messages are ahead of a new one of its own
    const at = s.clock.now();
    const r = await new Promise<SentReceipt>((resolve, reject) => {
      s.send('light', 'interactive', 30).then(resolve, reject);
      void s.runUntil(at + 2 * HOUR);
    });
    expect(r.sentAtMs - at).toBe(light);
    s.q.close();
  }, 60_000);
});

describe('measurements', () => {
  it('prints what the fairness tests measured', () => {
    expect(Object.keys(measured).length).toBeGreaterThan(0);
    process.stdout.write(`tx-queue fairness: ${JSON.stringify(measured)}\n`);
  });
});
