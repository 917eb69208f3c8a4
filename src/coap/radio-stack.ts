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
 *
 * Medium access (scheduler/channel-access.ts) sits in the transmit path, after the duty-cycle
 * ledger: receive windows after a CON or a handshake message, an answer slot after a frame is
 * heard, random inter-frame spaces, and listen-before-talk where the modem can sense
 * (`capabilities.channelSense === 'host'`). 'auto' (default) turns it on for a radio channel
 * (a region other than 'none') and for any modem that can sense; a cable ('none', no sensing)
 * goes without.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { throttle } from '../util/throttle.ts';
import { systemClock, type Clock, type RandomBytes } from '../util/clock.ts';
import { toHex } from '../util/bytes.ts';
import { TrickleError } from '../errors.ts';
import { openSerialLink } from '../link/serial.ts';
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import { TransparentModem } from '../modem/transparent/transparent-modem.ts';
import { exactLoraBandwidthHz, loraAirtimeMs, type LoraParams } from '../scheduler/airtime.ts';
import { resolveChannel, getRegion, type ResolvedChannel } from '../scheduler/regions.ts';
import { TxQueue, coapAckTimeoutMs, DutyCycleError, type Priority } from '../scheduler/tx-queue.ts';
import { DutyCycleLedger } from '../scheduler/duty-cycle.ts';
import { ChannelAccess } from '../scheduler/channel-access.ts';
import { unpackFrame } from '../scheduler/packing.ts';
import { CoapEndpoint, type CoapRequestInit, type CoapResponse, type RequestHandler, type RequestOptions } from './endpoint.ts';
import { compactWireCodec, createCompactContext, type CompactContext } from './compact.ts';
import { rfc7252Codec, type CoapMessage, type WireCodec } from './message.ts';
import { Opt } from './numbers.ts';
import { SecureLink, LINK_FRAME_OVERHEAD, FrameKind, type SecureLinkOptions, type SecureLinkEvent, type SecureLinkSnapshot } from '../secure/secure-link.ts';
import type { KeyPair } from '../secure/dh.ts';
import { CBOR_KEYMAP_V1_VERSION } from '../codec/keymap-v1.ts';
import { COAP_PATH_ENUM_VERSION } from '../codec/paths-v1.ts';
import { VALUES_V1_VERSION } from '../codec/values-v1.ts';
import { COMPACT_RULES_VERSION } from './compact-rules-v1.ts';
import { dictionaryContext } from '../codec/dictionary.ts';

/**
 * Everything both ends must share to read each other's messages. It is bound into the Noise
 * prologue, so two ends with different tables cannot complete a handshake; both log it.
 */
export const WIRE_CONTEXT = `msc3079-keys-v${CBOR_KEYMAP_V1_VERSION} msc3079-paths-v${COAP_PATH_ENUM_VERSION} values-v${VALUES_V1_VERSION} compact-v${COMPACT_RULES_VERSION} ${dictionaryContext()}`;

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
/**
 * The share of the hourly airtime budget that answers to frames proving nothing about their
 * sender (XX2, FB1, REFUSED, UNKNOWN_SESSION) may use: strangers in radio range cannot spend
 * more than this of the gateway's legal airtime (SecureLink's `unauthenticatedReplies`).
 */
export const UNAUTHENTICATED_REPLY_SHARE = 0.02;
/** At most this many such replies back to back (a genuine first contact needs one or two). */
const UNAUTHENTICATED_REPLY_BURST = 4;

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
  /** On-air CoAP form: the compact form (default) or plain RFC 7252 (for comparison and debugging). */
  codec?: 'compact' | 'rfc7252';
  /** Noise security (on by default in the apps); omitted only for tests and benches of the layers above. */
  security?: SecuritySettings;
  /** Durable storage for the CoAP session (sequence numbers, compact context), so a restart resumes. */
  coapStateStore?: StateStore<CoapSessionState>;
  /** Durable storage for this radio's recent transmissions: a restart keeps the duty cycle it used. */
  airtimeStore?: StateStore<AirtimeState>;
  /**
   * Medium access (see the header): 'auto' (default), 'on', 'off', or 'timing' (on, but without
   * sensing even where the modem could: what a dialect that cannot sense gets; for measurements).
   */
  channelAccess?: 'auto' | 'on' | 'off' | 'timing';
}

/** This radio's transmissions that still count against the duty cycle, per sub-band. */
export interface AirtimeState {
  version: 1;
  subBandId: string;
  /** [startMs, airtimeMs], oldest first. */
  entries: [number, number][];
}

export interface SecuritySettings {
  role: SecureLinkOptions['role'];
  staticKeyPair: KeyPair;
  remoteStaticPinned?: Uint8Array;
  isAuthorized?: (remoteStatic: Uint8Array) => string | undefined;
  /** 'encrypt' (default) or 'authenticate' (cleartext, authenticated: for amateur bands). */
  mode: SecureLinkOptions['mode'];
  persist?: (snapshot: SecureLinkSnapshot) => void;
  restore?: SecureLinkSnapshot;
  onEvent?: (e: SecureLinkEvent) => void;
}

export interface StateStore<T> {
  load(): T | undefined;
  save(value: T): void;
}

/** What a restart needs to go on with the same CoAP session: tokens never repeat, LSBs decode. */
export interface CoapSessionState {
  version: 1;
  nextSequence: number;
  compact: { txHi: number; txLo: number; txTokenHi: number; rxRef: number; rxTokenHi: number } | null;
}

export interface FrameRecord {
  direction: 'tx' | 'rx';
  /** The CoAP message in its on-air form (compact or RFC 7252), before security. */
  compactBytes: number;
  /** What the radio transmits for it: the message plus the security envelope. */
  onAirBytes: number;
  /** What crossed the serial line for it: on-air bytes plus the modem's framing. */
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
  /** The current CoAP endpoint; a new secure session replaces it (use request/onRequest). */
  readonly endpoint: CoapEndpoint;
  secure: SecureLink | undefined;
  /** True when this start resumed the stored link session (the layers above may resume theirs). */
  resumed: boolean;
  request(req: CoapRequestInit, opts?: RequestOptions): Promise<CoapResponse>;
  onRequest(handler: RequestHandler): void;
  /** A new link session began (new handshake): per-session state above must start afresh. */
  onSessionReset(listener: () => void): void;
  /** Frames with the security layer's control kinds (handshakes), both directions; `kind` is their first byte. */
  onControlFrame(listener: (direction: 'tx' | 'rx', onAirBytes: number, kind: number) => void): void;
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
  /**
   * The highest sequence number S decoded from the peer in this link session (compact codec:
   * the peer numbers every message it originates; undefined with the RFC 7252 codec or before
   * anything arrived). The gateway uses it to notice a field kit whose numbering went back.
   */
  peerSequence(): number | undefined;
  /** The peer's authenticated static key (security on and a session up), else null. */
  peerStatic(): Uint8Array | null;
  status(): Record<string, unknown>;
  close(): Promise<void>;
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

/** Handshake messages that the peer answers (XX1→XX2, XX2→XX3, IK1→IK2, FB1→FB2; XX3 and FB2 carry the first request). */
const SOLICITING_KINDS: ReadonlySet<number> = new Set([FrameKind.XX1, FrameKind.XX2, FrameKind.XX3, FrameKind.IK1, FrameKind.FB1, FrameKind.FB2]);

/** Scheduler class of an outgoing CoAP message, read from the message itself. */
export function priorityOfMessage(msg: CoapMessage): Priority {
  if (msg.code === 0 || msg.type === 3) return 'control'; // empty ACK, RST
  for (const o of msg.options) {
    if ((o.number === Opt.BLOCK1 || o.number === Opt.BLOCK2) && o.value.length > 0) {
      let v = 0;
      for (const b of o.value) v = (v << 8) | b;
      if (v >> 4 > 0) return 'bulk';
    }
  }
  return 'interactive';
}

export async function openRadioStack(opts: RadioStackOptions): Promise<RadioStack> {
  const log = opts.logger.child({ component: 'radio' });
  // Drops are caused by whatever is on the air: each reason is logged at most once a minute
  // (the counters on the status page have every one).
  const dropGate = throttle(60_000, () => clock.now());
  const warnDrop = (key: string, fields: Record<string, unknown>, msg: string): void =>
    dropGate(key, (suppressed) => log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg));
  const clock = opts.clock ?? systemClock;
  const randomBytes: RandomBytes = opts.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n)));
  const { channel, lora } = resolveRadio(opts.radio);
  const link = opts.link ?? await openSerialLink(opts.device ?? '', { baudRate: opts.baudRate });
  const modem: Modem = opts.createModem ? opts.createModem(link) : new TransparentModem(link, { maxFrameLen: opts.maxFrameLen });
  const modemOverhead = (frame: Uint8Array) => modem.framingOverhead(frame);
  /** Airtime of a frame as the radio transmits it (the framing a transparent radio sends counts). */
  const airtimeOf = (frameLen: number, frame?: Uint8Array): number => {
    const onAir = frameLen + modemOverhead(frame ?? new Uint8Array(frameLen)).onAir;
    return loraAirtimeMs({ ...lora, payloadBytes: Math.min(onAir, 255) }) * Math.max(1, Math.ceil(onAir / 255));
  };
  const maxFrameLen = legalMaxFrameLen(Math.min(opts.maxFrameLen, modem.capabilities.maxFrameLen), channel, airtimeOf);
  const securityOverhead = opts.security ? LINK_FRAME_OVERHEAD : 0;
  const listeners: ((rec: FrameRecord) => void)[] = [];
  const controlListeners: ((direction: 'tx' | 'rx', onAirBytes: number, kind: number) => void)[] = [];
  const resetListeners: (() => void)[] = [];
  const emit = (rec: FrameRecord) => { for (const l of listeners) l(rec); };
  let sendErrors = 0;
  let containerDrops = 0;
  let dutyCycleRefusals = 0;
  let sessionResets = 0;

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
    answerDelayMs: () => coapAckTimeoutMs({ ownWaitMs: 0, ownAirtimeMs: airtimeOf(12 + securityOverhead), ackAirtimeMs: airtimeOf(maxFrameLen) }) / 2,
    sendEndsAtTxDone: modem.capabilities.reportsAirtime,
  }) : undefined;
  const accessWaitMs = (): number => access?.expectedWaitMs() ?? 0;

  const txQueue = channel ? new TxQueue({
    clock,
    rules: channel.rules,
    maxFrameLen,
    frameAirtimeMs: (n) => airtimeOf(n),
    classShares: { sync: SYNC_SHARE, bulk: BULK_SHARE },
    history,
    ...(access ? { access } : {}),
    transmit: async (frame) => {
      let report: { airtimeMs?: number };
      try {
        report = await modem.send(frame);
      } finally {
        persistAirtime();
      }
      const airtimeMs = Math.max(airtimeOf(frame.length, frame), report.airtimeMs ?? 0);
      // A modem that reports transmit-done resolves when the frame has left: it is counted up to now.
      return modem.capabilities.reportsAirtime ? { airtimeMs, endedAtMs: clock.now() } : { airtimeMs };
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

  // Without a ledger (no airtime rules) frames go one by one through the access rules alone.
  let accessChain: Promise<unknown> = Promise.resolve();
  const sendThroughAccess = (frame: Uint8Array, expectsAnswer: boolean): Promise<unknown> => {
    if (!access) return modem.send(frame);
    const run = accessChain.then(async () => {
      await access.acquire();
      access.started({ frameLen: frame.length, airtimeMs: airtimeOf(frame.length, frame), expectsAnswer });
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

  const transmit = (frame: Uint8Array, priority: Priority, expectsAnswer: boolean): void => {
    if (frame[0]! >= 0x80 && opts.security) for (const l of controlListeners) l('tx', frame.length, frame[0]!);
    const done = txQueue ? txQueue.enqueue(frame, { priority, expectsAnswer }) : sendThroughAccess(frame, expectsAnswer);
    done.catch((e: unknown) => {
      if (e instanceof DutyCycleError) { dutyCycleRefusals++; log.warn({ code: e.code, waitMs: e.retryAfterMs, len: frame.length }, 'frame held back by the duty cycle'); return; }
      sendErrors++;
      log.warn({ code: (e as { code?: string }).code, len: frame.length, err: (e as Error).message }, 'frame not sent');
    });
  };

  // ── CoAP session: endpoint + on-air codec, persisted so a restart resumes ──
  const saved = opts.coapStateStore?.load();
  let compactCtx: CompactContext | undefined;
  let endpoint!: CoapEndpoint;
  let handler: RequestHandler | undefined;
  /** Priority of the message being encoded right now (security hides the CoAP header below us). */
  let currentPriority: Priority = 'interactive';
  /** Whether that message asks the peer for an answer (a CON): its frame opens a receive window. */
  let currentExpectsAnswer = false;
  let lastTx: { type: number; mid: number; tokenHex: string } | undefined;

  const persistCoap = (): void => {
    if (!opts.coapStateStore) return;
    const c = compactCtx;
    opts.coapStateStore.save({
      version: 1,
      nextSequence: endpoint.nextSequence,
      compact: c ? { txHi: c.tx.hi, txLo: c.tx.lo, txTokenHi: c.tx.tokenHi, rxRef: c.rx.ref, rxTokenHi: c.rx.tokenHi } : null,
    });
  };

  const makeEndpoint = (resume: CoapSessionState | undefined, sequenceStart?: number): void => {
    let inner: WireCodec;
    if (opts.codec === 'rfc7252') {
      compactCtx = undefined;
      inner = rfc7252Codec;
    } else {
      compactCtx = createCompactContext();
      if (resume?.compact) {
        const r = resume.compact;
        compactCtx.tx.hi = r.txHi; compactCtx.tx.lo = r.txLo; compactCtx.tx.tokenHi = r.txTokenHi;
        compactCtx.rx.ref = r.rxRef; compactCtx.rx.tokenHi = r.rxTokenHi;
      } else if (sequenceStart !== undefined) {
        // Our numbering goes on from sequenceStart, the peer's context knows nothing yet: the
        // codec must place our messages (a retry's mid, a response's) near our own numbers,
        // while `lo` stays at the start so the first messages go with their full S until one is
        // acknowledged.
        compactCtx.tx.hi = (sequenceStart - 1) >>> 0;
        compactCtx.tx.tokenHi = compactCtx.tx.hi;
      }
      inner = compactWireCodec(compactCtx);
    }
    const codec: WireCodec = {
      ...(inner.sizeBound ? { sizeBound: (m: CoapMessage) => inner.sizeBound!(m) + securityOverhead } : {}),
      encode: (msg) => {
        const bytes = inner.encode(msg);
        currentPriority = priorityOfMessage(msg);
        currentExpectsAnswer = msg.type === 0; // CON
        lastTx = { type: msg.type, mid: msg.mid, tokenHex: toHex(msg.token) };
        return bytes;
      },
      decode: (bytes) => {
        const msg = inner.decode(bytes);
        const onAir = bytes.length + securityOverhead;
        emit({ direction: 'rx', compactBytes: bytes.length, onAirBytes: onAir, wireBytes: onAir + modemOverhead(new Uint8Array(onAir)).onAir + modemOverhead(new Uint8Array(onAir)).serial, type: msg.type, mid: msg.mid, tokenHex: toHex(msg.token) });
        persistCoap();
        return msg;
      },
    };
    const previous = endpoint as CoapEndpoint | undefined;
    endpoint = new CoapEndpoint({
      clock,
      randomBytes,
      maxFrameLen: maxFrameLen - securityOverhead,
      wireCodec: codec,
      // Sequence numbers (hence request tokens, hence the gateway's homeserver txn ids) go on
      // across link sessions for the life of this end's state: a client's retry of a transaction
      // after a new handshake keeps its token, so the homeserver de-duplicates it.
      ...(resume ? { sequenceStart: resume.nextSequence } : sequenceStart !== undefined ? { sequenceStart } : {}),
      ackTimeoutMs: (frameLen) => coapAckTimeoutMs({
        ownWaitMs: waitFor(frameLen + securityOverhead) + accessWaitMs(),
        ownAirtimeMs: airtimeOf(frameLen + securityOverhead),
        ackAirtimeMs: airtimeOf(maxFrameLen),
      }),
      maxBodyBytes: opts.maxBodyBytes,
      send: (bytes) => {
        const info = lastTx ?? { type: 0, mid: 0, tokenHex: '' };
        const onAir = bytes.length + securityOverhead;
        emit({ direction: 'tx', compactBytes: bytes.length, onAirBytes: onAir, wireBytes: onAir + modemOverhead(new Uint8Array(onAir)).onAir + modemOverhead(new Uint8Array(onAir)).serial, ...info });
        persistCoap();
        const priority = currentPriority;
        if (secure) secure.send(bytes);
        else transmit(bytes, priority, currentExpectsAnswer);
      },
    });
    endpoint.onDrop((d) => warnDrop(`coap:${d.reason}`, { code: d.reason, len: d.frameLen, err: d.error?.message }, 'CoAP message dropped'));
    if (handler) endpoint.onRequest(handler);
    previous?.close();
  };

  const resetSession = (why: string): void => {
    sessionResets++;
    log.info({ why }, 'new link session: CoAP and Matrix session state start afresh');
    makeEndpoint(undefined, endpoint.nextSequence);
    persistCoap();
    for (const l of resetListeners) l();
  };

  let secure: SecureLink | undefined;
  if (opts.security) {
    const sec = opts.security;
    secure = new SecureLink({
      role: sec.role,
      staticKeyPair: sec.staticKeyPair,
      ...(sec.remoteStaticPinned ? { remoteStaticPinned: sec.remoteStaticPinned } : {}),
      ...(sec.isAuthorized ? { isAuthorized: sec.isAuthorized } : {}),
      mode: sec.mode,
      wireContext: WIRE_CONTEXT,
      clock,
      randomBytes,
      maxFrameLen,
      handshakeRetryMs: (len) => coapAckTimeoutMs({ ownWaitMs: waitFor(len) + accessWaitMs(), ownAirtimeMs: airtimeOf(len), ackAirtimeMs: airtimeOf(97) }),
      unauthenticatedReplies: unauthenticatedReplyBudget(channel, airtimeOf(97)),
      send: (frame) => frame[0]! & 0x80
        ? transmit(frame, 'control', SOLICITING_KINDS.has(frame[0]!))
        : transmit(frame, currentPriority, currentExpectsAnswer),
      deliver: (plaintext) => endpoint.receive(plaintext),
      onEvent: (e) => {
        // A new handshake on the gateway side starts a new session before its 0-RTT payload is
        // delivered; on the field kit, a lost session means the peer starts afresh too.
        if (e.type === 'established' && sec.role === 'responder') resetSession(`${e.pattern} handshake with ${e.fingerprint}`);
        if (e.type === 'session-lost' && sec.role === 'initiator') resetSession(`session lost: ${e.reason}`);
        if (e.type === 'handshake-failed') log.error({ attempts: e.attempts, wireContext: WIRE_CONTEXT }, 'handshake failed: check that the peer is running, in range, and uses the same wire context (trickle version)');
        sec.onEvent?.(e);
      },
      ...(sec.persist ? { persist: sec.persist } : {}),
      ...(sec.restore ? { restore: sec.restore } : {}),
    });
  }
  // Resume the CoAP session only together with the secure session it belongs to.
  const resumable = saved && saved.version === 1 && (!secure || secure.established) ? saved : undefined;
  const savedSequence = saved && saved.version === 1 && Number.isInteger(saved.nextSequence) && saved.nextSequence > 0 && saved.nextSequence <= 0xffffffff ? saved.nextSequence : undefined;
  // A fresh end starts its numbering at a random point: if it lost its state (but kept its key),
  // its new numbers do not repeat old ones, which the gateway's txn ids are made of.
  const randomStart = (): number => { const r = randomBytes(4); return 1 + (((((r[0] ?? 0) << 24) >>> 0) + ((r[1] ?? 0) << 16) + ((r[2] ?? 0) << 8) + (r[3] ?? 0)) % 0x3fffffff); };
  makeEndpoint(resumable, savedSequence ?? randomStart());

  modem.onFrame((frame) => {
    // First: a frame heard opens the answer slot before whatever it makes us send is queued.
    access?.heard(frame.length, { airtimeMs: airtimeOf(frame.length, frame) });
    if (peerLedger) {
      const airtimeMs = airtimeOf(frame.length, frame);
      try { peerLedger.record(clock.now() - airtimeMs, airtimeMs); } catch { /* a frame the rules forbid: nothing to mirror */ }
    }
    let messages: Uint8Array[];
    try {
      messages = unpackFrame(frame);
    } catch (e) {
      containerDrops++;
      warnDrop('container', { code: (e as TrickleError).code, len: frame.length }, 'frame dropped: bad container');
      return;
    }
    for (const m of messages) {
      if (secure) {
        if (m[0]! >= 0x80) for (const l of controlListeners) l('rx', m.length, m[0]!);
        secure.receive(m);
      } else {
        endpoint.receive(m);
      }
    }
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
    link, modem, channel, maxFrameLen, secure, resumed: resumable !== undefined,
    get endpoint() { return endpoint; },
    request: (req, ro) => endpoint.request(req, ro),
    onRequest: (h) => { handler = h; endpoint.onRequest(h); },
    onSessionReset: (l) => { resetListeners.push(l); },
    onControlFrame: (l) => { controlListeners.push(l); },
    estimateWaitMs: (len) => waitFor(len + securityOverhead),
    estimatePeerWaitMs: (len) => peerWaitFor(len + securityOverhead),
    onFrameRecord: (l) => { listeners.push(l); },
    peerSequence: () => (compactCtx && compactCtx.rx.ref > 0 ? compactCtx.rx.ref : undefined),
    peerStatic: () => secure?.remoteStatic ?? null,
    status: () => ({
      device: link.name,
      dialect: modem.dialect,
      codec: opts.codec ?? 'compact',
      wireContext: WIRE_CONTEXT,
      channel: channel ? { region: channel.regionId, freqHz: channel.freqHz, bandwidthHz: channel.bandwidthHz, subBand: channel.rules.subBandId } : { region: 'none' },
      lora,
      maxFrameLen,
      modem: modem.stats(),
      coap: { ...endpoint.stats(), nextSequence: endpoint.nextSequence },
      security: secure ? { mode: opts.security!.mode, established: secure.established, ...secure.stats() } : null,
      sessionResets,
      dutyCycle: txQueue ? txQueue.status() : null,
      channelAccess: access ? access.stats() : null,
      peerDutyCycle: peerLedger ? { heardLastHour: peerLedger.usage(clock.now()), nextAllowedSendInMs: peerWaitFor(64) } : null,
      sendErrors,
      dutyCycleRefusals,
      // Every input dropped, by layer and reason: what arrived that was noise, forged or stale.
      dropped: {
        modem: modem.stats().dropped,
        container: containerDrops,
        security: secure ? secure.stats().dropped : {},
        coap: endpoint.stats().dropped,
      },
    }),
    async close() {
      endpoint.close();
      secure?.close();
      saveAirtimeNow();
      txQueue?.close();
      await modem.close();
    },
  };
}
