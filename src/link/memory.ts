/**
 * An in-memory Link pair for tests: bytes written to one end arrive at the other end,
 * asynchronously (on a later microtask, never inside `write`), in order, as one chunk per
 * write. Closing either end closes both, like a cable being pulled: the end that called
 * `close()` sees a clean close, the other end sees ERR_LINK_IO, just as a serial port does
 * when the other side of its PTY goes away.
 */
import { TrickleError } from '../errors.ts';
import type { Link } from './link.ts';
import { LinkEvents } from './link-events.ts';

class MemoryLink implements Link {
  readonly events = new LinkEvents();
  peer: MemoryLink | undefined;

  constructor(readonly name: string) {}

  write(bytes: Uint8Array): Promise<void> {
    if (this.events.closed) {
      return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'link', `write on closed link ${this.name}`));
    }
    const copy = bytes.slice();
    const peer = this.peer;
    queueMicrotask(() => { if (copy.length > 0) peer?.events.emitData(copy); });
    return Promise.resolve();
  }

  onData(listener: (chunk: Uint8Array) => void): void { this.events.onData(listener); }

  onClose(listener: (err?: Error) => void): void { this.events.onClose(listener); }

  close(): Promise<void> {
    if (!this.events.closed) {
      this.events.emitClose();
      const peer = this.peer;
      // After bytes already in flight (queued microtasks) have been delivered.
      queueMicrotask(() => peer?.events.emitClose(new TrickleError('ERR_LINK_IO', 'link',
        `link ${peer.name} closed: its peer ${this.name} went away`, { link: peer.name })));
    }
    return Promise.resolve();
  }
}

/** Two connected in-memory links, named `${name}.a` and `${name}.b`. */
export function createMemoryLinkPair(name = 'memory'): [Link, Link] {
  const a = new MemoryLink(`${name}.a`);
  const b = new MemoryLink(`${name}.b`);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
