/**
 * The modem flags shared by `trickle host` and `trickle gateway`: which dialect the radio
 * speaks (`--modem transparent|kiss`) and, for KISS, the station and channel-access
 * settings and where the TNC is (`--kiss-tcp HOST:PORT`, or `--device PATH` for a serial
 * KISS TNC).
 *
 * main.ts spreads MODEM_FLAG_OPTIONS into each command's parseArgs options, appends
 * MODEM_USAGE to its usage text, and passes what resolveModemFlags returns to
 * startHost/startGateway. Every flag is validated here before anything is opened, with a
 * ConfigError naming the flag and what it allows.
 */
import { ConfigError } from '../errors.ts';
import { openTcpLink } from '../link/tcp.ts';
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import {
  DEFAULT_KISS_DESTINATION, DEFAULT_KISS_MAX_FRAME_LEN, MAX_KISS_MAX_FRAME_LEN, kissModemFactory, type KissModemOptions,
} from '../modem/kiss/kiss-modem.ts';
import { KISS_MAX_PORT } from '../modem/kiss/kiss.ts';
import { formatAx25Address, parseAx25Address, parseCallsign } from '../modem/kiss/ax25.ts';

export type ModemFlags = Record<string, string | boolean | undefined>;

/** node:util parseArgs options for the modem flags (all strings; resolveModemFlags parses them). */
export const MODEM_FLAG_OPTIONS = {
  modem: { type: 'string' },
  'kiss-tcp': { type: 'string' },
  callsign: { type: 'string' },
  destination: { type: 'string' },
  peer: { type: 'string' },
  'kiss-port': { type: 'string' },
  'txdelay-ms': { type: 'string' },
  persist: { type: 'string' },
  'slottime-ms': { type: 'string' },
  'txtail-ms': { type: 'string' },
} as const;

export const MODEM_DIALECTS = ['transparent', 'kiss'] as const;
export type ModemDialect = (typeof MODEM_DIALECTS)[number];

/** Usage text for the modem flags, in the column layout of main.ts's usage. */
export const MODEM_USAGE = `  --modem M          the radio's dialect: transparent (default; a serial LoRa radio) or kiss
                     (a KISS TNC: Direwolf, a hardware TNC, a LoRa-APRS KISS firmware)
  --kiss-tcp H:P     KISS over TCP to this TNC, e.g. 127.0.0.1:8001 (Direwolf's KISSPORT);
                     implies --modem kiss; instead of --device (a serial KISS TNC)
  --callsign CALL    kiss: your licensed callsign with optional SSID, e.g. N0CALL-1 (required)
  --destination ADDR kiss: AX.25 destination naming the link (default ${DEFAULT_KISS_DESTINATION})
  --peer CALL        kiss: accept frames only from this callsign (default: any station)
  --kiss-port N      kiss: KISS port (TNC radio channel) 0-${KISS_MAX_PORT} (default 0)
  --txdelay-ms N     kiss: transmitter key-up delay 0-2550 ms, 10 ms steps (default 300)
  --persist N        kiss: CSMA persistence P 0-255, p = (P+1)/256 (default 63)
  --slottime-ms N    kiss: CSMA slot time 0-2550 ms, 10 ms steps (default 100)
  --txtail-ms N      kiss: transmitter tail 0-2550 ms (default: the TNC's own)
                     with kiss, --max-frame defaults to ${DEFAULT_KISS_MAX_FRAME_LEN} (AX.25 N1; at most ${MAX_KISS_MAX_FRAME_LEN});
                     and --security defaults to authenticate-only (amateur bands: no encryption);
                     use --region none (no duty cycle on amateur bands) and --sf 10 (about 1200 bd)`;

/** Flags that only mean something with `--modem kiss`. */
const KISS_ONLY_FLAGS = ['kiss-tcp', 'callsign', 'destination', 'peer', 'kiss-port', 'txdelay-ms', 'persist', 'slottime-ms', 'txtail-ms'] as const;

export interface ResolvedModemFlags {
  /** An already open link (KISS over TCP); undefined: the stack opens `--device`. */
  link?: Link;
  /** The dialect on the link; undefined: the stack's default, the transparent serial radio. */
  createModem?: (link: Link) => Modem;
  /** The `--max-frame` default for this dialect, when it differs from the command's own. */
  defaultMaxFrameLen?: number;
  /**
   * The `--security` default for this dialect when the command's own (encrypt) is not
   * allowed: 'authenticate-only' for KISS, whose amateur bands forbid encryption.
   */
  defaultSecurity?: 'authenticate-only';
  /** One line for the startup log: which dialect, where, as whom. */
  describe: string;
}

function stringFlag(flags: ModemFlags, name: string): string | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.trim() === '') {
    throw new ConfigError(`--${name} needs a value`, { key: name, value: v });
  }
  return v.trim();
}

function intInRange(flags: ModemFlags, name: string, min: number, max: number, what: string): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${name} must be ${what} from ${min} to ${max}, got ${JSON.stringify(raw)}`, { key: name, value: raw });
  }
  return n;
}

function tenMsFlag(flags: ModemFlags, name: string): number | undefined {
  const n = intInRange(flags, name, 0, 2550, 'a number of milliseconds (sent to the TNC in 10 ms steps)');
  if (n !== undefined && n % 10 !== 0) {
    throw new ConfigError(`--${name} must be a multiple of 10 ms (KISS sends it in 10 ms steps), got ${n}`, { key: name, value: n });
  }
  return n;
}

/** `HOST:PORT` or `[v6]:PORT`; the host is required (no default: say where the TNC is). */
export function parseKissTcp(raw: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65_535) {
    throw new ConfigError(`--kiss-tcp must be HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8001 (Direwolf's KISSPORT), got ${JSON.stringify(raw)}`,
      { key: 'kiss-tcp', value: raw });
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function dialectOf(flags: ModemFlags): ModemDialect {
  const raw = flags['modem'];
  if (raw === undefined) return flags['kiss-tcp'] !== undefined ? 'kiss' : 'transparent';
  if (typeof raw !== 'string' || !(MODEM_DIALECTS as readonly string[]).includes(raw)) {
    throw new ConfigError(`--modem must be one of ${MODEM_DIALECTS.join(', ')}, got ${JSON.stringify(raw)}`, { key: 'modem', value: raw });
  }
  return raw as ModemDialect;
}

/**
 * Validate the modem flags and build what startHost/startGateway take. With `--kiss-tcp`
 * the TCP connection to the TNC is opened here (after all validation), and closed again
 * when the modem closes. Throws ConfigError for bad flags, and the link's TrickleError
 * (ERR_LINK_NOT_FOUND "nothing listens on …", …) when the TNC cannot be reached.
 */
export async function resolveModemFlags(flags: ModemFlags): Promise<ResolvedModemFlags> {
  const dialect = dialectOf(flags);
  const device = stringFlag(flags, 'device');

  if (dialect === 'transparent') {
    for (const name of KISS_ONLY_FLAGS) {
      if (flags[name] !== undefined) {
        throw new ConfigError(`--${name} applies only to a KISS TNC; add --modem kiss (the modem is ${flags['modem'] === undefined ? 'transparent by default' : '--modem transparent'})`,
          { key: name });
      }
    }
    return { describe: `transparent serial radio${device ? ` on ${device}` : ''}` };
  }

  // --modem kiss
  const callsignRaw = stringFlag(flags, 'callsign');
  if (callsignRaw === undefined) {
    throw new ConfigError('--modem kiss requires --callsign: amateur rules require every transmission to carry your licensed ' +
      'callsign (e.g. --callsign N0CALL-1)', { key: 'callsign' });
  }
  const kissTcp = stringFlag(flags, 'kiss-tcp');
  if (kissTcp !== undefined && device !== undefined) {
    throw new ConfigError(`--kiss-tcp and --device are alternatives: give --kiss-tcp HOST:PORT for a TNC over TCP (Direwolf) ` +
      `or --device PATH for a serial KISS TNC, not both (got --kiss-tcp ${kissTcp} --device ${device})`, { key: 'kiss-tcp' });
  }
  if (kissTcp === undefined && device === undefined) {
    throw new ConfigError('--modem kiss needs the TNC: --kiss-tcp HOST:PORT (Direwolf\'s KISSPORT, e.g. 127.0.0.1:8001) ' +
      'or --device PATH (a serial KISS TNC, e.g. /dev/ttyUSB0)', { key: 'kiss-tcp' });
  }
  const tcp = kissTcp === undefined ? undefined : parseKissTcp(kissTcp);
  if (flags['security'] === 'encrypt') {
    throw new ConfigError('--security encrypt is not allowed with --modem kiss: a KISS TNC transmits on amateur bands, where ' +
      'messages may not be encoded to obscure their meaning (ITU RR 25.2A); use --security authenticate-only (the default ' +
      'with --modem kiss: frames are signed, contents in clear)', { key: 'security', value: 'encrypt' });
  }

  const source = parseCallsign(callsignRaw, '--callsign');
  const destinationRaw = stringFlag(flags, 'destination');
  const destination = parseAx25Address(destinationRaw ?? DEFAULT_KISS_DESTINATION, '--destination');
  const peerRaw = stringFlag(flags, 'peer');
  const peer = peerRaw === undefined ? undefined : parseCallsign(peerRaw, '--peer');
  const port = intInRange(flags, 'kiss-port', 0, KISS_MAX_PORT, 'an integer (the KISS port, a TNC radio channel)');
  const persistence = intInRange(flags, 'persist', 0, 255, 'an integer (CSMA persistence P, p = (P+1)/256)');
  const txDelayMs = tenMsFlag(flags, 'txdelay-ms');
  const slotTimeMs = tenMsFlag(flags, 'slottime-ms');
  const txTailMs = tenMsFlag(flags, 'txtail-ms');
  const maxFrameLen = intInRange(flags, 'max-frame', 1, MAX_KISS_MAX_FRAME_LEN,
    `an integer with --modem kiss (the AX.25 information field; default ${DEFAULT_KISS_MAX_FRAME_LEN}, most hardware TNCs take no more)`);

  const options: KissModemOptions = {
    callsign: callsignRaw,
    ...(destinationRaw !== undefined ? { destination: destinationRaw } : {}),
    ...(peerRaw !== undefined ? { peer: peerRaw } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(persistence !== undefined ? { persistence } : {}),
    ...(txDelayMs !== undefined ? { txDelayMs } : {}),
    ...(slotTimeMs !== undefined ? { slotTimeMs } : {}),
    ...(txTailMs !== undefined ? { txTailMs } : {}),
    ...(maxFrameLen !== undefined ? { maxFrameLen } : {}),
  };
  // Validates once more, with the modem's own rules (same ranges as above).
  const createModem = kissModemFactory(options);

  const where = tcp ? `tcp:${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}` : device!;
  const describe = `KISS TNC at ${where}, port ${port ?? 0}: ${formatAx25Address(source)}>${formatAx25Address(destination)}` +
    `${peer ? `, accepting only ${formatAx25Address(peer)}` : ''}`;
  const result: ResolvedModemFlags = { createModem, defaultMaxFrameLen: DEFAULT_KISS_MAX_FRAME_LEN, defaultSecurity: 'authenticate-only', describe };
  if (tcp) result.link = await openTcpLink(tcp.host, tcp.port);
  return result;
}
