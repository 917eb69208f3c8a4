/**
 * The gateway's side of the bridge: performs a carried request against the real
 * homeserver and returns what it answered. A homeserver that cannot be reached becomes a
 * Matrix error body that says so (the local client must never hang).
 */
import { matrixError, longPollTimeoutMs, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import { checkClientServerPath } from '../matrix/allowed-paths.ts';
import { TrickleError } from '../errors.ts';

export interface HomeserverClientOptions {
  baseUrl: string;
  /** Deadline for requests that are not long polls. */
  requestTimeoutMs: number;
}

/** Long polls (`/sync?timeout=…`) get their own timeout plus this margin. */
const LONG_POLL_MARGIN_MS = 15_000;

export class HomeserverClient {
  readonly baseUrl: string;
  private readonly requestTimeoutMs: number;
  requestsTotal = 0;
  failuresTotal = 0;
  /** Requests refused before leaving: a path outside the CS API or one URL normalisation would rewrite. */
  refusedPaths = 0;
  private readonly performedListeners: ((req: HttpRequestLike, res: HttpResponseLike, responseWireBytes: number) => void)[] = [];

  /** Called after each answered request with the size of the homeserver's HTTP/1.1 response as received. */
  onPerformed(listener: (req: HttpRequestLike, res: HttpResponseLike, responseWireBytes: number) => void): void {
    this.performedListeners.push(listener);
  }

  constructor(opts: HomeserverClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.requestTimeoutMs = opts.requestTimeoutMs;
  }

  async perform(req: HttpRequestLike, signal?: AbortSignal): Promise<HttpResponseLike> {
    const url = this.baseUrl + req.path + (req.query ? `?${req.query}` : '');
    // Defence in depth (the session checked it already): only the CS API, and the URL parser
    // must not rewrite the path (dot segments, backslashes), or the request would go elsewhere.
    try {
      checkClientServerPath(req.path);
      if (new URL(url).pathname !== new URL(this.baseUrl).pathname.replace(/\/$/, '') + req.path) {
        throw new TrickleError('ERR_MATRIX_PATH', 'gateway', `the path ${JSON.stringify(req.path.slice(0, 200))} would be rewritten by URL normalisation`, { reason: 'malformed' });
      }
    } catch (e) {
      this.refusedPaths++;
      return matrixError(400, 'M_UNRECOGNIZED', `trickle gateway refused the request: ${(e as Error).message}`);
    }
    this.requestsTotal++;
    const headers: Record<string, string> = {};
    if (req.accessToken) headers['authorization'] = `Bearer ${req.accessToken}`;
    if (req.body.length > 0) headers['content-type'] = req.contentType ?? 'application/json';
    const deadlineMs = deadlineFor(req, this.requestTimeoutMs);
    try {
      const r = await fetch(url, {
        method: req.method,
        headers,
        ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body: req.body }),
        signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(deadlineMs)]) : AbortSignal.timeout(deadlineMs),
        redirect: 'manual',
      });
      const body = new Uint8Array(await r.arrayBuffer());
      const contentType = r.headers.get('content-type') ?? undefined;
      const retryAfter = r.headers.get('retry-after');
      const res: HttpResponseLike = {
        status: r.status,
        body,
        ...(contentType ? { contentType } : {}),
        ...(retryAfter ? { headers: { 'retry-after': retryAfter } } : {}),
      };
      if (this.performedListeners.length > 0) {
        let wire = Buffer.byteLength(`HTTP/1.1 ${r.status} ${r.statusText}\r\n\r\n`) + body.length;
        r.headers.forEach((v, k) => { wire += Buffer.byteLength(`${k}: ${v}\r\n`); });
        for (const l of this.performedListeners) l(req, res, wire);
      }
      return res;
    } catch (e) {
      this.failuresTotal++;
      const err = e as Error & { cause?: { code?: string; message?: string } };
      if (err.name === 'TimeoutError') {
        return matrixError(504, 'M_UNKNOWN', `trickle gateway: the homeserver at ${this.baseUrl} did not answer within ${Math.round(deadlineMs / 1000)} s`);
      }
      const why = err.cause?.code ?? err.cause?.message ?? err.message;
      return matrixError(502, 'M_UNKNOWN', `trickle gateway cannot reach the homeserver at ${this.baseUrl} (${why}); check --homeserver and the gateway's internet connection`);
    }
  }
}

function deadlineFor(req: HttpRequestLike, fallbackMs: number): number {
  const lp = longPollTimeoutMs(req);
  return lp === undefined ? fallbackMs : Math.max(fallbackMs, lp + LONG_POLL_MARGIN_MS);
}
