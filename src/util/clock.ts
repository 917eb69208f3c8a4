/**
 * Injected time. Pure layers take `nowMs` values; stateful components take a Clock
 * so tests run on a fake clock (test/helpers/fake-clock.ts) and 24 virtual hours
 * pass in seconds.
 */
export interface TimerHandle { cancel(): void }

export interface Clock {
  /** Milliseconds since the epoch (or any fixed origin; only differences matter). */
  now(): number;
  /** Run fn after delayMs; the handle cancels it. */
  setTimer(delayMs: number, fn: () => void): TimerHandle;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(delayMs, fn) {
    const t = setTimeout(fn, Math.max(0, delayMs));
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
};

/** Randomness is injected too, so tests are reproducible. */
export type RandomBytes = (n: number) => Uint8Array;
