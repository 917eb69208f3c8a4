/**
 * The modem flags shared by `trickle host` and `trickle gateway`: which dialect the radio
 * speaks (`--modem transparent|kiss|native|rnode|meshtastic`) and the settings each needs:
 *
 *   transparent  nothing: the module was configured with the vendor's tool; the stack opens --device.
 *   kiss         station and channel-access settings, and where the TNC is (--kiss-tcp HOST:PORT,
 *                or --device PATH for a serial KISS TNC).
 *   native       Trickle firmware: the LoRa settings of the common flags (--freq/--bw/--sf/--cr)
 *                plus --tx-power, set on the board and read back before anything else runs.
 *   rnode        RNode firmware: the same settings, echoed and verified by the firmware.
 *   meshtastic   a Meshtastic node: --mesh-to NODE and --mesh-channel N; the node keeps its own
 *                LoRa settings (modem preset), which --sf/--bw/--cr must describe for airtime.
 *
 * The LoRa settings are read from the same flags for the radio and for the scheduler: the
 * result's `radio` is what the duty-cycle ledger uses, so both always agree.
 *
 * main.ts spreads MODEM_FLAG_OPTIONS into each command's parseArgs options, appends
 * MODEM_USAGE to its usage text, and passes what resolveModemFlags returns to
 * startHost/startGateway. Every flag is validated here before anything is opened, with a
 * ConfigError naming the flag and what it allows. native, rnode and meshtastic start
 * asynchronously (handshake, settings, read-back), so they are opened here, after all
 * validation, and handed over as `{ link, createModem: () => modem }`.
 */
import { ConfigError } from '../errors.ts';
import { openTcpLink } from '../link/tcp.ts';
import { openSerialLink } from '../link/serial.ts';
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import {
  DEFAULT_KISS_DESTINATION, DEFAULT_KISS_MAX_FRAME_LEN, MAX_KISS_MAX_FRAME_LEN, kissModemFactory, type KissModemOptions,
} from '../modem/kiss/kiss-modem.ts';
import { KISS_MAX_PORT } from '../modem/kiss/kiss.ts';
import { formatAx25Address, parseAx25Address, parseCallsign } from '../modem/kiss/ax25.ts';
import { NATIVE_RADIO_DEFAULTS, openNativeModem } from '../modem/native/native-modem.ts';
import { BANDWIDTHS_HZ } from '../modem/native/protocol-generated.ts';
import { RNodeModem, RNODE_RADIO_DEFAULTS } from '../modem/rnode/rnode-modem.ts';
import { RNODE_HW_MTU, RNODE_SINGLE_PACKET_MAX } from '../modem/rnode/rnode-protocol.ts';
import { rnodePreambleSymbols } from '../modem/emulator/rnode-emulator.ts';
import { DEFAULT_MESHTASTIC_MAX_FRAME_LEN, MeshtasticModem, type MeshtasticModemOptions } from '../modem/meshtastic/meshtastic-modem.ts';
import { DATA_PAYLOAD_LEN } from '../modem/meshtastic/meshtastic-protocol.ts';
import { DEFAULT_RADIO, resolveRadio, type RadioSettings } from '../net/radio-stack.ts';
import { getRegion } from '../scheduler/regions.ts';

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
  'tx-power': { type: 'string' },
  'mesh-to': { type: 'string' },
  'mesh-channel': { type: 'string' },
} as const;

export const MODEM_DIALECTS = ['transparent', 'kiss', 'native', 'rnode', 'meshtastic'] as const;
export type ModemDialect = (typeof MODEM_DIALECTS)[number];

/** Serial speed of the boards with a firmware host protocol (RNode, Meshtastic, Trickle firmware). */
export const FIRMWARE_DEFAULT_BAUD_RATE = 115_200;

/** Meshtastic's default modem preset LONG_FAST (SF11, 250 kHz, 4/5), as the Meshtastic documentation lists it. */
export const MESHTASTIC_LONG_FAST = { sf: 11, bandwidthHz: 250_000, codingRate: 5 } as const;
/** Meshtastic programs a 16-symbol preamble (Meshtastic docs, "LoRa configuration"). */
export const MESHTASTIC_PREAMBLE_SYMBOLS = 16;

/** --tx-power bounds at the flag level (the board's own range is checked against its answer). */
const TX_POWER_RANGE: Readonly<Record<'native' | 'rnode', readonly [number, number]>> = {
  native: [-17, 30], // SX1261's −17 dBm up to 1 W boards; CAPABILITIES names the real range
  rnode: [-9, 37], // what the RNode host accepts (resolveRNodeModemConfig)
};

/** Usage text for the modem flags, in the column layout of main.ts's usage. */
export const MODEM_USAGE = `  --modem M          the radio's dialect: transparent (default; a serial LoRa radio such as an EBYTE E22),
                     kiss (a KISS TNC: Direwolf, a hardware TNC, a LoRa-APRS KISS firmware),
                     native (a LoRa board running Trickle firmware), rnode (RNode firmware),
                     meshtastic (a Meshtastic node, over its serial API); \`trickle ports\` finds them
  --tx-power DBM     native, rnode: transmit power in dBm (default 14); checked against the board
                     and the sub-band's power limit; --freq/--bw/--sf/--cr are set on the board
  --mesh-to NODE     meshtastic: the peer node, as !1234abcd, 0x1234abcd or decimal, or broadcast (required)
  --mesh-channel N   meshtastic: channel index 0-7 on the node (default 0, the primary channel);
                     the node keeps its own LoRa settings: --sf/--bw/--cr default to its LONG_FAST
                     preset (SF11, 250 kHz, 4/5) and must match the node's preset for the airtime count
                     with native, rnode, meshtastic: --device is the board, --baud defaults to ${FIRMWARE_DEFAULT_BAUD_RATE},
                     --max-frame defaults to the board's payload (native), ${RNODE_SINGLE_PACKET_MAX} (rnode, one LoRa packet),
                     ${DEFAULT_MESHTASTIC_MAX_FRAME_LEN} (meshtastic)
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

/** Flags that only mean something with some dialects, and what to say otherwise. */
const DIALECT_FLAGS: readonly { names: readonly string[]; dialects: readonly ModemDialect[]; what: string; add: string }[] = [
  { names: ['kiss-tcp', 'callsign', 'destination', 'peer', 'kiss-port', 'txdelay-ms', 'persist', 'slottime-ms', 'txtail-ms'],
    dialects: ['kiss'], what: 'a KISS TNC', add: 'add --modem kiss' },
  { names: ['tx-power'], dialects: ['native', 'rnode'], what: 'a board whose radio Trickle configures (--modem native or rnode)',
    add: 'a transparent radio\'s power is set with the vendor\'s tool, a Meshtastic node\'s with the Meshtastic app (lora.tx_power)' },
  { names: ['mesh-to', 'mesh-channel'], dialects: ['meshtastic'], what: 'a Meshtastic node', add: 'add --modem meshtastic' },
];

export interface ResolvedModemFlags {
  /** An already open link (KISS over TCP, or the board of an opened dialect); undefined: the stack opens `--device`. */
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
  /**
   * The LoRa channel for the scheduler (airtime, duty cycle), from the same flags the radio
   * was configured with (--region, --freq, --bw, --sf, --cr; the dialect's preamble).
   */
  radio: RadioSettings;
  /**
   * Release what was opened here (the modem, or the KISS TCP link) when the command fails
   * before the stack owns it. Use this rather than `link.close()`: the native modem would
   * take a closed link for an unplugged board and reopen it.
   */
  close(): Promise<void>;
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

/** A signed integer flag in [min, max]. */
function signedIntFlag(flags: ModemFlags, name: string, min: number, max: number, what: string): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw) || n < min || n > max) {
    throw new ConfigError(`--${name} must be ${what} from ${min} to ${max}, got ${JSON.stringify(raw)}`, { key: name, value: raw });
  }
  return n;
}

/**
 * A Meshtastic node number as the apps show it (`!1234abcd`), as hex (`0x1234abcd`), as a
 * decimal number, or `broadcast`. 0 and 0xffffffff (the broadcast address) are not nodes.
 */
export function parseMeshNode(raw: string, flag = '--mesh-to'): number | 'broadcast' {
  const s = raw.trim().toLowerCase();
  if (s === 'broadcast') return 'broadcast';
  const m = /^(?:!|0x)([0-9a-f]{1,8})$/.exec(s);
  const n = m ? parseInt(m[1]!, 16) : /^\d{1,10}$/.test(s) ? Number(s) : NaN;
  if (!(Number.isInteger(n) && n >= 1 && n <= 0xffff_fffe)) {
    throw new ConfigError(`${flag} must be a Meshtastic node number (!1234abcd as the apps show it, 0x1234abcd, or decimal ` +
      `1-4294967294) or broadcast, got ${JSON.stringify(raw)}`, { key: flag.replace(/^--/, ''), value: raw });
  }
  return n;
}

/**
 * The LoRa channel from --region/--freq/--bw/--sf/--cr with the dialect's defaults. This
 * one object is both what a native or RNode board is told and what the scheduler books.
 */
export function radioFromFlags(flags: ModemFlags, dialect: ModemDialect = 'transparent'): RadioSettings {
  const region = stringFlag(flags, 'region') ?? DEFAULT_RADIO.region;
  const base = dialect === 'meshtastic' ? MESHTASTIC_LONG_FAST : DEFAULT_RADIO;
  const freqHz = intInRange(flags, 'freq', 1, 10_000_000_000, 'an integer number of Hz');
  const configured = dialect === 'native' || dialect === 'rnode';
  const bandwidthHz = intInRange(flags, 'bw', 7_800, 500_000, 'an integer number of Hz') ?? base.bandwidthHz;
  if (configured && !(BANDWIDTHS_HZ as readonly number[]).includes(bandwidthHz)) {
    throw new ConfigError(`--bw must be a LoRa bandwidth with --modem ${dialect}: one of ${BANDWIDTHS_HZ.join(', ')} Hz, got ${bandwidthHz}`,
      { key: 'bw', value: bandwidthHz });
  }
  const sf = intInRange(flags, 'sf', 5, 12, 'a LoRa spreading factor') ?? base.sf;
  const codingRate = intInRange(flags, 'cr', 5, 8, 'the coding rate denominator (4/5 .. 4/8)') ?? base.codingRate;
  const radio: RadioSettings = { region, ...(freqHz !== undefined ? { freqHz } : {}), bandwidthHz, sf, codingRate };
  if (dialect === 'native') radio.preambleSymbols = NATIVE_RADIO_DEFAULTS.preambleSymbols;
  if (dialect === 'rnode') radio.preambleSymbols = rnodePreambleSymbols(sf, bandwidthHz);
  if (dialect === 'meshtastic') radio.preambleSymbols = MESHTASTIC_PREAMBLE_SYMBOLS;
  return radio;
}

/** Frequency, channel and power for a board Trickle configures; checked before the device is opened. */
function configuredChannel(flags: ModemFlags, dialect: 'native' | 'rnode'): { radio: RadioSettings; frequencyHz: number; txPowerDbm: number } {
  const radio = radioFromFlags(flags, dialect);
  if (radio.region === 'none' && radio.freqHz === undefined) {
    throw new ConfigError(`--modem ${dialect} with --region none needs --freq HZ: the board must be told its channel ` +
      '(e.g. --freq 869525000)', { key: 'freq' });
  }
  // Region, channel edges and SF/BW, with the stack's own messages (ERR_REGION_CHANNEL lists the legal sub-bands).
  const { channel } = resolveRadio(radio);
  const frequencyHz = radio.freqHz ?? getRegion(radio.region).defaultChannel.freqHz;
  const [lo, hi] = TX_POWER_RANGE[dialect];
  const txPowerDbm = signedIntFlag(flags, 'tx-power', lo, hi, `an integer dBm with --modem ${dialect}`) ??
    (dialect === 'native' ? NATIVE_RADIO_DEFAULTS.txPowerDbm : RNODE_RADIO_DEFAULTS.txPowerDbm);
  const maxPowerMw = channel?.subBand.maxPowerMw;
  if (maxPowerMw !== undefined) {
    // Conducted power against the row's limit (e.r.p. in the EU): an antenna with gain needs less.
    const maxDbm = Math.round(10 * Math.log10(maxPowerMw));
    if (txPowerDbm > maxDbm) {
      throw new ConfigError(`--tx-power ${txPowerDbm} dBm is above the ${maxPowerMw} mW (${maxDbm} dBm) limit of sub-band ` +
        `${channel!.subBand.id} (${channel!.rules.regulation}); use --tx-power ${maxDbm} or less, minus your antenna's gain`,
        { key: 'tx-power', value: txPowerDbm, allowed: `${lo}..${maxDbm}` });
    }
  }
  return { radio, frequencyHz, txPowerDbm };
}

function deviceFor(flags: ModemFlags, dialect: ModemDialect, example: string): string {
  const device = stringFlag(flags, 'device');
  if (device === undefined) {
    throw new ConfigError(`--modem ${dialect} needs --device PATH, the board's serial device (e.g. ${example}; ` +
      '`trickle ports` lists serial devices and what answers on them)', { key: 'device' });
  }
  return device;
}

function baudFor(flags: ModemFlags): number {
  return intInRange(flags, 'baud', 50, 4_000_000, 'an integer (bits per second)') ?? FIRMWARE_DEFAULT_BAUD_RATE;
}

function mhz(hz: number): string { return `${(hz / 1e6).toFixed(3)} MHz`; }

/**
 * Validate the modem flags and build what startHost/startGateway take. With `--kiss-tcp`
 * the TCP connection to the TNC is opened here (after all validation); native, rnode and
 * meshtastic boards are opened and brought up here (handshake, settings, read-back), and
 * closed again when the modem closes. Throws ConfigError for bad flags, the modem's
 * ERR_MODEM_CONFIG / ERR_MODEM_TIMEOUT when the board refuses or does not answer, and the
 * link's TrickleError (ERR_LINK_NOT_FOUND "nothing listens on …", ERR_LINK_BUSY, …) when
 * the device cannot be opened.
 */
export async function resolveModemFlags(flags: ModemFlags): Promise<ResolvedModemFlags> {
  const dialect = dialectOf(flags);
  for (const group of DIALECT_FLAGS) {
    if (group.dialects.includes(dialect)) continue;
    for (const name of group.names) {
      if (flags[name] !== undefined) {
        throw new ConfigError(`--${name} applies only to ${group.what}; ${group.add} ` +
          `(the modem is ${flags['modem'] === undefined ? 'transparent by default' : `--modem ${dialect}`})`, { key: name });
      }
    }
  }
  const none = async (): Promise<void> => undefined;

  switch (dialect) {
    case 'transparent': {
      const device = stringFlag(flags, 'device');
      return { radio: radioFromFlags(flags, dialect), close: none, describe: `transparent serial radio${device ? ` on ${device}` : ''}` };
    }
    case 'kiss': return resolveKiss(flags);
    case 'native': {
      const device = deviceFor(flags, dialect, '/dev/ttyACM0');
      const { radio, frequencyHz, txPowerDbm } = configuredChannel(flags, dialect);
      const maxFrameLen = intInRange(flags, 'max-frame', 1, 255, 'an integer with --modem native (the board\'s CAPABILITIES.maxPayload is the limit)');
      const modem = await openNativeModem(device, {
        baudRate: baudFor(flags),
        radio: { frequencyHz, bandwidthHz: radio.bandwidthHz, sf: radio.sf, codingRate: radio.codingRate, txPowerDbm },
        ...(maxFrameLen !== undefined ? { maxFrameLen } : {}),
      });
      const info = modem.device;
      return {
        link: modem.currentLink, createModem: () => modem, defaultMaxFrameLen: modem.capabilities.maxFrameLen, radio,
        close: () => modem.close(),
        describe: `Trickle firmware ${info ? `"${info.firmwareName}" ${info.firmwareVersion} (${info.chip}) ` : ''}on ${device}: ` +
          `${mhz(frequencyHz)}, ${radio.bandwidthHz / 1000} kHz, SF${radio.sf}, 4/${radio.codingRate}, ${txPowerDbm} dBm`,
      };
    }
    case 'rnode': {
      const device = deviceFor(flags, dialect, '/dev/ttyACM0');
      const { radio, frequencyHz, txPowerDbm } = configuredChannel(flags, dialect);
      const maxFrameLen = intInRange(flags, 'max-frame', 1, RNODE_HW_MTU,
        `an integer with --modem rnode (default ${RNODE_SINGLE_PACKET_MAX}: one LoRa packet; up to ${RNODE_HW_MTU} the firmware splits into two)`);
      const link = await openSerialLink(device, { baudRate: baudFor(flags) });
      const modem = await RNodeModem.start(link, {
        radio: { frequencyHz, bandwidthHz: radio.bandwidthHz, sf: radio.sf, codingRate: radio.codingRate, txPowerDbm },
        maxFrameLen: maxFrameLen ?? RNODE_SINGLE_PACKET_MAX,
      }); // on refusal the link is closed by the modem
      return {
        link, createModem: () => modem, defaultMaxFrameLen: RNODE_SINGLE_PACKET_MAX, radio, close: () => modem.close(),
        describe: `RNode${modem.device ? ` firmware ${modem.device.firmwareVersion}` : ''} on ${device}: ` +
          `${mhz(frequencyHz)}, ${radio.bandwidthHz / 1000} kHz, SF${radio.sf}, 4/${radio.codingRate}, ${txPowerDbm} dBm`,
      };
    }
    case 'meshtastic': {
      const device = deviceFor(flags, dialect, '/dev/ttyUSB0');
      const toRaw = stringFlag(flags, 'mesh-to');
      if (toRaw === undefined) {
        throw new ConfigError('--modem meshtastic requires --mesh-to NODE: the peer\'s node number as the Meshtastic apps show it ' +
          '(e.g. --mesh-to !1234abcd), or --mesh-to broadcast', { key: 'mesh-to' });
      }
      const destination = parseMeshNode(toRaw);
      const channel = intInRange(flags, 'mesh-channel', 0, 7, 'a channel index on the node');
      const maxFrameLen = intInRange(flags, 'max-frame', 1, DATA_PAYLOAD_LEN,
        `an integer with --modem meshtastic (default ${DEFAULT_MESHTASTIC_MAX_FRAME_LEN}; Data.payload holds at most ${DATA_PAYLOAD_LEN})`);
      const radio = radioFromFlags(flags, dialect);
      resolveRadio(radio);
      const options: MeshtasticModemOptions = {
        destination, ...(channel !== undefined ? { channel } : {}), ...(maxFrameLen !== undefined ? { maxFrameLen } : {}),
      };
      const link = await openSerialLink(device, { baudRate: baudFor(flags) });
      const modem = await MeshtasticModem.start(link, options);
      const node = (n: number | undefined): string => (n === undefined ? '?' : `!${(n >>> 0).toString(16).padStart(8, '0')}`);
      return {
        link, createModem: () => modem, defaultMaxFrameLen: DEFAULT_MESHTASTIC_MAX_FRAME_LEN, radio, close: () => modem.close(),
        describe: `Meshtastic node ${node(modem.myNodeNum)} on ${device}, channel ${channel ?? 0}, to ` +
          `${destination === 'broadcast' ? 'broadcast' : node(destination)} (LoRa settings: the node's preset; ` +
          `airtime counted for SF${radio.sf}, ${radio.bandwidthHz / 1000} kHz, 4/${radio.codingRate})`,
      };
    }
  }
}

async function resolveKiss(flags: ModemFlags): Promise<ResolvedModemFlags> {
  const device = stringFlag(flags, 'device');
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
  const result: ResolvedModemFlags = {
    createModem, defaultMaxFrameLen: DEFAULT_KISS_MAX_FRAME_LEN, defaultSecurity: 'authenticate-only', radio: radioFromFlags(flags, 'kiss'),
    close: async () => undefined, describe,
  };
  if (tcp) {
    const link = await openTcpLink(tcp.host, tcp.port);
    result.link = link;
    result.close = () => link.close();
  }
  return result;
}
