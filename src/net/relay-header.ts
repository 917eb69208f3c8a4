/**
 * The relay header of a shared channel (issue 13): a frame that a field kit relays for another
 * kit out of the gateway's range. It replaces the link address byte of net/link-address.ts with
 * the reserved address 127 and three more bytes:
 *
 *     byte 0 = D 1111111       D = 0 uplink (toward the gateway), 1 downlink (toward a kit)
 *     byte 1 = h1 TTTTTTT      T = the station that takes this hop (next hop): a relay's kit
 *                              address, or 127 = the gateway
 *     byte 2 = h0 FFFFFFF      F = the station that sent this hop (last hop): a relay's kit
 *                              address, the end kit's own, or 127 = the gateway
 *     byte 3 = 0  EEEEEEE      E = the end kit: whose session the frame belongs to (the sender
 *                              of an uplink, the receiver of a downlink); the high bit is
 *                              reserved (0; a frame with it set is dropped)
 *     bytes 4.. = the frame as the end kit and the gateway exchange it (a secure-link frame)
 *
 * h1 h0 = the hops it may still take after this one (0..3). The end kit and the gateway never
 * see a header they did not make: the last hop of a downlink goes as an ordinary frame with the
 * end kit's address (0 bytes more), and the gateway reads the end kit's session from E.
 *
 * As in Meshtastic's next-hop routing (a packet names the node that relayed it and the node
 * that should relay it next), every station learns from what it hears, with no routing traffic
 * of its own: whoever receives a hop learns that E is reached through F. The gateway learns it
 * only from a frame E's session authenticated (a forged header changes no route there); a relay
 * cannot authenticate anything and keeps its routes short-lived. What the header does not
 * protect, and need not: like the link address it only selects, and the end-to-end AEAD between
 * kit and gateway decides (SECURITY.md, "Relays").
 *
 * Pure: bytes in, bytes out.
 */
import { WireError } from '../errors.ts';
import { DOWNLINK_BIT, MAX_KIT_ADDRESS, RESERVED_ADDRESS, type Direction } from './link-address.ts';

/** The address that stands for the gateway in a relay header (and marks a relayed frame in byte 0). */
export const GATEWAY = RESERVED_ADDRESS;
/** Bytes a relayed hop carries beyond an ordinary frame's one address byte. */
export const RELAY_HEADER_EXTRA_BYTES = 3;
/** Hops a frame may take after the first: 0..3 (two bits). */
export const MAX_HOPS_LEFT = 3;

export interface RelayHeader {
  direction: Direction;
  /** Next hop: a kit address (0..126) or GATEWAY. */
  to: number;
  /** Last hop: a kit address (0..126) or GATEWAY. */
  from: number;
  /** The end kit (0..126). */
  end: number;
  /** Hops the frame may still take after this one (0..3). */
  hopsLeft: number;
}

export interface RelayedFrame extends RelayHeader {
  /** What follows the header (a view, not a copy). */
  frame: Uint8Array;
}

const station = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= GATEWAY;

/** True when byte 0 of a shared-channel frame marks a relayed frame. */
export function isRelayed(bytes: Uint8Array): boolean {
  return bytes.length > 0 && (bytes[0]! & 0x7f) === RESERVED_ADDRESS;
}

/** `frame` behind a relay header. */
export function relayFrame(h: RelayHeader, frame: Uint8Array): Uint8Array {
  if (!station(h.to) || !station(h.from)) throw new RangeError(`relay header: a hop address is 0..127 (got to ${h.to}, from ${h.from})`);
  if (!Number.isInteger(h.end) || h.end < 0 || h.end > MAX_KIT_ADDRESS) throw new RangeError(`relay header: the end kit's address is 0..${MAX_KIT_ADDRESS} (got ${h.end})`);
  if (!Number.isInteger(h.hopsLeft) || h.hopsLeft < 0 || h.hopsLeft > MAX_HOPS_LEFT) throw new RangeError(`relay header: hops left is 0..${MAX_HOPS_LEFT} (got ${h.hopsLeft})`);
  if (h.to === h.from) throw new RangeError('relay header: a hop goes from one station to another');
  const out = new Uint8Array(frame.length + 4);
  out[0] = (h.direction === 'down' ? DOWNLINK_BIT : 0) | RESERVED_ADDRESS;
  out[1] = ((h.hopsLeft & 2) << 6) | h.to;
  out[2] = ((h.hopsLeft & 1) << 7) | h.from;
  out[3] = h.end;
  out.set(frame, 4);
  return out;
}

/**
 * Read a relayed frame (byte 0 is D|127). Refused (ERR_RELAY_HEADER): fewer than 5 bytes, the
 * reserved bit set, an end kit of 127, or a hop from a station to itself.
 */
export function readRelayed(bytes: Uint8Array): RelayedFrame {
  if (!isRelayed(bytes)) throw new WireError('ERR_RELAY_HEADER', 'net', 'not a relayed frame (byte 0 is not D|127)');
  if (bytes.length < 5) throw new WireError('ERR_RELAY_HEADER', 'net', `a relayed frame has a 4-byte header and at least one more byte (got ${bytes.length} bytes)`);
  const b1 = bytes[1]!;
  const b2 = bytes[2]!;
  const b3 = bytes[3]!;
  if (b3 & 0x80) throw new WireError('ERR_RELAY_HEADER', 'net', 'relay header: the reserved bit of byte 3 is set');
  const to = b1 & 0x7f;
  const from = b2 & 0x7f;
  const end = b3 & 0x7f;
  if (end > MAX_KIT_ADDRESS) throw new WireError('ERR_RELAY_HEADER', 'net', 'relay header: 127 is not a kit');
  if (to === from) throw new WireError('ERR_RELAY_HEADER', 'net', 'relay header: a hop from a station to itself');
  return {
    direction: bytes[0]! & DOWNLINK_BIT ? 'down' : 'up',
    to, from, end, hopsLeft: ((b1 >> 6) & 2) | (b2 >> 7),
    frame: bytes.subarray(4),
  };
}
