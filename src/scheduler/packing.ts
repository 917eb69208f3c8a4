/**
 * Packing container v1: several small messages to the same peer in one radio frame.
 *
 * A lone message travels as it is: zero bytes of overhead, so a 14-byte request stays 14 bytes.
 * Several messages share a frame as
 *
 *     frame = C  len(1) msg(1)  len(2) msg(2) … len(N−1) msg(N−1)  msg(N)
 *
 *   C        1 byte, 0xF0 + (N − 2) for N = 2..MAX_PACKED_MESSAGES: a container of N messages.
 *   len(i)   1 byte, 1..255: length of message i, for every message but the last.
 *   msg(N)   the last message takes the rest of the frame (≥ 1 byte), so it may be longer than 255.
 *
 * The first byte tells the two apart: every message the layers above send starts with a byte
 * below 0xF0 (RFC 7252 messages with 0x40–0x7F, compact CoAP rule ids and secure-link frame kinds
 * are allocated below 0xF0), so 0xF0–0xFF are free for the container. `packFrame` refuses a lone
 * message that starts at 0xF0 or above rather than guess.
 *
 * Overhead: 0 bytes for a lone message, 1 + (N − 1) bytes for N. Empty messages are not allowed.
 * `unpackFrame` rejects rather than truncates: a zero length, a length running past the end, an
 * empty last message, an empty frame, the reserved byte 0xFF, each a WireError ERR_PACKED_FRAME.
 */
import { WireError } from '../errors.ts';

export const MAX_PACKED_MESSAGES = 16;
/** Largest message that can sit before the last one. */
export const MAX_INNER_MESSAGE_LEN = 255;

/** First byte of a container of two messages; 0xF0 + (N − 2) for N messages. */
export const CONTAINER_BASE = 0xf0;

/** True when `frame` is a container of several messages rather than one message. */
export function isContainer(frame: Uint8Array): boolean { return (frame[0] ?? 0) >= CONTAINER_BASE; }

/** Bytes of a frame packing messages of these lengths (in this order). */
export function packedLength(lengths: readonly number[]): number {
  if (lengths.length === 1) return lengths[0]!;
  let n = 1;
  for (const l of lengths) n += l;
  return n + Math.max(0, lengths.length - 1);
}

/** True when messages of these lengths can share one container (order as given). */
export function canPack(lengths: readonly number[]): boolean {
  if (lengths.length < 1 || lengths.length > MAX_PACKED_MESSAGES) return false;
  for (let i = 0; i < lengths.length; i++) {
    const l = lengths[i]!;
    if (l < 1 || (i < lengths.length - 1 && l > MAX_INNER_MESSAGE_LEN)) return false;
  }
  return true;
}

export function packFrame(messages: readonly Uint8Array[]): Uint8Array {
  const lengths = messages.map((m) => m.length);
  if (!canPack(lengths)) {
    throw new RangeError(`cannot pack ${messages.length} messages of lengths [${lengths.join(', ')}]: 1..${MAX_PACKED_MESSAGES} non-empty messages, all but the last ≤ ${MAX_INNER_MESSAGE_LEN} bytes`);
  }
  if (messages.length === 1) {
    const only = messages[0]!;
    if (only[0]! >= CONTAINER_BASE) throw new RangeError(`a lone message may not start with 0x${only[0]!.toString(16)} (0xF0–0xFF mark containers)`);
    return only.slice();
  }
  const out = new Uint8Array(packedLength(lengths));
  out[0] = CONTAINER_BASE + messages.length - 2;
  let o = 1;
  messages.forEach((m, i) => {
    if (i < messages.length - 1) out[o++] = m.length;
    out.set(m, o);
    o += m.length;
  });
  return out;
}

function bad(message: string, detail: Record<string, unknown>): WireError {
  return new WireError('ERR_PACKED_FRAME', 'scheduler', message, detail);
}

/** Split a received frame into its messages (views into `frame`). */
export function unpackFrame(frame: Uint8Array): Uint8Array[] {
  if (frame.length === 0) throw bad('empty frame', { len: 0 });
  if (!isContainer(frame)) return [frame];
  const n = frame[0]! - CONTAINER_BASE + 2;
  if (n > MAX_PACKED_MESSAGES) throw bad(`container byte 0x${frame[0]!.toString(16)} is reserved`, { first: frame[0] });
  const out: Uint8Array[] = [];
  let o = 1;
  for (let i = 0; i < n - 1; i++) {
    if (o >= frame.length) throw bad(`packed frame ends before the length of message ${i + 1} of ${n}`, { count: n, at: o });
    const l = frame[o++]!;
    if (l === 0) throw bad(`packed frame message ${i + 1} has length 0`, { count: n, at: o - 1 });
    if (o + l > frame.length) throw bad(`packed frame message ${i + 1} (${l} bytes) runs past the end`, { count: n, at: o, len: l });
    out.push(frame.subarray(o, o + l));
    o += l;
  }
  if (o >= frame.length) throw bad(`packed frame has no bytes left for its last message (${n} of ${n})`, { count: n });
  out.push(frame.subarray(o));
  return out;
}
