/**
 * CoAP over a modem: the composition every app uses.
 *
 *   CoapEndpoint ──send──▶ [security, later] ──▶ TxQueue (duty cycle, priority, packing) ──▶ Modem ──▶ Link
 *   CoapEndpoint ◀─receive─ [security, later] ◀── unpack ◀──────────────────────────────── Modem ◀── Link
 *
 * Priorities come from the CoAP message itself: empty ACK/RST → control; requests and
 * piggybacked responses → interactive; follow-up blocks of a blockwise transfer → bulk.
 * Retransmission timers are derived from the frame's airtime and the scheduler's expected
 * wait, never from CoAP's 2 s default.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { systemClock, type Clock, type RandomBytes } from '../util/clock.ts';
import { toHex } from '../util/bytes.ts';
import { TrickleError } from '../errors.ts';
import { openSerialLink } from '../link/serial.ts';
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import { TransparentModem } from '../modem/transparent/transparent-modem.ts';
import { loraAirtimeMs, type LoraParams } from '../scheduler/airtime.ts';
import { resolveChannel, getRegion, type ResolvedChannel } from '../scheduler/regions.ts';
import { TxQueue, coapAckTimeoutMs, DutyCycleError, type Priority } from '../scheduler/tx-queue.ts';
import { DutyCycleLedger } from '../scheduler/duty-cycle.ts';
import { unpackFrame } from '../scheduler/packing.ts';
import { CoapEndpoint } from './endpoint.ts';

/** The radio channel: LoRa settings for airtime, and the region whose rules bind us. */
export interface RadioSettings {
  /** 'none' means a cable or a test loopback: no airtime rules apply and none are computed. */
  region: string;
  freqHz?: number;
  bandwidthHz: number;
  sf: number;
  codingRate: number;
  preambleSymbols?: number;
}

/** Shares of the hourly budget: sync and bulk together ≤ 90 % (ACKs and requests always find room), bulk ≤ 50 %. */
const SYNC_SHARE = 0.9;
const BULK_SHARE = 0.5;

export const DEFAULT_RADIO: RadioSettings = { region: 'eu868', bandwidthHz: 125_000, sf: 9, codingRate: 5 };

export interface RadioStackOptions {
  device?: string;
  /** Use this link instead of opening `device` (tests, KISS over TCP). */
  link?: Link;
  /** Build the modem dialect on the link (default: the transparent serial radio). */
  createModem?: (link: Link) => Modem;
  baudRate: number;
  maxFrameLen: number;
  radio: RadioSettings;
  maxBodyBytes: number;
  logger: Logger;
  clock?: Clock;
  randomBytes?: RandomBytes;
}

export interface FrameRecord {
  direction: 'tx' | 'rx';
  /** The CoAP message as handed to / received from the layer below. */
  compactBytes: number;
  /** What crossed the serial line for it, framing included. */
  wireBytes: number;
  /** Token of the CoAP message, hex ('' for empty messages). */
  tokenHex: string;
  /** CoAP type (0 CON, 1 NON, 2 ACK, 3 RST) and message id, for attributing empty ACKs. */
  type: number;
  mid: number;
}

export interface RadioStack {
  link: Link;
  modem: Modem;
  endpoint: CoapEndpoint;
  channel: ResolvedChannel | undefined;
  /** Largest frame this channel and modem carry (CoAP sizes its blocks to it). */
  maxFrameLen: number;
  /** How long a new interactive request of `len` bytes would wait for the duty cycle, in ms. */
  estimateWaitMs(len: number): number;
  /**
   * How long the peer must wait before it may transmit a frame of `len` bytes, as far as we can
   * tell from its frames we heard (its ledger mirrored from what we received; on a
   * point-to-point link that is all it sent, so this is exact unless frames were lost).
   */
  estimatePeerWaitMs(len: number): number;
  onFrameRecord(listener: (rec: FrameRecord) => void): void;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

/** Type, message id and token of a CoAP message in RFC 7252 layout (§3), without a full decode. */
function peekHeader(frame: Uint8Array): { type: number; mid: number; tokenHex: string } {
  const b0 = frame[0] ?? 0;
  const tkl = b0 & 0x0f;
  const mid = ((frame[2] ?? 0) << 8) | (frame[3] ?? 0);
  const tokenHex = tkl === 0 || tkl > 8 || frame.length < 4 + tkl ? '' : toHex(frame.subarray(4, 4 + tkl));
  return { type: (b0 >> 4) & 0x03, mid, tokenHex };
}

/** Scheduler class of an outgoing CoAP message (RFC 7252 layout). */
export function priorityOf(frame: Uint8Array): Priority {
  const { type } = peekHeader(frame);
  const code = frame[1] ?? 0;
  if (code === 0 || type === 3) return 'control'; // empty ACK, RST
  // A Block1/Block2 option with NUM > 0 marks a follow-up block: bulk. Cheap scan of the options.
  if (hasFollowUpBlock(frame)) return 'bulk';
  return 'interactive';
}

function hasFollowUpBlock(frame: Uint8Array): boolean {
  const tkl = (frame[0] ?? 0) & 0x0f;
  let i = 4 + tkl;
  let num = 0;
  while (i < frame.length && frame[i] !== 0xff) {
    const b = frame[i++]!;
    let delta = b >> 4;
    let len = b & 0x0f;
    if (delta === 13) delta = 13 + (frame[i++] ?? 0); else if (delta === 14) { delta = 269 + (((frame[i] ?? 0) << 8) | (frame[i + 1] ?? 0)); i += 2; }
    if (len === 13) len = 13 + (frame[i++] ?? 0); else if (len === 14) { len = 269 + (((frame[i] ?? 0) << 8) | (frame[i + 1] ?? 0)); i += 2; }
    num += delta;
    if ((num === 23 || num === 27) && len > 0) {
      let v = 0;
      for (let k = 0; k < len; k++) v = (v << 8) | (frame[i + k] ?? 0);
      if (v >> 4 > 0) return true;
    }
    i += len;
  }
  return false;
}

export function resolveRadio(radio: RadioSettings): { channel: ResolvedChannel | undefined; lora: Omit<LoraParams, 'payloadBytes'> } {
  const lora = { sf: radio.sf, bandwidthHz: radio.bandwidthHz, codingRate: radio.codingRate, preambleSymbols: radio.preambleSymbols ?? 8 };
  loraAirtimeMs({ ...lora, payloadBytes: 1 }); // validates the settings with a clear message
  if (radio.region === 'none') return { channel: undefined, lora };
  const region = getRegion(radio.region);
  const freqHz = radio.freqHz ?? region.defaultChannel.freqHz;
  return { channel: resolveChannel(region, freqHz, radio.bandwidthHz), lora };
}

/**
 * The largest frame the channel's rules can ever carry: a single transmission must fit the
 * dwell limit and the whole windowed budget (a 255-byte frame at SF12 is 9 s on air, more
 * than the 3.6 s an hour of the EU 0.1 % sub-bands). CoAP then sizes its blocks to fit.
 */
function legalMaxFrameLen(limit: number, channel: ResolvedChannel | undefined, airtimeOf: (n: number) => number): number {
  if (!channel) return limit;
  // Bulk may use only BULK_SHARE of an hourly budget, and a follow-up block is bulk.
  const caps = [channel.rules.maxFrameAirtimeMs ?? Infinity, ...channel.rules.limits.map((l) => (l.kind === 'duty-cycle' ? l.budgetMs * BULK_SHARE : l.budgetMs))];
  const maxAirtimeMs = Math.min(...caps);
  let n = limit;
  while (n > 32 && airtimeOf(n) > maxAirtimeMs) n--;
  if (airtimeOf(n) > maxAirtimeMs) {
    throw new TrickleError('ERR_CONFIG', 'config', `even a ${n}-byte frame (${airtimeOf(n).toFixed(0)} ms on air) exceeds what ${channel.rules.regulation} allows in one transmission (${maxAirtimeMs} ms); use a lower spreading factor (--sf) or a wider bandwidth (--bw)`);
  }
  return n;
}

export async function openRadioStack(opts: RadioStackOptions): Promise<RadioStack> {
  const log = opts.logger.child({ component: 'radio' });
  const clock = opts.clock ?? systemClock;
  const { channel, lora } = resolveRadio(opts.radio);
  const link = opts.link ?? await openSerialLink(opts.device ?? '', { baudRate: opts.baudRate });
  const modem = opts.createModem ? opts.createModem(link) : new TransparentModem(link, { maxFrameLen: opts.maxFrameLen });
  const wireBytesOf = (frame: Uint8Array): number => { const o = modem.framingOverhead(frame); return frame.length + o.onAir + o.serial; };
  /** Airtime of a frame as the radio transmits it (the framing a transparent radio sends counts). */
  const airtimeOf = (frameLen: number, frame?: Uint8Array): number => {
    const onAir = frameLen + modem.framingOverhead(frame ?? new Uint8Array(frameLen)).onAir;
    return loraAirtimeMs({ ...lora, payloadBytes: Math.min(onAir, 255) }) * Math.max(1, Math.ceil(onAir / 255));
  };
  const maxFrameLen = legalMaxFrameLen(Math.min(opts.maxFrameLen, modem.capabilities.maxFrameLen), channel, airtimeOf);
  const listeners: ((rec: FrameRecord) => void)[] = [];
  const emit = (rec: FrameRecord) => { for (const l of listeners) l(rec); };
  let sendErrors = 0;
  let dutyCycleRefusals = 0;

  const txQueue = channel ? new TxQueue({
    clock,
    rules: channel.rules,
    maxFrameLen,
    frameAirtimeMs: (n) => airtimeOf(n),
    // Sync and bulk together may use at most 90 % of the hour, so ACKs and requests always find room.
    classShares: { sync: SYNC_SHARE, bulk: BULK_SHARE },
    transmit: async (frame) => {
      await modem.send(frame);
      return { airtimeMs: airtimeOf(frame.length, frame) };
    },
  }) : undefined;

  /** Expected wait of a new interactive frame; a frame the rules can never carry waits "an hour". */
  const waitFor = (len: number): number => {
    if (!txQueue) return 0;
    try { return txQueue.estimateWaitMs(len, 'interactive'); } catch { return 3_600_000; }
  };

  // The peer's transmissions as we heard them, on the same rules: predicts when it can answer.
  const peerLedger = channel ? new DutyCycleLedger(channel.rules) : undefined;
  const peerWaitFor = (len: number): number => {
    if (!peerLedger) return 0;
    const now = clock.now();
    try { return Math.max(0, peerLedger.nextAllowedAt(airtimeOf(len), now) - now); } catch { return 3_600_000; }
  };

  const transmit = (frame: Uint8Array, priority: Priority): void => {
    const done = txQueue ? txQueue.enqueue(frame, { priority }) : modem.send(frame);
    done.catch((e: unknown) => {
      if (e instanceof DutyCycleError) { dutyCycleRefusals++; log.warn({ code: e.code, waitMs: e.retryAfterMs, len: frame.length }, 'frame held back by the duty cycle'); return; }
      sendErrors++;
      log.warn({ code: (e as { code?: string }).code, len: frame.length, err: (e as Error).message }, 'frame not sent');
    });
  };

  const endpoint = new CoapEndpoint({
    clock,
    randomBytes: opts.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n))),
    maxFrameLen,
    ackTimeoutMs: (frameLen) => coapAckTimeoutMs({
      ownWaitMs: waitFor(frameLen),
      ownAirtimeMs: airtimeOf(frameLen),
      ackAirtimeMs: airtimeOf(maxFrameLen),
    }),
    maxBodyBytes: opts.maxBodyBytes,
    send: (frame) => {
      emit({ direction: 'tx', compactBytes: frame.length, wireBytes: wireBytesOf(frame), ...peekHeader(frame) });
      transmit(frame, priorityOf(frame));
    },
  });
  modem.onFrame((frame) => {
    if (peerLedger) {
      const airtimeMs = airtimeOf(frame.length, frame);
      try { peerLedger.record(clock.now() - airtimeMs, airtimeMs); } catch { /* a frame the rules forbid: nothing to mirror */ }
    }
    let messages: Uint8Array[];
    try {
      messages = unpackFrame(frame);
    } catch (e) {
      log.warn({ code: (e as TrickleError).code, len: frame.length }, 'frame dropped: bad container');
      return;
    }
    for (const m of messages) {
      emit({ direction: 'rx', compactBytes: m.length, wireBytes: m.length + (messages.length === 1 ? wireBytesOf(frame) - frame.length : 0), ...peekHeader(m) });
      endpoint.receive(m);
    }
  });
  modem.onDrop((code, detail) => log.warn({ code, ...detail }, 'frame dropped'));
  endpoint.onDrop((d) => log.warn({ code: d.reason, len: d.frameLen, err: d.error?.message }, 'CoAP message dropped'));
  modem.onClose((err) => {
    if (err) log.error({ code: (err as { code?: string }).code, port: link.name, err: err.message }, 'serial device closed');
  });
  if (channel) log.info({ band: channel.rules.subBandId, freqHz: channel.freqHz, dutyCycle: channel.rules.dutyCycle, regulation: channel.rules.regulation }, 'radio channel');

  return {
    link, modem, endpoint, channel, maxFrameLen,
    estimateWaitMs: waitFor,
    estimatePeerWaitMs: peerWaitFor,
    onFrameRecord: (l) => { listeners.push(l); },
    status: () => ({
      device: link.name,
      dialect: modem.dialect,
      channel: channel ? { region: channel.regionId, freqHz: channel.freqHz, bandwidthHz: channel.bandwidthHz, subBand: channel.rules.subBandId } : { region: 'none' },
      lora,
      modem: modem.stats(),
      coap: endpoint.stats(),
      dutyCycle: txQueue ? txQueue.status() : null,
      peerDutyCycle: peerLedger ? { heardLastHour: peerLedger.usage(clock.now()), nextAllowedSendInMs: peerWaitFor(64) } : null,
      sendErrors,
      dutyCycleRefusals,
    }),
    async close() {
      endpoint.close();
      txQueue?.close();
      await modem.close();
    },
  };
}
