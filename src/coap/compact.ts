/**
 * Compact on-air form of CoAP messages (the SCHC idea, RFC 8724 / RFC 8824): a static
 * context shared by both ends (compact-rules-v1.ts) plus a small per-peer dynamic
 * context (the LSB state below). Every compact frame expands to exactly one RFC 7252
 * message and every message has a compact frame (rule 0 embeds it whole):
 *
 *     encodeMessage(decodeCompact(encodeCompact(m, a), b)) == encodeMessage(m)
 *
 * for contexts `a` (sender) and `b` (receiver) that have seen the same frames.
 * Pure: bytes and an explicit context object in, bytes or a coded WireError out.
 *
 * Frame:  rule id (1) | code (1, only for rules with code 'field') | header | fields | payload
 *
 * ---------------------------------------------------------------------------------
 * Sequence numbers. Each end numbers the CON/NON messages it originates with a 32-bit
 * sequence number S; the RFC 7252 Message ID is S mod 2^16. CoapEndpoint in its
 * default 'sequence' token mode also makes each request's token the 4-byte big-endian
 * S of the request's first message, so a fresh request's mid and token are one number
 * and travel as its 7 least significant bits (SCHC "LSB", the MSBs from the context).
 * The receiver rebuilds S as the one value with those LSBs in the interpretation
 * window [ref − p, ref + 2^k − 1 − p] around the highest S it has decoded (ref), as
 * ROHC W-LSB (RFC 3095 §4.5.1) and as a lossy link's nonce. The sender uses an LSB form
 * only when that is unambiguous for every ref the receiver may hold: ref lies between
 * `lo` (the highest S the peer has acknowledged, so has decoded) and `hi` (the highest
 * S sent), so the form is safe iff S ≥ hi − p and S ≤ lo + 2^k − 1 − p. Otherwise it
 * sends the full 32-bit S. Frames re-encoded for every (re)transmission keep this exact;
 * a frame reordered behind more than p later-encoded frames (no LoRa link does that)
 * would decode to another S.
 *
 * Header forms (first byte selects; reserved patterns are rejected):
 *   req (requests; T = the token as a 32-bit number when it has 4 bytes)
 *     0sssssss                 S by 7 LSBs (p = 16); token = S              (1 byte)
 *     10dddddd ssssssss        S by 8 LSBs (p = 32); token = S − d, d < 64  (2 bytes)
 *     111ddddd S(4)            S in full;            token = S − d, d < 32  (5 bytes)
 *     1100LLLL S(4) token(L)   S in full; the token's L ≤ 8 bytes as they are
 *   rsp (separate responses; the token is the peer's request token)
 *     0sssssss tttttttt tttttttt   S by 7 LSBs; token = the request token this end
 *                                  sent last with those 16 LSBs (window 2^16)   (3 bytes)
 *     1100LLLL S(4) token(L)       explicit
 *   ntf (Observe notifications, CON; the token is the registration's request token)
 *     0sssssss tttttttt tttttttt   S by 7 LSBs; token as in rsp; Observe = S mod 2^24   (3 bytes)
 *     1100LLLL S(4) token(L)       explicit S and token; Observe = S mod 2^24
 *     1101LLLL S(4) token(L) O(3)  explicit S, token, and the 24-bit Observe value
 *   ack (ACK and RST: they echo the peer's mid)
 *     0mmmmmmm                 the mid of the message this end sent last with those
 *                              7 LSBs (within its last 128); token implied: that
 *                              message's token, or none for Empty             (1 byte)
 *     1100LLLL mid(2) token(L) explicit
 * A receiver answers each message at most once in the 1-byte ACK form, and only while
 * the message is among the last 64 it has seen from the peer; re-sent answers (to
 * retransmissions) use the explicit form, so a late duplicate ACK can never be taken
 * for the ACK of a newer message with the same LSBs. (Residual assumption: a sender
 * has fewer than 64 messages on air that the peer has not seen yet.)
 *
 * Integrity. The compact form has no check of its own, like SCHC (which relies on the
 * layer-2 CRC). What it does: a flipped bit in the rule byte always gives an unknown
 * rule (even-parity ids); reserved header forms, bad enum indices, non-minimal varints,
 * non-canonical encodings, truncation and trailing bytes are rejected. A flip inside a
 * value (an LSB, a handle number, a text byte) yields another well-formed message: the
 * security layer's AEAD covers every compact byte and rejects it (see
 * test/unit/coap/compact.test.ts), and the transparent modem's CRC catches it earlier.
 */
import { TrickleError, WireError } from '../errors.ts';
import { concatBytes, equalBytes, toHex } from '../util/bytes.ts';
import { EMPTY, TYPE_NAMES, codeToString, isRequestCode, isResponseCode, optionName } from './numbers.ts';
import { decodeMessage, encodeMessage, encodeUint, sortOptions, type CoapMessage, type CoapOption, type WireCodec } from './message.ts';
import {
  COMPACT_RULES_V1, COMPACT_RULES_VERSION, PATH_ENUMS_V1, QUERY_ITEMS_V1, QUERY_RAW, RULE_RFC7252, WELL_KNOWN_STRINGS_V1,
  type CompactRule, type FieldSpec, type HeaderKind,
} from './compact-rules-v1.ts';

// ---------------------------------------------------------------------------
// Dynamic context
// ---------------------------------------------------------------------------

interface SentEntry { readonly seq: number; readonly mid: number; readonly token: Uint8Array }
interface ReceivedEntry { seq: number; token: Uint8Array; answered: boolean }

/** What this end sends: its own sequence numbers. */
export interface CompactSendState {
  /** Highest S sent (uint32). */
  hi: number;
  /** Highest own S the peer has acknowledged, hence decoded (uint32). */
  lo: number;
  /** Highest 4-byte request token sent, as a uint32. */
  tokenHi: number;
  /** The last message sent per mid mod 128 (for the 1-byte ACK form). */
  readonly sent: Map<number, SentEntry>;
}

/** What this end receives: the peer's sequence numbers. */
export interface CompactReceiveState {
  /** Highest S decoded from the peer (uint32). */
  ref: number;
  /** Highest 4-byte request token received, as a uint32. */
  tokenHi: number;
  /** Recently received CON/NON by mid (bounded), for the 1-byte ACK form. */
  readonly received: Map<number, ReceivedEntry>;
}

/** One end's compact context for one peer: the static rules version plus both directions. */
export interface CompactContext {
  readonly version: typeof COMPACT_RULES_VERSION;
  readonly tx: CompactSendState;
  readonly rx: CompactReceiveState;
}

export interface CompactContextInit {
  /**
   * The sequence number both ends take as "last seen" at the start of a session, for
   * both directions. Default 0 (CoapEndpoint's sequence mode starts at 1).
   */
  readonly initialSeq?: number;
}

/** Received entries remembered for the 1-byte ACK form. */
const RECEIVED_HISTORY = 256;
/** A received message is answered in the 1-byte form only while this recent. */
const ACK_SHORT_WINDOW = 64;
/** The 1-byte ACK form resolves among the last this-many messages sent. */
const ACK_LSB_WINDOW = 128;

export function createCompactContext(init: CompactContextInit = {}): CompactContext {
  const s = u32(init.initialSeq ?? 0);
  return {
    version: COMPACT_RULES_VERSION,
    tx: { hi: s, lo: s, tokenHi: s, sent: new Map() },
    rx: { ref: s, tokenHi: s, received: new Map() },
  };
}

/** A deep copy (to try a decode without touching the live context, or to snapshot it). */
export function cloneCompactContext(ctx: CompactContext): CompactContext {
  return {
    version: ctx.version,
    tx: { hi: ctx.tx.hi, lo: ctx.tx.lo, tokenHi: ctx.tx.tokenHi, sent: new Map(ctx.tx.sent) },
    rx: {
      ref: ctx.rx.ref, tokenHi: ctx.rx.tokenHi,
      received: new Map([...ctx.rx.received].map(([k, v]) => [k, { ...v }])),
    },
  };
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

export type CompactRejectReason =
  | 'empty' | 'unknown-rule' | 'truncated' | 'trailing-bytes' | 'reserved-form' | 'bad-varint'
  | 'bad-enum' | 'no-context' | 'out-of-window' | 'non-canonical' | 'bad-message';

function reject(reason: CompactRejectReason, message: string, detail: Record<string, unknown> = {}): WireError {
  return new WireError(reason === 'truncated' ? 'ERR_COAP_TRUNCATED' : 'ERR_COAP_FORMAT', 'coap',
    `compact frame: ${message}`, { reason, ...detail });
}

// ---------------------------------------------------------------------------
// Small arithmetic and byte helpers
// ---------------------------------------------------------------------------

function u32(n: number): number { return n >>> 0; }
/** a − b as a signed 32-bit difference (sequence-number comparison, RFC 1982 style). */
function rel(a: number, b: number): number { return (a - b) | 0; }
function later(a: number, b: number): number { return rel(a, b) > 0 ? a : b; }

/** W-LSB: the value with low k bits `lsb` in [ref − p, ref − p + 2^k − 1]. */
function wlsb(ref: number, lsb: number, k: number, p: number): number {
  const base = u32(ref - p);
  const mask = k === 32 ? 0xffffffff : (2 ** k) - 1;
  return u32(base + ((lsb - base) & mask));
}

/** The token as a uint32 when it has exactly 4 bytes. */
export function tokenSequence(token: Uint8Array): number | undefined {
  if (token.length !== 4) return undefined;
  return u32((token[0]! << 24) | (token[1]! << 16) | (token[2]! << 8) | token[3]!);
}

/** The 4-byte big-endian token of sequence number s. */
export function sequenceToken(s: number): Uint8Array {
  const v = u32(s);
  return Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

function push32(out: number[], v: number): void {
  out.push(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

function writeVarint(out: number[], n: number): void {
  let v = n;
  while (v >= 0x80) { out.push((v & 0x7f) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
}

const ascii = new TextEncoder();
const asciiBytes = (s: string): Uint8Array => ascii.encode(s);
const TILDE = 0x7e;
const EQUALS = 0x3d;
const HANDLE_MAX = 2 ** 21;
const EMPTY_BYTES = new Uint8Array(0);

const WELL_KNOWN = WELL_KNOWN_STRINGS_V1.map(asciiBytes);
const PATH_ENUM_BYTES = PATH_ENUMS_V1.map(asciiBytes);

/** "~N" with N canonical decimal < 2^21, else undefined. */
function parseHandle(v: Uint8Array): number | undefined {
  if (v.length < 2 || v.length > 8 || v[0] !== TILDE) return undefined;
  if (v[1] === 0x30 && v.length > 2) return undefined;
  let n = 0;
  for (let i = 1; i < v.length; i++) {
    const c = v[i]!;
    if (c < 0x30 || c > 0x39) return undefined;
    n = n * 10 + (c - 0x30);
  }
  return n < HANDLE_MAX ? n : undefined;
}

/** Canonical decimal (no sign, no leading zero) < 2^32, else undefined. */
function parseDecimal(v: Uint8Array): number | undefined {
  if (v.length === 0 || v.length > 10 || (v[0] === 0x30 && v.length > 1)) return undefined;
  let n = 0;
  for (const c of v) {
    if (c < 0x30 || c > 0x39) return undefined;
    n = n * 10 + (c - 0x30);
  }
  return n <= 0xffffffff ? n : undefined;
}

function indexOfBytes(table: readonly Uint8Array[], v: Uint8Array): number {
  for (let i = 0; i < table.length; i++) if (equalBytes(table[i]!, v)) return i;
  return -1;
}

/** The static tables' strings as bytes, encoded once (every frame compares against them). */
const constBytes = new Map<string | number, Uint8Array>();
function cachedBytes(v: string | number): Uint8Array {
  let b = constBytes.get(v);
  if (!b) {
    b = typeof v === 'number' ? encodeUint(v) : asciiBytes(v);
    constBytes.set(v, b);
  }
  return b;
}

/** A const field's value (a fresh copy: decoded messages own their option values). */
function constValue(f: Extract<FieldSpec, { kind: 'const' }>): Uint8Array {
  return cachedBytes(f.value).slice();
}

/** A uint option value in its canonical form (≤ 4 bytes, no leading zero byte). */
function canonicalUint(v: Uint8Array): number | undefined {
  if (v.length > 4 || (v.length > 0 && v[0] === 0)) return undefined;
  let n = 0;
  for (const b of v) n = n * 256 + b;
  return n;
}

// ---------------------------------------------------------------------------
// Field codecs (encode side): each returns false when the value does not fit
// ---------------------------------------------------------------------------

function encodeParam(out: number[], v: Uint8Array): void {
  const h = parseHandle(v);
  if (h !== undefined) { writeVarint(out, 2 * h + 1); return; }
  const w = indexOfBytes(WELL_KNOWN, v);
  if (w >= 0) { writeVarint(out, 4 * w + 2); return; }
  writeVarint(out, 4 * v.length);
  for (const b of v) out.push(b);
}

function encodeQuery(out: number[], v: Uint8Array): void {
  for (let i = 0; i < QUERY_ITEMS_V1.length; i++) {
    const item = QUERY_ITEMS_V1[i]!;
    if ('const' in item && equalBytes(cachedBytes(item.const), v)) { out.push(i); return; }
  }
  const eq = v.indexOf(EQUALS);
  if (eq > 0) {
    const key = v.subarray(0, eq);
    const value = v.subarray(eq + 1);
    for (let i = 0; i < QUERY_ITEMS_V1.length; i++) {
      const item = QUERY_ITEMS_V1[i]!;
      if (!('key' in item) || !equalBytes(cachedBytes(item.key), key)) continue;
      if (item.kind === 'uint') {
        const n = parseDecimal(value);
        if (n === undefined) break;
        out.push(i);
        writeVarint(out, n);
        return;
      }
      out.push(i);
      encodeParam(out, value);
      return;
    }
  }
  out.push(QUERY_RAW);
  writeVarint(out, v.length);
  for (const b of v) out.push(b);
}

/** Whether the rule's fixed parts (type, code class) admit the message. */
function ruleAdmits(rule: CompactRule, msg: CoapMessage): boolean {
  if (rule.id === RULE_RFC7252) return true;
  if (msg.type !== rule.type) return false;
  if (rule.code === 'field') {
    if (rule.header === 'req') return isRequestCode(msg.code);
    return isResponseCode(msg.code);
  }
  return msg.code === rule.code;
}

/**
 * The rule's fields and payload for this message (everything after the header), or
 * undefined when the message does not have the rule's shape. State-independent.
 */
function encodeBody(rule: CompactRule, msg: CoapMessage, sorted: readonly CoapOption[]): number[] | undefined {
  if (!ruleAdmits(rule, msg)) return undefined;
  if (rule.id === RULE_RFC7252) return [...encodeMessage(msg)];
  if (rule.payload === 'rfc7252') {
    return [...encodeMessage({ type: msg.type, code: msg.code, mid: 0, token: EMPTY_BYTES, options: sorted, payload: msg.payload }).subarray(4)];
  }
  const out: number[] = [];
  let i = 0;
  for (const f of rule.fields) {
    switch (f.kind) {
      case 'const': {
        const o = sorted[i];
        if (!o || o.number !== f.option || !equalBytes(o.value, cachedBytes(f.value))) return undefined;
        i++;
        break;
      }
      case 'param': {
        const o = sorted[i];
        if (!o || o.number !== f.option) return undefined;
        encodeParam(out, o.value);
        i++;
        break;
      }
      case 'pathEnum': {
        const o = sorted[i];
        if (!o || o.number !== URI_PATH) return undefined;
        const idx = indexOfBytes(PATH_ENUM_BYTES, o.value);
        if (idx < 0) return undefined;
        out.push(idx);
        i++;
        break;
      }
      case 'segments': {
        let n = 0;
        while (sorted[i + n]?.number === URI_PATH) n++;
        writeVarint(out, n);
        for (let j = 0; j < n; j++) encodeParam(out, sorted[i + j]!.value);
        i += n;
        break;
      }
      case 'queries': {
        let n = 0;
        while (sorted[i + n]?.number === URI_QUERY) n++;
        writeVarint(out, n);
        for (let j = 0; j < n; j++) encodeQuery(out, sorted[i + j]!.value);
        i += n;
        break;
      }
      case 'uint': {
        const o = sorted[i];
        if (!o || o.number !== f.option) return undefined;
        const n = canonicalUint(o.value);
        if (n === undefined) return undefined;
        writeVarint(out, n);
        i++;
        break;
      }
      case 'observe': {
        // Carried by the 'ntf' header; only its presence and form are checked here.
        const o = sorted[i];
        if (!o || o.number !== f.option || observeValue(o.value) === undefined) return undefined;
        i++;
        break;
      }
    }
  }
  if (i !== sorted.length) return undefined;
  const p = rule.payload;
  if (p === 'none') { if (msg.payload.length !== 0) return undefined; }
  else if (p !== 'rest' && msg.payload.length !== p.exact) return undefined;
  for (const b of msg.payload) out.push(b);
  return out;
}

const URI_PATH = 11;
const URI_QUERY = 15;
const OBSERVE = 6;
/** RFC 7641 §4.4: Observe values are 24-bit. */
const OBSERVE_MOD = 2 ** 24;

/** A canonical Observe value (< 2^24, ≤ 3 bytes, no leading zero byte), else undefined. */
function observeValue(v: Uint8Array): number | undefined {
  const n = canonicalUint(v);
  return n !== undefined && n < OBSERVE_MOD ? n : undefined;
}

const RULES_BY_ID: ReadonlyMap<number, CompactRule> = new Map(COMPACT_RULES_V1.map((r) => [r.id, r]));

/**
 * The rule that carries the message, and its body bytes: the first specific rule in
 * table order, else the first generic ('rfc7252' payload) one, rule 0 last.
 */
function chooseRule(msg: CoapMessage): { rule: CompactRule; body: number[] } {
  const sorted = sortOptions(msg.options);
  for (const generic of [false, true]) {
    for (const rule of COMPACT_RULES_V1) {
      if (rule.id === RULE_RFC7252 || (rule.payload === 'rfc7252') !== generic) continue;
      const body = encodeBody(rule, msg, sorted);
      if (body) return { rule, body };
    }
  }
  const rule = RULES_BY_ID.get(RULE_RFC7252)!;
  return { rule, body: encodeBody(rule, msg, sorted)! };
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/**
 * The S of an own CON/NON: a fresh request's token when it names this mid, else nearest to hi.
 * A token 2^15 or more behind hi is not the S of this message even when its 16 LSBs are the
 * mid: it is a block follow-up of a long transfer, sent a multiple of 2^16 messages after the
 * request began (a 10 MB Block1 body in 128-byte blocks is 80,000 messages).
 */
function ownSeq(msg: CoapMessage, tx: CompactSendState): number {
  const t = tokenSequence(msg.token);
  if (isRequestCode(msg.code) && t !== undefined && (t & 0xffff) === msg.mid && rel(t, tx.hi) > -0x8000) return t;
  return wlsb(tx.hi, msg.mid, 16, 0x8000);
}

function lsbSafe(tx: CompactSendState, s: number, k: number, p: number): boolean {
  return rel(s, tx.hi) >= -p && rel(s, tx.lo) <= (2 ** k) - 1 - p;
}

function explicitHeader(out: number[], full: number, fullBytes: 2 | 4, token: Uint8Array): void {
  out.push(0xc0 | token.length);
  if (fullBytes === 4) push32(out, full);
  else out.push(full >> 8, full & 0xff);
  for (const b of token) out.push(b);
}

function encodeHeader(kind: HeaderKind, msg: CoapMessage, ctx: CompactContext, out: number[]): () => void {
  const { tx, rx } = ctx;
  if (kind === 'ack') {
    const e = rx.received.get(msg.mid);
    const short = e !== undefined && !e.answered && rel(rx.ref, e.seq) < ACK_SHORT_WINDOW
      && (msg.code === EMPTY ? msg.token.length === 0 : equalBytes(msg.token, e.token));
    if (short) out.push(msg.mid & 0x7f);
    else explicitHeader(out, msg.mid, 2, msg.token);
    return () => { if (e) e.answered = true; };
  }
  const s = ownSeq(msg, tx);
  const t = tokenSequence(msg.token);
  if (kind === 'ntf') {
    const obs = observeValue(msg.options.find((o) => o.number === OBSERVE)?.value ?? EMPTY_BYTES) ?? 0;
    const implied = obs === s % OBSERVE_MOD;
    const back = t === undefined ? -1 : rel(rx.tokenHi, t);
    if (implied && t !== undefined && back >= 0 && back < 0x8000 && lsbSafe(tx, s, 7, 16)) {
      out.push(s & 0x7f, (t >>> 8) & 0xff, t & 0xff);
    } else if (implied) {
      explicitHeader(out, s, 4, msg.token);
    } else {
      out.push(0xd0 | msg.token.length);
      push32(out, s);
      for (const b of msg.token) out.push(b);
      out.push(obs >>> 16, (obs >>> 8) & 0xff, obs & 0xff);
    }
  } else if (kind === 'req') {
    const d = t === undefined ? undefined : u32(s - t);
    if (d === 0 && lsbSafe(tx, s, 7, 16)) out.push(s & 0x7f);
    else if (d !== undefined && d < 64 && lsbSafe(tx, s, 8, 32)) out.push(0x80 | d, s & 0xff);
    else if (d !== undefined && d < 32) { out.push(0xe0 | d); push32(out, s); }
    else explicitHeader(out, s, 4, msg.token);
  } else {
    const back = t === undefined ? -1 : rel(rx.tokenHi, t);
    if (t !== undefined && back >= 0 && back < 0x8000 && lsbSafe(tx, s, 7, 16)) out.push(s & 0x7f, (t >>> 8) & 0xff, t & 0xff);
    else explicitHeader(out, s, 4, msg.token);
  }
  return () => {
    tx.hi = later(s, tx.hi);
    tx.sent.set(msg.mid & 0x7f, { seq: s, mid: msg.mid, token: msg.token.slice() });
    if (kind === 'req' && t !== undefined) tx.tokenHi = later(t, tx.tokenHi);
  };
}

/** Worst-case header bytes of a kind, for any state (explicit forms). */
function headerBound(kind: HeaderKind, tokenLength: number): number {
  return kind === 'ack' ? 3 + tokenLength : kind === 'ntf' ? 8 + tokenLength : 5 + tokenLength;
}

// ---------------------------------------------------------------------------
// Public encode
// ---------------------------------------------------------------------------

/**
 * Encode one message for the air and advance the context (as sent). Throws
 * TrickleError (as encodeMessage) for a message that is not valid CoAP.
 */
export function encodeCompact(msg: CoapMessage, ctx: CompactContext): Uint8Array {
  encodeMessage(msg); // validates shape, lengths and numbers
  const { rule, body } = chooseRule(msg);
  const out: number[] = [rule.id];
  let commit: () => void = () => {};
  if (rule.id !== RULE_RFC7252) {
    if (rule.code === 'field') out.push(msg.code);
    commit = encodeHeader(rule.header, msg, ctx, out);
  }
  for (const b of body) out.push(b);
  commit();
  return Uint8Array.from(out);
}

/**
 * The largest encodeCompact(msg).length can be in any context state (every header in
 * its explicit form). For block sizing: later blocks are encoded in later states.
 */
export function compactSizeBound(msg: CoapMessage): number {
  const { rule, body } = chooseRule(msg);
  if (rule.id === RULE_RFC7252) return 1 + body.length;
  return 1 + (rule.code === 'field' ? 1 : 0) + headerBound(rule.header, msg.token.length) + body.length;
}

/** The rule encodeCompact would use for the message (state-independent). */
export function compactRuleFor(msg: CoapMessage): CompactRule {
  return chooseRule(msg).rule;
}

// ---------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------

export interface CompactField {
  /** e.g. "rule", "code", "header.seq", "Uri-Path", "Uri-Query", "payload". */
  readonly name: string;
  /** Byte offset and the bytes in the frame. */
  readonly offset: number;
  readonly hex: string;
  /** Human-readable value. */
  readonly value: string;
}

class Reader {
  pos = 0;
  constructor(readonly bytes: Uint8Array, private readonly trace: CompactField[] | undefined) {}
  get remaining(): number { return this.bytes.length - this.pos; }
  byte(what: string): number {
    if (this.pos >= this.bytes.length) throw reject('truncated', `ends inside ${what}`, { pos: this.pos });
    return this.bytes[this.pos++]!;
  }
  take(n: number, what: string): Uint8Array {
    if (n > this.remaining) throw reject('truncated', `ends inside ${what} (${n} bytes)`, { pos: this.pos, n });
    const v = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  u32(what: string): number {
    const b = this.take(4, what);
    return u32((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!);
  }
  varint(what: string): number {
    let n = 0;
    for (let i = 0; i < 5; i++) {
      const b = this.byte(what);
      n += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) {
        if (i > 0 && b === 0) throw reject('bad-varint', `non-minimal varint in ${what}`, { pos: this.pos });
        if (n > 0xffffffff) throw reject('bad-varint', `varint over 2^32 in ${what}`, { pos: this.pos });
        return n;
      }
    }
    throw reject('bad-varint', `varint longer than 5 bytes in ${what}`, { pos: this.pos });
  }
  note(name: string, start: number, value: string): void {
    this.trace?.push({ name, offset: start, hex: toHex(this.bytes.subarray(start, this.pos)), value });
  }
}

const text = (b: Uint8Array): string => {
  try { return JSON.stringify(new TextDecoder('utf-8', { fatal: true }).decode(b)); } catch { return `0x${toHex(b)}`; }
};

function readParam(r: Reader, what: string): { value: Uint8Array; note: string } {
  const x = r.varint(what);
  if (x % 2 === 1) {
    const n = (x - 1) / 2;
    if (n >= HANDLE_MAX) throw reject('bad-enum', `handle ${n} ≥ 2^21 in ${what}`);
    return { value: asciiBytes(`~${n}`), note: `handle ~${n}` };
  }
  if (x % 4 === 2) {
    const i = (x - 2) / 4;
    const w = WELL_KNOWN[i];
    if (!w) throw reject('bad-enum', `well-known string index ${i} out of range in ${what}`, { index: i });
    return { value: w.slice(), note: `well-known[${i}] ${JSON.stringify(WELL_KNOWN_STRINGS_V1[i])}` };
  }
  const value = r.take(x / 4, what);
  return { value, note: `literal ${text(value)}` };
}

function readQuery(r: Reader): { value: Uint8Array; note: string } {
  const idx = r.byte('a Uri-Query item');
  if (idx === QUERY_RAW) {
    const value = r.take(r.varint('a raw Uri-Query length'), 'a raw Uri-Query');
    return { value, note: `raw ${text(value)}` };
  }
  const item = QUERY_ITEMS_V1[idx];
  if (!item) throw reject('bad-enum', `Uri-Query item ${idx} is not in the table`, { index: idx });
  if ('const' in item) return { value: asciiBytes(item.const), note: `item[${idx}] ${JSON.stringify(item.const)}` };
  const key = asciiBytes(`${item.key}=`);
  let v: Uint8Array;
  let note: string;
  if (item.kind === 'uint') {
    const n = r.varint(`the value of ${item.key}`);
    v = asciiBytes(String(n));
    note = `${item.key}=${n}`;
  } else {
    const p = readParam(r, `the value of ${item.key}`);
    v = p.value;
    note = `${item.key}= ${p.note}`;
  }
  const value = new Uint8Array(key.length + v.length);
  value.set(key);
  value.set(v, key.length);
  return { value, note: `item[${idx}] ${note}` };
}

interface DecodedHeader {
  readonly mid: number;
  /** Undefined: implied by an ACK form, resolved once the code is known. */
  readonly token: Uint8Array;
  readonly seq: number | undefined;
  /** 'ntf' headers: the Observe value. */
  readonly observe?: number;
  readonly commit: () => void;
}

function readHeader(kind: HeaderKind, code: number, r: Reader, ctx: CompactContext): DecodedHeader {
  const { tx, rx } = ctx;
  const start = r.pos;
  const b0 = r.byte('the header');
  if (kind === 'ack') {
    if ((b0 & 0x80) === 0) {
      const e = tx.sent.get(b0 & 0x7f);
      if (!e) throw reject('no-context', `ACK/RST for mid LSBs 0x${b0.toString(16)}: nothing sent with them`);
      if (rel(tx.hi, e.seq) >= ACK_LSB_WINDOW) throw reject('out-of-window', `ACK/RST LSBs match only an old message (S ${e.seq})`);
      const token = code === EMPTY ? EMPTY_BYTES : e.token.slice();
      r.note('header', start, `mid 0x${e.mid.toString(16).padStart(4, '0')} (7 LSBs; message sent as S ${e.seq}), token implied`);
      return { mid: e.mid, token, seq: undefined, commit: () => { tx.lo = later(e.seq, tx.lo); } };
    }
    if ((b0 & 0xf0) !== 0xc0 || (b0 & 0x0f) > 8) throw reject('reserved-form', `reserved ACK header form 0x${b0.toString(16)}`);
    const midBytes = r.take(2, 'the mid');
    const mid = (midBytes[0]! << 8) | midBytes[1]!;
    const token = r.take(b0 & 0x0f, 'the token');
    r.note('header', start, `explicit mid 0x${mid.toString(16).padStart(4, '0')}, token ${toHex(token) || '(none)'}`);
    const e = tx.sent.get(mid & 0x7f);
    return { mid, token, seq: undefined, commit: () => { if (e && e.mid === mid) tx.lo = later(e.seq, tx.lo); } };
  }
  let s: number;
  let token: Uint8Array;
  let note: string;
  let observe: number | undefined;
  if (kind === 'ntf' && (b0 & 0xf0) === 0xd0 && (b0 & 0x0f) <= 8) {
    s = r.u32('the sequence number');
    token = r.take(b0 & 0x0f, 'the token');
    const o = r.take(3, 'the Observe value');
    observe = (o[0]! << 16) | (o[1]! << 8) | o[2]!;
    note = `S ${s} (full), explicit token ${toHex(token) || '(none)'}, Observe ${observe}`;
  } else if ((b0 & 0x80) === 0) {
    s = wlsb(rx.ref, b0 & 0x7f, 7, 16);
    if (kind === 'req') {
      token = sequenceToken(s);
      note = `S ${s} (7 LSBs), token = S`;
    } else {
      const t16 = r.take(2, 'the token LSBs');
      const t = u32(tx.tokenHi - ((tx.tokenHi - ((t16[0]! << 8) | t16[1]!)) & 0xffff));
      token = sequenceToken(t);
      note = `S ${s} (7 LSBs), token ${t} (16 LSBs of a request token sent)`;
    }
  } else if (kind === 'req' && (b0 & 0xc0) === 0x80) {
    const d = b0 & 0x3f;
    s = wlsb(rx.ref, r.byte('the sequence LSBs'), 8, 32);
    token = sequenceToken(s - d);
    note = `S ${s} (8 LSBs), token = S − ${d}`;
  } else if (kind === 'req' && (b0 & 0xe0) === 0xe0) {
    const d = b0 & 0x1f;
    s = r.u32('the sequence number');
    token = sequenceToken(s - d);
    note = `S ${s} (full), token = S − ${d}`;
  } else if ((b0 & 0xf0) === 0xc0 && (b0 & 0x0f) <= 8) {
    s = r.u32('the sequence number');
    token = r.take(b0 & 0x0f, 'the token');
    note = `S ${s} (full), explicit token ${toHex(token) || '(none)'}`;
  } else {
    throw reject('reserved-form', `reserved ${kind} header form 0x${b0.toString(16)}`);
  }
  if (kind === 'ntf' && observe === undefined) {
    observe = s % OBSERVE_MOD;
    note += `, Observe ${observe} (S mod 2^24)`;
  }
  const mid = s & 0xffff;
  r.note('header', start, `${note}; mid 0x${mid.toString(16).padStart(4, '0')}`);
  const t = tokenSequence(token);
  return {
    mid, token, seq: s, ...(observe !== undefined ? { observe } : {}),
    commit: () => {
      rx.ref = later(s, rx.ref);
      const old = rx.received.get(mid);
      if (old && old.seq === s) old.token = token;
      else {
        rx.received.delete(mid);
        rx.received.set(mid, { seq: s, token, answered: false });
        if (rx.received.size > RECEIVED_HISTORY) rx.received.delete(rx.received.keys().next().value!);
      }
      if (kind === 'req' && t !== undefined) rx.tokenHi = later(t, rx.tokenHi);
    },
  };
}

function decodeFrame(bytes: Uint8Array, ctx: CompactContext, commit: boolean, trace?: CompactField[]):
  { rule: CompactRule; message: CoapMessage; rfc7252: Uint8Array } {
  const r = new Reader(bytes, trace);
  if (bytes.length === 0) throw reject('empty', 'no bytes');
  const id = r.byte('the rule id');
  const rule = RULES_BY_ID.get(id);
  if (!rule) throw reject('unknown-rule', `unknown rule 0x${id.toString(16).padStart(2, '0')}`, { rule: id });
  r.note('rule', 0, `0x${id.toString(16).padStart(2, '0')} ${rule.name}`);

  if (rule.id === RULE_RFC7252) {
    const start = r.pos;
    const message = decodeMessage(bytes.subarray(1));
    r.pos = bytes.length;
    r.note('rfc7252', start, `${TYPE_NAMES[message.type]} ${codeToString(message.code)} mid 0x${message.mid.toString(16)}`);
    return { rule, message, rfc7252: bytes.slice(1) };
  }

  let code: number;
  if (rule.code === 'field') {
    const start = r.pos;
    code = r.byte('the code');
    r.note('code', start, codeToString(code));
    const ok = rule.header === 'req' ? isRequestCode(code) : isResponseCode(code);
    if (!ok) throw reject('bad-enum', `code ${codeToString(code)} does not belong in rule ${rule.name}`, { code });
  } else {
    code = rule.code;
  }
  const header = readHeader(rule.header, code, r, ctx);
  const bodyStart = r.pos;

  let options: CoapOption[] = [];
  let payload: Uint8Array = EMPTY_BYTES;
  if (rule.payload === 'rfc7252') {
    const start = r.pos;
    const inner = decodeMessage(concatBytes(Uint8Array.of(0x40 | (rule.type << 4), code, 0, 0), bytes.subarray(r.pos)));
    r.pos = bytes.length;
    options = [...inner.options];
    payload = inner.payload;
    r.note('rfc7252-body', start, options.map((o) => `${optionName(o.number)}=${text(o.value)}`).join(', ') || '(no options)');
  } else {
    for (const f of rule.fields) {
      const start = r.pos;
      switch (f.kind) {
        case 'const':
          options.push({ number: f.option, value: constValue(f) });
          r.note(optionName(f.option), start, `const ${JSON.stringify(f.value)}`);
          break;
        case 'param': {
          const p = readParam(r, optionName(f.option));
          options.push({ number: f.option, value: p.value });
          r.note(optionName(f.option), start, p.note);
          break;
        }
        case 'pathEnum': {
          const i = r.byte('the path enum');
          const v = PATH_ENUM_BYTES[i];
          if (!v) throw reject('bad-enum', `path enum index ${i} out of range`, { index: i });
          options.push({ number: URI_PATH, value: v.slice() });
          r.note('Uri-Path', start, `path enum ${JSON.stringify(PATH_ENUMS_V1[i])}`);
          break;
        }
        case 'segments': {
          const n = r.varint('the segment count');
          if (n > r.remaining) throw reject('truncated', `${n} segments cannot fit`, { n });
          r.note('Uri-Path count', start, String(n));
          for (let j = 0; j < n; j++) {
            const s0 = r.pos;
            const p = readParam(r, 'Uri-Path');
            options.push({ number: URI_PATH, value: p.value });
            r.note('Uri-Path', s0, p.note);
          }
          break;
        }
        case 'queries': {
          const n = r.varint('the Uri-Query count');
          if (n > r.remaining) throw reject('truncated', `${n} Uri-Query options cannot fit`, { n });
          r.note('Uri-Query count', start, String(n));
          for (let j = 0; j < n; j++) {
            const s0 = r.pos;
            const q = readQuery(r);
            options.push({ number: URI_QUERY, value: q.value });
            r.note('Uri-Query', s0, q.note);
          }
          break;
        }
        case 'observe': {
          const v = header.observe ?? 0;
          options.push({ number: OBSERVE, value: encodeUint(v) });
          r.note('Observe', start, `${v} (in the header)`);
          break;
        }
        case 'uint': {
          const n = r.varint(optionName(f.option));
          if (n > 0xffffffff) throw reject('bad-varint', 'uint option over 2^32');
          options.push({ number: f.option, value: encodeUint(n) });
          r.note(optionName(f.option), start, String(n));
          break;
        }
      }
    }
    const p = rule.payload;
    const start = r.pos;
    if (p === 'rest') payload = r.take(r.remaining, 'the payload');
    else if (p !== 'none') payload = r.take(p.exact, 'the payload');
    if (r.remaining > 0) throw reject('trailing-bytes', `${r.remaining} bytes after the end of rule ${rule.name}`, { extra: r.remaining });
    if (payload.length > 0) r.note('payload', start, `${payload.length} bytes`);
  }

  const message: CoapMessage = { type: rule.type, code, mid: header.mid, token: header.token, options, payload };
  let rfc7252: Uint8Array;
  try {
    rfc7252 = encodeMessage(message);
  } catch (e) {
    throw reject('bad-message', e instanceof TrickleError ? e.message : 'expands to no valid CoAP message');
  }
  // Canonical: the encoder would have chosen this rule and exactly these body bytes.
  const again = chooseRule(message);
  if (again.rule.id !== rule.id || !equalBytes(Uint8Array.from(again.body), bytes.subarray(bodyStart))) {
    throw reject('non-canonical', `rule ${rule.name} does not encode this message this way`, { rule: rule.id });
  }
  if (commit) header.commit();
  return { rule, message, rfc7252 };
}

/**
 * Decode one compact frame and advance the context (as received). Every failure is a
 * WireError (ERR_COAP_TRUNCATED, or ERR_COAP_FORMAT with detail.reason a
 * CompactRejectReason); the context is left unchanged then.
 */
export function decodeCompact(bytes: Uint8Array, ctx: CompactContext): CoapMessage {
  return decodeFrame(bytes, ctx, true).message;
}

export interface CompactExplanation {
  readonly ruleId: number;
  readonly rule: string;
  readonly doc: string;
  readonly fields: readonly CompactField[];
  readonly message: CoapMessage;
  /** The expanded RFC 7252 message. */
  readonly rfc7252: Uint8Array;
  readonly compactBytes: number;
}

/**
 * Describe a compact frame field by field, with its RFC 7252 expansion, for `trickle
 * frame explain`. Reads the context, never changes it. Throws the same WireErrors as
 * decodeCompact.
 */
export function explainCompact(bytes: Uint8Array, ctx: CompactContext): CompactExplanation {
  const fields: CompactField[] = [];
  const { rule, message, rfc7252 } = decodeFrame(bytes, ctx, false, fields);
  return { ruleId: rule.id, rule: rule.name, doc: rule.doc, fields, message, rfc7252, compactBytes: bytes.length };
}

/**
 * A WireCodec for CoapEndpoint over one compact context (one per peer and session).
 * Both ends must start from equal contexts (same initialSeq).
 */
export function compactWireCodec(ctx: CompactContext = createCompactContext()): WireCodec & { readonly context: CompactContext } {
  return {
    context: ctx,
    encode: (msg) => encodeCompact(msg, ctx),
    decode: (frame) => decodeCompact(frame, ctx),
    sizeBound: (msg) => compactSizeBound(msg),
  };
}
