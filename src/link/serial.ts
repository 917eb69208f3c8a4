/**
 * A Link over a serial device (USB UART radio, SiK, HC-12, a PTY) using `serialport`.
 *
 * The port is opened with `lock: true`: on Linux and macOS the binding takes
 * flock(LOCK_EX | LOCK_NB) on the device, so a second Trickle (or any other program that
 * also flocks, such as another serialport user) cannot open it at the same time. flock is
 * advisory: programs that do not flock (screen, cat, some terminal programs) are not kept
 * out, and we cannot detect them.
 */
import { read as fsRead } from 'node:fs';
import { promisify } from 'node:util';
import { SerialPort } from 'serialport';
import { TrickleError } from '../errors.ts';
import type { Link } from './link.ts';
import { LinkEvents } from './link-events.ts';

export interface SerialLinkOptions {
  /**
   * Line speed of the UART. 9600 is the factory default of EBYTE E22/E32 and HC-12
   * modules; SiK radios default to 57600. Irrelevant for a PTY.
   */
  baudRate?: number;
}

const DEFAULT_BAUD_RATE = 9600;

/**
 * Map a failure to open `path` to a TrickleError that names the device and says what to do.
 *
 * serialport's native binding reports open failures as plain Errors without `code`, with
 * messages such as "Error: No such file or directory, cannot open /dev/ttyUSB9" or
 * "Error Resource temporarily unavailable Cannot lock port", so we match both `code`
 * (for other bindings) and the strerror text.
 */
export function mapSerialOpenError(path: string, err: unknown): TrickleError {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const detail = { path, cause: message };
  const opts = { cause: err };
  if (code === 'ENOENT' || /no such file or directory/i.test(message)) {
    return new TrickleError('ERR_LINK_NOT_FOUND', 'link',
      `serial device ${path} does not exist; list devices with \`ls /dev/serial/by-id\` (USB adapters) ` +
      `or \`ls /dev/ttyUSB* /dev/ttyACM*\`, check the cable, and pass the right path`, detail, opts);
  }
  if (code === 'EBUSY' || code === 'EAGAIN' || code === 'EWOULDBLOCK' ||
      /resource temporarily unavailable|device or resource busy|cannot lock port/i.test(message)) {
    return new TrickleError('ERR_LINK_BUSY', 'link',
      `serial device ${path} is in use by another program (it holds a lock on the port: ${message}); ` +
      `stop the other program (\`fuser -v ${path}\` shows which) and try again`, detail, opts);
  }
  if (code === 'EACCES' || code === 'EPERM' || /permission denied|operation not permitted/i.test(message)) {
    return new TrickleError('ERR_LINK_PERMISSION', 'link',
      `no permission to open serial device ${path}; add your user to the dialout group ` +
      `(\`sudo usermod -aG dialout $USER\`, then log out and back in)`, detail, opts);
  }
  return new TrickleError('ERR_LINK_OPEN', 'link',
    `cannot open serial device ${path}: ${message}; check that it is a serial port (a tty) and that the baud rate is supported`,
    detail, opts);
}

const fsReadAsync = promisify(fsRead);

/** The parts of serialport's unix port binding (LinuxPortBinding, DarwinPortBinding) we touch. */
interface UnixPortBinding {
  fd: number | null;
  readonly isOpen: boolean;
  readonly poller: { once(event: 'readable', cb: (err: Error | null) => void): unknown };
  read(buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }>;
}

function isUnixPortBinding(b: unknown): b is UnixPortBinding {
  const o = b as Partial<UnixPortBinding> | null | undefined;
  return typeof o?.fd === 'number' && typeof o.read === 'function' && typeof o.poller?.once === 'function';
}

/**
 * Work around a hang in @serialport/bindings-cpp 13 (unix-read.js): when a tty is hung up
 * (the USB adapter vanished, or the master side of a PTY closed and the kernel ran
 * tty_vhangup on the slave), read(2) returns 0 (end of file) forever, and unixRead retries
 * 0-byte reads in a tight promise loop: the port never reports the disconnect and burns a
 * CPU. Whether a given hang-up shows up as EIO (handled fine) or as EOF is a race, so
 * we replace `read` on the open port with the same non-blocking read + poll loop that
 * treats EOF as a disconnect. With VMIN=1/VTIME=0 in raw mode (how serialport configures
 * the port) a tty read returns 0 only on hang-up.
 */
function makeHangupAware(binding: UnixPortBinding): void {
  binding.read = async (buffer, offset, length) => {
    for (;;) {
      const fd = binding.fd;
      if (!binding.isOpen || fd === null) throw Object.assign(new Error('Port is not open'), { canceled: true });
      try {
        const { bytesRead } = await fsReadAsync(fd, buffer, offset, length, null);
        if (bytesRead === 0) {
          throw Object.assign(new Error('EIO: the device hung up (read returned end of file)'), { code: 'EIO', disconnect: true });
        }
        return { buffer, bytesRead };
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') throw err;
        if (!binding.isOpen) throw Object.assign(new Error('Port is not open'), { canceled: true });
        // Rejects with a `canceled` error when the port is closed meanwhile.
        await new Promise<void>((resolve, reject) => {
          binding.poller.once('readable', (e) => { if (e) reject(e); else resolve(); });
        });
      }
    }
  };
}

class SerialLink implements Link {
  private readonly events = new LinkEvents();
  private closing: Promise<void> | undefined;

  constructor(readonly name: string, private readonly port: SerialPort) {
    if (isUnixPortBinding(port.port)) makeHangupAware(port.port);
    port.on('data', (chunk: Buffer) => {
      this.events.emitData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
    // Without an 'error' listener a failed write would become an uncaught exception.
    port.on('error', (err: Error) => { this.fail(err); });
    // serialport emits 'close' with a DisconnectedError when a read or write failed
    // (EIO, EBADF, ENXIO), and with nothing after our own close().
    port.on('close', (err: Error | null | undefined) => {
      if (this.closing === undefined) this.fail(err ?? new Error('port closed'));
    });
  }

  private ioError(err: Error): TrickleError {
    return new TrickleError('ERR_LINK_IO', 'link',
      `serial device ${this.name} failed (${err.message}): the radio was unplugged, ` +
      `or the other end of the PTY went away`, { path: this.name, cause: err.message }, { cause: err });
  }

  private fail(err: Error): void {
    if (this.events.closed || this.closing !== undefined) return;
    this.events.emitClose(this.ioError(err));
    if (this.port.isOpen) this.port.close(() => { /* already reported */ });
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.events.closed || this.closing !== undefined) {
      return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'link', `write on closed serial link ${this.name}`,
        { path: this.name }));
    }
    const copy = Buffer.from(bytes);
    return new Promise<void>((resolve, reject) => {
      this.port.write(copy, (err: Error | null | undefined) => {
        if (!err) { resolve(); return; }
        if (this.closing !== undefined || (err as { canceled?: boolean }).canceled === true) {
          reject(new TrickleError('ERR_LINK_CLOSED', 'link', `serial link ${this.name} closed during a write`,
            { path: this.name }));
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
      if (!this.port.isOpen) { done(); return; }
      // Errors from close itself (the device already vanished) leave nothing to release.
      this.port.close(() => done());
    });
    return this.closing;
  }
}

/**
 * Open `path` as a raw 8N1 serial link. Rejects with ERR_LINK_NOT_FOUND, ERR_LINK_BUSY,
 * ERR_LINK_PERMISSION or ERR_LINK_OPEN; the message names the device and what to do.
 */
export async function openSerialLink(path: string, options: SerialLinkOptions = {}): Promise<Link> {
  const baudRate = options.baudRate ?? DEFAULT_BAUD_RATE;
  let port: SerialPort;
  try {
    port = new SerialPort({ path, baudRate, lock: true, autoOpen: false });
  } catch (err) {
    // Invalid settings are rejected synchronously by the constructor.
    throw mapSerialOpenError(path, err);
  }
  await new Promise<void>((resolve, reject) => {
    port.open((err) => { if (err) reject(mapSerialOpenError(path, err)); else resolve(); });
  });
  return new SerialLink(path, port);
}
