import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import {
  TransparentModem, TransparentDeframer, encodeTransparentFrame, transparentFramingOverhead,
} from '../../../src/modem/transparent/transparent-modem.ts';
import { END, ESC } from '../../../src/modem/transparent/slip.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import type { Link } from '../../../src/link/link.ts';
import { concatBytes, fromHex, toHex } from '../../../src/util/bytes.ts';
import { isTrickleError, type ErrorCode } from '../../../src/errors.ts';

interface Vectors { transparent: { name: string; payload: string; wire: string }[] }
const vectors = JSON.parse(readFileSync(new URL('../../vectors/slip.json', import.meta.url), 'utf8')) as Vectors;

/** Let queued microtasks and immediates run (memory links deliver on microtasks). */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function setup(maxFrameLen?: number): { raw: Link; modem: TransparentModem; frames: string[]; drops: ErrorCode[] } {
  const [raw, side] = createMemoryLinkPair('t');
  const modem = new TransparentModem(side, maxFrameLen === undefined ? {} : { maxFrameLen });
  const frames: string[] = [];
  const drops: ErrorCode[] = [];
  modem.onFrame((f) => frames.push(toHex(f)));
  modem.onDrop((code) => drops.push(code));
  return { raw, modem, frames, drops };
}

describe('transparent framing (vectors)', () => {
  it.each(vectors.transparent)('$name', ({ payload, wire }) => {
    const p = fromHex(payload);
    expect(toHex(encodeTransparentFrame(p))).toBe(wire);
    expect(transparentFramingOverhead(p)).toBe(wire.length / 2 - p.length);
    const r = new TransparentDeframer({ maxFrameLen: 255 }).push(fromHex(wire));
    expect(r.frames.map(toHex)).toEqual([payload]);
    expect(r.errors).toEqual([]);
  });

  it('overhead is 4 bytes for a payload without END/ESC whose FCS needs no escape', () => {
    expect(transparentFramingOverhead(fromHex('313233343536373839'))).toBe(4);
  });

  it('overhead always equals the encoded length minus the payload', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (p) => {
      expect(p.length + transparentFramingOverhead(p)).toBe(encodeTransparentFrame(p).length);
    }));
  });
});

describe('TransparentDeframer', () => {
  it('drops a frame with a bad FCS with ERR_FRAME_BAD_FCS', () => {
    const wire = encodeTransparentFrame(fromHex('01020304'));
    wire[2]! ^= 0x01;
    const r = new TransparentDeframer({ maxFrameLen: 255 }).push(wire);
    expect(r.frames).toEqual([]);
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_BAD_FCS']);
  });

  it('drops frames shorter than 3 bytes with ERR_FRAME_TOO_SHORT', () => {
    const r = new TransparentDeframer({ maxFrameLen: 255 }).push(fromHex('c001c0c00102c0'));
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_TOO_SHORT', 'ERR_FRAME_TOO_SHORT']);
  });

  it('accepts a payload of exactly maxFrameLen and rejects one byte more as too long', () => {
    const d = new TransparentDeframer({ maxFrameLen: 8 });
    const ok = d.push(encodeTransparentFrame(new Uint8Array(8).fill(0xc0)));
    expect(ok.frames).toHaveLength(1);
    const long = d.push(encodeTransparentFrame(new Uint8Array(9).fill(1)));
    expect(long.frames).toEqual([]);
    expect(long.errors.map((e) => e.code)).toEqual(['ERR_FRAME_TOO_LONG']);
  });
});

describe('TransparentModem over a memory link', () => {
  it('carries frames both ways and counts frames and wire bytes', async () => {
    const [la, lb] = createMemoryLinkPair();
    const a = new TransparentModem(la);
    const b = new TransparentModem(lb);
    const atB: string[] = [];
    const atA: string[] = [];
    b.onFrame((f) => atB.push(toHex(f)));
    a.onFrame((f) => atA.push(toHex(f)));
    const r1 = await a.send(fromHex('c0ffee'));
    await a.send(fromHex('db'));
    await b.send(fromHex('00'));
    await settle();
    expect(atB).toEqual(['c0ffee', 'db']);
    expect(atA).toEqual(['00']);
    expect(r1.wireBytes).toBe(encodeTransparentFrame(fromHex('c0ffee')).length);
    const sa = a.stats();
    const sb = b.stats();
    expect(sa.framesSent).toBe(2);
    expect(sb.framesReceived).toBe(2);
    expect(sa.wireBytesSent).toBe(sb.wireBytesReceived);
    expect(sb.wireBytesSent).toBe(sa.wireBytesReceived);
    expect(sa.dropped).toEqual({});
    expect(a.capabilities).toEqual({ maxFrameLen: 255, enforcesDutyCycle: false, reportsAirtime: false, channelSense: 'none' });
    expect(a.dialect).toBe('transparent');
  });

  it('rejects oversize and empty frames with ERR_MODEM_MTU without writing anything', async () => {
    const { raw, modem } = setup(16);
    const seen: Uint8Array[] = [];
    raw.onData((c) => seen.push(c));
    await expect(modem.send(new Uint8Array(17))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_MODEM_MTU'));
    await expect(modem.send(new Uint8Array(0))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_MODEM_MTU'));
    await expect(modem.send(new Uint8Array(16))).resolves.toBeDefined();
    await settle();
    expect(seen).toHaveLength(1);
    expect(modem.stats().framesSent).toBe(1);
  });

  it('counts and reports damaged input by code and keeps going', async () => {
    const { raw, modem, frames, drops } = setup(8);
    const bad = encodeTransparentFrame(fromHex('aabbcc'));
    bad[1]! ^= 0xff;
    await raw.write(concatBytes(
      fromHex('5555'), // noise before the first END
      encodeTransparentFrame(fromHex('01')),
      bad,
      fromHex('c00102c0'), // too short
      fromHex('c001db07c0'), // bad escape
      encodeTransparentFrame(new Uint8Array(20)), // too long
      encodeTransparentFrame(fromHex('02')),
    ));
    await settle();
    expect(frames).toEqual(['01', '02']);
    // Within one chunk, SLIP-level drops are reported before FCS-level ones.
    expect(drops).toEqual(['ERR_FRAME_NOISE', 'ERR_FRAME_BAD_ESCAPE', 'ERR_FRAME_TOO_LONG', 'ERR_FRAME_BAD_FCS', 'ERR_FRAME_TOO_SHORT']);
    expect(modem.stats().dropped).toEqual({
      ERR_FRAME_NOISE: 1, ERR_FRAME_BAD_FCS: 1, ERR_FRAME_TOO_SHORT: 1, ERR_FRAME_BAD_ESCAPE: 1, ERR_FRAME_TOO_LONG: 1,
    });
    expect(modem.stats().framesReceived).toBe(2);
  });

  it('reports the link going away through onClose, and send then rejects', async () => {
    const { raw, modem } = setup();
    const closed = new Promise<Error | undefined>((r) => modem.onClose(r));
    await raw.close();
    const err = await closed;
    expect(isTrickleError(err, 'ERR_LINK_IO')).toBe(true);
    await expect(modem.send(fromHex('01'))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
  });

  it('rejects a bad maxFrameLen with a ConfigError naming the key', () => {
    const [l] = createMemoryLinkPair();
    expect(() => new TransparentModem(l, { maxFrameLen: 0 })).toThrow(/maxFrameLen/);
  });
});

describe('transparent framing properties', () => {
  const payload = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 64 }),
    fc.array(fc.oneof(fc.constantFrom(END, ESC, 0xdc, 0xdd), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 64 })
      .map((a) => new Uint8Array(a)),
  );
  // Garbage is bytes on the channel between frames. A garbage run is delimited by the END
  // that closes the previous frame and the END that opens the next, so it is judged exactly
  // as `END garbage END` is. CRC-16 accepts 1 in 65536 random frames: exclude those rare
  // runs that happen to carry a valid FCS, since no 16-bit check can reject them.
  const garbage = fc.uint8Array({ maxLength: 80 }).filter(
    (g) => new TransparentDeframer({ maxFrameLen: 64 }).push(concatBytes(fromHex('c0'), g, fromHex('c0'))).frames.length === 0,
  );

  it('garbage between frames never yields a frame that was not sent; every sent frame arrives, in order', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.tuple(garbage, payload), { minLength: 1, maxLength: 12 }),
      garbage,
      fc.array(fc.nat(), { maxLength: 40 }),
      async (items, tail, rawCuts) => {
        const { raw, modem, frames } = setup(64);
        const wire = concatBytes(...items.flatMap(([g, p]) => [g, encodeTransparentFrame(p)]), tail);
        const cuts = [...new Set(rawCuts.map((c) => c % wire.length))].sort((x, y) => x - y);
        let start = 0;
        for (const cut of [...cuts, wire.length]) {
          if (cut > start) await raw.write(wire.subarray(start, cut));
          start = cut;
        }
        await settle();
        expect(frames).toEqual(items.map(([, p]) => toHex(p)));
        expect(modem.stats().wireBytesReceived).toBe(wire.length);
      },
    ), { numRuns: 200 });
  });

  it('a single flipped bit inside a frame drops that frame only', () => {
    fc.assert(fc.property(fc.array(payload, { minLength: 2, maxLength: 6 }), fc.nat(), fc.nat(), (payloads, which, bit) => {
      const victim = which % payloads.length;
      const encoded = payloads.map(encodeTransparentFrame);
      const target = encoded[victim]!;
      // Flip a bit of a byte between the ENDs, but never create or destroy a delimiter/escape.
      const candidates = [...target.keys()].filter((i) => i > 0 && i < target.length - 1 && target[i] !== ESC && target[i - 1] !== ESC);
      fc.pre(candidates.length > 0);
      const i = candidates[bit % candidates.length]!;
      const mask = 1 << (bit % 8);
      fc.pre(((target[i]! ^ mask) !== END) && ((target[i]! ^ mask) !== ESC));
      target[i]! ^= mask;
      const r = new TransparentDeframer({ maxFrameLen: 64 }).push(concatBytes(...encoded));
      expect(r.frames.map(toHex)).toEqual(payloads.filter((_, k) => k !== victim).map(toHex));
      expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_BAD_FCS']);
    }));
  });
});
