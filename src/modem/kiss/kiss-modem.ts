/**
 * The KISS dialect: a KISS TNC (Direwolf over TCP or a serial/PTY KISS port, hardware TNCs,
 * LoRa-APRS TNC firmwares) on an amateur packet-radio channel.
 *
 * Wire format of one frame we send (KISS framing is serial-line cost only; the AX.25 header
 * and the FCS the TNC appends are on-air cost):
 *
 *   KISS( type = port << 4 | 0,  AX.25 UI( dest = destination, src = callsign, ctl 0x03, PID 0xF0, info = payload ) )
 *
 * Integrity on air is the TNC's job: it sends the AX.25 FCS (CRC-16/X-25) and delivers only
 * frames whose FCS checked; KISS carries no FCS between TNC and host.
 *
 * Addressing (a radio channel is a broadcast medium shared with other stations, often APRS):
 * - We send every frame to one AX.25 destination, `destination` (default "TRICKL"), which
 *   names the Trickle link like a group address rather than a station; the source is our
 *   licensed `callsign`, which identifies the station on every transmission as amateur
 *   rules require.
 * - We accept a UI frame with PID 0xF0 whose destination is exactly `destination` (callsign
 *   and SSID), whose source is not our own callsign (our own frame repeated back by a
 *   digipeater or a second KISS client), and, when `peer` is set, whose source is `peer`.
 * - Everything else is counted and dropped: APRS and other traffic for other destinations
 *   (ERR_AX25_NOT_OURS), other PIDs (ERR_AX25_PID), connected-mode frames (ERR_AX25_NOT_UI),
 *   KISS frames for other ports or TNC commands (ERR_KISS_COMMAND), malformed input.
 * Two Trickle links sharing a channel should use different destinations (or SSIDs);
 * whatever still gets through is rejected above us by the security layer, which
 * authenticates every frame.
 *
 * Digipeater paths are not used: each hop would repeat every frame and multiply airtime.
 */
import { ConfigError, TrickleError, type ErrorCode, type WireError } from '../../errors.ts';
import type { Link } from '../../link/link.ts';
import type { Modem, ModemCapabilities, ModemStats, ReceivedFrameMeta, SendReport } from '../modem.ts';
import { ModemCounters } from '../modem-counters.ts';
import {
  KissDecoder, KissCommand, encodeKissDataFrame, encodeKissParameter, kissEscapedLength, FEND, FESC, KISS_MAX_PORT,
} from './kiss.ts';
import {
  AX25_ADDRESS_LEN, AX25_DEFAULT_N1, AX25_FCS_LEN, AX25_MAX_DIGIPEATERS, AX25_PID_NO_LAYER3, AX25_UI_HEADER_LEN,
  ax25AirtimeMs, decodeAx25Frame, encodeAx25UiFrame, formatAx25Address, parseAx25Address, parseCallsign, sameAddress,
  type Ax25Address,
} from './ax25.ts';

/** Default AX.25 destination: the name of the Trickle link on the channel. */
export const DEFAULT_KISS_DESTINATION = 'TRICKL';

/**
 * Default largest payload (AX.25 information field): 256 bytes, AX.25's default N1
 * (v2.2 §6.7.2.4), which every TNC accepts (many hardware TNCs accept no more). At 1200 bd
 * a full frame is 256 + 16 header + 2 FCS + 2 flags = 276 bytes, about 1.9 s on air with
 * bit stuffing, plus TXDELAY: longer frames are lost more often on a fading channel (one
 * bad bit loses the whole frame) and hold the channel longer; shorter ones waste a larger
 * share of each transmission on TXDELAY and headers.
 */
export const DEFAULT_KISS_MAX_FRAME_LEN = AX25_DEFAULT_N1;
/** Largest maxFrameLen we allow: Direwolf's own limit on the information field. */
export const MAX_KISS_MAX_FRAME_LEN = 2048;

export interface KissModemOptions {
  /**
   * REQUIRED. The station's licensed amateur callsign with optional SSID ("N0CALL-1"): the
   * AX.25 source of every frame. Amateur rules require every transmission to identify the
   * station.
   */
  callsign: string;
  /** AX.25 destination of our frames and the one we accept (default "TRICKL"). */
  destination?: string;
  /** When set, accept frames only from this source callsign (e.g. the gateway's). */
  peer?: string;
  /** KISS port (TNC radio channel), 0–15 (default 0). */
  port?: number;
  /**
   * Transmitter key-up delay, ms, sent as KISS TXDELAY in 10 ms units (default 300, the
   * KISS default of 500 ms is longer than modern radios need; Direwolf's default is 300).
   */
  txDelayMs?: number;
  /** CSMA persistence P, 0–255: transmit in a free slot with probability (P+1)/256 (default 63, the KISS default). */
  persistence?: number;
  /** CSMA slot time, ms, in 10 ms units (default 100, the KISS default). */
  slotTimeMs?: number;
  /** Transmitter hold time after the frame, ms (KISS TXtail, "obsolete" in the spec); sent only when set. */
  txTailMs?: number;
  /** Full duplex: transmit without carrier sense (default false: half duplex with CSMA). */
  fullDuplex?: boolean;
  /** Largest payload `send` accepts and the receiver keeps, in bytes (default 256). */
  maxFrameLen?: number;
}

/** Options after validation, with defaults filled in. */
export interface KissModemConfig {
  source: Ax25Address;
  destination: Ax25Address;
  peer: Ax25Address | undefined;
  port: number;
  txDelayMs: number;
  persistence: number;
  slotTimeMs: number;
  txTailMs: number | undefined;
  fullDuplex: boolean;
  maxFrameLen: number;
}

function tenMs(key: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 2550) {
    throw new ConfigError(`KISS ${key} must be a number of milliseconds from 0 to 2550 (sent in 10 ms units), got ${String(value)}`,
      { key, value });
  }
  return Math.round(v / 10) * 10;
}

/** Validate options and fill in defaults; throws ConfigError naming the bad key and value. */
export function resolveKissModemConfig(o: KissModemOptions): KissModemConfig {
  if (o === undefined || o === null || o.callsign === undefined || o.callsign === '') {
    throw new ConfigError('KISS modem callsign is required: amateur rules require every transmission to carry your ' +
      'licensed callsign; pass it as callsign (e.g. --callsign N0CALL-1)', { key: 'callsign' });
  }
  const source = parseCallsign(o.callsign, 'callsign');
  const destination = parseAx25Address(o.destination ?? DEFAULT_KISS_DESTINATION, 'destination');
  const peer = o.peer === undefined ? undefined : parseCallsign(o.peer, 'peer');
  const port = o.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > KISS_MAX_PORT) {
    throw new ConfigError(`KISS port must be an integer from 0 to ${KISS_MAX_PORT}, got ${String(o.port)}`, { key: 'port', value: o.port });
  }
  const persistence = o.persistence ?? 63;
  if (!Number.isInteger(persistence) || persistence < 0 || persistence > 255) {
    throw new ConfigError(`KISS persistence must be an integer from 0 to 255 (p = (P+1)/256), got ${String(o.persistence)}`,
      { key: 'persistence', value: o.persistence });
  }
  const maxFrameLen = o.maxFrameLen ?? DEFAULT_KISS_MAX_FRAME_LEN;
  if (!Number.isInteger(maxFrameLen) || maxFrameLen < 1 || maxFrameLen > MAX_KISS_MAX_FRAME_LEN) {
    throw new ConfigError(`KISS maxFrameLen must be an integer from 1 to ${MAX_KISS_MAX_FRAME_LEN} (AX.25 default N1 is 256), got ${String(o.maxFrameLen)}`,
      { key: 'maxFrameLen', value: o.maxFrameLen });
  }
  return {
    source, destination, peer, port, persistence, maxFrameLen,
    txDelayMs: tenMs('txDelayMs', o.txDelayMs, 300),
    slotTimeMs: tenMs('slotTimeMs', o.slotTimeMs, 100),
    txTailMs: o.txTailMs === undefined ? undefined : tenMs('txTailMs', o.txTailMs, 0),
    fullDuplex: o.fullDuplex ?? false,
  };
}

/** The KISS commands a KissModem sends at start, in order. */
export function kissParameterCommands(c: KissModemConfig): Uint8Array[] {
  const cmds = [
    encodeKissParameter(c.port, KissCommand.TxDelay, c.txDelayMs / 10),
    encodeKissParameter(c.port, KissCommand.Persistence, c.persistence),
    encodeKissParameter(c.port, KissCommand.SlotTime, c.slotTimeMs / 10),
  ];
  if (c.txTailMs !== undefined) cmds.push(encodeKissParameter(c.port, KissCommand.TxTail, c.txTailMs / 10));
  cmds.push(encodeKissParameter(c.port, KissCommand.FullDuplex, c.fullDuplex ? 1 : 0));
  return cmds;
}

export interface KissFramingOverhead {
  /** AX.25 destination, source, control and PID: sent on air with every frame (16 bytes). */
  onAirHeaderBytes: number;
  /** The AX.25 FCS the TNC appends on air (2 bytes); HDLC flags and bit stuffing come on top. */
  onAirFcsBytes: number;
  /** KISS framing on the host⇄TNC line only: 2 FENDs, the type byte, escapes. Never on air. */
  serialFramingBytes: number;
  /** Everything written to the TNC for this payload: payload + header + serial framing. */
  wireBytes: number;
}

/**
 * What carrying `payload` costs beyond itself, on air and on the host⇄TNC line, for the
 * byte bench. `wireBytes` equals the length of what KissModem.send writes.
 */
export function kissFramingOverhead(payload: Uint8Array, port = 0): KissFramingOverhead {
  // Shifted callsign bytes (0x40–0xB4), SSID bytes (0x60–0x7F, 0xE0–0xFF), control 0x03
  // and PID 0xF0 never equal FEND or FESC, so the header needs no escapes: only the type
  // byte (0xC0 for port 12) and the payload can.
  const type = port << 4;
  const typeLen = type === FEND || type === FESC ? 2 : 1;
  const serialFramingBytes = 2 + typeLen + (kissEscapedLength(payload) - payload.length);
  return {
    onAirHeaderBytes: AX25_UI_HEADER_LEN,
    onAirFcsBytes: AX25_FCS_LEN,
    serialFramingBytes,
    wireBytes: payload.length + AX25_UI_HEADER_LEN + serialFramingBytes,
  };
}

/**
 * Airtime of one transmission of `payload` by a KissModem with `config`: TXDELAY, the
 * AX.25 frame with FCS, flags and bit stuffing at `baud`, TXtail. Channel-access waits
 * (CSMA slots, a busy channel) come on top. Measured over the Direwolf pair at 1200 bd,
 * Direwolf's bursts match this within a few milliseconds (test/hil/direwolf.test.ts).
 * With txTailMs unset the TNC keeps its own TXtail (Direwolf: 100 ms), which is not counted.
 */
export function kissAirtimeMs(payload: Uint8Array, config: KissModemConfig, baud = 1200): number {
  const frame = encodeAx25UiFrame({ destination: config.destination, source: config.source, info: payload });
  return ax25AirtimeMs(frame, { baud, txDelayMs: config.txDelayMs, txTailMs: config.txTailMs ?? 0 });
}

export class KissModem implements Modem {
  readonly dialect = 'kiss';
  readonly capabilities: ModemCapabilities;
  readonly config: KissModemConfig;
  /** Resolves when the KISS parameter commands have been handed to the link. */
  readonly ready: Promise<void>;
  private readonly decoder: KissDecoder;
  private readonly frameListeners: ((frame: Uint8Array, meta: ReceivedFrameMeta) => void)[] = [];
  private readonly book = new ModemCounters();
  private readonly counters = this.book.counters;

  /** Throws ConfigError for bad options; sends the KISS parameters at once. */
  constructor(private readonly link: Link, options: KissModemOptions) {
    this.config = resolveKissModemConfig(options);
    const { maxFrameLen } = this.config;
    // The TNC keys up by its own p-persistent CSMA on its carrier detect (the persistence and slot time set at start).
    this.capabilities = { maxFrameLen, enforcesDutyCycle: false, reportsAirtime: false, channelSense: 'firmware' };
    // Bound: the information field plus the longest address field a valid frame can have.
    this.decoder = new KissDecoder({ maxFrameLen: maxFrameLen + (2 + AX25_MAX_DIGIPEATERS) * AX25_ADDRESS_LEN + 2 });
    link.onData((chunk) => this.receive(chunk));
    // Link writes are delivered in call order, so these precede any data frame.
    this.ready = Promise.all(kissParameterCommands(this.config).map(async (cmd) => {
      await this.link.write(cmd);
      this.counters.wireBytesSent += cmd.length;
    })).then(() => undefined);
    // A failed write closes the link and reaches onClose listeners; not an unhandled rejection.
    this.ready.catch(() => { /* reported through onClose */ });
  }

  async send(frame: Uint8Array): Promise<SendReport> {
    const { maxFrameLen } = this.capabilities;
    if (frame.length === 0 || frame.length > maxFrameLen) {
      throw new TrickleError('ERR_MODEM_MTU', 'modem',
        `frame of ${frame.length} bytes cannot be sent: the KISS modem carries 1 to ${maxFrameLen} bytes per AX.25 frame`,
        { len: frame.length, maxFrameLen });
    }
    const ax25 = encodeAx25UiFrame({ destination: this.config.destination, source: this.config.source, info: frame });
    const wire = encodeKissDataFrame(this.config.port, ax25);
    await this.link.write(wire);
    this.counters.framesSent++;
    this.counters.wireBytesSent += wire.length;
    return { wireBytes: wire.length };
  }

  /**
   * On air: the 16-byte AX.25 header and the 2-byte FCS the TNC appends (HDLC flags, bit
   * stuffing and TXDELAY are the PHY's, as a LoRa preamble is). Serial only: KISS framing.
   * (The bytes written to the TNC are payload + header + serial framing: the FCS is not.)
   */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number } {
    const o = kissFramingOverhead(payload, this.config.port);
    return { onAir: o.onAirHeaderBytes + o.onAirFcsBytes, serial: o.serialFramingBytes };
  }

  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void { this.frameListeners.push(listener); }

  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.book.onDrop(listener); }

  onClose(listener: (err?: Error) => void): void { this.link.onClose(listener); }

  stats(): ModemStats { return this.book.snapshot(); }

  close(): Promise<void> { return this.link.close(); }

  private drop(code: ErrorCode, message: string, detail: Readonly<Record<string, unknown>> = {}): void { this.book.drop(code, message, detail); }

  private dropError(err: WireError): void { this.book.dropError(err); }

  private receive(chunk: Uint8Array): void {
    this.counters.wireBytesReceived += chunk.length;
    const { frames, errors } = this.decoder.push(chunk);
    for (const err of errors) this.dropError(err);
    const c = this.config;
    for (const k of frames) {
      if (k.command !== KissCommand.DataFrame || k.port !== c.port) {
        this.drop('ERR_KISS_COMMAND', `KISS frame with port ${k.port} command 0x${k.command.toString(16)} is not a data frame for port ${c.port}; dropped`,
          { port: k.port, command: k.command, len: k.data.length });
        continue;
      }
      const r = decodeAx25Frame(k.data, { maxInfoLen: c.maxFrameLen });
      if (!r.ok) { this.dropError(r.error); continue; }
      const f = r.frame;
      if (f.pid !== AX25_PID_NO_LAYER3) {
        this.drop('ERR_AX25_PID', `AX.25 UI frame from ${formatAx25Address(f.source)} with PID 0x${f.pid.toString(16)} (not 0xf0); dropped`,
          { pid: f.pid, source: formatAx25Address(f.source) });
        continue;
      }
      const forUs = sameAddress(f.destination, c.destination)
        && !sameAddress(f.source, c.source)
        && (c.peer === undefined || sameAddress(f.source, c.peer));
      if (!forUs) {
        this.drop('ERR_AX25_NOT_OURS',
          `AX.25 frame ${formatAx25Address(f.source)}>${formatAx25Address(f.destination)} is not for this link ` +
          `(${c.peer ? formatAx25Address(c.peer) : 'any station'}>${formatAx25Address(c.destination)}); dropped`,
          { source: formatAx25Address(f.source), destination: formatAx25Address(f.destination), len: f.info.length });
        continue;
      }
      this.counters.framesReceived++;
      for (const l of this.frameListeners) l(f.info, {});
    }
  }
}

/**
 * Validate `options` now (so a bad callsign fails before any device is opened) and return
 * a factory for the radio stack's `createModem` hook.
 */
export function kissModemFactory(options: KissModemOptions): (link: Link) => KissModem {
  resolveKissModemConfig(options);
  return (link) => new KissModem(link, options);
}
