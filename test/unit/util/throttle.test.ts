import { describe, expect, it } from 'vitest';
import { throttle } from '../../../src/util/throttle.ts';

describe('throttled reports', () => {
  it('reports the first of each key at once, then at most one per interval with the count suppressed', () => {
    let t = 0;
    const gate = throttle(60_000, () => t);
    const reports: [string, number][] = [];
    const hit = (k: string) => gate(k, (n) => reports.push([k, n]));
    for (let i = 0; i < 3484; i++) { hit('ERR_FRAME_BAD_FCS'); t += 10; } // 34.8 s of noise
    hit('ERR_NOISE_DECRYPT');
    t = 61_000;
    hit('ERR_FRAME_BAD_FCS');
    expect(reports).toEqual([['ERR_FRAME_BAD_FCS', 0], ['ERR_NOISE_DECRYPT', 0], ['ERR_FRAME_BAD_FCS', 3483]]);
  });
});
