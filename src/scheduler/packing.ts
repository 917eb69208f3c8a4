/**
 * Packing container v1: several small messages to the same peer in one radio frame.
 *
 * Every frame the TxQueue sends (when packing is on; both ends must agree) is
 *
 *     frame = N  len(1) msg(1)  len(2) msg(2) … len(N−1) msg(N−1)  msg(N)
 *
 *   N        1 byte, 1..MAX_PACKED_MESSAGES: how many messages follow.
 *   len(i)   1 byte, 1..255: length of message i, for every message but the last.
 *   msg(N)   the last message takes the rest of the frame (≥ 1 byte), so it may be longer than 255.
 *
 * Overhead: 1 byte for a lone message, 1 + (N − 1) bytes for N. Empty messages are not allowed
 * (nothing above the scheduler sends them), which keeps every length byte meaningful.
 * `unpackFrame` rejects rather than truncates: wrong count, zero length, a length running past the
 * end, an empty last message, each a WireError ERR_PACKED_FRAME.
 */
import { WireError } from '../errors.ts';

export const MAX_PACKED_MESSAGES = 16;
/** Largest message that can sit before the last one. */
export const MAX_INNER_MESSAGE_LEN = 255;

/** Bytes of a frame packing messages of these lengths (in this order). */
export function packedLength(lengths: readonly number[]): number {
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
  const out = new Uint8Array(packedLength(lengths));
  out[0] = messages.length;
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
  if (frame.length < 2) throw bad(`packed frame of ${frame.length} bytes is too short (needs a count and ≥ 1 byte)`, { len: frame.length });
  const n = frame[0]!;
  if (n < 1 || n > MAX_PACKED_MESSAGES) throw bad(`packed frame count ${n} is outside 1..${MAX_PACKED_MESSAGES}`, { count: n });
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
