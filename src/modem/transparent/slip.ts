/**
 * SLIP framing, RFC 1055 ("A Nonstandard for Transmission of IP Datagrams over Serial
 * Lines: SLIP"). Pure: bytes in, frames and coded errors out.
 *
 * A frame on the wire is END, the payload with END and ESC escaped, END:
 *
 *   END     0xC0  frame delimiter
 *   ESC     0xDB  escape
 *   ESC_END 0xDC  ESC ESC_END stands for a data byte 0xC0
 *   ESC_ESC 0xDD  ESC ESC_ESC stands for a data byte 0xDB
 *
 * The leading END is optional in RFC 1055 but we always send it: it flushes any line
 * noise the receiver accumulated since the last frame into a separate (rejected) frame
 * instead of the start of ours, and Direwolf's and RNode's parsers drop frames without it.
 * Two ENDs in a row delimit an empty frame; receivers ignore those.
 */
import { WireError } from '../../errors.ts';

export const END = 0xc0;
export const ESC = 0xdb;
export const ESC_END = 0xdc;
export const ESC_ESC = 0xdd;

/** Bytes `payload` occupies on the wire once escaped (without the two ENDs). */
export function slipEscapedLength(payload: Uint8Array): number {
  let n = payload.length;
  for (let i = 0; i < payload.length; i++) {
    const b = payload[i]!;
    if (b === END || b === ESC) n++;
  }
  return n;
}

/** END ‖ escape(payload) ‖ END. */
export function encodeSlipFrame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(slipEscapedLength(payload) + 2);
  let o = 0;
  out[o++] = END;
  for (let i = 0; i < payload.length; i++) {
    const b = payload[i]!;
    if (b === END) { out[o++] = ESC; out[o++] = ESC_END; }
    else if (b === ESC) { out[o++] = ESC; out[o++] = ESC_ESC; }
    else out[o++] = b;
  }
  out[o] = END;
  return out;
}

export interface SlipDecoderOptions {
  /** Largest decoded (unescaped) frame accepted, in bytes. */
  maxFrameLen: number;
}

export interface SlipDecodeResult {
  /** Complete, unescaped, non-empty frames, in wire order. Each is a fresh array. */
  frames: Uint8Array[];
  /**
   * Input that was dropped, in wire order: ERR_FRAME_NOISE (bytes before the first END
   * ever seen; detail.bytes), ERR_FRAME_TOO_LONG (detail.maxFrameLen), ERR_FRAME_BAD_ESCAPE
   * (detail.byte: what followed ESC).
   */
  errors: WireError[];
}

/**
 * Decoder states: 'noise' = no END seen yet, so we do not know where a frame starts;
 * 'frame' = inside a frame (possibly empty so far); 'escape' = inside a frame, the previous
 * byte was ESC; 'discard' = the current frame was rejected, skip to the next END.
 */
type State = 'noise' | 'frame' | 'escape' | 'discard';

/**
 * Incremental SLIP decoder. Feed it chunks split at arbitrary boundaries; it returns
 * whole frames as their closing END arrives. Memory is bounded by `maxFrameLen`.
 *
 * Resynchronisation: every END starts a fresh frame, whatever state the decoder was in,
 * so damage never spreads past the next END. An END right after ESC aborts the current
 * frame (ERR_FRAME_BAD_ESCAPE) and still counts as a delimiter.
 */
export class SlipDecoder {
  readonly maxFrameLen: number;
  private readonly buf: Uint8Array;
  private len = 0;
  private state: State = 'noise';
  private noiseBytes = 0;

  constructor(options: SlipDecoderOptions) {
    if (!Number.isInteger(options.maxFrameLen) || options.maxFrameLen < 1) {
      throw new RangeError(`SlipDecoder maxFrameLen must be a positive integer, got ${String(options.maxFrameLen)}`);
    }
    this.maxFrameLen = options.maxFrameLen;
    this.buf = new Uint8Array(options.maxFrameLen);
  }

  /** Bytes of an unfinished frame held between calls (for diagnostics). */
  get pendingBytes(): number { return this.state === 'noise' ? this.noiseBytes : this.len; }

  push(chunk: Uint8Array): SlipDecodeResult {
    const frames: Uint8Array[] = [];
    const errors: WireError[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === END) {
        switch (this.state) {
          case 'noise':
            if (this.noiseBytes > 0) {
              errors.push(new WireError('ERR_FRAME_NOISE', 'modem',
                `dropped ${this.noiseBytes} bytes of noise before the first SLIP END`, { bytes: this.noiseBytes }));
            }
            this.noiseBytes = 0;
            break;
          case 'frame':
            if (this.len > 0) frames.push(this.buf.slice(0, this.len));
            break;
          case 'escape':
            errors.push(badEscape(END));
            break;
          case 'discard':
            break;
        }
        this.state = 'frame';
        this.len = 0;
        continue;
      }
      switch (this.state) {
        case 'noise':
          this.noiseBytes++;
          break;
        case 'discard':
          break;
        case 'frame':
          if (b === ESC) this.state = 'escape';
          else this.append(b, errors);
          break;
        case 'escape':
          if (b === ESC_END) { this.state = 'frame'; this.append(END, errors); }
          else if (b === ESC_ESC) { this.state = 'frame'; this.append(ESC, errors); }
          else { errors.push(badEscape(b)); this.state = 'discard'; }
          break;
      }
    }
    return { frames, errors };
  }

  /** Forget any partial frame; the next frame starts after the next END. */
  reset(): void {
    this.state = 'noise';
    this.len = 0;
    this.noiseBytes = 0;
  }

  private append(b: number, errors: WireError[]): void {
    if (this.len >= this.maxFrameLen) {
      errors.push(new WireError('ERR_FRAME_TOO_LONG', 'modem',
        `SLIP frame longer than maxFrameLen ${this.maxFrameLen} bytes; dropped up to the next END`,
        { maxFrameLen: this.maxFrameLen }));
      this.state = 'discard';
      return;
    }
    this.buf[this.len++] = b;
  }
}

function badEscape(byte: number): WireError {
  return new WireError('ERR_FRAME_BAD_ESCAPE', 'modem',
    `SLIP ESC followed by 0x${byte.toString(16).padStart(2, '0')} (only ESC_END 0xdc or ESC_ESC 0xdd are valid); frame dropped`,
    { byte });
}
