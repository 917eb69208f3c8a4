/**
 * LinkRelay: a simple "radio channel" between two Links. It copies bytes both ways and
 * lets a test or the demo watch, damage, drop and inject traffic:
 *
 *   host ⇄ ptyA1 —socat— ptyA2 ⇄ LinkRelay ⇄ ptyB2 —socat— ptyB1 ⇄ gateway
 *
 * Direction 'aToB' carries what arrives on link `a` to link `b`; 'bToA' the reverse.
 * The relay works on chunks as the links deliver them; it knows nothing about frames.
 * Order within a direction is preserved: forwarded and injected bytes are written in the
 * order they were forwarded or injected.
 */
import type { Link } from './link.ts';

export type RelayDirection = 'aToB' | 'bToA';

/**
 * Decide the fate of one chunk on its way across the relay: return it (or a modified
 * copy) to forward it, or `null` to drop it, as a lossy radio channel would.
 */
export type RelayFilter = (chunk: Uint8Array, direction: RelayDirection) => Uint8Array | null;

export interface RelayDirectionStats {
  /** Chunks and bytes that arrived from the source link. */
  chunksIn: number;
  bytesIn: number;
  /** Bytes written to the destination link (after the filter, injected bytes included). */
  bytesOut: number;
  /** Chunks the filter dropped. */
  chunksDropped: number;
  /** Bytes added with `inject`. */
  bytesInjected: number;
  /** Writes to the destination link that failed. */
  writeErrors: number;
}

export interface LinkRelayOptions {
  filter?: RelayFilter;
}

function emptyStats(): RelayDirectionStats {
  return { chunksIn: 0, bytesIn: 0, bytesOut: 0, chunksDropped: 0, bytesInjected: 0, writeErrors: 0 };
}

export class LinkRelay {
  private filter: RelayFilter | undefined;
  private readonly chunkListeners: ((chunk: Uint8Array, direction: RelayDirection) => void)[] = [];
  private readonly closeListeners: ((side: 'a' | 'b', err?: Error) => void)[] = [];
  private readonly counters: Record<RelayDirection, RelayDirectionStats> = { aToB: emptyStats(), bToA: emptyStats() };
  private stopped = false;

  constructor(readonly a: Link, readonly b: Link, options: LinkRelayOptions = {}) {
    this.filter = options.filter;
    a.onData((chunk) => this.forward(chunk, 'aToB'));
    b.onData((chunk) => this.forward(chunk, 'bToA'));
    a.onClose((err) => this.sideClosed('a', err));
    b.onClose((err) => this.sideClosed('b', err));
  }

  /** Replace (or remove, with undefined) the filter applied to every chunk. */
  setFilter(filter: RelayFilter | undefined): void { this.filter = filter; }

  /** Observe every chunk as it arrives from its source link, before the filter. */
  onChunk(listener: (chunk: Uint8Array, direction: RelayDirection) => void): void {
    this.chunkListeners.push(listener);
  }

  /** Called when either link closes (with the link's error, if it failed). */
  onClose(listener: (side: 'a' | 'b', err?: Error) => void): void { this.closeListeners.push(listener); }

  /**
   * Write `bytes` into a direction, after everything forwarded so far: garbage on the
   * channel. Resolves when the destination link accepted them; rejects like Link.write.
   */
  inject(direction: RelayDirection, bytes: Uint8Array): Promise<void> {
    this.counters[direction].bytesInjected += bytes.length;
    return this.send(direction, bytes);
  }

  /** Per-direction counters (a snapshot). */
  stats(): Record<RelayDirection, RelayDirectionStats> {
    return { aToB: { ...this.counters.aToB }, bToA: { ...this.counters.bToA } };
  }

  /** Stop relaying and close both links. */
  async close(): Promise<void> {
    this.stopped = true;
    await Promise.all([this.a.close(), this.b.close()]);
  }

  private forward(chunk: Uint8Array, direction: RelayDirection): void {
    if (this.stopped) return;
    const s = this.counters[direction];
    s.chunksIn++;
    s.bytesIn += chunk.length;
    for (const l of this.chunkListeners) l(chunk, direction);
    const out = this.filter ? this.filter(chunk, direction) : chunk;
    if (out === null) { s.chunksDropped++; return; }
    if (out.length > 0) void this.send(direction, out).catch(() => { /* counted in send */ });
  }

  private async send(direction: RelayDirection, bytes: Uint8Array): Promise<void> {
    const dest = direction === 'aToB' ? this.b : this.a;
    const s = this.counters[direction];
    try {
      await dest.write(bytes);
      s.bytesOut += bytes.length;
    } catch (err) {
      s.writeErrors++;
      throw err;
    }
  }

  private sideClosed(side: 'a' | 'b', err: Error | undefined): void {
    for (const l of this.closeListeners) {
      if (err === undefined) l(side); else l(side, err);
    }
  }
}
