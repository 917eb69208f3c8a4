/**
 * The RNode dialect: wire vectors (test/vectors/rnode-v1.json), and RNodeModem against the
 * RNode emulator over in-memory links on a fake clock (the PTY version is test/hil/rnode-emulator.test.ts).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  RNODE_HW_MTU, RNodeAirReassembler, RNodeCmd, RNodeDecoder, decodeChannelStats, decodeRssi, decodeSnr, encodeChannelStats,
  encodeRNodeFrame, rnodeAirPackets, rnodeOnAirOverhead, rnodeSerialOverhead,
} from '../../../src/modem/rnode/rnode-protocol.ts';
import {
  RNodeConfigError, RNodeModem, resolveRNodeModemConfig, rnodeAirtimeLocksForDutyCycle, rnodeModemFactory, type RNodeModemOptions,
} from '../../../src/modem/rnode/rnode-modem.ts';
import { RNodeEmulator, rnodePreambleSymbols, type RNodeEmulatorOptions } from '../../../src/modem/emulator/rnode-emulator.ts';
import { RfMedium } from '../../../src/modem/emulator/rf-medium.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';
import { ConfigError, type ErrorCode } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import type { ReceivedFrameMeta } from '../../../src/modem/modem.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { ByteCollector } from '../../helpers/pty.ts';

interface Vectors {
  frames: { name: string; cmd: number; data: string; wire: string }[];
  values: {
    rssi: { byte: string; dbm: number }[];
    snr: { byte: string; db: number }[];
    chtm: { name: string; data: string; stats: Record<string, number> }[];
  };
  air: { name: string; len: number; seq: number; headers: string[]; lengths: number[] }[];
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/rnode-v1.json', import.meta.url), 'utf8')) as Vectors;

const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r)); };
const RADIO = { frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7, codingRate: 5, txPowerDbm: 14 };

describe('RNode wire vectors', () => {
  for (const v of vectors.frames) {
    it(`encodes and decodes: ${v.name}`, () => {
      expect(toHex(encodeRNodeFrame(v.cmd, fromHex(v.data)))).toBe(v.wire);
      const { frames, errors } = new RNodeDecoder().push(fromHex(v.wire));
      expect(errors).toEqual([]);
      expect(frames.map((f) => ({ cmd: f.cmd, data: toHex(f.data) }))).toEqual([{ cmd: v.cmd, data: v.data }]);
    });
  }

  it('decodes RSSI, SNR and channel statistics', () => {
    for (const r of vectors.values.rssi) expect(decodeRssi(fromHex(r.byte)[0]!)).toBe(r.dbm);
    for (const s of vectors.values.snr) expect(decodeSnr(fromHex(s.byte)[0]!)).toBe(s.db);
    for (const c of vectors.values.chtm) {
      expect(decodeChannelStats(fromHex(c.data))).toEqual(c.stats);
      expect(toHex(encodeChannelStats(c.stats as never))).toBe(c.data);
    }
    expect(decodeChannelStats(new Uint8Array(9))).toBeUndefined();
  });

  for (const a of vectors.air) {
    it(`splits on air like the firmware: ${a.name}`, () => {
      const packet = Uint8Array.from({ length: a.len }, (_, i) => i & 0xff);
      const parts = rnodeAirPackets(packet, a.seq);
      expect(parts.map((p) => toHex(p.subarray(0, 1)))).toEqual(a.headers);
      expect(parts.map((p) => p.length)).toEqual(a.lengths);
      const rx = new RNodeAirReassembler();
      const out = parts.map((p) => rx.push(p)).filter((x) => x !== undefined);
      expect(out).toEqual([packet]);
      expect(rnodeOnAirOverhead(a.len)).toBe(a.headers.length);
    });
  }

  it('reassembles any packet size 1..508 and survives a lost half (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: RNODE_HW_MTU }), fc.integer({ min: 0, max: 15 }), (packet, seq) => {
      const rx = new RNodeAirReassembler();
      const parts = rnodeAirPackets(packet, seq);
      // A lone second half of an earlier pair (its first half lost) must not corrupt the next packet.
      rx.push(Uint8Array.of(((seq + 1) % 16 << 4) | 1, 0xee));
      const out = parts.map((p) => rx.push(p)).filter((x) => x !== undefined);
      expect(out).toEqual([packet]);
    }));
  });

  it('resyncs after garbage and counts it (property: any split of the input)', () => {
    const wire = [...fromHex('414243'), ...encodeRNodeFrame(RNodeCmd.DATA, fromHex('c0dbc0')), ...encodeRNodeFrame(RNodeCmd.STAT_RSSI, Uint8Array.of(0x3b))];
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: wire.length }), { maxLength: 5 }), (cuts) => {
      const d = new RNodeDecoder();
      const points = [...new Set(cuts)].sort((x, y) => x - y);
      let at = 0;
      const frames: string[] = [];
      const errors: string[] = [];
      for (const p of [...points, wire.length]) {
        const r = d.push(Uint8Array.from(wire.slice(at, p)));
        frames.push(...r.frames.map((f) => `${f.cmd}:${toHex(f.data)}`));
        errors.push(...r.errors.map((e) => e.code));
        at = p;
      }
      expect(frames).toEqual(['0:c0dbc0', '35:3b']);
      expect(errors).toEqual(['ERR_FRAME_NOISE']);
    }));
  });
});

describe('RNodeModem options', () => {
  it('names the bad key and the allowed values', () => {
    expect(() => resolveRNodeModemConfig({ radio: { ...RADIO, sf: 13 } })).toThrow(/radio.sf 13 is not allowed; allowed: an integer from 5 to 12/);
    expect(() => resolveRNodeModemConfig({ radio: { ...RADIO, codingRate: 9 } })).toThrow(/codingRate 9 .* 5, 6, 7 or 8/);
    expect(() => resolveRNodeModemConfig({ radio: RADIO, maxFrameLen: 509 })).toThrow(/maxFrameLen 509 .*HW_MTU/);
    expect(() => resolveRNodeModemConfig({ radio: RADIO, airtimeLocks: { shortTermPct: 100, longTermPct: 101 } })).toThrow(ConfigError);
    expect(() => rnodeModemFactory({} as RNodeModemOptions)).toThrow(/radio settings are required/);
  });

  it('derives airtime locks from a duty cycle, never above the legal share', () => {
    expect(rnodeAirtimeLocksForDutyCycle(0.01)).toEqual({ shortTermPct: 100, longTermPct: 1 });
    expect(rnodeAirtimeLocksForDutyCycle(0.001)).toEqual({ shortTermPct: 100, longTermPct: 0.1 });
    expect(rnodeAirtimeLocksForDutyCycle(0.1, { shortTermPct: 50 })).toEqual({ shortTermPct: 50, longTermPct: 10 });
    expect(rnodeAirtimeLocksForDutyCycle(0.00999)).toEqual({ shortTermPct: 100, longTermPct: 0.99 });
    expect(() => rnodeAirtimeLocksForDutyCycle(0)).toThrow(/duty cycle must be a fraction/);
  });

  it('states its overhead: one header byte per LoRa packet on air, KISS framing on the cable', () => {
    const [l] = createMemoryLinkPair();
    const m = new RNodeModem(l, { radio: RADIO });
    m.ready.catch(() => undefined);
    expect(m.framingOverhead(new Uint8Array(100))).toEqual({ onAir: 1, serial: 3 });
    expect(m.framingOverhead(new Uint8Array(254))).toEqual({ onAir: 1, serial: 3 });
    expect(m.framingOverhead(new Uint8Array(255))).toEqual({ onAir: 2, serial: 3 });
    expect(m.framingOverhead(fromHex('c0c0db'))).toEqual({ onAir: 1, serial: 6 });
    expect(rnodeSerialOverhead(fromHex('00'))).toBe(3);
    expect(m.capabilities).toEqual({ maxFrameLen: 508, enforcesDutyCycle: false, reportsAirtime: false, channelSense: 'firmware' });
  });
});

function rig(options: { a?: Partial<RNodeEmulatorOptions>; b?: Partial<RNodeEmulatorOptions> } = {}) {
  const clock = new FakeClock();
  const medium = new RfMedium({ clock });
  const emuA = new RNodeEmulator(medium, { name: 'a', positionM: { xM: 0, yM: 0 }, statsIntervalMs: 1_000, ...options.a });
  const emuB = new RNodeEmulator(medium, { name: 'b', positionM: { xM: 1_000, yM: 0 }, statsIntervalMs: 1_000, ...options.b });
  const [hostA, devA] = createMemoryLinkPair('a');
  const [hostB, devB] = createMemoryLinkPair('b');
  emuA.attach(devA);
  emuB.attach(devB);
  return { clock, medium, emuA, emuB, hostA, hostB, devA, devB };
}

describe('RNodeModem against the RNode emulator (memory links, fake clock)', () => {
  it('detects, configures, verifies, and exchanges frames both ways with RSSI and SNR', async () => {
    const r = rig();
    const written = new ByteCollector(r.devA);
    const [a, b] = await Promise.all([
      RNodeModem.start(r.hostA, { radio: RADIO, clock: r.clock }),
      RNodeModem.start(r.hostB, { radio: RADIO, clock: r.clock }),
    ]);
    expect(a.state).toBe('ready');
    expect(a.device).toEqual({ firmwareMajor: 1, firmwareMinor: 82, firmwareVersion: '1.82' });
    expect(r.emuA.radio).toMatchObject({ frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7, codingRate: 5, txPowerDbm: 14 });
    // The start sequence, in order, byte for byte.
    expect(toHex(written.bytes())).toBe(['c00873c0', 'c05000c0', 'c00133d3e608c0', 'c0020001e848c0', 'c0030ec0', 'c00407c0', 'c00505c0', 'c00601c0'].join(''));

    const got: { from: string; frame: string; meta: ReceivedFrameMeta }[] = [];
    a.onFrame((f, meta) => got.push({ from: 'b', frame: new TextDecoder().decode(f), meta }));
    b.onFrame((f, meta) => got.push({ from: 'a', frame: new TextDecoder().decode(f), meta }));
    await a.send(new TextEncoder().encode('hello from a'));
    await settle();
    const airtime = loraAirtimeMs({ payloadBytes: 13, sf: 7, bandwidthHz: 125_000, codingRate: 5, preambleSymbols: 18 });
    r.clock.advance(airtime - 1);
    await settle();
    expect(got).toEqual([]); // still on air
    r.clock.advance(1);
    await settle();
    await b.send(new TextEncoder().encode('hello from b'));
    await settle();
    r.clock.advance(airtime);
    await settle();
    expect(got.map((g) => `${g.from}:${g.frame}`)).toEqual(['a:hello from a', 'b:hello from b']);
    // 14 dBm over 1 km with n = 2.7: about −98 dBm; SNR quantised to 0.25 dB.
    expect(got[0]!.meta.rssiDbm).toBeGreaterThan(-110);
    expect(got[0]!.meta.rssiDbm).toBeLessThan(-85);
    expect(got[0]!.meta.snrDb! * 4).toBe(Math.round(got[0]!.meta.snrDb! * 4));
    expect(a.stats()).toMatchObject({ framesSent: 1, framesReceived: 1 });
  });

  it('carries a 400-byte frame as two LoRa packets and reassembles it', async () => {
    const r = rig();
    const [a, b] = await Promise.all([RNodeModem.start(r.hostA, { radio: RADIO, clock: r.clock }), RNodeModem.start(r.hostB, { radio: RADIO, clock: r.clock })]);
    const frames: Uint8Array[] = [];
    b.onFrame((f) => frames.push(f));
    const events: number[] = [];
    r.medium.onEvent((e) => { if (e.kind === 'txStart') events.push(e.len); });
    const big = Uint8Array.from({ length: 400 }, (_, i) => (i * 7) & 0xff);
    await a.send(big);
    await settle();
    r.clock.advance(5_000);
    await settle();
    expect(events).toEqual([255, 147]);
    expect(frames).toEqual([big]);
    await expect(a.send(new Uint8Array(509))).rejects.toMatchObject({ code: 'ERR_MODEM_MTU' });
  });

  it('refuses to start when the board reports a different TX power, naming setting, wanted and reported values', async () => {
    const r = rig({ a: { misreport: { txPowerDbm: 17 } } });
    const closed: (Error | undefined)[] = [];
    const m = new RNodeModem(r.hostA, { radio: RADIO, clock: r.clock });
    m.onClose((e) => closed.push(e));
    const err = await m.ready.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RNodeConfigError);
    expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'txPowerDbm', wanted: 14, reported: 17, device: 'a.a' } });
    expect((err as Error).message).toContain('did not apply txPowerDbm: wanted 14, the board reports 17; refusing to start');
    await settle();
    expect(closed).toEqual([err]);
    expect(m.state).toBe('closed');
    await expect(m.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });

  it('refuses a TX power the board clamps (SX127x board, 20 dBm asked, 17 in force)', async () => {
    const r = rig({ a: { chip: 'sx127x' } });
    await expect(RNodeModem.start(r.hostA, { radio: { ...RADIO, txPowerDbm: 20 }, clock: r.clock }))
      .rejects.toMatchObject({ detail: { setting: 'txPowerDbm', wanted: 20, reported: 17 } });
  });

  it('accepts a reported frequency within 100 Hz and refuses one further away', async () => {
    const ok = rig({ a: { misreport: { frequencyHz: 869_525_061 } } });
    await expect(RNodeModem.start(ok.hostA, { radio: RADIO, clock: ok.clock })).resolves.toBeInstanceOf(RNodeModem);
    const bad = rig({ a: { misreport: { frequencyHz: 869_526_000 } } });
    await expect(RNodeModem.start(bad.hostA, { radio: RADIO, clock: bad.clock }))
      .rejects.toMatchObject({ detail: { setting: 'frequencyHz', wanted: 869_525_000, reported: 869_526_000 } });
  });

  it('times out with a clear message when nothing answers CMD_DETECT', async () => {
    const clock = new FakeClock();
    const [host] = createMemoryLinkPair('silent');
    const p = RNodeModem.start(host, { radio: RADIO, clock, replyTimeoutMs: 500 });
    const caught = p.catch((e: unknown) => e);
    await settle();
    clock.advance(500);
    const err = await caught;
    expect(err).toMatchObject({ code: 'ERR_MODEM_TIMEOUT' });
    expect((err as Error).message).toMatch(/no answer to CMD_DETECT from silent.a within 500 ms: the device is not running the RNode firmware/);
  });

  it('refuses firmware older than 1.52', async () => {
    const r = rig({ a: { firmwareVersion: [1, 40] } });
    await expect(RNodeModem.start(r.hostA, { radio: RADIO, clock: r.clock }))
      .rejects.toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'firmwareVersion', reported: '1.40' } });
  });

  it('sets the airtime locks in the RNode’s units, verifies the echo, and the firmware then holds packets back', async () => {
    const r = rig();
    const written = new ByteCollector(r.devA);
    const a = await RNodeModem.start(r.hostA, { radio: { ...RADIO, sf: 12 }, clock: r.clock, airtimeLocks: { shortTermPct: 100, longTermPct: 1 } });
    await RNodeModem.start(r.hostB, { radio: { ...RADIO, sf: 12 }, clock: r.clock });
    expect(toHex(written.bytes())).toContain('c00b2710c0c00c0064c0');
    expect(a.airtimeLocks).toEqual({ shortTermPct: 100, longTermPct: 1 });
    expect(a.capabilities.enforcesDutyCycle).toBe(true);
    expect(r.emuA.airtimeLocks).toEqual({ shortTermPct: 100, longTermPct: 1 });
    // SF12 / 125 kHz: a 200-byte frame is several seconds on air; 1 % of an hour is 36 s: the firmware stops before the 7th.
    const stats: number[] = [];
    a.onChannelStats((s) => stats.push(s.airtimeLongPct));
    for (let i = 0; i < 7; i++) await a.send(new Uint8Array(200).fill(i));
    await settle();
    r.clock.advance(60_000);
    await settle();
    const frameAirtimeMs = loraAirtimeMs({ payloadBytes: 201, sf: 12, bandwidthHz: 125_000, codingRate: 5, preambleSymbols: rnodePreambleSymbols(12, 125_000) });
    // Sent while the hour's own airtime is below 36 s; the frame that crosses it is the last.
    expect(r.emuA.counters.txPackets).toBe(Math.ceil(36_000 / frameAirtimeMs));
    expect(r.emuA.counters.txPackets).toBeLessThan(7);
    expect(r.emuA.counters.lockWaits).toBeGreaterThan(0);
    expect(Math.max(...stats)).toBeGreaterThanOrEqual(1);
    expect(a.channelStats?.airtimeLongPct).toBeGreaterThanOrEqual(1);
    // Later changes are verified too.
    await expect(a.setAirtimeLocks(50, 10)).resolves.toEqual({ shortTermPct: 50, longTermPct: 10 });
    const mis = rig({ a: { misreport: { longTermPct: 5 } } });
    const m = await RNodeModem.start(mis.hostA, { radio: RADIO, clock: mis.clock });
    await expect(m.setAirtimeLocks(100, 1)).rejects.toMatchObject({ detail: { setting: 'airtimeLocks.longTermPct', wanted: 1, reported: 5 } });
  });

  it('reports device errors, unknown commands and a reset; closes when the device goes away', async () => {
    const r = rig();
    const a = await RNodeModem.start(r.hostA, { radio: RADIO, clock: r.clock });
    const drops: ErrorCode[] = [];
    a.onDrop((code) => drops.push(code));
    await r.devA.write(encodeRNodeFrame(RNodeCmd.ERROR, Uint8Array.of(0x02)));
    await r.devA.write(encodeRNodeFrame(0x77, Uint8Array.of(1)));
    await r.devA.write(encodeRNodeFrame(RNodeCmd.STAT_BAT, Uint8Array.of(0, 50)));
    await settle();
    expect(drops).toEqual(['ERR_MODEM_DEVICE', 'ERR_KISS_COMMAND']);
    const closed = new Promise<Error | undefined>((res) => a.onClose(res));
    r.emuA.reboot();
    expect(await closed).toMatchObject({ code: 'ERR_MODEM_DEVICE', message: expect.stringContaining('reset itself') as unknown });

    const b = await RNodeModem.start(r.hostB, { radio: RADIO, clock: r.clock });
    const gone = new Promise<Error | undefined>((res) => b.onClose(res));
    await r.devB.close(); // the cable is pulled
    expect(await gone).toMatchObject({ code: 'ERR_LINK_IO' });
    await expect(b.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });

  it('works as a createModem hook: send waits for the start sequence; flow control waits for CMD_READY', async () => {
    const r = rig();
    const create = rnodeModemFactory({ radio: RADIO, clock: r.clock, flowControl: true });
    const a = create(r.hostA);
    const b = await RNodeModem.start(r.hostB, { radio: RADIO, clock: r.clock });
    const got: number[] = [];
    b.onFrame((f) => got.push(f[0]!));
    const first = a.send(Uint8Array.of(1)); // before ready
    await first;
    const second = a.send(Uint8Array.of(2));
    let secondDone = false;
    void second.then(() => { secondDone = true; });
    await settle();
    expect(secondDone).toBe(false); // waiting for CMD_READY: the first is still on air
    r.clock.advance(1_000);
    await settle();
    expect(secondDone).toBe(true);
    r.clock.advance(1_000);
    await settle();
    expect(got).toEqual([1, 2]);
    await a.close();
    expect(r.emuA.radio).toBeUndefined(); // radio turned off on close
  });
});
