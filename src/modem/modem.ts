/**
 * The one interface every modem dialect implements (transparent serial radio, KISS,
 * RNode, Meshtastic, Trickle's native firmware protocol).
 *
 * Contract:
 * - `send(frame)` hands one link-layer payload (≤ `capabilities.maxFrameLen` bytes) to the
 *   radio. It resolves when the bytes have been written to the device (not when they are
 *   on air: only dialects that report transmit-done know that, via `SendReport.airtimeMs`).
 *   It rejects with ERR_MODEM_MTU for an oversize frame and ERR_LINK_* when the device fails.
 * - Received frames are delivered whole, already de-framed and integrity-checked by the
 *   dialect; damaged input never reaches `onFrame`. It is dropped, counted in
 *   `stats().dropped[code]`, and reported to `onDrop` listeners (for logging).
 * - The modem never retries or queues on its own: timing belongs to the scheduler.
 * - `senseChannel()` (only where `capabilities.channelSense` is 'host') listens for channel
 *   activity for a few symbols and reports whether a LoRa transmission is on the channel. It is
 *   reception: it costs no airtime. It never overlaps a `send` of the same modem (the caller,
 *   the scheduler's ChannelAccess, serialises them).
 */
import type { ErrorCode } from '../errors.ts';

export interface ModemCapabilities {
  /** Largest payload `send` accepts, in bytes. */
  readonly maxFrameLen: number;
  /** True when the modem itself enforces a duty cycle (RNode airtime locks, Meshtastic). */
  readonly enforcesDutyCycle: boolean;
  /** True when the modem reports transmit-done with measured airtime. */
  readonly reportsAirtime: boolean;
  /**
   * Who can tell whether the channel is in use before a transmission:
   * 'host'     — the host can ask, right before a frame (`Modem.senseChannel`: the native dialect's CAD);
   * 'firmware' — the modem senses by itself before each transmission and the host cannot ask
   *              (RNode's and Meshtastic's CSMA, a KISS TNC's p-persistence on its DCD);
   * 'none'     — nobody does (a transparent serial radio keys up when bytes arrive).
   * hardware/README.md has the table per dialect.
   */
  readonly channelSense: 'host' | 'firmware' | 'none';
}

/** What one sense of the channel found (Modem.senseChannel). */
export interface ChannelSenseResult {
  /** A LoRa transmission this radio could demodulate was on the channel during the sense. */
  busy: boolean;
  /** How long the sense listened, ms. */
  durationMs: number;
}

export interface ReceivedFrameMeta {
  rssiDbm?: number;
  snrDb?: number;
}

export interface SendReport {
  /** Bytes written to the device for this frame, framing included. */
  wireBytes: number;
  /** Measured airtime when the modem reports it. */
  airtimeMs?: number;
}

export interface ModemStats {
  framesSent: number;
  framesReceived: number;
  /** Bytes written to / read from the device, framing included. */
  wireBytesSent: number;
  wireBytesReceived: number;
  /** Dropped input by reason code (ERR_FRAME_BAD_FCS, ERR_FRAME_NOISE, …). */
  dropped: Partial<Record<ErrorCode, number>>;
}

export interface Modem {
  readonly dialect: string;
  readonly capabilities: ModemCapabilities;
  send(frame: Uint8Array): Promise<SendReport>;
  /** Listen for channel activity now (see the contract above); call it only when `capabilities.channelSense` is 'host'. */
  senseChannel?(): Promise<ChannelSenseResult>;
  /**
   * Bytes this dialect adds to `payload` when carrying it, split by where they cost:
   * `onAir` is transmitted by the radio (an AX.25 header, a Meshtastic packet header);
   * `serial` only crosses the host⇄modem cable (SLIP/KISS escapes, a CRC checked by the
   * host). For a transparent serial radio everything the host writes goes on air, so its
   * framing counts as on-air bytes. Pure: depends on the payload bytes only.
   */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number };
  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void;
  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void;
  /** The device went away or failed; the modem is unusable after this. */
  onClose(listener: (err?: Error) => void): void;
  stats(): ModemStats;
  close(): Promise<void>;
}
