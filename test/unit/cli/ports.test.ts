/**
 * `trickle ports` without devices: the blind probe bytes are harmless to every dialect that
 * might be listening (read through each dialect's own decoder), listing merges the names of
 * one device, and the command prints what it found. The probes against emulated boards over
 * PTYs are in test/hil/ports.test.ts.
 */
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { blindProbeBytes, listSerialDevices, runPortsCommand, PORTS_USAGE } from '../../../src/cli/ports.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { KissDecoder, KISS_RETURN } from '../../../src/modem/kiss/kiss.ts';
import { RNodeDecoder, RNodeCmd, DETECT_REQ } from '../../../src/modem/rnode/rnode-protocol.ts';
import { NativeDeframer } from '../../../src/modem/native/codec.ts';
import { StreamDecoder, decodeToRadio } from '../../../src/modem/meshtastic/meshtastic-protocol.ts';

const FEND = 0xc0;
/** KISS commands that change a TNC or transmit: data 0, TXDELAY 1, P 2, SlotTime 3, TXtail 4, FullDuplex 5, SetHardware 6. */
const KISS_ACTING_COMMANDS = new Set([0, 1, 2, 3, 4, 5, 6, KISS_RETURN]);

describe('the blind probes are read-only for every dialect', () => {
  const bytes = blindProbeBytes();

  it('a KISS TNC sees no data frame and no setting, whether it was idle or mid-frame', () => {
    // Idle (waiting for FEND), mid-frame (a FEND came before), and with the next client's FEND after.
    for (const stream of [bytes, Uint8Array.of(FEND, ...bytes), Uint8Array.of(FEND, ...bytes, FEND), Uint8Array.of(...bytes, FEND)]) {
      const { frames } = new KissDecoder({ maxFrameLen: 1024 }).push(stream);
      expect(frames.length).toBeGreaterThan(0);
      for (const f of frames) expect(KISS_ACTING_COMMANDS.has(f.command), `KISS command ${f.command} on port ${f.port}`).toBe(false);
    }
  });

  it('an RNode sees only CMD_DETECT (no setting: 0x01-0x07 set the radio, 0x50+ include ROM writes)', () => {
    const { frames } = new RNodeDecoder().push(bytes);
    expect(frames.map((f) => f.cmd)).toEqual([RNodeCmd.DETECT, RNodeCmd.DETECT]);
    // Only the first is a detect request; the second (native PING) must not look like one.
    expect(frames.map((f) => f.data[0] === DETECT_REQ)).toEqual([true, false]);
  });

  it('native firmware sees one valid message, PING', () => {
    const { messages } = new NativeDeframer().push(bytes);
    expect(messages.map((m) => m.name)).toEqual(['PING']);
  });

  it('a Meshtastic node sees one ToRadio, want_config_id', () => {
    const { packets } = new StreamDecoder().push(bytes);
    expect(packets.map((p) => decodeToRadio(p))).toEqual([{ wantConfigId: 0x2a2a2a }]);
  });
});

describe('listSerialDevices', () => {
  let dir: string | undefined;
  afterEach(async () => { if (dir) await rm(dir, { recursive: true, force: true }); dir = undefined; });

  it('merges serialport\'s list, /dev/serial/by-id and ttyUSB/ttyACM nodes by the device they are', async () => {
    dir = await mkdtemp(join(tmpdir(), 'trickle-ports-'));
    await writeFile(join(dir, 'ttyUSB0'), '');
    await writeFile(join(dir, 'ttyACM1'), '');
    await writeFile(join(dir, 'ttyS0'), ''); // not a USB serial device: only serialport's list names it
    await mkdir(join(dir, 'serial', 'by-id'), { recursive: true });
    await symlink(join(dir, 'ttyUSB0'), join(dir, 'serial', 'by-id', 'usb-Silicon_Labs_CP2102_0001-if00-port0'));
    const devices = await listSerialDevices({
      devDir: dir,
      listPorts: async () => [{ path: join(dir!, 'ttyUSB0'), vendorId: '10C4', productId: 'EA60', manufacturer: 'Silicon Labs' }],
    });
    expect(devices).toEqual([
      { path: join(dir, 'ttyACM1'), aliases: [] },
      {
        path: join(dir, 'ttyUSB0'), aliases: [join(dir, 'serial', 'by-id', 'usb-Silicon_Labs_CP2102_0001-if00-port0')],
        vendorId: '10c4', productId: 'ea60', manufacturer: 'Silicon Labs',
      },
    ]);
  });

  it('survives a failing serialport list (no udev) and an empty /dev', async () => {
    dir = await mkdtemp(join(tmpdir(), 'trickle-ports-'));
    expect(await listSerialDevices({ devDir: dir, listPorts: async () => { throw new Error('spawn udevadm ENOENT'); } })).toEqual([]);
  });
});

describe('runPortsCommand', () => {
  const out: string[] = [];
  const write = (s: string): void => { out.push(s); };
  afterEach(() => { out.length = 0; });

  it('says so when there is nothing, and where it looked', async () => {
    expect(await runPortsCommand([], write, { list: async () => [] })).toBe(0);
    expect(out.join('\n')).toMatch(/^no serial devices found .*\/dev\/serial\/by-id.*--device PATH/);
  });

  it('lists without opening anything with --no-probe, as a table or JSON', async () => {
    const list = async () => [{ path: '/dev/ttyUSB0', aliases: ['/dev/serial/by-id/usb-X'], vendorId: '1a86', productId: '55d4', manufacturer: 'QinHeng' }];
    expect(await runPortsCommand(['--no-probe'], write, { list })).toBe(0);
    const [header, row] = out[0]!.split('\n');
    expect(header).toMatch(/^DEVICE\s+USB ID\s+ANSWER\s+FIRMWARE\s+NOTES$/);
    expect(row).toMatch(/^\/dev\/ttyUSB0 \(\/dev\/serial\/by-id\/usb-X\)\s+1a86:55d4 QinHeng\s+not-probed\s+-\s+not probed/);
    out.length = 0;
    expect(await runPortsCommand(['--no-probe', '--json'], write, { list })).toBe(0);
    expect(JSON.parse(out[0]!)).toEqual([{
      path: '/dev/ttyUSB0', aliases: ['/dev/serial/by-id/usb-X'], vendorId: '1a86', productId: '55d4', manufacturer: 'QinHeng',
      answer: 'not-probed', detail: 'not probed (--no-probe)',
    }]);
  });

  it('reports a --device that cannot be opened, and exits 1', async () => {
    expect(await runPortsCommand(['--device', '/nonexistent/ttyX', '--json'], write)).toBe(1);
    expect(JSON.parse(out[0]!)).toMatchObject([{ path: '/nonexistent/ttyX', answer: 'error', code: 'ERR_LINK_NOT_FOUND' }]);
  });

  it('names a bad --probe-timeout-ms and an unknown flag', async () => {
    const err = await runPortsCommand(['--probe-timeout-ms', '10'], write, { list: async () => [] }).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_CONFIG')).toBe(true);
    expect((err as Error).message).toBe('--probe-timeout-ms must be an integer number of milliseconds from 50 to 60000, got "10"');
    const usage = await runPortsCommand(['--probe'], write).catch((e: unknown) => e);
    expect(isTrickleError(usage, 'ERR_USAGE')).toBe(true);
    expect((usage as Error).message).toContain(PORTS_USAGE);
  });
});
