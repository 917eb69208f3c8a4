/**
 * JSON ⇄ CBOR for the Matrix CS API, with MSC3079 Appendix A integer keys.
 *
 * This file holds THE cbor-x configuration of the project; nothing else imports cbor-x.
 *
 * Wire profile (what we emit, byte for byte; RFC 8949 plain CBOR):
 * - No cbor-x extensions: no records (tag 105), no structured clone / shared refs (tags 28/29),
 *   no packed or bundled strings, no tag 259 on maps, no tag 64 on byte arrays. No tags at all.
 * - Objects become definite-length maps whose keys are emitted in RFC 7049 §3.9 canonical order
 *   (shorter encoded key first, then bytewise), which is what matrix-org/lb produces and what the
 *   shared vectors pin. Keys in Appendix A become their integer; all other keys stay text.
 *   Values are never mapped.
 * - Integers (Number.isSafeInteger) are CBOR integers (major type 0/1) in their shortest form.
 *   −0 is written as the integer 0, as JSON.stringify does.
 * - Every other number is an IEEE 754 binary64 (0xfb). We never shrink to float16/float32:
 *   a float64 is always exact, cbor-x cannot emit float16, and cbor-x's float32 modes round to
 *   decimal digits (not exact). Non-integers are rare in CS-API bodies (canonical JSON forbids
 *   them in signed events), so the 9 bytes cost nothing in practice. Integers beyond ±(2^53−1)
 *   (already inexact in JSON.parse) are float64 too.
 * - Text strings are definite-length UTF-8; strings with lone surrogates are refused
 *   (ERR_CBOR_TYPE) since they have no UTF-8 form.
 *
 * Decode profile (what we accept):
 * - Every input is first walked by a bounded scanner (below) that checks well-formedness and the
 *   JSON profile before cbor-x sees a byte: input length, nesting depth, item count and string
 *   length are bounded; truncation, trailing bytes, reserved additional information, stray
 *   breaks, invalid UTF-8 and duplicate map keys are ERR_CBOR_DECODE; tags, byte strings,
 *   undefined, other simple values, NaN/±Infinity, integers beyond ±(2^53−1) and map keys that
 *   are not text or a known Appendix A integer are ERR_CBOR_TYPE; bounds are ERR_CBOR_LIMIT.
 * - Indefinite-length arrays and maps are accepted within the bounds. Indefinite-length (chunked)
 *   text strings are refused (ERR_CBOR_DECODE): cbor-x 1.6 cannot decode them and neither
 *   MSC3079 implementation emits them.
 * - Integer keys outside Appendix A (and any integer key with keymap 'none') are refused with
 *   ERR_CBOR_TYPE. matrix-org/lb turns them into decimal text ("105"), which collides with literal
 *   numeric text keys that MSC3079 says must never be expanded, and silently accepts lb's
 *   federation-only keys 105..151; a table mismatch must fail loudly instead.
 * - A text key wins over its integer twin (MSC3079: "the string key MUST be used").
 *   Numeric-looking text keys ("8") are never expanded.
 */
import { Decoder, Encoder, FLOAT32_OPTIONS, type Options as CborxOptions } from 'cbor-x';
import { ConfigError, TrickleError, WireError, type ErrorCode } from '../errors.ts';
import { cborIntToKeyV1, cborKeyToIntV1 } from './keymap-v1.ts';

export type CborKeymap = 'v1' | 'none';

export interface EncodeJsonAsCborOptions {
  /** 'v1' (default): MSC3079 Appendix A integer keys; 'none': every key stays text. */
  keymap?: CborKeymap;
  /** Nesting bound for the JSON value (default 64, at most 512). */
  maxDepth?: number;
}

export interface CborDecodeLimits {
  /** Input length bound (default 1 MiB). */
  maxBytes?: number;
  /** Nested arrays/maps bound; a top-level map is depth 1 (default 64, at most 512). */
  maxDepth?: number;
  /** Data items bound, counting map keys and array/map elements (default 131072). */
  maxItems?: number;
  /** Bytes in one text string (default 65536, the Matrix limit on a whole event). */
  maxStringBytes?: number;
}

export interface DecodeCborAsJsonOptions extends CborDecodeLimits {
  /** 'v1' (default): integer keys map back to Appendix A names; 'none': integer keys are refused. */
  keymap?: CborKeymap;
}

export const CBOR_DECODE_DEFAULTS: Readonly<Required<CborDecodeLimits>> = Object.freeze({
  maxBytes: 1_048_576,
  maxDepth: 64,
  maxItems: 131_072,
  maxStringBytes: 65_536,
});

/** Hard ceiling for maxDepth, so neither our walkers nor cbor-x (both recursive) can exhaust the stack. */
export const CBOR_MAX_DEPTH_CEILING = 512;

// ---------------------------------------------------------------------------------------------
// The one cbor-x configuration.

const CBORX_OPTIONS: CborxOptions = Object.freeze({
  useRecords: false, //         no record extension (tag 105)
  structuredClone: false, //    no shared references (tags 28/29)
  pack: false, //               no packed values
  bundleStrings: false, //      no string bundles
  mapsAsObjects: false, //      decode maps as Map so integer keys survive; encode Map without tag 259
  variableMapSize: true, //     shortest map headers
  tagUint8Array: false, //      no tag 64
  useFloat32: FLOAT32_OPTIONS.NEVER, // non-integers as float64
  largeBigIntToFloat: false,
});

const encoder = new Encoder(CBORX_OPTIONS);
const decoder = new Decoder(CBORX_OPTIONS);

// ---------------------------------------------------------------------------------------------
// Encode

/**
 * Encode a JSON value (as JSON.parse returns it) as CBOR. Throws TrickleError ERR_CBOR_TYPE for
 * values JSON cannot hold (undefined, functions, non-finite numbers, lone surrogates, class
 * instances) and ERR_CBOR_LIMIT past maxDepth.
 */
export function encodeJsonAsCbor(value: unknown, opts: EncodeJsonAsCborOptions = {}): Uint8Array {
  const keymap = resolveKeymap(opts.keymap);
  const maxDepth = resolveDepth(opts.maxDepth ?? CBOR_DECODE_DEFAULTS.maxDepth);
  const model = toCborModel(value, keymap === 'v1', 0, maxDepth);
  let out: Uint8Array;
  try {
    out = encoder.encode(model);
  } catch (e) {
    throw new TrickleError('ERR_CBOR_TYPE', 'codec', `cbor-x refused the value: ${String(e)}`, undefined, { cause: e });
  }
  // cbor-x returns a Buffer view into its own scratch space: hand back a plain, owned copy.
  return new Uint8Array(out);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function encodeFail(code: ErrorCode, message: string): never {
  throw new TrickleError(code, 'codec', message);
}

function toCborModel(v: unknown, mapKeys: boolean, depth: number, maxDepth: number): unknown {
  switch (typeof v) {
    case 'string':
      if (LONE_SURROGATE.test(v)) encodeFail('ERR_CBOR_TYPE', 'string with a lone surrogate has no UTF-8 encoding');
      return v;
    case 'boolean':
      return v;
    case 'number':
      if (!Number.isFinite(v)) encodeFail('ERR_CBOR_TYPE', `${v} is not a JSON number`);
      if (Number.isSafeInteger(v)) {
        if (v === 0) return 0; // folds −0
        // cbor-x writes integers outside [−2^32, 2^32) as float64 unless they are BigInt.
        if (v >= 0x1_0000_0000 || v < -0x1_0000_0000) return BigInt(v);
        return v;
      }
      return v; // non-integer or beyond ±(2^53−1): float64
    case 'object': {
      if (v === null) return null;
      if (depth + 1 > maxDepth) encodeFail('ERR_CBOR_LIMIT', `JSON nesting deeper than maxDepth ${maxDepth}`);
      if (Array.isArray(v)) {
        const arr = new Array<unknown>(v.length);
        for (let i = 0; i < v.length; i++) arr[i] = toCborModel(v[i], mapKeys, depth + 1, maxDepth);
        return arr;
      }
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        encodeFail('ERR_CBOR_TYPE', 'only plain objects, arrays, strings, numbers, booleans and null can be encoded');
      }
      const rec = v as Record<string, unknown>;
      const entries: { key: string | number; sortKey: Uint8Array; value: unknown }[] = [];
      for (const k of Object.keys(rec)) {
        if (LONE_SURROGATE.test(k)) encodeFail('ERR_CBOR_TYPE', 'key with a lone surrogate has no UTF-8 encoding');
        const mapped = mapKeys ? cborKeyToIntV1(k) : undefined;
        const key = mapped ?? k;
        entries.push({ key, sortKey: encodeKeyHead(key), value: toCborModel(rec[k], mapKeys, depth + 1, maxDepth) });
      }
      entries.sort((a, b) => compareCanonical(a.sortKey, b.sortKey));
      return new Map(entries.map((e) => [e.key, e.value]));
    }
    default:
      return encodeFail('ERR_CBOR_TYPE', `${typeof v} is not a JSON value`);
  }
}

const textEncoder = new TextEncoder();

/** The encoded bytes of a map key (a small unsigned integer or a text string), for sorting. */
function encodeKeyHead(key: string | number): Uint8Array {
  if (typeof key === 'number') return encodeHead(0, key, new Uint8Array(0));
  const payload = textEncoder.encode(key);
  return encodeHead(3, payload.length, payload);
}

/** RFC 8949 §3 head (argument < 2^32) followed by the payload. */
function encodeHead(major: number, n: number, payload: Uint8Array): Uint8Array {
  let head: number[];
  if (n < 24) head = [(major << 5) | n];
  else if (n < 0x100) head = [(major << 5) | 24, n];
  else if (n < 0x10000) head = [(major << 5) | 25, n >> 8, n & 0xff];
  else head = [(major << 5) | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** RFC 7049 §3.9: shorter encoded key first, then bytewise lexical order. */
function compareCanonical(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Decode

/**
 * Decode one CBOR data item (the whole input) into a JSON value. Every failure is a WireError
 * with layer 'codec' and code ERR_CBOR_DECODE, ERR_CBOR_LIMIT or ERR_CBOR_TYPE.
 */
export function decodeCborAsJson(bytes: Uint8Array, opts: DecodeCborAsJsonOptions = {}): unknown {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('decodeCborAsJson expects a Uint8Array');
  const keymap = resolveKeymap(opts.keymap);
  const limits = resolveLimits(opts);
  new JsonProfileScanner(bytes, limits, keymap).scanAll();
  let raw: unknown;
  try {
    raw = decoder.decode(bytes);
  } catch (e) {
    // The scanner accepted the bytes, so this is a disagreement with cbor-x: still bad input.
    throw new WireError('ERR_CBOR_DECODE', 'codec', `cbor-x rejected the input: ${String(e)}`);
  }
  return toJsonValue(raw, keymap === 'v1');
}

function toJsonValue(v: unknown, mapKeys: boolean): unknown {
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'number':
      return v;
    case 'bigint':
      return Number(v); // the scanner guarantees |v| ≤ 2^53−1
    case 'object': {
      if (v === null) return null;
      if (Array.isArray(v)) return v.map((x) => toJsonValue(x, mapKeys));
      if (v instanceof Map) {
        const out: Record<string, unknown> = {};
        for (const [k, val] of v as Map<unknown, unknown>) {
          let name: string;
          if (typeof k === 'string') {
            name = k;
          } else {
            const mapped = mapKeys && (typeof k === 'number' || typeof k === 'bigint') ? cborIntToKeyV1(Number(k)) : undefined;
            if (mapped === undefined) throw new WireError('ERR_CBOR_TYPE', 'codec', `map key ${String(k)} has no JSON name`);
            if (v.has(mapped)) continue; // the text key wins over its integer twin
            name = mapped;
          }
          setOwn(out, name, toJsonValue(val, mapKeys));
        }
        return out;
      }
      break;
    }
    default:
      break;
  }
  throw new WireError('ERR_CBOR_TYPE', 'codec', `decoded item has no JSON equivalent (${Object.prototype.toString.call(v)})`);
}

/** Assign like JSON.parse does: "__proto__" becomes an own property, never the prototype. */
function setOwn(o: Record<string, unknown>, k: string, value: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });
  else o[k] = value;
}

// ---------------------------------------------------------------------------------------------
// Options

function resolveKeymap(k: unknown): CborKeymap {
  if (k === undefined || k === 'v1') return 'v1';
  if (k === 'none') return 'none';
  throw new ConfigError(`keymap must be 'v1' or 'none', got ${String(k)}`, { key: 'keymap', allowed: ['v1', 'none'] });
}

function resolveDepth(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > CBOR_MAX_DEPTH_CEILING) {
    throw new ConfigError(`maxDepth must be an integer from 0 to ${CBOR_MAX_DEPTH_CEILING}, got ${n}`, { key: 'maxDepth' });
  }
  return n;
}

function resolveLimits(opts: CborDecodeLimits): Required<CborDecodeLimits> {
  const r: Required<CborDecodeLimits> = {
    maxBytes: opts.maxBytes ?? CBOR_DECODE_DEFAULTS.maxBytes,
    maxDepth: resolveDepth(opts.maxDepth ?? CBOR_DECODE_DEFAULTS.maxDepth),
    maxItems: opts.maxItems ?? CBOR_DECODE_DEFAULTS.maxItems,
    maxStringBytes: opts.maxStringBytes ?? CBOR_DECODE_DEFAULTS.maxStringBytes,
  };
  for (const key of ['maxBytes', 'maxItems', 'maxStringBytes'] as const) {
    const n = r[key];
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new ConfigError(`${key} must be a non-negative integer, got ${n}`, { key });
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Bounded walkers. Both read RFC 8949 §3 heads with the same Reader; recursion depth is capped by
// maxDepth (≤ CBOR_MAX_DEPTH_CEILING), every length is checked against the bytes left before
// anything is allocated, and the item counter bounds the work.

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  pos = 0;
  items = 0;
  /** Fields of the last head read. */
  major = 0;
  ai = 0;
  /** The argument; exact below 2^53, rounded (but ≥ 2^53) above. −1 for indefinite length. */
  arg = 0;
  /** Upper 32 bits of an 8-byte argument (for float64 classification and BigInt rendering). */
  hi = 0;
  lo = 0;

  constructor(readonly b: Uint8Array, readonly lim: Required<CborDecodeLimits>) {
    if (b.length > lim.maxBytes) this.fail('ERR_CBOR_LIMIT', `input of ${b.length} bytes exceeds maxBytes ${lim.maxBytes}`);
  }

  fail(code: ErrorCode, message: string): never {
    throw new WireError(code, 'codec', message, { offset: this.pos });
  }

  get left(): number {
    return this.b.length - this.pos;
  }

  countItem(n = 1): void {
    this.items += n;
    if (this.items > this.lim.maxItems) this.fail('ERR_CBOR_LIMIT', `more than maxItems ${this.lim.maxItems} data items`);
  }

  need(n: number): void {
    if (n > this.left) this.fail('ERR_CBOR_DECODE', `truncated: need ${n} more bytes, ${this.left} left`);
  }

  /** RFC 8949 §3: initial byte, then a 0/1/2/4/8-byte argument. */
  readHead(): void {
    this.need(1);
    const ib = this.b[this.pos++] as number;
    this.major = ib >> 5;
    this.ai = ib & 0x1f;
    this.hi = 0;
    if (this.ai < 24) {
      this.arg = this.lo = this.ai;
      return;
    }
    const b = this.b;
    switch (this.ai) {
      case 24:
        this.need(1);
        this.arg = this.lo = b[this.pos++] as number;
        return;
      case 25:
        this.need(2);
        this.arg = this.lo = ((b[this.pos] as number) << 8) | (b[this.pos + 1] as number);
        this.pos += 2;
        return;
      case 26:
        this.need(4);
        this.arg = this.lo = this.u32(this.pos);
        this.pos += 4;
        return;
      case 27:
        this.need(8);
        this.hi = this.u32(this.pos);
        this.lo = this.u32(this.pos + 4);
        this.arg = this.hi * 0x1_0000_0000 + this.lo;
        this.pos += 8;
        return;
      case 31:
        this.arg = -1;
        if (this.major === 0 || this.major === 1 || this.major === 6) {
          this.pos--;
          this.fail('ERR_CBOR_DECODE', `additional information 31 is not allowed for major type ${this.major}`);
        }
        return;
      default: // 28..30, RFC 8949 §3: reserved, not well-formed
        this.pos--;
        return this.fail('ERR_CBOR_DECODE', `reserved additional information ${this.ai}`);
    }
  }

  u32(at: number): number {
    const b = this.b;
    return (((b[at] as number) << 24) >>> 0) + ((b[at + 1] as number) << 16) + ((b[at + 2] as number) << 8) + (b[at + 3] as number);
  }

  /** A definite-length text string payload of `len` bytes, as a validated JS string. */
  text(len: number): string {
    if (len > this.lim.maxStringBytes) this.fail('ERR_CBOR_LIMIT', `string of ${len} bytes exceeds maxStringBytes ${this.lim.maxStringBytes}`);
    this.need(len);
    let s: string;
    try {
      s = fatalUtf8.decode(this.b.subarray(this.pos, this.pos + len));
    } catch {
      return this.fail('ERR_CBOR_DECODE', 'text string is not valid UTF-8');
    }
    this.pos += len;
    return s;
  }

  /** Reject a definite container count that cannot fit the bounds or the bytes left. */
  checkCount(count: number, perEntry: number): void {
    if (count > this.lim.maxItems || count * perEntry > this.lim.maxItems - this.items) {
      this.fail('ERR_CBOR_LIMIT', `container of ${count} entries exceeds maxItems ${this.lim.maxItems}`);
    }
    if (count * perEntry > this.left) this.fail('ERR_CBOR_DECODE', `truncated: ${count} entries declared, ${this.left} bytes left`);
  }

  enter(depth: number): void {
    if (depth > this.lim.maxDepth) this.fail('ERR_CBOR_LIMIT', `nesting deeper than maxDepth ${this.lim.maxDepth}`);
  }

  /** Consume a break (0xff) if it is next. */
  atBreak(): boolean {
    this.need(1);
    if (this.b[this.pos] === 0xff) {
      this.pos++;
      return true;
    }
    return false;
  }

  finish(): void {
    if (this.pos !== this.b.length) this.fail('ERR_CBOR_DECODE', `${this.left} trailing bytes after the data item`);
  }
}

/** Well-formedness plus the JSON profile; throws WireError, returns nothing. */
class JsonProfileScanner extends Reader {
  constructor(b: Uint8Array, lim: Required<CborDecodeLimits>, readonly keymap: CborKeymap) {
    super(b, lim);
  }

  scanAll(): void {
    this.item(0);
    this.finish();
  }

  item(depth: number): void {
    this.countItem();
    const start = this.pos;
    this.readHead();
    switch (this.major) {
      case 0:
        if (this.arg > MAX_SAFE) this.typeFail(start, 'integer beyond 2^53−1 has no exact JSON number');
        return;
      case 1:
        if (this.arg >= MAX_SAFE) this.typeFail(start, 'integer beyond −(2^53−1) has no exact JSON number');
        return;
      case 2:
        return this.typeFail(start, 'byte string has no JSON equivalent');
      case 3:
        this.textItem(start);
        return;
      case 4: {
        this.enter(depth + 1);
        if (this.arg < 0) {
          while (!this.atBreak()) this.item(depth + 1);
          return;
        }
        const n = this.arg;
        this.checkCount(n, 1);
        for (let i = 0; i < n; i++) this.item(depth + 1);
        return;
      }
      case 5: {
        this.enter(depth + 1);
        const seen = new Set<string | number>();
        if (this.arg < 0) {
          while (!this.atBreak()) this.entry(depth + 1, seen);
          return;
        }
        const n = this.arg;
        this.checkCount(n, 2);
        for (let i = 0; i < n; i++) this.entry(depth + 1, seen);
        return;
      }
      case 6:
        return this.typeFail(start, `tag ${this.arg} has no JSON equivalent`);
      default:
        this.simpleOrFloat(start);
    }
  }

  textItem(start: number): string {
    if (this.arg < 0) {
      this.pos = start;
      return this.fail('ERR_CBOR_DECODE', 'indefinite-length text strings are not accepted');
    }
    return this.text(this.arg);
  }

  entry(depth: number, seen: Set<string | number>): void {
    this.countItem();
    const start = this.pos;
    this.readHead();
    let key: string | number;
    if (this.major === 3) {
      key = this.textItem(start);
    } else if (this.major === 0) {
      if (this.keymap === 'none') this.typeFail(start, `integer map key ${this.arg} with keymap 'none'`);
      if (this.arg > 0xffff || cborIntToKeyV1(this.arg) === undefined) {
        this.typeFail(start, `integer map key ${this.arg} is not in MSC3079 Appendix A (v1)`);
      }
      key = this.arg;
    } else if (this.major === 1) {
      return this.typeFail(start, 'negative integer map key is not in MSC3079 Appendix A');
    } else {
      return this.typeFail(start, `map key of major type ${this.major} has no JSON equivalent`);
    }
    if (seen.has(key)) {
      this.pos = start;
      this.fail('ERR_CBOR_DECODE', `duplicate map key ${JSON.stringify(key)}`);
    }
    seen.add(key);
    this.item(depth);
  }

  simpleOrFloat(start: number): void {
    switch (this.ai) {
      case 20: // false
      case 21: // true
      case 22: // null
        return;
      case 23:
        return this.typeFail(start, 'undefined has no JSON equivalent');
      case 24:
        if (this.arg < 32) {
          this.pos = start;
          return this.fail('ERR_CBOR_DECODE', `simple value ${this.arg} in two bytes is not well-formed`);
        }
        return this.typeFail(start, `simple(${this.arg}) has no JSON equivalent`);
      case 25:
        if (((this.arg >> 10) & 0x1f) === 0x1f) this.typeFail(start, 'NaN/Infinity has no JSON equivalent');
        return;
      case 26:
        if (((this.arg >>> 23) & 0xff) === 0xff) this.typeFail(start, 'NaN/Infinity has no JSON equivalent');
        return;
      case 27:
        if (((this.hi >>> 20) & 0x7ff) === 0x7ff) this.typeFail(start, 'NaN/Infinity has no JSON equivalent');
        return;
      case 31:
        this.pos = start;
        return this.fail('ERR_CBOR_DECODE', 'break outside an indefinite-length item');
      default:
        return this.typeFail(start, `simple(${this.ai}) has no JSON equivalent`);
    }
  }

  typeFail(start: number, message: string): never {
    this.pos = start;
    return this.fail('ERR_CBOR_TYPE', message);
  }
}

// ---------------------------------------------------------------------------------------------
// Diagnostic notation

/**
 * RFC 8949 §8 diagnostic notation of one CBOR data item (whole input), e.g.
 * `{2: "m.room.message", 3: {27: "Hello"}}`. Every well-formed item is shown (tags, byte strings,
 * undefined, simple values, indefinite lengths as `[_ …]`, `{_ …}`, `(_ …)`, `''_`, `""_`).
 * Integer keys are shown as integers (no Appendix A names). Malformed input, invalid UTF-8 and
 * exceeded limits throw WireError like decodeCborAsJson.
 */
export function cborDiagnostic(bytes: Uint8Array, limits: CborDecodeLimits = {}): string {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('cborDiagnostic expects a Uint8Array');
  const r = new DiagnosticWriter(bytes, resolveLimits(limits));
  const s = r.item(0);
  r.finish();
  return s;
}

class DiagnosticWriter extends Reader {
  item(depth: number): string {
    this.countItem();
    const start = this.pos;
    this.readHead();
    switch (this.major) {
      case 0:
        return this.bigArg().toString();
      case 1:
        return (-1n - this.bigArg()).toString();
      case 2:
      case 3:
        return this.str();
      case 4: {
        this.enter(depth + 1);
        const parts: string[] = [];
        if (this.arg < 0) {
          while (!this.atBreak()) parts.push(this.item(depth + 1));
          return `[_ ${parts.join(', ')}]`;
        }
        const n = this.arg;
        this.checkCount(n, 1);
        for (let i = 0; i < n; i++) parts.push(this.item(depth + 1));
        return `[${parts.join(', ')}]`;
      }
      case 5: {
        this.enter(depth + 1);
        const parts: string[] = [];
        if (this.arg < 0) {
          while (!this.atBreak()) parts.push(`${this.item(depth + 1)}: ${this.item(depth + 1)}`);
          return `{_ ${parts.join(', ')}}`;
        }
        const n = this.arg;
        this.checkCount(n, 2);
        for (let i = 0; i < n; i++) parts.push(`${this.item(depth + 1)}: ${this.item(depth + 1)}`);
        return `{${parts.join(', ')}}`;
      }
      case 6: {
        const tag = this.bigArg();
        this.enter(depth + 1);
        return `${tag}(${this.item(depth + 1)})`;
      }
      default:
        return this.simpleOrFloat(start);
    }
  }

  bigArg(): bigint {
    return this.ai === 27 ? (BigInt(this.hi) << 32n) | BigInt(this.lo) : BigInt(this.arg);
  }

  str(): string {
    const major = this.major;
    if (this.arg >= 0) return this.chunk(major, this.arg);
    // Indefinite length: definite chunks of the same major type until a break (RFC 8949 §3.2.3).
    const chunks: string[] = [];
    while (!this.atBreak()) {
      this.countItem();
      const at = this.pos;
      this.readHead();
      if (this.major !== major || this.arg < 0) {
        this.pos = at;
        this.fail('ERR_CBOR_DECODE', 'indefinite-length string chunk of the wrong type');
      }
      chunks.push(this.chunk(major, this.arg));
    }
    if (chunks.length === 0) return major === 2 ? "''_" : '""_';
    return `(_ ${chunks.join(', ')})`;
  }

  chunk(major: number, len: number): string {
    if (major === 3) return JSON.stringify(this.text(len));
    if (len > this.lim.maxStringBytes) this.fail('ERR_CBOR_LIMIT', `string of ${len} bytes exceeds maxStringBytes ${this.lim.maxStringBytes}`);
    this.need(len);
    let hex = '';
    for (let i = 0; i < len; i++) hex += (this.b[this.pos + i] as number).toString(16).padStart(2, '0');
    this.pos += len;
    return `h'${hex}'`;
  }

  simpleOrFloat(start: number): string {
    switch (this.ai) {
      case 20:
        return 'false';
      case 21:
        return 'true';
      case 22:
        return 'null';
      case 23:
        return 'undefined';
      case 24:
        if (this.arg < 32) {
          this.pos = start;
          this.fail('ERR_CBOR_DECODE', `simple value ${this.arg} in two bytes is not well-formed`);
        }
        return `simple(${this.arg})`;
      case 25:
        return formatFloat(halfToNumber(this.arg));
      case 26: {
        const dv = new DataView(new ArrayBuffer(4));
        dv.setUint32(0, this.arg);
        return formatFloat(dv.getFloat32(0));
      }
      case 27: {
        const dv = new DataView(new ArrayBuffer(8));
        dv.setUint32(0, this.hi);
        dv.setUint32(4, this.lo);
        return formatFloat(dv.getFloat64(0));
      }
      case 31:
        this.pos = start;
        return this.fail('ERR_CBOR_DECODE', 'break outside an indefinite-length item');
      default:
        return `simple(${this.ai})`;
    }
  }
}

/** IEEE 754 binary16 → number (RFC 8949 Appendix D). */
function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Floats always carry a '.' or an exponent so they cannot be read back as integers (RFC 8949 §8). */
function formatFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (Object.is(x, -0)) return '-0.0';
  const s = String(x);
  if (s.includes('.')) return s;
  const e = s.indexOf('e');
  return e < 0 ? `${s}.0` : `${s.slice(0, e)}.0${s.slice(e)}`; // 1e+300 → 1.0e+300 as in RFC 8949 Appendix A

}
