/**
 * At most one report per key per interval: the first occurrence of a key is reported at once;
 * later ones within the interval are only counted, and the count (`suppressed`) goes with the
 * next report. For warnings that anyone in radio range can cause (dropped frames, refused
 * handshakes): they must not fill the disk. Counters for the status page are kept elsewhere.
 */
export type Throttle = (key: string, report: (suppressed: number) => void) => void;

export function throttle(intervalMs: number, now: () => number): Throttle {
  const seen = new Map<string, { lastMs: number; suppressed: number }>();
  return (key, report) => {
    const t = now();
    const s = seen.get(key);
    if (s !== undefined && t - s.lastMs < intervalMs) {
      s.suppressed++;
      return;
    }
    if (s === undefined && seen.size >= 1024) seen.clear(); // keys are reason codes; a bound anyway
    report(s?.suppressed ?? 0);
    seen.set(key, { lastMs: t, suppressed: 0 });
  };
}
