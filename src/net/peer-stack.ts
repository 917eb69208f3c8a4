/**
 * PeerStack: everything one end keeps per peer, on top of a shared Station (./station.ts): the
 * security session (SecureLink), the CoAP endpoint with its on-air codec and sequence numbers,
 * and their persisted state. A field kit has one (its gateway); a gateway on a shared channel
 * has one per kit address (./peer-table.ts), so a handshake or a fault with one kit never
 * disturbs another.
 *
 * Priorities come from the CoAP message itself: empty ACK/RST → control; requests and
 * piggybacked responses → interactive; follow-up blocks of a blockwise transfer → bulk.
 * Retransmission timers are derived from the frame's airtime and the scheduler's expected
 * wait, never from CoAP's 2 s default.
 */
import type { Clock } from '../util/clock.ts';
import { toHex } from '../util/bytes.ts';
import { throttle } from '../util/throttle.ts';
import type { TrickleError } from '../errors.ts';
import { DutyCycleLedger } from '../scheduler/duty-cycle.ts';
import type { Priority } from '../scheduler/tx-queue.ts';
import { unpackFrame } from '../scheduler/packing.ts';
import { RttEstimate } from '../coap/message-layer.ts';
import { CoapEndpoint, type CoapRequestInit, type CoapResponse, type RequestHandler, type RequestOptions } from '../coap/endpoint.ts';
import { compactWireCodec, createCompactContext, type CompactContext } from '../coap/compact.ts';
import { rfc7252Codec, type CoapMessage, type WireCodec } from '../coap/message.ts';
import { Opt } from '../coap/numbers.ts';
import { SecureLink, LINK_FRAME_OVERHEAD, FrameKind, type SecureLinkOptions, type SecureLinkEvent, type SecureLinkSnapshot, type ReplyBudget } from '../secure/secure-link.ts';
import type { KeyPair } from '../secure/dh.ts';
import type { HeardFrame, StateStore, Station } from './station.ts';
import { formatAddress } from './link-address.ts';

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
  /** What the radio transmits for it: the message plus the security envelope (and the address byte on a shared channel). */
  onAirBytes: number;
  /** What crossed the serial line for it: on-air bytes plus the modem's framing. */
  wireBytes: number;
  /** Token of the CoAP message, hex ('' for empty messages). */
  tokenHex: string;
  /** CoAP type (0 CON, 1 NON, 2 ACK, 3 RST) and message id, for attributing empty ACKs. */
  type: number;
  mid: number;
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

export interface PeerStackOptions {
  station: Station;
  /** The queue's peer key: '' on a point-to-point link, the kit's address (decimal) on a gateway. */
  peer: string;
  /** The kit's link address on a shared channel (gateway side), for logs and status. */
  address?: number;
  maxBodyBytes: number;
  codec?: 'compact' | 'rfc7252';
  security?: SecuritySettings;
  /** One reply budget for unauthenticated frames shared by every peer stack of a station. */
  replyBudget?: ReplyBudget;
  coapStateStore?: StateStore<CoapSessionState>;
  /** Wire context bound into the Noise prologue (net/radio-stack.ts WIRE_CONTEXT). */
  wireContext: string;
}

export interface PeerStack {
  readonly endpoint: CoapEndpoint;
  secure: SecureLink | undefined;
  resumed: boolean;
  /** One frame the station heard for this peer (after the address byte). */
  receive(f: HeardFrame): void;
  request(req: CoapRequestInit, opts?: RequestOptions): Promise<CoapResponse>;
  onRequest(handler: RequestHandler): void;
  onSessionReset(listener: () => void): void;
  onControlFrame(listener: (direction: 'tx' | 'rx', onAirBytes: number, kind: number) => void): void;
  onFrameRecord(listener: (rec: FrameRecord) => void): void;
  estimatePeerWaitMs(len: number): number;
  peerSequence(): number | undefined;
  peerStatic(): Uint8Array | null;
  /** When this peer was last heard (clock ms) and how (RSSI/SNR of its last frame). */
  lastHeard(): { atMs: number; rssiDbm?: number; snrDb?: number } | undefined;
  status(): Record<string, unknown>;
  close(): void;
}

export function createPeerStack(opts: PeerStackOptions): PeerStack {
  const { station } = opts;
  const clock: Clock = station.clock;
  const randomBytes = station.randomBytes;
  const log = opts.address === undefined ? station.log : station.log.child({ kit: formatAddress(opts.address) });
  const dropGate = throttle(60_000, () => clock.now());
  const warnDrop = (key: string, fields: Record<string, unknown>, msg: string): void =>
    dropGate(key, (suppressed) => log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg));
  const maxFrameLen = station.maxFrameLen;
  const securityOverhead = opts.security ? LINK_FRAME_OVERHEAD : 0;
  const listeners: ((rec: FrameRecord) => void)[] = [];
  const controlListeners: ((direction: 'tx' | 'rx', onAirBytes: number, kind: number) => void)[] = [];
  const resetListeners: (() => void)[] = [];
  const emit = (rec: FrameRecord) => { for (const l of listeners) l(rec); };
  let containerDrops = 0;
  let sessionResets = 0;
  let heard: { atMs: number; rssiDbm?: number; snrDb?: number } | undefined;
  const addrBytes = station.addressing ? 1 : 0;

  // The peer's transmissions as we heard them, on the same rules: predicts when it can answer.
  const peerLedger = station.channel ? new DutyCycleLedger(station.channel.rules) : undefined;
  const peerWaitFor = (len: number): number => {
    if (!peerLedger) return 0;
    const now = clock.now();
    try { return Math.max(0, peerLedger.nextAllowedAt(station.airtimeOf(len), now) - now); } catch { return 3_600_000; }
  };

  // CoAP messages (type:mid) queued at the station and not yet on air. A second copy of one
  // (a retransmission, or the answer again to a request the peer repeated) while the first still
  // waits for the radio would say nothing new and spend the airtime twice: on a gateway held by
  // the duty cycle, kits repeating their requests filled its queue with copies of the same
  // answers (bench:network busy, 2026-12-05). The copy is dropped and counted.
  const unsent = new Set<string>();
  let sending: string | undefined;
  let coalesced = 0;
  const transmit = (frame: Uint8Array, priority: Priority, expectsAnswer: boolean): void => {
    if (frame[0]! >= 0x80 && opts.security) for (const l of controlListeners) l('tx', frame.length + addrBytes, frame[0]!);
    const key = sending;
    sending = undefined;
    // Only the transport frame that carries the message (not a handshake frame sent meanwhile).
    if (key === undefined || (opts.security && frame[0]! >= 0x80)) { station.transmit(frame, priority, expectsAnswer, opts.peer); return; }
    unsent.add(key);
    station.transmit(frame, priority, expectsAnswer, opts.peer, () => { unsent.delete(key); });
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

  const rtt = new RttEstimate();
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
        emit({ direction: 'rx', compactBytes: bytes.length, onAirBytes: onAir + addrBytes, wireBytes: station.wireBytes(onAir), type: msg.type, mid: msg.mid, tokenHex: toHex(msg.token) });
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
      ackTimeoutMs: (frameLen) => station.ackTimeoutMs(frameLen + securityOverhead),
      // The round trips measured with this peer outlive a link session: on a busy shared channel
      // a new session starts with what the last one learnt instead of retransmitting early.
      rtt,
      // A request that waits for the kit's handshake is not on air: its timer does not count.
      held: () => secure?.handshaking === true,
      maxBodyBytes: opts.maxBodyBytes,
      send: (bytes) => {
        const info = lastTx ?? { type: 0, mid: 0, tokenHex: '' };
        const key = lastTx ? `${info.type}:${info.mid}` : undefined;
        if (key !== undefined && unsent.has(key)) { coalesced++; return; }
        const onAir = bytes.length + securityOverhead;
        emit({ direction: 'tx', compactBytes: bytes.length, onAirBytes: onAir + addrBytes, wireBytes: station.wireBytes(onAir), ...info });
        persistCoap();
        const priority = currentPriority;
        // Tracked only when the frame goes to the station at once (not held for a handshake).
        sending = key;
        try {
          if (secure) secure.send(bytes);
          else transmit(bytes, priority, currentExpectsAnswer);
        } finally { sending = undefined; }
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
      wireContext: opts.wireContext,
      clock,
      randomBytes,
      maxFrameLen,
      handshakeRetryMs: (len) => station.ackTimeoutMs(len, 97),
      unauthenticatedReplies: station.unauthenticatedReplies,
      ...(opts.replyBudget ? { replyBudget: opts.replyBudget } : {}),
      send: (frame) => frame[0]! & 0x80
        ? transmit(frame, 'control', SOLICITING_KINDS.has(frame[0]!))
        : transmit(frame, currentPriority, currentExpectsAnswer),
      deliver: (plaintext) => endpoint.receive(plaintext),
      onEvent: (e) => {
        // A new handshake on the gateway side starts a new session before its 0-RTT payload is
        // delivered; on the field kit, a lost session means the peer starts afresh too.
        if (e.type === 'established' && sec.role === 'responder') resetSession(`${e.pattern} handshake with ${e.fingerprint}`);
        if (e.type === 'session-lost' && sec.role === 'initiator') resetSession(`session lost: ${e.reason}`);
        if (e.type === 'handshake-failed') log.error({ attempts: e.attempts, wireContext: opts.wireContext }, 'handshake failed: check that the peer is running, in range, and uses the same trickle version and the same --network mode (p2p or shared)');
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

  const receive = (f: HeardFrame): void => {
    heard = { atMs: clock.now(), ...(f.meta?.rssiDbm !== undefined ? { rssiDbm: f.meta.rssiDbm } : {}), ...(f.meta?.snrDb !== undefined ? { snrDb: f.meta.snrDb } : {}) };
    if (peerLedger) {
      try { peerLedger.record(clock.now() - f.airtimeMs, f.airtimeMs); } catch { /* a frame the rules forbid: nothing to mirror */ }
    }
    let messages: Uint8Array[];
    try {
      messages = unpackFrame(f.frame);
    } catch (e) {
      containerDrops++;
      warnDrop('container', { code: (e as TrickleError).code, len: f.frame.length }, 'frame dropped: bad container');
      return;
    }
    for (const m of messages) {
      if (secure) {
        if (m[0]! >= 0x80) for (const l of controlListeners) l('rx', m.length + addrBytes, m[0]!);
        secure.receive(m);
      } else {
        endpoint.receive(m);
      }
    }
  };

  return {
    secure, resumed: resumable !== undefined,
    get endpoint() { return endpoint; },
    receive,
    request: (req, ro) => endpoint.request(req, ro),
    onRequest: (h) => { handler = h; endpoint.onRequest(h); },
    onSessionReset: (l) => { resetListeners.push(l); },
    onControlFrame: (l) => { controlListeners.push(l); },
    onFrameRecord: (l) => { listeners.push(l); },
    estimatePeerWaitMs: (len) => peerWaitFor(len + securityOverhead),
    peerSequence: () => (compactCtx && compactCtx.rx.ref > 0 ? compactCtx.rx.ref : undefined),
    peerStatic: () => secure?.remoteStatic ?? null,
    lastHeard: () => heard,
    status: () => ({
      codec: opts.codec ?? 'compact',
      coap: { ...endpoint.stats(), nextSequence: endpoint.nextSequence },
      security: secure ? { mode: opts.security!.mode, established: secure.established, ...secure.stats() } : null,
      sessionResets,
      /** Copies of a CoAP message not queued because the first still waited for the radio. */
      coalesced,
      peerDutyCycle: peerLedger ? { heardLastHour: peerLedger.usage(clock.now()), nextAllowedSendInMs: peerWaitFor(64) } : null,
      containerDrops,
      securityDropped: secure ? secure.stats().dropped : {},
      coapDropped: endpoint.stats().dropped,
    }),
    close() {
      endpoint.close();
      secure?.close();
    },
  };
}
