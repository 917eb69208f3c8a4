import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TrickleError, WireError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import { deflateRaw } from '../../../src/codec/deflate.ts';
import { decodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { matrixTrainingSample, trainDictionary } from '../../../src/codec/dictionary-train.ts';
import * as data from '../../../src/codec/dictionaries/matrix-v1.ts';
import {
  assertSameDictionary, compressBody, decompressBody, dictionaryContext, dictionaryId, dictionarySha256,
  loadDictionary, matrixDictionaryV1,
} from '../../../src/codec/dictionary.ts';

interface Corpus { volatile: string[]; entries: { kind: 'request' | 'response'; endpoint: string; value: unknown }[] }
const corpus = JSON.parse(readFileSync(new URL('../../vectors/corpus/matrix-v1.json', import.meta.url), 'utf8')) as Corpus;
const samples = corpus.entries.map((e) => matrixTrainingSample(e.value, corpus.volatile));

function code(fn: () => unknown): string {
  try { fn(); } catch (e) { if (e instanceof TrickleError) return e.code; throw e; }
  return 'no error';
}

describe('the shipped dictionary matrix-v1', () => {
  const dict = matrixDictionaryV1();

  it('has its id and the sha256 of its bytes', () => {
    expect(dictionaryId()).toBe('matrix-v1');
    expect(dict.id).toBe(data.DICTIONARY_ID);
    expect(dictionarySha256()).toBe(createHash('sha256').update(dict.bytes).digest('hex'));
    expect(dict.bytes.length).toBe(data.DICTIONARY_BYTES);
    expect(dict.bytes.length).toBeGreaterThan(512);
    expect(dict.bytes.length).toBeLessThanOrEqual(32_768);
    expect(dictionaryContext()).toBe(`trickle-dictionary:matrix-v1:${dict.sha256}`);
    expect(matrixDictionaryV1()).toBe(dict);
  });

  it('is exactly what the trainer makes of the stored corpus with the recorded parameters', () => {
    const again = trainDictionary(samples, data.DICTIONARY_TRAINING.params).dictionary;
    expect(createHash('sha256').update(again).digest('hex')).toBe(data.DICTIONARY_SHA256);
  });

  it('holds none of the deployment-specific strings of its corpus', () => {
    const hay = Buffer.from(dict.bytes);
    const leaks: string[] = [];
    for (const s of samples) {
      for (const ex of s.exclude ?? []) {
        // Any 8-byte window of an id, token, name or message text would be a leak.
        for (let i = 0; i + 8 <= ex.length; i += 4) {
          if (hay.indexOf(Buffer.from(ex.subarray(i, i + 8))) >= 0) { leaks.push(Buffer.from(ex).toString('latin1')); break; }
        }
      }
    }
    expect([...new Set(leaks)]).toEqual([]);
  });
});

describe('compressBody / decompressBody', () => {
  const dict = matrixDictionaryV1();

  it('round-trips every corpus sample, and compresses only when strictly smaller', () => {
    let compressed = 0;
    for (const { bytes } of samples) {
      const z = compressBody(bytes, dict);
      if (z === undefined) {
        expect(deflateRaw(bytes, { dictionary: dict.bytes }).length).toBeGreaterThanOrEqual(bytes.length);
        continue;
      }
      compressed++;
      expect(z.length).toBeLessThan(bytes.length);
      const back = decompressBody(z, dict, bytes.length);
      expect(Buffer.from(back).equals(Buffer.from(bytes))).toBe(true);
      decodeTrickleCbor(back); // still the same CBOR
    }
    expect(compressed).toBeGreaterThan(samples.length / 2);
  });

  it('round-trips arbitrary bytes (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), (b) => {
      const z = compressBody(b, dict);
      if (z === undefined) return;
      expect(z.length).toBeLessThan(b.length);
      expect(decompressBody(z, dict, b.length)).toEqual(b);
    }), { numRuns: 300 });
  });

  it('leaves empty and incompressible bodies alone', () => {
    expect(compressBody(new Uint8Array(0), dict)).toBeUndefined();
    expect(compressBody(utf8.encode('ok'), dict)).toBeUndefined();
    const random = new Uint8Array(createHash('sha512').update('x').digest());
    expect(compressBody(random, dict)).toBeUndefined();
  });

  it('a sync response with one new message shrinks more with the dictionary than without', () => {
    const i = corpus.entries.findIndex((e) => {
      const join = (e.value as { rooms?: { join?: Record<string, { timeline?: { events?: unknown[] } }> } }).rooms?.join;
      return e.kind === 'response' && e.endpoint.endsWith('/sync') && join !== undefined &&
        Object.values(join).reduce((n, r) => n + (r.timeline?.events?.length ?? 0), 0) === 1;
    });
    const body = samples[i]!.bytes;
    const withDict = compressBody(body, dict);
    expect(withDict).toBeDefined();
    expect(withDict!.length).toBeLessThan(0.85 * Math.min(body.length, deflateRaw(body).length));
  });

  it('bounds the inflated size: a bomb stops at maxOutputBytes', () => {
    const big = new Uint8Array(1 << 20);
    const z = compressBody(big, dict)!;
    expect(z.length).toBeLessThan(2000);
    expect(code(() => decompressBody(z, dict, 64 * 1024))).toBe('ERR_INFLATE_LIMIT');
    expect(decompressBody(z, dict, big.length).length).toBe(big.length);
    expect(code(() => decompressBody(z, dict, big.length - 1))).toBe('ERR_INFLATE_LIMIT');
  });

  it('rejects corrupt streams with a WireError', () => {
    expect(code(() => decompressBody(new Uint8Array([0xff, 0xff, 0xff]), dict, 1000))).toBe('ERR_INFLATE');
    expect(code(() => decompressBody(new Uint8Array(0), dict, 1000))).toBe('ERR_INFLATE');
    const z = compressBody(samples[0]!.bytes, dict)!;
    expect(code(() => decompressBody(z.subarray(0, z.length >> 1), dict, 1 << 20))).toBe('ERR_INFLATE');
    try { decompressBody(new Uint8Array([0xff]), dict, 10); } catch (e) { expect(e).toBeInstanceOf(WireError); }
  });

  it('a stream made with one dictionary does not decode under another', () => {
    const other = loadDictionary({
      DICTIONARY_ID: 'other-v1',
      DICTIONARY_BASE64: Buffer.from(dict.bytes.map((b) => b ^ 0x5a)).toString('base64'),
      DICTIONARY_SHA256: createHash('sha256').update(dict.bytes.map((b) => b ^ 0x5a)).digest('hex'),
    });
    const body = samples.find((s) => s.bytes.length > 100 && s.bytes.length < 400)!.bytes;
    const z = compressBody(body, dict)!;
    let decoded: Uint8Array | undefined;
    try { decoded = decompressBody(z, other, body.length * 4); } catch (e) { expect(e).toBeInstanceOf(WireError); }
    if (decoded) expect(Buffer.from(decoded).equals(Buffer.from(body))).toBe(false);
  });
});

describe('loadDictionary: integrity and agreement', () => {
  const good = { DICTIONARY_ID: data.DICTIONARY_ID, DICTIONARY_BASE64: data.DICTIONARY_BASE64, DICTIONARY_SHA256: data.DICTIONARY_SHA256 };

  it('accepts the shipped data', () => {
    expect(loadDictionary(good).sha256).toBe(data.DICTIONARY_SHA256);
  });

  it('catches a modified dictionary and names it', () => {
    const b = Buffer.from(good.DICTIONARY_BASE64, 'base64');
    b[b.length - 1] = b[b.length - 1]! ^ 1;
    const bad = { ...good, DICTIONARY_BASE64: b.toString('base64') };
    expect(code(() => loadDictionary(bad))).toBe('ERR_DICTIONARY_MISMATCH');
    expect(() => loadDictionary(bad)).toThrow(/matrix-v1 is corrupt.*sha256/);
    expect(code(() => loadDictionary({ ...good, DICTIONARY_SHA256: '0'.repeat(64) }))).toBe('ERR_DICTIONARY_MISMATCH');
    expect(() => loadDictionary({ ...good, DICTIONARY_BASE64: good.DICTIONARY_BASE64.slice(0, -8) })).toThrow(/matrix-v1/);
  });

  it('refuses malformed data with a clear message', () => {
    expect(() => loadDictionary({ ...good, DICTIONARY_BASE64: 'not base64!' })).toThrow(/matrix-v1.*base64/);
    expect(() => loadDictionary({ ...good, DICTIONARY_SHA256: 'abc' })).toThrow(/64 hex/);
    expect(() => loadDictionary({ ...good, DICTIONARY_ID: 'Matrix V1' })).toThrow(/id/);
    expect(() => loadDictionary({ ...good, DICTIONARY_BASE64: '' })).toThrow(/0 bytes/);
  });

  it('assertSameDictionary: the same id and hash pass, anything else is ERR_DICTIONARY_MISMATCH naming both', () => {
    const d = matrixDictionaryV1();
    expect(() => assertSameDictionary(d, { id: d.id, sha256: d.sha256.toUpperCase() })).not.toThrow();
    expect(code(() => assertSameDictionary(d, { id: 'matrix-v2', sha256: d.sha256 }))).toBe('ERR_DICTIONARY_MISMATCH');
    expect(() => assertSameDictionary(d, { id: 'matrix-v1', sha256: 'f'.repeat(64) })).toThrow(/this end has matrix-v1.*the peer has matrix-v1/);
  });
});
