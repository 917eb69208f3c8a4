import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ConfigError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import { deflateRaw } from '../../../src/codec/deflate.ts';
import { eventIdToBytes } from '../../../src/codec/trickle-cbor-v1.ts';
import {
  compressedSize, matrixTrainingSample, optimizeDictionary, trainDictionary, type TrainingSample,
} from '../../../src/codec/dictionary-train.ts';

interface Corpus { volatile: string[]; entries: { kind: 'request' | 'response'; endpoint: string; value: unknown }[] }
const corpus = JSON.parse(readFileSync(new URL('../../vectors/corpus/matrix-v1.json', import.meta.url), 'utf8')) as Corpus;

const contains = (hay: Uint8Array, needle: Uint8Array): boolean => Buffer.from(hay).indexOf(Buffer.from(needle)) >= 0;
const text = (words: string[]) => utf8.encode(words.join(' '));

describe('trainDictionary', () => {
  const samples = Array.from({ length: 40 }, (_, i) =>
    text([`{"type":"m.room.message","n":${i}`, i % 2 ? 'common-to-half-of-them' : 'x', 'shared-by-every-sample', `${i * 7919}`]));

  it('is deterministic', () => {
    const a = trainDictionary(samples, { dictionaryBytes: 256, dmerBytes: 4, segmentBytes: 16 });
    const b = trainDictionary(samples.map((s) => s.slice()), { dictionaryBytes: 256, dmerBytes: 4, segmentBytes: 16 });
    expect(a.dictionary.length).toBeGreaterThan(0);
    expect(Buffer.from(a.dictionary).equals(Buffer.from(b.dictionary))).toBe(true);
    expect(a.segments).toEqual(b.segments);
  });

  it('puts the most valuable material last and the less valuable before it', () => {
    const { dictionary } = trainDictionary(samples, { dictionaryBytes: 256, dmerBytes: 4, segmentBytes: 64 });
    const s = Buffer.from(dictionary).toString('latin1');
    const every = s.lastIndexOf('shared-by-every-sample');
    const half = s.lastIndexOf('common-to-half-of-them');
    expect(every).toBeGreaterThanOrEqual(0);
    expect(half).toBeGreaterThanOrEqual(0);
    expect(half).toBeLessThan(every);
    // Nothing is bought twice.
    expect(s.indexOf('shared-by-every-sample')).toBe(every);
  });

  it('never exceeds the target and cuts the least valuable (front) part', () => {
    const full = trainDictionary(samples, { dictionaryBytes: 4096, dmerBytes: 4, segmentBytes: 16 }).dictionary;
    for (const n of [1, 7, 32, 100]) {
      const d = trainDictionary(samples, { dictionaryBytes: n, dmerBytes: 4, segmentBytes: 16 }).dictionary;
      expect(d.length).toBeLessThanOrEqual(n);
      if (full.length >= n) expect(Buffer.from(d).equals(Buffer.from(full.subarray(full.length - d.length)))).toBe(true);
    }
  });

  it('returns an empty dictionary when nothing repeats across samples', () => {
    const lone = [text(['abcdefgh']), text(['ijklmnop']), text(['qrstuvwx'])];
    expect(trainDictionary(lone, { dictionaryBytes: 1024 }).dictionary.length).toBe(0);
    expect(trainDictionary([], { dictionaryBytes: 1024 }).dictionary.length).toBe(0);
  });

  it('rejects bad options with a message naming the key', () => {
    expect(() => trainDictionary(samples, { dictionaryBytes: 0 })).toThrow(ConfigError);
    expect(() => trainDictionary(samples, { dictionaryBytes: 40_000 })).toThrow(/32768/);
    expect(() => trainDictionary(samples, { dictionaryBytes: 64, dmerBytes: 7 as never })).toThrow(/dmerBytes/);
    expect(() => trainDictionary(samples, { dictionaryBytes: 64, dmerBytes: 6, segmentBytes: 5 })).toThrow(/segmentBytes/);
    expect(() => trainDictionary(samples, { dictionaryBytes: 64, minSampleCount: 0 })).toThrow(/minSampleCount/);
  });

  it('every dictionary byte comes from a sample, and excluded bytes never do (property)', () => {
    const word = fc.constantFrom('m.room.message', 'content', 'sender', 'origin_server_ts', 'event_id', '{"', '":', 'SECRET-TOKEN', 'unsigned', 'age');
    const sample = fc.array(word, { minLength: 1, maxLength: 12 }).map((w) => utf8.encode(w.join('')));
    fc.assert(fc.property(fc.array(sample, { minLength: 2, maxLength: 12 }), fc.integer({ min: 4, max: 6 }), (raw, d) => {
      const secret = utf8.encode('SECRET-TOKEN');
      const train: TrainingSample[] = raw.map((bytes) => ({ bytes, exclude: [secret] }));
      const r = trainDictionary(train, { dictionaryBytes: 512, dmerBytes: d as 4 | 5 | 6, segmentBytes: 24 });
      expect(r.dictionary.length).toBeLessThanOrEqual(512);
      // No byte of any occurrence of the secret: not even its middle part.
      expect(contains(r.dictionary, utf8.encode('CRET-TO'))).toBe(false);
      for (const seg of r.segments) {
        if (seg.length === 0) continue;
        const bytes = r.dictionary.subarray(seg.offset, seg.offset + seg.length);
        expect(raw.some((s) => contains(s, bytes))).toBe(true);
      }
    }), { numRuns: 200 });
  });
});

describe('matrixTrainingSample', () => {
  const EVENT = '$YUwRidLecu_HyqLRz9k5RGNsC0bYz5wCHaD8nH9PvwQ';
  it('excludes ids, the server name, tokens and what people typed, and keeps the structure', () => {
    const value = {
      next_batch: 's72595_4483_1934',
      rooms: { join: { '!room:example.org': { timeline: { events: [{ type: 'm.room.message', sender: '@carol:example.org', event_id: EVENT, content: { msgtype: 'm.text', body: 'meet at the hut' } }] } } } },
      device_lists: { changed: ['@carol:example.org'] },
      server: 'https://matrix.example.org/',
      user: { displayname: 'Carol', display_name: 'Carol H.' },
    };
    const s = matrixTrainingSample(value, ['example.org']);
    const ex = (s.exclude ?? []).map((b) => Buffer.from(b).toString('latin1'));
    for (const x of ['s72595_4483_1934', '!room:example.org', '@carol:example.org', EVENT, 'meet at the hut', 'https://matrix.example.org/', 'Carol', 'Carol H.']) {
      expect(ex).toContain(x);
    }
    expect(s.exclude!.some((b) => Buffer.from(b).equals(Buffer.from(eventIdToBytes(EVENT)!)))).toBe(true);
    expect(ex).not.toContain('m.room.message');
    // Training on many such samples learns structure but not the ids.
    const many = Array.from({ length: 10 }, () => s);
    const d = trainDictionary(many, { dictionaryBytes: 1024, dmerBytes: 4, segmentBytes: 16 }).dictionary;
    expect(d.length).toBeGreaterThan(0);
    expect(contains(d, utf8.encode('example'))).toBe(false);
    expect(contains(d, eventIdToBytes(EVENT)!.subarray(0, 8))).toBe(false);
  });
});

describe('on real traffic (test/vectors/corpus/matrix-v1.json)', () => {
  const samples = corpus.entries.map((e) => matrixTrainingSample(e.value, corpus.volatile));
  const train = samples.filter((_, i) => i % 5 !== 4);
  const heldOut = samples.filter((_, i) => i % 5 === 4).map((s) => s.bytes);

  it('a dictionary trained on 80 % beats no dictionary on the held-out 20 %', () => {
    expect(samples.length).toBeGreaterThan(200);
    const { dictionary } = trainDictionary(train, { dictionaryBytes: 4096, dmerBytes: 6, segmentBytes: 64 });
    const cbor = heldOut.reduce((a, b) => a + b.length, 0);
    const plain = compressedSize(heldOut);
    const withDict = compressedSize(heldOut, dictionary);
    const n = heldOut.length;
    console.log(`held-out n=${n}: CBOR ${(cbor / n).toFixed(1)} B, +DEFLATE ${(plain / n).toFixed(1)} B, +DEFLATE+dict ${(withDict / n).toFixed(1)} B per sample`);
    expect(withDict).toBeLessThan(plain * 0.9);
    // Small messages are where a dictionary matters: most of them should shrink.
    const small = heldOut.filter((b) => b.length >= 24 && b.length <= 512);
    const shrunk = small.filter((b) => deflateRaw(b, { dictionary }).length < b.length).length;
    expect(shrunk / small.length).toBeGreaterThan(0.5);
  });

  it('optimizeDictionary keeps the grid winner and reports every trial', () => {
    const r = optimizeDictionary(samples.slice(0, 120), { dictionaryBytes: [2048, 512], dmerBytes: [5], segmentBytes: [32], tolerance: 0 });
    expect(r.trials.map((t) => t.params.dictionaryBytes)).toEqual([512, 2048]);
    const best = Math.min(...r.trials.map((t) => t.validationBytes));
    expect(r.trials.find((t) => t.validationBytes === best)!.params).toEqual(r.params);
    // With a generous tolerance the smaller dictionary wins.
    expect(optimizeDictionary(samples.slice(0, 120), { dictionaryBytes: [2048, 512], dmerBytes: [5], segmentBytes: [32], tolerance: 1 }).params.dictionaryBytes).toBe(512);
    expect(r.dictionary.length).toBeLessThanOrEqual(r.params.dictionaryBytes);
  });
});
