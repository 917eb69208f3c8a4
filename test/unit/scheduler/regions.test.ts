import { describe, expect, it } from 'vitest';
import { ConfigError, isTrickleError } from '../../../src/errors.ts';
import {
  amateurRegion, customRegion, REGIONS, resolveChannel, RegionChannelError,
} from '../../../src/scheduler/regions.ts';

function refusal(fn: () => unknown): RegionChannelError {
  try { fn(); } catch (e) {
    if (e instanceof RegionChannelError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('EU868 sub-bands (EN 300 220-2)', () => {
  const cases: [number, number, string, number | null][] = [
    [864_000_000, 125_000, 'eu868-863-865', 0.001],
    [867_100_000, 125_000, 'eu868-865-868', 0.01],
    [868_100_000, 125_000, 'eu868-868.0-868.6', 0.01],
    [868_950_000, 125_000, 'eu868-868.7-869.2', 0.001],
    [869_525_000, 125_000, 'eu868-869.4-869.65', 0.1],
    [869_525_000, 250_000, 'eu868-869.4-869.65', 0.1], // edges 869.4 and 869.65 exactly: allowed
    [869_850_000, 125_000, 'eu868-869.7-870', 0.01],
  ];
  for (const [f, bw, id, dc] of cases) {
    it(`${f / 1e6} MHz BW${bw / 1000} → ${id} at ${dc}`, () => {
      const ch = resolveChannel('eu868', f, bw);
      expect(ch.subBand.id).toBe(id);
      expect(ch.rules.dutyCycle).toBe(dc);
      expect(ch.rules.limits).toEqual([{ kind: 'duty-cycle', windowMs: 3_600_000, budgetMs: dc! * 3_600_000 }]);
      expect(ch.rules.regulation).toMatch(/EN 300 220/);
    });
  }

  it('the default channel is legal: 869.525 MHz BW125 in the 10 % / 500 mW sub-band', () => {
    const d = REGIONS.eu868.defaultChannel;
    const ch = resolveChannel('eu868', d.freqHz, d.bandwidthHz);
    expect(ch.rules.dutyCycle).toBe(0.1);
    expect(ch.subBand.maxPowerMw).toBe(500);
  });

  it('checks both edges: 868.55 MHz BW125 sticks out of 868.0–868.6', () => {
    const e = refusal(() => resolveChannel('eu868', 868_550_000, 125_000));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.code).toBe('ERR_REGION_CHANNEL');
    expect(e.message).toMatch(/868\.4875 MHz–868\.6125 MHz/);
    expect(e.message).toMatch(/sticks out of sub-band 868 MHz–868\.6 MHz/);
  });

  it('refuses a channel straddling two sub-bands and names the legal choices', () => {
    const e = refusal(() => resolveChannel('eu868', 868_000_000, 125_000)); // 867.9375–868.0625
    expect(e.message).toMatch(/straddles sub-bands 865 MHz–868 MHz and 868 MHz–868\.6 MHz/);
    for (const s of REGIONS.eu868.subBands) {
      expect(e.message).toContain(`--freq ${s.suggestedChannel.freqHz}`);
      // every suggestion is itself legal
      expect(resolveChannel('eu868', s.suggestedChannel.freqHz, s.suggestedChannel.bandwidthHz).subBand.id).toBe(s.id);
    }
  });

  it('refuses gaps between sub-bands and frequencies outside the region', () => {
    expect(refusal(() => resolveChannel('eu868', 869_300_000, 125_000)).message).toMatch(/outside every sub-band/);
    expect(refusal(() => resolveChannel('eu868', 915_000_000, 125_000)).message).toMatch(/Legal sub-bands in EU/);
    expect(refusal(() => resolveChannel('eu868', 869_650_000, 125_000)).message).toMatch(/straddles/); // 869.5875–869.7125
  });
});

describe('US915 (FCC 15.247) and AS923', () => {
  it('BW125: 400 ms per channel per 20 s and 400 ms per transmission', () => {
    const r = resolveChannel('us915', 903_900_000, 125_000).rules;
    expect(r.dutyCycle).toBeNull();
    expect(r.limits).toEqual([{ kind: 'dwell', windowMs: 20_000, budgetMs: 400 }]);
    expect(r.maxFrameAirtimeMs).toBe(400);
    expect(r.regulation).toMatch(/15\.247\(a\)\(1\)\(i\)/);
  });
  it('BW250: 400 ms per 10 s; BW500: digital modulation, no dwell', () => {
    expect(resolveChannel('us915', 904_600_000, 250_000).rules.limits).toEqual([{ kind: 'dwell', windowMs: 10_000, budgetMs: 400 }]);
    const r500 = resolveChannel('us915', 904_600_000, 500_000).rules;
    expect(r500.limits).toEqual([]);
    expect(r500.maxFrameAirtimeMs).toBeNull();
  });
  it('refuses 901.95 MHz BW125 (below 902 MHz)', () => {
    expect(refusal(() => resolveChannel('us915', 902_000_000, 125_000)).code).toBe('ERR_REGION_CHANNEL');
  });
  it('AS923: 400 ms per transmission', () => {
    const r = resolveChannel('as923', 923_200_000, 125_000).rules;
    expect(r.maxFrameAirtimeMs).toBe(400);
    expect(r.limits).toEqual([]);
  });
});

describe('custom and licensed regions', () => {
  it('custom rows carry their own limits and must cite a rule', () => {
    const reg = customRegion([{ lowHz: 433_050_000, highHz: 434_790_000, dutyCycle: 0.1, regulation: 'ERC 70-03 Annex 1 h1.4 (433 MHz, 10 %)' }]);
    const ch = resolveChannel(reg, 433_920_000, 125_000);
    expect(ch.rules.dutyCycle).toBe(0.1);
    expect(() => customRegion([{ lowHz: 1, highHz: 2, regulation: '' }])).toThrow(ConfigError);
    expect(() => customRegion([{ lowHz: 2, highHz: 1, regulation: 'x' }])).toThrow(/lowHz < highHz/);
    expect(() => customRegion([{ lowHz: 1e8, highHz: 2e8, dutyCycle: 2, regulation: 'x' }])).toThrow(/dutyCycle/);
    expect(() => customRegion([
      { lowHz: 1e8, highHz: 2e8, regulation: 'a' }, { lowHz: 1.5e8, highHz: 3e8, regulation: 'b' },
    ])).toThrow(/overlap/);
  });
  it('amateur override: explicit licence, no duty-cycle limit, marked licensed', () => {
    expect(() => amateurRegion({ lowHz: 430e6, highHz: 440e6, licence: ' ' })).toThrow(/licence/);
    const ch = resolveChannel(amateurRegion({ lowHz: 430e6, highHz: 440e6, licence: 'DL1ABC' }), 433_775_000, 125_000);
    expect(ch.licensed).toBe(true);
    expect(ch.rules.limits).toEqual([]);
    expect(ch.rules.regulation).toMatch(/DL1ABC/);
  });
  it('unknown region names the allowed ones', () => {
    let err: unknown;
    try { resolveChannel('eu433' as never, 433e6, 125e3); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_CONFIG')).toBe(true);
    expect((err as Error).message).toMatch(/eu868, us915, as923, custom, amateur/);
  });
});
