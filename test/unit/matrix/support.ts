/** Helpers for the matrix session tests: one simulated link between a HostSession and a GatewaySession. */
import { sequenceToken } from '../../../src/coap/compact.ts';
import { httpPathToUriPath } from '../../../src/codec/paths-v1.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import type { CoapResponseParts } from '../../../src/matrix/http-coap.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { GatewaySession, HostSession, type HostEncodedRequest } from '../../../src/matrix/session.ts';
import { parseQuery } from '../../../src/matrix/session-wire.ts';

export const json = (v: unknown): Uint8Array => utf8.encode(JSON.stringify(v));
export const parse = (b: Uint8Array): unknown => JSON.parse(utf8.decode(b));

export function req(method: string, path: string, opts: { query?: string; token?: string; body?: unknown; contentType?: string; raw?: Uint8Array } = {}): HttpRequestLike {
  return {
    method, path, query: opts.query ?? '',
    ...(opts.token !== undefined ? { accessToken: opts.token } : {}),
    ...(opts.contentType !== undefined ? { contentType: opts.contentType } : opts.body !== undefined ? { contentType: 'application/json' } : {}),
    body: opts.raw ?? (opts.body !== undefined ? json(opts.body) : new Uint8Array(0)),
  };
}

export function ok(body: unknown, status = 200): HttpResponseLike {
  return { status, contentType: 'application/json', body: json(body) };
}

export function eventId(seed: number): string {
  const b = Buffer.alloc(32);
  for (let i = 0; i < 32; i++) b[i] = (seed * 131 + i * 29 + (seed >> 3)) & 0xff;
  return `$${b.toString('base64url')}`;
}

/** What the gateway's homeserver saw, and what the host's client got back. */
export interface Exchange {
  readonly sent: HostEncodedRequest[];
  readonly atGateway: HttpRequestLike[];
  readonly response: HttpResponseLike | undefined;
  readonly wire: CoapResponseParts[];
}

/**
 * A link: the host's requests go to the gateway with CoAP tokens from a sequence; the
 * homeserver is a function. `drop(kind)` decides loss of each request / response.
 */
export class Link {
  seq = 0;
  readonly host = new HostSession();
  readonly gateway: GatewaySession;
  /** Every request the homeserver performed. */
  readonly performed: HttpRequestLike[] = [];
  constructor(sessionId = 'k3x9', public homeserver: (r: HttpRequestLike) => HttpResponseLike = () => ok({})) {
    this.gateway = new GatewaySession({ sessionId });
  }

  /** One CoAP exchange for an encoded request, as the lead would wire it (txn token lookup included). */
  send(enc: HostEncodedRequest, drop?: { request?: boolean; response?: boolean }): CoapResponseParts | undefined {
    let seq: number;
    const known = enc.txnKey !== undefined ? this.host.txnSequence(enc.txnKey) : undefined;
    if (known !== undefined) seq = known;
    else { seq = ++this.seq; if (enc.txnKey !== undefined) this.host.rememberTxn(enc.txnKey, seq); }
    if (drop?.request) return undefined;
    let res: CoapResponseParts;
    try {
      const r = this.gateway.decodeRequest({ ...enc, token: sequenceToken(seq) });
      this.performed.push(r);
      res = this.gateway.encodeResponse(this.homeserver(r), r);
    } catch (e) {
      res = this.gateway.encodeError(e);
    }
    return drop?.response ? undefined : res;
  }

  /** The host's carry() over this link without loss. */
  async carry(r: HttpRequestLike): Promise<HttpResponseLike> {
    return this.host.carry(r, async (enc) => {
      const res = this.send(enc);
      if (!res) throw new Error('lost');
      return res;
    });
  }
}

/** Request normalised for comparison: decoded path segments (version-free), query multiset, token, JSON body. */
export function normalise(r: HttpRequestLike, opts: { dropTxn?: boolean } = {}): unknown {
  let segs = httpPathToUriPath(r.path);
  if (opts.dropTxn && ['9', 'F', 'c'].includes(segs[0] ?? '')) segs = segs.slice(0, -1);
  const q = parseQuery(r.query).map(([k, v]) => `${k}\u0000${v ?? '\u0001'}`).sort();
  let body: unknown = [...r.body];
  if (r.body.length > 0) { try { body = parse(r.body); } catch { /* not JSON */ } }
  return { method: r.method.toUpperCase(), segs, q, token: r.accessToken ?? null, body };
}
