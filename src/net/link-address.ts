/**
 * The link address of a shared channel (net/link-address.ts): one byte in front of every
 * frame, so that one gateway can serve many field kits on one frequency.
 *
 *     byte 0 = D AAAAAAA        D = 0 uplink (kit → gateway), 1 downlink (gateway → kit)
 *                               A = the kit's address, 0..126; 127 is reserved (relays, issue 13)
 *     bytes 1.. = the frame as on a point-to-point link (a secure-link frame or a container)
 *
 * In the spirit of SCHC (RFC 8724: a rule, not a header, carries what both ends know) and of
 * LoRaWAN's DevAddr (a short, non-secret selector the network server resolves to a session),
 * the address says only which session to try; it is not authenticated and need not be: the
 * session it selects authenticates the frame (its AEAD), so a rewritten address yields a frame
 * that fails at the wrong session, exactly like noise. A link configured point-to-point carries
 * no address at all (0 bytes: today's budget).
 *
 * A kit's address is derived from its static public key, BLAKE2s(key)[0] mod 127, so kit and
 * gateway agree with no configuration; `--link-address N` overrides it when two kits of one
 * gateway collide (the gateway warns, `trickle keys list` shows it). The direction bit lets a
 * kit ignore every other kit's uplink and the gateway every downlink (another gateway's) with
 * one comparison, before any cryptography.
 *
 * Pure: bytes in, bytes out.
 */
import { blake2s } from '@noble/hashes/blake2.js';
import { TrickleError, WireError } from '../errors.ts';

/** Addresses a kit may have (0..126). */
export const MAX_KIT_ADDRESS = 126;
/** Reserved for relays and broadcasts (issue 13): never a kit's address. */
export const RESERVED_ADDRESS = 0x7f;
export const DOWNLINK_BIT = 0x80;
/** Bytes the address adds to every frame on a shared channel. */
export const LINK_ADDRESS_BYTES = 1;

export type Direction = 'up' | 'down';

/** The default address of the kit with this static public key. */
export function deriveKitAddress(staticPublicKey: Uint8Array): number {
  if (staticPublicKey.length !== 32) throw new TypeError('a static public key is 32 bytes');
  return blake2s(staticPublicKey)[0]! % (MAX_KIT_ADDRESS + 1);
}

/** Parse `--link-address`: 'auto' (undefined) or 0..126, with an error that names the fix. */
export function parseLinkAddress(raw: string | undefined): number | undefined {
  if (raw === undefined || raw === 'auto') return undefined;
  const n = /^(0x[0-9a-f]+|\d+)$/i.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_KIT_ADDRESS) {
    throw new TrickleError('ERR_CONFIG', 'config', `--link-address must be auto or a number from 0 to ${MAX_KIT_ADDRESS} (127 is reserved), got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** `frame` with the address byte in front. */
export function addressFrame(address: number, direction: Direction, frame: Uint8Array): Uint8Array {
  if (!Number.isInteger(address) || address < 0 || address > RESERVED_ADDRESS) throw new RangeError(`link address out of range: ${address}`);
  const out = new Uint8Array(frame.length + 1);
  out[0] = (direction === 'down' ? DOWNLINK_BIT : 0) | address;
  out.set(frame, 1);
  return out;
}

export interface AddressedFrame {
  address: number;
  direction: Direction;
  /** The frame after the address byte (a view, not a copy). */
  frame: Uint8Array;
}

/** Split the address byte off; a frame with nothing after it is refused (ERR_LINK_ADDRESS). */
export function readAddress(bytes: Uint8Array): AddressedFrame {
  if (bytes.length < 2) throw new WireError('ERR_LINK_ADDRESS', 'net', `a frame on a shared channel has an address byte and at least one more (got ${bytes.length} bytes)`);
  const b = bytes[0]!;
  return { address: b & 0x7f, direction: b & DOWNLINK_BIT ? 'down' : 'up', frame: bytes.subarray(1) };
}

export function formatAddress(address: number): string {
  return `0x${address.toString(16).padStart(2, '0')}`;
}

/** Secure-link kinds a field kit opens a handshake with (src/secure/secure-link.ts: XX1 0x80, 33 bytes; IK1 0x83, ≥ 97). */
const XX1 = 0x80;
const XX1_LEN = 33;
const IK1 = 0x83;
const IK1_MIN_LEN = 97;
const opensHandshake = (f: Uint8Array): boolean => (f[0] === XX1 && f.length === XX1_LEN) || (f[0] === IK1 && f.length >= IK1_MIN_LEN);

/**
 * A gateway's guess that a frame it heard comes from a field kit configured for the other
 * network mode, so that a mismatch is named instead of showing only as dropped frames: a
 * point-to-point gateway hearing a kit's handshake with an uplink address in front, or a shared
 * gateway hearing one without. Only the first frame of a handshake has a shape to go by.
 * Returns the fix to log, or undefined.
 */
export function otherNetworkMode(raw: Uint8Array, gatewayShared: boolean): string | undefined {
  if (!gatewayShared) {
    if (raw.length > 1 && raw[0]! <= MAX_KIT_ADDRESS && opensHandshake(raw.subarray(1))) {
      return `a field kit started with --network shared (link address ${formatAddress(raw[0]!)}) is calling this gateway, which runs --network p2p: start the gateway with --network shared, or the kit with --network p2p`;
    }
    return undefined;
  }
  if (opensHandshake(raw)) {
    return 'a field kit started with --network p2p (no link address) seems to be calling this gateway, which runs --network shared: start the kit with --network shared';
  }
  return undefined;
}

