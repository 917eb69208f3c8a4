/**
 * The native firmware protocol's wire format: the generated constants are up to date with
 * firmware-protocol/protocol.json, and the codec reproduces the vectors in
 * firmware-protocol/vectors/ (cross-checked by an independent Python decoder, check_vectors.py).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  C_OUT_PATH, MD_OUT_PATH, TS_OUT_PATH, generateCHeader, generateMarkdown, generateTypeScript, loadProtocolJson, resolveMessages, type ProtocolJson,
} from '../../../scripts/gen-firmware-protocol.ts';
import {
  NativeDeframer, decodeNativeMessage, encodeNativeFrame, encodeNativeMessage, nativeMessage,
} from '../../../src/modem/native/codec.ts';
import { MESSAGE_LAYOUTS, MAX_MESSAGE_LEN, type NativeMessage } from '../../../src/modem/native/protocol-generated.ts';
import { nativeTransmitSerialOverhead } from '../../../src/modem/native/native-modem.ts';
import type { WireError } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';

const VECTORS_DIR = join(import.meta.dirname, '..', '..', '..', 'firmware-protocol', 'vectors');

interface MessageVector { description: string; message: Record<string, unknown>; messageHex: string; frameHex: string }
interface FramingVector { description: string; wireHex: string; messages: Record<string, unknown>[]; rejects: string[] }

const messageVectors = (JSON.parse(readFileSync(join(VECTORS_DIR, 'messages.json'), 'utf8')) as { vectors: MessageVector[] }).vectors;
const framingVectors = (JSON.parse(readFileSync(join(VECTORS_DIR, 'framing.json'), 'utf8')) as { vectors: FramingVector[] }).vectors;

/** JSON vector form (bytes fields as hex) → message object. */
function fromJson(m: Record<string, unknown>): NativeMessage {
  const layout = MESSAGE_LAYOUTS[m['name'] as keyof typeof MESSAGE_LAYOUTS];
  const out: Record<string, unknown> = { ...m };
  for (const f of layout.fields) if (f.type === 'bytes') out[f.name] = fromHex(m[f.name] as string);
  return out as unknown as NativeMessage;
}

function reasonOf(e: WireError): string {
  const reason = (e.detail as { reason?: string } | undefined)?.reason;
  if (reason) return reason;
  switch (e.code) {
    case 'ERR_FRAME_NOISE': return 'noise';
    case 'ERR_FRAME_BAD_FCS': return 'bad-fcs';
    case 'ERR_FRAME_BAD_ESCAPE': return 'bad-escape';
    case 'ERR_FRAME_TOO_LONG': return 'too-long';
    case 'ERR_FRAME_TOO_SHORT': return 'too-short';
    default: return e.code;
  }
}

describe('generated protocol files', () => {
  const p = loadProtocolJson();

  it('src/modem/native/protocol-generated.ts is what scripts/gen-firmware-protocol.ts makes of protocol.json', () => {
    expect(readFileSync(TS_OUT_PATH, 'utf8'), 'stale: run npx tsx scripts/gen-firmware-protocol.ts').toBe(generateTypeScript(p));
  });

  it('firmware-protocol/generated/trickle_protocol.h is up to date too', () => {
    expect(readFileSync(C_OUT_PATH, 'utf8'), 'stale: run npx tsx scripts/gen-firmware-protocol.ts').toBe(generateCHeader(p));
  });

  it('firmware-protocol/spec/02-messages.md (the message tables) is up to date too', () => {
    expect(readFileSync(MD_OUT_PATH, 'utf8'), 'stale: run npx tsx scripts/gen-firmware-protocol.ts').toBe(generateMarkdown(p));
  });

  it('the generator rejects an inconsistent protocol.json, naming the entry', () => {
    const clone = (): ProtocolJson => JSON.parse(JSON.stringify(p)) as ProtocolJson;
    const dupType = clone();
    dupType.messages[1]!.type = dupType.messages[0]!.type;
    expect(() => resolveMessages(dupType)).toThrow(/GET_CAPABILITIES: duplicate type byte 0x01/);
    const badReply = clone();
    badReply.messages[0]!.replies = ['NOPE'];
    expect(() => resolveMessages(badReply)).toThrow(/HELLO: reply NOPE/);
    const slipType = clone();
    slipType.messages[0]!.type = 0xc0;
    expect(() => resolveMessages(slipType)).toThrow(/SLIP special byte/);
  });

  it('every message in protocol.json has a vector', () => {
    const covered = new Set(messageVectors.map((v) => v.message['name']));
    expect(Object.keys(MESSAGE_LAYOUTS).filter((n) => !covered.has(n))).toEqual([]);
  });
});

describe('message vectors (firmware-protocol/vectors/messages.json)', () => {
  for (const v of messageVectors) {
    it(v.description, () => {
      const msg = fromJson(v.message);
      expect(toHex(encodeNativeMessage(msg))).toBe(v.messageHex);
      expect(toHex(encodeNativeFrame(msg))).toBe(v.frameHex);
      expect(decodeNativeMessage(fromHex(v.messageHex))).toEqual(msg);
      const { messages, errors } = new NativeDeframer().push(fromHex(v.frameHex));
      expect(errors).toEqual([]);
      expect(messages).toEqual([msg]);
    });
  }
});

describe('framing vectors (firmware-protocol/vectors/framing.json)', () => {
  for (const v of framingVectors) {
    it(v.description, () => {
      const wire = fromHex(v.wireHex);
      // Whole, and one byte at a time: the result must not depend on how the stream was cut.
      for (const chunks of [[wire], [...wire].map((b) => Uint8Array.of(b))]) {
        const d = new NativeDeframer();
        const messages: NativeMessage[] = [];
        const rejects: string[] = [];
        for (const c of chunks) {
          const r = d.push(c);
          messages.push(...r.messages);
          rejects.push(...r.errors.map(reasonOf));
        }
        expect(messages).toEqual(v.messages.map(fromJson));
        expect(rejects).toEqual(v.rejects);
      }
    });
  }
});

describe('codec properties and bounds', () => {
  it('TRANSMIT and RECEIVE round-trip for any frame and any chunking', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 255 }), fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: -200, max: 20 }), fc.integer({ min: -128, max: 127 }), fc.integer({ min: -100_000, max: 100_000 }),
      fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1, maxLength: 8 }),
      (frame, seq, rssiDbm, snrQuarterDb, frequencyErrorHz, cuts) => {
        const msgs = [
          nativeMessage('TRANSMIT', { seq, frame }),
          nativeMessage('RECEIVE', { rssiDbm, snrQuarterDb, frequencyErrorHz, frame }),
        ];
        const wire = Buffer.concat(msgs.map(encodeNativeFrame));
        const d = new NativeDeframer();
        const got: NativeMessage[] = [];
        let off = 0;
        for (let i = 0; off < wire.length; i++) {
          const n = cuts[i % cuts.length]!;
          const r = d.push(new Uint8Array(wire.subarray(off, off + n)));
          expect(r.errors).toEqual([]);
          got.push(...r.messages);
          off += n;
        }
        expect(got).toEqual(msgs);
      }));
  });

  it('the TRANSMIT serial overhead matches the encoder when seq and FCS need no escaping', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 255 }), (frame) => {
      const wire = encodeNativeFrame(nativeMessage('TRANSMIT', { seq: 1, frame }));
      const extra = wire.length - frame.length - nativeTransmitSerialOverhead(frame);
      expect(extra).toBeGreaterThanOrEqual(0);
      expect(extra).toBeLessThanOrEqual(2); // FCS escapes only; seq 1 is 01 00
    }));
  });

  it('refuses values that do not fit their field, and messages over MAX_MESSAGE_LEN', () => {
    expect(() => encodeNativeMessage(nativeMessage('CAD', { symbols: 256 }))).toThrow(/CAD.symbols must be an integer 0..255/);
    expect(() => encodeNativeMessage(nativeMessage('SET_RADIO', {
      frequencyHz: 868e6, bandwidthHz: 125e3, sf: 7, codingRate: 5, txPowerDbm: 200, preambleSymbols: 8, syncWord: 0x12, flags: 1,
    }))).toThrow(/txPowerDbm must be an integer -128..127/);
    expect(() => encodeNativeMessage(nativeMessage('TRANSMIT', { seq: 1, frame: new Uint8Array(MAX_MESSAGE_LEN) })))
      .toThrow(/exceeds MAX_MESSAGE_LEN/);
  });

  it('a frame longer than MAX_MESSAGE_LEN on the wire is dropped and the next one decodes', () => {
    const long = encodeNativeFrame(nativeMessage('TRANSMIT', { seq: 1, frame: new Uint8Array(250) }));
    const tooLong = new Uint8Array(long.length + 100);
    tooLong.set(long.subarray(0, long.length - 1));
    tooLong.fill(0x55, long.length - 1, tooLong.length - 1);
    tooLong[tooLong.length - 1] = 0xc0;
    const r = new NativeDeframer().push(Buffer.concat([tooLong, encodeNativeFrame(nativeMessage('PING', { nonce: 5 }))]));
    expect(r.errors.map(reasonOf)).toEqual(['too-long']);
    expect(r.messages).toEqual([nativeMessage('PING', { nonce: 5 })]);
  });
});
