import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_PACKED_MESSAGES, packedLength, packFrame, unpackFrame } from '../../../src/scheduler/packing.ts';
import { isTrickleError, WireError } from '../../../src/errors.ts';

describe('packing container v1', () => {
  it('lays out the container byte, inner lengths, last message without a length', () => {
    const f = packFrame([Uint8Array.of(0xaa), Uint8Array.of(0xbb, 0xcc), Uint8Array.of(0xdd)]);
    expect([...f]).toEqual([0xf1, 1, 0xaa, 2, 0xbb, 0xcc, 0xdd]);
    expect(packedLength([1, 2, 1])).toBe(7);
  });

  it('sends a lone message as it is, with no overhead', () => {
    expect([...packFrame([Uint8Array.of(9, 8)])]).toEqual([9, 8]);
    expect(packedLength([14])).toBe(14);
    expect(unpackFrame(Uint8Array.of(0x40, 1, 2)).map((m) => [...m])).toEqual([[0x40, 1, 2]]);
    expect(() => packFrame([Uint8Array.of(0xf0, 1)])).toThrow(RangeError);
  });

  it('round-trips any 1..16 non-empty messages (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 255 }), { minLength: 1, maxLength: MAX_PACKED_MESSAGES }),
      fc.uint8Array({ minLength: 1, maxLength: 600 }),
      (inner, last) => {
        const msgs = [...inner.slice(0, -1), last];
        if (msgs.length === 1) msgs[0]![0] = msgs[0]![0]! % 0xf0; // lone messages start below 0xF0
        const f = packFrame(msgs);
        expect(f.length).toBe(packedLength(msgs.map((m) => m.length)));
        expect(unpackFrame(f).map((m) => [...m])).toEqual(msgs.map((m) => [...m]));
      },
    ));
  });

  it('rejects malformed frames with a WireError, never truncates', () => {
    const bad: number[][] = [
      [], [0xf0, 1], [0xff, 1, 1], [0xf0, 0, 1], [0xf0, 5, 1, 2], [0xf0, 1, 7], [0xf1, 1, 7, 1, 8],
    ];
    for (const b of bad) {
      let err: unknown;
      try { unpackFrame(Uint8Array.from(b)); } catch (e) { err = e; }
      expect(err, JSON.stringify(b)).toBeInstanceOf(WireError);
      expect(isTrickleError(err, 'ERR_PACKED_FRAME')).toBe(true);
    }
  });

  it('never throws anything but ERR_PACKED_FRAME on random input (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
      try {
        const msgs = unpackFrame(b);
        expect(packFrame(msgs)).toEqual(b); // anything accepted is canonical
      } catch (e) {
        expect(isTrickleError(e, 'ERR_PACKED_FRAME')).toBe(true);
      }
    }));
  });
});
