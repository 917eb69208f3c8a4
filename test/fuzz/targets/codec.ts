/** Body codecs: plain MSC3079 CBOR (cbor.ts), Trickle CBOR v1, bounded raw DEFLATE. */
import { TrickleError, WireError } from '../../../src/errors.ts';
import { decodeCborAsJson, encodeJsonAsCbor, cborDiagnostic } from '../../../src/codec/cbor.ts';
import { decodeTrickleCbor, encodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { deflateRaw, inflateRawBounded } from '../../../src/codec/deflate.ts';
import { compressBody, matrixDictionaryV1 } from '../../../src/codec/dictionary.ts';
import { equalBytes } from '../../../src/util/bytes.ts';
import { check, expectCoded, type FuzzTarget } from '../engine.ts';
import { deepEqual, hex, readJson, show, utf8Bytes } from '../util.ts';

const CBOR_CODES = new Set(['ERR_CBOR_DECODE', 'ERR_CBOR_LIMIT', 'ERR_CBOR_TYPE']);
const isCborError = (e: TrickleError): boolean => e instanceof WireError && CBOR_CODES.has(e.code);

export const CBOR_TOKENS: readonly Uint8Array[] = [
  Uint8Array.of(0x9f), Uint8Array.of(0xbf), Uint8Array.of(0xff), Uint8Array.of(0x7f), Uint8Array.of(0x5f), Uint8Array.of(0xc0),
  Uint8Array.of(0xf6), Uint8Array.of(0xf7), Uint8Array.of(0xf9, 0x7c, 0x00), Uint8Array.of(0xfa, 0x7f, 0xc0, 0, 0), Uint8Array.of(0xfb, 0x80, 0, 0, 0, 0, 0, 0, 0),
  Uint8Array.of(0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0), Uint8Array.of(0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
  Uint8Array.of(0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), Uint8Array.of(0x7a, 0xff, 0xff, 0xff, 0xff), Uint8Array.of(0xba, 0x7f, 0xff, 0xff, 0xff),
  Uint8Array.of(0xa1, 0x01), Uint8Array.of(0x42, 0x01, 0x02), Uint8Array.of(0x58, 0x20), Uint8Array.of(0xe0), Uint8Array.of(0xf8, 0x20), Uint8Array.of(0xf8, 0xff),
  Uint8Array.of(0x81, 0x81, 0x81, 0x81), Uint8Array.of(0x63, 0xef, 0xbb, 0xbf),
];

interface CorpusFile { entries: { value: unknown }[] }

let corpusValues: unknown[] | undefined;
/** Real Matrix request and response bodies (test/vectors/corpus/matrix-v1.json), small ones first. */
export function matrixValues(): unknown[] {
  corpusValues ??= readJson<CorpusFile>('test/vectors/corpus/matrix-v1.json').entries.map((e) => e.value)
    .filter((v) => JSON.stringify(v).length < 3000)
    .sort((a, b) => JSON.stringify(a).length - JSON.stringify(b).length);
  return corpusValues;
}

interface ProfileVectors { reject: { cbor_hex: string }[]; accept: { cbor_hex: string }[] }
interface DiagVectors { vectors: { cbor_hex: string }[] }

export const cbor: FuzzTarget = {
  name: 'cbor',
  description: 'decodeCborAsJson (MSC3079 profile, keymap v1) + cborDiagnostic: only ERR_CBOR_* WireErrors; decode → encodeJsonAsCbor → decode gives the same JSON value (−0 folds to 0 by design)',
  maxLen: 2048,
  dictionary: CBOR_TOKENS,
  seeds() {
    const p = readJson<ProfileVectors>('test/vectors/codec/cbor-json-profile.json');
    const d = readJson<DiagVectors>('test/vectors/codec/cbor-diagnostic.json');
    return [
      ...p.accept.map((x) => hex(x.cbor_hex)), ...p.reject.map((x) => hex(x.cbor_hex)), ...d.vectors.map((x) => hex(x.cbor_hex)),
      ...matrixValues().slice(0, 120).map((v) => encodeJsonAsCbor(v)),
    ];
  },
  run(input) {
    const diag = expectCoded(() => cborDiagnostic(input), isCborError);
    if (diag.ok) check(typeof diag.value === 'string', 'cborDiagnostic returned no string');
    const none = expectCoded(() => decodeCborAsJson(input, { keymap: 'none' }), isCborError);
    const r = expectCoded(() => decodeCborAsJson(input), isCborError);
    if (!r.ok) return `${r.outcome}/${diag.ok ? 'diag' : 'nodiag'}/${none.ok ? 'none' : ''}`;
    const v = r.value;
    check(v !== undefined, 'decoded undefined');
    const again = decodeCborAsJson(encodeJsonAsCbor(v));
    check(deepEqual(again, v, false), () => `decode → encode → decode changed the value: ${show(v)} → ${show(again)}`);
    check(diag.ok, 'decodeCborAsJson accepted what cborDiagnostic refused');
    // Differential: Trickle CBOR v1 also reads plain MSC3079 CBOR; where both accept, both agree.
    const t = expectCoded(() => decodeTrickleCbor(input, { resolveHandle }), isTrickleCborError);
    if (t.ok) check(deepEqual(t.value, v, false), () => `decodeCborAsJson and decodeTrickleCbor disagree: ${show(v)} vs ${show(t.value)}`);
    return `ok:${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v}/${none.ok ? 'none' : ''}`;
  },
};

// ---------------------------------------------------------------------------------------------

/** A fixed handle table: the strings a session might hold, numbered 0..N−1. */
export const HANDLE_STRINGS: readonly string[] = [
  '!LPFxx2cicGw996xyi9uwx3beNE2LUytYixXmuhZPank', '@alice:localhost', '@bob:localhost', 's72594_4483_1934', '$LYINMXTTdyrb5SZ558dcJjRbm38NPZHkW8G_2_EEiv4',
  '!room:hs', '@me:hs', 'f1', ...Array.from({ length: 200 }, (_, i) => `!r${i}:example.org`),
];
const HANDLE_OF = new Map(HANDLE_STRINGS.map((s, i) => [s, i] as const));
export const resolveHandle = (n: number): string | undefined => HANDLE_STRINGS[n];
export const handleOf = (s: string): number | undefined => HANDLE_OF.get(s);

const TRICKLE_CODES = new Set([...CBOR_CODES, 'ERR_HANDLE_UNKNOWN']);
const isTrickleCborError = (e: TrickleError): boolean => e instanceof WireError && TRICKLE_CODES.has(e.code);

export const trickleCbor: FuzzTarget = {
  name: 'trickle-cbor',
  description: 'decodeTrickleCbor (value enums, raw event ids, handles): only ERR_CBOR_* / ERR_HANDLE_UNKNOWN WireErrors; decode → encodeTrickleCbor (same handles) → decode gives the same value, −0 included',
  maxLen: 2048,
  dictionary: CBOR_TOKENS,
  seeds() {
    const vals = matrixValues().slice(0, 150);
    return [
      ...vals.map((v) => encodeTrickleCbor(v, { handleOf })), ...vals.slice(0, 30).map((v) => encodeTrickleCbor(v)),
      encodeTrickleCbor({ a: -0, b: 1.5, c: [HANDLE_STRINGS[0], HANDLE_STRINGS[4], 'm.text'], d: 2 ** 40 }, { handleOf }),
    ];
  },
  run(input) {
    const literals: string[] = [];
    const r = expectCoded(() => decodeTrickleCbor(input, { resolveHandle, onLiteral: (s) => literals.push(s) }), isTrickleCborError);
    if (!r.ok) return r.outcome;
    const v = r.value;
    const y = encodeTrickleCbor(v, { handleOf });
    const again = decodeTrickleCbor(y, { resolveHandle });
    check(deepEqual(again, v, true), () => `decode → encode → decode changed the value: ${show(v)} → ${show(again)}`);
    const z = encodeTrickleCbor(again, { handleOf });
    check(equalBytes(y, z), 'encodeTrickleCbor is not deterministic on a decoded value');
    check(literals.length <= input.length, 'more literals than bytes');
    return `ok:${Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v}`;
  },
};

// ---------------------------------------------------------------------------------------------

const INFLATE_MAX = 64 * 1024;
const INFLATE_CODES = new Set(['ERR_INFLATE', 'ERR_INFLATE_LIMIT']);
const isInflateError = (e: TrickleError): boolean => e instanceof WireError && INFLATE_CODES.has(e.code);

export const deflate: FuzzTarget = {
  name: 'deflate',
  description: 'inflateRawBounded with and without the matrix-v1 dictionary: only ERR_INFLATE / ERR_INFLATE_LIMIT; output ≤ maxOutputBytes; deflateRaw(out) inflates back to out',
  maxLen: 1024,
  dictionary: [Uint8Array.of(0x00, 0x00, 0xff, 0xff), Uint8Array.of(0x03, 0x00), Uint8Array.of(0x01), Uint8Array.of(0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00, 0xc2, 0xa0)],
  cost: 2,
  seeds() {
    const dict = matrixDictionaryV1().bytes;
    const vals = matrixValues().slice(0, 40).map((v) => encodeTrickleCbor(v, { handleOf }));
    const bomb = new Uint8Array(200_000);
    return [
      ...vals.map((b) => compressBody(b) ?? deflateRaw(b, { dictionary: dict })), ...vals.slice(0, 10).map((b) => deflateRaw(b)),
      deflateRaw(bomb), deflateRaw(new Uint8Array(INFLATE_MAX)), deflateRaw(utf8Bytes('hello hello hello'), { level: 0 }),
    ];
  },
  run(input) {
    const dict = matrixDictionaryV1().bytes;
    const outcomes: string[] = [];
    for (const dictionary of [undefined, dict]) {
      const r = expectCoded(() => inflateRawBounded(input, { maxOutputBytes: INFLATE_MAX, ...(dictionary ? { dictionary } : {}) }), isInflateError);
      if (!r.ok) { outcomes.push(r.outcome); continue; }
      const out = r.value;
      check(out.length <= INFLATE_MAX, `inflated ${out.length} bytes past the bound ${INFLATE_MAX}`);
      const z = deflateRaw(out, dictionary ? { dictionary } : {});
      const back = inflateRawBounded(z, { maxOutputBytes: INFLATE_MAX, ...(dictionary ? { dictionary } : {}) });
      check(equalBytes(back, out), 'deflateRaw → inflateRawBounded did not give the bytes back');
      outcomes.push(`ok:${out.length === 0 ? 'empty' : out.length < 1024 ? 'small' : 'large'}`);
    }
    return outcomes.join(',');
  },
};

export const CODEC_TARGETS: readonly FuzzTarget[] = [cbor, trickleCbor, deflate];
