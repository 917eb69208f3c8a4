import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { encodeSlipFrame, slipEscapedLength, SlipDecoder, END, ESC } from '../../../src/modem/transparent/slip.ts';
import { concatBytes, fromHex, toHex } from '../../../src/util/bytes.ts';
import type { WireError } from '../../../src/errors.ts';

interface Vectors {
  encode: { name: string; payload: string; wire: string }[];
  decode: { name: string; maxFrameLen: number; wire: string; frames: string[]; errors: string[] }[];
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/slip.json', import.meta.url), 'utf8')) as Vectors;

/** Feed `wire` to a decoder in the given chunk sizes; collect everything. */
function decodeChunked(dec: SlipDecoder, wire: Uint8Array, cuts: number[]): { frames: Uint8Array[]; errors: WireError[] } {
  const frames: Uint8Array[] = [];
  const errors: WireError[] = [];
  let start = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < wire.length)].sort((a, b) => a - b).concat(wire.length)) {
    const r = dec.push(wire.subarray(start, cut));
    frames.push(...r.frames);
    errors.push(...r.errors);
    start = cut;
  }
  return { frames, errors };
}

describe('encodeSlipFrame (vectors)', () => {
  it.each(vectors.encode)('$name', ({ payload, wire }) => {
    const p = fromHex(payload);
    expect(toHex(encodeSlipFrame(p))).toBe(wire);
    expect(slipEscapedLength(p) + 2).toBe(wire.length / 2);
  });
});

describe('SlipDecoder (vectors)', () => {
  it.each(vectors.decode)('$name (whole)', ({ maxFrameLen, wire, frames, errors }) => {
    const r = new SlipDecoder({ maxFrameLen }).push(fromHex(wire));
    expect(r.frames.map(toHex)).toEqual(frames);
    expect(r.errors.map((e) => e.code)).toEqual(errors);
  });

  it.each(vectors.decode)('$name (every split point, and byte by byte)', ({ maxFrameLen, wire, frames, errors }) => {
    const bytes = fromHex(wire);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const r = decodeChunked(new SlipDecoder({ maxFrameLen }), bytes, [cut]);
      expect(r.frames.map(toHex)).toEqual(frames);
      expect(r.errors.map((e) => e.code)).toEqual(errors);
    }
    const all = Array.from({ length: bytes.length }, (_, i) => i);
    const r = decodeChunked(new SlipDecoder({ maxFrameLen }), bytes, all);
    expect(r.frames.map(toHex)).toEqual(frames);
    expect(r.errors.map((e) => e.code)).toEqual(errors);
  });
});

describe('SlipDecoder behaviour', () => {
  it('reports the number of noise bytes, once, even across chunks', () => {
    const dec = new SlipDecoder({ maxFrameLen: 8 });
    expect(dec.push(fromHex('0102')).errors).toEqual([]);
    expect(dec.pendingBytes).toBe(2);
    const r = dec.push(fromHex('03c0aac0'));
    expect(r.frames.map(toHex)).toEqual(['aa']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.code).toBe('ERR_FRAME_NOISE');
    expect(r.errors[0]!.detail).toEqual({ bytes: 3 });
    // Only before the first END ever: later garbage is a (SLIP-valid) frame.
    expect(dec.push(fromHex('bbc0')).errors).toEqual([]);
  });

  it('does not report empty frames', () => {
    const r = new SlipDecoder({ maxFrameLen: 8 }).push(fromHex('c0c0c0c0c0'));
    expect(r).toEqual({ frames: [], errors: [] });
  });

  it('reports an over-long frame once and recovers at the next END', () => {
    const dec = new SlipDecoder({ maxFrameLen: 3 });
    const r = dec.push(concatBytes(fromHex('c0'), new Uint8Array(100).fill(7), fromHex('c0010203c0')));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_TOO_LONG']);
    expect(r.errors[0]!.detail).toEqual({ maxFrameLen: 3 });
    expect(r.frames.map(toHex)).toEqual(['010203']);
  });

  it('bounds memory: holds at most maxFrameLen bytes of a partial frame', () => {
    const dec = new SlipDecoder({ maxFrameLen: 10 });
    dec.push(fromHex('c0'));
    for (let i = 0; i < 50; i++) dec.push(new Uint8Array(1000).fill(1));
    expect(dec.pendingBytes).toBeLessThanOrEqual(10);
  });

  it('returns frames that are not views of its buffer', () => {
    const dec = new SlipDecoder({ maxFrameLen: 8 });
    const [first] = dec.push(fromHex('c00102c0')).frames;
    dec.push(fromHex('0909c0'));
    expect(toHex(first!)).toBe('0102');
  });

  it('reset() forgets a partial frame and waits for the next END', () => {
    const dec = new SlipDecoder({ maxFrameLen: 8 });
    dec.push(fromHex('c00102'));
    dec.reset();
    const r = dec.push(fromHex('03c004c0'));
    expect(r.frames.map(toHex)).toEqual(['04']);
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_NOISE']);
  });

  it('rejects a nonsensical maxFrameLen', () => {
    expect(() => new SlipDecoder({ maxFrameLen: 0 })).toThrow(RangeError);
    expect(() => new SlipDecoder({ maxFrameLen: 1.5 })).toThrow(RangeError);
  });
});

describe('SLIP properties', () => {
  const payload = fc.uint8Array({ minLength: 1, maxLength: 64 });
  // Bias towards the special bytes so escaping is exercised on every run.
  const nasty = fc.array(fc.oneof(fc.constantFrom(END, ESC, 0xdc, 0xdd), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 64 })
    .map((a) => new Uint8Array(a));

  it('escaped payload never contains END; the frame has exactly two ENDs', () => {
    fc.assert(fc.property(fc.oneof(payload, nasty), (p) => {
      const w = encodeSlipFrame(p);
      expect(w[0]).toBe(END);
      expect(w[w.length - 1]).toBe(END);
      expect(w.subarray(1, -1).includes(END)).toBe(false);
    }));
  });

  it('round-trips any list of payloads through any chunking', () => {
    fc.assert(fc.property(
      fc.array(fc.oneof(payload, nasty), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (payloads, rawCuts) => {
        const wire = concatBytes(...payloads.map(encodeSlipFrame));
        const cuts = rawCuts.map((c) => (wire.length === 0 ? 0 : c % wire.length));
        const r = decodeChunked(new SlipDecoder({ maxFrameLen: 64 }), wire, cuts);
        expect(r.errors).toEqual([]);
        expect(r.frames.map(toHex)).toEqual(payloads.map(toHex));
      },
    ));
  });

  it('resynchronises: after arbitrary garbage, every frame sent after the next END arrives intact', () => {
    fc.assert(fc.property(
      fc.uint8Array({ maxLength: 200 }),
      fc.array(fc.oneof(payload, nasty), { minLength: 1, maxLength: 10 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (garbage, payloads, rawCuts) => {
        const wire = concatBytes(garbage, ...payloads.map(encodeSlipFrame));
        const cuts = rawCuts.map((c) => c % wire.length);
        const r = decodeChunked(new SlipDecoder({ maxFrameLen: 64 }), wire, cuts);
        // Garbage may produce extra frames or errors before ours, never lose or damage ours.
        const got = r.frames.map(toHex);
        expect(got.slice(got.length - payloads.length)).toEqual(payloads.map(toHex));
      },
    ));
  });
});
