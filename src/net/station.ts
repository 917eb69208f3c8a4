/**
 * Station: what one radio is, whoever it talks to. The link and modem, the channel and its
 * rules, the one duty-cycle ledger and transmit queue (the law binds the transmitter, not a
 * session), medium access, and the airtime persisted across restarts. Peer stacks
 * (./peer-stack.ts) hand it frames tagged with their peer; the station packs, schedules,
 * addresses and sends them, and hands every frame it hears to its owner.
 *
 *   peer stack ─┐                                   ┌─ address byte (shared channel) ─▶ Modem ─▶ Link
 *   peer stack ─┼─▶ TxQueue (ledger, fair share per peer, priority, packing) ─▶ ChannelAccess ─┘
 *   peer stack ─┘
 *
 * On a channel configured point-to-point, frames carry no address (0 bytes). On a shared
 * channel (`addressing`), every frame carries one address byte (./link-address.ts): the station
 * puts it in front of the packed frame, and its airtime counts in the ledger.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { throttle } from '../util/throttle.ts';
import { systemClock, type Clock, type RandomBytes } from '../util/clock.ts';
import { TrickleError } from '../errors.ts';
import { openSerialLink } from '../link/serial.ts';
import type { Link } from '../link/link.ts';
import type { Modem, ReceivedFrameMeta } from '../modem/modem.ts';
import { TransparentModem } from '../modem/transparent/transparent-modem.ts';
import { exactLoraBandwidthHz, loraAirtimeMs, type LoraParams } from '../scheduler/airtime.ts';
import { resolveChannel, getRegion, type ResolvedChannel } from '../scheduler/regions.ts';
import { TxQueue, coapAckTimeoutMs, DutyCycleError, type Priority } from '../scheduler/tx-queue.ts';
import { ChannelAccess } from '../scheduler/channel-access.ts';
import { LINK_ADDRESS_BYTES, addressFrame, otherNetworkMode, readAddress, type Direction } from './link-address.ts';
import { toHex } from '../util/bytes.ts';

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

export interface StateStore<T> {
  load(): T | undefined;
  save(value: T): void;
}

/** This radio's transmissions that still count against the duty cycle, per sub-band. */
export interface AirtimeState {
  version: 1;
  subBandId: string;
  /** [startMs, airtimeMs], oldest first. */
  entries: [number, number][];
}

/** Shares of the hourly budget: sync and bulk together ≤ 90 % (ACKs and requests always find room), bulk ≤ 50 %. */
const SYNC_SHARE = 0.9;
const BULK_SHARE = 0.5;
/**
 * The share of the hourly airtime budget that answers to frames proving nothing about their
 * sender (XX2, FB1, REFUSED, UNKNOWN_SESSION) may use: strangers in radio range cannot spend
 * more than this of the gateway's legal airtime (SecureLink's `unauthenticatedReplies`).
 */
export const UNAUTHENTICATED_REPLY_SHARE = 0.02;
/** At most this many such replies back to back (a genuine first contact needs one or two). */
const UNAUTHENTICATED_REPLY_BURST = 4;

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

/**
 * The token bucket for replies to unauthenticated frames: UNAUTHENTICATED_REPLY_SHARE of the
 * tightest hourly budget, in replies of `replyAirtimeMs` (an XX2/FB1). Without airtime rules (a
 * cable) the share is of the hour itself.
 */
export function unauthenticatedReplyBudget(channel: ResolvedChannel | undefined, replyAirtimeMs: number): { burst: number; refillMs: number } {
  let perHourMs = 3_600_000;
  for (const l of channel?.rules.limits ?? []) perHourMs = Math.min(perHourMs, (l.budgetMs / l.windowMs) * 3_600_000);
  const repliesPerHour = (perHourMs * UNAUTHENTICATED_REPLY_SHARE) / Math.max(1, replyAirtimeMs);
  return { burst: UNAUTHENTICATED_REPLY_BURST, refillMs: Math.max(1000, Math.ceil(3_600_000 / repliesPerHour)) };
}

/** Where this station sits on a shared channel: the kit's own address, or the gateway serving many. */
export type StationAddressing =
  | { role: 'kit'; address: number }
  | { role: 'gateway' };

export interface StationOptions {
  device?: string;
  /** Use this link instead of opening `device` (tests, KISS over TCP). */
  link?: Link;
  /** Build the modem dialect on the link (default: the transparent serial radio). */
  createModem?: (link: Link) => Modem;
  baudRate: number;
  maxFrameLen: number;
  radio: RadioSettings;
  logger: Logger;
  clock?: Clock;
  randomBytes?: RandomBytes;
  /** Durable storage for this radio's recent transmissions: a restart keeps the duty cycle it used. */
  airtimeStore?: StateStore<AirtimeState>;
  /**
   * Medium access (scheduler/channel-access.ts): 'auto' (default: on for a radio channel or a
   * modem that can sense), 'on', 'off', or 'timing' (on, without sensing even where the modem
   * could: what a dialect that cannot sense gets; for measurements).
   */
  channelAccess?: 'auto' | 'on' | 'off' | 'timing';
  /** Omitted: a point-to-point link, frames carry no address. */
  addressing?: StationAddressing;
  /** A point-to-point gateway: a shared-channel kit's handshake it hears is named as a --network mismatch. */
  answersKits?: boolean;
  /** Bytes a peer stack adds to each of its messages (the security envelope), for the access layer's answer window. */
  securityOverhead: number;
}

/** A frame heard, with the address it carried (shared channel) and the radio's metadata. */
export interface HeardFrame {
  /** The kit the frame is from (gateway) or for (kit); undefined on a point-to-point link. */
  address: number | undefined;
  /** The frame after the address byte. */
  frame: Uint8Array;
  /** Airtime it took, ms. */
  airtimeMs: number;
  meta: ReceivedFrameMeta | undefined;
}

export interface Station {
  link: Link;
  modem: Modem;
  channel: ResolvedChannel | undefined;
  lora: Omit<LoraParams, 'payloadBytes'>;
  clock: Clock;
  randomBytes: RandomBytes;
  log: Logger;
  addressing: StationAddressing | undefined;
  /** Bytes of a frame a peer stack may fill (the address byte, if any, is the station's). */
  maxFrameLen: number;
  /** Airtime of a peer frame of this many bytes as the radio sends it (address byte and modem framing included). */
  airtimeOf(frameLen: number, frame?: Uint8Array): number;
  /** Serial-line bytes the modem adds to carry a frame of this many on-air bytes. */
  wireBytes(onAirLen: number): number;
  /** How long a new interactive frame of `len` bytes would wait for the duty cycle, ms (an hour when it never fits). */
  waitFor(len: number): number;
  /** How long the medium-access rules would hold a frame now, ms. */
  accessWaitMs(): number;
  /** Retransmit timeout of a frame of `len` bytes to which the answer may be a largest frame. */
  ackTimeoutMs(len: number, answerLen?: number): number;
  /** Queue a frame for `peer` ('' on a point-to-point link; the kit's address on a gateway). */
  /** Queue a frame for `peer`; `onSettled` runs once it went on air or was given up (refused, pushed out, failed). */
  transmit(frame: Uint8Array, priority: Priority, expectsAnswer: boolean, peer: string, onSettled?: () => void): void;
  /** Every frame heard that is for this station (a kit drops other kits' frames before this). */
  onFrame(listener: (f: HeardFrame) => void): void;
  /** The reply budget for unauthenticated frames, sized to this channel. */
  unauthenticatedReplies: { burst: number; refillMs: number };
  txQueue: TxQueue | undefined;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

/** Turn a hex/decimal peer key of the queue back into an address. */
const addressOfPeer = (peer: string | undefined): number | undefined => (peer === undefined || peer === '' ? undefined : Number(peer));

export async function openStation(opts: StationOptions): Promise<Station> {
  const log = opts.logger.child({ component: 'radio' });
  const clock = opts.clock ?? systemClock;
  const dropGate = throttle(60_000, () => clock.now());
  const warnDrop = (key: string, fields: Record<string, unknown>, msg: string): void =>
    dropGate(key, (suppressed) => log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg));
  const randomBytes: RandomBytes = opts.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n)));
  const { channel, lora } = resolveRadio(opts.radio);
  const addressing = opts.addressing;
  const addrBytes = addressing ? LINK_ADDRESS_BYTES : 0;
  const link = opts.link ?? await openSerialLink(opts.device ?? '', { baudRate: opts.baudRate });
  const modem: Modem = opts.createModem ? opts.createModem(link) : new TransparentModem(link, { maxFrameLen: opts.maxFrameLen });
  /** Airtime of what the radio transmits for `len` bytes on air (the framing a transparent radio sends counts). */
  const airtimeOnAir = (len: number, frame?: Uint8Array): number => {
    const onAir = len + modem.framingOverhead(frame ?? new Uint8Array(len)).onAir;
    return loraAirtimeMs({ ...lora, payloadBytes: Math.min(onAir, 255) }) * Math.max(1, Math.ceil(onAir / 255));
  };
  /** A peer frame of `len` bytes: plus the address byte. */
  const airtimeOf = (len: number, frame?: Uint8Array): number => airtimeOnAir(len + addrBytes, frame && addrBytes ? undefined : frame);
  const maxFrameLen = legalMaxFrameLen(Math.min(opts.maxFrameLen, modem.capabilities.maxFrameLen), channel, airtimeOnAir) - addrBytes;
  const wireBytes = (onAirLen: number): number => { const o = modem.framingOverhead(new Uint8Array(onAirLen + addrBytes)); return onAirLen + addrBytes + o.onAir + o.serial; };
  let sendErrors = 0;
  let dutyCycleRefusals = 0;
  let addressDrops = 0;
  let notForUs = 0;
  let framesForUs = 0;
  const frameListeners: ((f: HeardFrame) => void)[] = [];

  // The duty cycle used before a restart still counts (same sub-band only: each has its own budget).
  let history: { startMs: number; airtimeMs: number }[] = [];
  if (channel && opts.airtimeStore) {
    const a = opts.airtimeStore.load();
    if (a && a.version === 1 && a.subBandId === channel.rules.subBandId && Array.isArray(a.entries)) {
      history = a.entries.filter((e) => Array.isArray(e) && e.length === 2).map(([startMs, airtimeMs]) => ({ startMs, airtimeMs }));
      if (history.length > 0) log.info({ transmissions: history.length, subBand: a.subBandId }, 'airtime of the last hour before the restart still counts against the duty cycle');
    }
  }
  let airtimeSave: ReturnType<typeof setTimeout> | undefined;
  const saveAirtimeNow = (): void => {
    if (airtimeSave) { clearTimeout(airtimeSave); airtimeSave = undefined; }
    if (!opts.airtimeStore || !channel || !txQueue) return;
    try {
      opts.airtimeStore.save({ version: 1, subBandId: channel.rules.subBandId, entries: txQueue.airtimeHistory().map((e) => [e.startMs, e.airtimeMs]) });
    } catch (e) {
      log.error({ err: (e as Error).message }, 'could not persist the airtime ledger: a restart now would not know the duty cycle used');
    }
  };
  // After the queue has amended the entry with the measured airtime (it does so when transmit resolves).
  const persistAirtime = (): void => {
    if (!opts.airtimeStore || !channel || airtimeSave) return;
    airtimeSave = setTimeout(saveAirtimeNow, 0);
  };

  // The address byte goes in front of the frame the queue packed (one peer per frame).
  const direction: Direction = addressing?.role === 'gateway' ? 'down' : 'up';
  const onAirFrame = (frame: Uint8Array, peer: string | undefined): Uint8Array => {
    if (!addressing) return frame;
    const address = addressing.role === 'kit' ? addressing.address : addressOfPeer(peer);
    if (address === undefined || !Number.isInteger(address)) throw new TrickleError('ERR_CONFIG', 'net', `a frame for the shared channel has no kit address (peer ${JSON.stringify(peer)})`);
    return addressFrame(address, direction, frame);
  };

  // ── medium access: on for a radio channel or a modem that can sense, off for a cable ──
  const accessMode = opts.channelAccess ?? 'auto';
  const canSense = accessMode !== 'timing' && modem.capabilities.channelSense === 'host' && typeof modem.senseChannel === 'function';
  const access = accessMode === 'on' || accessMode === 'timing' || (accessMode === 'auto' && (channel !== undefined || canSense)) ? new ChannelAccess({
    clock,
    random: () => { const r = randomBytes(4); return ((((r[0] ?? 0) << 24) >>> 0) + ((r[1] ?? 0) << 16) + ((r[2] ?? 0) << 8) + (r[3] ?? 0)) / 2 ** 32; },
    symbolMs: (2 ** lora.sf / exactLoraBandwidthHz(lora.bandwidthHz)) * 1000,
    frameAirtimeMs: (n) => airtimeOf(n),
    maxFrameLen,
    ...(canSense ? { sense: () => modem.senseChannel!() } : {}),
    // The peer starts its answer within its CoAP piggyback window (the endpoint's default: half
    // the ACK timeout of a small message), or at once for an ACK or a handshake reply.
    answerDelayMs: () => coapAckTimeoutMs({ ownWaitMs: 0, ownAirtimeMs: airtimeOf(12 + opts.securityOverhead), ackAirtimeMs: airtimeOf(maxFrameLen) }) / 2,
    sendEndsAtTxDone: modem.capabilities.reportsAirtime,
  }) : undefined;
  const accessWaitMs = (): number => access?.expectedWaitMs() ?? 0;

  const txQueue: TxQueue | undefined = channel ? new TxQueue({
    clock,
    rules: channel.rules,
    maxFrameLen,
    frameAirtimeMs: (n) => airtimeOf(n),
    classShares: { sync: SYNC_SHARE, bulk: BULK_SHARE },
    history,
    ...(access ? { access } : {}),
    transmit: async (frame: Uint8Array, peer?: string) => {
      const out = onAirFrame(frame, peer);
      let report: { airtimeMs?: number };
      try {
        report = await modem.send(out);
      } finally {
        persistAirtime();
      }
      const airtimeMs = Math.max(airtimeOnAir(out.length, out), report.airtimeMs ?? 0);
      // A modem that reports transmit-done resolves when the frame has left: it is counted up to now.
      return modem.capabilities.reportsAirtime ? { airtimeMs, endedAtMs: clock.now() } : { airtimeMs };
    },
  }) : undefined;

  const waitFor = (len: number): number => {
    if (!txQueue) return 0;
    try { return txQueue.estimateWaitMs(len, 'interactive'); } catch { return 3_600_000; }
  };

  // Without a ledger (no airtime rules) frames go one by one through the access rules alone.
  let accessChain: Promise<unknown> = Promise.resolve();
  const sendThroughAccess = (frame: Uint8Array, expectsAnswer: boolean): Promise<unknown> => {
    if (!access) return modem.send(frame);
    const run = accessChain.then(async () => {
      await access.acquire();
      access.started({ frameLen: frame.length, airtimeMs: airtimeOnAir(frame.length, frame), expectsAnswer });
      try {
        const r = await modem.send(frame);
        access.finished(true);
        return r;
      } catch (e) {
        access.finished(false);
        throw e;
      }
    });
    accessChain = run.catch(() => undefined);
    return run;
  };

  const transmit = (frame: Uint8Array, priority: Priority, expectsAnswer: boolean, peer: string, onSettled?: () => void): void => {
    let done: Promise<unknown>;
    try {
      done = txQueue ? txQueue.enqueue(frame, { priority, expectsAnswer, peer }) : sendThroughAccess(onAirFrame(frame, peer), expectsAnswer);
    } catch (e) { done = Promise.reject(e); }
    if (onSettled) done.then(onSettled, onSettled);
    done.catch((e: unknown) => {
      // Throttled (a report a minute per reason, with the count): strangers in range can make
      // the gateway refuse or push out frames as fast as they can send; the counters keep all.
      if (e instanceof DutyCycleError) { dutyCycleRefusals++; warnDrop('tx:duty-cycle', { code: e.code, waitMs: e.retryAfterMs, len: frame.length }, 'frame held back by the duty cycle'); return; }
      sendErrors++;
      const code = (e as { code?: string }).code;
      warnDrop(`tx:${code ?? 'error'}`, { code, len: frame.length, err: (e as Error).message }, 'frame not sent');
    });
  };

  /**
   * A frame shaped like the handshake of a kit in the other network mode, heard twice: a kit
   * repeats its unanswered handshake byte for byte, while no two genuine frames are alike (each
   * has a fresh nonce), so the second copy names the mismatch with its fix (counted, logged at
   * most once a minute). The frame itself goes on as usual.
   */
  let networkMismatch = 0;
  const mismatchCandidates: string[] = [];
  const mismatch = (raw: Uint8Array, shared: boolean): void => {
    const fix = otherNetworkMode(raw, shared);
    if (fix === undefined) return;
    const id = toHex(raw.subarray(0, 34));
    if (!mismatchCandidates.includes(id)) {
      mismatchCandidates.push(id);
      if (mismatchCandidates.length > 8) mismatchCandidates.shift();
      return;
    }
    networkMismatch++;
    dropGate('network-mode', (suppressed) => log.error({ code: 'ERR_NETWORK_MODE', len: raw.length, ...(suppressed > 0 ? { suppressed } : {}) }, fix));
  };
  modem.onFrame((raw, meta) => {
    const airtimeMs = airtimeOnAir(raw.length, raw);
    let address: number | undefined;
    let frame = raw;
    if (addressing) {
      let a;
      try { a = readAddress(raw); } catch (e) {
        addressDrops++;
        access?.heard(raw.length, { airtimeMs, addressedToUs: false });
        warnDrop('address', { code: (e as TrickleError).code, len: raw.length }, 'frame dropped: no link address');
        return;
      }
      // A kit takes downlinks for its own address; a gateway takes every uplink.
      const ours = addressing.role === 'kit' ? a.direction === 'down' && a.address === addressing.address : a.direction === 'up';
      access?.heard(raw.length, { airtimeMs, addressedToUs: ours });
      if (!ours) {
        notForUs++;
        if (addressing.role === 'gateway') mismatch(raw, true);
        return;
      }
      address = a.address;
      frame = a.frame;
    } else {
      // First: a frame heard opens the answer slot before whatever it makes us send is queued.
      access?.heard(raw.length, { airtimeMs });
      if (opts.answersKits === true) mismatch(raw, false);
    }
    framesForUs++;
    for (const l of frameListeners) l({ address, frame, airtimeMs, meta });
  });
  modem.onDrop((code, detail) => {
    if (code === 'ERR_AX25_NOT_OURS') log.debug({ code, ...detail }, 'frame for another station');
    else warnDrop(`modem:${code}`, { code, ...detail }, 'frame dropped');
  });
  modem.onClose((err) => {
    if (err) log.error({ code: (err as { code?: string }).code, port: link.name, err: err.message }, 'serial device closed');
  });
  if (channel) log.info({ band: channel.rules.subBandId, freqHz: channel.freqHz, dutyCycle: channel.rules.dutyCycle, regulation: channel.rules.regulation }, 'radio channel');

  return {
    link, modem, channel, lora, clock, randomBytes, log, addressing, maxFrameLen, txQueue,
    airtimeOf, wireBytes, waitFor, accessWaitMs, transmit,
    // On a shared channel (addressing) the peer's answer also waits for its turn on the channel.
    ackTimeoutMs: (len, answerLen) => coapAckTimeoutMs({
      ownWaitMs: waitFor(len) + accessWaitMs(), ownAirtimeMs: airtimeOf(len), ackAirtimeMs: airtimeOf(answerLen ?? maxFrameLen),
      ...(addressing && access ? { peerWaitMs: access.contentionWaitMs() } : {}),
    }),
    onFrame: (l) => { frameListeners.push(l); },
    unauthenticatedReplies: unauthenticatedReplyBudget(channel, airtimeOf(97)),
    status: () => ({
      device: link.name,
      dialect: modem.dialect,
      channel: channel ? { region: channel.regionId, freqHz: channel.freqHz, bandwidthHz: channel.bandwidthHz, subBand: channel.rules.subBandId } : { region: 'none' },
      lora,
      addressing: addressing ? (addressing.role === 'kit' ? { shared: true, address: addressing.address } : { shared: true, role: 'gateway' }) : { shared: false },
      maxFrameLen,
      modem: modem.stats(),
      dutyCycle: txQueue ? txQueue.status() : null,
      channelAccess: access ? access.stats() : null,
      sendErrors,
      dutyCycleRefusals,
      /** Frames heard that were for this station (the others are counted in notForUs). */
      framesForUs,
      ...(addressing ? { addressDrops, notForUs } : {}),
      ...(networkMismatch > 0 ? { networkMismatch } : {}),
    }),
    async close() {
      saveAirtimeNow();
      txQueue?.close();
      await modem.close();
    },
  };
}
