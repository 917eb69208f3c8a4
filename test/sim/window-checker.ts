/**
 * An independent, brute-force check of sliding-window airtime limits, written apart from
 * DutyCycleLedger on purpose (no shared code, no assumptions about order or overlap). It sums in
 * exact integer nanoseconds (every start and airtime is rounded to the nearest ns once; sums
 * of floats drift by ~1 ns over thousands of frames, which would be noise, not law): the sum of airtime over a window is piecewise linear in the window's position, so its
 * maximum is reached at a window that starts where a transmission starts or ends where one ends.
 * Every such window is summed transmission by transmission.
 */
export interface Transmission { startMs: number; airtimeMs: number }
export interface WindowRule { windowMs: number; budgetMs: number }

export interface WindowReport {
  windowsChecked: number;
  /** Windows whose airtime exceeds the budget (beyond `toleranceMs`). */
  violations: number;
  /** Largest airtime in any window divided by the budget. */
  maxWindowRatio: number;
  worst: { windowStartMs: number; airtimeMs: number } | null;
}

/** Airtime of `txs` inside [w, w + H), by brute force over the (sorted) transmissions that can touch it. */
function sumIn(sorted: readonly Transmission[], maxAirtime: number, w: number, H: number): number {
  // first index whose start > w − maxAirtime (anything earlier ends before w)
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]!.startMs > w - maxAirtime) hi = mid; else lo = mid + 1;
  }
  let sum = 0;
  for (let i = lo; i < sorted.length; i++) {
    const t = sorted[i]!;
    if (t.startMs >= w + H) break;
    const overlap = Math.min(t.startMs + t.airtimeMs, w + H) - Math.max(t.startMs, w);
    if (overlap > 0) sum += overlap;
  }
  return sum;
}

export function checkWindows(txs: readonly Transmission[], rule: WindowRule, toleranceMs = 0): WindowReport {
  // Times relative to the first start, so nanoseconds stay exact integers (< 2^53) even for
  // epoch-millisecond clocks; starts are whole or fractional ms, airtimes are converted alone.
  const ns = (ms: number): number => Math.round(ms * 1e6);
  const t0 = txs.reduce((m, t) => Math.min(m, t.startMs), Infinity);
  const sorted = [...txs].map((t) => ({ startMs: ns(t.startMs - t0), airtimeMs: ns(t.airtimeMs) })).sort((a, b) => a.startMs - b.startMs);
  const maxAirtime = sorted.reduce((m, t) => Math.max(m, t.airtimeMs), 0);
  const H = ns(rule.windowMs);
  const budget = ns(rule.budgetMs);
  const tolerance = ns(toleranceMs);
  const edges: number[] = [];
  for (const t of sorted) {
    edges.push(t.startMs); // window starting where a transmission starts
    edges.push(t.startMs + t.airtimeMs - H); // window ending where one ends
  }
  let violations = 0;
  let maxSum = 0;
  let worst: WindowReport['worst'] = null;
  for (const w of edges) {
    const s = sumIn(sorted, maxAirtime, w, H);
    if (s > budget + tolerance) violations++;
    if (s > maxSum) { maxSum = s; worst = { windowStartMs: t0 + w / 1e6, airtimeMs: s / 1e6 }; }
  }
  return { windowsChecked: edges.length, violations, maxWindowRatio: budget > 0 ? maxSum / budget : 0, worst };
}

/** Pairs of transmissions that overlap in time (one half-duplex radio must never do that). */
export function countOverlaps(txs: readonly Transmission[]): number {
  const sorted = [...txs].sort((a, b) => a.startMs - b.startMs);
  let n = 0;
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.startMs < sorted[i - 1]!.startMs + sorted[i - 1]!.airtimeMs - 1e-9) n++;
  }
  return n;
}

/**
 * Would adding `extra` to `txs` break any rule? Checks every window edge that touches `extra`
 * (including the edges of neighbouring transmissions).
 */
export function wouldViolate(txs: readonly Transmission[], extra: Transmission, rules: readonly WindowRule[], toleranceMs = 1e-6): boolean {
  for (const rule of rules) {
    const H = rule.windowMs;
    const near = txs.filter((t) => t.startMs + t.airtimeMs > extra.startMs - H && t.startMs < extra.startMs + extra.airtimeMs + H);
    const all = [...near, extra];
    const sorted = all.sort((a, b) => a.startMs - b.startMs);
    const maxAirtime = sorted.reduce((m, t) => Math.max(m, t.airtimeMs), 0);
    for (const t of sorted) {
      for (const w of [t.startMs, t.startMs + t.airtimeMs - H]) {
        // only windows that contain part of `extra` can be new violations
        if (w >= extra.startMs + extra.airtimeMs || w + H <= extra.startMs) continue;
        if (sumIn(sorted, maxAirtime, w, H) > rule.budgetMs + toleranceMs) return true;
      }
    }
  }
  return false;
}

