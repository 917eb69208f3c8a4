/**
 * The RNode host⇄modem protocol (RNode firmware by Mark Qvist, used by Reticulum's
 * RNodeInterface). Pure: bytes in, commands and coded errors out.
 *
 * Written from the protocol DESCRIPTIONS, not from the (GPL-3.0) firmware or the Reticulum
 * (use-restricted) sources. Every number below was checked against:
 *   [F] markqvist/RNode_Firmware `Framing.h` (the command byte table; read, not copied);
 *   [R] "RNode Interface Protocol Research", a public write-up of RNS 1.1.3's RNodeInterface
 *       (payload layouts of each command, §1.2–§2.3);
 *   [S] thatSFguy/reticulum-specifications SPEC.md §8.3 + tools/verify_rnode_split.py
 *       (the on-air split-packet header);
 *   [C] RNode_Firmware `Config.h`/`Radio.hpp` constants as quoted in public discussions:
 *       RSSI_OFFSET 157, airtime bins of 7.5 s (short term = two bins = 15 s) over 3600 s.
 *
 * Serial framing: KISS (Chepponis & Karn 1987, see ../kiss/kiss.ts), FEND ‖ cmd ‖ escape(data) ‖ FEND,
 * but the whole byte after FEND is an RNode command (no port nibble). Commands we use:
 *
 *   cmd   name              host → RNode                     RNode → host
 *   0x00  CMD_DATA          one packet ≤ 508 B (HW_MTU)       one received packet
 *   0x01  CMD_FREQUENCY     u32 BE Hz                         u32 BE Hz in force (echo)
 *   0x02  CMD_BANDWIDTH     u32 BE Hz                         u32 BE Hz in force (echo)
 *   0x03  CMD_TXPOWER       1 byte dBm                        1 byte dBm in force (echo)
 *   0x04  CMD_SF            1 byte, 5..12                     echo
 *   0x05  CMD_CR            1 byte, 5..8 (4/5..4/8)           echo
 *   0x06  CMD_RADIO_STATE   0x00 off, 0x01 on, 0xFF ask       state in force
 *   0x08  CMD_DETECT        DETECT_REQ 0x73                   DETECT_RESP 0x46
 *   0x0A  CMD_LEAVE         0xFF (host is going away)         —
 *   0x0B  CMD_ST_ALOCK      u16 BE, percent × 100             echo
 *   0x0C  CMD_LT_ALOCK      u16 BE, percent × 100             echo
 *   0x0F  CMD_READY         —                                 ready for the next packet (flow control)
 *   0x23  CMD_STAT_RSSI     —                                 1 byte, RSSI + 157 dBm, before the CMD_DATA it belongs to
 *   0x24  CMD_STAT_SNR      —                                 1 byte, int8, SNR × 4 dB, before the CMD_DATA
 *   0x25  CMD_STAT_CHTM     —                                 8 or 11 bytes, periodic (see decodeChannelStats)
 *   0x50  CMD_FW_VERSION    0x00                              [major, minor]
 *   0x90  CMD_ERROR         —                                 1 byte error code (ERROR_* below)
 *
 * TX power is one byte; we encode it as int8 (two's complement): identical to the unsigned
 * byte of the single-radio firmware for 0..37 dBm, and to the signed byte of the
 * multi-radio firmware for SX126x's −9..−1 dBm [R §2.1].
 *
 * On air (firmware's job, not the host's; the emulator implements it) every LoRa packet
 * starts with one header byte [S]: high nibble a random sequence number, low nibble flags,
 * FLAG_SPLIT = 0x01. A CMD_DATA packet of ≤ 254 bytes is one LoRa packet (header + packet
 * = ≤ 255, the SX127x/SX126x FIFO); 255..508 bytes are two LoRa packets with the same header
 * (split flag set), 254 bytes in the first. The receiver joins a split pair with equal
 * sequence numbers and delivers whole packets only.
 */
import { WireError } from '../../errors.ts';
import { KissDecoder, FEND, FESC, TFEND, TFESC, kissEscapedLength } from '../kiss/kiss.ts';

/** Command bytes [F]. */
export const RNodeCmd = {
  DATA: 0x00,
  FREQUENCY: 0x01,
  BANDWIDTH: 0x02,
  TXPOWER: 0x03,
  SF: 0x04,
  CR: 0x05,
  RADIO_STATE: 0x06,
  RADIO_LOCK: 0x07,
  DETECT: 0x08,
  LEAVE: 0x0a,
  ST_ALOCK: 0x0b,
  LT_ALOCK: 0x0c,
  READY: 0x0f,
  STAT_RX: 0x21,
  STAT_TX: 0x22,
  STAT_RSSI: 0x23,
  STAT_SNR: 0x24,
  STAT_CHTM: 0x25,
  STAT_PHYPRM: 0x26,
  STAT_BAT: 0x27,
  STAT_CSMA: 0x28,
  STAT_TEMP: 0x29,
  RANDOM: 0x40,
  PLATFORM: 0x48,
  MCU: 0x49,
  FW_VERSION: 0x50,
  RESET: 0x55,
  ERROR: 0x90,
} as const;
export type RNodeCmdName = keyof typeof RNodeCmd;

export const DETECT_REQ = 0x73;
export const DETECT_RESP = 0x46;
export const RADIO_STATE_OFF = 0x00;
export const RADIO_STATE_ON = 0x01;
export const RADIO_STATE_ASK = 0xff;
export const LEAVE_BYTE = 0xff;

/** CMD_ERROR codes [F]. */
export const RNodeError = {
  INITRADIO: 0x01,
  TXFAILED: 0x02,
  EEPROM_LOCKED: 0x03,
  QUEUE_FULL: 0x04,
  MEMORY_LOW: 0x05,
  MODEM_TIMEOUT: 0x06,
} as const;
const ERROR_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(RNodeError).map(([k, v]) => [v, k]));
export function rnodeErrorName(code: number): string { return ERROR_NAMES[code] ?? `UNKNOWN_0x${code.toString(16).padStart(2, '0')}`; }

/** Largest packet a CMD_DATA carries (HW_MTU) [R §2.2]. */
export const RNODE_HW_MTU = 508;
/** Largest LoRa packet (the radio FIFO), header byte included. */
export const RNODE_SINGLE_MTU = 255;
/** The on-air header byte in front of every LoRa packet [S]. */
export const RNODE_AIR_HEADER_LEN = 1;
/** Largest packet that goes out as a single LoRa packet. */
export const RNODE_SINGLE_PACKET_MAX = RNODE_SINGLE_MTU - RNODE_AIR_HEADER_LEN; // 254
export const NIBBLE_SEQ = 0xf0;
export const FLAG_SPLIT = 0x01;
/** RSSI bytes carry dBm + 157 [C]. */
export const RSSI_OFFSET = 157;
/** Minimum firmware the Reticulum host accepts for a single-radio RNode [R §2.3]. */
export const RNODE_MIN_FIRMWARE: readonly [number, number] = [1, 52];
/** Airtime lock windows of the firmware [C]: short term 15 s, long term 1 h. */
export const RNODE_SHORT_TERM_WINDOW_MS = 15_000;
export const RNODE_LONG_TERM_WINDOW_MS = 3_600_000;

// ---------------------------------------------------------------------------------------------
// Serial framing

export interface RNodeFrame {
  /** Command byte (RNodeCmd). */
  cmd: number;
  /** Unescaped data after the command byte. */
  data: Uint8Array;
}

function escapeByte(out: number[], b: number): void {
  if (b === FEND) out.push(FESC, TFEND);
  else if (b === FESC) out.push(FESC, TFESC);
  else out.push(b);
}

/** FEND ‖ escape(cmd ‖ data) ‖ FEND. */
export function encodeRNodeFrame(cmd: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0xff) throw new RangeError(`RNode command must be a byte, got ${String(cmd)}`);
  const out: number[] = [FEND];
  escapeByte(out, cmd);
  for (const b of data) escapeByte(out, b);
  out.push(FEND);
  return Uint8Array.from(out);
}

/** Bytes the serial framing adds to a CMD_DATA carrying `packet`: 2 FENDs, the command byte, escapes. */
export function rnodeSerialOverhead(packet: Uint8Array): number {
  return 3 + (kissEscapedLength(packet) - packet.length);
}

export interface RNodeDecodeResult {
  frames: RNodeFrame[];
  /** ERR_FRAME_NOISE / ERR_FRAME_TOO_LONG / ERR_FRAME_BAD_ESCAPE, as KissDecoder reports them. */
  errors: WireError[];
}

/**
 * Incremental decoder for the RNode side of the line (or, in the emulator, the host side).
 * KISS's byte stuffing; the type byte is taken whole as the RNode command.
 */
export class RNodeDecoder {
  private readonly kiss: KissDecoder;
  constructor(options: { maxFrameLen?: number } = {}) {
    this.kiss = new KissDecoder({ maxFrameLen: options.maxFrameLen ?? RNODE_HW_MTU });
  }

  push(chunk: Uint8Array): RNodeDecodeResult {
    const { frames, errors } = this.kiss.push(chunk);
    return {
      frames: frames.map((f) => ({ cmd: f.command === 0xff ? 0xff : (f.port << 4) | f.command, data: f.data })),
      errors,
    };
  }

  reset(): void { this.kiss.reset(); }
}

// ---------------------------------------------------------------------------------------------
// Command payloads

export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) throw new RangeError(`value must fit 32 bits unsigned, got ${String(n)}`);
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

export function readU32be(d: Uint8Array): number | undefined {
  if (d.length !== 4) return undefined;
  return ((d[0]! << 24) | (d[1]! << 16) | (d[2]! << 8) | d[3]!) >>> 0;
}

export function u16be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`value must fit 16 bits unsigned, got ${String(n)}`);
  return Uint8Array.of(n >>> 8, n & 0xff);
}

export function readU16be(d: Uint8Array, at = 0): number | undefined {
  if (d.length < at + 2) return undefined;
  return (d[at]! << 8) | d[at + 1]!;
}

/** TX power as one int8 byte (see the module comment). */
export function encodeTxPower(dbm: number): Uint8Array {
  if (!Number.isInteger(dbm) || dbm < -128 || dbm > 127) throw new RangeError(`TX power must be an integer dBm fitting int8, got ${String(dbm)}`);
  return Uint8Array.of(dbm & 0xff);
}

export function decodeInt8(b: number): number { return b > 127 ? b - 256 : b; }

/** Airtime lock percent (0.01 % resolution) → the u16 BE the firmware takes [R §2.1]. */
export function encodeAirtimeLock(percent: number): Uint8Array {
  if (!(typeof percent === 'number' && Number.isFinite(percent) && percent >= 0 && percent <= 100)) {
    throw new RangeError(`airtime lock must be a percentage from 0 to 100, got ${String(percent)}`);
  }
  return u16be(Math.round(percent * 100));
}

export function decodeAirtimeLock(d: Uint8Array): number | undefined {
  const v = d.length === 2 ? readU16be(d) : undefined;
  return v === undefined ? undefined : v / 100;
}

export function decodeRssi(b: number): number { return b - RSSI_OFFSET; }
export function encodeRssi(dbm: number): number { return Math.max(0, Math.min(255, Math.round(dbm) + RSSI_OFFSET)); }
export function decodeSnr(b: number): number { return decodeInt8(b) / 4; }
export function encodeSnr(db: number): number { return Math.max(-128, Math.min(127, Math.round(db * 4))) & 0xff; }

/** CMD_STAT_CHTM, percentages and dBm [R §1.4]. */
export interface RNodeChannelStats {
  /** Own transmissions, share of the last 15 s / 1 h, percent. */
  airtimeShortPct: number;
  airtimeLongPct: number;
  /** All activity the radio saw on the channel, short / long term, percent. */
  channelLoadShortPct: number;
  channelLoadLongPct: number;
  /** Newer single-radio firmwares only (11-byte form). */
  currentRssiDbm?: number;
  noiseFloorDbm?: number;
  /** undefined when the firmware reports none (0xFF). */
  interferenceDbm?: number;
}

export function encodeChannelStats(s: RNodeChannelStats): Uint8Array {
  const pct = (p: number): Uint8Array => u16be(Math.max(0, Math.min(0xffff, Math.round(p * 100))));
  const head = [...pct(s.airtimeShortPct), ...pct(s.airtimeLongPct), ...pct(s.channelLoadShortPct), ...pct(s.channelLoadLongPct)];
  if (s.currentRssiDbm === undefined) return Uint8Array.from(head);
  return Uint8Array.from([...head, encodeRssi(s.currentRssiDbm), encodeRssi(s.noiseFloorDbm ?? -157),
    s.interferenceDbm === undefined ? 0xff : encodeRssi(s.interferenceDbm)]);
}

export function decodeChannelStats(d: Uint8Array): RNodeChannelStats | undefined {
  if (d.length !== 8 && d.length !== 11) return undefined;
  const s: RNodeChannelStats = {
    airtimeShortPct: readU16be(d, 0)! / 100,
    airtimeLongPct: readU16be(d, 2)! / 100,
    channelLoadShortPct: readU16be(d, 4)! / 100,
    channelLoadLongPct: readU16be(d, 6)! / 100,
  };
  if (d.length === 11) {
    s.currentRssiDbm = decodeRssi(d[8]!);
    s.noiseFloorDbm = decodeRssi(d[9]!);
    if (d[10] !== 0xff) s.interferenceDbm = decodeRssi(d[10]!);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// On-air split (firmware behaviour, for the emulator and for the overhead figures)

/** On-air bytes the firmware adds to a CMD_DATA packet: one header byte per LoRa packet. */
export function rnodeOnAirOverhead(packetLen: number): number {
  return packetLen > RNODE_SINGLE_PACKET_MAX ? 2 * RNODE_AIR_HEADER_LEN : RNODE_AIR_HEADER_LEN;
}

/** The LoRa packets a CMD_DATA packet becomes on air, with sequence number `seq` (0..15). */
export function rnodeAirPackets(packet: Uint8Array, seq: number): Uint8Array[] {
  if (packet.length === 0 || packet.length > RNODE_HW_MTU) throw new RangeError(`packet must be 1..${RNODE_HW_MTU} bytes, got ${packet.length}`);
  if (!Number.isInteger(seq) || seq < 0 || seq > 15) throw new RangeError(`seq must be 0..15, got ${String(seq)}`);
  const split = packet.length > RNODE_SINGLE_PACKET_MAX;
  const header = ((seq << 4) & NIBBLE_SEQ) | (split ? FLAG_SPLIT : 0);
  const parts = split ? [packet.subarray(0, RNODE_SINGLE_PACKET_MAX), packet.subarray(RNODE_SINGLE_PACKET_MAX)] : [packet];
  return parts.map((p) => { const f = new Uint8Array(p.length + 1); f[0] = header; f.set(p, 1); return f; });
}

/**
 * Receive side of the split [S]: a split packet with no half buffered is buffered; a split
 * packet with the buffered sequence number completes it; a split packet with another
 * sequence number replaces the buffer; an unsplit packet is delivered and discards any
 * buffered half.
 */
export class RNodeAirReassembler {
  private seq: number | undefined;
  private first: Uint8Array | undefined;

  /** Feed one received LoRa packet; returns a whole packet when one is complete. */
  push(air: Uint8Array): Uint8Array | undefined {
    if (air.length < 2) return undefined;
    const header = air[0]!;
    const seq = (header & NIBBLE_SEQ) >> 4;
    const payload = air.slice(1);
    if ((header & FLAG_SPLIT) === 0) {
      this.seq = undefined;
      this.first = undefined;
      return payload;
    }
    if (this.first !== undefined && this.seq === seq) {
      const whole = new Uint8Array(this.first.length + payload.length);
      whole.set(this.first, 0);
      whole.set(payload, this.first.length);
      this.seq = undefined;
      this.first = undefined;
      return whole;
    }
    this.seq = seq;
    this.first = payload;
    return undefined;
  }
}
