/**
 * HTTP/JSON ⇄ CoAP/CBOR for the Matrix client-server API (MSC3079 v1 semantics).
 *
 * Request (host → gateway):
 *   method        → CoAP method code (GET 0.01, POST 0.02, PUT 0.03, DELETE 0.04)
 *   path          → Uri-Path segments, collapsed with the MSC3079 Appendix B path enums
 *                   (`/v3/` read like `/r0/`); unmatched paths pass through unchanged
 *   query         → one Uri-Query option per `key=value`, percent-decoded (RFC 7252 §6.5)
 *   access token  → MSC3079 Authorization option (256)
 *   JSON body     → CBOR with MSC3079 Appendix A integer keys, Content-Format 60
 *   other body    → bytes as they are, Content-Format 42 + Trickle-Content-Type option
 *
 * Response (gateway → host):
 *   HTTP status   → CoAP code c.dd when dd ≤ 31 (200 ↔ 2.05 Content); otherwise the
 *                   class code plus the Trickle-HTTP-Status option with the exact status
 *   body          → as for requests
 *
 * Pure: no I/O, no logging. Malformed input from the wire is a WireError.
 */
import { WireError } from '../errors.ts';
import { utf8 } from '../util/bytes.ts';
import { encodeJsonAsCbor, decodeCborAsJson } from '../codec/cbor.ts';
import { httpPathToUriPath, uriPathToHttpPath } from '../codec/paths-v1.ts';
import { Method, Opt, TRICKLE_OPT_HTTP_STATUS, makeCode, codeClass, codeDetail, isRequestCode } from '../coap/numbers.ts';
import { getOption, getOptions, getUintOption, stringOption, uintOption, type CoapOption } from '../coap/message.ts';
import { isJsonContentType, type HttpRequestLike, type HttpResponseLike } from './http.ts';

/** MSC3079 "Access Tokens": option 256 carries the Authorization value (the bare access token). */
export const MSC3079_OPT_AUTHORIZATION = 256;
/** Trickle experimental option (RFC 7252 §12.2, 65000–65535): Content-Type of a non-JSON body. Elective. */
export const TRICKLE_OPT_CONTENT_TYPE = 65004;

export const CONTENT_FORMAT_OCTET_STREAM = 42;
export const CONTENT_FORMAT_CBOR = 60;

/** Bounds for decoding bodies from the wire. */
export interface BodyBounds { maxBodyBytes: number }
const DEFAULT_BOUNDS: BodyBounds = { maxBodyBytes: 16 * 1024 * 1024 };

export interface CoapRequestParts {
  code: number;
  options: readonly CoapOption[];
  payload: Uint8Array;
}
export type CoapResponseParts = CoapRequestParts;

const METHOD_CODES: Record<string, number> = { GET: Method.GET, POST: Method.POST, PUT: Method.PUT, DELETE: Method.DELETE };
const CODE_METHODS = new Map<number, string>(Object.entries(METHOD_CODES).map(([k, v]) => [v, k]));

function bodyToCoap(contentType: string | undefined, body: Uint8Array): { options: CoapOption[]; payload: Uint8Array } {
  if (body.length === 0) return { options: [], payload: body };
  if (contentType === undefined || isJsonContentType(contentType)) {
    let value: unknown;
    try { value = JSON.parse(utf8.decode(body)); } catch { value = undefined; }
    if (value !== undefined) {
      try {
        return { options: [uintOption(Opt.CONTENT_FORMAT, CONTENT_FORMAT_CBOR)], payload: encodeJsonAsCbor(value) };
      } catch {
        // JSON that CBOR's profile refuses (nesting over the bound, lone surrogates):
        // carry the JSON text itself rather than fail the request.
      }
    }
  }
  const options = [uintOption(Opt.CONTENT_FORMAT, CONTENT_FORMAT_OCTET_STREAM)];
  if (contentType) options.push(stringOption(TRICKLE_OPT_CONTENT_TYPE, contentType));
  return { options, payload: body };
}

function bodyFromCoap(options: readonly CoapOption[], payload: Uint8Array, bounds: BodyBounds): { contentType?: string; body: Uint8Array } {
  if (payload.length === 0) return { body: payload };
  const cf = getUintOption(options, Opt.CONTENT_FORMAT);
  if (cf === CONTENT_FORMAT_CBOR) {
    const value = decodeCborAsJson(payload, { maxBytes: bounds.maxBodyBytes });
    return { contentType: 'application/json', body: utf8.encode(JSON.stringify(value)) };
  }
  if (cf === undefined || cf === CONTENT_FORMAT_OCTET_STREAM) {
    const ct = getOption(options, TRICKLE_OPT_CONTENT_TYPE);
    return { ...(ct ? { contentType: decodeText(ct, 'Trickle-Content-Type') } : {}), body: payload };
  }
  throw new WireError('ERR_COAP_OPTION', 'matrix', `unsupported Content-Format ${cf}`);
}

function decodeText(b: Uint8Array, what: string): string {
  try { return utf8.decode(b); } catch { throw new WireError('ERR_COAP_OPTION', 'matrix', `${what} is not valid UTF-8`); }
}

function safeDecodeURIComponent(s: string): string {
  try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; }
}

export function encodeHttpRequest(req: HttpRequestLike): CoapRequestParts {
  const code = METHOD_CODES[req.method.toUpperCase()];
  if (code === undefined) throw new WireError('ERR_MATRIX_REQUEST', 'matrix', `method ${req.method} cannot be carried`);
  const options: CoapOption[] = httpPathToUriPath(req.path).map((seg) => stringOption(Opt.URI_PATH, seg));
  if (req.query) {
    for (const pair of req.query.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      const q = eq < 0 ? safeDecodeURIComponent(pair) : `${safeDecodeURIComponent(pair.slice(0, eq))}=${safeDecodeURIComponent(pair.slice(eq + 1))}`;
      options.push(stringOption(Opt.URI_QUERY, q));
    }
  }
  if (req.accessToken) options.push(stringOption(MSC3079_OPT_AUTHORIZATION, req.accessToken));
  const body = bodyToCoap(req.contentType, req.body);
  options.push(...body.options);
  return { code, options, payload: body.payload };
}

export function decodeCoapRequest(msg: { code: number; options: readonly CoapOption[]; payload: Uint8Array }, bounds: BodyBounds = DEFAULT_BOUNDS): HttpRequestLike {
  if (!isRequestCode(msg.code)) throw new WireError('ERR_COAP_FORMAT', 'matrix', 'not a request');
  const method = CODE_METHODS.get(msg.code);
  if (!method) throw new WireError('ERR_MATRIX_REQUEST', 'matrix', `CoAP method ${msg.code} has no HTTP equivalent here`);
  const segments = getOptions(msg.options, Opt.URI_PATH).map((s) => decodeText(s, 'Uri-Path'));
  const path = uriPathToHttpPath(segments, { clientVersion: 'v3' });
  const query = getOptions(msg.options, Opt.URI_QUERY)
    .map((q) => {
      const s = decodeText(q, 'Uri-Query');
      const eq = s.indexOf('=');
      return eq < 0 ? encodeURIComponent(s) : `${encodeURIComponent(s.slice(0, eq))}=${encodeURIComponent(s.slice(eq + 1))}`;
    })
    .join('&');
  const token = getOption(msg.options, MSC3079_OPT_AUTHORIZATION);
  const body = bodyFromCoap(msg.options, msg.payload, bounds);
  return {
    method, path, query,
    ...(token ? { accessToken: decodeText(token, 'Authorization') } : {}),
    ...(body.contentType ? { contentType: body.contentType } : {}),
    body: body.body,
  };
}

/** HTTP status → CoAP response code (+ exact status option when the code cannot say it). */
export function httpStatusToCoap(status: number): { code: number; statusOption?: CoapOption } {
  if (status === 200) return { code: makeCode(2, 5) };
  const cls = Math.floor(status / 100);
  const detail = status % 100;
  if (cls >= 2 && cls <= 5 && detail <= 31 && status !== 205) return { code: makeCode(cls, detail) };
  const safeCls = cls >= 2 && cls <= 5 ? cls : 5;
  return { code: makeCode(safeCls, 0), statusOption: uintOption(TRICKLE_OPT_HTTP_STATUS, status) };
}

export function coapToHttpStatus(code: number, options: readonly CoapOption[]): number {
  const exact = getUintOption(options, TRICKLE_OPT_HTTP_STATUS);
  if (exact !== undefined) {
    if (exact < 100 || exact > 599) throw new WireError('ERR_COAP_OPTION', 'matrix', `HTTP status ${exact} out of range`);
    return exact;
  }
  const cls = codeClass(code);
  if (cls < 2 || cls > 5) throw new WireError('ERR_COAP_FORMAT', 'matrix', `CoAP code ${code} is not a response`);
  if (code === makeCode(2, 5)) return 200;
  return cls * 100 + codeDetail(code);
}

export function encodeHttpResponse(res: HttpResponseLike): CoapResponseParts {
  const { code, statusOption } = httpStatusToCoap(res.status);
  const body = bodyToCoap(res.contentType, res.body);
  const options = [...body.options];
  if (statusOption) options.push(statusOption);
  return { code, options, payload: body.payload };
}

export function decodeCoapResponse(msg: { code: number; options: readonly CoapOption[]; payload: Uint8Array }, bounds: BodyBounds = DEFAULT_BOUNDS): HttpResponseLike {
  const status = coapToHttpStatus(msg.code, msg.options);
  const body = bodyFromCoap(msg.options, msg.payload, bounds);
  return { status, body: body.body, ...(body.contentType ? { contentType: body.contentType } : {}) };
}
