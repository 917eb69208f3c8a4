/**
 * CoAP registries (RFC 7252 §12, plus RFC 7641 Observe, RFC 7959 Block/Size,
 * RFC 8132 FETCH/PATCH, RFC 8516 4.29) and Trickle's experimental options.
 *
 * Pure constants and bit arithmetic: no state, no I/O.
 */

// ---------------------------------------------------------------------------
// Message types (RFC 7252 §3, the 2-bit T field)
// ---------------------------------------------------------------------------

export const CON = 0;
export const NON = 1;
export const ACK = 2;
export const RST = 3;
export type CoapType = typeof CON | typeof NON | typeof ACK | typeof RST;

export const TYPE_NAMES: Readonly<Record<CoapType, 'CON' | 'NON' | 'ACK' | 'RST'>> = {
  0: 'CON', 1: 'NON', 2: 'ACK', 3: 'RST',
};

// ---------------------------------------------------------------------------
// Codes (RFC 7252 §3, §12.1): 8 bits, class (3 bits) . detail (5 bits), "c.dd"
// ---------------------------------------------------------------------------

/** Code from class and detail, e.g. makeCode(2, 5) === 0x45 (2.05). */
export function makeCode(cls: number, detail: number): number {
  return ((cls & 0x07) << 5) | (detail & 0x1f);
}
export function codeClass(code: number): number { return (code >> 5) & 0x07; }
export function codeDetail(code: number): number { return code & 0x1f; }

/** "c.dd" notation of RFC 7252 §12.1, e.g. 0x45 → "2.05". */
export function codeToString(code: number): string {
  return `${codeClass(code)}.${String(codeDetail(code)).padStart(2, '0')}`;
}

/** Inverse of codeToString; returns undefined for anything but "c.dd" with c ≤ 7, dd ≤ 31. */
export function parseCode(s: string): number | undefined {
  const m = /^([0-7])\.([0-3][0-9])$/.exec(s);
  if (!m) return undefined;
  const detail = Number(m[2]);
  if (detail > 31) return undefined;
  return makeCode(Number(m[1]), detail);
}

/** 0.00: an Empty message (RFC 7252 §4.1). */
export const EMPTY = 0x00;

/** Method codes (RFC 7252 §12.1.1; FETCH/PATCH/iPATCH from RFC 8132). */
export const Method = {
  GET: makeCode(0, 1),
  POST: makeCode(0, 2),
  PUT: makeCode(0, 3),
  DELETE: makeCode(0, 4),
  FETCH: makeCode(0, 5),
  PATCH: makeCode(0, 6),
  IPATCH: makeCode(0, 7),
} as const;

/** Response codes (RFC 7252 §12.1.2; 2.31, 4.08 from RFC 7959; 4.29 from RFC 8516). */
export const Response = {
  CREATED: makeCode(2, 1),
  DELETED: makeCode(2, 2),
  VALID: makeCode(2, 3),
  CHANGED: makeCode(2, 4),
  CONTENT: makeCode(2, 5),
  CONTINUE: makeCode(2, 31),
  BAD_REQUEST: makeCode(4, 0),
  UNAUTHORIZED: makeCode(4, 1),
  BAD_OPTION: makeCode(4, 2),
  FORBIDDEN: makeCode(4, 3),
  NOT_FOUND: makeCode(4, 4),
  METHOD_NOT_ALLOWED: makeCode(4, 5),
  NOT_ACCEPTABLE: makeCode(4, 6),
  REQUEST_ENTITY_INCOMPLETE: makeCode(4, 8),
  PRECONDITION_FAILED: makeCode(4, 12),
  REQUEST_ENTITY_TOO_LARGE: makeCode(4, 13),
  UNSUPPORTED_CONTENT_FORMAT: makeCode(4, 15),
  TOO_MANY_REQUESTS: makeCode(4, 29),
  INTERNAL_SERVER_ERROR: makeCode(5, 0),
  NOT_IMPLEMENTED: makeCode(5, 1),
  BAD_GATEWAY: makeCode(5, 2),
  SERVICE_UNAVAILABLE: makeCode(5, 3),
  GATEWAY_TIMEOUT: makeCode(5, 4),
  PROXYING_NOT_SUPPORTED: makeCode(5, 5),
} as const;

/** Class 0 with detail > 0 (RFC 7252 §12.1). */
export function isRequestCode(code: number): boolean { return code !== EMPTY && codeClass(code) === 0; }
/** Classes 2–5 (RFC 7252 §12.1). */
export function isResponseCode(code: number): boolean { const c = codeClass(code); return c >= 2 && c <= 5; }
/** Classes 1, 6 and 7 are reserved (RFC 7252 §12.1). */
export function isReservedCode(code: number): boolean { const c = codeClass(code); return c === 1 || c >= 6; }

// ---------------------------------------------------------------------------
// Option numbers (RFC 7252 §12.2 and §5.10; Observe RFC 7641 §2; Block RFC 7959 §2.1, §4)
// ---------------------------------------------------------------------------

export const Opt = {
  IF_MATCH: 1,
  URI_HOST: 3,
  ETAG: 4,
  IF_NONE_MATCH: 5,
  OBSERVE: 6,
  URI_PORT: 7,
  LOCATION_PATH: 8,
  URI_PATH: 11,
  CONTENT_FORMAT: 12,
  MAX_AGE: 14,
  URI_QUERY: 15,
  ACCEPT: 17,
  LOCATION_QUERY: 20,
  BLOCK2: 23,
  BLOCK1: 27,
  SIZE2: 28,
  PROXY_URI: 35,
  PROXY_SCHEME: 39,
  SIZE1: 60,
} as const;

/**
 * Trickle's own options, in the range RFC 7252 §12.2 leaves for experimental use
 * (65000–65535, "not to be assigned"). Both are peer-to-peer between `trickle host`
 * and `trickle gateway`; neither leaves the link.
 *
 * Cost: options are delta-encoded (§3.1), so any number ≥ 269 above the previous
 * option costs 2 extended-delta bytes. That is unavoidable for the first option of
 * this range in a message; the two numbers are kept adjacent (delta 3) so a message
 * carrying both pays it once. The compact on-air form (compact.ts) maps them to
 * short codes anyway.
 *
 * The low bits carry the option's properties (§5.4.6): bit 0 critical, bit 1 unsafe,
 * bits 2–4 == 0b111 NoCacheKey.
 */

/**
 * 65000 = 0xFDE8: elective, safe-to-forward. In a response: the HTTP status
 * (uint, 100–599) when it has no exact CoAP code (e.g. 429 vs 4.29 is exact, 409
 * Conflict is not); the CoAP code then carries the nearest class. Elective, so a
 * peer that does not know it still acts on the CoAP code.
 */
export const TRICKLE_OPT_HTTP_STATUS = 65000;

/**
 * 65003 = 0xFDEB: critical, unsafe, part of the cache key. In a request: the Matrix
 * access token (opaque bytes; the matrix layer sends it once per session). Critical
 * so a peer that does not understand it rejects the request (4.02) instead of
 * acting on it unauthenticated.
 */
export const TRICKLE_OPT_AUTHORIZATION = 65003;

export type OptionFormat = 'empty' | 'opaque' | 'uint' | 'string';

export interface OptionInfo {
  readonly name: string;
  readonly format: OptionFormat;
  /** Value length bounds in bytes (RFC 7252 §5.10 table). */
  readonly minLen: number;
  readonly maxLen: number;
  readonly repeatable: boolean;
}

const info = (name: string, format: OptionFormat, minLen: number, maxLen: number, repeatable = false): OptionInfo =>
  ({ name, format, minLen, maxLen, repeatable });

/** Known options and their formats (RFC 7252 §5.10, RFC 7641 §2, RFC 7959 §2.1/§4). */
export const OPTION_INFO: ReadonlyMap<number, OptionInfo> = new Map<number, OptionInfo>([
  [Opt.IF_MATCH, info('If-Match', 'opaque', 0, 8, true)],
  [Opt.URI_HOST, info('Uri-Host', 'string', 1, 255)],
  [Opt.ETAG, info('ETag', 'opaque', 1, 8, true)],
  [Opt.IF_NONE_MATCH, info('If-None-Match', 'empty', 0, 0)],
  [Opt.OBSERVE, info('Observe', 'uint', 0, 3)],
  [Opt.URI_PORT, info('Uri-Port', 'uint', 0, 2)],
  [Opt.LOCATION_PATH, info('Location-Path', 'string', 0, 255, true)],
  [Opt.URI_PATH, info('Uri-Path', 'string', 0, 255, true)],
  [Opt.CONTENT_FORMAT, info('Content-Format', 'uint', 0, 2)],
  [Opt.MAX_AGE, info('Max-Age', 'uint', 0, 4)],
  [Opt.URI_QUERY, info('Uri-Query', 'string', 0, 255, true)],
  [Opt.ACCEPT, info('Accept', 'uint', 0, 2)],
  [Opt.LOCATION_QUERY, info('Location-Query', 'string', 0, 255, true)],
  [Opt.BLOCK2, info('Block2', 'uint', 0, 3)],
  [Opt.BLOCK1, info('Block1', 'uint', 0, 3)],
  [Opt.SIZE2, info('Size2', 'uint', 0, 4)],
  [Opt.PROXY_URI, info('Proxy-Uri', 'string', 1, 1034)],
  [Opt.PROXY_SCHEME, info('Proxy-Scheme', 'string', 1, 255)],
  [Opt.SIZE1, info('Size1', 'uint', 0, 4)],
  [TRICKLE_OPT_HTTP_STATUS, info('Trickle-HTTP-Status', 'uint', 0, 2)],
  [TRICKLE_OPT_AUTHORIZATION, info('Trickle-Authorization', 'opaque', 1, 1024)],
]);

/** Critical: bit 0 set (RFC 7252 §5.4.1, §5.4.6). Unknown critical options reject the message. */
export function isCritical(optionNumber: number): boolean { return (optionNumber & 0x01) !== 0; }
/** Unsafe to forward: bit 1 set (RFC 7252 §5.4.2, §5.4.6). */
export function isUnsafe(optionNumber: number): boolean { return (optionNumber & 0x02) !== 0; }
/** NoCacheKey: bits 2–4 all set, only meaningful when safe-to-forward (RFC 7252 §5.4.6). */
export function isNoCacheKey(optionNumber: number): boolean { return (optionNumber & 0x1e) === 0x1c; }
export function isRepeatable(optionNumber: number): boolean { return OPTION_INFO.get(optionNumber)?.repeatable ?? false; }
export function optionName(optionNumber: number): string { return OPTION_INFO.get(optionNumber)?.name ?? `Option-${optionNumber}`; }

// ---------------------------------------------------------------------------
// Content-Formats (RFC 7252 §12.3; CBOR RFC 7049 §7.4)
// ---------------------------------------------------------------------------

export const ContentFormat = {
  TEXT_PLAIN: 0,       // text/plain;charset=utf-8
  LINK_FORMAT: 40,     // application/link-format
  XML: 41,             // application/xml
  OCTET_STREAM: 42,    // application/octet-stream
  EXI: 47,             // application/exi
  JSON: 50,            // application/json
  CBOR: 60,            // application/cbor
} as const;

/**
 * Trickle's experimental Content-Formats (RFC 7252 §12.3: 65000–65535 are for
 * experimental use). Peer-to-peer between `trickle host` and `trickle gateway`; the
 * compact header form (compact-rules-v1.ts) fixes them in its rules, so they cost
 * nothing on air. PROVISIONAL numbers until the matrix layer freezes its list.
 */
export const TrickleContentFormat = {
  /** The UTF-8 `body` of an m.room.message with msgtype m.text, and nothing else. */
  TEXT_MESSAGE: 65000,
  /** The 32 raw bytes of an event id's sha256 (the event id without "$" and base64). */
  EVENT_ID: 65001,
} as const;
