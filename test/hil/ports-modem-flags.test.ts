/**
 * `--modem native|rnode|meshtastic` as `trickle host` / `trickle gateway` resolve them
 * (src/cli/modem-options.ts), against the emulated boards over PTYs: the board is opened and
 * brought up with the settings of the common flags, the same settings go to the scheduler,
 * a refusal is reported and the port released, and `close()` lets the device go.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEM_FLAG_OPTIONS, resolveModemFlags, type ModemFlags } from '../../src/cli/modem-options.ts';
import { parseFlags } from '../../src/cli/args.ts';
import { isTrickleError } from '../../src/errors.ts';
import { startEmulatedDevice, type EmulatedDevice } from '../../src/modem/emulator/radio-pair.ts';
import { startRNodeDevice, type RNodeEmulator, type PtyDevice } from '../../src/modem/emulator/rnode-emulator.ts';
import { startMeshtasticDevice, MESHTASTIC_PRESETS, type MeshtasticEmulator } from '../../src/modem/emulator/meshtastic-emulator.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import type { Modem } from '../../src/modem/modem.ts';
import { noSocatReason, socatAvailable } from '../helpers/pty.ts';

function flagsOf(argv: string[]): ModemFlags {
  return parseFlags(argv, {
    device: { type: 'string' }, 'max-frame': { type: 'string' }, security: { type: 'string' }, baud: { type: 'string' },
    region: { type: 'string' }, freq: { type: 'string' }, bw: { type: 'string' }, sf: { type: 'string' }, cr: { type: 'string' },
    ...MODEM_FLAG_OPTIONS,
  }, 'usage').flags;
}

async function released(path: string): Promise<void> {
  const link = await openSerialLink(path);
  await link.close();
}

function nextFrame(modem: Modem): Promise<Uint8Array> {
  return new Promise((resolve) => modem.onFrame((f) => resolve(f)));
}

describe.skipIf(!socatAvailable)(`--modem native|rnode|meshtastic against emulated boards${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  const medium = new RfMedium();
  let native: EmulatedDevice;
  const rnodes: PtyDevice<RNodeEmulator>[] = [];
  let mesh: PtyDevice<MeshtasticEmulator>;

  beforeAll(async () => {
    native = await startEmulatedDevice(medium, { name: 'flags-native', maxPayload: 200, txPowerMaxDbm: 22 });
    rnodes.push(await startRNodeDevice(medium, { name: 'flags-rnode-a', positionM: { xM: 0, yM: 0 } }));
    rnodes.push(await startRNodeDevice(medium, { name: 'flags-rnode-b', positionM: { xM: 500, yM: 0 } }));
    mesh = await startMeshtasticDevice(medium, { name: 'flags-mesh', nodeNum: 0xc0de, preset: MESHTASTIC_PRESETS['SHORT_FAST']!, positionM: { xM: 0, yM: 900 } });
  });

  afterAll(async () => {
    await Promise.all([native?.close(), ...rnodes.map((d) => d.close()), mesh?.close()]);
  });

  it('native: the board gets --freq/--bw/--sf/--cr/--tx-power, the scheduler the same, --max-frame its payload', async () => {
    const r = await resolveModemFlags(flagsOf(['--modem', 'native', '--device', native.devicePath, '--sf', '8', '--cr', '6', '--tx-power', '10']));
    try {
      expect(native.modem.radio).toMatchObject({ frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 8, codingRate: 6, txPowerDbm: 10 });
      expect(r.radio).toEqual({ region: 'eu868', bandwidthHz: 125_000, sf: 8, codingRate: 6, preambleSymbols: 8 });
      expect(r.defaultMaxFrameLen).toBe(200);
      expect(r.link?.name).toBe(native.devicePath);
      const modem = r.createModem!(r.link!);
      expect(modem.dialect).toBe('native');
      expect(modem.capabilities.maxFrameLen).toBe(200);
      expect(r.describe).toMatch(new RegExp(`^Trickle firmware ".+" \\d+\\.\\d+\\.\\d+ \\(SX1262\\) on ${native.devicePath}: 869\\.525 MHz, 125 kHz, SF8, 4/6, 10 dBm$`));
    } finally {
      await r.close();
    }
    await released(native.devicePath);
  });

  it('native: a power the board cannot do is refused with the board\'s range, and the port is released', async () => {
    const err = await resolveModemFlags(flagsOf(['--modem', 'native', '--device', native.devicePath, '--tx-power', '25'])).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_MODEM_CONFIG'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/cannot use txPowerDbm = 25; allowed: -?\d+\.\.22 dBm/);
    await released(native.devicePath);
  });

  it('rnode: configured and verified on two boards, one LoRa packet per frame, and a frame crosses', async () => {
    const argv = (path: string) => ['--modem', 'rnode', '--device', path, '--sf', '7', '--tx-power', '12'];
    const [a, b] = await Promise.all(rnodes.map((d) => resolveModemFlags(flagsOf(argv(d.devicePath)))));
    try {
      expect(rnodes[0]!.emulator.radio).toMatchObject({ frequencyHz: 869_525_000, bandwidthHz: 125_000, sf: 7, codingRate: 5, txPowerDbm: 12 });
      expect(a!.defaultMaxFrameLen).toBe(254);
      expect(a!.radio).toEqual({ region: 'eu868', bandwidthHz: 125_000, sf: 7, codingRate: 5, preambleSymbols: 18 });
      expect(a!.describe).toBe(`RNode firmware 1.82 on ${rnodes[0]!.devicePath}: 869.525 MHz, 125 kHz, SF7, 4/5, 12 dBm`);
      const ma = a!.createModem!(a!.link!);
      const mb = b!.createModem!(b!.link!);
      expect(ma.capabilities.maxFrameLen).toBe(254);
      const got = nextFrame(mb);
      await ma.send(new TextEncoder().encode('hello over --modem rnode'));
      expect(new TextDecoder().decode(await got)).toBe('hello over --modem rnode');
    } finally {
      await Promise.all([a?.close(), b?.close()]);
    }
    await Promise.all(rnodes.map((d) => released(d.devicePath)));
  });

  it('meshtastic: the handshake runs, the node number is shown, frames are ≤ 231 bytes', async () => {
    const r = await resolveModemFlags(flagsOf(['--modem', 'meshtastic', '--device', mesh.devicePath, '--mesh-to', '!00001234', '--mesh-channel', '0',
      '--sf', '7', '--bw', '250000']));
    try {
      expect(r.defaultMaxFrameLen).toBe(231);
      expect(r.radio).toEqual({ region: 'eu868', bandwidthHz: 250_000, sf: 7, codingRate: 5, preambleSymbols: 16 });
      expect(r.describe).toBe(`Meshtastic node !0000c0de on ${mesh.devicePath}, channel 0, to !00001234 (LoRa settings: the node's preset; ` +
        'airtime counted for SF7, 250 kHz, 4/5)');
      const modem = r.createModem!(r.link!);
      expect(modem.dialect).toBe('meshtastic');
      expect(modem.capabilities).toMatchObject({ maxFrameLen: 231, enforcesDutyCycle: true });
    } finally {
      await r.close();
    }
    await released(mesh.devicePath);
  });
});
