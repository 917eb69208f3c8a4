import type { Clock, TimerHandle } from '../../src/util/clock.ts';

/** A deterministic clock: time moves only when a test calls advance/runUntil. */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: { at: number; seq: number; fn: () => void; cancelled: boolean }[] = [];

  constructor(startMs = 1_700_000_000_000) { this.t = startMs; }

  now(): number { return this.t; }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer = { at: this.t + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }

  /** Number of timers still pending. */
  get pending(): number { return this.timers.filter((x) => !x.cancelled).length; }

  /** Advance by ms, firing due timers in time order (timers set by timers fire too). */
  advance(ms: number): void { this.runUntil(this.t + ms); }

  runUntil(targetMs: number): void {
    for (;;) {
      this.timers = this.timers.filter((x) => !x.cancelled);
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers[0];
      if (!next || next.at > targetMs) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = Math.max(this.t, targetMs);
  }

  /** Fire the next pending timer, wherever it is; returns false when none is left. */
  step(): boolean {
    this.timers = this.timers.filter((x) => !x.cancelled);
    if (this.timers.length === 0) return false;
    this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const next = this.timers.shift()!;
    this.t = Math.max(this.t, next.at);
    next.fn();
    return true;
  }
}

/** Let pending promise callbacks and I/O callbacks run. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Run timers and microtasks until `done()`; fails if time stalls with work pending. */
export async function drive(clock: FakeClock, done: () => boolean, maxVirtualMs = 48 * 3600_000): Promise<void> {
  const start = clock.now();
  for (;;) {
    await flush();
    if (done()) return;
    if (!clock.step()) {
      await flush();
      if (done()) return;
      throw new Error('simulation stalled: no timers left and not done');
    }
    if (clock.now() - start > maxVirtualMs) throw new Error('simulation ran past its virtual time limit');
  }
}
