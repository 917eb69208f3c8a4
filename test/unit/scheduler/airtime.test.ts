import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ax25AfskAirtimeMs, exactLoraBandwidthHz, fskAirtimeMs, hdlcStuffedBits, loraAirtime, loraAirtimeMs,
  loraMaxPayloadBytes, type LoraParams,
} from '../../../src/scheduler/airtime.ts';
import { isTrickleError } from '../../../src/errors.ts';

interface Vector { name: string; params: LoraParams; airtimeMs: number; symbolMs: number; ldro: boolean }
const vectors = JSON.parse(readFileSync(new URL('../../vectors/lora-airtime.json', import.meta.url), 'utf8')) as {
  airtime: Vector[];
  us915MaxPayload400ms: { rows: { sf: number; maxPhyPayloadBytes: number; loraWanN: number }[]; loraWanOverheadBytes: number };
};

function code(fn: () => unknown): string | undefined {
  try { fn(); } catch (e) { return isTrickleError(e) ? e.code : 'not a TrickleError'; }
  return undefined;
}

describe('loraAirtimeMs: vectors (test/vectors/lora-airtime.json)', () => {
  for (const v of vectors.airtime) {
    it(v.name, () => {
      const r = loraAirtime(v.params);
      expect(r.airtimeMs).toBe(v.airtimeMs);
      expect(r.symbolMs).toBeCloseTo(v.symbolMs, 9);
      expect(r.lowDataRateOptimize).toBe(v.ldro);
    });
  }

  it('issue 5 figures: 56.576 ms at SF7 and 1318.912 ms at SF12, 20 bytes', () => {
    const p = { payloadBytes: 20, bandwidthHz: 125_000, codingRate: 5, preambleSymbols: 8, explicitHeader: true, crc: true };
    expect(loraAirtimeMs({ ...p, sf: 7 })).toBe(56.576);
    expect(loraAirtimeMs({ ...p, sf: 12 })).toBe(1318.912);
  });
});

describe('US915: largest payload within the 400 ms dwell', () => {
  // Asserted: the largest PHY payload (what the radio carries) with airtime ≤ 400 ms is
  // 24/66/138/255 bytes at SF10/9/8/7 (issue 5), and the next byte up is over 400 ms (or over 255).
  // Those are exactly LoRaWAN RP002's US915 DR0..DR3 application maxima N = 11/53/125/242 plus the
  // 13 bytes of LoRaWAN overhead (MHDR 1, FHDR 7, FPort 1, MIC 4).
  const radio = { bandwidthHz: 125_000, codingRate: 5, preambleSymbols: 8, explicitHeader: true, crc: true } as const;
  for (const row of vectors.us915MaxPayload400ms.rows) {
    it(`SF${row.sf}: ${row.maxPhyPayloadBytes} B PHY = ${row.loraWanN} B LoRaWAN N + 13`, () => {
      expect(loraMaxPayloadBytes({ ...radio, sf: row.sf }, 400)).toBe(row.maxPhyPayloadBytes);
      expect(row.loraWanN + vectors.us915MaxPayload400ms.loraWanOverheadBytes).toBe(row.maxPhyPayloadBytes);
      expect(loraAirtimeMs({ ...radio, sf: row.sf, payloadBytes: row.maxPhyPayloadBytes })).toBeLessThanOrEqual(400);
      if (row.maxPhyPayloadBytes < 255) {
        expect(loraAirtimeMs({ ...radio, sf: row.sf, payloadBytes: row.maxPhyPayloadBytes + 1 })).toBeGreaterThan(400);
      }
    });
  }
});

describe('loraAirtime: rules', () => {
  it('LDRO auto turns on exactly when a symbol lasts ≥ 16 ms', () => {
    const p = { payloadBytes: 10, codingRate: 5 };
    expect(loraAirtime({ ...p, sf: 10, bandwidthHz: 125_000 }).lowDataRateOptimize).toBe(false); // 8.192 ms
    expect(loraAirtime({ ...p, sf: 11, bandwidthHz: 125_000 }).lowDataRateOptimize).toBe(true); // 16.384 ms
    expect(loraAirtime({ ...p, sf: 12, bandwidthHz: 250_000 }).lowDataRateOptimize).toBe(true); // 16.384 ms
    expect(loraAirtime({ ...p, sf: 12, bandwidthHz: 500_000 }).lowDataRateOptimize).toBe(false); // 8.192 ms
    // forcing it changes the result
    expect(loraAirtimeMs({ ...p, payloadBytes: 20, sf: 10, bandwidthHz: 125_000, lowDataRateOptimize: true }))
      .toBeGreaterThan(loraAirtimeMs({ ...p, payloadBytes: 20, sf: 10, bandwidthHz: 125_000 }));
  });

  it('accepts nominal and exact bandwidths alike', () => {
    expect(exactLoraBandwidthHz(41_700)).toBeCloseTo(125_000 / 3, 6);
    expect(exactLoraBandwidthHz(41_667)).toBeCloseTo(125_000 / 3, 6);
    expect(exactLoraBandwidthHz(7_812.5)).toBe(7_812.5);
  });

  it('refuses bad parameters with ERR_AIRTIME_PARAMS naming the allowed values', () => {
    const ok: LoraParams = { payloadBytes: 20, sf: 7, bandwidthHz: 125_000, codingRate: 5 };
    const cases: [Partial<LoraParams>, RegExp][] = [
      [{ sf: 13 }, /5\.\.12/],
      [{ sf: 4 }, /5\.\.12/],
      [{ sf: 5, chip: 'sx127x' }, /6\.\.12 on an SX127x/],
      [{ sf: 6, chip: 'sx127x' }, /implicit header/],
      [{ bandwidthHz: 100_000 }, /7800, 10400, .*500000/],
      [{ codingRate: 4 }, /5, 6, 7, 8/],
      [{ codingRate: 1 }, /4\/5/],
      [{ payloadBytes: 256 }, /0\.\.255/],
      [{ payloadBytes: 1.5 }, /0\.\.255/],
      [{ preambleSymbols: 3 }, /6\.\.65535/],
    ];
    for (const [bad, msg] of cases) {
      let err: unknown;
      try { loraAirtime({ ...ok, ...bad }); } catch (e) { err = e; }
      expect(isTrickleError(err, 'ERR_AIRTIME_PARAMS'), JSON.stringify(bad)).toBe(true);
      expect((err as Error).message).toMatch(msg);
    }
  });

  it('is nondecreasing in payload length and in SF (property)', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 254 }), fc.integer({ min: 7, max: 11 }), fc.constantFrom(125_000, 250_000, 500_000), fc.integer({ min: 5, max: 8 }),
      (n, sf, bw, cr) => {
        const a = loraAirtimeMs({ payloadBytes: n, sf, bandwidthHz: bw, codingRate: cr });
        expect(loraAirtimeMs({ payloadBytes: n + 1, sf, bandwidthHz: bw, codingRate: cr })).toBeGreaterThanOrEqual(a);
        expect(loraAirtimeMs({ payloadBytes: n, sf: sf + 1, bandwidthHz: bw, codingRate: cr })).toBeGreaterThan(a);
      },
    ));
  });
});

describe('FSK and AX.25/AFSK airtime', () => {
  it('FSK: bytes × 8 / bit rate, with preamble, sync, length and CRC', () => {
    // 5 + 3 + 1 + 20 + 2 = 31 bytes = 248 bits at 50 kbit/s = 4.96 ms
    expect(fskAirtimeMs({ payloadBytes: 20, bitRateBps: 50_000 })).toBeCloseTo(4.96, 9);
    expect(code(() => fskAirtimeMs({ payloadBytes: 20, bitRateBps: 0 }))).toBe('ERR_AIRTIME_PARAMS');
  });

  it('AX.25 at 1200 Bd: TXDELAY + flags + frame + FCS + worst-case stuffing', () => {
    // 50 B + 2 FCS = 416 bits, worst-case stuffing floor(416/5) = 83, flags 16 → 515 bits
    expect(ax25AfskAirtimeMs({ frameBytes: 50, txDelayMs: 300 })).toBeCloseTo(300 + (515 * 1000) / 1200, 9);
    expect(ax25AfskAirtimeMs({ frameBytes: 50, txDelayMs: 0, stuffing: 'none' })).toBeCloseTo((432 * 1000) / 1200, 9);
    const expected = ax25AfskAirtimeMs({ frameBytes: 50, txDelayMs: 0, stuffing: 'expected' });
    expect(expected).toBeCloseTo(((432 + 416 / 62) * 1000) / 1200, 9);
  });

  it('worst-case stuffing bounds the exact count for any bytes (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (bytes) => {
      expect(hdlcStuffedBits(bytes)).toBeLessThanOrEqual(Math.floor((bytes.length * 8) / 5));
    }));
    expect(hdlcStuffedBits(new Uint8Array(10).fill(0xff))).toBe(16); // 80 ones → 16 stuffed zeros
    expect(hdlcStuffedBits(new Uint8Array(10))).toBe(0);
  });
});
