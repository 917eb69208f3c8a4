import { describe, expect, it } from 'vitest';
import { DutyCycleLedger } from '../../../src/scheduler/duty-cycle.ts';
import { resolveChannel, type ChannelRules } from '../../../src/scheduler/regions.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { checkWindows } from '../../sim/window-checker.ts';

const EU1 = resolveChannel('eu868', 868_100_000, 125_000).rules; // 36 000 ms per hour
const US = resolveChannel('us915', 903_900_000, 125_000).rules; // 400 ms per 20 s
const H = 3_600_000;
const T0 = 1_700_000_000_000;

describe('DutyCycleLedger: sliding 1 h window', () => {
  it('an empty ledger allows now', () => {
    expect(new DutyCycleLedger(EU1).nextAllowedAt(1000, T0)).toBe(T0);
  });

  it('after the whole budget in one burst, the next frame waits until enough of the burst slides out — to the ms', () => {
    const l = new DutyCycleLedger(EU1);
    l.record(T0, 36_000); // [T0, T0 + 36 s): budget spent
    expect(l.nextAllowedAt(1000, T0 + 36_000)).toBe(T0 + H); // needs 1 s of the burst to leave: window [T0+1000, T0+H+1000)
    expect(l.canSendAt(1000, T0 + H - 1)).toBe(false);
    expect(l.canSendAt(1000, T0 + H)).toBe(true);
  });

  it('no double burst across an hour boundary (unlike a fixed-hour refill)', () => {
    const l = new DutyCycleLedger(EU1);
    l.record(T0 + H - 36_000, 36_000); // spend it all in the last 36 s of "hour 1"
    // A fixed-hour refill would allow another 36 s at T0 + H; the sliding window does not.
    expect(l.canSendAt(1000, T0 + H)).toBe(false);
    expect(l.nextAllowedAt(1000, T0 + H)).toBe(T0 + 2 * H - 36_000);
  });

  it('partial budget: a frame that fits goes now, a larger one waits exactly', () => {
    const l = new DutyCycleLedger(EU1);
    l.record(T0, 30_000);
    expect(l.nextAllowedAt(6_000, T0 + 30_000)).toBe(T0 + 30_000);
    // 7 s needs 1 s of the first frame to leave the window ending at t + 7 s: t + 7000 − H ≥ T0 + 1000
    expect(l.nextAllowedAt(7_000, T0 + 30_000)).toBe(T0 + H - 6_000);
  });

  it('fractional airtimes are exact to the µs and rounded up to the ms', () => {
    const l = new DutyCycleLedger(EU1);
    for (let i = 0; i < 636; i++) l.record(T0 + i * 57, 56.576); // 35 982.336 ms in 636 frames, back to back-ish
    const t = l.nextAllowedAt(56.576, T0 + 636 * 57);
    const txs = [...Array.from({ length: 636 }, (_, i) => ({ startMs: T0 + i * 57, airtimeMs: 56.576 })), { startMs: t, airtimeMs: 56.576 }];
    expect(checkWindows(txs, { windowMs: H, budgetMs: 36_000 }).violations).toBe(0);
    const early = [...txs.slice(0, -1), { startMs: t - 1, airtimeMs: 56.576 }];
    expect(checkWindows(early, { windowMs: H, budgetMs: 36_000 }).violations).toBeGreaterThan(0);
  });

  it('usage reports airtime in the last hour and what is left', () => {
    const l = new DutyCycleLedger(EU1);
    l.record(T0, 10_000);
    l.record(T0 + 1_000_000, 5_000);
    expect(l.usage(T0 + 2_000_000)[0]).toMatchObject({ kind: 'duty-cycle', usedMs: 15_000, leftMs: 21_000, budgetMs: 36_000 });
    expect(l.usage(T0 + H + 5_000)[0]!.usedMs).toBe(10_000); // 5 s of the first frame + the second
    expect(l.usage(T0 + H + 10_000)[0]!.usedMs).toBe(5_000);
  });

  it('refuses a frame that can never fit with ERR_DWELL_TIME', () => {
    const l = new DutyCycleLedger(resolveChannel('eu868', 868_950_000, 125_000).rules); // 0.1 % = 3.6 s
    let err: unknown;
    try { l.nextAllowedAt(3_700, T0); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_DWELL_TIME')).toBe(true);
  });
});

describe('DutyCycleLedger: dwell (FCC 15.247)', () => {
  it('400 ms per 20 s per channel', () => {
    const l = new DutyCycleLedger(US);
    l.record(T0, 300);
    expect(l.nextAllowedAt(100, T0 + 300)).toBe(T0 + 300);
    expect(l.nextAllowedAt(150, T0 + 300)).toBe(T0 + 20_000 - 100); // window [t+150−20000, t+150) keeps 250 of the first
  });
  it('refuses a single transmission over 400 ms', () => {
    let err: unknown;
    try { new DutyCycleLedger(US).nextAllowedAt(401, T0); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_DWELL_TIME')).toBe(true);
    expect((err as Error).message).toMatch(/400 ms per-transmission dwell/);
  });
});

describe('DutyCycleLedger: strict off-time policy', () => {
  it('T_off = airtime × (1/dc − 1) on top of the sliding window', () => {
    const l = new DutyCycleLedger(EU1, { strictOffTime: true });
    l.record(T0, 1_000);
    expect(l.nextAllowedAt(1_000, T0 + 1_000)).toBe(T0 + 1_000 + 99_000);
    const sliding = new DutyCycleLedger(EU1);
    sliding.record(T0, 1_000);
    expect(sliding.nextAllowedAt(1_000, T0 + 1_000)).toBe(T0 + 1_000);
  });
});

describe('DutyCycleLedger: bookkeeping', () => {
  it('amendLast only makes the record stricter', () => {
    const l = new DutyCycleLedger(EU1);
    l.record(T0, 1_000);
    l.amendLast(T0 - 500, 500); // earlier and shorter: ignored
    expect(l.entries()).toEqual([{ startMs: T0, airtimeMs: 1_000 }]);
    l.amendLast(T0 + 20, 1_000);
    expect(l.entries()).toEqual([{ startMs: T0 + 20, airtimeMs: 1_000 }]);
  });
  it('prunes what can no longer matter; clone is independent', () => {
    const rules: ChannelRules = US;
    const l = new DutyCycleLedger(rules);
    for (let i = 0; i < 3000; i++) l.record(T0 + i * 20_000, 100);
    expect(l.entries().length).toBeLessThanOrEqual(2);
    const c = l.clone();
    c.record(T0 + 3000 * 20_000, 300);
    expect(l.entries().length).toBeLessThanOrEqual(2);
    expect(c.lastEndMs).toBeGreaterThan(l.lastEndMs);
  });
});
