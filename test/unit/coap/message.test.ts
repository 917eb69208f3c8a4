import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WireError, TrickleError } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import {
  decodeMessage, encodeMessage, encodeUint, decodeUint, getOption, getOptions, getUintOption,
  sortOptions, uintOption, withoutOptions, type CoapMessage,
} from '../../../src/coap/message.ts';
import { ACK, CON, NON, RST, TYPE_NAMES, parseCode, codeToString, type CoapType } from '../../../src/coap/numbers.ts';

interface VectorMessage {
  type: 'CON' | 'NON' | 'ACK' | 'RST';
  code: string;
  mid: number;
  token: string;
  options: { number: number; value: string }[];
  payload: string;
}
interface Vectors {
  valid: { name: string; source: string; hex: string; message: VectorMessage }[];
  invalid: { name: string; hex: string; error: string }[];
}

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL('../../vectors/coap/messages.json', import.meta.url)), 'utf8'),
) as Vectors;

const TYPES: Record<VectorMessage['type'], CoapType> = { CON, NON, ACK, RST };

function fromVector(v: VectorMessage): CoapMessage {
  const code = parseCode(v.code);
  if (code === undefined) throw new Error(`bad code in vector: ${v.code}`);
  return {
    type: TYPES[v.type], code, mid: v.mid, token: fromHex(v.token),
    options: v.options.map((o) => ({ number: o.number, value: fromHex(o.value) })),
    payload: fromHex(v.payload),
  };
}

function toVector(m: CoapMessage): VectorMessage {
  return {
    type: TYPE_NAMES[m.type], code: codeToString(m.code), mid: m.mid, token: toHex(m.token),
    options: m.options.map((o) => ({ number: o.number, value: toHex(o.value) })), payload: toHex(m.payload),
  };
}

describe('message vectors', () => {
  it('has vectors for every decoder error', () => {
    const codes = new Set(vectors.invalid.map((v) => v.error));
    for (const c of ['ERR_COAP_TRUNCATED', 'ERR_COAP_VERSION', 'ERR_COAP_TOKEN_LENGTH', 'ERR_COAP_OPTION',
      'ERR_COAP_PAYLOAD_MARKER', 'ERR_COAP_FORMAT']) expect(codes).toContain(c);
  });

  for (const v of vectors.valid) {
    it(`decodes and encodes ${v.name}`, () => {
      const decoded = decodeMessage(fromHex(v.hex));
      expect(toVector(decoded)).toEqual(v.message);
      expect(toHex(encodeMessage(fromVector(v.message)))).toBe(v.hex);
    });
  }

  for (const v of vectors.invalid) {
    it(`rejects ${v.name} with ${v.error}`, () => {
      let caught: unknown;
      try { decodeMessage(fromHex(v.hex)); } catch (e) { caught = e; }
      expect(caught).toBeInstanceOf(WireError);
      expect((caught as WireError).code).toBe(v.error);
      expect((caught as WireError).layer).toBe('coap');
    });
  }
});

describe('encodeMessage', () => {
  it('sorts options by number, keeping repeated options in order', () => {
    const m: CoapMessage = {
      type: CON, code: 1, mid: 1, token: new Uint8Array(0),
      options: [
        { number: 15, value: fromHex('71') }, { number: 11, value: fromHex('61') },
        { number: 15, value: fromHex('72') }, { number: 11, value: fromHex('62') }, { number: 3, value: fromHex('68') },
      ],
      payload: new Uint8Array(0),
    };
    const d = decodeMessage(encodeMessage(m));
    expect(d.options.map((o) => `${o.number}:${toHex(o.value)}`)).toEqual(['3:68', '11:61', '11:62', '15:71', '15:72']);
  });

  it('omits the payload marker for an empty payload', () => {
    const bytes = encodeMessage({ type: ACK, code: 0x44, mid: 9, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) });
    expect(toHex(bytes)).toBe('60440009');
  });

  it('refuses messages it must never build', () => {
    const base: CoapMessage = { type: CON, code: 1, mid: 1, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) };
    const bad: [Partial<CoapMessage>, string][] = [
      [{ token: new Uint8Array(9) }, 'ERR_COAP_TOKEN_LENGTH'],
      [{ mid: 0x10000 }, 'ERR_COAP_FORMAT'],
      [{ code: 0, token: new Uint8Array(1) }, 'ERR_COAP_FORMAT'],
      [{ type: RST, code: 0x45 }, 'ERR_COAP_FORMAT'],
      [{ type: ACK, code: 0x01 }, 'ERR_COAP_FORMAT'],
      [{ options: [{ number: 65536, value: new Uint8Array(0) }] }, 'ERR_COAP_OPTION'],
    ];
    for (const [patch, code] of bad) {
      let caught: unknown;
      try { encodeMessage({ ...base, ...patch }); } catch (e) { caught = e; }
      expect(caught, JSON.stringify(Object.keys(patch))).toBeInstanceOf(TrickleError);
      expect((caught as TrickleError).code).toBe(code);
    }
  });
});

describe('uint values (RFC 7252 §3.2)', () => {
  it('encodes minimally', () => {
    expect(toHex(encodeUint(0))).toBe('');
    expect(toHex(encodeUint(1))).toBe('01');
    expect(toHex(encodeUint(255))).toBe('ff');
    expect(toHex(encodeUint(256))).toBe('0100');
    expect(toHex(encodeUint(65535))).toBe('ffff');
    expect(toHex(encodeUint(65536))).toBe('010000');
    expect(toHex(encodeUint(0xffffffff))).toBe('ffffffff');
    expect(() => encodeUint(-1)).toThrow(TrickleError);
    expect(() => encodeUint(2 ** 32)).toThrow(TrickleError);
  });

  it('decodes leading zeros and bounds the length', () => {
    expect(decodeUint(fromHex('0001'))).toBe(1);
    expect(decodeUint(fromHex(''))).toBe(0);
    expect(() => decodeUint(fromHex('0102030405'))).toThrow(WireError);
    expect(() => decodeUint(fromHex('010203'), 2)).toThrow(WireError);
  });

  it('round-trips', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => decodeUint(encodeUint(n)) === n));
  });

  it('option helpers', () => {
    const opts = [uintOption(12, 50), { number: 11, value: fromHex('61') }, { number: 11, value: fromHex('62') }];
    expect(getUintOption(opts, 12)).toBe(50);
    expect(getUintOption(opts, 14)).toBeUndefined();
    expect(toHex(getOption(opts, 11)!)).toBe('61');
    expect(getOptions(opts, 11).map(toHex)).toEqual(['61', '62']);
    expect(withoutOptions(opts, 11)).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const bytesArb = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });

/** Well-formed messages; options generated sorted so the round trip is exact. */
const messageArb: fc.Arbitrary<CoapMessage> = fc.oneof(
  // Empty messages: CON (ping), ACK, RST
  fc.record({
    type: fc.constantFrom<CoapType>(CON, ACK, RST),
    mid: fc.integer({ min: 0, max: 0xffff }),
  }).map(({ type, mid }) => ({ type, code: 0, mid, token: new Uint8Array(0), options: [], payload: new Uint8Array(0) })),
  fc.record({
    kind: fc.constantFrom('request', 'response'),
    type: fc.constantFrom<CoapType>(CON, NON, ACK),
    detail: fc.integer({ min: 0, max: 31 }),
    cls: fc.integer({ min: 2, max: 5 }),
    mid: fc.integer({ min: 0, max: 0xffff }),
    token: bytesArb(8),
    options: fc.array(
      fc.record({
        number: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffff })),
        value: fc.oneof(bytesArb(20), bytesArb(400)),
      }),
      { maxLength: 8 },
    ),
    payload: fc.oneof(bytesArb(0), bytesArb(40), bytesArb(600)),
  }).map((r) => {
    const isRequest = r.kind === 'request' && r.type !== ACK;
    const code = isRequest ? Math.max(1, r.detail) : (r.cls << 5) | r.detail;
    return { type: r.type, code, mid: r.mid, token: r.token, options: sortOptions(r.options), payload: r.payload };
  }),
);

describe('properties', () => {
  it('random well-formed messages round-trip exactly', () => {
    fc.assert(fc.property(messageArb, (m) => {
      const bytes = encodeMessage(m);
      const d = decodeMessage(bytes);
      expect(toVector(d)).toEqual(toVector(m));
      expect(toHex(encodeMessage(d))).toBe(toHex(bytes));
    }), { numRuns: 2000 });
  });

  it('random bytes decode to a message or a WireError, never anything else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      try {
        const m = decodeMessage(b);
        // Whatever decodes re-encodes to the same bytes (the decoder accepts only canonical forms
        // except for option order, which is always ascending on the wire).
        expect(toHex(encodeMessage(m))).toBe(toHex(b));
      } catch (e) {
        if (!(e instanceof WireError)) throw e;
        expect(e.layer).toBe('coap');
      }
    }), { numRuns: 5000 });
  });

  it('bytes with a valid header and random tail never throw anything but WireError', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 8 }), fc.uint8Array({ maxLength: 200 }), (tkl, tail) => {
      const b = new Uint8Array(4 + tail.length);
      b[0] = 0x40 | tkl; b[1] = 0x01;
      b.set(tail, 4);
      try { decodeMessage(b); } catch (e) { if (!(e instanceof WireError)) throw e; }
    }), { numRuns: 5000 });
  });

  it('every strict prefix of a valid message with options is rejected or is itself a message', () => {
    fc.assert(fc.property(messageArb, (m) => {
      const bytes = encodeMessage(m);
      for (let i = 0; i < bytes.length; i++) {
        try { decodeMessage(bytes.subarray(0, i)); } catch (e) { if (!(e instanceof WireError)) throw e; }
      }
    }), { numRuns: 300 });
  });
});
