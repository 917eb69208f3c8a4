import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc16, crc16Update, FCS16_GOOD } from '../../../src/util/crc.ts';
import { utf8 } from '../../../src/util/bytes.ts';

/** Bit-serial reference (no table), straight from the CRC-16/X-25 parameters. */
function crc16BitSerial(data: Uint8Array): number {
  let c = 0xffff;
  for (const b of data) {
    c ^= b;
    for (let i = 0; i < 8; i++) c = c & 1 ? (c >>> 1) ^ 0x8408 : c >>> 1;
  }
  return c ^ 0xffff;
}

describe('crc16 (CRC-16/X-25, RFC 1662 FCS-16)', () => {
  it('gives the catalogue check value 0x906E for "123456789"', () => {
    expect(crc16(utf8.encode('123456789'))).toBe(0x906e);
  });

  it.each([
    ['', 0x0000],
    ['00', 0xf078],
    ['41', 0xa3f5], // "A"
    ['ffff', 0xffff],
  ])('known vector %s → %i', (hex, want) => {
    expect(crc16(new Uint8Array(Buffer.from(hex, 'hex')))).toBe(want);
  });

  it('matches "The quick brown fox jumps over the lazy dog" → 0x9358', () => {
    expect(crc16(utf8.encode('The quick brown fox jumps over the lazy dog'))).toBe(0x9358);
  });

  it('data ‖ FCS (LSB first) leaves the RFC 1662 good residue 0xF0B8', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (data) => {
      const fcs = crc16(data);
      const withFcs = new Uint8Array([...data, fcs & 0xff, fcs >>> 8]);
      expect(crc16Update(0xffff, withFcs)).toBe(FCS16_GOOD);
    }));
  });

  it('agrees with a bit-serial implementation on random input', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (data) => {
      expect(crc16(data)).toBe(crc16BitSerial(data));
    }));
  });

  it('detects every single-bit error', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.nat(), (data, bit) => {
      const i = bit % (data.length * 8);
      const flipped = data.slice();
      flipped[i >> 3]! ^= 1 << (i & 7);
      expect(crc16(flipped)).not.toBe(crc16(data));
    }));
  });
});
