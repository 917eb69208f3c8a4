import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { DEFLATE_WINDOW_BYTES, deflateRaw, inflateRawBounded } from '../../../src/codec/deflate.ts';
import { ConfigError, WireError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';

function wireCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof WireError && e.layer === 'codec') return e.code;
    throw e;
  }
  return 'no error';
}

const DICT = utf8.encode(
  '{"type":"m.room.message","content":{"msgtype":"m.text","body":"' +
    '"},"sender":"@","room_id":"!","event_id":"$","origin_server_ts":1,"unsigned":{"age":',
);
const MSG = utf8.encode('{"type":"m.room.message","content":{"msgtype":"m.text","body":"Hello World"},"sender":"@alice:localhost"}');

describe('deflateRaw / inflateRawBounded', () => {
  it('round-trips, and is raw RFC 1951 (zlib inflateRaw reads it, and we read zlib deflateRaw)', () => {
    const z = deflateRaw(MSG);
    expect(inflateRawBounded(z, { maxOutputBytes: MSG.length })).toEqual(MSG);
    expect(new Uint8Array(inflateRawSync(z))).toEqual(MSG);
    expect(inflateRawBounded(new Uint8Array(deflateRawSync(MSG)), { maxOutputBytes: 1000 })).toEqual(MSG);
  });

  it('the preset dictionary works on both sides in the installed fflate', () => {
    const plain = deflateRaw(MSG);
    const withDict = deflateRaw(MSG, { dictionary: DICT });
    expect(withDict.length).toBeLessThan(plain.length);
    expect(inflateRawBounded(withDict, { dictionary: DICT, maxOutputBytes: 1000 })).toEqual(MSG);
    // zlib agrees on what a raw preset dictionary means.
    expect(new Uint8Array(inflateRawSync(withDict, { dictionary: DICT }))).toEqual(MSG);
    expect(inflateRawBounded(new Uint8Array(deflateRawSync(MSG, { dictionary: DICT })), { dictionary: DICT, maxOutputBytes: 1000 })).toEqual(MSG);
    // Without it (or with another one) the stream does not decode to the message.
    let other: Uint8Array | string;
    try {
      other = inflateRawBounded(withDict, { maxOutputBytes: 1000 });
    } catch (e) {
      other = (e as WireError).code;
    }
    expect(other).not.toEqual(MSG);
  });

  it('the output bound is exact', () => {
    const z = deflateRaw(MSG);
    expect(inflateRawBounded(z, { maxOutputBytes: MSG.length })).toEqual(MSG);
    expect(wireCode(() => inflateRawBounded(z, { maxOutputBytes: MSG.length - 1 }))).toBe('ERR_INFLATE_LIMIT');
    expect(inflateRawBounded(deflateRaw(new Uint8Array(0)), { maxOutputBytes: 0 })).toEqual(new Uint8Array(0));
  });

  it('a bomb (64 MiB of zeros in ~64 KiB) is stopped at the bound', () => {
    const bomb = deflateRaw(new Uint8Array(64 * 1024 * 1024), { level: 9 });
    expect(bomb.length).toBeLessThan(128 * 1024);
    for (const max of [0, 1, 1000, 65_536, 1_000_000]) {
      expect(wireCode(() => inflateRawBounded(bomb, { maxOutputBytes: max })), String(max)).toBe('ERR_INFLATE_LIMIT');
    }
  });

  it('corrupt, truncated and empty input is ERR_INFLATE', () => {
    expect(wireCode(() => inflateRawBounded(new Uint8Array(0), { maxOutputBytes: 10 }))).toBe('ERR_INFLATE');
    expect(wireCode(() => inflateRawBounded(Uint8Array.of(0xff, 0xff, 0xff), { maxOutputBytes: 10 }))).toBe('ERR_INFLATE'); // block type 3
    const z = deflateRaw(MSG);
    for (let n = 0; n < z.length; n++) {
      expect(wireCode(() => inflateRawBounded(z.subarray(0, n), { maxOutputBytes: 1000 })), `prefix ${n}`).toBe('ERR_INFLATE');
    }
  });

  it('rejects bad options with a ConfigError', () => {
    expect(() => deflateRaw(MSG, { dictionary: new Uint8Array(DEFLATE_WINDOW_BYTES + 1) })).toThrow(ConfigError);
    expect(() => inflateRawBounded(MSG, { maxOutputBytes: -1 })).toThrow(ConfigError);
    expect(() => inflateRawBounded(MSG, { maxOutputBytes: 1.5 })).toThrow(ConfigError);
    expect(() => deflateRaw(MSG, { level: 10 as 9 })).toThrow(ConfigError);
  });
});

describe('properties', () => {
  /** Text-like data that compresses, long enough to be fed to fflate in several steps. */
  const compressible = fc
    .array(fc.constantFrom('m.room.message', '"body":', 'Hello', ' ', '@alice:localhost', '\u00e9', '{', '}', 'x'), { maxLength: 3000 })
    .map((parts) => utf8.encode(parts.join('')));
  const dictionary = fc.oneof(fc.constant(undefined), fc.uint8Array({ minLength: 1, maxLength: 2048 }), fc.constant(DICT));

  it('round-trip with and without a dictionary, any level, any size', () => {
    fc.assert(
      fc.property(fc.oneof(compressible, fc.uint8Array({ maxLength: 5000 })), dictionary, fc.integer({ min: 0, max: 9 }), (data, dict, level) => {
        const lv = level as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
        const z = deflateRaw(data, dict ? { dictionary: dict, level: lv } : { level: lv });
        const back = inflateRawBounded(z, dict ? { dictionary: dict, maxOutputBytes: data.length } : { maxOutputBytes: data.length });
        expect(back).toEqual(data);
        // An independent inflater (zlib) agrees.
        expect(new Uint8Array(inflateRawSync(z, dict ? { dictionary: dict } : {}))).toEqual(data);
        if (data.length > 0) {
          expect(wireCode(() => inflateRawBounded(z, dict ? { dictionary: dict, maxOutputBytes: data.length - 1 } : { maxOutputBytes: data.length - 1 }))).toBe('ERR_INFLATE_LIMIT');
        }
      }),
      { numRuns: 200 },
    );
  });

  it('random bytes and bit flips: output or a codec WireError, never more than the bound', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 4096 }), (bytes, max) => {
        try {
          const out = inflateRawBounded(bytes, { maxOutputBytes: max });
          expect(out.length).toBeLessThanOrEqual(max);
        } catch (e) {
          if (!(e instanceof WireError) || !['ERR_INFLATE', 'ERR_INFLATE_LIMIT'].includes(e.code)) throw e;
        }
      }),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(compressible, fc.nat(), fc.nat(7), (data, at, bit) => {
        const z = deflateRaw(data).slice();
        const i = at % z.length;
        z[i] = (z[i] as number) ^ (1 << bit);
        try {
          inflateRawBounded(z, { maxOutputBytes: data.length + 100 });
        } catch (e) {
          if (!(e instanceof WireError) || !['ERR_INFLATE', 'ERR_INFLATE_LIMIT'].includes(e.code)) throw e;
        }
      }),
      { numRuns: 1000 },
    );
  });
});
