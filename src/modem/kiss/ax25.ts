/**
 * AX.25 v2.2 UI frames ("AX.25 Link Access Protocol for Amateur Packet Radio", version 2.2,
 * TAPR, revised 2017), as carried inside KISS data frames. Pure.
 *
 * Frame layout without the HDLC flags and FCS, which the TNC adds and checks on air (§3):
 *
 *   destination address   7 bytes   §3.12
 *   source address        7 bytes   §3.12
 *   digipeater addresses  0–8 × 7   §3.12.3 (we never send any; we accept up to 8)
 *   control               1 byte    0x03 = UI, P/F bit (0x10) clear (§4.3.3.6, figure 4.4)
 *   PID                   1 byte    0xF0 = "no layer 3 protocol implemented" (§3.4, figure 3.2)
 *   information           N bytes   our payload (the CoAP message)
 *
 * One address (§3.12.2, figure 3.5): six bytes of callsign, ASCII upper-case letters and
 * digits, padded with spaces, each shifted left one bit (bit 0 is the HDLC address
 * extension bit, 0 here); then the SSID byte
 *
 *   bit 7     C (command/response, §6.1.2) for destination/source; H ("has been repeated")
 *             for a digipeater
 *   bits 6–5  reserved, sent as 1 1
 *   bits 4–1  SSID 0–15
 *   bit 0     extension bit: 1 on the last address of the field, 0 before it
 *
 * A UI frame is a command: destination C = 1, source C = 0 (§6.1.2, table 6.1), so we send
 * destination SSID byte 0xE0 | ssid << 1 and source SSID byte 0x61 | ssid << 1.
 */
import { ConfigError, WireError } from '../../errors.ts';
import { crc16 } from '../../util/crc.ts';

/** Control field of a UI frame, P/F bit clear (§4.3.3.6). */
export const AX25_CONTROL_UI = 0x03;
/** The P/F bit of the control field (§4.2.1.4); a UI command may carry it. */
export const AX25_CONTROL_PF = 0x10;
/** PID "no layer 3 protocol implemented" (§3.4, figure 3.2). */
export const AX25_PID_NO_LAYER3 = 0xf0;
/** Bytes per address (§3.12). */
export const AX25_ADDRESS_LEN = 7;
/** Destination + source + control + PID: the header of every frame we send. */
export const AX25_UI_HEADER_LEN = 2 * AX25_ADDRESS_LEN + 2;
/** Frame check sequence appended by the TNC on air (§3.8): CRC-16/X-25. */
export const AX25_FCS_LEN = 2;
/** Most digipeater addresses an AX.25 frame can carry (v2.0 §2.2.13: 8; v2.2 sends at most 2). */
export const AX25_MAX_DIGIPEATERS = 8;
/** N1 default (§6.7.2.4 "Maximum Number of Octets in an I Field"): 256 octets. */
export const AX25_DEFAULT_N1 = 256;

export interface Ax25Address {
  /** 1–6 upper-case letters and digits. */
  callsign: string;
  /** 0–15. */
  ssid: number;
}

export interface Ax25Digipeater extends Ax25Address {
  /** H bit: this digipeater has already repeated the frame. */
  repeated: boolean;
}

export interface Ax25UiFrame {
  destination: Ax25Address;
  source: Ax25Address;
  digipeaters: Ax25Digipeater[];
  /** True when the frame is a command (destination C = 1, source C = 0). */
  command: boolean;
  pollFinal: boolean;
  pid: number;
  info: Uint8Array;
}

/** "N0CALL-1", or "N0CALL" for SSID 0 (the usual TNC notation). */
export function formatAx25Address(a: Ax25Address): string {
  return a.ssid === 0 ? a.callsign : `${a.callsign}-${a.ssid}`;
}

const ADDRESS_TEXT = /^([A-Z0-9]{1,6})(?:-(\d{1,2}))?$/;
/**
 * An amateur radio callsign as ITU assigns them (Radio Regulations art. 19): a prefix of
 * letters and digits, one digit, a suffix ending in a letter. Checked loosely, within the
 * 6 characters AX.25 can carry: letters and digits only, at least one digit, ending in a
 * letter (N0CALL, W1AW, 2E0ITB, VK2ABC, 3DA0RS).
 */
const AMATEUR_CALLSIGN = /^(?=.*[0-9])[A-Z0-9]{2,5}[A-Z]$/;

function parseAddressText(text: string, key: string, kind: string): Ax25Address {
  const upper = typeof text === 'string' ? text.trim().toUpperCase() : '';
  const m = ADDRESS_TEXT.exec(upper);
  const ssid = m?.[2] === undefined ? 0 : Number(m[2]);
  if (!m || ssid > 15) {
    throw new ConfigError(
      `${key} must be ${kind} of 1 to 6 letters and digits with an optional SSID from 0 to 15 ` +
      `(e.g. N0CALL or N0CALL-1), got ${JSON.stringify(text)}`, { key, value: text });
  }
  return { callsign: m[1]!, ssid };
}

/**
 * Parse and check the station's own callsign (the AX.25 source address). Amateur rules
 * require every transmission to identify the station by its licensed callsign, so a
 * tactical name ("BASECAMP") is refused here. Lower case is accepted and upper-cased.
 * Throws ConfigError naming `key` and the bad value.
 */
export function parseCallsign(text: string, key = 'callsign'): Ax25Address {
  const a = parseAddressText(text, key, 'your amateur radio callsign');
  if (!AMATEUR_CALLSIGN.test(a.callsign)) {
    throw new ConfigError(
      `${key} ${JSON.stringify(text)} is not an amateur radio callsign: amateur rules require each transmission ` +
      'to carry your licensed callsign (3 to 6 letters and digits with at least one digit, ending in a letter, ' +
      'e.g. N0CALL or N0CALL-1 with an SSID from 0 to 15)', { key, value: text });
  }
  return a;
}

/**
 * Parse an AX.25 destination address ("TRICKL", "APRS", "N0CALL-2"): any 1–6 letters and
 * digits with an SSID 0–15, since a destination names a service or group as often as a
 * station. Throws ConfigError naming `key` and the bad value.
 */
export function parseAx25Address(text: string, key = 'destination'): Ax25Address {
  return parseAddressText(text, key, 'an AX.25 address');
}

function checkAddress(a: Ax25Address, what: string): void {
  if (!/^[A-Z0-9]{1,6}$/.test(a.callsign) || !Number.isInteger(a.ssid) || a.ssid < 0 || a.ssid > 15) {
    throw new RangeError(`AX.25 ${what} address must be 1–6 of A–Z 0–9 with SSID 0–15, got ${JSON.stringify(a)}`);
  }
}

function writeAddress(out: Uint8Array, o: number, a: Ax25Address, bit7: boolean, last: boolean): void {
  for (let i = 0; i < 6; i++) {
    const c = i < a.callsign.length ? a.callsign.charCodeAt(i) : 0x20; // pad with spaces
    out[o + i] = c << 1;
  }
  out[o + 6] = (bit7 ? 0x80 : 0) | 0x60 | (a.ssid << 1) | (last ? 1 : 0);
}

export interface Ax25UiFrameInput {
  destination: Ax25Address;
  source: Ax25Address;
  info: Uint8Array;
  /** Default AX25_PID_NO_LAYER3 (0xF0). */
  pid?: number;
}

/** destination ‖ source ‖ 0x03 ‖ PID ‖ info, as a command without digipeaters. */
export function encodeAx25UiFrame(f: Ax25UiFrameInput): Uint8Array {
  checkAddress(f.destination, 'destination');
  checkAddress(f.source, 'source');
  const out = new Uint8Array(AX25_UI_HEADER_LEN + f.info.length);
  writeAddress(out, 0, f.destination, true, false);
  writeAddress(out, AX25_ADDRESS_LEN, f.source, false, true);
  out[14] = AX25_CONTROL_UI;
  out[15] = f.pid ?? AX25_PID_NO_LAYER3;
  out.set(f.info, AX25_UI_HEADER_LEN);
  return out;
}

export interface Ax25DecodeOptions {
  /** Largest information field accepted, in bytes. */
  maxInfoLen: number;
}

export type Ax25DecodeResult = { ok: true; frame: Ax25UiFrame } | { ok: false; error: WireError };

function fail(code: 'ERR_AX25_ADDRESS' | 'ERR_AX25_NOT_UI' | 'ERR_FRAME_TOO_SHORT' | 'ERR_FRAME_TOO_LONG' | 'ERR_FRAME_EMPTY',
  message: string, detail: Record<string, unknown>): Ax25DecodeResult {
  return { ok: false, error: new WireError(code, 'modem', message, detail) };
}

/** Decode one address at `o`; null when malformed. */
function readAddress(b: Uint8Array, o: number): { address: Ax25Address; bit7: boolean; last: boolean } | null {
  let callsign = '';
  let padded = false;
  for (let i = 0; i < 6; i++) {
    const v = b[o + i]!;
    if ((v & 1) !== 0) return null; // extension bit set inside the callsign: address field ends early
    const c = v >> 1;
    if (c === 0x20) { padded = true; continue; }
    if (padded) return null; // a character after padding
    const ok = (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39);
    if (!ok) return null;
    callsign += String.fromCharCode(c);
  }
  if (callsign.length === 0) return null;
  const s = b[o + 6]!;
  return { address: { callsign, ssid: (s >> 1) & 0x0f }, bit7: (s & 0x80) !== 0, last: (s & 1) !== 0 };
}

/**
 * Decode one AX.25 frame (as a KISS data frame carries it: no flags, no FCS). Accepts UI
 * frames only; everything else is an error for the caller to count and drop:
 * ERR_FRAME_TOO_SHORT (shorter than two addresses and a control byte, or a UI frame without
 * PID), ERR_AX25_ADDRESS (bad characters, padding, no end of the address field within
 * 2 + 8 addresses), ERR_AX25_NOT_UI (I, S or other U frames), ERR_FRAME_EMPTY (UI frame
 * with an empty information field), ERR_FRAME_TOO_LONG (information field over maxInfoLen).
 * The PID is returned, not judged: that is addressing policy (kiss-modem.ts).
 */
export function decodeAx25Frame(b: Uint8Array, options: Ax25DecodeOptions): Ax25DecodeResult {
  const minLen = 2 * AX25_ADDRESS_LEN + 1;
  if (b.length < minLen) {
    return fail('ERR_FRAME_TOO_SHORT', `AX.25 frame of ${b.length} bytes is shorter than two addresses and a control byte (${minLen})`,
      { len: b.length });
  }
  const addresses: { address: Ax25Address; bit7: boolean }[] = [];
  let o = 0;
  for (;;) {
    if (addresses.length === 2 + AX25_MAX_DIGIPEATERS) {
      return fail('ERR_AX25_ADDRESS', `AX.25 address field does not end within ${2 + AX25_MAX_DIGIPEATERS} addresses`, { len: b.length });
    }
    if (o + AX25_ADDRESS_LEN > b.length) {
      return fail('ERR_AX25_ADDRESS', `AX.25 address field runs past the end of the ${b.length}-byte frame`, { len: b.length });
    }
    const a = readAddress(b, o);
    if (!a) {
      return fail('ERR_AX25_ADDRESS', `malformed AX.25 address ${addresses.length + 1} at byte ${o} (callsign must be A–Z 0–9 padded with spaces)`,
        { offset: o });
    }
    addresses.push(a);
    o += AX25_ADDRESS_LEN;
    if (a.last) break;
  }
  if (addresses.length < 2) {
    return fail('ERR_AX25_ADDRESS', 'AX.25 address field ends after the destination: no source address', { len: b.length });
  }
  if (o >= b.length) {
    return fail('ERR_FRAME_TOO_SHORT', `AX.25 frame of ${b.length} bytes ends before its control field`, { len: b.length });
  }
  const control = b[o]!;
  if ((control & ~AX25_CONTROL_PF) !== AX25_CONTROL_UI) {
    return fail('ERR_AX25_NOT_UI', `AX.25 frame with control 0x${control.toString(16).padStart(2, '0')} is not a UI frame (0x03)`,
      { control });
  }
  if (o + 1 >= b.length) {
    return fail('ERR_FRAME_TOO_SHORT', `AX.25 UI frame of ${b.length} bytes has no PID`, { len: b.length });
  }
  const pid = b[o + 1]!;
  const info = b.slice(o + 2);
  if (info.length === 0) return fail('ERR_FRAME_EMPTY', 'AX.25 UI frame with an empty information field', { len: b.length });
  if (info.length > options.maxInfoLen) {
    return fail('ERR_FRAME_TOO_LONG', `AX.25 information field of ${info.length} bytes exceeds maxFrameLen ${options.maxInfoLen}`,
      { len: info.length, maxFrameLen: options.maxInfoLen });
  }
  const [dst, src, ...digis] = addresses as [typeof addresses[0], typeof addresses[0], ...typeof addresses];
  return {
    ok: true,
    frame: {
      destination: dst.address,
      source: src.address,
      digipeaters: digis.map((d) => ({ ...d.address, repeated: d.bit7 })),
      command: dst.bit7 && !src.bit7,
      pollFinal: (control & AX25_CONTROL_PF) !== 0,
      pid,
      info,
    },
  };
}

export function sameAddress(x: Ax25Address, y: Ax25Address): boolean {
  return x.callsign === y.callsign && x.ssid === y.ssid;
}

/** HDLC flag 0x7E (§3.1). */
const FLAG_BITS = 8;

/**
 * Bits one frame occupies on air between the opening and closing flag inclusive: the frame,
 * its FCS (CRC-16/X-25, sent least significant octet first, §3.8), each octet least
 * significant bit first, with a 0 stuffed after every five consecutive 1s (§3.6), plus one
 * opening and one closing flag. NRZI (§3.7) changes no bit count.
 */
export function ax25OnAirBits(frame: Uint8Array): number {
  const fcs = crc16(frame);
  let ones = 0;
  let bits = 0;
  const feed = (byte: number): void => {
    for (let i = 0; i < 8; i++) {
      bits++;
      if ((byte >> i) & 1) {
        if (++ones === 5) { bits++; ones = 0; }
      } else ones = 0;
    }
  };
  for (let i = 0; i < frame.length; i++) feed(frame[i]!);
  feed(fcs & 0xff);
  feed(fcs >>> 8);
  return bits + 2 * FLAG_BITS;
}

export interface Ax25AirtimeOptions {
  /** Bit rate on air (1200 for Bell 202 AFSK). */
  baud: number;
  /** Flags sent before the frame while the transmitter keys up (KISS TXDELAY). */
  txDelayMs?: number;
  /** Flags sent after it (KISS TXtail). */
  txTailMs?: number;
}

/** Airtime of one transmission of `frame`: key-up delay, the stuffed frame, the tail. */
export function ax25AirtimeMs(frame: Uint8Array, o: Ax25AirtimeOptions): number {
  return (o.txDelayMs ?? 0) + (ax25OnAirBits(frame) * 1000) / o.baud + (o.txTailMs ?? 0);
}
