/**
 * The relay header (src/net/relay-header.ts): the vectors (test/vectors/net/relay-header.json,
 * computed by hand from the bit layout), bounds, and that any byte string is either read or
 * refused with ERR_RELAY_HEADER, never thrown otherwise.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { isRelayed, readRelayed, relayFrame, GATEWAY, MAX_HOPS_LEFT, RELAY_HEADER_EXTRA_BYTES } from '../../../src/net/relay-header.ts';
import { addressFrame } from '../../../src/net/link-address.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';

interface Vectors {
  valid: { name: string; direction: 'up' | 'down'; to: number; from: number; end: number; hopsLeft: number; frame: string; bytes: string }[];
  invalid: { name: string; bytes: string }[];
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/net/relay-header.json', import.meta.url), 'utf8')) as Vectors;

describe('relay header', () => {
  it.each(vectors.valid)('$name', (v) => {
    const bytes = relayFrame({ direction: v.direction, to: v.to, from: v.from, end: v.end, hopsLeft: v.hopsLeft }, fromHex(v.frame));
    expect(toHex(bytes)).toBe(v.bytes);
    const r = readRelayed(fromHex(v.bytes));
    expect({ direction: r.direction, to: r.to, from: r.from, end: r.end, hopsLeft: r.hopsLeft, frame: toHex(r.frame) })
      .toEqual({ direction: v.direction, to: v.to, from: v.from, end: v.end, hopsLeft: v.hopsLeft, frame: v.frame });
    expect(bytes.length - fromHex(v.frame).length).toBe(1 + RELAY_HEADER_EXTRA_BYTES);
  });

  it.each(vectors.invalid)('refuses: $name', (v) => {
    let err: unknown;
    try { readRelayed(fromHex(v.bytes)); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_RELAY_HEADER')).toBe(true);
  });

  it('is told apart from an ordinary frame by byte 0 alone', () => {
    for (let a = 0; a <= 126; a++) {
      expect(isRelayed(addressFrame(a, 'up', new Uint8Array([1])))).toBe(false);
      expect(isRelayed(addressFrame(a, 'down', new Uint8Array([1])))).toBe(false);
    }
    expect(isRelayed(relayFrame({ direction: 'up', to: GATEWAY, from: 3, end: 3, hopsLeft: 0 }, new Uint8Array([1])))).toBe(true);
  });

  it('refuses to build what a receiver would refuse', () => {
    const f = new Uint8Array([1]);
    expect(() => relayFrame({ direction: 'up', to: 3, from: 3, end: 3, hopsLeft: 0 }, f)).toThrow(RangeError);
    expect(() => relayFrame({ direction: 'up', to: 3, from: 4, end: 127, hopsLeft: 0 }, f)).toThrow(RangeError);
    expect(() => relayFrame({ direction: 'up', to: 3, from: 4, end: 5, hopsLeft: MAX_HOPS_LEFT + 1 }, f)).toThrow(RangeError);
    expect(() => relayFrame({ direction: 'up', to: 128, from: 4, end: 5, hopsLeft: 0 }, f)).toThrow(RangeError);
  });

  it('reads every 5-byte string or refuses it with ERR_RELAY_HEADER', () => {
    const b = new Uint8Array(5);
    for (let i = 0; i < 20_000; i++) {
      for (let j = 0; j < 5; j++) b[j] = (Math.imul(i + 1, 2654435761 + j * 40503) >>> (j * 3)) & 0xff;
      b[0] = (b[0]! & 0x80) | 0x7f;
      try {
        const r = readRelayed(b);
        expect(r.end).toBeLessThanOrEqual(126);
        expect(r.to).not.toBe(r.from);
        expect(toHex(relayFrame(r, r.frame))).toBe(toHex(b));
      } catch (e) {
        expect(isTrickleError(e, 'ERR_RELAY_HEADER')).toBe(true);
      }
    }
  });
});
