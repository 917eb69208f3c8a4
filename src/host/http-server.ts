/**
 * The host's local Matrix CS-API endpoint: an HTTP server on 127.0.0.1 that an unmodified
 * Matrix client uses as its homeserver. Every request is handed to `carry` (which sends it
 * over the radio); CORS preflights and Trickle's own status page are answered locally.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';

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

export interface LocalServerOptions {
  host: string;
  port: number;
  maxRequestBodyBytes: number;
  logger: Logger;
  carry: (req: HttpRequestLike) => Promise<HttpResponseLike>;
  status: () => unknown;
  onExchange?: (rec: HttpExchangeRecord, req: HttpRequestLike) => void;
}

const CORS_HEADERS: Record<string, string> = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization',
};

export class LocalServer {
  private server: Server | undefined;
  private readonly opts: LocalServerOptions;

  constructor(opts: LocalServerOptions) { this.opts = opts; }

  /** Resolves with the bound port once listening; rejects with a clear error if the port is taken. */
  async listen(): Promise<number> {
    const server = createServer((req, res) => { void this.handle(req, res); });
    server.keepAliveTimeout = 120_000;
    server.requestTimeout = 0; // long polls and slow radio links: the carry path has its own deadlines
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        reject(new Error(e.code === 'EADDRINUSE'
          ? `${this.opts.host}:${this.opts.port} is already in use; choose another with --listen ${this.opts.host}:PORT`
          : `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`));
      });
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    const addr = server.address();
    return typeof addr === 'object' && addr ? addr.port : this.opts.port;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
    const query = q >= 0 ? rawUrl.slice(q + 1) : '';
    const method = (req.method ?? 'GET').toUpperCase();
    let headerBytes = Buffer.byteLength(`${method} ${rawUrl} HTTP/${req.httpVersion}\r\n`) + 2;
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headerBytes += Buffer.byteLength(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`);

    let response: HttpResponseLike;
    let carried: HttpRequestLike | undefined;
    if (method === 'OPTIONS') {
      response = { status: 204, body: new Uint8Array(0) };
    } else if (path === '/_trickle/status') {
      response = { status: 200, contentType: 'application/json', body: Buffer.from(JSON.stringify(this.opts.status(), null, 2)) };
    } else if (method !== 'GET' && method !== 'POST' && method !== 'PUT' && method !== 'DELETE') {
      response = matrixError(405, 'M_UNRECOGNIZED', `Trickle carries GET, POST, PUT and DELETE; ${method} is not supported`);
    } else {
      const body = await readBody(req, this.opts.maxRequestBodyBytes);
      if (body === 'too-large') {
        response = matrixError(413, 'M_TOO_LARGE', `request body over ${this.opts.maxRequestBodyBytes} bytes; Trickle's radio link refuses it (raise --max-body-bytes if you must)`);
      } else {
        const auth = req.headers.authorization;
        carried = {
          method, path, query, body,
          ...(auth && /^Bearer /i.test(auth) ? { accessToken: auth.slice(7).trim() } : {}),
          ...(req.headers['content-type'] ? { contentType: req.headers['content-type'] } : {}),
        };
        headerBytes += body.length;
        try {
          response = await this.opts.carry(carried);
        } catch (e) {
          this.opts.logger.error({ err: e, path }, 'carry failed');
          response = matrixError(500, 'M_UNKNOWN', `trickle host: ${(e as Error).message}`);
        }
      }
    }
    const headers: Record<string, string> = { ...CORS_HEADERS, ...(response.headers ?? {}) };
    if (response.contentType) headers['content-type'] = response.contentType;
    headers['content-length'] = String(response.body.length);
    res.writeHead(response.status, headers);
    res.end(response.body);
    let respBytes = Buffer.byteLength(`HTTP/1.1 ${response.status} ${res.statusMessage}\r\n`) + 2 + response.body.length;
    for (const [k, v] of Object.entries(headers)) respBytes += Buffer.byteLength(`${k}: ${v}\r\n`);
    if (carried && this.opts.onExchange) {
      this.opts.onExchange({
        method, path, status: response.status,
        httpRequestBytes: headerBytes, httpResponseBytes: respBytes,
        startedAtMs: started, durationMs: Date.now() - started,
      }, carried);
    }
  }
}

async function readBody(req: IncomingMessage, max: number): Promise<Uint8Array | 'too-large'> {
  const chunks: Buffer[] = [];
  let len = 0;
  for await (const c of req) {
    const chunk = c as Buffer;
    len += chunk.length;
    if (len > max) return 'too-large';
    chunks.push(chunk);
  }
  return new Uint8Array(Buffer.concat(chunks));
}
