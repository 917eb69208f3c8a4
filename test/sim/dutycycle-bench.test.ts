import { describe, expect, it } from 'vitest';
import { runScenario, SCENARIOS } from '../../bench/dutycycle.ts';

// The full bench is `npm run bench:dutycycle` (24 virtual hours). Here: 2 virtual hours of each
// scenario, checked by the independent window checker. Utilization is not asserted over so short a
// run (the first hour's budget can be spent at once, which skews a 2 h ratio).
describe('duty-cycle bench (2 virtual hours per scenario)', () => {
  for (const [i, sc] of SCENARIOS.entries()) {
    it(sc.name, async () => {
      const r = await runScenario(sc, 2, 100 + i);
      expect(r.violations).toBe(0);
      expect(r.overlaps).toBe(0);
      expect(r.maxWindowRatio).toBeLessThanOrEqual(1 + 1e-9);
      expect(r.frames).toBeGreaterThan(5);
    });
  }
});
