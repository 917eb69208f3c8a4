import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import {
  KissDecoder, encodeKissFrame, encodeKissParameter, kissEscapedLength, KissCommand, FEND, FESC, TFEND, TFESC, KISS_RETURN,
} from '../../../src/modem/kiss/kiss.ts';
import {
  encodeAx25UiFrame, decodeAx25Frame, parseCallsign, parseAx25Address, formatAx25Address, ax25OnAirBits, ax25AirtimeMs,
} from '../../../src/modem/kiss/ax25.ts';
import { concatBytes, fromHex, toHex } from '../../../src/util/bytes.ts';
import { ConfigError } from '../../../src/errors.ts';

interface Vectors {
  kiss: { name: string; port: number; command: number; data: string; wire: string }[];
  ax25: { name: string; destination: string; source: string; info: string; frame: string; kissWire?: string }[];
  direwolf: { name: string; kissWire: string; source: string; destination: string; info: string; command: boolean }[];
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/kiss.json', import.meta.url), 'utf8')) as Vectors;
const hex = (s: string): string => s.replace(/\s/g, '');

describe('KISS framing (vectors)', () => {
  it.each(vectors.kiss)('$name', ({ port, command, data, wire }) => {
    const d = fromHex(data);
    expect(toHex(encodeKissFrame({ port, command, data: d }))).toBe(hex(wire));
    const r = new KissDecoder({ maxFrameLen: 64 }).push(fromHex(wire));
    expect(r.errors).toEqual([]);
    expect(r.frames).toHaveLength(1);
    expect(r.frames[0]!.command).toBe(command);
    if (command !== KISS_RETURN) expect(r.frames[0]!.port).toBe(port);
    expect(toHex(r.frames[0]!.data)).toBe(hex(data));
  });

  it('parameter commands carry one byte and reject values outside 0–255', () => {
    expect(toHex(encodeKissParameter(0, KissCommand.FullDuplex, 1))).toBe('c00501c0');
    expect(() => encodeKissParameter(0, KissCommand.TxDelay, 256)).toThrow(RangeError);
    expect(() => encodeKissFrame({ port: 16, command: 0, data: new Uint8Array() })).toThrow(RangeError);
  });

  it('escaped length counts one extra byte per FEND or FESC', () => {
    expect(kissEscapedLength(Uint8Array.of(FEND, 1, FESC, TFEND, TFESC))).toBe(7);
  });
});

describe('KissDecoder', () => {
  it('counts noise before the first FEND once, and ignores empty frames (FEND FEND)', () => {
    const d = new KissDecoder({ maxFrameLen: 16 });
    const r = d.push(fromHex('414243c0c0c0000102c0'));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_NOISE']);
    expect(r.errors[0]!.detail).toEqual({ bytes: 3 });
    expect(r.frames.map((f) => toHex(f.data))).toEqual(['0102']);
  });

  it('drops a frame with a bad escape and resynchronises at the next FEND', () => {
    const r = new KissDecoder({ maxFrameLen: 16 }).push(fromHex('c00001db07 02c0 c00003c0'));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_BAD_ESCAPE']);
    expect(r.errors[0]!.detail).toEqual({ byte: 7 });
    expect(r.frames.map((f) => toHex(f.data))).toEqual(['03']);
  });

  it('a FEND right after FESC aborts the frame and still delimits', () => {
    const r = new KissDecoder({ maxFrameLen: 16 }).push(fromHex('c00001dbc00004c0'));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_BAD_ESCAPE']);
    expect(r.frames.map((f) => toHex(f.data))).toEqual(['04']);
  });

  it('accepts exactly maxFrameLen data bytes and drops one more with ERR_FRAME_TOO_LONG', () => {
    const d = new KissDecoder({ maxFrameLen: 4 });
    expect(d.push(encodeKissFrame({ port: 0, command: 0, data: Uint8Array.of(FEND, FEND, FESC, FESC) })).frames).toHaveLength(1);
    const r = d.push(concatBytes(encodeKissFrame({ port: 0, command: 0, data: new Uint8Array(5) }), fromHex('c00009c0')));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_TOO_LONG']);
    expect(r.frames.map((f) => toHex(f.data))).toEqual(['09']);
  });

  it('rejects a bad bound', () => {
    expect(() => new KissDecoder({ maxFrameLen: 0 })).toThrow(RangeError);
  });
});

describe('KISS properties', () => {
  const frame = fc.record({
    port: fc.integer({ min: 0, max: 15 }),
    command: fc.integer({ min: 0, max: 6 }),
    data: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.array(fc.constantFrom(FEND, FESC, TFEND, TFESC, 0), { maxLength: 64 }).map((a) => new Uint8Array(a)),
    ),
  });

  it('round trip: any frames, cut into any chunks, decode to themselves in order', () => {
    fc.assert(fc.property(fc.array(frame, { minLength: 1, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 30 }), (frames, rawCuts) => {
      const wire = concatBytes(...frames.map(encodeKissFrame));
      const d = new KissDecoder({ maxFrameLen: 64 });
      const cuts = [...new Set(rawCuts.map((c) => c % wire.length))].sort((x, y) => x - y);
      const out: { port: number; command: number; data: string }[] = [];
      let start = 0;
      for (const cut of [...cuts, wire.length]) {
        const r = d.push(wire.subarray(start, cut));
        expect(r.errors).toEqual([]);
        out.push(...r.frames.map((f) => ({ port: f.port, command: f.command, data: toHex(f.data) })));
        start = cut;
      }
      expect(out).toEqual(frames.map((f) => ({ port: f.port, command: f.command, data: toHex(f.data) })));
    }));
  });

  it('garbage between frames never corrupts a following frame (resync at FEND)', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.uint8Array({ maxLength: 100 }), frame), { minLength: 1, maxLength: 8 }), (items) => {
      const d = new KissDecoder({ maxFrameLen: 64 });
      const wire = concatBytes(...items.flatMap(([g, f]) => [g, encodeKissFrame(f)]));
      const got = d.push(wire).frames.map((f) => `${f.port}/${f.command}/${toHex(f.data)}`);
      // Every sent frame arrives, in order; garbage may add frames of its own, never remove ours.
      const want = items.map(([, f]) => `${f.port}/${f.command}/${toHex(f.data)}`);
      let i = 0;
      for (const g of got) if (g === want[i]) i++;
      expect(i).toBe(want.length);
    }));
  });

  it('decoder memory is bounded: an endless frame never yields more than maxFrameLen bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 500 }), (junk) => {
      const d = new KissDecoder({ maxFrameLen: 32 });
      const r = d.push(concatBytes(Uint8Array.of(FEND), junk, Uint8Array.of(FEND)));
      for (const f of r.frames) expect(f.data.length).toBeLessThanOrEqual(32);
    }));
  });
});

describe('AX.25 UI frames (vectors)', () => {
  it.each(vectors.ax25)('$name', ({ destination, source, info, frame, kissWire }) => {
    const f = encodeAx25UiFrame({ destination: parseAx25Address(destination), source: parseCallsign(source), info: fromHex(info) });
    expect(toHex(f)).toBe(hex(frame));
    if (kissWire) expect(toHex(encodeKissFrame({ port: 0, command: 0, data: f }))).toBe(hex(kissWire));
    const r = decodeAx25Frame(f, { maxInfoLen: 256 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(formatAx25Address(r.frame.destination)).toBe(destination);
    expect(formatAx25Address(r.frame.source)).toBe(source);
    expect(r.frame.command).toBe(true);
    expect(r.frame.digipeaters).toEqual([]);
    expect(toHex(r.frame.info)).toBe(info);
  });

  it.each(vectors.direwolf)('decodes what Direwolf sent: $name', ({ kissWire, source, destination, info, command }) => {
    const k = new KissDecoder({ maxFrameLen: 512 }).push(fromHex(kissWire));
    expect(k.frames).toHaveLength(1);
    const r = decodeAx25Frame(k.frames[0]!.data, { maxInfoLen: 256 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(formatAx25Address(r.frame.source)).toBe(source);
    expect(formatAx25Address(r.frame.destination)).toBe(destination);
    expect(r.frame.command).toBe(command);
    expect(toHex(r.frame.info)).toBe(info);
  });
});

describe('AX.25 decoder rejects', () => {
  const good = encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-1'), info: fromHex('01') });
  const codeOf = (b: Uint8Array, maxInfoLen = 256): string => {
    const r = decodeAx25Frame(b, { maxInfoLen });
    return r.ok ? 'ok' : r.error.code;
  };

  it('frames shorter than two addresses and a control byte, or without PID', () => {
    expect(codeOf(good.subarray(0, 14))).toBe('ERR_FRAME_TOO_SHORT');
    expect(codeOf(good.subarray(0, 15))).toBe('ERR_FRAME_TOO_SHORT');
  });

  it('lower-case or non-alphanumeric callsign characters, characters after padding, an empty callsign', () => {
    const lower = good.slice(); lower[0] = 0x61 << 1;
    const afterPad = good.slice(); afterPad[4] = 0x20 << 1; // "TRIC L"
    const empty = good.slice(); for (let i = 0; i < 6; i++) empty[i] = 0x40;
    const extInside = good.slice(); extInside[2]! |= 1;
    for (const b of [lower, afterPad, empty, extInside]) expect(codeOf(b)).toBe('ERR_AX25_ADDRESS');
  });

  it('an address field that never ends, or ends after the destination', () => {
    const noEnd = good.slice(); noEnd[13]! &= 0xfe;
    expect(codeOf(noEnd)).toBe('ERR_AX25_ADDRESS');
    const oneAddress = good.slice(); oneAddress[6]! |= 1;
    expect(codeOf(oneAddress)).toBe('ERR_AX25_ADDRESS');
    // 2 + 9 addresses, none with the extension bit until the last.
    const addr = good.subarray(7, 14).slice(); addr[6]! &= 0xfe;
    const many = concatBytes(...Array.from({ length: 11 }, () => addr), fromHex('03f001'));
    expect(codeOf(many)).toBe('ERR_AX25_ADDRESS');
  });

  it('non-UI frames: I frame, RR, SABM', () => {
    for (const control of [0x00, 0x01, 0x2f]) {
      const b = good.slice(); b[14] = control;
      expect(codeOf(b)).toBe('ERR_AX25_NOT_UI');
    }
    const pf = good.slice(); pf[14] = 0x13; // UI with the P bit: still UI
    expect(codeOf(pf)).toBe('ok');
  });

  it('empty and over-long information fields', () => {
    expect(codeOf(good.subarray(0, 16))).toBe('ERR_FRAME_EMPTY');
    expect(codeOf(concatBytes(good, new Uint8Array(10)), 10)).toBe('ERR_FRAME_TOO_LONG');
  });

  it('accepts digipeater addresses and reports their H bit', () => {
    const digi = encodeAx25UiFrame({ destination: parseAx25Address('WIDE2-2'), source: parseCallsign('N0CALL'), info: new Uint8Array(1) })
      .subarray(0, 7).slice();
    digi[6] = 0x80 | 0x60 | (2 << 1) | 1; // repeated, last
    const b = concatBytes(good.subarray(0, 13), Uint8Array.of(good[13]! & 0xfe), digi, fromHex('03f001'));
    const r = decodeAx25Frame(b, { maxInfoLen: 256 });
    expect(r.ok && r.frame.digipeaters).toEqual([{ callsign: 'WIDE2', ssid: 2, repeated: true }]);
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 120 }), (b) => { decodeAx25Frame(b, { maxInfoLen: 64 }); }));
  });

  it('round trip for any valid addresses and payload', () => {
    const call = fc.stringMatching(/^[A-Z0-9]{1,6}$/);
    fc.assert(fc.property(call, call, fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 15 }), fc.uint8Array({ minLength: 1, maxLength: 256 }),
      (d, s, ds, ss, info) => {
        const f = encodeAx25UiFrame({ destination: { callsign: d, ssid: ds }, source: { callsign: s, ssid: ss }, info });
        const r = decodeAx25Frame(f, { maxInfoLen: 256 });
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        expect(r.frame.destination).toEqual({ callsign: d, ssid: ds });
        expect(r.frame.source).toEqual({ callsign: s, ssid: ss });
        expect(toHex(r.frame.info)).toBe(toHex(info));
      }));
  });
});

describe('callsigns', () => {
  it.each([['N0CALL', 'N0CALL', 0], ['n0call-1', 'N0CALL', 1], ['W1AW-15', 'W1AW', 15], ['2E0ITB', '2E0ITB', 0], ['3DA0RS', '3DA0RS', 0], ['VK2ABC-7', 'VK2ABC', 7]])(
    '%s is a callsign', (text, callsign, ssid) => {
      expect(parseCallsign(text)).toEqual({ callsign, ssid });
    });

  it.each(['', 'NOCALL', 'BASECAMP', 'N0CALL-16', 'N0CALL-', 'N0-CALL', 'W1A1', 'N0CÄLL', 'AB', 'N0CALL-1-2', 'N0 CALL'])(
    '%j is refused with a ConfigError that names the key and the value', (text) => {
      let err: unknown;
      try { parseCallsign(text, 'callsign'); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toContain('callsign');
      expect((err as ConfigError).message).toContain(JSON.stringify(text));
      expect((err as ConfigError).detail).toEqual({ key: 'callsign', value: text });
    });

  it('a destination may be any AX.25 address, but not over 6 characters or SSID 16', () => {
    expect(parseAx25Address('TRICKL')).toEqual({ callsign: 'TRICKL', ssid: 0 });
    expect(parseAx25Address('APRS-0')).toEqual({ callsign: 'APRS', ssid: 0 });
    expect(() => parseAx25Address('TRICKLE')).toThrow(/destination.*"TRICKLE"/);
    expect(() => parseAx25Address('TRICKL-16')).toThrow(ConfigError);
  });
});

describe('AX.25 airtime', () => {
  it('counts flags, FCS and stuffed bits', () => {
    // 16 header bytes + 0 info: no run of five 1s in these bytes? Count independently.
    const f = encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-1'), info: Uint8Array.of(0xff) });
    const bits = ax25OnAirBits(f);
    // 17 bytes + 2 FCS = 152 bits, two flags = 16; 0xFF alone stuffs at least one bit.
    expect(bits).toBeGreaterThanOrEqual(152 + 16 + 1);
    expect(bits).toBeLessThan(152 + 16 + 152 / 5);
    expect(ax25OnAirBits(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff)) - ax25OnAirBits(Uint8Array.of(0, 0, 0, 0, 0))).toBeGreaterThanOrEqual(8);
    expect(ax25AirtimeMs(f, { baud: 1200, txDelayMs: 300, txTailMs: 100 })).toBeCloseTo(400 + (bits * 1000) / 1200, 6);
  });
});
