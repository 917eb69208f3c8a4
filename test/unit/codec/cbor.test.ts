import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Decoder } from 'cbor-x';
import {
  CBOR_DECODE_DEFAULTS,
  cborDiagnostic,
  decodeCborAsJson,
  encodeJsonAsCbor,
} from '../../../src/codec/cbor.ts';
import { CBOR_KEYS_V1 } from '../../../src/codec/keymap-v1.ts';
import { ConfigError, TrickleError, WireError } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import { loadLocalVectors, loadMsc3079Vectors } from './vectors.ts';

const shared = loadMsc3079Vectors();

/** Run fn; it must return normally or throw a codec WireError whose code is in `codes`. */
function valueOrWireError(fn: () => unknown, codes: readonly string[]): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof WireError) || e.layer !== 'codec' || !codes.includes(e.code)) throw e;
  }
}

function wireCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof WireError && e.layer === 'codec') return e.code;
    throw e;
  }
  return 'no error';
}

/** JSON semantics of a value: what JSON.stringify + JSON.parse make of it (e.g. −0 → 0). */
const viaJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

const CBOR_CODES = ['ERR_CBOR_DECODE', 'ERR_CBOR_LIMIT', 'ERR_CBOR_TYPE'] as const;

describe('MSC3079 shared vectors (cbor-v1.json)', () => {
  it('keeps its provenance', () => {
    expect(shared.source).toMatch(/MSC3079/);
    expect(shared.source).toMatch(/matrix-org\/lb/);
    expect(shared.vectors.length).toBeGreaterThan(0);
  });

  for (const v of shared.vectors) {
    it(`encodes byte-exact: ${v.title}`, () => {
      expect(toHex(encodeJsonAsCbor(v.json))).toBe(v.cbor_hex);
    });
    it(`decodes: ${v.title}`, () => {
      expect(decodeCborAsJson(fromHex(v.cbor_hex))).toEqual(v.json);
    });
  }

  for (const v of shared.decode_only) {
    it(`decode only: ${v.title}`, () => {
      const bytes = fromHex(v.cbor_hex);
      expect(decodeCborAsJson(bytes)).toEqual(v.json);
      // The vector's own diagnostic form: same items, our spacing.
      expect(cborDiagnostic(bytes)).toBe(v.cbor_diag);
    });
  }
});

describe('encodeJsonAsCbor', () => {
  it('maps keys at every depth, never values', () => {
    const bytes = encodeJsonAsCbor({ content: { body: 'type', msgtype: 'content' }, '8': 'sender' });
    expect(cborDiagnostic(bytes)).toBe('{3: {27: "type", 28: "content"}, "8": "sender"}');
  });

  it("keymap 'none' keeps every key as text, still in canonical order", () => {
    const bytes = encodeJsonAsCbor({ type: 'm', content: {} }, { keymap: 'none' });
    expect(cborDiagnostic(bytes)).toBe('{"type": "m", "content": {}}');
    expect(decodeCborAsJson(bytes, { keymap: 'none' })).toEqual({ type: 'm', content: {} });
  });

  it('orders keys as RFC 7049 §3.9: shorter encoded key first, then bytewise', () => {
    // 1 byte: 0x05 (room_id) < 0x60 (""); 2 bytes: 0x18 0x1b (body) < 0x61 0x62 ("b");
    // 3 bytes: 0x62 0x61 0x61 ("aa") < 0x62 0x61 0x62 ("ab") < 0x62 0xc3 0xa9 ("é"); 4 bytes: "zzz".
    const bytes = encodeJsonAsCbor({ ab: 0, aa: 0, b: 0, '': 0, room_id: 0, body: 0, é: 0, zzz: 0 });
    expect(cborDiagnostic(bytes)).toBe('{5: 0, "": 0, 27: 0, "b": 0, "aa": 0, "ab": 0, "é": 0, "zzz": 0}');
  });

  it('is independent of key insertion order', () => {
    fc.assert(
      fc.property(jsonObjectWithTableKeys(), (obj) => {
        const reversed = Object.fromEntries(Object.entries(obj).reverse());
        expect(toHex(encodeJsonAsCbor(reversed))).toBe(toHex(encodeJsonAsCbor(obj)));
      }),
    );
  });

  const ints: [number, string][] = [
    [0, '00'], [23, '17'], [24, '1818'], [255, '18ff'], [256, '190100'], [65535, '19ffff'],
    [65536, '1a00010000'], [2 ** 32 - 1, '1affffffff'], [2 ** 32, '1b0000000100000000'],
    [1700000000000, '1b0000018bcfe56800'], [Number.MAX_SAFE_INTEGER, '1b001fffffffffffff'],
    [-1, '20'], [-24, '37'], [-25, '3818'], [-256, '38ff'], [-257, '390100'],
    [-(2 ** 31), '3a7fffffff'], [-(2 ** 32), '3affffffff'], [-(2 ** 32) - 1, '3b0000000100000000'],
    [-Number.MAX_SAFE_INTEGER, '3b001ffffffffffffe'],
  ];
  for (const [n, hex] of ints) {
    it(`writes the integer ${n} in its shortest form`, () => {
      expect(toHex(encodeJsonAsCbor(n))).toBe(hex);
      expect(decodeCborAsJson(fromHex(hex))).toBe(n);
    });
  }

  it('writes non-integers and unsafe integers as float64, −0 as 0', () => {
    expect(toHex(encodeJsonAsCbor(1.5))).toBe('fb3ff8000000000000');
    expect(toHex(encodeJsonAsCbor(0.1))).toBe('fb3fb999999999999a');
    expect(toHex(encodeJsonAsCbor(2 ** 53))).toBe('fb4340000000000000');
    expect(toHex(encodeJsonAsCbor(-1e300))).toBe('fbfe37e43c8800759c');
    expect(toHex(encodeJsonAsCbor(-0))).toBe('00');
  });

  it('writes strings, arrays and simple values in preferred form', () => {
    expect(toHex(encodeJsonAsCbor(''))).toBe('60');
    expect(toHex(encodeJsonAsCbor('a'.repeat(23)))).toBe(`77${'61'.repeat(23)}`);
    expect(toHex(encodeJsonAsCbor('a'.repeat(24)))).toBe(`7818${'61'.repeat(24)}`);
    expect(toHex(encodeJsonAsCbor('ü'))).toBe('62c3bc');
    expect(toHex(encodeJsonAsCbor([]))).toBe('80');
    expect(toHex(encodeJsonAsCbor(new Array<number>(24).fill(0)))).toBe(`9818${'00'.repeat(24)}`);
    expect(toHex(encodeJsonAsCbor([true, false, null]))).toBe('83f5f4f6');
    expect(toHex(encodeJsonAsCbor({}))).toBe('a0');
    const big: Record<string, number> = {};
    for (let i = 0; i < 24; i++) big[`k${String(i).padStart(2, '0')}`] = i;
    expect(toHex(encodeJsonAsCbor(big)).slice(0, 4)).toBe('b818');
  });

  it('refuses values JSON cannot hold', () => {
    for (const bad of [undefined, () => 1, NaN, Infinity, -Infinity, 10n, Symbol('x'), new Date(0), new Map(), new Uint8Array(1), { a: undefined }, [undefined], '\ud800', { '\udc00': 1 }]) {
      let err: unknown;
      try {
        encodeJsonAsCbor(bad);
      } catch (e) {
        err = e;
      }
      expect(err, String(typeof bad)).toBeInstanceOf(TrickleError);
      expect((err as TrickleError).code).toBe('ERR_CBOR_TYPE');
    }
  });

  it('accepts null-prototype objects like plain ones', () => {
    const o = Object.create(null) as Record<string, unknown>;
    o['body'] = 'x';
    expect(toHex(encodeJsonAsCbor(o))).toBe('a1181b6178');
  });

  it('bounds nesting on encode (and so refuses cycles)', () => {
    let deep: unknown = 0;
    for (let i = 0; i < 65; i++) deep = [deep];
    expect(() => encodeJsonAsCbor(deep)).toThrow(expect.objectContaining({ code: 'ERR_CBOR_LIMIT' }));
    expect(() => encodeJsonAsCbor(deep, { maxDepth: 65 })).not.toThrow();
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(() => encodeJsonAsCbor(cyclic)).toThrow(expect.objectContaining({ code: 'ERR_CBOR_LIMIT' }));
  });

  it('returns an owned plain Uint8Array', () => {
    const a = encodeJsonAsCbor({ body: 'one' });
    const b = encodeJsonAsCbor({ body: 'two' });
    expect(Object.getPrototypeOf(a)).toBe(Uint8Array.prototype);
    expect(toHex(a)).toBe('a1181b636f6e65');
    expect(toHex(b)).toBe('a1181b6374776f');
  });

  it('rejects bad options with a ConfigError', () => {
    expect(() => encodeJsonAsCbor({}, { keymap: 'v2' as 'v1' })).toThrow(ConfigError);
    expect(() => encodeJsonAsCbor({}, { maxDepth: 100_000 })).toThrow(ConfigError);
  });
});

describe('decodeCborAsJson', () => {
  const profile = loadLocalVectors<{
    source: string;
    reject: { title: string; cbor_hex: string; code: string }[];
    accept: { title: string; cbor_hex: string; json?: unknown; json_text?: string }[];
  }>('cbor-json-profile.json');

  for (const v of profile.reject) {
    it(`rejects ${v.title} with ${v.code}`, () => {
      expect(wireCode(() => decodeCborAsJson(fromHex(v.cbor_hex)))).toBe(v.code);
    });
  }

  for (const v of profile.accept) {
    it(`accepts ${v.title}`, () => {
      const got = decodeCborAsJson(fromHex(v.cbor_hex));
      if (v.json_text !== undefined) expect(JSON.stringify(got)).toBe(v.json_text);
      else expect(got).toEqual(v.json);
    });
  }

  it('makes "__proto__" an own key and leaves the prototype alone', () => {
    const got = decodeCborAsJson(fromHex('a1695f5f70726f746f5f5fa16178f5')) as Record<string, unknown>;
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    expect(Object.keys(got)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });

  it('the text key wins over its integer twin whichever comes first', () => {
    expect(decodeCborAsJson(fromHex('a201622462686576656e745f6964622461'))).toEqual({ event_id: '$a' });
    expect(decodeCborAsJson(fromHex('a2686576656e745f696462246101622462'))).toEqual({ event_id: '$a' });
  });

  it("keymap 'none' refuses integer keys and leaves text keys alone", () => {
    expect(wireCode(() => decodeCborAsJson(fromHex('a10100'), { keymap: 'none' }))).toBe('ERR_CBOR_TYPE');
    expect(decodeCborAsJson(fromHex('a164626f647900'), { keymap: 'none' })).toEqual({ body: 0 });
  });

  it('every Appendix A integer decodes back to its name', () => {
    for (const [name, n] of CBOR_KEYS_V1) {
      const bytes = encodeJsonAsCbor({ [name]: n });
      // map header + key + value, the integer n written twice: 1 byte each below 24, else 2.
      expect(bytes.length).toBe(n < 24 ? 3 : 5);
      expect(decodeCborAsJson(bytes)).toEqual({ [name]: n });
    }
  });

  it('accepts a Uint8Array view at an offset', () => {
    const whole = fromHex('ffff' + 'a1181b6178' + 'ffff');
    expect(decodeCborAsJson(whole.subarray(2, 7))).toEqual({ body: 'x' });
  });

  describe('bounds', () => {
    it('maxBytes', () => {
      const bytes = encodeJsonAsCbor('x'.repeat(100));
      expect(wireCode(() => decodeCborAsJson(bytes, { maxBytes: bytes.length - 1 }))).toBe('ERR_CBOR_LIMIT');
      expect(decodeCborAsJson(bytes, { maxBytes: bytes.length })).toBe('x'.repeat(100));
    });

    it('depth bomb: 100 000 nested arrays (definite and indefinite), and nested maps', () => {
      const n = 100_000;
      const definite = new Uint8Array(n + 1).fill(0x81);
      definite[n] = 0x00;
      expect(wireCode(() => decodeCborAsJson(definite))).toBe('ERR_CBOR_LIMIT');
      expect(wireCode(() => decodeCborAsJson(definite, { maxBytes: 10 * n }))).toBe('ERR_CBOR_LIMIT');
      const indefinite = new Uint8Array(2 * n);
      indefinite.fill(0x9f, 0, n);
      indefinite.fill(0xff, n);
      expect(wireCode(() => decodeCborAsJson(indefinite))).toBe('ERR_CBOR_LIMIT');
      const maps = fromHex('a16161'.repeat(1000) + '00');
      expect(wireCode(() => decodeCborAsJson(maps))).toBe('ERR_CBOR_LIMIT');
      expect(wireCode(() => cborDiagnostic(definite))).toBe('ERR_CBOR_LIMIT');
    });

    it('depth exactly at the bound is fine, one more is not', () => {
      const at = (d: number) => fromHex('81'.repeat(d) + '00');
      expect(decodeCborAsJson(at(64))).toBeDefined();
      expect(wireCode(() => decodeCborAsJson(at(65)))).toBe('ERR_CBOR_LIMIT');
      expect(decodeCborAsJson(at(3), { maxDepth: 3 })).toEqual([[[0]]]);
      expect(wireCode(() => decodeCborAsJson(at(4), { maxDepth: 3 }))).toBe('ERR_CBOR_LIMIT');
      expect(decodeCborAsJson(fromHex('00'), { maxDepth: 0 })).toBe(0);
      expect(wireCode(() => decodeCborAsJson(fromHex('80'), { maxDepth: 0 }))).toBe('ERR_CBOR_LIMIT');
    });

    it('length bombs: declared sizes far beyond the input never allocate', () => {
      for (const hex of ['7bffffffffffffffff', '9bffffffffffffffff', 'bbffffffffffffffff', '7a7fffffff', '9a7fffffff']) {
        expect(wireCode(() => decodeCborAsJson(fromHex(hex))), hex).toBe('ERR_CBOR_LIMIT');
      }
      // Within maxItems/maxStringBytes but longer than the input: truncated.
      expect(wireCode(() => decodeCborAsJson(fromHex('9903e8')))).toBe('ERR_CBOR_DECODE');
      expect(wireCode(() => decodeCborAsJson(fromHex('7903e8')))).toBe('ERR_CBOR_DECODE');
    });

    it('maxStringBytes applies to values and keys', () => {
      const s = encodeJsonAsCbor({ ['k'.repeat(40)]: 'v'.repeat(40) });
      expect(decodeCborAsJson(s, { maxStringBytes: 40 })).toBeDefined();
      expect(wireCode(() => decodeCborAsJson(s, { maxStringBytes: 39 }))).toBe('ERR_CBOR_LIMIT');
      const big = encodeJsonAsCbor('x'.repeat(CBOR_DECODE_DEFAULTS.maxStringBytes + 1));
      expect(wireCode(() => decodeCborAsJson(big))).toBe('ERR_CBOR_LIMIT');
    });

    it('maxItems counts keys and elements', () => {
      const arr = encodeJsonAsCbor([1, 2, 3]); // 4 items
      expect(decodeCborAsJson(arr, { maxItems: 4 })).toEqual([1, 2, 3]);
      expect(wireCode(() => decodeCborAsJson(arr, { maxItems: 3 }))).toBe('ERR_CBOR_LIMIT');
      const map = encodeJsonAsCbor({ a: 1, b: 2 }); // 5 items
      expect(decodeCborAsJson(map, { maxItems: 5 })).toEqual({ a: 1, b: 2 });
      expect(wireCode(() => decodeCborAsJson(map, { maxItems: 4 }))).toBe('ERR_CBOR_LIMIT');
      const many = new Uint8Array(200_005);
      many.set([0x9a, 0x00, 0x03, 0x0d, 0x40]); // array of 200 000 zeros
      expect(wireCode(() => decodeCborAsJson(many))).toBe('ERR_CBOR_LIMIT');
      expect(decodeCborAsJson(many, { maxItems: 200_001 })).toHaveLength(200_000);
      const indefinite = new Uint8Array(200_002).fill(0);
      indefinite[0] = 0x9f;
      indefinite[200_001] = 0xff;
      expect(wireCode(() => decodeCborAsJson(indefinite))).toBe('ERR_CBOR_LIMIT');
    });

    it('rejects bad limits with a ConfigError', () => {
      expect(() => decodeCborAsJson(fromHex('00'), { maxDepth: 513 })).toThrow(ConfigError);
      expect(() => decodeCborAsJson(fromHex('00'), { maxItems: -1 })).toThrow(ConfigError);
      expect(() => decodeCborAsJson(fromHex('00'), { maxBytes: 1.5 })).toThrow(ConfigError);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const TABLE_KEYS = CBOR_KEYS_V1.map(([k]) => k);

/** JSON objects whose keys are mostly Appendix A names, with numeric-looking and odd keys mixed in. */
function jsonObjectWithTableKeys(): fc.Arbitrary<Record<string, unknown>> {
  const key = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...TABLE_KEYS) },
    { weight: 1, arbitrary: fc.constantFrom('8', '1', '104', '', '__proto__', 'constructor', 'm.relates_to') },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }) },
  );
  const { obj } = fc.letrec<{ value: unknown; obj: Record<string, unknown> }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constant(null),
      fc.boolean(),
      fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
      fc.maxSafeInteger(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.string({ unit: 'grapheme', maxLength: 20 }),
      fc.array(tie('value'), { maxLength: 4 }),
      tie('obj'),
    ),
    obj: fc.dictionary(key, tie('value'), { maxKeys: 6 }).map((d) => viaJson(d) as Record<string, unknown>),
  }));
  return obj;
}

describe('properties', () => {
  it('JSON values round-trip to an equal value (keymap v1 and none)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ stringUnit: 'grapheme', maxDepth: 8 }), (v) => {
        const expected = viaJson(v);
        expect(decodeCborAsJson(encodeJsonAsCbor(v))).toEqual(expected);
        expect(decodeCborAsJson(encodeJsonAsCbor(v, { keymap: 'none' }), { keymap: 'none' })).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('objects keyed by Appendix A names round-trip, and mapping only ever shrinks the encoding', () => {
    fc.assert(
      fc.property(jsonObjectWithTableKeys(), (obj) => {
        const mapped = encodeJsonAsCbor(obj);
        expect(decodeCborAsJson(mapped)).toEqual(obj);
        expect(mapped.length).toBeLessThanOrEqual(encodeJsonAsCbor(obj, { keymap: 'none' }).length);
        // Re-encoding the decoded value gives the same bytes (the encoding is canonical).
        expect(toHex(encodeJsonAsCbor(decodeCborAsJson(mapped)))).toBe(toHex(mapped));
      }),
      { numRuns: 300 },
    );
  });

  it('plain cbor-x (no scanner, no keymap, default options) reads what we emit as the same JSON', () => {
    const plain = new Decoder({ mapsAsObjects: false, useRecords: false });
    fc.assert(
      fc.property(fc.jsonValue({ stringUnit: 'grapheme', maxDepth: 6 }), (v) => {
        const bytes = encodeJsonAsCbor(v, { keymap: 'none' });
        const raw = plain.decode(bytes) as unknown;
        const toPlain = (x: unknown): unknown =>
          x instanceof Map ? Object.fromEntries([...x].map(([k, y]) => [k, toPlain(y)])) :
          Array.isArray(x) ? x.map(toPlain) : typeof x === 'bigint' ? Number(x) : x;
        expect(viaJson(toPlain(raw))).toEqual(viaJson(v));
      }),
      { numRuns: 200 },
    );
  });

  it('random bytes never crash the decoder: a value or a codec WireError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        valueOrWireError(() => decodeCborAsJson(bytes), CBOR_CODES);
        valueOrWireError(() => decodeCborAsJson(bytes, { keymap: 'none', maxDepth: 4, maxItems: 16 }), CBOR_CODES);
        valueOrWireError(() => cborDiagnostic(bytes), CBOR_CODES);
      }),
      { numRuns: 5000 },
    );
  });

  it('random bytes biased towards CBOR structure never crash the decoder', () => {
    const structural = fc.constantFrom(0x9f, 0xbf, 0xff, 0x7f, 0x5f, 0xa1, 0x81, 0x18, 0x19, 0x1b, 0x3b, 0xf9, 0xfa, 0xfb, 0xc0, 0xd9, 0xf7, 0x00, 0x61, 0x62);
    fc.assert(
      fc.property(fc.array(fc.oneof(structural, fc.integer({ min: 0, max: 255 })), { maxLength: 48 }), (arr) => {
        const bytes = Uint8Array.from(arr);
        valueOrWireError(() => decodeCborAsJson(bytes), CBOR_CODES);
        valueOrWireError(() => cborDiagnostic(bytes), CBOR_CODES);
      }),
      { numRuns: 5000 },
    );
  });

  it('single-bit flips and truncations of valid encodings: a value or a codec WireError', () => {
    fc.assert(
      fc.property(jsonObjectWithTableKeys(), fc.nat(), fc.nat(7), (obj, at, bit) => {
        const good = encodeJsonAsCbor(obj);
        const flipped = good.slice();
        const i = at % flipped.length;
        flipped[i] = (flipped[i] as number) ^ (1 << bit);
        valueOrWireError(() => decodeCborAsJson(flipped), CBOR_CODES);
        valueOrWireError(() => cborDiagnostic(flipped), CBOR_CODES);
        // Every strict prefix of one data item is truncated.
        const cut = good.subarray(0, at % good.length);
        expect(wireCode(() => decodeCborAsJson(cut))).toBe('ERR_CBOR_DECODE');
        // And so is the item with one more byte.
        expect(wireCode(() => decodeCborAsJson(Uint8Array.from([...good, 0])))).toBe('ERR_CBOR_DECODE');
      }),
      { numRuns: 1000 },
    );
  });

  it('cborDiagnostic of plain JSON (text keys) is itself JSON for the same value', () => {
    // RFC 8949 §8 notation of text keys, strings, numbers, true/false/null, arrays and maps is
    // a superset of JSON syntax, with floats marked by '.0' or an exponent.
    fc.assert(
      fc.property(fc.jsonValue({ stringUnit: 'grapheme', maxDepth: 5 }), (v) => {
        const diag = cborDiagnostic(encodeJsonAsCbor(v, { keymap: 'none' }));
        expect(viaJson(JSON.parse(diag))).toEqual(viaJson(v));
      }),
      { numRuns: 300 },
    );
  });
});

describe('cborDiagnostic', () => {
  const rfc = loadLocalVectors<{ source: string; vectors: { cbor_hex: string; diag: string }[] }>('cbor-diagnostic.json');
  it('keeps the provenance of its vectors', () => {
    expect(rfc.source).toMatch(/RFC 8949 Appendix A/);
  });
  for (const v of rfc.vectors) {
    it(`${v.cbor_hex} → ${v.diag}`, () => {
      expect(cborDiagnostic(fromHex(v.cbor_hex))).toBe(v.diag);
    });
  }

  it('shows empty indefinite strings and rejects mixed chunks', () => {
    expect(cborDiagnostic(fromHex('5fff'))).toBe("''_");
    expect(cborDiagnostic(fromHex('7fff'))).toBe('""_');
    expect(wireCode(() => cborDiagnostic(fromHex('5f6161ff')))).toBe('ERR_CBOR_DECODE');
    expect(wireCode(() => cborDiagnostic(fromHex('5f5f4100ffff')))).toBe('ERR_CBOR_DECODE');
  });

  it('rejects trailing bytes and malformed input like the decoder', () => {
    expect(wireCode(() => cborDiagnostic(fromHex('0000')))).toBe('ERR_CBOR_DECODE');
    expect(wireCode(() => cborDiagnostic(fromHex('')))).toBe('ERR_CBOR_DECODE');
    expect(wireCode(() => cborDiagnostic(fromHex('f818')))).toBe('ERR_CBOR_DECODE');
  });
});
