import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { WireError } from '../../../src/errors.ts';
import { toHex } from '../../../src/util/bytes.ts';
import { encodeTrickleCbor, decodeTrickleCbor, eventIdToBytes } from '../../../src/codec/trickle-cbor-v1.ts';
import { encodeJsonAsCbor } from '../../../src/codec/cbor.ts';
import { VALUES_V1 } from '../../../src/codec/values-v1.ts';

const EVENT = '$YUwRidLecu_HyqLRz9k5RGNsC0bYz5wCHaD8nH9PvwQ';

describe('trickle-cbor-v1', () => {
  it('encodes a text message body with value enums and MSC3079 keys', () => {
    const b = encodeTrickleCbor({ msgtype: 'm.text', body: 'Hello World' });
    // a2, 18 1c (msgtype), e1 (m.text), 18 1b (body), 6b "Hello World"
    expect(toHex(b)).toBe('a2181ce1181b6b48656c6c6f20576f726c64');
    expect(decodeTrickleCbor(b)).toEqual({ msgtype: 'm.text', body: 'Hello World' });
  });

  it('keeps −0 apart from 0 (JSON "-0" parses to −0): a float, not the integer 0', () => {
    const d = decodeTrickleCbor(encodeTrickleCbor([-0, 0])) as number[];
    expect(Object.is(d[0], -0)).toBe(true);
    expect(Object.is(d[1], 0)).toBe(true);
  });

  it('carries an event id as its 32 raw bytes', () => {
    const b = encodeTrickleCbor({ event_id: EVENT });
    expect(b.length).toBe(1 + 1 + 2 + 32);
    expect(decodeTrickleCbor(b)).toEqual({ event_id: EVENT });
  });

  it('keeps event-id-like strings that do not round-trip as text', () => {
    const notCanonical = '$YUwRidLecu_HyqLRz9k5RGNsC0bYz5wCHaD8nH9PvwR'; // last char carries non-zero padding bits
    expect(eventIdToBytes(notCanonical)).toBeUndefined();
    expect(decodeTrickleCbor(encodeTrickleCbor({ e: notCanonical }))).toEqual({ e: notCanonical });
  });

  it('replaces known strings with handles and reports literals in order', () => {
    const seen: string[] = [];
    const b = encodeTrickleCbor({ room_id: '!a:x', sender: '@b:x', body: 'hi' }, {
      handleOf: (s) => (s === '!a:x' ? 5 : s === '@b:x' ? 300 : undefined),
      onLiteral: (s) => seen.push(s),
    });
    expect(seen).toEqual(['hi']);
    const back = decodeTrickleCbor(b, { resolveHandle: (n) => (n === 5 ? '!a:x' : n === 300 ? '@b:x' : undefined) });
    expect(back).toEqual({ room_id: '!a:x', sender: '@b:x', body: 'hi' });
    expect(() => decodeTrickleCbor(b, { resolveHandle: () => undefined })).toThrowError(expect.objectContaining({ code: 'ERR_HANDLE_UNKNOWN' }));
  });

  it('uses two-byte enums for the tail of the table, as keys and as values', () => {
    const far = VALUES_V1[VALUES_V1.length - 1]!;
    const v = { [far]: far, 'm.relates_to': { rel_type: 'm.annotation', key: 'x' } };
    expect(decodeTrickleCbor(encodeTrickleCbor(v))).toEqual(v);
  });

  it('is smaller than plain MSC3079 CBOR on a typical event', () => {
    const ev = { type: 'm.room.message', content: { msgtype: 'm.text', body: 'Hello World' }, event_id: EVENT, sender: '@alice:localhost', origin_server_ts: 1795699017172 };
    expect(encodeTrickleCbor(ev).length).toBeLessThan(encodeJsonAsCbor(ev).length - 20);
  });

  const json = fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);
  it('round-trips any JSON value to an equal value', () => {
    fc.assert(fc.property(json, (v) => { expect(decodeTrickleCbor(encodeTrickleCbor(v))).toEqual(v); }), { numRuns: 2000 });
  });

  it('round-trips JSON built from the enum table and event ids', () => {
    const word = fc.constantFrom(...VALUES_V1, EVENT, 'plain', '~1', '');
    const v = fc.dictionary(word, fc.oneof(word, fc.integer(), fc.array(word)));
    fc.assert(fc.property(v, (x) => { expect(decodeTrickleCbor(encodeTrickleCbor(x))).toEqual(x); }));
  });

  it('rejects random bytes, flips and truncations with a WireError, never another exception', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
      try { decodeTrickleCbor(b); } catch (e) { expect(e).toBeInstanceOf(WireError); }
    }), { numRuns: 5000 });
    const good = encodeTrickleCbor({ type: 'm.room.message', content: { msgtype: 'm.text', body: 'Hello World' }, event_id: EVENT });
    for (let i = 0; i < good.length; i++) {
      expect(() => decodeTrickleCbor(good.subarray(0, i))).toThrow(WireError);
      for (let bit = 0; bit < 8; bit++) {
        const f = good.slice(); f[i] = f[i]! ^ (1 << bit);
        try { decodeTrickleCbor(f); } catch (e) { expect(e).toBeInstanceOf(WireError); }
      }
    }
  });

  it('bounds depth, items and string length', () => {
    const deep = new Uint8Array(200).fill(0x81);
    expect(() => decodeTrickleCbor(deep)).toThrowError(expect.objectContaining({ code: 'ERR_CBOR_LIMIT' }));
    expect(() => decodeTrickleCbor(new Uint8Array([0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]))).toThrowError(expect.objectContaining({ code: 'ERR_CBOR_DECODE' }));
    expect(() => decodeTrickleCbor(encodeTrickleCbor('x'.repeat(100)), {}, { maxStringBytes: 10 })).toThrowError(expect.objectContaining({ code: 'ERR_CBOR_LIMIT' }));
    expect(() => decodeTrickleCbor(new Uint8Array([0xc1, 0x00]))).toThrowError(expect.objectContaining({ code: 'ERR_CBOR_TYPE' }));
  });
});
