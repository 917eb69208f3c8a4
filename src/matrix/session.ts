/**
 * The per-link-session Matrix mapping: one `HostSession` at the field kit, one `GatewaySession`
 * at the gateway, for the life of one link session. It replaces the stateless mapping of
 * http-coap.ts (whose status mapping it reuses) with four stateful savings: handles, txn ids
 * from the CoAP token, the access token once per session, and special body shapes.
 *
 * REQUEST (host → gateway)
 *   method      GET/POST/PUT/DELETE → 0.01/0.02/0.03/0.04; nothing else is carried.
 *   path        Uri-Path = MSC3079 Appendix B path enum + parameters (codec/paths-v1.ts, `/v3`
 *               read like `/r0`; the gateway always writes `/v3`). Unmatched paths travel as
 *               their decoded segments. Every segment after the first is a WIRE VALUE:
 *                 "~N"   handle N (N canonical decimal < 2^21) — the form compact.ts's `param`
 *                        field carries in one varint,
 *                 "~~x"  the literal "~x" (a literal starting with "~" gets one more "~"),
 *                 other  the literal itself; "~" + anything else is malformed (rejected).
 *   txn id      For enums 9 (send), F (redact) and c (sendToDevice) the last segment, the
 *               client's txn id, is NOT sent (so send is PUT ["9", room, type], the shape of the
 *               compact send-text / send-event rules). The gateway appends
 *               `t<sessionId>.<S>` where S = tokenSequence(CoAP token) (`x<hex>` for a token
 *               that is not 4 bytes): stable across CoAP retransmissions and across host
 *               resends with the same token. The host keeps (client token, path incl. client
 *               txn id) → S (`txnKey`, hashed, last 1024) so a client's retry of a txn goes out
 *               with the same token, hence the same homeserver txn id. A request that carries the
 *               txn segment anyway is taken as it is.
 *   query       One Uri-Query "key=value" per pair, percent-decoded (RFC 7252 §6.5), in order;
 *               the value is a wire value as above. The host uses a handle for the values of
 *               since/from/to/filter and for sigil-id values. A key containing "=" cannot be
 *               carried (refused).
 *   token       MSC3079 option 256 carries the access token only while the gateway is not
 *               known to hold it (ACCESS TOKEN below). A request whose client sent NO
 *               Authorization header carries the empty, critical Trickle option No-Auth (65011).
 *               A request with neither uses the gateway's session token.
 *   body        BODIES below; TEXT_MESSAGE allowed.
 *
 * RESPONSE (gateway → host)
 *   status      httpStatusToCoap / coapToHttpStatus of http-coap.ts (200 ↔ 2.05, exact status in
 *               Trickle-HTTP-Status 65000 when c.dd cannot say it). Response headers are dropped
 *               (Matrix puts retry_after_ms in the body).
 *   Handle-Base Trickle option 65008 (elective, uint): present ⇔ this response DEFINES handles.
 *   body        BODIES below; EVENT_ID allowed in 2.05.
 *   Session-Error Trickle option 65012 (elective, uint): the answer comes from the gateway's
 *               session, not from the homeserver: 4.00 with (N << 2) | 1 = "handle N unknown",
 *               4.01 with 2 = "no session access token". The host resends (HostSession.carry).
 *
 * BODIES
 *   Empty body: no payload, no Content-Format. JSON (Content-Type JSON or absent, parsing
 *   exactly: integers beyond 2^53 are not JSON we re-create, those go as octets):
 *   - request body exactly {"msgtype":"m.text","body":S} → Content-Format TEXT_MESSAGE (65000),
 *     payload = UTF-8 of S (may be empty). Invalid UTF-8 is rejected.
 *   - 2.05 response body exactly {"event_id":E}, E a room-v4+ event id without a usable handle →
 *     EVENT_ID (65001), payload = its 32 raw bytes; any other length is rejected. Such a
 *     response never carries Handle-Base, so it stays the 34-byte compact ack-event-id frame; the
 *     event id gets a handle when it next travels in a response that carries one (the sync echo).
 *   - anything else → Trickle CBOR v1 (codec/trickle-cbor-v1.ts) as Content-Format 60: it is
 *     well-formed RFC 8949 CBOR and 60 is what the compact rules fix (see session-wire.ts).
 *   JSON the CBOR profile refuses, and non-JSON bodies → application/octet-stream (42) + the
 *   Trickle-Content-Type option (65004), as in http-coap.ts. On the way out JSON is
 *   JSON.stringify of the equal value, Content-Type application/json.
 *   Any other Content-Format, TEXT_MESSAGE in a response, EVENT_ID in a request or outside 2.05,
 *   a payload without Content-Format, or unknown critical options → WireError.
 *
 * HANDLES (only the gateway assigns them; one numbering for all strings)
 *   Handle-able literal: a Matrix sigil id (/^[!@$#+][^\s]{1,254}$/, event ids sent as 32 raw
 *   bytes included), a value of next_batch / prev_batch / start / end / filter_id anywhere in the
 *   JSON, the value of a since/from/to/filter query item.
 *   A response with Handle-Base H0 numbers its NUMBERING LIST H0, H0+1, …: first the handle-able
 *   literals of the REQUEST it answers (path segments after the first that are sigil ids and
 *   went literally, then literal query values as above), then the body's literal string values
 *   (in Trickle CBOR encoding order, the `onLiteral` hook) that are handle-able, then the body's
 *   map KEYS that are sigil ids (depth-first, in key order: session-wire.ts bodyStrings) —
 *   Trickle CBOR v1 never replaces keys, so room ids in sync's rooms.join travel literally, but
 *   this is how the host learns their handles for Uri-Path; each distinct string once, at its
 *   first occurrence. Values that travelled as handle references are not listed.
 *   Both ends compute the list from the same message, so numbering does not depend on other
 *   messages: a lost response's handles are never known to the host, and nothing else breaks.
 *   The host defines a message's handles only when the whole message decoded.
 *   Host: uses a handle (Uri-Path "~N", query "~N", CBOR handle reference) only for a string it
 *   learned from a Handle-Base response, the newest number for that string, and only while
 *   N ≥ seen − HANDLE_WINDOW (seen = 1 + highest number learned).
 *   Gateway: uses a handle in a response only when CONFIRMED — the host has used, in a request
 *   that decoded, that handle or any handle defined by the same response (one use proves the
 *   whole response arrived) — and N ≥ next − HANDLE_WINDOW. A string may hold several numbers
 *   (it was sent again before its first number was confirmed).
 *   Bounds: numbers < 2^21 (HANDLE_LIMIT); each side keeps numbers ≥ its high mark −
 *   2·HANDLE_WINDOW and forgets older ones silently (the gateway at once: at most 65 536
 *   live handles; the host, whose numbers may arrive out of order, in sweeps: at most 73 728). A request
 *   naming a handle the gateway no longer (or never) had is answered Session-Error "handle N
 *   unknown"; the host forgets N and resends the same request with literals only and the same
 *   token. When the gateway's numbers reach 2^21 it assigns no more (`exhausted`): start a
 *   fresh session (new session id, fresh objects on both ends) at the next convenient time.
 *   A handle reference the host does not hold in a response is a WireError ERR_HANDLE_UNKNOWN
 *   (cannot happen between correct peers); a Handle-Base redefining a held number with another
 *   string is ERR_MATRIX_HANDLE_CONFLICT. Numbers are never reused within a session, so the
 *   gateway's state must be persisted before a response that defines handles leaves it.
 *
 * ACCESS TOKEN (once per session)
 *   The gateway keeps the token of the last request that carried one (stored before anything
 *   else in the request is checked) and attaches it to requests that carry neither a token nor
 *   No-Auth. Without a stored token such a request is answered Session-Error "no session access
 *   token"; the host clears its belief and resends with the token.
 *   The host omits option 256 when the client's token equals the CONFIRMED token: confirmation
 *   is an answer (class 2.xx, or any answer with a payload — the CoAP endpoint's own 4.xx/5.00
 *   carry none) to a request that carried that token, when no request with another token was
 *   issued after it and none is still in flight. Sending a different token clears the
 *   confirmation at once. The host persists only a SHA-256 prefix of the confirmed token.
 *   Assumption (as compact.ts): a request the host gave up on is not delivered later.
 *
 * NO SECRETS ON AIR (authenticate-only mode, SECURITY.md "Amateur radio": every frame is
 * cleartext). Both ends are built for it, and then the rules above are replaced by these:
 *   Host (`sendAccessToken: false`): option 256 is never sent. A request whose client sent a
 *   token carries neither option 256 nor No-Auth (it runs as the gateway's session account); one
 *   without carries No-Auth as usual. The host has checked the client's token itself (it minted
 *   it at a local login: host/local-login.ts), so there is no confirmation to track and no
 *   request ever waits for another's (all its tokens belong to the one account bound to the kit).
 *   Gateway (`boundAccessToken`): the session token is what boundAccessToken() returns at each
 *   request (the token of the Matrix account bound to the kit's key at the gateway); none is ever
 *   taken from the air or stored in the session state. A request carrying option 256 is refused
 *   (ERR_MATRIX_SECRET_ON_AIR → 403 M_FORBIDDEN) before any of it is kept or performed; one that
 *   relies on the session token while no account is bound gets ERR_MATRIX_UNBOUND → 401
 *   M_UNKNOWN_TOKEN (never the Session-Error the host would answer by sending its token).
 *
 * PERSISTENCE (`mustPersist`)
 *   Some state must be on disk before a message that depends on it leaves, or a restart from
 *   an older snapshot could act wrongly: the host's txn map (else a client's retry after a host
 *   restart gets a new token, hence a new homeserver txn id: a duplicate event) and the
 *   clearing of its token confirmation (else it could omit a token the gateway no longer
 *   holds: the request would run as another user); the gateway's handle numbering (else it
 *   would reuse numbers the host holds for other strings) and its session token (same
 *   identity hazard). Each object raises `mustPersist` when that happens; exportState() clears
 *   it. The caller writes exportState() before sending whenever `mustPersist` is true, and may
 *   write it any other time (losing the rest costs bytes, never correctness).
 *
 * Pure: no I/O, no logging, clock-free. State is exported/imported as plain JSON.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { TrickleError, WireError, isTrickleError } from '../errors.ts';
import { toHex, utf8 } from '../util/bytes.ts';
import { Method, Opt, codeClass, makeCode, isRequestCode } from '../coap/numbers.ts';
import { getOption, getOptions, stringOption, uintOption, type CoapOption } from '../coap/message.ts';
import { tokenSequence } from '../coap/compact.ts';
import { httpPathToUriPath, uriPathToHttpPath } from '../codec/paths-v1.ts';
import { MSC3079_OPT_AUTHORIZATION, coapToHttpStatus, httpStatusToCoap, type CoapRequestParts, type CoapResponseParts } from './http-coap.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from './http.ts';
import { checkClientServerPath } from './allowed-paths.ts';
import {
  HANDLE_LIMIT, HANDLE_RETAIN, HANDLE_WINDOW, REQUEST_OPTIONS, RESPONSE_OPTIONS,
  SESSION_ERROR_HANDLE_UNKNOWN, SESSION_ERROR_TOKEN_MISSING,
  TRICKLE_OPT_HANDLE_BASE, TRICKLE_OPT_NO_AUTH, TRICKLE_OPT_SESSION_ERROR,
  checkOptions, decodeBody, decodeText, encodeBody, escapeLiteral, formatQuery, handleRef, isHandleableQuery,
  isSigilId, numberingList, parseQuery, parseWireValue, uintOptionValue,
} from './session-wire.ts';

export { TRICKLE_OPT_HANDLE_BASE, TRICKLE_OPT_NO_AUTH, TRICKLE_OPT_SESSION_ERROR, HANDLE_LIMIT, HANDLE_WINDOW };

export const SESSION_STATE_VERSION = 1;

const METHOD_CODES: Readonly<Record<string, number>> = { GET: Method.GET, POST: Method.POST, PUT: Method.PUT, DELETE: Method.DELETE };
const CODE_METHODS = new Map<number, string>(Object.entries(METHOD_CODES).map(([k, v]) => [v, k]));
/** Path enums whose last parameter is a txn id, and their full parameter counts. */
const TXN_ENUMS: ReadonlyMap<string, number> = new Map([['9', 3], ['F', 3], ['c', 2]]);
const CONTENT = makeCode(2, 5);
const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

function hashHex(s: string): string {
  return toHex(sha256(utf8.encode(s))).slice(0, 32);
}

function stateError(message: string): TrickleError {
  return new TrickleError('ERR_MATRIX_STATE', 'matrix', `session state: ${message}`);
}

const isUint = (n: unknown, limit = 2 ** 32): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n < limit;

// =============================================================================================
// Host

export interface HostSessionOptions {
  /** Bound for decoded response bodies (default 16 MiB). */
  readonly maxBodyBytes?: number;
  /** Client txns remembered for token reuse (default 1024). */
  readonly maxTxns?: number;
  /**
   * Put the client's access token on air as option 256 (default true: ACCESS TOKEN). false in
   * authenticate-only mode: never (NO SECRETS ON AIR).
   */
  readonly sendAccessToken?: boolean;
}

export interface EncodeRequestOptions {
  /** Send every string literally (the resend after a Session-Error "handle unknown"). */
  readonly literalsOnly?: boolean;
}

/** What the host sent, for decodeResponse / requestFailed. Opaque to callers. */
export interface HostSentRequest {
  readonly request: HttpRequestLike;
  readonly literalsOnly: boolean;
  /** Handle-able literals of the request, in numbering order. */
  readonly requestLiterals: readonly string[];
  /** Hash of the access token when option 256 went out. */
  readonly tokenHash: string | undefined;
  readonly issue: number;
}

export interface HostEncodedRequest extends CoapRequestParts {
  /**
   * Set for txn requests (send, redact, sendToDevice): look it up with txnSequence(); when known,
   * send with that token (sequenceToken(seq)); otherwise send with a fresh token and call
   * rememberTxn(txnKey, its sequence) before the request goes out.
   */
  readonly txnKey?: string;
  readonly sent: HostSentRequest;
}

export type HostResponseResult =
  | { readonly kind: 'response'; readonly response: HttpResponseLike }
  | { readonly kind: 'retry'; readonly reason: 'handle-unknown'; readonly handle: number }
  | { readonly kind: 'retry'; readonly reason: 'token-missing' };

export interface HostSessionState {
  readonly v: typeof SESSION_STATE_VERSION;
  readonly role: 'host';
  /** [number, string] for every retained handle. */
  readonly handles: readonly (readonly [number, string])[];
  /** 1 + the highest handle number learned (0: none). */
  readonly seen: number;
  /** SHA-256 prefix (hex) of the token the gateway is known to hold, or null. */
  readonly confirmedToken: string | null;
  /** [txnKey, token sequence], oldest first. */
  readonly txns: readonly (readonly [string, number])[];
}

export class HostSession {
  private readonly maxBodyBytes: number;
  private readonly maxTxns: number;
  private byHandle = new Map<number, string>();
  private byString = new Map<string, number>();
  private seen = 0;
  private confirmedToken: string | undefined;
  private txns = new Map<string, number>();
  // Not persisted: requests in flight that carried option 256, by issue number.
  private issued = 0;
  private lastTokenHash: string | undefined;
  private lastTokenChange = 0;
  private readonly inFlight = new Map<number, string>();
  /** Requests in flight that left the token out, by issue: the token hash they rely on. */
  private readonly omitted = new Map<number, string>();
  private drainWaiters: (() => void)[] = [];
  private persist = false;
  private readonly sendAccessToken: boolean;

  constructor(opts: HostSessionOptions = {}) {
    this.maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.maxTxns = opts.maxTxns ?? 1024;
    this.sendAccessToken = opts.sendAccessToken ?? true;
  }

  /** The handle to use for `s` in a request, if any. */
  private usable(s: string): number | undefined {
    const h = this.byString.get(s);
    return h !== undefined && h >= this.seen - HANDLE_WINDOW ? h : undefined;
  }

  /**
   * HTTP request → CoAP request parts. Throws TrickleError (ERR_MATRIX_REQUEST, ERR_PATH_ENUM)
   * for a request that cannot be carried: answer the client 400.
   */
  encodeRequest(req: HttpRequestLike, opts: EncodeRequestOptions = {}): HostEncodedRequest {
    const literalsOnly = opts.literalsOnly ?? false;
    checkClientServerPath(req.path); // nothing outside the CS API, no dot segments, crosses the air
    const code = METHOD_CODES[req.method.toUpperCase()];
    if (code === undefined) throw new TrickleError('ERR_MATRIX_REQUEST', 'matrix', `method ${req.method} cannot be carried`);
    const use = (s: string): number | undefined => (literalsOnly ? undefined : this.usable(s));

    const segments = httpPathToUriPath(req.path);
    let txnKey: string | undefined;
    let wire = segments;
    const full = TXN_ENUMS.get(segments[0] ?? '');
    if (full !== undefined && segments.length === 1 + full) {
      txnKey = hashHex(JSON.stringify([req.accessToken ?? '', ...segments]));
      wire = segments.slice(0, -1);
    }
    const options: CoapOption[] = [];
    const requestLiterals: string[] = [];
    wire.forEach((s, i) => {
      if (i === 0) { options.push(stringOption(Opt.URI_PATH, s)); return; }
      const h = use(s);
      if (h !== undefined) { options.push(stringOption(Opt.URI_PATH, handleRef(h))); return; }
      options.push(stringOption(Opt.URI_PATH, escapeLiteral(s)));
      if (isSigilId(s)) requestLiterals.push(s);
    });
    for (const [k, v] of parseQuery(req.query)) {
      if (v === undefined) {
        if (k.includes('=')) throw new TrickleError('ERR_MATRIX_REQUEST', 'matrix', `query key ${JSON.stringify(k.slice(0, 40))} contains "=" and cannot be carried`);
        options.push(stringOption(Opt.URI_QUERY, k));
        continue;
      }
      if (k.includes('=')) throw new TrickleError('ERR_MATRIX_REQUEST', 'matrix', `query key ${JSON.stringify(k.slice(0, 40))} contains "=" and cannot be carried`);
      const handleable = isHandleableQuery(k, v);
      const h = handleable ? use(v) : undefined;
      if (h !== undefined) { options.push(stringOption(Opt.URI_QUERY, `${k}=${handleRef(h)}`)); continue; }
      options.push(stringOption(Opt.URI_QUERY, `${k}=${escapeLiteral(v)}`));
      if (handleable) requestLiterals.push(v);
    }

    let tokenHash: string | undefined;
    let relied: string | undefined;
    if (req.accessToken) {
      // Without sendAccessToken (NO SECRETS ON AIR): neither option; it runs as the kit's bound account.
      if (this.sendAccessToken) {
        const h = hashHex(req.accessToken);
        if (h !== this.confirmedToken) {
          options.push(stringOption(MSC3079_OPT_AUTHORIZATION, req.accessToken));
          tokenHash = h;
          if (this.confirmedToken !== undefined) { this.confirmedToken = undefined; this.persist = true; }
        } else {
          relied = h;
        }
      }
    } else {
      options.push({ number: TRICKLE_OPT_NO_AUTH, value: new Uint8Array(0) });
    }

    const body = encodeBody(req.contentType, req.body, { textMessage: true, eventId: false },
      literalsOnly ? {} : { handleOf: (s) => this.usable(s) });
    options.push(...body.options);

    const issue = ++this.issued;
    if (relied !== undefined) this.omitted.set(issue, relied);
    if (tokenHash !== undefined) {
      if (tokenHash !== this.lastTokenHash) this.lastTokenChange = issue;
      this.lastTokenHash = tokenHash;
      this.inFlight.set(issue, tokenHash);
    }
    const sent: HostSentRequest = { request: req, literalsOnly, requestLiterals, tokenHash, issue };
    return { code, options, payload: body.payload, ...(txnKey !== undefined ? { txnKey } : {}), sent };
  }

  /** The token sequence a txn went out with before, if remembered. */
  txnSequence(txnKey: string): number | undefined {
    return this.txns.get(txnKey);
  }

  /** Record the token sequence a txn request goes out with (before it is sent). */
  rememberTxn(txnKey: string, seq: number): void {
    if (!isUint(seq)) throw new TrickleError('ERR_MATRIX_REQUEST', 'matrix', `token sequence ${seq} is not a uint32`);
    if (this.txns.get(txnKey) !== seq) this.persist = true;
    this.txns.delete(txnKey);
    this.txns.set(txnKey, seq);
    while (this.txns.size > this.maxTxns) this.txns.delete(this.txns.keys().next().value!);
  }

  /** Take over another session's client transactions (a new link session: see host.ts). */
  adoptTxns(from: HostSession): void {
    for (const [k, seq] of from.txns) this.rememberTxn(k, seq);
  }

  /** The request will get no answer (timeout, reset, closed endpoint), or was never sent. */
  requestFailed(sent: HostSentRequest): void {
    this.settle(sent);
  }

  /** The request's exchange is over by other means than decodeResponse (an observation's first answer). */
  requestSettled(sent: HostSentRequest): void {
    this.settle(sent);
  }

  private settle(sent: HostSentRequest): void {
    this.inFlight.delete(sent.issue);
    if (this.omitted.delete(sent.issue)) this.wakeDrainers();
  }

  private wakeDrainers(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Resolves once no request that left the token out relying on ANOTHER token is in flight.
   * Such a request, retransmitted after the gateway took this one's token, would run under the
   * wrong account (two accounts on one kit): a request carrying a new token waits for them.
   */
  private async drainOmitted(tokenHash: string): Promise<void> {
    for (;;) {
      let other = false;
      for (const h of this.omitted.values()) if (h !== tokenHash) other = true;
      if (!other) return;
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    }
  }

  /**
   * CoAP response → HTTP response, or an instruction to resend (`retry`): for 'handle-unknown'
   * encodeRequest(sent.request, { literalsOnly: true }), for 'token-missing' encodeRequest again;
   * both with the same token for a txn request. Throws WireError for a malformed response
   * (ERR_HANDLE_UNKNOWN for a handle this side does not hold): answer the client 502.
   */
  decodeResponse(msg: { readonly code: number; readonly options: readonly CoapOption[]; readonly payload: Uint8Array }, sent: HostSentRequest): HostResponseResult {
    this.settle(sent);
    checkOptions(msg.options, RESPONSE_OPTIONS, 'response');
    const se = uintOptionValue(msg.options, TRICKLE_OPT_SESSION_ERROR, 3);
    if (se !== undefined) {
      const reason = se & 3;
      if (reason === SESSION_ERROR_HANDLE_UNKNOWN) {
        const handle = se >>> 2;
        this.confirmIfLatest(sent);
        this.forget(handle);
        return { kind: 'retry', reason: 'handle-unknown', handle };
      }
      if (reason === SESSION_ERROR_TOKEN_MISSING && sent.request.accessToken && this.sendAccessToken) {
        this.confirmedToken = undefined;
        return { kind: 'retry', reason: 'token-missing' };
      }
      throw new WireError('ERR_COAP_OPTION', 'matrix', `Session-Error ${se} makes no sense for this request`, { value: se });
    }
    const status = coapToHttpStatus(msg.code, msg.options);
    const body = decodeBody(msg.options, msg.payload, {
      allowTextMessage: false,
      allowEventId: msg.code === CONTENT,
      maxBodyBytes: this.maxBodyBytes,
      resolveHandle: (n) => this.byHandle.get(n),
    });
    const base = uintOptionValue(msg.options, TRICKLE_OPT_HANDLE_BASE, 3);
    if (base !== undefined) this.define(base, numberingList(sent.requestLiterals, body.literals, body.value));
    if (codeClass(msg.code) === 2 || msg.payload.length > 0) this.confirmIfLatest(sent);
    return {
      kind: 'response',
      response: { status, body: body.body, ...(body.contentType !== undefined ? { contentType: body.contentType } : {}) },
    };
  }

  /**
   * Carry one request: encode, send, decode, and resend on a Session-Error (at most
   * `maxAttempts` sends in all, default 3). `send` performs the CoAP exchange (the lead's
   * endpoint.request with the txn token); its rejection is passed through after
   * requestFailed(). Encoding errors are thrown as by encodeRequest.
   */
  async carry(req: HttpRequestLike, send: (enc: HostEncodedRequest) => Promise<CoapResponseParts>, opts: { maxAttempts?: number } = {}): Promise<HttpResponseLike> {
    const maxAttempts = opts.maxAttempts ?? 3;
    let literalsOnly = false;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const enc = this.encodeRequest(req, { literalsOnly });
      if (enc.sent.tokenHash !== undefined) await this.drainOmitted(enc.sent.tokenHash);
      let res: CoapResponseParts;
      try {
        res = await send(enc);
      } catch (e) {
        this.requestFailed(enc.sent);
        throw e;
      }
      const r = this.decodeResponse(res, enc.sent);
      if (r.kind === 'response') return r.response;
      if (r.reason === 'handle-unknown') literalsOnly = true;
    }
    return matrixError(502, 'M_UNKNOWN', `trickle host: the gateway refused this request's session state ${maxAttempts} times; the link session may need to be restarted`);
  }

  private confirmIfLatest(sent: HostSentRequest): void {
    const h = sent.tokenHash;
    if (h === undefined || sent.issue < this.lastTokenChange) return;
    for (const other of this.inFlight.values()) if (other !== h) return;
    this.confirmedToken = h;
  }

  private forget(handle: number): void {
    const s = this.byHandle.get(handle);
    if (s === undefined) return;
    this.byHandle.delete(handle);
    if (this.byString.get(s) === handle) this.byString.delete(s);
  }

  private define(base: number, list: readonly string[]): void {
    if (base + list.length > HANDLE_LIMIT) {
      throw new WireError('ERR_COAP_OPTION', 'matrix', `Handle-Base ${base} + ${list.length} handles passes the limit 2^21`, { base });
    }
    list.forEach((s, i) => {
      const held = this.byHandle.get(base + i);
      if (held !== undefined && held !== s) {
        throw new WireError('ERR_MATRIX_HANDLE_CONFLICT', 'matrix', `handle ${base + i} is already defined for another string`, { handle: base + i });
      }
    });
    list.forEach((s, i) => {
      const h = base + i;
      this.byHandle.set(h, s);
      const cur = this.byString.get(s);
      if (cur === undefined || cur < h) this.byString.set(s, h);
    });
    if (list.length > 0) this.seen = Math.max(this.seen, base + list.length);
    this.sweep();
  }

  /** Numbers arrive in any order here: sweep when over RETAIN + RETAIN/8 (each sweep frees ≥ RETAIN/8). */
  private sweep(force = false): void {
    if (!force && this.byHandle.size <= HANDLE_RETAIN + HANDLE_RETAIN / 8) return;
    const floor = this.seen - HANDLE_RETAIN;
    for (const [h, s] of this.byHandle) {
      if (h >= floor) continue;
      this.byHandle.delete(h);
      if (this.byString.get(s) === h) this.byString.delete(s);
    }
  }

  /** Write exportState() before sending the next message (see PERSISTENCE). */
  get mustPersist(): boolean {
    return this.persist;
  }

  status(): { handles: number; seen: number; tokenConfirmed: boolean; txns: number; inFlightWithToken: number } {
    return { handles: this.byHandle.size, seen: this.seen, tokenConfirmed: this.confirmedToken !== undefined, txns: this.txns.size, inFlightWithToken: this.inFlight.size };
  }

  exportState(): HostSessionState {
    this.persist = false;
    return {
      v: SESSION_STATE_VERSION, role: 'host',
      handles: [...this.byHandle].map(([h, s]) => [h, s] as const),
      seen: this.seen,
      confirmedToken: this.confirmedToken ?? null,
      txns: [...this.txns].map(([k, s]) => [k, s] as const),
    };
  }

  /** Replace this session's state with an exported one. Throws ERR_MATRIX_STATE when malformed. */
  importState(state: unknown): void {
    const st = state as Partial<HostSessionState> | null;
    if (st === null || typeof st !== 'object' || st.v !== SESSION_STATE_VERSION || st.role !== 'host') throw stateError('not a host session state of version 1');
    if (!isUint(st.seen, HANDLE_LIMIT + 1)) throw stateError('bad seen');
    if (!(st.confirmedToken === null || (typeof st.confirmedToken === 'string' && /^[0-9a-f]{32}$/.test(st.confirmedToken)))) throw stateError('bad confirmedToken');
    if (!Array.isArray(st.handles) || !Array.isArray(st.txns)) throw stateError('handles/txns must be arrays');
    const byHandle = new Map<number, string>();
    const byString = new Map<string, number>();
    for (const e of st.handles) {
      if (!Array.isArray(e) || e.length !== 2 || !isUint(e[0], st.seen) || typeof e[1] !== 'string') throw stateError('bad handle entry');
      const [h, s] = e as [number, string];
      byHandle.set(h, s);
      const cur = byString.get(s);
      if (cur === undefined || cur < h) byString.set(s, h);
    }
    const txns = new Map<string, number>();
    for (const e of st.txns) {
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || !isUint(e[1])) throw stateError('bad txn entry');
      txns.set(e[0] as string, e[1] as number);
    }
    this.byHandle = byHandle;
    this.byString = byString;
    this.seen = st.seen;
    this.confirmedToken = st.confirmedToken ?? undefined;
    this.txns = txns;
    this.inFlight.clear();
    this.omitted.clear();
    this.wakeDrainers();
    this.lastTokenHash = undefined;
    this.lastTokenChange = this.issued + 1;
    this.persist = false;
    this.sweep(true);
  }
}

// =============================================================================================
// Gateway

export interface GatewaySessionOptions {
  /**
   * This link session's id, lower-case base 36 (1–13 characters, e.g. a random 64-bit number):
   * homeserver txn ids are `t<sessionId>.<S>`, so it must never repeat for the same account.
   */
  readonly sessionId: string;
  /** Bound for decoded request bodies (default 16 MiB). */
  readonly maxBodyBytes?: number;
  /**
   * Authenticate-only mode (NO SECRETS ON AIR): the access token of the Matrix account bound to
   * the field kit at the gateway, asked at every request (undefined: none is bound). When set,
   * option 256 is refused and no token is taken from the air or stored.
   */
  readonly boundAccessToken?: () => string | undefined;
}

export interface IncomingCoapRequest {
  readonly code: number;
  readonly options: readonly CoapOption[];
  readonly payload: Uint8Array;
  readonly token: Uint8Array;
}

export interface GatewaySessionState {
  readonly v: typeof SESSION_STATE_VERSION;
  readonly role: 'gateway';
  readonly sessionId: string;
  /** Next handle number to assign. */
  readonly next: number;
  /** [number, string, group base] for every retained handle, ascending. */
  readonly handles: readonly (readonly [number, string, number])[];
  /** [group base, handle count, confirmed] for every retained group. */
  readonly groups: readonly (readonly [number, number, boolean])[];
  /** The session access token (a secret: store the state file like a credential), or null. */
  readonly accessToken: string | null;
}

interface Group { count: number; confirmed: boolean }

const SESSION_ID = /^[0-9a-z]{1,13}$/;

export class GatewaySession {
  readonly sessionId: string;
  private readonly maxBodyBytes: number;
  private next = 0;
  private byHandle = new Map<number, { readonly s: string; readonly base: number }>();
  private byString = new Map<string, number[]>();
  private groups = new Map<number, Group>();
  private accessToken: string | undefined;
  private persist = false;
  private readonly requestLiterals = new WeakMap<HttpRequestLike, readonly string[]>();
  private readonly boundAccessToken: (() => string | undefined) | undefined;

  constructor(opts: GatewaySessionOptions) {
    if (!SESSION_ID.test(opts.sessionId)) {
      throw new TrickleError('ERR_CONFIG', 'config', `matrix session id must be 1–13 characters of [0-9a-z], got ${JSON.stringify(opts.sessionId)}`);
    }
    this.sessionId = opts.sessionId;
    this.maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.boundAccessToken = opts.boundAccessToken;
  }

  /** True once the number space is spent: no more handles are assigned; start a fresh session. */
  get exhausted(): boolean {
    return this.next >= HANDLE_LIMIT;
  }

  /** A confirmed handle for `s` inside the window, newest first. */
  private usable(s: string): number | undefined {
    const hs = this.byString.get(s);
    if (!hs) return undefined;
    for (let i = hs.length - 1; i >= 0; i--) {
      const h = hs[i]!;
      if (h < this.next - HANDLE_WINDOW) return undefined;
      const e = this.byHandle.get(h)!;
      if (this.groups.get(e.base)?.confirmed) return h;
    }
    return undefined;
  }

  private resolve(n: number, used: number[]): string | undefined {
    const e = this.byHandle.get(n);
    if (e === undefined) return undefined;
    used.push(n);
    return e.s;
  }

  /**
   * CoAP request → HTTP request for the homeserver. Throws WireError; answer it with
   * encodeError(e). Pass the returned object to encodeResponse as `forReq`.
   */
  decodeRequest(msg: IncomingCoapRequest): HttpRequestLike {
    // The token before anything else can fail: the host takes any answer with a payload as
    // proof that the gateway holds the token its request carried.
    const tokenOptions = getOptions(msg.options, MSC3079_OPT_AUTHORIZATION);
    if (tokenOptions.length > 1) throw new WireError('ERR_COAP_OPTION', 'matrix', 'request repeats the access token option');
    let accessToken: string | undefined;
    if (tokenOptions[0] !== undefined && this.boundAccessToken) {
      throw new WireError('ERR_MATRIX_SECRET_ON_AIR', 'matrix', 'the request carries an access token (option 256): access tokens never cross the air in authenticate-only mode, the gateway holds the token of the account bound to this field kit; the request was not performed');
    }
    if (tokenOptions[0] !== undefined) {
      accessToken = decodeText(tokenOptions[0], 'Authorization');
      if (accessToken === '') throw new WireError('ERR_COAP_OPTION', 'matrix', 'empty access token');
      if (this.accessToken !== accessToken) { this.accessToken = accessToken; this.persist = true; }
    }
    if (!isRequestCode(msg.code)) throw new WireError('ERR_COAP_FORMAT', 'matrix', 'not a request');
    const method = CODE_METHODS.get(msg.code);
    if (!method) throw new WireError('ERR_MATRIX_REQUEST', 'matrix', `CoAP method ${msg.code} has no HTTP equivalent here`);
    checkOptions(msg.options, REQUEST_OPTIONS, 'request');
    const noAuth = getOption(msg.options, TRICKLE_OPT_NO_AUTH);
    if (noAuth !== undefined && (noAuth.length !== 0 || accessToken !== undefined)) {
      throw new WireError('ERR_COAP_OPTION', 'matrix', 'No-Auth must be empty and cannot come with an access token');
    }

    const used: number[] = [];
    const literals: string[] = [];
    const segments = getOptions(msg.options, Opt.URI_PATH).map((b, i) => {
      const raw = decodeText(b, 'Uri-Path');
      if (i === 0) return raw;
      const w = parseWireValue(raw, 'Uri-Path segment');
      if ('handle' in w) return this.resolve(w.handle, used) ?? this.unknownHandle(w.handle);
      if (isSigilId(w.literal)) literals.push(w.literal);
      return w.literal;
    });
    const full = TXN_ENUMS.get(segments[0] ?? '');
    if (full !== undefined && segments.length === full) segments.push(this.txnId(msg.token));
    const path = uriPathToHttpPath(segments, { clientVersion: 'v3' });
    checkClientServerPath(path); // a kit running other code is not trusted either

    const pairs = getOptions(msg.options, Opt.URI_QUERY).map((b): [string, string | undefined] => {
      const s = decodeText(b, 'Uri-Query');
      const eq = s.indexOf('=');
      if (eq < 0) return [s, undefined];
      const k = s.slice(0, eq);
      const w = parseWireValue(s.slice(eq + 1), `query value of ${JSON.stringify(k.slice(0, 40))}`);
      if ('handle' in w) return [k, this.resolve(w.handle, used) ?? this.unknownHandle(w.handle)];
      if (isHandleableQuery(k, w.literal)) literals.push(w.literal);
      return [k, w.literal];
    });

    let unknown: number | undefined;
    let body;
    try {
      body = decodeBody(msg.options, msg.payload, {
        allowTextMessage: true, allowEventId: false, maxBodyBytes: this.maxBodyBytes,
        resolveHandle: (n) => { const s = this.resolve(n, used); if (s === undefined) unknown = n; return s; },
      });
    } catch (e) {
      if (unknown !== undefined && isTrickleError(e, 'ERR_HANDLE_UNKNOWN')) this.unknownHandle(unknown);
      throw e;
    }

    if (accessToken === undefined && noAuth === undefined && this.boundAccessToken) {
      accessToken = this.boundAccessToken();
      if (accessToken === undefined) throw new TrickleError('ERR_MATRIX_UNBOUND', 'matrix', 'trickle gateway: no Matrix account is bound to this field kit; on the gateway run: trickle keys bind <kit> <@user:server> --homeserver URL');
    }
    if (accessToken === undefined && noAuth === undefined) {
      if (this.accessToken === undefined) throw new WireError('ERR_MATRIX_TOKEN_MISSING', 'matrix', 'the request relies on the session access token, which this gateway does not hold');
      accessToken = this.accessToken;
    }
    for (const h of used) {
      const g = this.groups.get(this.byHandle.get(h)!.base);
      if (g) g.confirmed = true;
    }
    const req: HttpRequestLike = {
      method, path, query: formatQuery(pairs),
      ...(accessToken !== undefined ? { accessToken } : {}),
      ...(body.contentType !== undefined ? { contentType: body.contentType } : {}),
      body: body.body,
    };
    this.requestLiterals.set(req, literals);
    return req;
  }

  /**
   * The host is known to hold the whole response that defined handles from `base` (a push
   * notification whose every part was ACKed: the host ACKs only what it received, and decodes
   * before it ACKs the last part), so its handles are CONFIRMED as if the host had used one.
   * Push notifications need this: the host seldom sends a request that would use them.
   */
  confirmDelivered(base: number): void {
    const g = this.groups.get(base);
    if (g && !g.confirmed) g.confirmed = true;
  }

  /**
   * Forget every confirmation: handles stay held (requests naming them still decode) but are used
   * in responses only once confirmed again. For a new push-sync registration, whose host may have
   * lost handles a push defined (it refused a push it could not decode).
   */
  unconfirmAll(): void {
    for (const g of this.groups.values()) g.confirmed = false;
  }

  private unknownHandle(n: number): never {
    throw new WireError('ERR_HANDLE_UNKNOWN', 'matrix', `handle ${n} is not known to this gateway`, { handle: n });
  }

  /**
   * The namespace of the homeserver txn ids this session derives (`t<namespace>.<S>`): by default
   * the session id; the gateway sets a per-kit one that outlives link sessions
   * (gateway/txn-namespace.ts), so a retry after a new handshake keeps its txn id.
   */
  txnNamespace: string | undefined;

  private txnId(token: Uint8Array): string {
    const ns = this.txnNamespace ?? this.sessionId;
    const seq = tokenSequence(token);
    if (seq !== undefined) return `t${ns}.${seq}`;
    if (token.length === 0) throw new WireError('ERR_MATRIX_REQUEST', 'matrix', 'a txn request without its txn id needs a CoAP token');
    return `t${ns}.x${toHex(token)}`;
  }

  /**
   * HTTP response → CoAP response parts. `forReq` is the object decodeRequest returned (its
   * handle-able literals are numbered first); omit it for answers to no decoded request.
   * When it defines handles (`definesHandles` > 0) `mustPersist` is set: persist before sending.
   */
  encodeResponse(res: HttpResponseLike, forReq?: HttpRequestLike): CoapResponseParts & { readonly definesHandles: number } {
    const { code, statusOption } = httpStatusToCoap(res.status);
    const body = encodeBody(res.contentType, res.body, { textMessage: false, eventId: code === CONTENT }, { handleOf: (s) => this.usable(s) });
    const options = [...body.options];
    if (statusOption) options.push(statusOption);
    let definesHandles = 0;
    if (body.format !== 'event-id') {
      const list = numberingList(forReq ? this.requestLiterals.get(forReq) ?? [] : [], body.literals, body.value);
      if (list.length > 0 && this.next + list.length <= HANDLE_LIMIT) {
        options.push(uintOption(TRICKLE_OPT_HANDLE_BASE, this.next));
        this.define(list);
        definesHandles = list.length;
      }
    }
    return { code, options, payload: body.payload, definesHandles };
  }

  /**
   * The answer to a request decodeRequest refused: Session-Error for an unknown handle (4.00)
   * or a missing session token (4.01), else 400 M_BAD_JSON / M_UNRECOGNIZED as a Matrix error.
   */
  encodeError(e: unknown): CoapResponseParts {
    const plain = (status: number, errcode: string, error: string, extra: CoapOption[] = []): CoapResponseParts => {
      const m = matrixError(status, errcode, error);
      const { code, statusOption } = httpStatusToCoap(status);
      const b = encodeBody(m.contentType, m.body, { textMessage: false, eventId: false }, {});
      return { code, options: [...b.options, ...(statusOption ? [statusOption] : []), ...extra], payload: b.payload };
    };
    if (isTrickleError(e, 'ERR_HANDLE_UNKNOWN') && isUint(e.detail?.['handle'], HANDLE_LIMIT)) {
      const h = e.detail['handle'] as number;
      return plain(400, 'M_UNKNOWN', `trickle gateway: handle ~${h} unknown`, [uintOption(TRICKLE_OPT_SESSION_ERROR, h * 4 + SESSION_ERROR_HANDLE_UNKNOWN)]);
    }
    if (isTrickleError(e, 'ERR_MATRIX_SECRET_ON_AIR')) return plain(403, 'M_FORBIDDEN', e.message.startsWith('trickle gateway') ? e.message : `trickle gateway: ${e.message}`);
    if (isTrickleError(e, 'ERR_MATRIX_UNBOUND')) {
      const m = matrixError(401, 'M_UNKNOWN_TOKEN', e.message, { soft_logout: false });
      const { code, statusOption } = httpStatusToCoap(401);
      const b = encodeBody(m.contentType, m.body, { textMessage: false, eventId: false }, {});
      return { code, options: [...b.options, ...(statusOption ? [statusOption] : [])], payload: b.payload };
    }
    if (isTrickleError(e, 'ERR_MATRIX_TOKEN_MISSING')) {
      return plain(401, 'M_MISSING_TOKEN', 'trickle gateway: no session access token', [uintOption(TRICKLE_OPT_SESSION_ERROR, SESSION_ERROR_TOKEN_MISSING)]);
    }
    const msg = e instanceof Error ? e.message : String(e);
    if (isTrickleError(e, 'ERR_MATRIX_PATH')) {
      return plain(e.detail?.['reason'] === 'prefix' ? 404 : 400, 'M_UNRECOGNIZED', `trickle gateway: ${msg}`);
    }
    if (isTrickleError(e, 'ERR_COAP_OPTION') || isTrickleError(e, 'ERR_PATH_ENUM')) {
      return plain(400, 'M_UNRECOGNIZED', `trickle gateway could not decode the request: ${msg}`);
    }
    return plain(400, 'M_BAD_JSON', `trickle gateway could not decode the request: ${msg}`);
  }

  private define(list: readonly string[]): void {
    const base = this.next;
    list.forEach((s, i) => {
      const h = base + i;
      this.byHandle.set(h, { s, base });
      const hs = this.byString.get(s);
      if (hs) hs.push(h); else this.byString.set(s, [h]);
    });
    this.groups.set(base, { count: list.length, confirmed: false });
    this.next = base + list.length;
    this.persist = true;
    this.sweep();
  }

  /** Numbers are assigned in ascending order, so both maps iterate oldest first: O(evicted). */
  private sweep(): void {
    const floor = this.next - HANDLE_RETAIN;
    for (const [h, e] of this.byHandle) {
      if (h >= floor) break; // ascending insertion order
      this.byHandle.delete(h);
      const hs = this.byString.get(e.s);
      if (hs) {
        const rest = hs.filter((x) => x >= floor);
        if (rest.length > 0) this.byString.set(e.s, rest); else this.byString.delete(e.s);
      }
    }
    for (const [base, g] of this.groups) {
      if (base + g.count > floor) break;
      this.groups.delete(base);
    }
  }

  /** The session's access token (what the gateway's own sync loop for this session uses): the bound one in authenticate-only mode. */
  get sessionAccessToken(): string | undefined {
    return this.boundAccessToken ? this.boundAccessToken() : this.accessToken;
  }

  /** For the status page: whether the session has a token (never the token). */
  get hasAccessToken(): boolean {
    return this.sessionAccessToken !== undefined;
  }

  /** Write exportState() before sending the response (see PERSISTENCE). */
  get mustPersist(): boolean {
    return this.persist;
  }

  status(): { sessionId: string; handles: number; next: number; exhausted: boolean; hasAccessToken: boolean } {
    return { sessionId: this.sessionId, handles: this.byHandle.size, next: this.next, exhausted: this.exhausted, hasAccessToken: this.hasAccessToken };
  }

  exportState(): GatewaySessionState {
    this.persist = false;
    return {
      v: SESSION_STATE_VERSION, role: 'gateway', sessionId: this.sessionId, next: this.next,
      handles: [...this.byHandle].map(([h, e]) => [h, e.s, e.base] as const),
      groups: [...this.groups].map(([b, g]) => [b, g.count, g.confirmed] as const),
      accessToken: this.accessToken ?? null,
    };
  }

  /** Replace this session's state with an exported one (same session id). Throws ERR_MATRIX_STATE when malformed. */
  importState(state: unknown): void {
    const st = state as Partial<GatewaySessionState> | null;
    if (st === null || typeof st !== 'object' || st.v !== SESSION_STATE_VERSION || st.role !== 'gateway') throw stateError('not a gateway session state of version 1');
    if (st.sessionId !== this.sessionId) throw stateError(`session id ${JSON.stringify(st.sessionId)} is not this session's ${this.sessionId}`);
    if (!isUint(st.next, HANDLE_LIMIT + 1)) throw stateError('bad next');
    if (!(st.accessToken === null || (typeof st.accessToken === 'string' && st.accessToken !== ''))) throw stateError('bad accessToken');
    if (!Array.isArray(st.handles) || !Array.isArray(st.groups)) throw stateError('handles/groups must be arrays');
    const groups = new Map<number, Group>();
    for (const e of st.groups) {
      if (!Array.isArray(e) || e.length !== 3 || !isUint(e[0], st.next) || !isUint(e[1], HANDLE_LIMIT + 1) || typeof e[2] !== 'boolean') throw stateError('bad group entry');
      groups.set(e[0] as number, { count: e[1] as number, confirmed: e[2] as boolean });
    }
    const byHandle = new Map<number, { s: string; base: number }>();
    const byString = new Map<string, number[]>();
    let prev = -1;
    for (const e of st.handles) {
      if (!Array.isArray(e) || e.length !== 3 || !isUint(e[0], st.next) || typeof e[1] !== 'string' || !isUint(e[2], st.next)) throw stateError('bad handle entry');
      const [h, s, base] = e as [number, string, number];
      const g = groups.get(base);
      if (h <= prev || !g || h < base || h >= base + g.count) throw stateError(`handle ${h} out of order or outside its group`);
      prev = h;
      byHandle.set(h, { s, base });
      const hs = byString.get(s);
      if (hs) hs.push(h); else byString.set(s, [h]);
    }
    this.next = st.next;
    this.byHandle = byHandle;
    this.byString = byString;
    this.groups = groups;
    this.accessToken = st.accessToken ?? undefined;
    this.persist = false;
    this.sweep();
  }
}
