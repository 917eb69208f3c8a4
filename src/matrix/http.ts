/**
 * The HTTP side of the bridge, transport-neutral: what a local Matrix client asked for,
 * and what the homeserver answered. `host/` fills these from node:http, `gateway/` turns
 * them into fetch() calls; `matrix/http-coap.ts` carries them as CoAP.
 */

export interface HttpRequestLike {
  method: string;
  /** Path exactly as the client sent it, percent-encoding included, without the query. */
  path: string;
  /** Query string without the leading '?', as sent ('' when none). */
  query: string;
  /** Bearer token from the Authorization header, if any. */
  accessToken?: string;
  /** Content-Type header of the body, if any. */
  contentType?: string;
  body: Uint8Array;
}

export interface HttpResponseLike {
  status: number;
  contentType?: string;
  body: Uint8Array;
  /** Extra headers that matter to a client (Retry-After), lower-case names. */
  headers?: Record<string, string>;
}

/** A Matrix error body as every CS-API client understands it. */
export function matrixError(status: number, errcode: string, error: string, extra: Record<string, unknown> = {}): HttpResponseLike {
  return {
    status,
    contentType: 'application/json',
    body: new TextEncoder().encode(JSON.stringify({ errcode, error, ...extra })),
  };
}

export function isJsonContentType(ct: string | undefined): boolean {
  if (!ct) return false;
  const base = ct.split(';')[0]!.trim().toLowerCase();
  return base === 'application/json' || base.endsWith('+json');
}

/** The homeserver's own long-poll timeout, if the request is one. */
export function longPollTimeoutMs(req: Pick<HttpRequestLike, 'method' | 'query'>): number | undefined {
  if (req.method !== 'GET' || !req.query) return undefined;
  const t = new URLSearchParams(req.query).get('timeout');
  if (t === null) return undefined;
  const n = Number(t);
  return Number.isFinite(n) && n >= 0 ? Math.min(n, 600_000) : undefined;
}
