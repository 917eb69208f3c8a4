/**
 * Hardware-in-the-loop without the hardware: MeshtasticModem on real ttys (socat PTY pairs,
 * the serialport code path of a USB Meshtastic node) against the Meshtastic emulator on a
 * simulated RF medium, on the real clock.
 *
 *   MeshtasticModem ⇄ PTY —socat— PTY ⇄ MeshtasticEmulator ~~ RfMedium ~~ MeshtasticEmulator ⇄ PTY —socat— PTY ⇄ MeshtasticModem
 *
 * No real Meshtastic node is attached here: the emulator follows the serial client API as
 * documented (the same vectors as test/unit/modem/meshtastic.test.ts). See hardware/meshtastic.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESHTASTIC_PRESETS, startMeshtasticDevice, type MeshtasticEmulator } from '../../src/modem/emulator/meshtastic-emulator.ts';
import type { PtyDevice } from '../../src/modem/emulator/rnode-emulator.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { openMeshtasticModem, type MeshtasticModem, type MeshtasticReceivedFrameMeta } from '../../src/modem/meshtastic/meshtastic-modem.ts';
import { noSocatReason, socatAvailable } from '../helpers/pty.ts';

const A = 0x0a0b0c0d;
const B = 0x1234abcd;
const C = 0x0000c0de;
const preset = MESHTASTIC_PRESETS['SHORT_FAST']!;

function nextFrame(modem: MeshtasticModem): Promise<{ frame: Uint8Array; meta: MeshtasticReceivedFrameMeta }> {
  return new Promise((resolve) => {
    let done = false;
    modem.onFrame((frame, meta) => { if (!done) { done = true; resolve({ frame, meta: meta as MeshtasticReceivedFrameMeta }); } });
  });
}

describe.skipIf(!socatAvailable)(`MeshtasticModem over PTYs against the Meshtastic emulator${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  const medium = new RfMedium();
  const devices: PtyDevice<MeshtasticEmulator>[] = [];
  let a: MeshtasticModem;
  let b: MeshtasticModem;
  let c: MeshtasticModem;

  beforeAll(async () => {
    devices.push(await startMeshtasticDevice(medium, { name: 'mesh-a', nodeNum: A, preset, positionM: { xM: 0, yM: 0 } }));
    devices.push(await startMeshtasticDevice(medium, { name: 'mesh-b', nodeNum: B, preset, positionM: { xM: 800, yM: 0 } }));
    // A node whose region budget is almost spent (0.02 % of an hour = 720 ms of airtime), on
    // another channel so its transmissions do not collide with the a ⇄ b traffic.
    devices.push(await startMeshtasticDevice(medium, {
      name: 'mesh-c', nodeNum: C, preset, positionM: { xM: 400, yM: 300 }, dutyCyclePct: 0.02, frequencyHz: 868_100_000,
    }));
    [a, b, c] = await Promise.all([
      openMeshtasticModem(devices[0]!.devicePath, { destination: B }),
      openMeshtasticModem(devices[1]!.devicePath, { destination: A }),
      openMeshtasticModem(devices[2]!.devicePath, { destination: B }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([a, b, c].map((m) => m?.close()));
    await Promise.all(devices.map((d) => d.close()));
  });

  it('runs the config handshake over the tty and learns the node numbers', () => {
    expect([a.myNodeNum, b.myNodeNum, c.myNodeNum]).toEqual([A, B, C]);
    expect(devices[0]!.emulator.counters.configRequests).toBe(1);
  });

  for (const [label, from, to, fromNode] of [['a → b', () => a, () => b, A], ['b → a', () => b, () => a, B]] as const) {
    it(`${label}: a PRIVATE_APP frame crosses with RSSI and SNR`, async () => {
      const frame = new TextEncoder().encode(`${label}: PUT /rooms/!r/send/m.room.message {"body":"Hello World"}`);
      const received = nextFrame(to());
      await from().send(frame);
      const got = await received;
      expect(got.frame).toEqual(frame);
      expect(got.meta.fromNode).toBe(fromNode);
      expect(got.meta.rssiDbm).toBeLessThan(-60);
      expect(got.meta.snrDb).toBeGreaterThan(0);
    });
  }

  it('the node’s duty-cycle NAK surfaces as ERR_DUTY_CYCLE', async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      outcomes.push(await c.send(new Uint8Array(200).fill(i)).then(() => 'ok', (e: { code: string }) => e.code));
    }
    expect(outcomes[0]).toBe('ok');
    expect(outcomes).toContain('ERR_DUTY_CYCLE');
    expect(outcomes.indexOf('ERR_DUTY_CYCLE')).toBeGreaterThan(0);
    const err = await c.send(new Uint8Array(200)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_DUTY_CYCLE', detail: { routingError: 'DUTY_CYCLE_LIMIT', device: devices[2]!.devicePath } });
    expect(c.state).toBe('ready'); // a refusal, not a failure: the modem stays usable
  });

  it('reconnects after the device disappears (socat killed, recreated at the same path, reopened)', async () => {
    const closed = new Promise<Error | undefined>((resolve) => a.onClose(resolve));
    process.kill(devices[0]!.pty.pid, 'SIGKILL');
    expect(await closed).toMatchObject({ code: 'ERR_LINK_IO' });
    await devices[0]!.unplug();
    await devices[0]!.replug();
    a = await openMeshtasticModem(devices[0]!.devicePath, { destination: B });
    const received = nextFrame(b);
    await a.send(new TextEncoder().encode('back again'));
    expect(new TextDecoder().decode((await received).frame)).toBe('back again');
  }, 15_000);
});
