/**
 * NativeModem against the emulated firmware over in-memory links, on a fake clock: the start
 * sequence and its refusals, TX_DONE airtime, RECEIVE metadata, liveness, BOOT, reconnection.
 * (The same paths over real ttys: test/hil/native-emulator.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import type { Link } from '../../../src/link/link.ts';
import { RfMedium } from '../../../src/modem/emulator/rf-medium.ts';
import { EmulatedModem, type EmulatedModemOptions } from '../../../src/modem/emulator/emulated-modem.ts';
import {
  NativeModem, NativeConfigError, type NativeModemOptions, type NativeModemState, type NativeReceivedFrameMeta,
} from '../../../src/modem/native/native-modem.ts';
import { encodeNativeFrame, nativeMessage } from '../../../src/modem/native/codec.ts';
import { ConfigError, TrickleError } from '../../../src/errors.ts';
import { loraAirtimeMs } from '../../../src/scheduler/airtime.ts';

const RADIO = { frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 9, codingRate: 5, txPowerDbm: 14 };

/** Let queued microtasks and immediates (memory-link deliveries) run. */
async function flush(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

function bench(mediumOpts: { lossRate?: number } = {}) {
  const clock = new FakeClock();
  const medium = new RfMedium({ clock, ...mediumOpts });
  let n = 0;
  const board = (opts: Partial<EmulatedModemOptions> = {}, xM = 0) => {
    const emu = new EmulatedModem(medium, { name: `board${n++}`, positionM: { xM, yM: 0 }, ...opts });
    const plug = (): Link => {
      const [host, dev] = createMemoryLinkPair(emu.name);
      emu.attach(dev, { reboot: true });
      return host;
    };
    return { emu, plug };
  };
  const start = (link: Link, opts: Partial<NativeModemOptions> = {}) =>
    NativeModem.start(link, { radio: RADIO, clock, pingIntervalMs: 0, ...opts });
  return { clock, medium, board, start };
}

describe('NativeModem start sequence', () => {
  it('handshakes, applies the settings and reads them back', async () => {
    const b = bench();
    const { emu, plug } = b.board({ firmwareVersion: [1, 2, 3], chip: 'SX1276' });
    const modem = await b.start(plug());
    expect(modem.state).toBe('ready');
    expect(modem.device).toMatchObject({ protocolVersion: 1, firmwareVersion: '1.2.3', chip: 'SX1276', firmwareName: 'trickle-emulator' });
    expect(modem.capabilities).toEqual({ maxFrameLen: 255, enforcesDutyCycle: false, reportsAirtime: true, channelSense: 'host' });
    expect(modem.radioSettings).toMatchObject({ ...RADIO, preambleSymbols: 8, syncWord: 0x12, crcOn: true, implicitHeader: false });
    expect(emu.radio).toMatchObject({ frequencyHz: 869_525_000, sf: 9, flags: 1 });
    await modem.close();
  });

  it('refuses to start when the read-back differs, naming the setting, the wanted and the reported value', async () => {
    const b = bench();
    const { plug } = b.board({ misreport: { txPowerDbm: 10 } });
    const err = await b.start(plug(), { radio: { ...RADIO, txPowerDbm: 20 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NativeConfigError);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'txPowerDbm', wanted: 20, reported: 10 } });
    expect((err as Error).message).toMatch(/did not apply txPowerDbm: wanted 20, the board reports 10/);
  });

  it('refuses settings outside the board capabilities before sending them, listing what is allowed', async () => {
    const b = bench();
    const { plug } = b.board({ chip: 'SX1276' });
    const err = await b.start(plug(), { radio: { ...RADIO, sf: 5 } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'sf', wanted: 5, allowed: '6, 7, 8, 9, 10, 11, 12' } });
    const power = await b.start(b.board().plug(), { radio: { ...RADIO, txPowerDbm: 30 } }).catch((e: unknown) => e);
    expect((power as Error).message).toMatch(/txPowerDbm = 30; allowed: -9..22 dBm/);
  });

  it('reports a SET_RADIO refusal (ERROR BAD_PARAMETER) as a config error naming the parameter', async () => {
    const b = bench();
    const err = await b.start(b.board().plug(), { radio: { ...RADIO, preambleSymbols: 4 } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'preambleSymbols', wanted: '4' } });
    expect((err as Error).message).toMatch(/refused preambleSymbols = 4: preamble 6..65535/);
  });

  it('a board that never answers HELLO fails with ERR_MODEM_TIMEOUT and a hint', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    const link = plug();
    emu.hang();
    const p = b.start(link).catch((e: unknown) => e);
    await flush();
    b.clock.advance(1_000);
    const err = await p;
    expect(err).toMatchObject({ code: 'ERR_MODEM_TIMEOUT' });
    expect((err as Error).message).toMatch(/no answer to HELLO .* not running Trickle firmware/);
  });
});

describe('NativeModem traffic', () => {
  it('send resolves at TX_DONE with the airtime; the peer gets the frame with RSSI, SNR and frequency error', async () => {
    const b = bench();
    const a = b.board({ crystalPpm: 2 }, 0);
    const c = b.board({ crystalPpm: -3 }, 1_000);
    const ma = await b.start(a.plug());
    const mc = await b.start(c.plug());
    const got: { frame: Uint8Array; meta: NativeReceivedFrameMeta }[] = [];
    mc.onFrame((frame, meta) => got.push({ frame, meta: meta as NativeReceivedFrameMeta }));
    const frame = new TextEncoder().encode('hello over lora');
    let settled = false;
    const sent = ma.send(frame).finally(() => { settled = true; });
    await flush();
    const airtimeMs = loraAirtimeMs({ payloadBytes: frame.length, sf: 9, bandwidthHz: 125_000, codingRate: 5 });
    b.clock.advance(airtimeMs - 1);
    await flush();
    expect(settled).toBe(false);
    b.clock.advance(1);
    await flush();
    const report = await sent;
    expect(report.airtimeMs).toBe(airtimeMs);
    expect(report.wireBytes).toBe(frame.length + 7);
    expect(got).toHaveLength(1);
    expect(got[0]!.frame).toEqual(frame);
    expect(got[0]!.meta.rssiDbm).toBeLessThan(-60);
    expect(got[0]!.meta.snrDb % 0.25).toBe(0);
    expect(got[0]!.meta.frequencyErrorHz).toBe(Math.round(5 * 869.525));
    expect(ma.stats()).toMatchObject({ framesSent: 1 });
    expect(mc.stats()).toMatchObject({ framesReceived: 1 });
    const devStats = ma.deviceStats();
    await flush();
    expect(await devStats).toMatchObject({ txFrames: 1, txBytes: frame.length, txAirtimeMs: Math.round(airtimeMs) });
  });

  it('concurrent sends go out one after another, each after the previous TX_DONE', async () => {
    const b = bench();
    const a = b.board();
    const ma = await b.start(a.plug());
    const order: number[] = [];
    const sends = [1, 2, 3].map((i) => ma.send(Uint8Array.of(i)).then((r) => { order.push(i); return r; }));
    for (let i = 0; i < 10; i++) { await flush(); b.clock.advance(200); }
    const reports = await Promise.all(sends);
    expect(order).toEqual([1, 2, 3]);
    expect(reports.every((r) => r.airtimeMs !== undefined && r.airtimeMs > 0)).toBe(true);
  });

  it('rejects an oversize frame with ERR_MODEM_MTU and a device ERROR with the device message', async () => {
    const b = bench();
    const ma = await b.start(b.board({ maxPayload: 64 }).plug());
    await expect(ma.send(new Uint8Array(65))).rejects.toMatchObject({ code: 'ERR_MODEM_MTU' });
    await expect(ma.cad(3)).rejects.toThrow(/ERROR BAD_PARAMETER \(CAD_SYMBOLS\): symbols must be 1, 2, 4, 8 or 16/);
  });

  it('CAD reports activity on the channel', async () => {
    const b = bench();
    const ma = await b.start(b.board({}, 0).plug());
    const mc = await b.start(b.board({}, 500).plug());
    void ma.send(new Uint8Array(100));
    await flush();
    const cad = mc.cad(2);
    await flush();
    b.clock.advance(50);
    await flush();
    expect(await cad).toMatchObject({ detected: true });
  });

  it('counts and reports damaged input from the board, and keeps going', async () => {
    const b = bench();
    const { emu } = b.board();
    const [host, dev] = createMemoryLinkPair('x');
    emu.attach(dev);
    const ma = await b.start(host);
    const drops: string[] = [];
    ma.onDrop((code) => drops.push(code));
    const good = encodeNativeFrame(nativeMessage('RECEIVE', { rssiDbm: -50, snrQuarterDb: 20, frequencyErrorHz: 0, frame: Uint8Array.of(7) }));
    const bad = good.slice();
    bad[3] = bad[3]! ^ 0xff;
    const frames: Uint8Array[] = [];
    ma.onFrame((f) => frames.push(f));
    await dev.write(bad);
    await dev.write(good);
    await flush();
    expect(frames).toEqual([Uint8Array.of(7)]);
    expect(drops).toEqual(['ERR_FRAME_BAD_FCS']);
    expect(ma.stats().dropped).toEqual({ ERR_FRAME_BAD_FCS: 1 });
  });
});

describe('NativeModem liveness and recovery', () => {
  it('a wedged board (no PONG) closes the modem with ERR_MODEM_TIMEOUT', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    const ma = await b.start(plug(), { pingIntervalMs: 5_000 });
    const closed = new Promise<Error | undefined>((r) => ma.onClose(r));
    b.clock.advance(5_000); // first ping answered
    await flush();
    expect(ma.state).toBe('ready');
    emu.hang();
    b.clock.advance(5_000);
    await flush();
    b.clock.advance(1_000);
    await flush();
    const err = await closed;
    expect(err).toMatchObject({ code: 'ERR_MODEM_TIMEOUT' });
    expect(err!.message).toMatch(/stopped answering .* wedged/);
    expect(ma.state).toBe('closed');
    await expect(ma.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });

  it('after an unexpected BOOT the modem reapplies its settings; sends wait for it', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    const ma = await b.start(plug());
    const states: NativeModemState[] = [];
    ma.onStateChange((s) => states.push(s));
    emu.reboot('BROWNOUT');
    expect(emu.radio).toBeUndefined();
    const sent = ma.send(Uint8Array.of(1, 2, 3));
    for (let i = 0; i < 5; i++) { await flush(); b.clock.advance(200); }
    expect(await sent).toMatchObject({ airtimeMs: expect.any(Number) });
    expect(states).toEqual(['starting', 'ready']);
    expect(emu.radio).toMatchObject({ sf: 9 });
  });

  it('reconnects with backoff when the device goes away, and reconfigures the fresh board', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    let first: Link | undefined = plug();
    let available = false;
    let opens = 0;
    const reopenLink = async (): Promise<Link> => {
      opens++;
      if (!available) throw new TrickleError('ERR_LINK_NOT_FOUND', 'link', 'no such device');
      return plug();
    };
    const ma = await b.start(first, { reopenLink, reconnect: { initialDelayMs: 100, maxDelayMs: 400 } });
    const states: [NativeModemState, string | undefined][] = [];
    ma.onStateChange((s, e) => states.push([s, (e as TrickleError | undefined)?.code]));
    // Pull the cable: the device side closes, the host side sees ERR_LINK_IO.
    const devSide = (emu as unknown as { link: Link }).link;
    await devSide.close();
    first = undefined;
    await flush();
    expect(ma.state).toBe('reconnecting');
    await expect(ma.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_IO' });
    // Backoff: attempts at 100, +200, +400, +400 ms.
    for (const step of [100, 200, 400]) { b.clock.advance(step); await flush(); }
    expect(opens).toBe(3);
    available = true;
    b.clock.advance(400);
    await flush(10);
    expect(opens).toBe(4);
    expect(ma.state).toBe('ready');
    expect(ma.reconnects).toBe(1);
    expect(states).toEqual([['reconnecting', 'ERR_LINK_IO'], ['ready', undefined]]);
    expect(emu.radio).toMatchObject({ sf: 9 });
    const sent = ma.send(Uint8Array.of(9));
    await flush();
    b.clock.advance(300);
    await flush();
    expect(await sent).toMatchObject({ airtimeMs: expect.any(Number) });
    await ma.close();
  });

  it('without reopenLink, a lost device closes the modem with ERR_LINK_IO', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    const ma = await b.start(plug());
    const closed = new Promise<Error | undefined>((r) => ma.onClose(r));
    await (emu as unknown as { link: Link }).link.close();
    expect(await closed).toMatchObject({ code: 'ERR_LINK_IO' });
  });

  it('gives up after maxAttempts and says so', async () => {
    const b = bench();
    const { emu, plug } = b.board();
    const ma = await b.start(plug(), {
      reopenLink: () => Promise.reject(new TrickleError('ERR_LINK_NOT_FOUND', 'link', 'serial device /dev/x does not exist')),
      reconnect: { initialDelayMs: 10, maxAttempts: 3 },
    });
    const closed = new Promise<Error | undefined>((r) => ma.onClose(r));
    await (emu as unknown as { link: Link }).link.close();
    for (let i = 0; i < 6; i++) { await flush(); b.clock.advance(100); }
    const err = await closed;
    expect(err?.message).toMatch(/did not come back after 3 attempts: serial device \/dev\/x does not exist/);
  });

  it('close() is clean: onClose without error, later sends reject', async () => {
    const b = bench();
    const ma = await b.start(b.board().plug());
    const closed = new Promise<Error | undefined>((r) => ma.onClose(r));
    await ma.close();
    expect(await closed).toBeUndefined();
    await expect(ma.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });
});
