/**
 * `trickle ports` probing real ttys (socat PTY pairs, the serialport code path of a USB
 * radio) against the three emulated firmwares, a silent device (a transparent radio or a
 * KISS TNC: nothing answers) and a device another program holds. Every probe must leave the
 * device as it found it: the emulators' settings untouched, the port closed (it can be
 * opened and locked again at once).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probePort, blindProbeBytes, runPortsCommand, type ProbeResult } from '../../src/cli/ports.ts';
import { startEmulatedDevice, type EmulatedDevice } from '../../src/modem/emulator/radio-pair.ts';
import { startRNodeDevice, type RNodeEmulator, type PtyDevice } from '../../src/modem/emulator/rnode-emulator.ts';
import { startMeshtasticDevice, type MeshtasticEmulator } from '../../src/modem/emulator/meshtastic-emulator.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { createPtyPair, type PtyPair } from '../../src/link/pty.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import type { Link } from '../../src/link/link.ts';
import { ByteCollector, noSocatReason, socatAvailable } from '../helpers/pty.ts';

const TIMEOUT_MS = 400;

async function openedAndReleased(path: string): Promise<void> {
  const link = await openSerialLink(path); // flock succeeds only if the probe let go
  await link.close();
}

describe.skipIf(!socatAvailable)(`trickle ports probes over PTYs${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  const medium = new RfMedium();
  let native: EmulatedDevice;
  let rnode: PtyDevice<RNodeEmulator>;
  let mesh: PtyDevice<MeshtasticEmulator>;
  let silent: PtyPair;
  let silentFar: Link;
  let silentBytes: ByteCollector;

  beforeAll(async () => {
    native = await startEmulatedDevice(medium, { name: 'ports-native', firmwareName: 'trickle-fw emu', firmwareVersion: [0, 3, 1], chip: 'SX1262' });
    rnode = await startRNodeDevice(medium, { name: 'ports-rnode', positionM: { xM: 10, yM: 0 } });
    mesh = await startMeshtasticDevice(medium, { name: 'ports-mesh', nodeNum: 0x1234abcd, positionM: { xM: 20, yM: 0 } });
    silent = await createPtyPair();
    silentFar = await openSerialLink(silent.b);
    silentBytes = new ByteCollector(silentFar);
  });

  afterAll(async () => {
    await silentFar?.close();
    await Promise.all([native?.close(), rnode?.close(), mesh?.close(), silent?.close()]);
  });

  it('native: PING answered, then HELLO → VERSION and GET_CAPABILITIES; the board stays unconfigured', async () => {
    const r = await probePort(native.devicePath, { timeoutMs: TIMEOUT_MS });
    expect(r).toMatchObject({ answer: 'native', modem: 'native', firmware: 'trickle-fw emu 0.3.1' });
    expect(r.detail).toMatch(/^Trickle firmware, protocol v1, SX1262, \d+–\d+ MHz, -?\d+\.\.\d+ dBm, frames up to 255 B$/);
    expect(native.modem.radio).toBeUndefined(); // no SET_RADIO
    await openedAndReleased(native.devicePath);
  });

  it('rnode: DETECT answered, then firmware, platform and MCU; the radio stays off with power-on settings', async () => {
    const r = await probePort(rnode.devicePath, { timeoutMs: TIMEOUT_MS });
    expect(r).toEqual<ProbeResult>({
      path: rnode.devicePath, answer: 'rnode', modem: 'rnode', firmware: 'RNode 1.82', detail: 'RNode firmware, platform ESP32, MCU ESP32',
    });
    expect(rnode.emulator.radio).toBeUndefined(); // radio off: no CMD_RADIO_STATE
    expect(rnode.emulator.airtimeLocks).toEqual({ shortTermPct: 0, longTermPct: 0 });
    await openedAndReleased(rnode.devicePath);
  });

  it('meshtastic: want_config → my_info … config_complete_id, one config request, nothing transmitted', async () => {
    const r = await probePort(mesh.devicePath, { timeoutMs: TIMEOUT_MS });
    expect(r).toEqual<ProbeResult>({
      path: mesh.devicePath, answer: 'meshtastic', modem: 'meshtastic', firmware: 'Meshtastic', detail: 'Meshtastic node !1234abcd',
    });
    expect(mesh.emulator.counters).toMatchObject({ configRequests: 1, txPackets: 0 });
    await openedAndReleased(mesh.devicePath);
  });

  it('a silent device (transparent radio, KISS TNC): "no answer", and only the blind probes were written', async () => {
    const t0 = performance.now();
    const r = await probePort(silent.a, { timeoutMs: TIMEOUT_MS });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(r).toEqual<ProbeResult>({ path: silent.a, answer: 'none', detail: 'no answer: could be a transparent radio or a KISS TNC (or a board still booting)' });
    const expected = blindProbeBytes();
    await silentBytes.until(expected.length);
    // No HELLO, no RNode query, nothing else followed: those go only to a device that answered.
    expect(Buffer.from(silentBytes.bytes())).toEqual(Buffer.from(expected));
    await openedAndReleased(silent.a);
  });

  it('a device another program holds is skipped and said to be busy', async () => {
    const holder = await openSerialLink(rnode.devicePath);
    try {
      const r = await probePort(rnode.devicePath, { timeoutMs: TIMEOUT_MS });
      expect(r).toMatchObject({ answer: 'busy', code: 'ERR_LINK_BUSY', detail: 'in use by another program (it holds the port lock); not probed' });
    } finally {
      await holder.close();
    }
  });

  it('trickle ports --device … probes them all and prints one row each', async () => {
    const out: string[] = [];
    const code = await runPortsCommand(['--probe-timeout-ms', String(TIMEOUT_MS), '--device', native.devicePath, '--device', rnode.devicePath,
      '--device', mesh.devicePath, '--device', silent.a], (s) => out.push(s));
    expect(code).toBe(0);
    const lines = out.join('\n').split('\n');
    expect(lines[0]).toMatch(/^DEVICE\s+USB ID\s+ANSWER\s+FIRMWARE\s+NOTES$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/).slice(2, 4))).toEqual([
      ['native', 'trickle-fw emu 0.3.1'], ['rnode', 'RNode 1.82'], ['meshtastic', 'Meshtastic'], ['no answer', '-'],
    ]);
    expect(lines[1]).toContain(`use --modem native --device ${native.devicePath}`);
    expect(lines[4]).toContain('could be a transparent radio or a KISS TNC');
  });
});
