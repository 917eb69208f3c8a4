/**
 * RFC 7252 §3 message codec. Pure: bytes in, message out (or a WireError), and back.
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |Ver| T |  TKL  |      Code     |          Message ID           |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |   Token (if any, TKL bytes) ...
 *   |   Options (if any) ...
 *   |1 1 1 1 1 1 1 1|    Payload (if any) ...
 *
 * Options (§3.1): one byte of Option Delta (high nibble) and Option Length (low
 * nibble); nibble 13 → one extended byte holding value − 13; 14 → two bytes
 * (big-endian) holding value − 269; 15 is reserved (and 0xFF as a whole byte is the
 * payload marker). Deltas are relative to the previous option's number.
 *
 * The decoder rejects, never truncates. Shape rules checked here (§4.1–§4.3, §12.1):
 * Empty (0.00) has no token, options or payload; RST is always Empty; ACK is Empty
 * or a response; NON is never Empty; classes 1, 6, 7 are reserved.
 */
import { TrickleError, WireError, type ErrorCode } from '../errors.ts';
import { CON, NON, ACK, RST, EMPTY, type CoapType, isReservedCode, isRequestCode, codeToString } from './numbers.ts';

export interface CoapOption {
  readonly number: number;
  readonly value: Uint8Array;
}

export interface CoapMessage {
  readonly type: CoapType;
  /** 8-bit code, class << 5 | detail. */
  readonly code: number;
  /** 16-bit Message ID. */
  readonly mid: number;
  /** 0–8 bytes. */
  readonly token: Uint8Array;
  /** Encoded sorted by number; repeatable options keep their relative order. */
  readonly options: readonly CoapOption[];
  /** Empty payload ⇔ no payload marker on the wire. */
  readonly payload: Uint8Array;
}

export const COAP_VERSION = 1;
export const PAYLOAD_MARKER = 0xff;
export const MAX_TOKEN_LENGTH = 8;
export const MAX_OPTION_NUMBER = 0xffff;
/** Largest value length the 14-nibble form can carry: 65535 + 269 (§3.1). */
export const MAX_OPTION_VALUE_LENGTH = 0xffff + 269;

const EMPTY_BYTES = new Uint8Array(0);

function wire(code: ErrorCode, message: string, detail?: Record<string, unknown>): WireError {
  return new WireError(code, 'coap', message, detail);
}

/**
 * Shape rules shared by encoder and decoder; returns a reason or undefined.
 * `hasBody`: token, options or payload present.
 */
function shapeProblem(type: number, code: number, hasBody: boolean): string | undefined {
  if (isReservedCode(code)) return `code ${codeToString(code)} is in a reserved class`;
  if (code === EMPTY) {
    if (hasBody) return 'an Empty message (0.00) carries no token, options or payload';
    if (type === NON) return 'a NON message is never Empty';
    return undefined;
  }
  if (type === RST) return 'a RST message is always Empty';
  if (type === ACK && isRequestCode(code)) return 'an ACK carries a response or nothing, not a request';
  return undefined;
}

/** Bytes taken by the extended field of a delta/length value. */
function extLen(v: number): number { return v < 13 ? 0 : v < 269 ? 1 : 2; }
function nibble(v: number): number { return v < 13 ? v : v < 269 ? 13 : 14; }

/** Options stably sorted by number (repeatable options keep their order). */
export function sortOptions(options: readonly CoapOption[]): CoapOption[] {
  return options.map((o, i) => ({ o, i }))
    .sort((a, b) => a.o.number - b.o.number || a.i - b.i)
    .map((x) => x.o);
}

/**
 * Encode a message. Throws TrickleError (ERR_COAP_FORMAT / ERR_COAP_TOKEN_LENGTH /
 * ERR_COAP_OPTION) for a message this side should never have built.
 */
export function encodeMessage(msg: CoapMessage): Uint8Array {
  const { type, code, mid, token, payload } = msg;
  if (!Number.isInteger(type) || type < 0 || type > 3) throw new TrickleError('ERR_COAP_FORMAT', 'coap', `bad type ${type}`);
  if (!Number.isInteger(code) || code < 0 || code > 0xff) throw new TrickleError('ERR_COAP_FORMAT', 'coap', `bad code ${code}`);
  if (!Number.isInteger(mid) || mid < 0 || mid > 0xffff) throw new TrickleError('ERR_COAP_FORMAT', 'coap', `bad message id ${mid}`);
  if (token.length > MAX_TOKEN_LENGTH) throw new TrickleError('ERR_COAP_TOKEN_LENGTH', 'coap', `token of ${token.length} bytes (max 8)`);
  const problem = shapeProblem(type, code, token.length > 0 || msg.options.length > 0 || payload.length > 0);
  if (problem) throw new TrickleError('ERR_COAP_FORMAT', 'coap', problem, { type, code: codeToString(code) });

  const options = sortOptions(msg.options);
  let len = 4 + token.length;
  let prev = 0;
  for (const o of options) {
    if (!Number.isInteger(o.number) || o.number < 0 || o.number > MAX_OPTION_NUMBER) {
      throw new TrickleError('ERR_COAP_OPTION', 'coap', `bad option number ${o.number}`);
    }
    if (o.value.length > MAX_OPTION_VALUE_LENGTH) {
      throw new TrickleError('ERR_COAP_OPTION', 'coap', `option ${o.number} value of ${o.value.length} bytes is too long`);
    }
    const delta = o.number - prev;
    len += 1 + extLen(delta) + extLen(o.value.length) + o.value.length;
    prev = o.number;
  }
  if (payload.length > 0) len += 1 + payload.length;

  const out = new Uint8Array(len);
  out[0] = (COAP_VERSION << 6) | (type << 4) | token.length;
  out[1] = code;
  out[2] = mid >> 8;
  out[3] = mid & 0xff;
  out.set(token, 4);
  let pos = 4 + token.length;
  prev = 0;
  const writeExt = (v: number): void => {
    if (v >= 269) { const x = v - 269; out[pos++] = x >> 8; out[pos++] = x & 0xff; }
    else if (v >= 13) out[pos++] = v - 13;
  };
  for (const o of options) {
    const delta = o.number - prev;
    const vlen = o.value.length;
    out[pos++] = (nibble(delta) << 4) | nibble(vlen);
    writeExt(delta);
    writeExt(vlen);
    out.set(o.value, pos);
    pos += vlen;
    prev = o.number;
  }
  if (payload.length > 0) {
    out[pos++] = PAYLOAD_MARKER;
    out.set(payload, pos);
  }
  return out;
}

/**
 * Decode one message. Every failure is a WireError (layer 'coap'); nothing else is
 * thrown for any input. Returned byte arrays are copies, not views of `bytes`.
 */
export function decodeMessage(bytes: Uint8Array): CoapMessage {
  const len = bytes.length;
  if (len < 4) throw wire('ERR_COAP_TRUNCATED', `message of ${len} bytes is shorter than the 4-byte header`, { len });
  const b0 = bytes[0]!;
  const version = b0 >> 6;
  if (version !== COAP_VERSION) throw wire('ERR_COAP_VERSION', `version ${version}, expected 1`, { version });
  const type = ((b0 >> 4) & 0x03) as CoapType;
  const tkl = b0 & 0x0f;
  if (tkl > MAX_TOKEN_LENGTH) throw wire('ERR_COAP_TOKEN_LENGTH', `token length ${tkl} is reserved (9–15)`, { tkl });
  const code = bytes[1]!;
  const mid = (bytes[2]! << 8) | bytes[3]!;
  if (4 + tkl > len) throw wire('ERR_COAP_TRUNCATED', `message ends inside the ${tkl}-byte token`, { len, tkl });
  const problem = shapeProblem(type, code, len > 4);
  if (problem) throw wire('ERR_COAP_FORMAT', problem, { type, code: codeToString(code), mid });

  const token = bytes.slice(4, 4 + tkl);
  const options: CoapOption[] = [];
  let payload = EMPTY_BYTES;
  let pos = 4 + tkl;
  let prev = 0;

  const readExt = (n: number, what: string): number => {
    if (n < 13) return n;
    if (n === 13) {
      if (pos + 1 > len) throw wire('ERR_COAP_TRUNCATED', `message ends inside an extended option ${what}`, { pos });
      return bytes[pos++]! + 13;
    }
    // n === 14 (15 was rejected by the caller)
    if (pos + 2 > len) throw wire('ERR_COAP_TRUNCATED', `message ends inside an extended option ${what}`, { pos });
    const v = ((bytes[pos]! << 8) | bytes[pos + 1]!) + 269;
    pos += 2;
    return v;
  };

  while (pos < len) {
    const b = bytes[pos]!;
    if (b === PAYLOAD_MARKER) {
      pos++;
      if (pos === len) throw wire('ERR_COAP_PAYLOAD_MARKER', 'payload marker followed by an empty payload', { pos });
      payload = bytes.slice(pos);
      break;
    }
    pos++;
    const dn = b >> 4;
    const ln = b & 0x0f;
    if (dn === 15 || ln === 15) {
      throw wire('ERR_COAP_OPTION', `reserved option ${dn === 15 ? 'delta' : 'length'} nibble 15`, { pos: pos - 1 });
    }
    const delta = readExt(dn, 'delta');
    const vlen = readExt(ln, 'length');
    const number = prev + delta;
    if (number > MAX_OPTION_NUMBER) throw wire('ERR_COAP_OPTION', `option number ${number} exceeds 65535`, { number });
    if (pos + vlen > len) throw wire('ERR_COAP_TRUNCATED', `option ${number} value of ${vlen} bytes runs past the end`, { number, vlen });
    options.push({ number, value: bytes.slice(pos, pos + vlen) });
    pos += vlen;
    prev = number;
  }
  return { type, code, mid, token, options, payload };
}

// ---------------------------------------------------------------------------
// uint option values (RFC 7252 §3.2): big-endian, minimal length, 0 is empty
// ---------------------------------------------------------------------------

/** Minimal big-endian encoding of 0 ≤ n < 2^32 (0 → zero bytes). */
export function encodeUint(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new TrickleError('ERR_COAP_OPTION', 'coap', `uint option value ${n} is outside 0..2^32-1`);
  }
  if (n === 0) return new Uint8Array(0);
  const len = n < 0x100 ? 1 : n < 0x10000 ? 2 : n < 0x1000000 ? 3 : 4;
  const out = new Uint8Array(len);
  let v = n;
  for (let i = len - 1; i >= 0; i--) { out[i] = v & 0xff; v = Math.floor(v / 256); }
  return out;
}

/**
 * Decode a uint option value. Leading zero bytes are accepted (§3.2 only says a
 * sender SHOULD be minimal); more than `maxBytes` bytes is ERR_COAP_OPTION.
 */
export function decodeUint(value: Uint8Array, maxBytes = 4): number {
  if (value.length > maxBytes) {
    throw wire('ERR_COAP_OPTION', `uint option value of ${value.length} bytes (max ${maxBytes})`, { len: value.length });
  }
  let n = 0;
  for (const b of value) n = n * 256 + b;
  return n;
}

// ---------------------------------------------------------------------------
// Option list helpers
// ---------------------------------------------------------------------------

export function uintOption(number: number, n: number): CoapOption {
  return { number, value: encodeUint(n) };
}

export function stringOption(number: number, s: string): CoapOption {
  return { number, value: new TextEncoder().encode(s) };
}

/** First value of an option, or undefined. */
export function getOption(options: readonly CoapOption[], number: number): Uint8Array | undefined {
  for (const o of options) if (o.number === number) return o.value;
  return undefined;
}

/** All values of a (repeatable) option, in order. */
export function getOptions(options: readonly CoapOption[], number: number): Uint8Array[] {
  return options.filter((o) => o.number === number).map((o) => o.value);
}

/** A uint option's value, or undefined when absent; throws WireError when malformed. */
export function getUintOption(options: readonly CoapOption[], number: number, maxBytes = 4): number | undefined {
  const v = getOption(options, number);
  return v === undefined ? undefined : decodeUint(v, maxBytes);
}

/** The list without the given option numbers. */
export function withoutOptions(options: readonly CoapOption[], ...numbers: number[]): CoapOption[] {
  return options.filter((o) => !numbers.includes(o.number));
}

// ---------------------------------------------------------------------------
// Wire codecs: how a CoapEndpoint turns messages into frames and back
// ---------------------------------------------------------------------------

/**
 * A message ⇄ frame codec. May be stateful (compact.ts keeps LSB state per direction):
 * `encode` is called once per frame actually handed to the link, retransmissions
 * included, in sending order; `decode` once per received frame, in arrival order.
 */
export interface WireCodec {
  /** Encode one outgoing message. Throws TrickleError for a message that is not valid CoAP. */
  encode(msg: CoapMessage): Uint8Array;
  /** Decode one received frame; every failure is a WireError. */
  decode(frame: Uint8Array): CoapMessage;
  /**
   * Largest `encode(msg).length` in any codec state, for fitting messages and block
   * sizes into maxFrameLen. Default: the RFC 7252 length.
   */
  sizeBound?(msg: CoapMessage): number;
}

/** RFC 7252 §3 as it is: stateless. */
export const rfc7252Codec: WireCodec = Object.freeze({
  encode: encodeMessage,
  decode: decodeMessage,
  sizeBound: (msg: CoapMessage) => encodeMessage(msg).length,
});
