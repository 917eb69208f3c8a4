/**
 * RFC 7959 block-wise transfer: Block1/Block2 option values, Size1/Size2, and the
 * block size that fits a radio frame. Pure.
 *
 * Block option value (§2.2), a uint of 0–3 bytes:
 *
 *     NUM (4, 12 or 20 bits) | M (1 bit) | SZX (3 bits)
 *
 * block size = 2^(SZX + 4), 16…1024 bytes; SZX 7 is reserved (MUST NOT be sent,
 * and is a 4.00 on reception, §2.2). The block's byte offset is NUM × size.
 */
import { TrickleError, WireError } from '../errors.ts';
import { decodeUint, encodeUint, type CoapOption } from './message.ts';

export interface BlockValue {
  /** Block number, 0 ≤ num < 2^20. */
  readonly num: number;
  /** M: more blocks follow (Block2 / Block1 in a request), or "not final" (Block1 echo). */
  readonly more: boolean;
  /** Size exponent, 0–6. */
  readonly szx: number;
}

export const BLOCK_SZX_MIN = 0;
export const BLOCK_SZX_MAX = 6;
export const BLOCK_NUM_MAX = (1 << 20) - 1;

/** 2^(szx + 4). */
export function blockSize(szx: number): number {
  return 1 << (szx + 4);
}

/** The SZX for a block size of 16, 32, …, 1024; undefined otherwise. */
export function sizeToSzx(size: number): number | undefined {
  for (let szx = BLOCK_SZX_MIN; szx <= BLOCK_SZX_MAX; szx++) if (blockSize(szx) === size) return szx;
  return undefined;
}

/** Byte offset of the block. */
export function blockOffset(b: BlockValue): number {
  return b.num * blockSize(b.szx);
}

export function encodeBlock(b: BlockValue): Uint8Array {
  if (!Number.isInteger(b.num) || b.num < 0 || b.num > BLOCK_NUM_MAX) {
    throw new TrickleError('ERR_COAP_BLOCK', 'coap', `block number ${b.num} is outside 0..2^20-1`);
  }
  if (!Number.isInteger(b.szx) || b.szx < BLOCK_SZX_MIN || b.szx > BLOCK_SZX_MAX) {
    throw new TrickleError('ERR_COAP_BLOCK', 'coap', `SZX ${b.szx} is outside 0..6`);
  }
  return encodeUint(b.num * 16 + (b.more ? 8 : 0) + b.szx);
}

/** Decode a Block1/Block2 value; more than 3 bytes or SZX 7 is ERR_COAP_OPTION. */
export function decodeBlock(value: Uint8Array): BlockValue {
  const v = decodeUint(value, 3);
  const szx = v & 0x07;
  if (szx === 7) throw new WireError('ERR_COAP_OPTION', 'coap', 'block SZX 7 is reserved', { value: v });
  return { num: Math.floor(v / 16), more: (v & 0x08) !== 0, szx };
}

export function blockOption(number: number, b: BlockValue): CoapOption {
  return { number, value: encodeBlock(b) };
}

/** Size1 / Size2 (§4): a uint of 0–4 bytes, the total body size in bytes. */
export function encodeSize(totalBytes: number): Uint8Array {
  return encodeUint(totalBytes);
}
export function decodeSize(value: Uint8Array): number {
  return decodeUint(value, 4);
}

/**
 * The largest SZX whose block fits one frame: `overheadBytes` is everything in the
 * message except the payload itself (header, token, all options including the Block
 * option at its largest value, and the 1-byte payload marker). Undefined when not
 * even a 16-byte block fits.
 */
export function chooseBlockSzx(overheadBytes: number, maxFrameLen: number): number | undefined {
  for (let szx = BLOCK_SZX_MAX; szx >= BLOCK_SZX_MIN; szx--) {
    if (overheadBytes + blockSize(szx) <= maxFrameLen) return szx;
  }
  return undefined;
}
