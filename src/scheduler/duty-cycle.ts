/**
 * DutyCycleLedger: a record of this radio's transmissions on one channel (one sub-band) and the
 * exact earliest moment the next one may start.
 *
 * The rule (for each WindowLimit {windowMs = H, budgetMs = B} of the channel): for EVERY window
 * [w, w + H), the airtime inside it — the overlap of each transmission [s, s + a) with the
 * window — is ≤ B. This is a true sliding window, not credits refilled once per fixed period
 * (LoRaMac-node's fixed-period refill can put 2·B into one hour straddling a refill).
 *
 * Why nextAllowedAt is exact: let every recorded transmission end before t (one radio, half
 * duplex). Among windows that overlap the new transmission [t, t + a), the one ending at t + a
 * holds the most: sliding its end back from t + a loses new airtime at rate 1 and gains old
 * airtime at rate ≤ 1; sliding it forward loses new airtime and gains none. So the new
 * transmission is legal iff
 *        a + P(t + a − H) ≤ B,   where P(x) = recorded airtime after x.
 * P is continuous and nonincreasing, so the legal starts form [t*, ∞) and t* is found by one
 * backward walk over the record. Several limits (duty cycle, dwell) → the latest of their t*.
 * Arithmetic is in integer microseconds (LoRa airtimes are whole µs on every LoRa bandwidth;
 * other airtimes are rounded UP), and the answer is rounded UP to a whole millisecond, so it is
 * never early and at most 1 ms late.
 *
 * Optional strict off-time policy (what ETSI-style "T_off" implementations and older
 * LoRaMac-node do): after a transmission of airtime a, stay silent for a × (1/dc − 1). It is
 * applied on top of the sliding window, never instead of it.
 *
 * Pure state: no clock, no I/O; callers pass `nowMs`.
 */
import { TrickleError } from '../errors.ts';
import type { ChannelRules, WindowLimit } from './regions.ts';

export interface LedgerOptions {
  /** Also enforce T_off = airtime × (1/dc − 1) after every transmission. Default false. */
  strictOffTime?: boolean;
  /** Multiply every windowed budget (the TxQueue's bulk sub-ledger uses 0.5). Default 1. */
  budgetScale?: number;
  /** Skip the per-transmission maximum (used by sub-ledgers). Default false. */
  ignoreMaxFrameAirtime?: boolean;
}

export interface LedgerEntry {
  startMs: number;
  airtimeMs: number;
}

export interface LimitUsage {
  kind: WindowLimit['kind'];
  windowMs: number;
  budgetMs: number;
  /** Airtime inside [now − windowMs, now). */
  usedMs: number;
  /** budgetMs − usedMs (never negative). */
  leftMs: number;
}

const toUs = (ms: number): number => Math.round(ms * 1000);
/** Airtime to µs, rounded up (through ns first, so 56.576 → 56576, not 56577). */
const durUs = (ms: number): number => Math.ceil(Math.round(ms * 1e6) / 1000);

export class DutyCycleLedger {
  readonly rules: ChannelRules;
  private readonly limits: { kind: WindowLimit['kind']; H: number; B: number; budgetMs: number; windowMs: number }[];
  private readonly strictOffTime: boolean;
  private readonly maxFrameUs: number | null;
  private readonly maxWindowUs: number;
  // The record, oldest first, in µs: starts, ends, and the running airtime total before each
  // entry (so "airtime after x" is a binary search and a subtraction). Entries [0, head) are
  // pruned and compacted away from time to time.
  private s: number[] = [];
  private e: number[] = [];
  private cum: number[] = [];
  private head = 0;
  private totalUs = 0;
  /** Off-time deadline from the strict policy, µs. */
  private offUntilUs = -Infinity;

  constructor(rules: ChannelRules, opts: LedgerOptions = {}) {
    this.rules = rules;
    const scale = opts.budgetScale ?? 1;
    if (!(scale > 0 && scale <= 1)) throw new TrickleError('ERR_CONFIG', 'scheduler', `budgetScale must be in (0, 1] (got ${scale})`);
    this.limits = rules.limits.map((l) => ({
      kind: l.kind,
      H: toUs(l.windowMs),
      B: Math.floor(Math.round(l.budgetMs * scale * 1e6) / 1000),
      budgetMs: l.budgetMs * scale,
      windowMs: l.windowMs,
    }));
    this.maxWindowUs = Math.max(0, ...this.limits.map((l) => l.H));
    this.strictOffTime = (opts.strictOffTime ?? false) && rules.dutyCycle !== null && rules.dutyCycle < 1;
    this.maxFrameUs = opts.ignoreMaxFrameAirtime || rules.maxFrameAirtimeMs === null ? null : durUs(rules.maxFrameAirtimeMs);
  }

  /** The recorded transmissions still inside the longest window (oldest first). */
  entries(): LedgerEntry[] {
    const out: LedgerEntry[] = [];
    for (let i = this.head; i < this.s.length; i++) out.push({ startMs: this.s[i]! / 1000, airtimeMs: (this.e[i]! - this.s[i]!) / 1000 });
    return out;
  }

  /** End of the last recorded transmission in ms (−Infinity when none). */
  get lastEndMs(): number {
    return this.s.length > this.head ? this.e[this.e.length - 1]! / 1000 : -Infinity;
  }

  /**
   * Throws ERR_DWELL_TIME when a frame of this airtime can never be sent on this channel
   * (longer than the per-transmission dwell, or than a whole window budget).
   */
  assertSendable(airtimeMs: number): void {
    if (!(airtimeMs >= 0) || !Number.isFinite(airtimeMs)) {
      throw new TrickleError('ERR_AIRTIME_PARAMS', 'scheduler', `airtimeMs must be a finite number ≥ 0 (got ${airtimeMs})`);
    }
    const a = durUs(airtimeMs);
    if (this.maxFrameUs !== null && a > this.maxFrameUs) {
      throw new TrickleError('ERR_DWELL_TIME', 'scheduler',
        `a ${airtimeMs} ms transmission exceeds the ${this.rules.maxFrameAirtimeMs} ms per-transmission dwell limit (${this.rules.regulation}); use a smaller frame or a faster data rate`,
        { airtimeMs, limitMs: this.rules.maxFrameAirtimeMs, subBand: this.rules.subBandId });
    }
    for (const l of this.limits) {
      if (a > l.B) {
        throw new TrickleError('ERR_DWELL_TIME', 'scheduler',
          `a ${airtimeMs} ms transmission exceeds the whole ${l.kind} budget of ${l.budgetMs} ms per ${l.windowMs / 1000} s (${this.rules.regulation}); it can never be sent here`,
          { airtimeMs, limitMs: l.budgetMs, windowMs: l.windowMs, kind: l.kind, subBand: this.rules.subBandId });
      }
    }
  }

  /**
   * The earliest whole millisecond ≥ nowMs (and ≥ the end of the last transmission) at which a
   * transmission of airtimeMs may start without breaking any limit. Throws ERR_DWELL_TIME if never.
   */
  nextAllowedAt(airtimeMs: number, nowMs: number): number {
    this.assertSendable(airtimeMs);
    // No pruning here: callers may ask about a future instant (planning), and pruning for it would
    // forget airtime that still counts at the real now. Only record() prunes.
    const a = durUs(airtimeMs);
    let t = Math.max(toUs(nowMs), this.lastEndUs(), this.offUntilUs);
    for (const l of this.limits) t = Math.max(t, this.earliestFor(l.H, l.B, a, t));
    return Math.ceil(t / 1000);
  }

  /** True when a transmission of airtimeMs may start at atMs. */
  canSendAt(airtimeMs: number, atMs: number): boolean {
    try {
      return this.nextAllowedAt(airtimeMs, atMs) <= atMs;
    } catch {
      return false;
    }
  }

  private lastEndUs(): number {
    return this.s.length > this.head ? this.e[this.e.length - 1]! : -Infinity;
  }

  /** Index of the first live entry ending after x (length when none). */
  private firstEndingAfter(x: number): number {
    let lo = this.head;
    let hi = this.e.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.e[mid]! > x) hi = mid; else lo = mid + 1;
    }
    return lo;
  }

  /** Recorded airtime after x (µs). */
  private airtimeAfter(x: number): number {
    const k = this.firstEndingAfter(x);
    if (k >= this.e.length) return 0;
    return this.totalUs - this.cum[k]! - Math.max(0, x - this.s[k]!);
  }

  /** Earliest t ≥ t0 with a + P(t + a − H) ≤ B, all in µs. Requires every entry to end ≤ t0. */
  private earliestFor(H: number, B: number, a: number, t0: number): number {
    const room = B - a; // ≥ 0 (assertSendable)
    if (this.airtimeAfter(t0 + a - H) <= room) return t0;
    // The largest k whose suffix (entries k..end) holds more than `room`: the window must start
    // inside entry k, leaving exactly `room` after its start.
    let lo = this.head;
    let hi = this.s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.totalUs - this.cum[mid]! > room) lo = mid; else hi = mid - 1;
    }
    const k = lo;
    const after = this.totalUs - this.cum[k]! - (this.e[k]! - this.s[k]!); // airtime of entries k+1..end
    const xStar = this.e[k]! - (room - after); // P(xStar) = room
    return Math.max(t0, xStar + H - a);
  }

  /**
   * Record a transmission. One radio cannot overlap itself: a start before the end of the last
   * transmission is moved to that end (which only makes later decisions stricter).
   */
  record(startMs: number, airtimeMs: number): void {
    if (!(Number.isFinite(startMs) && Number.isFinite(airtimeMs) && airtimeMs >= 0)) {
      throw new TrickleError('ERR_AIRTIME_PARAMS', 'scheduler', `record needs finite startMs and airtimeMs ≥ 0 (got ${startMs}, ${airtimeMs})`);
    }
    const d = durUs(airtimeMs);
    if (d === 0) return;
    const s = Math.max(toUs(startMs), this.lastEndUs());
    this.s.push(s);
    this.e.push(s + d);
    this.cum.push(this.totalUs);
    this.totalUs += d;
    if (this.strictOffTime) this.offUntilUs = Math.max(this.offUntilUs, s + d + this.offTimeUs(d));
    this.prune(startMs);
  }

  /**
   * Move the last transmission later and/or make it longer (the modem accepted the frame later
   * than planned, or reported a longer airtime). Never earlier, never shorter: the record only
   * gets stricter.
   */
  amendLast(startMs: number, airtimeMs: number): void {
    const i = this.s.length - 1;
    if (i < this.head) return;
    const s = Math.max(this.s[i]!, toUs(startMs));
    const e = Math.max(this.e[i]!, s + durUs(airtimeMs));
    this.totalUs += (e - s) - (this.e[i]! - this.s[i]!);
    this.s[i] = s;
    this.e[i] = e;
    if (this.strictOffTime) this.offUntilUs = Math.max(this.offUntilUs, e + this.offTimeUs(e - s));
  }

  private offTimeUs(d: number): number {
    const dc = this.rules.dutyCycle!;
    return Math.ceil((d * (1 - dc)) / dc);
  }

  /**
   * Drop entries that can no longer fall in any window that matters at or after nowMs. Only call
   * it with a time that has really arrived (record() does, with the transmission's start).
   */
  prune(nowMs: number): void {
    const cutoff = toUs(nowMs) - this.maxWindowUs;
    while (this.head < this.e.length && this.e[this.head]! <= cutoff) this.head++;
    if (this.head > 1024 && this.head * 2 > this.s.length) {
      this.s = this.s.slice(this.head);
      this.e = this.e.slice(this.head);
      this.cum = this.cum.slice(this.head);
      this.head = 0;
    }
  }

  /** Airtime inside [nowMs − windowMs, nowMs) for each limit. */
  usage(nowMs: number): LimitUsage[] {
    const now = toUs(nowMs);
    return this.limits.map((l) => {
      const usedMs = (this.airtimeAfter(now - l.H) - this.airtimeAfter(now)) / 1000;
      return { kind: l.kind, windowMs: l.windowMs, budgetMs: l.budgetMs, usedMs, leftMs: Math.max(0, l.budgetMs - usedMs) };
    });
  }

  /** The longest transmission (ms, to the µs) that could start at nowMs; 0 when none; Infinity when unlimited. */
  maxAirtimeAt(nowMs: number): number {
    const now = toUs(nowMs);
    if (this.lastEndUs() > now || this.offUntilUs > now) return 0;
    let cap = this.maxFrameUs ?? Number.MAX_SAFE_INTEGER;
    for (const l of this.limits) cap = Math.min(cap, l.B);
    if (cap === Number.MAX_SAFE_INTEGER) return Infinity;
    // a + P(now + a − H) is nondecreasing in a: binary search the largest legal a.
    const ok = (a: number): boolean => this.limits.every((l) => a + this.airtimeAfter(now + a - l.H) <= l.B);
    if (!ok(0)) return 0;
    if (ok(cap)) return cap / 1000;
    let lo = 0;
    let hi = cap;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (ok(mid)) lo = mid; else hi = mid;
    }
    return lo / 1000;
  }

  /** An independent copy (for planning ahead without touching the real record). */
  clone(): DutyCycleLedger {
    const c = Object.create(DutyCycleLedger.prototype) as DutyCycleLedger;
    Object.assign(c, this);
    c.s = this.s.slice();
    c.e = this.e.slice();
    c.cum = this.cum.slice();
    return c;
  }
}
