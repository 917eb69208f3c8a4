/**
 * A Link over a TCP connection: KISS over TCP, as soundcard TNCs offer it (Direwolf's
 * KISSPORT, 8001 by default; also UZ7HO SoundModem, LoRa-APRS TNC firmwares on their
 * Wi-Fi). The TCP stream is a byte pipe like a serial line: the dialect does all framing.
 *
 * Nagle's algorithm is off (setNoDelay): a KISS frame is written in one `write` and should
 * leave at once rather than wait for the previous segment's ACK.
 */
import { Socket } from 'node:net';
import { TrickleError } from '../errors.ts';
import type { Link } from './link.ts';
import { LinkEvents } from './link-events.ts';

export interface TcpLinkOptions {
  /** Give up connecting after this long (default 5000 ms). */
  connectTimeoutMs?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

function endpoint(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Map a failure to connect to `host:port` to a TrickleError that says what to do. */
export function mapTcpConnectError(host: string, port: number, err: unknown): TrickleError {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const where = endpoint(host, port);
  const detail = { host, port, cause: message };
  const opts = { cause: err };
  if (code === 'ECONNREFUSED') {
    return new TrickleError('ERR_LINK_NOT_FOUND', 'link',
      `nothing listens on ${where}; is direwolf (or your KISS TNC) running with KISSPORT ${port}?`, detail, opts);
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new TrickleError('ERR_LINK_NOT_FOUND', 'link',
      `cannot resolve the KISS TNC host ${JSON.stringify(host)} (${code}); check the host name, or use 127.0.0.1 for a local direwolf`,
      detail, opts);
  }
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return new TrickleError('ERR_LINK_OPEN', 'link',
      `cannot reach the KISS TNC at ${where} (${code}); check the address and that no firewall is in the way`, detail, opts);
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new TrickleError('ERR_LINK_PERMISSION', 'link', `not allowed to connect to ${where} (${code})`, detail, opts);
  }
  return new TrickleError('ERR_LINK_OPEN', 'link', `cannot connect to the KISS TNC at ${where}: ${message}`, detail, opts);
}

class TcpLink implements Link {
  private readonly events = new LinkEvents();
  private closing: Promise<void> | undefined;

  constructor(readonly name: string, private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.events.emitData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
    socket.on('error', (err: Error) => this.fail(err));
    // The TNC closed its side (direwolf stopped): nothing more will arrive, and it reads no more.
    socket.on('end', () => this.fail(new Error('the TNC closed the connection')));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  private ioError(err: Error): TrickleError {
    return new TrickleError('ERR_LINK_IO', 'link',
      `KISS TCP link ${this.name} failed (${err.message}): the TNC (direwolf) stopped or the connection broke`,
      { link: this.name, cause: err.message }, { cause: err });
  }

  private fail(err: Error): void {
    if (this.events.closed || this.closing !== undefined) return;
    this.events.emitClose(this.ioError(err));
    this.socket.destroy();
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.events.closed || this.closing !== undefined) {
      return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'link', `write on closed TCP link ${this.name}`, { link: this.name }));
    }
    const copy = Buffer.from(bytes);
    return new Promise<void>((resolve, reject) => {
      this.socket.write(copy, (err?: Error | null) => {
        if (!err) { resolve(); return; }
        if (this.closing !== undefined || this.events.closed) {
          reject(new TrickleError('ERR_LINK_CLOSED', 'link', `TCP link ${this.name} closed during a write`, { link: this.name }));
          return;
        }
        const ioErr = this.ioError(err);
        this.fail(err);
        reject(ioErr);
      });
    });
  }

  onData(listener: (chunk: Uint8Array) => void): void { this.events.onData(listener); }

  onClose(listener: (err?: Error) => void): void { this.events.onClose(listener); }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const done = (): void => { this.events.emitClose(); resolve(); };
      if (this.socket.destroyed) { done(); return; }
      this.socket.once('close', done);
      this.socket.destroy();
    });
    return this.closing;
  }
}

/**
 * Connect to a KISS TNC over TCP (Direwolf: `KISSPORT 8001`). Resolves once connected.
 * Rejects with ERR_LINK_NOT_FOUND (connection refused, unknown host), ERR_LINK_PERMISSION,
 * or ERR_LINK_OPEN (timeout, unreachable, anything else); the message names host:port.
 */
export async function openTcpLink(host: string, port: number, options: TcpLinkOptions = {}): Promise<Link> {
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new TrickleError('ERR_CONFIG', 'config', `KISS TCP port must be an integer from 1 to 65535, got ${String(port)}`,
      { key: 'port', value: port });
  }
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const socket = new Socket();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(mapTcpConnectError(host, port, Object.assign(new Error(`no answer within ${connectTimeoutMs} ms`), { code: 'ETIMEDOUT' })));
    }, connectTimeoutMs);
    socket.once('error', (err) => { clearTimeout(timer); socket.destroy(); reject(mapTcpConnectError(host, port, err)); });
    socket.connect({ host, port }, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve();
    });
  });
  socket.setNoDelay(true);
  return new TcpLink(`tcp:${endpoint(host, port)}`, socket);
}
