/**
 * Trickle CBOR, version 1: JSON as RFC 8949 CBOR with three lossless extensions on top of
 * MSC3079 v1 integer keys (keymap-v1.ts, unchanged). Each extension uses a CBOR item that
 * plain JSON can never produce, so decoding is unambiguous:
 *
 *  1. Value enums (values-v1.ts): a string from the table, anywhere (map key or value), is the
 *     simple value 0–19 (one byte, 0xE0–0xF3) or 32–255 (two bytes, 0xF8 nn).
 *  2. Event ids: a string "$" + 43 characters of unpadded base64url (room v4+ event ids, the
 *     sha256 reference hash of RFC-style Matrix spec §"Event IDs") is a 32-byte byte string:
 *     34 bytes instead of 45. Only when the base64url round-trips exactly.
 *  3. Handles: a string known to both ends of the link session is a byte string of 1–3
 *     bytes holding the handle number as a minimal big-endian-free LEB128 varint. The session
 *     (matrix/session.ts) decides which strings are handles; this codec only asks.
 *
 * Everything else is plain CBOR: shortest-form integers, float64 (or float32 when exact),
 * definite lengths only, no tags. Map keys keep their JSON order.
 *
 * Pure: no I/O. The decoder is bounded (input, depth, items, string length) and rejects
 * anything outside this profile with a coded WireError; it never truncates.
 */
import { WireError, TrickleError } from '../errors.ts';
import { cborKeyToIntV1, cborIntToKeyV1 } from './keymap-v1.ts';
import { valueEnumIndexV1, valueEnumV1 } from './values-v1.ts';

export interface TrickleCborEncodeHooks {
  /** The handle number of `s` if the peer is known to have it. */
  handleOf?: (s: string) => number | undefined;
  /** Called, in encoding order, for every string value that went out literally (incl. raw event ids). */
  onLiteral?: (s: string) => void;
}

export interface TrickleCborDecodeHooks {
  /** Resolve a handle number; undefined → the message is rejected (ERR_HANDLE_UNKNOWN). */
  resolveHandle?: (n: number) => string | undefined;
  /** Called, in decoding order, for every string value that arrived literally (incl. raw event ids). */
  onLiteral?: (s: string) => void;
}

export interface TrickleCborLimits {
  maxBytes?: number;
  maxDepth?: number;
  maxItems?: number;
  maxStringBytes?: number;
}

const DEFAULT_LIMITS: Required<TrickleCborLimits> = { maxBytes: 16 << 20, maxDepth: 64, maxItems: 1 << 20, maxStringBytes: 1 << 20 };

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const EVENT_ID = /^\$[A-Za-z0-9_-]{43}$/;
const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }); // a leading U+FEFF is data, not a BOM to strip

function fail(code: 'ERR_CBOR_DECODE' | 'ERR_CBOR_LIMIT' | 'ERR_CBOR_TYPE' | 'ERR_HANDLE_UNKNOWN', msg: string): never {
  throw new WireError(code, 'codec', `trickle-cbor-v1: ${msg}`);
}

/** The 32 bytes of a room-v4+ event id, if `s` is one and round-trips exactly. */
export function eventIdToBytes(s: string): Uint8Array | undefined {
  if (!EVENT_ID.test(s)) return undefined;
  const b = Buffer.from(s.slice(1), 'base64url');
  if (b.length !== 32 || b.toString('base64url') !== s.slice(1)) return undefined;
  return new Uint8Array(b);
}

export function eventIdFromBytes(b: Uint8Array): string {
  return `$${Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url')}`;
}

class Writer {
  buf = new Uint8Array(256);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  byte(b: number): void { this.room(1); this.buf[this.len++] = b; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  head(major: number, n: number): void {
    const m = major << 5;
    if (n < 24) this.byte(m | n);
    else if (n < 0x100) { this.byte(m | 24); this.byte(n); }
    else if (n < 0x10000) { this.byte(m | 25); this.byte(n >> 8); this.byte(n & 0xff); }
    else if (n < 0x100000000) { this.byte(m | 26); this.byte((n >>> 24) & 0xff); this.byte((n >>> 16) & 0xff); this.byte((n >>> 8) & 0xff); this.byte(n & 0xff); }
    else {
      this.byte(m | 27);
      const hi = Math.floor(n / 0x100000000);
      const lo = n >>> 0;
      for (const v of [hi >>> 24, hi >>> 16, hi >>> 8, hi, lo >>> 24, lo >>> 16, lo >>> 8, lo]) this.byte(v & 0xff);
    }
  }
  done(): Uint8Array { return this.buf.slice(0, this.len); }
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  do { let b = n & 0x7f; n = Math.floor(n / 128); if (n > 0) b |= 0x80; out.push(b); } while (n > 0);
  return new Uint8Array(out);
}

function writeEnum(w: Writer, i: number): void {
  if (i < 20) w.byte(0xe0 + i);
  else { w.byte(0xf8); w.byte(32 + (i - 20)); }
}

function writeString(w: Writer, s: string, asKey: boolean, hooks: TrickleCborEncodeHooks): void {
  if (asKey) {
    const k = cborKeyToIntV1(s);
    if (k !== undefined) { w.head(0, k); return; }
  }
  const e = valueEnumIndexV1(s);
  if (e !== undefined) { writeEnum(w, e); return; }
  if (!asKey) {
    const h = hooks.handleOf?.(s);
    if (h !== undefined) { const v = varint(h); w.head(2, v.length); w.bytes(v); return; }
    const id = eventIdToBytes(s);
    if (id) { hooks.onLiteral?.(s); w.head(2, 32); w.bytes(id); return; }
    hooks.onLiteral?.(s);
  }
  if (LONE_SURROGATE.test(s)) throw new TrickleError('ERR_CBOR_TYPE', 'codec', 'string with a lone surrogate has no UTF-8 form');
  const b = te.encode(s);
  w.head(3, b.length);
  w.bytes(b);
}

function writeNumber(w: Writer, n: number): void {
  // −0 is a float (JSON "-0" parses to it; as the integer 0 it would come back as +0).
  if (Number.isInteger(n) && Math.abs(n) <= Number.MAX_SAFE_INTEGER && !Object.is(n, -0)) {
    if (n >= 0) w.head(0, n);
    else w.head(1, -1 - n);
    return;
  }
  if (!Number.isFinite(n)) throw new TrickleError('ERR_CBOR_TYPE', 'codec', `${n} has no JSON form`);
  if (Math.fround(n) === n) {
    const b = new Uint8Array(5); b[0] = 0xfa; new DataView(b.buffer).setFloat32(1, n); w.bytes(b);
  } else {
    const b = new Uint8Array(9); b[0] = 0xfb; new DataView(b.buffer).setFloat64(1, n); w.bytes(b);
  }
}

function writeValue(w: Writer, v: unknown, depth: number, hooks: TrickleCborEncodeHooks): void {
  if (depth > DEFAULT_LIMITS.maxDepth) throw new TrickleError('ERR_CBOR_LIMIT', 'codec', `nesting deeper than ${DEFAULT_LIMITS.maxDepth}`);
  if (v === null) { w.byte(0xf6); return; }
  switch (typeof v) {
    case 'boolean': w.byte(v ? 0xf5 : 0xf4); return;
    case 'number': writeNumber(w, v); return;
    case 'string': writeString(w, v, false, hooks); return;
    case 'object': {
      if (Array.isArray(v)) {
        w.head(4, v.length);
        for (const x of v) writeValue(w, x, depth + 1, hooks);
        return;
      }
      const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
      w.head(5, entries.length);
      for (const [k, x] of entries) { writeString(w, k, true, hooks); writeValue(w, x, depth + 1, hooks); }
      return;
    }
    default:
      throw new TrickleError('ERR_CBOR_TYPE', 'codec', `${typeof v} has no JSON form`);
  }
}

export function encodeTrickleCbor(value: unknown, hooks: TrickleCborEncodeHooks = {}): Uint8Array {
  const w = new Writer();
  writeValue(w, value, 0, hooks);
  return w.done();
}

class Reader {
  pos = 0;
  items = 0;
  constructor(readonly b: Uint8Array, readonly limits: Required<TrickleCborLimits>) {}
  byte(): number {
    if (this.pos >= this.b.length) fail('ERR_CBOR_DECODE', 'truncated');
    return this.b[this.pos++]!;
  }
  take(n: number): Uint8Array {
    if (n > this.b.length - this.pos) fail('ERR_CBOR_DECODE', 'truncated');
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** The argument of a head with additional info `ai`; only definite, shortest-or-not lengths. */
  arg(ai: number): number {
    if (ai < 24) return ai;
    if (ai === 24) return this.byte();
    if (ai === 25) return (this.byte() << 8) | this.byte();
    if (ai === 26) return ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
    if (ai === 27) {
      const hi = ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
      const lo = ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
      const n = hi * 0x100000000 + lo;
      if (n > Number.MAX_SAFE_INTEGER) fail('ERR_CBOR_TYPE', 'integer beyond 2^53');
      return n;
    }
    fail('ERR_CBOR_DECODE', ai === 31 ? 'indefinite lengths are not in the profile' : `reserved additional info ${ai}`);
  }
}

function readVarint(b: Uint8Array): number {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < b.length; i++) {
    const x = b[i]!;
    const last = i === b.length - 1;
    if (last !== ((x & 0x80) === 0)) fail('ERR_CBOR_DECODE', 'malformed handle varint');
    if (last && x === 0 && i > 0) fail('ERR_CBOR_DECODE', 'non-minimal handle varint');
    n += (x & 0x7f) * mul;
    mul *= 128;
  }
  return n;
}

function readValue(r: Reader, depth: number, asKey: boolean, hooks: TrickleCborDecodeHooks): unknown {
  if (depth > r.limits.maxDepth) fail('ERR_CBOR_LIMIT', `nesting deeper than ${r.limits.maxDepth}`);
  if (++r.items > r.limits.maxItems) fail('ERR_CBOR_LIMIT', `more than ${r.limits.maxItems} items`);
  const ib = r.byte();
  const major = ib >> 5;
  const ai = ib & 0x1f;
  switch (major) {
    case 0: {
      const n = r.arg(ai);
      if (asKey) {
        const k = cborIntToKeyV1(n);
        if (k === undefined) fail('ERR_CBOR_TYPE', `integer key ${n} is not in MSC3079 v1`);
        return k;
      }
      return n;
    }
    case 1: {
      if (asKey) fail('ERR_CBOR_TYPE', 'negative integer as a map key');
      return -1 - r.arg(ai);
    }
    case 2: {
      if (asKey) fail('ERR_CBOR_TYPE', 'byte string as a map key');
      const len = r.arg(ai);
      const b = r.take(len);
      if (len === 32) { const s = eventIdFromBytes(b); hooks.onLiteral?.(s); return s; }
      if (len >= 1 && len <= 3) {
        const h = readVarint(b);
        const s = hooks.resolveHandle?.(h);
        if (s === undefined) fail('ERR_HANDLE_UNKNOWN', `handle ${h} is not known on this side`);
        return s;
      }
      return fail('ERR_CBOR_TYPE', `byte string of ${len} bytes has no meaning in trickle-cbor-v1`);
    }
    case 3: {
      const len = r.arg(ai);
      if (len > r.limits.maxStringBytes) fail('ERR_CBOR_LIMIT', `string of ${len} bytes`);
      let s: string;
      try { s = td.decode(r.take(len)); } catch { fail('ERR_CBOR_DECODE', 'invalid UTF-8'); }
      if (!asKey) hooks.onLiteral?.(s);
      return s;
    }
    case 4: {
      if (asKey) fail('ERR_CBOR_TYPE', 'array as a map key');
      const n = r.arg(ai);
      if (n > r.b.length - r.pos) fail('ERR_CBOR_DECODE', 'array longer than the message');
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) out.push(readValue(r, depth + 1, false, hooks));
      return out;
    }
    case 5: {
      if (asKey) fail('ERR_CBOR_TYPE', 'map as a map key');
      const n = r.arg(ai);
      if (n * 2 > r.b.length - r.pos) fail('ERR_CBOR_DECODE', 'map longer than the message');
      const out: Record<string, unknown> = {};
      for (let i = 0; i < n; i++) {
        const k = readValue(r, depth + 1, true, hooks) as string;
        const v = readValue(r, depth + 1, false, hooks);
        if (Object.prototype.hasOwnProperty.call(out, k)) fail('ERR_CBOR_DECODE', `duplicate key ${JSON.stringify(k)}`);
        Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    case 6:
      return fail('ERR_CBOR_TYPE', 'tags are not in the profile');
    default: {
      if (ai < 20) {
        const s = valueEnumV1(ai);
        if (s === undefined) fail('ERR_CBOR_TYPE', `value enum ${ai} unknown`);
        return s;
      }
      if (ai === 24) {
        const v = r.byte();
        if (v < 32) fail('ERR_CBOR_DECODE', 'two-byte simple value below 32');
        const s = valueEnumV1(20 + v - 32);
        if (s === undefined) fail('ERR_CBOR_TYPE', `value enum ${20 + v - 32} unknown`);
        return s;
      }
      if (asKey) fail('ERR_CBOR_TYPE', 'simple value as a map key');
      if (ai === 20) return false;
      if (ai === 21) return true;
      if (ai === 22) return null;
      if (ai === 26 || ai === 27) {
        const x = ai === 26 ? new DataView(r.take(4).slice().buffer).getFloat32(0) : new DataView(r.take(8).slice().buffer).getFloat64(0);
        if (!Number.isFinite(x)) fail('ERR_CBOR_TYPE', `${x} has no JSON form`);
        return x;
      }
      return fail('ERR_CBOR_TYPE', `simple/float item 0x${ib.toString(16)} is not in the profile`);
    }
  }
}

export function decodeTrickleCbor(bytes: Uint8Array, hooks: TrickleCborDecodeHooks = {}, limits: TrickleCborLimits = {}): unknown {
  const l = { ...DEFAULT_LIMITS, ...limits };
  if (bytes.length > l.maxBytes) fail('ERR_CBOR_LIMIT', `${bytes.length} bytes, bound ${l.maxBytes}`);
  const r = new Reader(bytes, l);
  const v = readValue(r, 0, false, hooks);
  if (r.pos !== bytes.length) fail('ERR_CBOR_DECODE', `${bytes.length - r.pos} trailing bytes`);
  return v;
}
