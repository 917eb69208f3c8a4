import { describe, expect, it } from 'vitest';
import { CBOR_KEYMAP_V1_VERSION, CBOR_KEYS_V1, cborIntToKeyV1, cborKeyToIntV1 } from '../../../src/codec/keymap-v1.ts';

describe('MSC3079 Appendix A (v1)', () => {
  it('is version 1 with the integers 1..104 in order, each name once', () => {
    expect(CBOR_KEYMAP_V1_VERSION).toBe(1);
    expect(CBOR_KEYS_V1.map(([, n]) => n)).toEqual(Array.from({ length: 104 }, (_, i) => i + 1));
    expect(new Set(CBOR_KEYS_V1.map(([k]) => k)).size).toBe(104);
  });

  it('spot checks against the MSC (first, last, the vectors, the odd ones)', () => {
    const rows: [string, number][] = [
      ['event_id', 1], ['type', 2], ['content', 3], ['room_id', 5], ['sender', 6], ['origin_server_ts', 8],
      ['unsigned', 9], ['body', 27], ['msgtype', 28], ['invite_3pid', 59], ['initial_device_display_name', 72],
      ['m.fully_read', 92], ['errcode', 102], ['error', 103], ['room_alias', 104],
    ];
    for (const [k, n] of rows) {
      expect(cborKeyToIntV1(k), k).toBe(n);
      expect(cborIntToKeyV1(n), String(n)).toBe(k);
    }
  });

  it("does not include matrix-org/lb's federation-only extension (105..151)", () => {
    expect(cborIntToKeyV1(105)).toBeUndefined();
    expect(cborKeyToIntV1('server')).toBeUndefined();
    expect(cborKeyToIntV1('self_signing_key')).toBeUndefined();
    expect(cborIntToKeyV1(0)).toBeUndefined();
  });

  it('looks up own entries only', () => {
    expect(cborKeyToIntV1('constructor')).toBeUndefined();
    expect(cborKeyToIntV1('__proto__')).toBeUndefined();
    expect(cborKeyToIntV1('8')).toBeUndefined();
  });

  it('is frozen', () => {
    expect(Object.isFrozen(CBOR_KEYS_V1)).toBe(true);
    expect(Object.isFrozen(CBOR_KEYS_V1[0])).toBe(true);
  });
});
