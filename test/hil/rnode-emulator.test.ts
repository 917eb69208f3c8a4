/**
 * Hardware-in-the-loop without the hardware: RNodeModem on real ttys (socat PTY pairs, the
 * serialport code path of a USB RNode) against the RNode emulator on a simulated RF medium,
 * on the real clock.
 *
 *   RNodeModem ⇄ PTY —socat— PTY ⇄ RNodeEmulator ~~ RfMedium ~~ RNodeEmulator ⇄ PTY —socat— PTY ⇄ RNodeModem
 *
 * No real RNode board is attached here: the emulator follows the RNode command set as
 * published (the same vectors as test/unit/modem/rnode.test.ts). See hardware/rnode.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRNodeDevice, rnodePreambleSymbols, type RNodeEmulator, type PtyDevice } from '../../src/modem/emulator/rnode-emulator.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { RNodeConfigError, openRNodeModem, type RNodeModem } from '../../src/modem/rnode/rnode-modem.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import { loraAirtimeMs } from '../../src/scheduler/airtime.ts';
import type { ReceivedFrameMeta } from '../../src/modem/modem.ts';
import { noSocatReason, socatAvailable } from '../helpers/pty.ts';

const RADIO = { frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7, codingRate: 5, txPowerDbm: 14 };

function nextFrame(modem: RNodeModem): Promise<{ frame: Uint8Array; meta: ReceivedFrameMeta }> {
  return new Promise((resolve) => {
    let done = false;
    modem.onFrame((frame, meta) => { if (!done) { done = true; resolve({ frame, meta }); } });
  });
}

describe.skipIf(!socatAvailable)(`RNodeModem over PTYs against the RNode emulator${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  const medium = new RfMedium();
  let host: PtyDevice<RNodeEmulator>;
  let gateway: PtyDevice<RNodeEmulator>;
  let a: RNodeModem;
  let b: RNodeModem;

  beforeAll(async () => {
    host = await startRNodeDevice(medium, { name: 'rnode-host', positionM: { xM: 0, yM: 0 } });
    gateway = await startRNodeDevice(medium, { name: 'rnode-gateway', positionM: { xM: 1_000, yM: 0 } });
    [a, b] = await Promise.all([openRNodeModem(host.devicePath, { radio: RADIO }), openRNodeModem(gateway.devicePath, { radio: RADIO })]);
  });

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await Promise.all([host?.close(), gateway?.close()]);
  });

  it('opens the ttys, detects the RNode and configures it', () => {
    expect(a.state).toBe('ready');
    expect(a.device?.firmwareVersion).toBe('1.82');
    expect(host.emulator.radio).toMatchObject({ frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7, txPowerDbm: 14 });
  });

  for (const [label, from, to] of [['host → gateway', () => a, () => b], ['gateway → host', () => b, () => a]] as const) {
    it(`${label}: the frame crosses, no faster than its airtime, with RSSI and SNR`, async () => {
      const frame = new TextEncoder().encode(`${label}: PUT /rooms/!r/send/m.room.message {"body":"Hello World"}`);
      const airtimeMs = loraAirtimeMs({ payloadBytes: frame.length + 1, sf: 7, bandwidthHz: 125_000, codingRate: 5, preambleSymbols: rnodePreambleSymbols(7, 125_000) });
      const received = nextFrame(to());
      const t0 = performance.now();
      await from().send(frame);
      const got = await received;
      expect(performance.now() - t0).toBeGreaterThanOrEqual(airtimeMs - 1);
      expect(got.frame).toEqual(frame);
      expect(got.meta.rssiDbm).toBeGreaterThan(-110);
      expect(got.meta.rssiDbm).toBeLessThan(-85);
      expect(got.meta.snrDb).toBeGreaterThan(0);
    });
  }

  it('carries a 500-byte frame split in two LoRa packets', async () => {
    const big = Uint8Array.from({ length: 500 }, (_, i) => (i * 13) & 0xff);
    const received = nextFrame(b);
    await a.send(big);
    expect((await received).frame).toEqual(big);
  });

  it('reports channel utilisation (CMD_STAT_CHTM) and sets airtime locks', async () => {
    const stats = await new Promise((resolve) => a.onChannelStats(resolve));
    expect(stats).toMatchObject({ airtimeShortPct: expect.any(Number) as unknown, noiseFloorDbm: expect.any(Number) as unknown });
    expect(a.channelStats!.airtimeShortPct).toBeGreaterThan(0); // it transmitted within the last 15 s
    await expect(a.setAirtimeLocks(100, 10)).resolves.toEqual({ shortTermPct: 100, longTermPct: 10 });
    expect(host.emulator.airtimeLocks).toEqual({ shortTermPct: 100, longTermPct: 10 });
  }, 5_000);

  it('reconnects after the device disappears: socat killed, recreated at the same path, reopened by the owner', async () => {
    const closed = new Promise<Error | undefined>((resolve) => a.onClose(resolve));
    process.kill(host.pty.pid, 'SIGKILL'); // the USB cable is pulled
    expect(await closed).toMatchObject({ code: 'ERR_LINK_IO' });
    await expect(a.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
    await host.unplug(); // what is left of the old pair; the path now dangles
    // The owner's contract: reopen the same path, retrying until the device is back.
    const reopening = openRNodeModem(host.devicePath, { radio: RADIO, openAttempts: 50, retryDelayMs: 100 });
    await new Promise((r) => setTimeout(r, 300));
    await host.replug(); // the board rebooted with its radio off
    a = await reopening;
    expect(a.state).toBe('ready');
    expect(host.emulator.radio).toMatchObject({ sf: 7, txPowerDbm: 14 }); // configured again
    const received = nextFrame(b);
    await a.send(new TextEncoder().encode('back again'));
    expect(new TextDecoder().decode((await received).frame)).toBe('back again');
  }, 15_000);

  it('refuses to start when the board reports a different setting, and releases the device', async () => {
    const odd = await startRNodeDevice(medium, { name: 'rnode-odd', positionM: { xM: 500, yM: 0 }, misreport: { sf: 8 } });
    try {
      const err = await openRNodeModem(odd.devicePath, { radio: RADIO }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RNodeConfigError);
      expect(err).toMatchObject({ code: 'ERR_MODEM_CONFIG', detail: { setting: 'sf', wanted: 7, reported: 8, device: odd.devicePath } });
      expect((err as Error).message).toContain(`the RNode on ${odd.devicePath} did not apply sf: wanted 7, the board reports 8; refusing to start`);
      const again = await openSerialLink(odd.devicePath); // the lock was released
      await again.close();
    } finally {
      await odd.close();
    }
  });
});
