/**
 * The bookkeeping every dialect shares: frame and byte counters, and dropped input counted by
 * code and reported to `onDrop` listeners (Modem contract in modem.ts).
 */
import type { ErrorCode, WireError } from '../errors.ts';
import type { ModemStats } from './modem.ts';

export class ModemCounters {
  /** Mutable counters; the dialect increments them as frames and bytes pass. */
  readonly counters: ModemStats = { framesSent: 0, framesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0, dropped: {} };
  private readonly listeners: ((code: ErrorCode, detail: Record<string, unknown>) => void)[] = [];

  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.listeners.push(listener); }

  /** Count one dropped frame (or run of noise) and tell the listeners. */
  drop(code: ErrorCode, message: string, detail: Readonly<Record<string, unknown>> = {}): void {
    this.counters.dropped[code] = (this.counters.dropped[code] ?? 0) + 1;
    const d = { ...detail, message };
    for (const l of this.listeners) l(code, d);
  }

  dropError(err: WireError): void { this.drop(err.code, err.message, err.detail); }

  /** A copy, safe to hand out. */
  snapshot(): ModemStats { return { ...this.counters, dropped: { ...this.counters.dropped } }; }
}
