/**
 * The modem flags of `trickle host` / `trickle gateway` (src/cli/modem-options.ts): bad flags
 * fail with a ConfigError that names the flag and what it allows, before anything is opened;
 * good ones give the stack its link and modem factory.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import {
  MODEM_FLAG_OPTIONS, MODEM_USAGE, resolveModemFlags, parseKissTcp, parseMeshNode, radioFromFlags, type ModemFlags,
} from '../../../src/cli/modem-options.ts';
import { parseFlags } from '../../../src/cli/args.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { KissModem } from '../../../src/modem/kiss/kiss-modem.ts';
import { freePort } from '../../../scripts/synapse.ts';

/** The flags as main.ts gets them: its own options with MODEM_FLAG_OPTIONS spread in. */
function flagsOf(argv: string[]): ModemFlags {
  return parseFlags(argv, {
    device: { type: 'string' }, 'max-frame': { type: 'string' }, security: { type: 'string' }, baud: { type: 'string' },
    region: { type: 'string' }, freq: { type: 'string' }, bw: { type: 'string' }, sf: { type: 'string' }, cr: { type: 'string' },
    ...MODEM_FLAG_OPTIONS,
  }, 'usage').flags;
}

async function configError(argv: string[]): Promise<string> {
  const err = await resolveModemFlags(flagsOf(argv)).then(() => undefined, (e: unknown) => e);
  expect(isTrickleError(err, 'ERR_CONFIG'), `expected ERR_CONFIG for ${argv.join(' ')}, got ${String(err)}`).toBe(true);
  return (err as Error).message;
}

const KISS = ['--modem', 'kiss', '--callsign', 'N0CALL-1', '--device', '/dev/ttyUSB0'];

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

describe('resolveModemFlags: bad flags', () => {
  it('names the allowed dialects', async () => {
    expect(await configError(['--modem', 'ax25', '--device', '/dev/ttyUSB0'])).toBe('--modem must be one of transparent, kiss, native, rnode, meshtastic, got "ax25"');
  });

  it('requires a callsign for KISS, and says why', async () => {
    const msg = await configError(['--modem', 'kiss', '--kiss-tcp', '127.0.0.1:8001']);
    expect(msg).toMatch(/^--modem kiss requires --callsign/);
    expect(msg).toContain('N0CALL-1');
  });

  it('refuses a tactical name or a malformed callsign, naming the flag', async () => {
    expect(await configError(['--modem', 'kiss', '--callsign', 'BASECP', '--device', '/dev/x'])).toMatch(/^--callsign "BASECP" is not an amateur radio callsign/);
    expect(await configError(['--modem', 'kiss', '--callsign', 'N0CALL-16', '--device', '/dev/x'])).toMatch(/^--callsign must be .*SSID from 0 to 15/);
    expect(await configError([...KISS, '--peer', 'GATEWY'])).toMatch(/^--peer "GATEWY" is not an amateur radio callsign/);
    expect(await configError([...KISS, '--destination', 'TOO-LONG-1'])).toMatch(/^--destination must be an AX.25 address/);
  });

  it('takes --kiss-tcp or --device, exactly one', async () => {
    expect(await configError([...KISS, '--kiss-tcp', '127.0.0.1:8001'])).toMatch(/^--kiss-tcp and --device are alternatives/);
    expect(await configError(['--modem', 'kiss', '--callsign', 'N0CALL-1'])).toMatch(/^--modem kiss needs the TNC: --kiss-tcp HOST:PORT .* or --device PATH/);
  });

  it('wants HOST:PORT for --kiss-tcp', async () => {
    for (const bad of ['8001', '127.0.0.1', '127.0.0.1:0', 'localhost:70000', 'a b:1']) {
      expect(await configError(['--callsign', 'N0CALL-1', '--kiss-tcp', bad])).toBe(
        `--kiss-tcp must be HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8001 (Direwolf's KISSPORT), got ${JSON.stringify(bad)}`);
    }
    expect(parseKissTcp('[::1]:8001')).toEqual({ host: '::1', port: 8001 });
    expect(parseKissTcp('direwolf.local:8001')).toEqual({ host: 'direwolf.local', port: 8001 });
  });

  it('refuses KISS-only flags with the transparent modem', async () => {
    expect(await configError(['--device', '/dev/ttyUSB0', '--callsign', 'N0CALL-1'])).toMatch(/^--callsign applies only to a KISS TNC; add --modem kiss/);
    expect(await configError(['--modem', 'transparent', '--kiss-tcp', '127.0.0.1:8001'])).toMatch(/^--kiss-tcp applies only to a KISS TNC/);
    expect(await configError(['--device', '/dev/ttyUSB0', '--txdelay-ms', '300'])).toMatch(/^--txdelay-ms applies only/);
  });

  it('refuses encryption with KISS (amateur bands)', async () => {
    expect(await configError([...KISS, '--security', 'encrypt'])).toMatch(/^--security encrypt is not allowed with --modem kiss: .* use --security authenticate-only/);
  });

  it('names the range of each number', async () => {
    expect(await configError([...KISS, '--kiss-port', '16'])).toMatch(/^--kiss-port must be an integer .* from 0 to 15, got "16"/);
    expect(await configError([...KISS, '--persist', '256'])).toMatch(/^--persist must be an integer .* from 0 to 255, got "256"/);
    expect(await configError([...KISS, '--persist', '0.5'])).toMatch(/^--persist must be/);
    expect(await configError([...KISS, '--txdelay-ms', '3000'])).toMatch(/^--txdelay-ms must be a number of milliseconds .* from 0 to 2550, got "3000"/);
    expect(await configError([...KISS, '--slottime-ms=-10'])).toMatch(/^--slottime-ms must be/);
    expect(await configError([...KISS, '--txtail-ms', '25'])).toMatch(/^--txtail-ms must be a multiple of 10 ms/);
    expect(await configError([...KISS, '--max-frame', '4096'])).toMatch(/^--max-frame must be an integer with --modem kiss .* from 1 to 2048/);
  });

  it('says what to do when nothing listens on --kiss-tcp', async () => {
    const port = await freePort();
    const err = await resolveModemFlags(flagsOf(['--callsign', 'N0CALL-1', '--kiss-tcp', `127.0.0.1:${port}`])).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_LINK_NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain(`nothing listens on 127.0.0.1:${port}`);
  });
});

describe('resolveModemFlags: good flags', () => {
  it('leaves the transparent radio to the stack by default', async () => {
    const r = await resolveModemFlags(flagsOf(['--device', '/dev/ttyUSB0']));
    expect(r.describe).toBe('transparent serial radio on /dev/ttyUSB0');
    expect(r.link).toBeUndefined();
    expect(r.createModem).toBeUndefined();
    expect(r.radio).toEqual({ region: 'eu868', bandwidthHz: 125_000, sf: 9, codingRate: 5 });
    const again = await resolveModemFlags(flagsOf(['--modem', 'transparent', '--device', '/dev/ttyUSB0']));
    expect({ ...again, close: undefined }).toEqual({ ...r, close: undefined });
  });

  it('builds a KissModem for a serial KISS TNC with the flags given', async () => {
    const r = await resolveModemFlags(flagsOf([...KISS, '--peer', 'n0call-2', '--destination', 'TRICKL-3', '--kiss-port', '2',
      '--txdelay-ms', '250', '--persist', '127', '--slottime-ms', '50', '--txtail-ms', '20', '--max-frame', '200']));
    expect(r.link).toBeUndefined();
    expect(r.defaultMaxFrameLen).toBe(256);
    expect(r.defaultSecurity).toBe('authenticate-only');
    expect(r.describe).toBe('KISS TNC at /dev/ttyUSB0, port 2: N0CALL-1>TRICKL-3, accepting only N0CALL-2');
    const [link] = createMemoryLinkPair();
    const modem = r.createModem!(link) as KissModem;
    expect(modem).toBeInstanceOf(KissModem);
    expect(modem.config).toMatchObject({
      source: { callsign: 'N0CALL', ssid: 1 }, destination: { callsign: 'TRICKL', ssid: 3 }, peer: { callsign: 'N0CALL', ssid: 2 },
      port: 2, txDelayMs: 250, persistence: 127, slotTimeMs: 50, txTailMs: 20, maxFrameLen: 200,
    });
    await modem.close();
  });

  it('--kiss-tcp implies --modem kiss and opens the TCP link; the modem configures the TNC on it', async () => {
    let accept!: (s: Socket) => void;
    const peer = new Promise<Socket>((r) => { accept = r; });
    server = createServer((s) => accept(s));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const r = await resolveModemFlags(flagsOf(['--callsign', 'N0CALL-1', '--kiss-tcp', `127.0.0.1:${port}`]));
    expect(r.link?.name).toBe(`tcp:127.0.0.1:${port}`);
    expect(r.describe).toBe(`KISS TNC at tcp:127.0.0.1:${port}, port 0: N0CALL-1>TRICKL`);
    const s = await peer;
    const got: Buffer[] = [];
    let n = 0;
    // TXDELAY, P, SlotTime, FullDuplex: four 4-byte KISS commands for port 0.
    const commands = new Promise<void>((res) => s.on('data', (d: Buffer) => { got.push(d); n += d.length; if (n >= 16) res(); }));
    const modem = r.createModem!(r.link!);
    await commands;
    expect([...Buffer.concat(got)]).toEqual([0xc0, 0x01, 30, 0xc0, 0xc0, 0x02, 63, 0xc0, 0xc0, 0x03, 10, 0xc0, 0xc0, 0x05, 0, 0xc0]);
    await modem.close();
    s.destroy();
  });

  it('documents every flag it takes', () => {
    for (const name of Object.keys(MODEM_FLAG_OPTIONS)) expect(MODEM_USAGE).toContain(`--${name} `);
  });
});

describe('resolveModemFlags: native, rnode, meshtastic flags (checked before any device is opened)', () => {
  const NOWHERE = '/nonexistent/trickle-test-tty';

  it('needs --device for the boards it opens, and points at `trickle ports`', async () => {
    for (const m of ['native', 'rnode']) {
      expect(await configError(['--modem', m])).toMatch(new RegExp(`^--modem ${m} needs --device PATH, .*trickle ports`));
    }
    expect(await configError(['--modem', 'meshtastic', '--mesh-to', '!1234abcd'])).toMatch(/^--modem meshtastic needs --device PATH/);
  });

  it('refuses dialect flags with the wrong dialect, naming the flag', async () => {
    expect(await configError(['--device', '/dev/ttyUSB0', '--tx-power', '14'])).toMatch(
      /^--tx-power applies only to a board whose radio Trickle configures \(--modem native or rnode\); .*\(the modem is transparent by default\)/);
    expect(await configError(['--modem', 'meshtastic', '--device', NOWHERE, '--mesh-to', 'broadcast', '--tx-power', '14'])).toMatch(
      /^--tx-power applies only .*Meshtastic app \(lora.tx_power\) \(the modem is --modem meshtastic\)/);
    expect(await configError(['--modem', 'native', '--device', NOWHERE, '--mesh-to', 'broadcast'])).toMatch(
      /^--mesh-to applies only to a Meshtastic node; add --modem meshtastic \(the modem is --modem native\)/);
    expect(await configError(['--modem', 'rnode', '--device', NOWHERE, '--callsign', 'N0CALL-1'])).toMatch(/^--callsign applies only to a KISS TNC/);
    expect(await configError([...KISS, '--mesh-channel', '1'])).toMatch(/^--mesh-channel applies only to a Meshtastic node/);
  });

  it('checks --tx-power, --bw, --sf, --cr and --freq before opening the board', async () => {
    const native = ['--modem', 'native', '--device', NOWHERE];
    expect(await configError([...native, '--tx-power', '31'])).toBe('--tx-power must be an integer dBm with --modem native from -17 to 30, got "31"');
    expect(await configError([...native, '--tx-power', '1.5'])).toMatch(/^--tx-power must be an integer dBm/);
    expect(await configError(['--modem', 'rnode', '--device', NOWHERE, '--tx-power=-10'])).toBe(
      '--tx-power must be an integer dBm with --modem rnode from -9 to 37, got "-10"');
    expect(await configError([...native, '--bw', '100000'])).toMatch(/^--bw must be a LoRa bandwidth with --modem native: one of 7800, .*500000 Hz, got 100000/);
    expect(await configError([...native, '--sf', '13'])).toBe('--sf must be a LoRa spreading factor from 5 to 12, got "13"');
    expect(await configError([...native, '--cr', '9'])).toMatch(/^--cr must be the coding rate denominator/);
    expect(await configError([...native, '--region', 'none'])).toMatch(/^--modem native with --region none needs --freq HZ/);
    // The channel must be legal in the region before the board is told to use it.
    const err = await resolveModemFlags(flagsOf([...native, '--freq', '915000000'])).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_REGION_CHANNEL'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/is outside every sub-band of EU/);
  });

  it('refuses a power above the sub-band limit (eu868 869.4-869.65 MHz: 500 mW; 868.0-868.6 MHz: 25 mW)', async () => {
    const rnode = ['--modem', 'rnode', '--device', NOWHERE];
    expect(await configError([...rnode, '--tx-power', '30'])).toMatch(/^--tx-power 30 dBm is above the 500 mW \(27 dBm\) limit of sub-band .*use --tx-power 27 or less/);
    expect(await configError([...rnode, '--freq', '868100000', '--tx-power', '20'])).toMatch(/above the 25 mW \(14 dBm\) limit/);
    // Within the limit the flags pass, and the device is what fails: nothing was opened before.
    const err = await resolveModemFlags(flagsOf([...rnode, '--tx-power', '27'])).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_LINK_NOT_FOUND'), String(err)).toBe(true);
  });

  it('requires --mesh-to and understands node numbers as the apps show them', async () => {
    const mesh = ['--modem', 'meshtastic', '--device', NOWHERE];
    expect(await configError(mesh)).toMatch(/^--modem meshtastic requires --mesh-to NODE: .*--mesh-to !1234abcd/);
    expect(await configError([...mesh, '--mesh-to', 'everyone'])).toMatch(/^--mesh-to must be a Meshtastic node number .* or broadcast, got "everyone"/);
    expect(await configError([...mesh, '--mesh-to', '!ffffffff'])).toMatch(/^--mesh-to must be/);
    expect(await configError([...mesh, '--mesh-to', '0'])).toMatch(/^--mesh-to must be/);
    expect(await configError([...mesh, '--mesh-to', 'broadcast', '--mesh-channel', '8'])).toBe('--mesh-channel must be a channel index on the node from 0 to 7, got "8"');
    expect(await configError([...mesh, '--mesh-to', 'broadcast', '--max-frame', '234'])).toMatch(/^--max-frame must be an integer with --modem meshtastic .* from 1 to 233/);
    expect(parseMeshNode('!1234ABCD')).toBe(0x1234abcd);
    expect(parseMeshNode('0x0000c0de')).toBe(0xc0de);
    expect(parseMeshNode('305441741')).toBe(0x1234abcd);
    expect(parseMeshNode('Broadcast')).toBe('broadcast');
  });

  it('gives the scheduler the channel the radio gets: same flags, the dialect\'s preamble and defaults', () => {
    const flags = flagsOf(['--region', 'us915', '--freq', '903900000', '--bw', '250000', '--sf', '8', '--cr', '6']);
    expect(radioFromFlags(flags, 'transparent')).toEqual({ region: 'us915', freqHz: 903_900_000, bandwidthHz: 250_000, sf: 8, codingRate: 6 });
    expect(radioFromFlags(flags, 'native')).toMatchObject({ sf: 8, bandwidthHz: 250_000, codingRate: 6, preambleSymbols: 8 });
    // RNode firmware programs at least 18 symbols and 15 ms of preamble.
    expect(radioFromFlags(flagsOf(['--sf', '7', '--bw', '500000']), 'rnode').preambleSymbols).toBe(59); // 0.256 ms symbols
    expect(radioFromFlags(flagsOf(['--sf', '12']), 'rnode').preambleSymbols).toBe(18);
    // A Meshtastic node keeps its own preset: LONG_FAST unless the flags describe another.
    expect(radioFromFlags(flagsOf([]), 'meshtastic')).toEqual({ region: 'eu868', bandwidthHz: 250_000, sf: 11, codingRate: 5, preambleSymbols: 16 });
    expect(radioFromFlags(flagsOf(['--sf', '7']), 'meshtastic')).toMatchObject({ sf: 7, bandwidthHz: 250_000 });
  });
});
