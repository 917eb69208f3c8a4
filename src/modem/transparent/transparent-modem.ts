/**
 * The "transparent" dialect: radios that move a byte stream and add no framing or
 * integrity check we can rely on (EBYTE E22/E32 UART LoRa modules in transparent mode,
 * SiK telemetry radios, HC-12, or a plain null-modem cable).
 *
 * Wire format of one frame:
 *
 *   SLIP( payload ‖ FCS )          SLIP: RFC 1055, see slip.ts (leading and trailing END)
 *   FCS = CRC-16/X-25(payload)     RFC 1662 appendix C; sent least significant octet
 *                                  first, as HDLC/PPP send their FCS (RFC 1662 §C.2)
 *
 * The radio may cut the stream into packets anywhere (an E22 sends a sub-packet every
 * 240 bytes or after a 3-byte idle gap), so frames are recovered purely from the SLIP
 * delimiters; a lost radio packet shows up as a frame with a bad FCS.
 */
import { ConfigError, TrickleError, WireError, type ErrorCode } from '../../errors.ts';
import type { Link } from '../../link/link.ts';
import { crc16 } from '../../util/crc.ts';
import type { Modem, ModemCapabilities, ModemStats, ReceivedFrameMeta, SendReport } from '../modem.ts';
import { SlipDecoder, encodeSlipFrame, slipEscapedLength, END, ESC } from './slip.ts';

/** Length of the FCS appended to each payload. */
export const FCS_LEN = 2;
/** Default largest payload (bytes before FCS and SLIP). */
export const DEFAULT_TRANSPARENT_MAX_FRAME_LEN = 255;

function withFcs(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length + FCS_LEN);
  out.set(payload, 0);
  const fcs = crc16(payload);
  out[payload.length] = fcs & 0xff;
  out[payload.length + 1] = fcs >>> 8;
  return out;
}

/** The bytes written to the wire for `payload`: SLIP(payload ‖ CRC-16/X-25 LE). */
export function encodeTransparentFrame(payload: Uint8Array): Uint8Array {
  return encodeSlipFrame(withFcs(payload));
}

/**
 * Bytes the framing adds to `payload` on the wire: 2 ENDs, 2 FCS bytes, and one extra byte
 * for every END or ESC in payload ‖ FCS that SLIP escapes.
 * `encodeTransparentFrame(p).length === p.length + transparentFramingOverhead(p)`.
 */
export function transparentFramingOverhead(payload: Uint8Array): number {
  const fcs = crc16(payload);
  let fcsEscapes = 0;
  for (const b of [fcs & 0xff, fcs >>> 8]) if (b === END || b === ESC) fcsEscapes++;
  return 2 + FCS_LEN + (slipEscapedLength(payload) - payload.length) + fcsEscapes;
}

export interface TransparentDecodeResult {
  /** Payloads whose FCS checked out, FCS removed. */
  frames: Uint8Array[];
  /**
   * Dropped input: the SLIP errors of this chunk (in wire order), then ERR_FRAME_TOO_SHORT
   * and ERR_FRAME_BAD_FCS for the SLIP frames that failed the length or FCS check.
   */
  errors: WireError[];
}

/**
 * Pure, incremental receive side of the dialect: SLIP decoding plus the FCS check.
 * `maxFrameLen` bounds the payload (the SLIP decoder is bounded at maxFrameLen + 2).
 */
export class TransparentDeframer {
  private readonly slip: SlipDecoder;

  constructor(options: { maxFrameLen: number }) {
    this.slip = new SlipDecoder({ maxFrameLen: options.maxFrameLen + FCS_LEN });
  }

  push(chunk: Uint8Array): TransparentDecodeResult {
    const { frames: raw, errors } = this.slip.push(chunk);
    const frames: Uint8Array[] = [];
    for (const f of raw) {
      // One FCS plus at least one payload byte: a 2-byte frame could only be an empty payload.
      if (f.length < FCS_LEN + 1) {
        errors.push(new WireError('ERR_FRAME_TOO_SHORT', 'modem',
          `frame of ${f.length} bytes is shorter than the minimum of ${FCS_LEN + 1} (payload ‖ 2-byte FCS)`,
          { len: f.length }));
        continue;
      }
      const payload = f.subarray(0, f.length - FCS_LEN);
      const got = f[f.length - 2]! | (f[f.length - 1]! << 8);
      const want = crc16(payload);
      if (got !== want) {
        errors.push(new WireError('ERR_FRAME_BAD_FCS', 'modem',
          `frame of ${f.length} bytes has FCS 0x${hex16(got)}, expected 0x${hex16(want)}; dropped`,
          { len: f.length, fcs: got, expected: want }));
        continue;
      }
      frames.push(payload);
    }
    return { frames, errors };
  }
}

function hex16(n: number): string { return n.toString(16).padStart(4, '0'); }

export interface TransparentModemOptions {
  /**
   * Largest payload `send` accepts and the receiver keeps, in bytes before FCS and SLIP
   * (default 255). Both ends must agree. For radios that packetise the stream (E22
   * sub-packet size, SiK frame size) a frame that fits one radio packet survives best.
   */
  maxFrameLen?: number;
}

export class TransparentModem implements Modem {
  readonly dialect = 'transparent';
  readonly capabilities: ModemCapabilities;
  private readonly deframer: TransparentDeframer;
  private readonly frameListeners: ((frame: Uint8Array, meta: ReceivedFrameMeta) => void)[] = [];
  private readonly dropListeners: ((code: ErrorCode, detail: Record<string, unknown>) => void)[] = [];
  private readonly counters: ModemStats = {
    framesSent: 0, framesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0, dropped: {},
  };

  constructor(private readonly link: Link, options: TransparentModemOptions = {}) {
    const maxFrameLen = options.maxFrameLen ?? DEFAULT_TRANSPARENT_MAX_FRAME_LEN;
    if (!Number.isInteger(maxFrameLen) || maxFrameLen < 1 || maxFrameLen > 65_535) {
      throw new ConfigError(`transparent modem maxFrameLen must be an integer from 1 to 65535, got ${String(maxFrameLen)}`,
        { key: 'maxFrameLen', value: maxFrameLen });
    }
    this.capabilities = { maxFrameLen, enforcesDutyCycle: false, reportsAirtime: false, channelSense: 'none' };
    this.deframer = new TransparentDeframer({ maxFrameLen });
    link.onData((chunk) => this.receive(chunk));
  }

  async send(frame: Uint8Array): Promise<SendReport> {
    const { maxFrameLen } = this.capabilities;
    if (frame.length === 0 || frame.length > maxFrameLen) {
      throw new TrickleError('ERR_MODEM_MTU', 'modem',
        `frame of ${frame.length} bytes cannot be sent: the transparent modem carries 1 to ${maxFrameLen} bytes`,
        { len: frame.length, maxFrameLen });
    }
    const wire = encodeTransparentFrame(frame);
    await this.link.write(wire);
    this.counters.framesSent++;
    this.counters.wireBytesSent += wire.length;
    return { wireBytes: wire.length };
  }

  /** A transparent radio transmits every byte it is given: the SLIP and CRC bytes go on air. */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number } {
    return { onAir: transparentFramingOverhead(payload), serial: 0 };
  }

  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void { this.frameListeners.push(listener); }

  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.dropListeners.push(listener); }

  onClose(listener: (err?: Error) => void): void { this.link.onClose(listener); }

  stats(): ModemStats {
    return { ...this.counters, dropped: { ...this.counters.dropped } };
  }

  close(): Promise<void> { return this.link.close(); }

  private receive(chunk: Uint8Array): void {
    this.counters.wireBytesReceived += chunk.length;
    const { frames, errors } = this.deframer.push(chunk);
    for (const err of errors) {
      // One count per dropped frame (or per run of noise; its length is in detail.bytes).
      this.counters.dropped[err.code] = (this.counters.dropped[err.code] ?? 0) + 1;
      const detail = { ...err.detail, message: err.message };
      for (const l of this.dropListeners) l(err.code, detail);
    }
    for (const f of frames) {
      this.counters.framesReceived++;
      for (const l of this.frameListeners) l(f, {});
    }
  }
}
