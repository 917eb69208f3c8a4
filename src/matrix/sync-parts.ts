/**
 * Push-sync notifications in PARTS (issue 7, "nothing lost").
 *
 * The gateway may drop a sync delta only once the field kit has it. For a notification that fits
 * one frame the CoAP ACK proves that (the host applies and persists before its ACK leaves). A
 * Block2 notification gives no such proof: its last block is answered, never acknowledged
 * (RFC 7959), so under loss the gateway would count as delivered a delta the host never
 * assembled. A body too big for one frame therefore goes as a run of notifications, each one
 * frame, each its own CON with its own Observe value, each ACKed:
 *
 *   Trickle-Part option 65013 (0xFDF5: critical, so a peer that does not know it refuses the
 *   part rather than take a slice for a whole body), uint 1–3 bytes: (index << 1) | more.
 *
 * Part 0 carries the response's own options (Content-Format, Handle-Base, …); later parts carry
 * only Trickle-Part. Parts of one body are sent strictly in order, one at a time; a part with
 * index 0, or a notification without the option, starts afresh. The host keeps (and persists) the
 * parts received so far, so its own restart in the middle loses nothing either.
 */
import { WireError } from '../errors.ts';
import { getUintOption, uintOption, withoutOptions, type CoapOption } from '../coap/message.ts';
import { concatBytes, fromHex, toHex } from '../util/bytes.ts';

export const TRICKLE_OPT_PART = 65013;
/** Bound on the parts of one body (the index is at most 22 bits in a 3-byte uint). */
export const MAX_PARTS = 4096;

export interface PartResponse { code: number; options: readonly CoapOption[]; payload: Uint8Array }

/**
 * Split a response whose payload exceeds what one frame carries. `limitFor(options)` is the
 * payload room of a notification with those options (CoapEndpoint.notificationPayloadLimit).
 * A response that fits is returned alone, unchanged.
 */
export function splitIntoParts(res: PartResponse, limitFor: (options: readonly CoapOption[]) => number): PartResponse[] {
  if (res.payload.length <= limitFor(res.options)) return [res];
  // Sized with the widest part option a body of this size can need.
  const widest = uintOption(TRICKLE_OPT_PART, (MAX_PARTS << 1) | 1);
  const firstRoom = limitFor([...res.options, widest]);
  const restRoom = limitFor([widest]);
  if (firstRoom <= 0 || restRoom <= 0) throw new WireError('ERR_COAP_TOO_LARGE', 'coap', 'a push-sync part does not fit one frame even empty');
  const parts: PartResponse[] = [];
  let offset = 0;
  while (offset < res.payload.length) {
    const room = parts.length === 0 ? firstRoom : restRoom;
    parts.push({ code: res.code, options: parts.length === 0 ? res.options : [], payload: res.payload.subarray(offset, offset + room) });
    offset += room;
  }
  if (parts.length > MAX_PARTS) throw new WireError('ERR_COAP_TOO_LARGE', 'coap', `a push-sync body of ${res.payload.length} bytes needs ${parts.length} parts (at most ${MAX_PARTS})`);
  return parts.map((p, i) => ({ ...p, options: [...p.options, uintOption(TRICKLE_OPT_PART, (i << 1) | (i < parts.length - 1 ? 1 : 0))] }));
}

/** Reassembly state, plain JSON so the host can persist it. */
export interface PartialBody { code: number; options: [number, string][]; chunks: string[] }

export type PartResult =
  | { kind: 'whole'; response: PartResponse }
  | { kind: 'partial'; partial: PartialBody }
  | { kind: 'duplicate' }
  | { kind: 'gap'; expected: number; got: number };

/**
 * Feed one notification. Without Trickle-Part it is whole. Index 0 starts a body; the next index
 * appends; an index already held is a duplicate (a re-send after a restart of the host); anything
 * else is a gap (the caller logs it and drops the partial body).
 */
export function acceptPart(held: PartialBody | undefined, res: PartResponse): PartResult {
  const v = getUintOption(res.options, TRICKLE_OPT_PART, 3);
  if (v === undefined) return { kind: 'whole', response: res };
  const index = v >> 1;
  const more = (v & 1) === 1;
  const options = withoutOptions(res.options, TRICKLE_OPT_PART);
  let body: PartialBody;
  if (index === 0) {
    body = { code: res.code, options: options.map((o) => [o.number, toHex(o.value)]), chunks: [] };
  } else if (held && index < held.chunks.length) {
    return { kind: 'duplicate' };
  } else if (held && index === held.chunks.length) {
    body = { ...held, chunks: [...held.chunks] };
  } else {
    return { kind: 'gap', expected: held?.chunks.length ?? 0, got: index };
  }
  if (body.chunks.length >= MAX_PARTS) return { kind: 'gap', expected: MAX_PARTS, got: index };
  body.chunks.push(toHex(res.payload));
  if (more) return { kind: 'partial', partial: body };
  return {
    kind: 'whole',
    response: {
      code: body.code,
      options: body.options.map(([number, value]) => ({ number, value: fromHex(value) })),
      payload: concatBytes(...body.chunks.map((c) => fromHex(c))),
    },
  };
}
