/**
 * KISS framing: the host⇄TNC protocol of "The KISS TNC: A simple Host-to-TNC communications
 * protocol", Mike Chepponis K3MC and Phil Karn KA9Q (ARRL 6th Computer Networking
 * Conference, 1987). Pure: bytes in, frames and coded errors out.
 *
 * A KISS frame on the wire (spec §4 "Frame format"):
 *
 *   FEND  type  data…  FEND          data and the type byte escaped as below
 *
 *   FEND  0xC0  frame end (delimiter)
 *   FESC  0xDB  frame escape
 *   TFEND 0xDC  FESC TFEND stands for a data byte 0xC0
 *   TFESC 0xDD  FESC TFESC stands for a data byte 0xDB
 *
 * The type byte (spec §5 "Commands") is port << 4 | command: the high nibble selects the
 * TNC's radio port (0–15; Direwolf maps it to its radio channel), the low nibble is one of
 *
 *   0 data frame    data = one AX.25 frame without flags or FCS (the TNC adds the FCS)
 *   1 TXDELAY       data = 1 byte, transmitter key-up delay in 10 ms units (spec default 50)
 *   2 P             data = 1 byte, CSMA persistence, p = (P + 1) / 256 (spec default 63)
 *   3 SlotTime      data = 1 byte, CSMA slot interval in 10 ms units (spec default 10)
 *   4 TXtail        data = 1 byte, time to hold the transmitter after the frame, 10 ms units
 *   5 FullDuplex    data = 1 byte, 0 = half duplex (CSMA), nonzero = full duplex
 *   6 SetHardware   data = TNC specific
 *
 * and the single byte 0xFF ("Return", type byte alone) takes a TNC out of KISS mode.
 *
 * The spec makes the leading FEND optional; we always send it, so line noise collected by
 * the TNC since the last frame ends up in a separate (rejected) frame, not in ours.
 * Back-to-back FENDs delimit empty frames, which receivers ignore (spec §4).
 * The escape mechanism is SLIP's (RFC 1055) under other names; the type byte is escaped
 * too (port 12, command 0 is 0xC0).
 */
import { WireError } from '../../errors.ts';

export const FEND = 0xc0;
export const FESC = 0xdb;
export const TFEND = 0xdc;
export const TFESC = 0xdd;

/** Low nibble of the type byte (Chepponis & Karn §5). */
export const KissCommand = {
  DataFrame: 0,
  TxDelay: 1,
  Persistence: 2,
  SlotTime: 3,
  TxTail: 4,
  FullDuplex: 5,
  SetHardware: 6,
} as const;
export type KissCommandCode = (typeof KissCommand)[keyof typeof KissCommand];

/** The whole type byte of the "Return" command: leave KISS mode. */
export const KISS_RETURN = 0xff;

/** The highest KISS port number (the high nibble of the type byte). */
export const KISS_MAX_PORT = 15;

export interface KissFrame {
  /** Type byte high nibble, 0–15 (meaningless for Return). */
  port: number;
  /** Type byte low nibble, or KISS_RETURN (0xFF) for the Return command. */
  command: number;
  /** Unescaped bytes after the type byte (an AX.25 frame for DataFrame). */
  data: Uint8Array;
}

/** Bytes `bytes` occupy once escaped. */
export function kissEscapedLength(bytes: Uint8Array): number {
  let n = bytes.length;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === FEND || b === FESC) n++;
  }
  return n;
}

function typeByte(port: number, command: number): number {
  if (command === KISS_RETURN) return KISS_RETURN;
  if (!Number.isInteger(port) || port < 0 || port > KISS_MAX_PORT) {
    throw new RangeError(`KISS port must be an integer from 0 to ${KISS_MAX_PORT}, got ${String(port)}`);
  }
  if (!Number.isInteger(command) || command < 0 || command > 0x0f) {
    throw new RangeError(`KISS command must be 0–15 or 0xFF (Return), got ${String(command)}`);
  }
  return (port << 4) | command;
}

function escapeInto(out: Uint8Array, o: number, b: number): number {
  if (b === FEND) { out[o++] = FESC; out[o++] = TFEND; }
  else if (b === FESC) { out[o++] = FESC; out[o++] = TFESC; }
  else out[o++] = b;
  return o;
}

/** FEND ‖ escape(type ‖ data) ‖ FEND. */
export function encodeKissFrame(frame: KissFrame): Uint8Array {
  const type = typeByte(frame.port, frame.command);
  const typeLen = type === FEND || type === FESC ? 2 : 1;
  const out = new Uint8Array(2 + typeLen + kissEscapedLength(frame.data));
  let o = 0;
  out[o++] = FEND;
  o = escapeInto(out, o, type);
  for (let i = 0; i < frame.data.length; i++) o = escapeInto(out, o, frame.data[i]!);
  out[o] = FEND;
  return out;
}

/** A data frame (command 0) carrying one AX.25 frame on `port`. */
export function encodeKissDataFrame(port: number, ax25Frame: Uint8Array): Uint8Array {
  return encodeKissFrame({ port, command: KissCommand.DataFrame, data: ax25Frame });
}

/** A one-byte parameter command (TXDELAY, P, SlotTime, TXtail, FullDuplex) on `port`. */
export function encodeKissParameter(port: number, command: KissCommandCode, value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new RangeError(`KISS parameter value must be an integer from 0 to 255, got ${String(value)}`);
  }
  return encodeKissFrame({ port, command, data: Uint8Array.of(value) });
}

export interface KissDecoderOptions {
  /** Largest unescaped data (after the type byte) accepted, in bytes. */
  maxFrameLen: number;
}

export interface KissDecodeResult {
  /** Complete frames in wire order. `data` is a fresh array. */
  frames: KissFrame[];
  /**
   * Dropped input, in wire order: ERR_FRAME_NOISE (bytes before the first FEND ever seen;
   * detail.bytes), ERR_FRAME_TOO_LONG (detail.maxFrameLen), ERR_FRAME_BAD_ESCAPE
   * (detail.byte: what followed FESC).
   */
  errors: WireError[];
}

/**
 * 'noise': no FEND seen yet; 'type': after a FEND, waiting for the type byte;
 * 'frame' / 'escape': collecting data (after FESC); 'discard': frame rejected, skip to FEND.
 */
type State = 'noise' | 'type' | 'typeEscape' | 'frame' | 'escape' | 'discard';

/**
 * Incremental KISS decoder. Feed chunks split anywhere; frames come out as their closing
 * FEND arrives. Memory is bounded by `maxFrameLen`. Every FEND starts a fresh frame
 * whatever state the decoder was in, so damage never spreads past the next FEND.
 */
export class KissDecoder {
  readonly maxFrameLen: number;
  private readonly buf: Uint8Array;
  private len = 0;
  private type = 0;
  private state: State = 'noise';
  private noiseBytes = 0;

  constructor(options: KissDecoderOptions) {
    if (!Number.isInteger(options.maxFrameLen) || options.maxFrameLen < 1) {
      throw new RangeError(`KissDecoder maxFrameLen must be a positive integer, got ${String(options.maxFrameLen)}`);
    }
    this.maxFrameLen = options.maxFrameLen;
    this.buf = new Uint8Array(options.maxFrameLen);
  }

  push(chunk: Uint8Array): KissDecodeResult {
    const frames: KissFrame[] = [];
    const errors: WireError[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === FEND) {
        switch (this.state) {
          case 'noise':
            if (this.noiseBytes > 0) {
              errors.push(new WireError('ERR_FRAME_NOISE', 'modem',
                `dropped ${this.noiseBytes} bytes of noise before the first KISS FEND`, { bytes: this.noiseBytes }));
            }
            this.noiseBytes = 0;
            break;
          case 'frame':
            frames.push(this.frame());
            break;
          case 'escape':
          case 'typeEscape':
            errors.push(badEscape(FEND));
            break;
          case 'type': // FEND FEND: an empty frame, ignored (spec §4)
          case 'discard':
            break;
        }
        this.state = 'type';
        this.len = 0;
        continue;
      }
      switch (this.state) {
        case 'noise':
          this.noiseBytes++;
          break;
        case 'discard':
          break;
        case 'type':
          if (b === FESC) this.state = 'typeEscape';
          else { this.type = b; this.state = 'frame'; }
          break;
        case 'typeEscape':
          if (b === TFEND) { this.type = FEND; this.state = 'frame'; }
          else if (b === TFESC) { this.type = FESC; this.state = 'frame'; }
          else { errors.push(badEscape(b)); this.state = 'discard'; }
          break;
        case 'frame':
          if (b === FESC) this.state = 'escape';
          else this.append(b, errors);
          break;
        case 'escape':
          if (b === TFEND) { this.state = 'frame'; this.append(FEND, errors); }
          else if (b === TFESC) { this.state = 'frame'; this.append(FESC, errors); }
          else { errors.push(badEscape(b)); this.state = 'discard'; }
          break;
      }
    }
    return { frames, errors };
  }

  /** Forget any partial frame; the next frame starts after the next FEND. */
  reset(): void {
    this.state = 'noise';
    this.len = 0;
    this.noiseBytes = 0;
  }

  private frame(): KissFrame {
    const data = this.buf.slice(0, this.len);
    if (this.type === KISS_RETURN) return { port: 0, command: KISS_RETURN, data };
    return { port: this.type >> 4, command: this.type & 0x0f, data };
  }

  private append(b: number, errors: WireError[]): void {
    if (this.len >= this.maxFrameLen) {
      errors.push(new WireError('ERR_FRAME_TOO_LONG', 'modem',
        `KISS frame longer than maxFrameLen ${this.maxFrameLen} bytes; dropped up to the next FEND`,
        { maxFrameLen: this.maxFrameLen }));
      this.state = 'discard';
      return;
    }
    this.buf[this.len++] = b;
  }
}

function badEscape(byte: number): WireError {
  return new WireError('ERR_FRAME_BAD_ESCAPE', 'modem',
    `KISS FESC followed by 0x${byte.toString(16).padStart(2, '0')} (only TFEND 0xdc or TFESC 0xdd are valid); frame dropped`,
    { byte });
}
