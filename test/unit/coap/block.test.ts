import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { WireError, TrickleError } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import {
  blockOffset, blockSize, chooseBlockSzx, decodeBlock, decodeSize, encodeBlock, encodeSize, sizeToSzx, BLOCK_NUM_MAX,
} from '../../../src/coap/block.ts';

describe('Block option values (RFC 7959 §2.2)', () => {
  it('encodes NUM | M | SZX minimally', () => {
    expect(toHex(encodeBlock({ num: 0, more: false, szx: 0 }))).toBe('');
    expect(toHex(encodeBlock({ num: 0, more: true, szx: 6 }))).toBe('0e');
    expect(toHex(encodeBlock({ num: 1, more: true, szx: 2 }))).toBe('1a');
    expect(toHex(encodeBlock({ num: 15, more: false, szx: 6 }))).toBe('f6');
    expect(toHex(encodeBlock({ num: 16, more: false, szx: 6 }))).toBe('0106');
    expect(toHex(encodeBlock({ num: 4095, more: true, szx: 1 }))).toBe('fff9');
    expect(toHex(encodeBlock({ num: 4096, more: false, szx: 0 }))).toBe('010000');
    expect(toHex(encodeBlock({ num: BLOCK_NUM_MAX, more: true, szx: 6 }))).toBe('fffffe');
  });

  it('decodes, and rejects SZX 7 and over-long values', () => {
    expect(decodeBlock(fromHex('1a'))).toEqual({ num: 1, more: true, szx: 2 });
    expect(decodeBlock(fromHex(''))).toEqual({ num: 0, more: false, szx: 0 });
    expect(decodeBlock(fromHex('000106'))).toEqual({ num: 16, more: false, szx: 6 });
    for (const bad of ['07', '0f', 'ff', '01020304']) {
      let caught: unknown;
      try { decodeBlock(fromHex(bad)); } catch (e) { caught = e; }
      expect(caught, bad).toBeInstanceOf(WireError);
      expect((caught as WireError).code).toBe('ERR_COAP_OPTION');
    }
  });

  it('refuses to encode out-of-range values', () => {
    expect(() => encodeBlock({ num: BLOCK_NUM_MAX + 1, more: false, szx: 0 })).toThrow(TrickleError);
    expect(() => encodeBlock({ num: 0, more: false, szx: 7 })).toThrow(TrickleError);
    expect(() => encodeBlock({ num: -1, more: false, szx: 0 })).toThrow(TrickleError);
  });

  it('round-trips', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: BLOCK_NUM_MAX }), fc.boolean(), fc.integer({ min: 0, max: 6 }),
      (num, more, szx) => { expect(decodeBlock(encodeBlock({ num, more, szx }))).toEqual({ num, more, szx }); },
    ));
  });

  it('sizes and offsets', () => {
    expect([0, 1, 2, 3, 4, 5, 6].map(blockSize)).toEqual([16, 32, 64, 128, 256, 512, 1024]);
    expect(sizeToSzx(128)).toBe(3);
    expect(sizeToSzx(100)).toBeUndefined();
    expect(blockOffset({ num: 3, more: true, szx: 2 })).toBe(192);
  });

  it('Size1/Size2 are uints', () => {
    expect(toHex(encodeSize(65536))).toBe('010000');
    expect(decodeSize(fromHex('010000'))).toBe(65536);
    expect(() => decodeSize(fromHex('0102030405'))).toThrow(WireError);
  });
});

describe('chooseBlockSzx', () => {
  it('picks the largest block that fits the frame', () => {
    expect(chooseBlockSzx(20, 255)).toBe(3);   // 20 + 128 ≤ 255 < 20 + 256
    expect(chooseBlockSzx(0, 1024)).toBe(6);
    expect(chooseBlockSzx(1, 1024)).toBe(5);
    expect(chooseBlockSzx(239, 255)).toBe(0);  // exactly 16
    expect(chooseBlockSzx(240, 255)).toBeUndefined();
    expect(chooseBlockSzx(10, 5000)).toBe(6);  // never above 1024
  });

  it('always fits when it answers', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 3000 }), (overhead, max) => {
      const szx = chooseBlockSzx(overhead, max);
      if (szx === undefined) expect(overhead + 16).toBeGreaterThan(max);
      else {
        expect(overhead + blockSize(szx)).toBeLessThanOrEqual(max);
        if (szx < 6) expect(overhead + blockSize(szx + 1)).toBeGreaterThan(max);
      }
    }));
  });
});
