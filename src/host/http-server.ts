/**
 * The host's local Matrix CS-API endpoint: an HTTP server (127.0.0.1 unless the operator says
 * --allow-lan) that an unmodified Matrix client uses as its homeserver. Requests that pass the
 * checks below are handed to `carry` (host.ts: the token check, the local store, the radio).
 *
 * Contract, in the order a request meets it (nothing after a refusal runs: no store read, no
 * radio):
 *  1. Connections: at most `maxConnections` at once. One more is answered with a fixed
 *     429 M_LIMIT_EXCEEDED (retry_after_ms 1000, Connection: close) and closed; beyond
 *     REFUSING_MAX of those in progress, or `maxConnections + REFUSING_MAX` in all
 *     (server.maxConnections), a connection is closed at once. Nothing else notices.
 *  2. Headers: at most `maxHeaderBytes` (Node answers 431) and within `headersTimeoutMs` of the
 *     connection or of the previous request (Node answers 408 and closes): slow-header clients
 *     (slowloris) hold a slot for a bounded time only.
 *  3. Host header: an IP literal, localhost, the --listen name or an --allow-host name, else
 *     421 M_FORBIDDEN (DNS rebinding; local-api-policy.ts).
 *  4. Origin header: absent, the kit's own origin, or an --allow-origin origin, else
 *     403 M_FORBIDDEN. Allowed cross-origin requests get CORS headers echoing their origin;
 *     preflights (OPTIONS) are answered here, 204.
 *  5. GET /_trickle/status is answered here (counters only; no messages, no tokens).
 *  6. The body: at most `maxRequestBodyBytes` (413 M_TOO_LARGE) and complete within
 *     `receiveTimeoutMs` of the headers (408 M_UNKNOWN, Connection: close; Node's own
 *     requestTimeout is the backstop). A client that closes mid-body is counted and forgotten:
 *     no answer, no crash. The deadline covers RECEIVING the request only: an answer may take as
 *     long as the radio needs (a held /sync), as Node's requestTimeout does (verified on Node 20).
 *  7. The access token is read from `Authorization: Bearer` or the `access_token` query
 *     parameter (removed from the query); `carry` checks it.
 * Any exception in a handler is answered 500 M_UNKNOWN if the client is still there, and logged:
 * one client can never stop the server for the others.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../log.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import {
  corsHeaders, extractAccessToken, hostAllowed, hostHeaderName, originAllowed, ownBaseUrl, type OriginPolicy,
} from './local-api-policy.ts';

export interface HttpExchangeRecord {
  method: string;
  path: string;
  status: number;
  /** The HTTP/1.1 request and response as they crossed the local socket. */
  httpRequestBytes: number;
  httpResponseBytes: number;
  startedAtMs: number;
  durationMs: number;
}

/** What the server knows about a request beyond HttpRequestLike. */
export interface LocalRequestContext {
  /** The kit's URL as this client reaches it (http://<Host header>), for well_known. */
  baseUrl: string;
  /** Why the request's credential is malformed (two tokens, a non-Bearer header), if it is. */
  invalidCredential?: string;
}

export interface LocalServerOptions {
  host: string;
  port: number;
  maxRequestBodyBytes: number;
  logger: Logger;
  carry: (req: HttpRequestLike, ctx: LocalRequestContext) => Promise<HttpResponseLike>;
  status: () => unknown;
  onExchange?: (rec: HttpExchangeRecord, req: HttpRequestLike) => void;
  /** Origins (serialized, see parseAllowedOrigin) whose web pages may use the API. */
  allowedOrigins?: readonly string[];
  /** Host names the kit answers to besides IP literals, localhost and `host`. */
  allowedHostNames?: readonly string[];
  /** Connections served at once (default 256). */
  maxConnections?: number;
  /** Time to receive a request body once its headers are in (default 30 000 ms). */
  receiveTimeoutMs?: number;
  /** Time to receive a request's headers (default min(10 000, receiveTimeoutMs)). */
  headersTimeoutMs?: number;
  /** Request line + headers (default 16 KiB). */
  maxHeaderBytes?: number;
}

/** Refused connections being answered at once; beyond that they are closed without a word. */
const REFUSING_MAX = 64;
const REFUSED_LINGER_MS = 2_000;
const REFUSED_BODY = JSON.stringify({ errcode: 'M_LIMIT_EXCEEDED', error: 'trickle host: too many open connections; try again shortly', retry_after_ms: 1000 });
const REFUSED_RESPONSE = `HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(REFUSED_BODY)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${REFUSED_BODY}`;

type BodyResult = Uint8Array | 'too-large' | 'timeout' | 'aborted';

export class LocalServer {
  private server: Server | undefined;
  private readonly opts: LocalServerOptions;
  private readonly policy: OriginPolicy;
  private readonly maxConnections: number;
  private readonly receiveTimeoutMs: number;
  private readonly headersTimeoutMs: number;
  private live = 0;
  private refusing = 0;
  private readonly counters = {
    connectionsRefused: 0, connectionsDropped: 0, aborted: 0, bodyTimeouts: 0, tooLarge: 0,
    refusedHost: 0, refusedOrigin: 0, preflights: 0, handlerErrors: 0,
  };

  constructor(opts: LocalServerOptions) {
    this.opts = opts;
    this.maxConnections = opts.maxConnections ?? 256;
    this.receiveTimeoutMs = opts.receiveTimeoutMs ?? 30_000;
    this.headersTimeoutMs = opts.headersTimeoutMs ?? Math.min(10_000, this.receiveTimeoutMs);
    const names = new Set((opts.allowedHostNames ?? []).map((n) => n.toLowerCase()));
    names.add(hostHeaderName(opts.host.includes(':') ? `[${opts.host}]` : opts.host));
    this.policy = { allowedOrigins: new Set(opts.allowedOrigins ?? []), allowedHostNames: names };
  }

  /** Resolves with the bound port once listening; rejects with a clear error if the port is taken. */
  async listen(): Promise<number> {
    const server = createServer({
      maxHeaderSize: this.opts.maxHeaderBytes ?? 16 * 1024,
      headersTimeout: this.headersTimeoutMs,
      // Node's own deadline for the whole request, a backstop behind ours (which answers in JSON).
      requestTimeout: this.headersTimeoutMs + this.receiveTimeoutMs + 1_000,
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(this.headersTimeoutMs / 4))),
    }, (req, res) => { void this.handle(req, res); });
    server.keepAliveTimeout = 120_000;
    server.maxHeadersCount = 200;
    // The connection cap (contract 1): the HTTP machinery sees only the connections we admit.
    const httpListeners = server.listeners('connection') as ((s: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      if (this.live >= this.maxConnections) { this.refuse(socket); return; }
      this.live++;
      socket.once('close', () => { this.live--; });
      for (const l of httpListeners) l.call(server, socket);
    });
    server.maxConnections = this.maxConnections + REFUSING_MAX;
    server.on('drop', () => { this.counters.connectionsDropped++; });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        reject(new Error(e.code === 'EADDRINUSE'
          ? `${this.opts.host}:${this.opts.port} is already in use; choose another with --listen ${this.opts.host}:PORT`
          : `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`));
      });
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    server.on('error', (e) => this.opts.logger.error({ err: e.message }, 'local API server error'));
    const addr = server.address();
    return typeof addr === 'object' && addr ? addr.port : this.opts.port;
  }

  /** Counters of what the server refused or lost, for /_trickle/status. */
  stats(): Record<string, number> {
    return { connections: this.live, maxConnections: this.maxConnections, ...this.counters };
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private refuse(socket: Socket): void {
    socket.on('error', () => { /* the client may be gone already */ });
    if (this.refusing >= REFUSING_MAX) {
      this.counters.connectionsDropped++;
      socket.destroy();
      return;
    }
    this.counters.connectionsRefused++;
    this.refusing++;
    const t = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    t.unref();
    socket.once('close', () => { this.refusing--; clearTimeout(t); });
    socket.resume(); // read and discard what it sends, so closing does not reset the answer away
    socket.end(REFUSED_RESPONSE);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.on('error', () => { /* an aborted request: handled where the body is read */ });
    res.on('error', () => { /* a client gone before its answer: nothing to do */ });
    try {
      await this.serve(req, res);
    } catch (e) {
      this.counters.handlerErrors++;
      this.opts.logger.error({ err: e instanceof Error ? e.message : String(e) }, 'local API handler failed');
      if (!res.headersSent && !res.destroyed) {
        const r = matrixError(500, 'M_UNKNOWN', `trickle host: ${(e as Error).message}`);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': String(r.body.length), connection: 'close' });
        res.end(r.body);
      }
    }
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
    const rawQuery = q >= 0 ? rawUrl.slice(q + 1) : '';
    const method = (req.method ?? 'GET').toUpperCase();
    let headerBytes = Buffer.byteLength(`${method} ${rawUrl} HTTP/${req.httpVersion}\r\n`) + 2;
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headerBytes += Buffer.byteLength(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`);

    const send = (response: HttpResponseLike, extra: Record<string, string> = {}): number => {
      const headers: Record<string, string> = { ...extra, ...(response.headers ?? {}) };
      if (response.contentType) headers['content-type'] = response.contentType;
      headers['content-length'] = String(response.body.length);
      if (res.destroyed || res.headersSent) return 0;
      res.writeHead(response.status, headers);
      res.end(response.body);
      let n = Buffer.byteLength(`HTTP/1.1 ${response.status} ${res.statusMessage}\r\n`) + 2 + response.body.length;
      for (const [k, v] of Object.entries(headers)) n += Buffer.byteLength(`${k}: ${v}\r\n`);
      return n;
    };
    const close = { connection: 'close' };

    const hostHeader = req.headers.host;
    if (!hostAllowed(hostHeader, this.policy)) {
      this.counters.refusedHost++;
      this.opts.logger.warn({ host: hostHeader?.slice(0, 100), path }, 'request for a host name this kit does not answer to refused (DNS rebinding?)');
      send(matrixError(421, 'M_FORBIDDEN', `trickle host does not answer to the name ${JSON.stringify(hostHeaderName(hostHeader ?? ''))}; use http://127.0.0.1:${this.portHint()} (or let the operator add --allow-host)`), close);
      return;
    }
    const baseUrl = ownBaseUrl(hostHeader, this.opts.host, this.portHint());
    const origin = req.headers.origin;
    if (!originAllowed(origin, baseUrl, this.policy)) {
      this.counters.refusedOrigin++;
      this.opts.logger.warn({ origin: origin?.slice(0, 100), path }, 'request from a web page whose origin is not allowed refused');
      send(matrixError(403, 'M_FORBIDDEN', `trickle host: web pages from ${origin} may not use this field kit; its operator can allow them with --allow-origin ${origin}`), close);
      return;
    }
    const cors = origin !== undefined && this.policy.allowedOrigins.has(origin.trim()) ? origin.trim() : undefined;

    if (method === 'OPTIONS') {
      this.counters.preflights++;
      send({ status: 204, body: new Uint8Array(0) }, cors ? corsHeaders(cors, true) : {});
      return;
    }
    const corsH = cors ? corsHeaders(cors, false) : {};
    if (path === '/_trickle/status') {
      send({ status: 200, contentType: 'application/json', body: Buffer.from(JSON.stringify(this.opts.status(), null, 2)) }, corsH);
      return;
    }
    if (method !== 'GET' && method !== 'POST' && method !== 'PUT' && method !== 'DELETE') {
      send(matrixError(405, 'M_UNRECOGNIZED', `Trickle carries GET, POST, PUT and DELETE; ${method} is not supported`), corsH);
      return;
    }
    const body = await readBody(req, this.opts.maxRequestBodyBytes, this.receiveTimeoutMs);
    if (body === 'aborted') {
      this.counters.aborted++;
      this.opts.logger.debug({ path }, 'client closed the connection before its request body was complete');
      return;
    }
    if (body === 'timeout') {
      this.counters.bodyTimeouts++;
      this.opts.logger.warn({ path, waitMs: this.receiveTimeoutMs }, 'request body not received in time: 408');
      send(matrixError(408, 'M_UNKNOWN', `trickle host: the request body did not arrive within ${this.receiveTimeoutMs} ms`), { ...corsH, ...close });
      return;
    }
    if (body === 'too-large') {
      this.counters.tooLarge++;
      send(matrixError(413, 'M_TOO_LARGE', `request body over ${this.opts.maxRequestBodyBytes} bytes; Trickle's radio link refuses it (raise --max-body-bytes if you must)`), { ...corsH, ...close });
      return;
    }
    const auth = req.headers.authorization;
    const credential = extractAccessToken(auth, rawQuery);
    const carried: HttpRequestLike = {
      method, path, query: credential.query, body,
      ...(credential.kind === 'token' ? { accessToken: credential.token } : {}),
      ...(req.headers['content-type'] ? { contentType: req.headers['content-type'] } : {}),
    };
    const ctx: LocalRequestContext = { baseUrl, ...(credential.kind === 'invalid' ? { invalidCredential: credential.reason } : {}) };
    headerBytes += body.length;
    let response: HttpResponseLike;
    try {
      response = await this.opts.carry(carried, ctx);
    } catch (e) {
      this.opts.logger.error({ err: (e as Error).message, path }, 'carry failed');
      response = matrixError(500, 'M_UNKNOWN', `trickle host: ${(e as Error).message}`);
    }
    const respBytes = send(response, corsH);
    this.opts.onExchange?.({
      method, path, status: response.status,
      httpRequestBytes: headerBytes, httpResponseBytes: respBytes,
      startedAtMs: started, durationMs: Date.now() - started,
    }, carried);
  }

  private portHint(): number {
    const a = this.server?.address();
    return typeof a === 'object' && a ? a.port : this.opts.port;
  }
}

/**
 * The request body, bounded in size and time. Never rejects: a client that goes away
 * ('aborted', or 'close' before the body was complete) is an outcome like the others.
 */
function readBody(req: IncomingMessage, maxBytes: number, deadlineMs: number): Promise<BodyResult> {
  if (req.complete) return Promise.resolve(new Uint8Array(0));
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let len = 0;
    let done = false;
    const finish = (v: BodyResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('aborted', onAborted);
      req.off('close', onClose);
      if (v !== 'aborted') req.resume(); // drop what else arrives; the answer closes the connection
      resolve(v);
    };
    const onData = (c: Buffer): void => {
      len += c.length;
      if (len > maxBytes) { finish('too-large'); return; }
      chunks.push(c);
    };
    const onEnd = (): void => finish(new Uint8Array(Buffer.concat(chunks)));
    const onAborted = (): void => finish('aborted');
    const onClose = (): void => { if (!req.complete) finish('aborted'); };
    const timer = setTimeout(() => finish('timeout'), deadlineMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('aborted', onAborted);
    req.on('close', onClose);
  });
}
