/**
 * Wire pieces of the per-link-session Matrix mapping (session.ts): option and
 * Content-Format numbers, what counts as "handle-able", the "~N" / "~~" escape of path
 * and query values, and the body codec (JSON ⇄ Trickle CBOR v1, TEXT_MESSAGE, EVENT_ID,
 * octet-stream). The contract is written out in session.ts's header; this file holds
 * the mechanics both ends share, so they cannot drift apart.
 *
 * Pure: no I/O, no logging. Bad wire input is a WireError.
 */
import { TrickleError, WireError } from '../errors.ts';
import { utf8 } from '../util/bytes.ts';
import {
  encodeTrickleCbor, decodeTrickleCbor, eventIdToBytes, eventIdFromBytes,
} from '../codec/trickle-cbor-v1.ts';
import { ContentFormat, Opt, TrickleContentFormat, TRICKLE_OPT_HTTP_STATUS, isCritical } from '../coap/numbers.ts';
import { getOption, decodeUint, stringOption, uintOption, type CoapOption } from '../coap/message.ts';
import {
  CONTENT_FORMAT_OCTET_STREAM, MSC3079_OPT_AUTHORIZATION, TRICKLE_OPT_CONTENT_TYPE,
} from './http-coap.ts';
import { isJsonContentType } from './http.ts';
import { compressBody, decompressBody, matrixDictionaryV1 } from '../codec/dictionary.ts';

// ---------------------------------------------------------------------------------------------
// Numbers (RFC 7252 §12.2 / §12.3 experimental ranges, 65000–65535)

/**
 * 65008 = 0xFDF0: elective, safe-to-forward, uint (0–3 bytes). In a response: the first handle
 * number H0 given to the message's handle-able literals (session.ts §HANDLES). Elective: a peer
 * that ignores it just never learns those handles, which the protocol tolerates by design.
 */
export const TRICKLE_OPT_HANDLE_BASE = 65008;
/**
 * 65011 = 0xFDF3: critical, unsafe, empty. In a request: "perform this without any access
 * token" (the local client sent no Authorization header). Critical so that a gateway that does
 * not understand it refuses the request rather than attach its session token.
 */
export const TRICKLE_OPT_NO_AUTH = 65011;
/**
 * 65012 = 0xFDF4: elective, safe, uint (1–3 bytes). In a response made by the gateway's session
 * itself, not by the homeserver: value & 3 is the reason (SESSION_ERROR_*); for
 * HANDLE_UNKNOWN, value >> 2 is the handle number the gateway does not hold.
 */
export const TRICKLE_OPT_SESSION_ERROR = 65012;
export const SESSION_ERROR_HANDLE_UNKNOWN = 1;
export const SESSION_ERROR_TOKEN_MISSING = 2;

/**
 * Trickle CBOR v1 bodies travel as Content-Format 60 (application/cbor): they are well-formed
 * RFC 8949 CBOR, and the compact rules (compact-rules-v1.ts: send-event, put-cbor, post-cbor,
 * ack-content-cbor, con-content-cbor, …) fix exactly 60. Which CBOR profile is meant (MSC3079
 * int keys + Trickle value enums, raw event ids, handles) is a property of the link session,
 * negotiated with the other versioned tables. A Trickle CBOR v1 decoder also reads plain
 * MSC3079 CBOR as produced from JSON.
 */
export const CONTENT_FORMAT_TRICKLE_CBOR_V1 = ContentFormat.CBOR;
export const CONTENT_FORMAT_TEXT_MESSAGE = TrickleContentFormat.TEXT_MESSAGE;
export const CONTENT_FORMAT_EVENT_ID = TrickleContentFormat.EVENT_ID;
/**
 * Trickle CBOR v1 compressed with raw DEFLATE (RFC 1951) and the preset dictionary matrix-v1
 * (src/codec/dictionaries/); an experimental Content-Format number (RFC 7252 §12.3, 65000–65535).
 */
export const CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE = 65002;

/** Handle numbers are < 2^21: the compact `param` field and the CBOR handle varint (3 bytes) both carry that. */
export const HANDLE_LIMIT = 2 ** 21;
/**
 * Usability window. The gateway uses a handle in a response only when H ≥ next − HANDLE_WINDOW
 * (and confirmed); the host uses one in a request only when H ≥ seen − HANDLE_WINDOW. Both sides
 * keep handles ≥ (their high mark) − 2·HANDLE_WINDOW and forget older ones: at most 65 536 live
 * handles per side, without any "forget" message.
 */
export const HANDLE_WINDOW = 2 ** 15;
export const HANDLE_RETAIN = 2 * HANDLE_WINDOW;

// ---------------------------------------------------------------------------------------------
// What is handle-able

const SIGIL_ID = /^[!@$#+][^\s]{1,254}$/;
/** JSON keys whose string values are since/batch tokens or filter ids. */
const TOKEN_KEYS: ReadonlySet<string> = new Set(['next_batch', 'prev_batch', 'start', 'end', 'filter_id']);
/** Query keys whose values are handle-able whatever they look like. */
export const TOKEN_QUERY_KEYS: ReadonlySet<string> = new Set(['since', 'from', 'to', 'filter']);

/** A Matrix sigil id: room, user, event, alias, group/community ids. */
export function isSigilId(s: string): boolean {
  return SIGIL_ID.test(s);
}

/** Handle-able as a query value. */
export function isHandleableQuery(key: string, value: string): boolean {
  return TOKEN_QUERY_KEYS.has(key) || SIGIL_ID.test(value);
}

/**
 * What a JSON body tells the numbering beyond its literal values: the string values at
 * TOKEN_KEYS anywhere (tokens), and the map keys that are sigil ids (room ids in sync's
 * rooms.join, event ids in receipts, user ids in device lists…), in a fixed depth-first
 * order. Keys always travel literally (Trickle CBOR v1 replaces values only), so both ends
 * see the same keys. Iterative: depth cannot blow the stack.
 */
export function bodyStrings(root: unknown): { tokens: Set<string>; keys: string[] } {
  const tokens = new Set<string>();
  const keys: string[] = [];
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) { for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]); continue; }
    const entries = Object.entries(v as Record<string, unknown>);
    for (const [k, x] of entries) {
      if (SIGIL_ID.test(k)) keys.push(k);
      if (typeof x === 'string' && TOKEN_KEYS.has(k)) tokens.add(x);
    }
    for (let i = entries.length - 1; i >= 0; i--) stack.push(entries[i]![1]);
  }
  return { tokens, keys };
}

/**
 * The numbering list of a response: the request's handle-able literals (already filtered, in
 * order), then the body's literal values that are sigil ids or token values (encoding order),
 * then the body's sigil-id map keys (bodyStrings order); each distinct string once, at its
 * first occurrence.
 */
export function numberingList(requestLiterals: readonly string[], bodyLiterals: readonly string[], body: unknown): string[] {
  const { tokens, keys } = bodyStrings(body);
  const seen = new Set<string>();
  const out: string[] = [];
  const add = (s: string): void => { if (!seen.has(s)) { seen.add(s); out.push(s); } };
  for (const s of requestLiterals) add(s);
  for (const s of bodyLiterals) if (SIGIL_ID.test(s) || tokens.has(s)) add(s);
  for (const s of keys) add(s);
  return out;
}

// ---------------------------------------------------------------------------------------------
// "~N" handle references in Uri-Path / Uri-Query values

const HANDLE_REF = /^~(0|[1-9][0-9]{0,6})$/;

export function handleRef(n: number): string {
  return `~${n}`;
}

/** A literal value as it goes on the wire: a leading "~" is doubled so it is never read as a handle. */
export function escapeLiteral(s: string): string {
  return s.startsWith('~') ? `~${s}` : s;
}

export type WireValue = { readonly handle: number } | { readonly literal: string };

/** Inverse of handleRef / escapeLiteral. "~" followed by anything else is malformed. */
export function parseWireValue(v: string, what: string): WireValue {
  if (!v.startsWith('~')) return { literal: v };
  if (v.startsWith('~~')) return { literal: v.slice(1) };
  const m = HANDLE_REF.exec(v);
  const n = m ? Number(m[1]) : NaN;
  if (!(n < HANDLE_LIMIT)) throw new WireError('ERR_MATRIX_REQUEST', 'matrix', `${what} ${JSON.stringify(v.slice(0, 16))} is neither a handle "~N" nor an escaped literal "~~…"`);
  return { handle: n };
}

// ---------------------------------------------------------------------------------------------
// Options

const SINGLE: ReadonlySet<number> = new Set([
  Opt.CONTENT_FORMAT, MSC3079_OPT_AUTHORIZATION, TRICKLE_OPT_CONTENT_TYPE, TRICKLE_OPT_NO_AUTH,
  TRICKLE_OPT_HANDLE_BASE, TRICKLE_OPT_SESSION_ERROR, TRICKLE_OPT_HTTP_STATUS,
  Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE1, Opt.SIZE2,
]);
const BLOCK_OPTIONS = [Opt.BLOCK1, Opt.BLOCK2, Opt.SIZE1, Opt.SIZE2];

export const REQUEST_OPTIONS: ReadonlySet<number> = new Set([
  Opt.URI_PATH, Opt.URI_QUERY, Opt.CONTENT_FORMAT, MSC3079_OPT_AUTHORIZATION, TRICKLE_OPT_CONTENT_TYPE, TRICKLE_OPT_NO_AUTH,
  ...BLOCK_OPTIONS,
]);
export const RESPONSE_OPTIONS: ReadonlySet<number> = new Set([
  Opt.CONTENT_FORMAT, TRICKLE_OPT_HTTP_STATUS, TRICKLE_OPT_CONTENT_TYPE, TRICKLE_OPT_HANDLE_BASE, TRICKLE_OPT_SESSION_ERROR,
  ...BLOCK_OPTIONS,
]);

/**
 * RFC 7252 §5.4.1: an unrecognised critical option rejects the message; elective ones are
 * ignored. Options this mapping knows may appear once unless repeatable (§5.4.5).
 */
export function checkOptions(options: readonly CoapOption[], known: ReadonlySet<number>, what: string): void {
  const counts = new Map<number, number>();
  for (const o of options) {
    if (!known.has(o.number)) {
      if (isCritical(o.number)) throw new WireError('ERR_COAP_OPTION', 'matrix', `${what} carries unknown critical option ${o.number}`, { option: o.number });
      continue;
    }
    const n = (counts.get(o.number) ?? 0) + 1;
    counts.set(o.number, n);
    if (n > 1 && SINGLE.has(o.number)) throw new WireError('ERR_COAP_OPTION', 'matrix', `${what} repeats option ${o.number}`, { option: o.number });
  }
}

export function decodeText(b: Uint8Array, what: string): string {
  try { return utf8.decode(b); } catch { throw new WireError('ERR_COAP_OPTION', 'matrix', `${what} is not valid UTF-8`); }
}

/** A uint option as a number; bounded to `maxBytes` and canonical-enough for our purposes. */
export function uintOptionValue(options: readonly CoapOption[], number: number, maxBytes: number): number | undefined {
  const v = getOption(options, number);
  return v === undefined ? undefined : decodeUint(v, maxBytes);
}

// ---------------------------------------------------------------------------------------------
// Bodies

export interface BodyEncodeHooks {
  /** Handle number for a string value the peer can resolve (undefined: send it literally). */
  handleOf?: (s: string) => number | undefined;
}

export interface EncodedBody {
  readonly options: CoapOption[];
  readonly payload: Uint8Array;
  /** String values that went out literally (incl. raw event ids), in encoding order. */
  readonly literals: string[];
  /** The JSON value carried, when the body was JSON. */
  readonly value?: unknown;
  readonly format: 'none' | 'cbor' | 'text-message' | 'event-id' | 'octets';
}

export interface DecodedBody {
  readonly contentType?: string;
  readonly body: Uint8Array;
  readonly literals: string[];
  readonly value?: unknown;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Parsed JSON, or undefined when the bytes are not JSON that survives the trip exactly. */
export function parseJsonBody(contentType: string | undefined, body: Uint8Array): { value: unknown } | undefined {
  if (contentType !== undefined && !isJsonContentType(contentType)) return undefined;
  let value: unknown;
  try { value = JSON.parse(utf8.decode(body)); } catch { return undefined; }
  // Integers beyond 2^53 lost digits in JSON.parse: carry those bodies as they are.
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') { if (Number.isInteger(v) && !Number.isSafeInteger(v)) return undefined; continue; }
    if (v !== null && typeof v === 'object') stack.push(...(Array.isArray(v) ? v : Object.values(v as object)));
  }
  return { value };
}

/** Exactly {"msgtype":"m.text","body":S}: S, else undefined. */
export function textMessageBody(v: unknown): string | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 2) return undefined;
  const o = v as Record<string, unknown>;
  if (o['msgtype'] !== 'm.text' || typeof o['body'] !== 'string' || LONE_SURROGATE.test(o['body'])) return undefined;
  return o['body'];
}

/** Exactly {"event_id": E} with E a room-v4+ event id: E, else undefined. */
export function eventIdBody(v: unknown): string | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 1 || keys[0] !== 'event_id') return undefined;
  const e = (v as Record<string, unknown>)['event_id'];
  return typeof e === 'string' && eventIdToBytes(e) !== undefined ? e : undefined;
}

function octets(contentType: string | undefined, body: Uint8Array): EncodedBody {
  const options = [uintOption(Opt.CONTENT_FORMAT, CONTENT_FORMAT_OCTET_STREAM)];
  if (contentType) options.push(stringOption(TRICKLE_OPT_CONTENT_TYPE, contentType));
  return { options, payload: body, literals: [], format: 'octets' };
}

function cf(n: number): CoapOption { return uintOption(Opt.CONTENT_FORMAT, n); }

/**
 * Encode a body. `shapes` says which special shapes may be used: requests allow
 * TEXT_MESSAGE, 2.05 responses EVENT_ID (only when `handleOf` has nothing for the event id).
 */
export function encodeBody(contentType: string | undefined, body: Uint8Array, shapes: { textMessage: boolean; eventId: boolean }, hooks: BodyEncodeHooks): EncodedBody {
  if (body.length === 0) return { options: [], payload: body, literals: [], format: 'none' };
  const parsed = parseJsonBody(contentType, body);
  if (!parsed) return octets(contentType, body);
  const { value } = parsed;
  if (shapes.textMessage) {
    const text = textMessageBody(value);
    if (text !== undefined) return { options: [cf(CONTENT_FORMAT_TEXT_MESSAGE)], payload: utf8.encode(text), literals: [], value, format: 'text-message' };
  }
  if (shapes.eventId) {
    const e = eventIdBody(value);
    if (e !== undefined && hooks.handleOf?.(e) === undefined) {
      return { options: [cf(CONTENT_FORMAT_EVENT_ID)], payload: eventIdToBytes(e)!, literals: [e], value, format: 'event-id' };
    }
  }
  const literals: string[] = [];
  let payload: Uint8Array;
  try {
    payload = encodeTrickleCbor(value, { ...(hooks.handleOf ? { handleOf: hooks.handleOf } : {}), onLiteral: (s) => literals.push(s) });
  } catch (e) {
    // JSON the CBOR profile refuses (nesting over its bound, lone surrogates): carry the text.
    if (e instanceof TrickleError) return octets(contentType, body);
    throw e;
  }
  // Per message, DEFLATE with the preset dictionary only where it pays for the compact rule
  // it loses (deflated bodies travel under a Content-Format the v1 rules do not shorten).
  const deflated = payload.length > DEFLATE_MIN_INPUT ? compressBody(payload) : undefined;
  if (deflated && deflated.length + DEFLATE_MIN_SAVING <= payload.length) {
    return { options: [cf(CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE)], payload: deflated, literals, value, format: 'cbor' };
  }
  return { options: [cf(CONTENT_FORMAT_TRICKLE_CBOR_V1)], payload, literals, value, format: 'cbor' };
}

/** Bodies shorter than this are never worth deflating; a deflated body must save at least DEFLATE_MIN_SAVING bytes. */
const DEFLATE_MIN_INPUT = 48;
const DEFLATE_MIN_SAVING = 8;

export interface BodyDecodeOptions {
  readonly allowTextMessage: boolean;
  readonly allowEventId: boolean;
  readonly maxBodyBytes: number;
  readonly resolveHandle: (n: number) => string | undefined;
}

function bodyError(message: string, detail?: Record<string, unknown>): WireError {
  return new WireError('ERR_MATRIX_BODY', 'matrix', message, detail);
}

const jsonBytes = (v: unknown): Uint8Array => utf8.encode(JSON.stringify(v));
const JSON_CT = 'application/json';

/** Decode a body; every malformed input is a WireError (ERR_MATRIX_BODY, ERR_CBOR_*, ERR_HANDLE_UNKNOWN, ERR_COAP_OPTION). */
export function decodeBody(options: readonly CoapOption[], payload: Uint8Array, o: BodyDecodeOptions): DecodedBody {
  const format = uintOptionValue(options, Opt.CONTENT_FORMAT, 2);
  const ctOption = getOption(options, TRICKLE_OPT_CONTENT_TYPE);
  if (ctOption !== undefined && format !== CONTENT_FORMAT_OCTET_STREAM) {
    throw bodyError('Trickle-Content-Type without Content-Format application/octet-stream');
  }
  if (payload.length > o.maxBodyBytes) throw bodyError(`body of ${payload.length} bytes exceeds the bound ${o.maxBodyBytes}`);
  if (format === undefined) {
    if (payload.length > 0) throw bodyError('payload without a Content-Format');
    return { body: payload, literals: [] };
  }
  switch (format) {
    case CONTENT_FORMAT_TRICKLE_CBOR_V1: {
      if (payload.length === 0) throw bodyError('Content-Format CBOR with no payload');
      const literals: string[] = [];
      const value = decodeTrickleCbor(payload, { resolveHandle: o.resolveHandle, onLiteral: (s) => literals.push(s) }, { maxBytes: o.maxBodyBytes });
      return { contentType: JSON_CT, body: jsonBytes(value), literals, value };
    }
    case CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE: {
      if (payload.length === 0) throw bodyError('Content-Format deflated CBOR with no payload');
      const inflated = decompressBody(payload, matrixDictionaryV1(), o.maxBodyBytes);
      const literals: string[] = [];
      const value = decodeTrickleCbor(inflated, { resolveHandle: o.resolveHandle, onLiteral: (s) => literals.push(s) }, { maxBytes: o.maxBodyBytes });
      return { contentType: JSON_CT, body: jsonBytes(value), literals, value };
    }
    case CONTENT_FORMAT_TEXT_MESSAGE: {
      if (!o.allowTextMessage) throw bodyError('Content-Format TEXT_MESSAGE is only valid in a request');
      let text: string;
      try { text = utf8.decode(payload); } catch { throw bodyError('TEXT_MESSAGE payload is not valid UTF-8'); }
      const value = { msgtype: 'm.text', body: text };
      return { contentType: JSON_CT, body: jsonBytes(value), literals: [], value };
    }
    case CONTENT_FORMAT_EVENT_ID: {
      if (!o.allowEventId) throw bodyError('Content-Format EVENT_ID is only valid in a 2.05 response');
      if (payload.length !== 32) throw bodyError(`EVENT_ID payload of ${payload.length} bytes, expected 32`, { len: payload.length });
      const e = eventIdFromBytes(payload);
      const value = { event_id: e };
      return { contentType: JSON_CT, body: jsonBytes(value), literals: [e], value };
    }
    case CONTENT_FORMAT_OCTET_STREAM: {
      if (payload.length === 0) throw bodyError('Content-Format octet-stream with no payload');
      return { ...(ctOption ? { contentType: decodeText(ctOption, 'Trickle-Content-Type') } : {}), body: payload, literals: [] };
    }
    default:
      throw bodyError(`unsupported Content-Format ${format}`, { contentFormat: format });
  }
}

// ---------------------------------------------------------------------------------------------
// Query strings

function safeDecodeURIComponent(s: string): string {
  try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; }
}

/** `a=b&c` → [["a","b"],["c",undefined]], percent-decoded (as http-coap.ts does). */
export function parseQuery(query: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  if (!query) return out;
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) out.push([safeDecodeURIComponent(pair), undefined]);
    else out.push([safeDecodeURIComponent(pair.slice(0, eq)), safeDecodeURIComponent(pair.slice(eq + 1))]);
  }
  return out;
}

export function formatQuery(pairs: readonly (readonly [string, string | undefined])[]): string {
  return pairs.map(([k, v]) => (v === undefined ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&');
}


