/**
 * The simulated RF medium behind the native-firmware emulator, on a fake clock: airtime from
 * the Semtech formula, path loss, half duplex, collisions (with and without capture), loss
 * rate, CAD. Model: firmware-protocol/spec/04-emulator.md.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { RfMedium, DEMOD_SNR_LIMIT_DB, type RfNode, type RfRadioConfig, type RfReceiveMeta, type RfMediumOptions } from '../../../src/modem/emulator/rf-medium.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';

const BASE: RfRadioConfig = {
  frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 9, codingRate: 5, txPowerDbm: 14,
  preambleSymbols: 8, syncWord: 0x12, crcOn: true, implicitHeader: false, invertIq: false,
};

interface TestNode { node: RfNode; rx: { frame: Uint8Array; meta: RfReceiveMeta }[]; config: RfRadioConfig }

function world(options: RfMediumOptions = {}): { clock: FakeClock; medium: RfMedium; add(name: string, xM: number, config?: Partial<RfRadioConfig>, ppm?: number): TestNode } {
  const clock = new FakeClock();
  const medium = new RfMedium({ clock, ...options });
  return {
    clock, medium,
    add(name, xM, config = {}, ppm = 0) {
      const t: TestNode = { node: undefined as unknown as RfNode, rx: [], config: { ...BASE, ...config } };
      t.node = medium.join({ name, positionM: { xM, yM: 0 }, crystalPpm: ppm, config: () => t.config, onReceive: (frame, meta) => t.rx.push({ frame, meta }) });
      return t;
    },
  };
}

const frame = (n: number, fill = 0xaa): Uint8Array => new Uint8Array(n).fill(fill);

describe('RfMedium', () => {
  it('a transmission lasts exactly the LoRa time on air of src/scheduler/airtime.ts', () => {
    const w = world();
    const a = w.add('a', 0);
    const b = w.add('b', 100);
    const want = loraAirtimeMs({ payloadBytes: 20, sf: 9, bandwidthHz: 125_000, codingRate: 5 });
    let doneAt = 0;
    const start = w.clock.now();
    expect(a.node.transmit(frame(20), () => { doneAt = w.clock.now(); })).toBe(want);
    expect(a.node.transmitting).toBe(true);
    w.clock.advance(want - 0.001);
    expect(b.rx).toHaveLength(0);
    w.clock.advance(0.001);
    expect(doneAt - start).toBeCloseTo(want, 3); // epoch-ms floats keep ~µs precision
    expect(b.rx).toHaveLength(1);
    expect(b.rx[0]!.frame).toEqual(frame(20));
    expect(b.rx[0]!.meta.airtimeMs).toBe(want);
  });

  it('RSSI follows the log-distance model, SNR the thermal noise floor, frequency error the crystals', () => {
    const w = world({ pathLossExponent: 3 });
    const a = w.add('a', 0, {}, 5);
    const b = w.add('b', 2_000, {}, -5);
    a.node.transmit(frame(10), () => {});
    w.clock.advance(1_000);
    const meta = b.rx[0]!.meta;
    // FSPL(1 m, 869.525 MHz) = 20·log10(4π·1·f/c) = 31.23 dB; + 10·3·log10(2000) = 99.03 dB.
    const fspl1m = 20 * Math.log10((4 * Math.PI * 869_525_000) / 299_792_458);
    const rssi = 14 - (fspl1m + 30 * Math.log10(2_000));
    expect(meta.rssiDbm).toBe(Math.round(rssi));
    const noise = -174 + 10 * Math.log10(125_000) + 6;
    expect(meta.snrDb).toBe(Math.round((rssi - noise) * 4) / 4);
    expect(meta.frequencyErrorHz).toBe(Math.round((10 * 869_525_000) / 1e6));
  });

  it('two overlapping transmissions on one channel and SF collide: a third node receives neither', () => {
    const w = world();
    const a = w.add('a', 0);
    const b = w.add('b', 500);
    const c = w.add('c', 1_000);
    a.node.transmit(frame(30, 1), () => {});
    w.clock.advance(20);
    c.node.transmit(frame(30, 2), () => {});
    w.clock.advance(2_000);
    expect(b.rx).toEqual([]);
    // At b both frames collide; a and c are each other's receivers but were transmitting.
    expect(w.medium.stats().lost).toMatchObject({ collision: 2, halfDuplex: 2 });
    expect(w.medium.stats().delivered).toBe(0);
  });

  it('back-to-back transmissions do not collide', () => {
    const w = world();
    const a = w.add('a', 0);
    const b = w.add('b', 500);
    const c = w.add('c', 1_000);
    const t = a.node.transmit(frame(30, 1), () => { c.node.transmit(frame(30, 2), () => {}); });
    w.clock.advance(3 * t);
    expect(b.rx.map((r) => r.frame[0])).toEqual([1, 2]);
  });

  it('with capture on, the much stronger frame survives a collision at a receiver close to its sender', () => {
    const w = world({ capture: { thresholdDb: 6 } });
    const a = w.add('a', 0);
    const b = w.add('b', 50); // 50 m from a, 950 m from c: ~35 dB stronger
    const c = w.add('c', 1_000);
    a.node.transmit(frame(30, 1), () => {});
    c.node.transmit(frame(30, 2), () => {});
    w.clock.advance(2_000);
    expect(b.rx.map((r) => r.frame[0])).toEqual([1]);
    expect(w.medium.stats().lost.collision).toBe(1);
  });

  it('half duplex: a node that transmits during an incoming frame loses it', () => {
    const w = world();
    const a = w.add('a', 0);
    const b = w.add('b', 500);
    a.node.transmit(frame(50, 1), () => {});
    w.clock.advance(100);
    b.node.transmit(frame(5, 2), () => {}); // short, ends before a's frame
    w.clock.advance(2_000);
    expect(b.rx).toEqual([]);
    expect(a.rx).toEqual([]);
    expect(w.medium.stats().lost.halfDuplex).toBe(2);
  });

  it('different spreading factors neither hear nor disturb each other', () => {
    const w = world();
    const a = w.add('a', 0, { sf: 7 });
    const b = w.add('b', 500, { sf: 7 });
    const c = w.add('c', 1_000, { sf: 10 });
    a.node.transmit(frame(30, 1), () => {});
    c.node.transmit(frame(30, 2), () => {});
    w.clock.advance(3_000);
    expect(b.rx.map((r) => r.frame[0])).toEqual([1]);
    expect(w.medium.stats().lost.collision).toBe(0);
  });

  it('a frame below the demodulation SNR limit is lost at SF7 and received at SF12', () => {
    // 14 dBm, n = 2.7: find a distance where SNR is between the SF7 (−7.5) and SF12 (−20) limits.
    const w = world();
    const noise = w.medium.noiseFloorDbm(125_000);
    let d = 100;
    while (w.medium.meanRssiDbm({ xM: 0, yM: 0 }, { xM: d, yM: 0 }, 14, BASE.frequencyHz) - noise > -12) d *= 1.05;
    for (const sf of [7, 12]) {
      const v = world();
      const a = v.add('a', 0, { sf });
      const b = v.add('b', d, { sf });
      a.node.transmit(frame(10), () => {});
      v.clock.advance(5_000);
      if (sf === 7) { expect(b.rx).toEqual([]); expect(v.medium.stats().lost.weakSignal).toBe(1); }
      else { expect(b.rx).toHaveLength(1); expect(b.rx[0]!.meta.snrDb).toBeGreaterThan(DEMOD_SNR_LIMIT_DB[12]!); }
    }
  });

  it('random loss comes out at the configured rate (seeded, 4000 frames on a fake clock)', () => {
    for (const lossRate of [0, 0.1, 0.3]) {
      const w = world({ lossRate, seed: 42 });
      const a = w.add('a', 0, { sf: 7, bandwidthHz: 500_000 });
      const b = w.add('b', 100, { sf: 7, bandwidthHz: 500_000 });
      const n = 4_000;
      for (let i = 0; i < n; i++) {
        a.node.transmit(frame(10), () => {});
        w.clock.advance(100);
      }
      const rate = 1 - b.rx.length / n;
      expect(w.medium.stats().lost.random).toBe(n - b.rx.length);
      // Binomial σ = sqrt(p(1-p)/n) ≤ 0.0073; 4σ bounds.
      expect(Math.abs(rate - lossRate)).toBeLessThan(0.03);
    }
  });

  it('CAD detects a transmission in progress on its channel and SF, and nothing otherwise', () => {
    const w = world();
    const a = w.add('a', 0);
    const b = w.add('b', 500);
    const results: boolean[] = [];
    b.node.cad(2, (d) => results.push(d));
    w.clock.advance(100);
    a.node.transmit(frame(50), () => {});
    w.clock.advance(10);
    b.node.cad(2, (d) => results.push(d));
    w.clock.advance(100);
    b.config = { ...b.config, sf: 8 };
    b.node.cad(2, (d) => results.push(d));
    w.clock.advance(100);
    expect(results).toEqual([false, true, false]);
  });

  it('refuses a second transmission while transmitting', () => {
    const w = world();
    const a = w.add('a', 0);
    a.node.transmit(frame(10), () => {});
    expect(() => a.node.transmit(frame(10), () => {})).toThrow(/already transmitting/);
  });
});
