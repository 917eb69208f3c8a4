/**
 * A Link is a byte pipe to a modem: a serial port, a PTY, a TCP socket (KISS over TCP)
 * or an in-memory pair in tests. It knows nothing about frames; modem dialects do.
 *
 * Contract, for every implementation:
 *
 * - Bytes, not messages. The chunks given to `onData` listeners are split wherever the
 *   operating system, the USB adapter or the peer happened to split them; a frame written
 *   with one `write` may arrive in many chunks and several frames may arrive in one.
 *   Byte order is preserved, and bytes are never duplicated by the link.
 * - Writes are delivered in the order `write` was called; callers need not wait for one
 *   write to settle before starting the next.
 * - The link may carry every byte value 0x00–0xFF unchanged (no newline translation, no
 *   XON/XOFF, no echo).
 * - A Link is open when it is handed out (`open…`/`create…` resolve only after the device
 *   is open) and closes exactly once.
 * - Errors never escape as exceptions or unhandled 'error' events. An I/O failure while
 *   open (EIO when the USB radio is unplugged or the other side of a PTY closes, a failed
 *   write) closes the link and is reported once through `onClose(err)`.
 */
export interface Link {
  /** Human-readable identity for logs and error messages, e.g. the device path. */
  readonly name: string;

  /**
   * Hand `bytes` to the device. Resolves when the bytes have been passed to the operating
   * system (not when they are on the wire or on air). The caller may reuse `bytes` once
   * `write` returns; the link copies what it needs.
   *
   * Rejects with a TrickleError:
   * - ERR_LINK_CLOSED if the link is already closed (or closing);
   * - ERR_LINK_IO if the device failed; the link is then closed and `onClose` listeners
   *   receive the same error.
   */
  write(bytes: Uint8Array): Promise<void>;

  /**
   * Register a listener for received bytes. Every listener sees every chunk, in order.
   * The chunk belongs to the listener: the link never reuses or mutates it. Listeners are
   * called synchronously from the link's event loop turn and must not throw.
   * Bytes that arrive while no listener is registered are discarded.
   */
  onData(listener: (chunk: Uint8Array) => void): void;

  /**
   * Register a listener for the end of the link. Called exactly once per listener:
   * with no argument after `close()`, or with a TrickleError (ERR_LINK_IO) when the device
   * failed or went away. A listener registered after the link closed is called on a later
   * microtask with the same argument. After close no `onData` listener is called again.
   */
  onClose(listener: (err?: Error) => void): void;

  /**
   * Close the link and release the device (and its lock). Idempotent; resolves once the
   * device is released. Pending and later writes reject with ERR_LINK_CLOSED.
   */
  close(): Promise<void>;
}
