/**
 * The modem flags of `trickle host` / `trickle gateway` (src/cli/modem-options.ts): bad flags
 * fail with a ConfigError that names the flag and what it allows, before anything is opened;
 * good ones give the stack its link and modem factory.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { MODEM_FLAG_OPTIONS, MODEM_USAGE, resolveModemFlags, parseKissTcp, type ModemFlags } from '../../../src/cli/modem-options.ts';
import { parseFlags } from '../../../src/cli/args.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { KissModem } from '../../../src/modem/kiss/kiss-modem.ts';
import { freePort } from '../../../scripts/synapse.ts';

/** The flags as main.ts gets them: its own options with MODEM_FLAG_OPTIONS spread in. */
function flagsOf(argv: string[]): ModemFlags {
  return parseFlags(argv, { device: { type: 'string' }, 'max-frame': { type: 'string' }, security: { type: 'string' }, ...MODEM_FLAG_OPTIONS }, 'usage').flags;
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
    expect(await configError(['--modem', 'ax25', '--device', '/dev/ttyUSB0'])).toBe('--modem must be one of transparent, kiss, got "ax25"');
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
    expect(r).toEqual({ describe: 'transparent serial radio on /dev/ttyUSB0' });
    expect(await resolveModemFlags(flagsOf(['--modem', 'transparent', '--device', '/dev/ttyUSB0']))).toEqual(r);
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
