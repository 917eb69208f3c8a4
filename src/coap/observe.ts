/**
 * RFC 7641 Observe: the pure parts CoapEndpoint uses for both roles: the 24-bit
 * sequence arithmetic, the freshness rule, and the JSON form of a server's
 * registrations (export/import across a restart). No state, no I/O.
 *
 * Freshness (RFC 7641 §3.4). A notification with Observe value V2 received at T2 is
 * newer than the last one delivered (V1 at T1) iff
 *
 *     (V1 < V2 and V2 − V1 < 2^23) or (V1 > V2 and V1 − V2 > 2^23) or T2 > T1 + W
 *
 * The RFC fixes W = 128 s: after that, it assumes no older notification can still be in
 * the network and lets a server that lost its counter start over. Neither holds on a
 * duty-cycled radio: a CON may be retransmitted (and a notification the client already
 * has may be re-sent after a long outage) minutes after the last delivery, and a
 * Trickle server never loses its counter: it exports each registration's sequence
 * with the registration, and a registration whose state is gone is gone entirely (its
 * token is unknown, so nothing is sent for it). So W defaults to Infinity, i.e. the
 * sequence alone decides and a repeated or older value is never delivered twice;
 * CoapEndpointOptions.observeFreshnessMs sets a finite W for peers that need the RFC rule.
 */
import { ConfigError } from '../errors.ts';

/** Observe option in a request (RFC 7641 §2). */
export const OBSERVE_REGISTER = 0;
export const OBSERVE_DEREGISTER = 1;
/** Observe values are 24-bit sequence numbers (RFC 7641 §4.4). */
export const OBSERVE_MODULUS = 2 ** 24;
const HALF = 2 ** 23;

/** Whether v2 is newer than v1 by the sequence part of RFC 7641 §3.4 alone. */
export function observeNewer(v1: number, v2: number): boolean {
  return (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF);
}

/**
 * RFC 7641 §3.4 with a configurable W (windowMs; Infinity disables the time rule).
 * `last` undefined: nothing delivered yet, everything is fresh.
 */
export function isFresh(
  last: { readonly value: number; readonly atMs: number } | undefined, value: number, atMs: number, windowMs: number,
): boolean {
  if (!last) return true;
  return observeNewer(last.value, value) || atMs > last.atMs + windowMs;
}

/**
 * The Observe value of a registration's next notification: `preferred` (CoapEndpoint
 * offers its message sequence number mod 2^24, which the compact form carries for
 * free) when it is newer than the last value sent, else last + 1. Always newer than
 * `last`, so a client never discards a notification as stale that it has not seen.
 */
export function nextObserveValue(last: number | undefined, preferred: number | undefined): number {
  if (preferred !== undefined && (last === undefined || observeNewer(last, preferred))) return preferred % OBSERVE_MODULUS;
  return ((last ?? -1) + 1) % OBSERVE_MODULUS;
}

/**
 * A server's registration as plain JSON (CoapEndpoint.exportObservations /
 * importObservations): the client's token and the last Observe value sent. Enough to
 * keep pushing to the same token after a restart; queued notifications are not part of
 * it (the lead re-sends what it was not told was delivered).
 */
export interface ObservationRecord {
  /** The registration's token, lower-case hex (0–8 bytes). */
  readonly token: string;
  /** The last Observe value sent for it (0 ≤ n < 2^24), or null before the first response. */
  readonly sequence: number | null;
}

/** Validate records read from storage; throws ConfigError naming the bad entry. */
export function parseObservationRecords(value: unknown): ObservationRecord[] {
  if (!Array.isArray(value)) throw new ConfigError('coap: observation records must be an array', { key: 'observations' });
  return value.map((r: unknown, i) => {
    const rec = r as { token?: unknown; sequence?: unknown } | null;
    const token = rec?.token;
    const sequence = rec?.sequence;
    if (typeof token !== 'string' || !/^(?:[0-9a-f]{2}){0,8}$/.test(token)) {
      throw new ConfigError(`coap: observation ${i}: token must be 0–8 bytes of lower-case hex, got ${JSON.stringify(token)}`,
        { key: `observations[${i}].token` });
    }
    if (sequence !== null && (typeof sequence !== 'number' || !Number.isInteger(sequence) || sequence < 0 || sequence >= OBSERVE_MODULUS)) {
      throw new ConfigError(`coap: observation ${i}: sequence must be null or an integer 0..2^24-1, got ${JSON.stringify(sequence)}`,
        { key: `observations[${i}].sequence` });
    }
    return { token, sequence: sequence as number | null };
  });
}
