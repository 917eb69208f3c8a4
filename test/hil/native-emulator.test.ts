/**
 * Hardware-in-the-loop without the hardware: NativeModem on real ttys (socat PTY pairs, the
 * serialport code path of a USB board) against the emulated Trickle firmware on a simulated
 * RF medium, on the real clock.
 *
 *   NativeModem ⇄ PTY —socat— PTY ⇄ EmulatedModem ~~ RfMedium ~~ EmulatedModem ⇄ PTY —socat— PTY ⇄ NativeModem
 *
 * No real SX126x/SX127x board is attached here: the emulator follows
 * firmware-protocol/spec/ byte for byte (the same vectors as test/unit/modem/native-protocol.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmulatedDevice, startEmulatedRadioPair, type EmulatedDevice, type EmulatedRadioPair } from '../../src/modem/emulator/radio-pair.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { NativeConfigError, openNativeModem, type NativeModem, type NativeModemState, type NativeReceivedFrameMeta } from '../../src/modem/native/native-modem.ts';
import { loraAirtimeMs } from '../../src/scheduler/airtime.ts';
import { noSocatReason, socatAvailable } from '../helpers/pty.ts';

function nextFrame(modem: NativeModem): Promise<{ frame: Uint8Array; meta: NativeReceivedFrameMeta }> {
  return new Promise((resolve) => {
    let done = false;
    modem.onFrame((frame, meta) => { if (!done) { done = true; resolve({ frame, meta: meta as NativeReceivedFrameMeta }); } });
  });
}

function reachState(modem: NativeModem, state: NativeModemState): Promise<void> {
  return new Promise((resolve) => {
    if (modem.state === state) { resolve(); return; }
    modem.onStateChange((s) => { if (s === state) resolve(); });
  });
}

describe.skipIf(!socatAvailable)(`NativeModem over PTYs against the emulated firmware${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  describe('a host and a gateway 1 km apart (startEmulatedRadioPair)', () => {
    let pair: EmulatedRadioPair;
    let host: NativeModem;
    let gateway: NativeModem;

    beforeAll(async () => {
      pair = await startEmulatedRadioPair({ sf: 8, bandwidthHz: 125_000, distanceM: 1_000 });
      [host, gateway] = await Promise.all([
        openNativeModem(pair.hostDevice, { radio: pair.radioSettings }),
        openNativeModem(pair.gatewayDevice, { radio: pair.radioSettings }),
      ]);
    });

    afterAll(async () => {
      await Promise.all([host?.close(), gateway?.close()]);
      await pair?.close();
    });

    it('opens the tty devices and identifies the emulated board', () => {
      expect(host.device).toMatchObject({ chip: 'SX1262', firmwareName: 'trickle-emulator', protocolVersion: 1 });
      expect(host.radioSettings).toMatchObject({ sf: 8, bandwidthHz: 125_000, frequencyHz: 869_525_000 });
      expect(pair.host.modem.radio).toMatchObject({ sf: 8 });
    });

    for (const [label, from, to] of [['host → gateway', () => host, () => gateway], ['gateway → host', () => gateway, () => host]] as const) {
      it(`${label}: the frame crosses, no faster than its airtime, with RSSI and SNR`, async () => {
        const frame = new TextEncoder().encode(`${label}: PUT /rooms/!r/send/m.room.message {"body":"Hello World"}`);
        const want = loraAirtimeMs({ payloadBytes: frame.length, sf: 8, bandwidthHz: 125_000, codingRate: 5 });
        const received = nextFrame(to());
        const t0 = performance.now();
        const report = await from().send(frame);
        const wallMs = performance.now() - t0;
        const got = await received;
        expect(report.airtimeMs).toBe(want);
        expect(wallMs).toBeGreaterThanOrEqual(want);
        expect(got.frame).toEqual(frame);
        // 14 dBm over 1 km with n = 2.7: about −98 dBm, SNR about +19 dB.
        expect(got.meta.rssiDbm).toBeGreaterThan(-110);
        expect(got.meta.rssiDbm).toBeLessThan(-80);
        expect(got.meta.snrDb).toBeGreaterThan(0);
        expect(Math.abs(got.meta.frequencyErrorHz)).toBe(Math.round(5 * 869.525));
      });
    }

    it('the board counters agree', async () => {
      const s = await host.deviceStats();
      expect(s.txFrames).toBe(1);
      expect(s.rxFrames).toBe(1);
      expect(s.uptimeMs).toBeGreaterThan(0);
    });

    it('reconnects when the device disappears (socat killed) and comes back at the same path', async () => {
      const states: NativeModemState[] = [];
      host.onStateChange((s) => states.push(s));
      const reconnecting = reachState(host, 'reconnecting');
      process.kill(pair.host.pty.pid, 'SIGKILL');
      await reconnecting;
      await expect(host.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_IO' });
      await pair.host.unplug(); // clean up what is left of the old pair
      expect(pair.host.modem.radio).toBeDefined();
      const ready = reachState(host, 'ready');
      await pair.host.replug(); // a new socat pair at the same path; the board rebooted (unconfigured)
      await ready;
      expect(host.reconnects).toBe(1);
      expect(pair.host.modem.radio).toMatchObject({ sf: 8 }); // reconfigured by the host
      const received = nextFrame(gateway);
      await host.send(new TextEncoder().encode('back again'));
      expect(new TextDecoder().decode((await received).frame)).toBe('back again');
      expect(states).toEqual(['reconnecting', 'ready']);
    }, 15_000);
  });

  it('refuses to start when the board reports a different setting than it was given', async () => {
    const pair = await startEmulatedRadioPair({ sf: 9, host: { misreport: { sf: 10 } } });
    try {
      const err = await openNativeModem(pair.hostDevice, { radio: pair.radioSettings }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NativeConfigError);
      expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'sf', wanted: 9, reported: 10, device: pair.hostDevice } });
      expect((err as Error).message).toContain(`${pair.hostDevice} did not apply sf: wanted 9, the board reports 10`);
      // The device was released: it can be opened again (the gateway side is unaffected).
      const ok = await openNativeModem(pair.gatewayDevice, { radio: pair.radioSettings });
      await ok.close();
    } finally {
      await pair.close();
    }
  });

  describe('three boards on one medium', () => {
    const devices: EmulatedDevice[] = [];
    const modems: NativeModem[] = [];
    let medium: RfMedium;

    beforeAll(async () => {
      medium = new RfMedium();
      for (const [name, xM] of [['a', 0], ['b', 500], ['c', 1_000]] as const) {
        devices.push(await startEmulatedDevice(medium, { name, positionM: { xM, yM: 0 } }));
      }
      const radio = { frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7 };
      modems.push(...await Promise.all(devices.map((d) => openNativeModem(d.devicePath, { radio }))));
    });

    afterAll(async () => {
      await Promise.all(modems.map((m) => m.close()));
      await Promise.all(devices.map((d) => d.close()));
    });

    it('two overlapping transmissions collide: the board between them receives neither', async () => {
      const [a, b, c] = modems as [NativeModem, NativeModem, NativeModem];
      const got: string[] = [];
      b.onFrame((f) => got.push(new TextDecoder().decode(f)));
      // ~100 ms of airtime each at SF7/125 kHz; PTY latency is well under that, so they overlap.
      await Promise.all([a.send(new Uint8Array(60).fill(0x61)), c.send(new Uint8Array(60).fill(0x63))]);
      expect(medium.stats().lost.collision).toBe(2); // both frames, at b
      expect(medium.stats().lost.halfDuplex).toBe(2); // a and c were transmitting
      // A later, lone frame gets through and is the first thing b receives.
      const next = nextFrame(b);
      await a.send(new TextEncoder().encode('after the collision'));
      expect(new TextDecoder().decode((await next).frame)).toBe('after the collision');
      expect(got).toEqual(['after the collision']);
    });
  });
});
