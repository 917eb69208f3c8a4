/**
 * ChannelAccess: WHEN on a shared channel a frame may start, on top of the duty-cycle ledger
 * (which says how MUCH may be sent). A LoRa radio is half duplex: a station that transmits while
 * a frame is coming to it loses that frame, and the sender loses the airtime. The rules below
 * keep a station from talking over the frames it is about to receive.
 *
 * Time is cut in slots (Meshtastic's slot time: channel-activity detection + turnaround + MAC
 * processing): slotMs = senseMs + turnaroundMs, senseMs = (senseSymbols + 0.5) symbols
 * (Semtech AN1200.48: a CAD of N symbols takes about N + ½ symbol times).
 *
 * 1. Receive window (LoRaWAN class A: after an uplink the device listens in RX1/RX2 before
 *    anything else). After a frame that asks the peer for an answer (a CoAP CON, a handshake
 *    message that has a reply), the station starts nothing new until the answer is heard or
 *    the window ends: answerDelayMs (the longest the peer takes to start answering: its CoAP
 *    piggyback window) + turnaround + one slot when the modem can sense (the answer's preamble
 *    is seen by the next sense) or + the airtime of a largest frame when it cannot (the whole
 *    answer must be waited out).
 * 2. Answer slot (802.11's SIFS). The station that has just HEARD a frame addressed to it may
 *    start at once, for one slot: the sender of that frame is listening (it waits in its
 *    receive window, or in the inter-frame space of rule 3), so an ACK or an answer lands.
 *    Two exchanges back to back at most: after the answer to a frame that asked for one and
 *    that itself went in an answer slot, the station YIELDS: no answer slot, and rule 3's space
 *    plus a whole contention window, (2 + CW + 1 + r) slots, so every station waiting with the
 *    ordinary space goes first (the one that just answered, with no collision; any other).
 *    Without it a kit with a backlog and the gateway answering it ping-pong in answer slots for
 *    as long as the backlog lasts, and every other station, waiting for (2 + r) quiet slots,
 *    never gets on (a kit's 2000 requests kept another kit off the channel until its own request
 *    gave up: test/adversary/shared-channel.test.ts). 802.11 likewise keeps SIFS within one
 *    exchange (its TXOP limit). The yield lasts until the next frame heard after that answer:
 *    once another station has got on, this one contends as usual again.
 * 3. Inter-frame space with random backoff (802.11's DIFS + backoff; CSMA/CA). Otherwise a frame
 *    starts only when the channel has been quiet — no frame sent or heard — for (2 + r) slots,
 *    r uniform in 0..CW, drawn afresh at every frame sent or heard. Two slots > one answer slot,
 *    so a sender that goes on after its own frame leaves the hearer its chance to answer first.
 *    CW = 2^e − 1 with e from cwMinExp to cwMaxExp by channel utilisation over the last minute
 *    (Meshtastic's contention window grows with channel utilisation), plus one per busy sense.
 * 4. Listen before talk, where the modem can (Modem.senseChannel: the native dialect's CAD).
 *    Right before a frame starts, the channel is sensed; busy → back off for a largest frame's
 *    airtime × (0.5 + u), u uniform in [0, 1), or until that frame is heard (then rules 2/3),
 *    whichever comes first. A sense that fails counts as clear (the send will report a dead
 *    modem). Sensing is reception: it never enters the duty-cycle ledger; the queue records a
 *    frame when it really starts, after the sense, so backoff delays a frame but never lets it
 *    skip the ledger (TxQueue asks the ledger first, then this, then sends at once).
 *
 * Reticulum's lesson (its interfaces hold back announces beyond an airtime cap and RNode keeps
 * short- and long-term airtime locks): airtime is the budget; every wait here is paid in time,
 * never in airtime, and the legal budget stays the ledger's alone.
 *
 * Stateful, on the injected Clock and randomness; no I/O of its own (the owner's `sense` does it).
 */
import { TrickleError } from '../errors.ts';
import type { Clock } from '../util/clock.ts';

/** What a sense of the channel found. */
export interface SenseResult {
  busy: boolean;
  durationMs: number;
}

/**
 * The hook TxQueue calls around every frame (a ChannelAccess, or a test double).
 * `grant(now)`: a number ≤ now means "start now"; a later number means "not before then" (the
 * queue sets a timer; `onChange` may call it back earlier); a promise means "sensing, ask again
 * when it settles". The queue consults the ledger before `grant`, and sends at once after a
 * grant of now, so a grant never outlives the ledger's answer.
 */
export interface MediumAccess {
  grant(nowMs: number): number | Promise<void>;
  /** A frame goes to the modem now. */
  started(frame: { frameLen: number; airtimeMs: number; expectsAnswer: boolean }): void;
  /** The modem took the frame (ok) or failed it. */
  finished(ok: boolean): void;
  /** Something changed that may allow a frame sooner (a frame was heard). */
  onChange(listener: () => void): void;
}

export interface ChannelAccessOptions {
  clock: Clock;
  /** Uniform in [0, 1). */
  random: () => number;
  /** One LoRa symbol, ms (2^SF / BW). */
  symbolMs: number;
  /** Airtime of a frame of n bytes as the radio sends it. */
  frameAirtimeMs: (frameLen: number) => number;
  /** Largest frame on this channel (busy backoff, receive windows without sensing). */
  maxFrameLen: number;
  /** Sense the channel (CAD); omitted when the modem cannot. */
  sense?: () => Promise<SenseResult>;
  /** Symbols one sense takes. Default 2 (what the native dialect asks for). */
  senseSymbols?: number;
  /** Serial round trip + rx→tx switch + processing, ms. Default 20. */
  turnaroundMs?: number;
  /** Longest the peer takes to START answering a frame that asks for an answer, ms (its CoAP piggyback window). Default 0. */
  answerDelayMs?: number | (() => number);
  /** True when the modem's send resolves once the frame has left the antenna (TX_DONE); false when it resolves on writing. */
  sendEndsAtTxDone: boolean;
  /** Contention window exponents: CW = 2^e − 1. Defaults 2 and 6. */
  cwMinExp?: number;
  cwMaxExp?: number;
  /** Window of the channel-utilisation measure, ms. Default 60 000. */
  utilisationWindowMs?: number;
}

export interface ChannelAccessStats {
  /** 'host' when frames are sensed before they start, 'none' when only the timing rules apply. */
  sense: 'host' | 'none';
  slotMs: number;
  frames: number;
  senses: number;
  busy: number;
  senseErrors: number;
  /** Frames started in an answer slot (right after hearing the peer). */
  answerSlots: number;
  /** Frames that had to wait (receive window, inter-frame space, busy backoff), and the total wait. */
  deferred: number;
  deferredMs: number;
  /** Receive windows opened, closed by a frame heard, and run out. */
  rxWindows: number;
  rxWindowsAnswered: number;
  heard: number;
  /** Channel utilisation (own + heard airtime) over the last minute, 0..1. */
  utilisation: number;
}

const NEVER = -Infinity;

export class ChannelAccess implements MediumAccess {
  readonly slotMs: number;
  readonly senseMs: number;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly frameAirtimeMs: (n: number) => number;
  private readonly maxFrameLen: number;
  private readonly senseFn: (() => Promise<SenseResult>) | undefined;
  private readonly turnaroundMs: number;
  private readonly answerDelay: () => number;
  private readonly sendEndsAtTxDone: boolean;
  private readonly cwMinExp: number;
  private readonly cwMaxExp: number;
  private readonly utilWindowMs: number;
  private readonly listeners: (() => void)[] = [];
  /** One-shot wake-ups of acquire(). */
  private readonly waiters = new Set<() => void>();

  // Our last frame: when it went to the modem, when it ended (estimate until the modem says), what it asked.
  private ownStartAt = NEVER;
  private ownEndAt = NEVER;
  private ownAirtimeMs = 0;
  private ownExpectsAnswer = false;
  /** Our last frame started in an answer slot (rule 2). */
  private ownInAnswerSlot = false;
  private rxWindowUntil = NEVER;
  private transmitting = false;
  // The last frame heard.
  private heardAt = NEVER;
  private heardAddressed = true;
  /** Inter-frame space drawn at the last activity (a frame sent or heard), ms. */
  private ifsMs = 0;
  /** CW + 1 of that draw: the slots a yielding station adds (rule 2). */
  private cwSlots = 1;
  private busyUntil = NEVER;
  private busyStreak = 0;
  /** Bumped by every frame sent or heard: a sense result is good only for the epoch it was taken in. */
  private epoch = 0;
  private sensing: Promise<void> | undefined;
  private clearEpoch = -1;
  private clearSensedAt = NEVER;
  private firstAskAt: number | undefined;
  /** Time spent sensing since firstAskAt (not a deferral). */
  private senseSpentMs = 0;
  private windowAnswered = false;
  /** When the first frame after our last one was heard (the answer to it, if it asked for one). */
  private answerHeardAt = NEVER;
  /** Recent airtime on the channel (own and heard), for utilisation: [endMs, airtimeMs]. */
  private recent: [number, number][] = [];
  private readonly counters = { frames: 0, senses: 0, busy: 0, senseErrors: 0, answerSlots: 0, deferred: 0, deferredMs: 0, rxWindows: 0, rxWindowsAnswered: 0, heard: 0 };

  constructor(opts: ChannelAccessOptions) {
    const positive = (key: string, v: number, allowZero = false): number => {
      if (!(Number.isFinite(v) && (allowZero ? v >= 0 : v > 0))) throw new TrickleError('ERR_CONFIG', 'scheduler', `channel access: ${key} must be a ${allowZero ? 'non-negative' : 'positive'} number (got ${v})`);
      return v;
    };
    this.clock = opts.clock;
    this.random = opts.random;
    this.frameAirtimeMs = opts.frameAirtimeMs;
    this.maxFrameLen = positive('maxFrameLen', opts.maxFrameLen);
    this.senseFn = opts.sense;
    this.turnaroundMs = positive('turnaroundMs', opts.turnaroundMs ?? 20, true);
    const ad = opts.answerDelayMs ?? 0;
    this.answerDelay = typeof ad === 'function' ? ad : () => ad;
    this.sendEndsAtTxDone = opts.sendEndsAtTxDone;
    this.cwMinExp = opts.cwMinExp ?? 2;
    this.cwMaxExp = opts.cwMaxExp ?? 6;
    if (!(Number.isInteger(this.cwMinExp) && Number.isInteger(this.cwMaxExp) && this.cwMinExp >= 0 && this.cwMaxExp >= this.cwMinExp && this.cwMaxExp <= 16)) {
      throw new TrickleError('ERR_CONFIG', 'scheduler', `channel access: cwMinExp/cwMaxExp must be integers with 0 ≤ cwMinExp ≤ cwMaxExp ≤ 16 (got ${this.cwMinExp}, ${this.cwMaxExp})`);
    }
    this.utilWindowMs = positive('utilisationWindowMs', opts.utilisationWindowMs ?? 60_000);
    this.senseMs = ((opts.senseSymbols ?? 2) + 0.5) * positive('symbolMs', opts.symbolMs);
    this.slotMs = this.senseMs + this.turnaroundMs;
  }

  get canSense(): boolean { return this.senseFn !== undefined; }

  onChange(listener: () => void): void { this.listeners.push(listener); }

  /**
   * A frame was heard (received whole, at the end of its airtime). `addressedToUs` false: a frame
   * for another station (it gives no answer slot). Listeners are told on a later microtask, so
   * whatever the receipt itself queues (an ACK) is queued before a waiting frame is let go.
   */
  heard(frameLen: number, opts: { addressedToUs?: boolean; airtimeMs?: number } = {}): void {
    const now = this.clock.now();
    this.counters.heard++;
    if (this.ownExpectsAnswer && !this.windowAnswered && now > this.ownStartAt) {
      this.windowAnswered = true;
      this.answerHeardAt = now;
      this.counters.rxWindowsAnswered++;
    }
    this.heardAt = now;
    this.heardAddressed = opts.addressedToUs ?? true;
    this.busyUntil = NEVER;
    this.busyStreak = 0;
    this.epoch++;
    this.noteAirtime(now, opts.airtimeMs ?? this.frameAirtimeMs(frameLen));
    this.ifsMs = this.drawIfs(now);
    queueMicrotask(() => {
      const waiters = [...this.waiters];
      this.waiters.clear();
      for (const w of waiters) w();
      for (const l of this.listeners) l();
    });
  }

  /** The earliest time (clock ms) the timing rules (1–3) let a new frame start; Infinity while one is going out. */
  clearAt(nowMs: number): number {
    if (this.transmitting) return Infinity;
    const answered = this.heardAt > this.ownStartAt;
    // Rule 2, except after the answer to a request we sent in an answer slot: then we yield,
    // until any other frame is heard (someone else got on: the yield has done its work). Yielding
    // for longer starves this station: a gateway whose last frame went that way, facing kits that
    // retransmit because it does not answer them, never found the (2 + CW + 1 + r) quiet slots
    // and stopped answering anyone (bench:network team, 2026-12-05).
    const yielding = answered && this.ownExpectsAnswer && this.ownInAnswerSlot && this.heardAt === this.answerHeardAt;
    if (answered && this.heardAddressed && nowMs <= this.heardAt + this.slotMs && !yielding) return nowMs;
    let t = Math.max(nowMs, this.busyUntil);
    if (this.ownExpectsAnswer && !answered) t = Math.max(t, this.rxWindowUntil); // rule 1
    const last = Math.max(this.heardAt, this.ownEndAt);
    if (last > NEVER) t = Math.max(t, last + this.ifsMs + (yielding ? this.cwSlots * this.slotMs : 0)); // rule 3
    return t;
  }

  /**
   * How long the PEER's answer may wait for the channel, ms: with utilisation U of the last
   * minute (own and heard airtime), the mean wait of an M/M/1 queue in units of a largest frame,
   * U / (1 − U), capped at 8 frames. A retransmit timer that leaves this out fires early on a
   * busy shared channel (the peer is not slow, the channel is taken).
   */
  contentionWaitMs(): number {
    const u = Math.min(0.9, this.utilisation(this.clock.now()));
    return Math.min(8, u / (1 - u)) * this.frameAirtimeMs(this.maxFrameLen);
  }

  /** How long a frame asked for now would wait for the timing rules, ms (0 when it could start now). */
  expectedWaitMs(): number {
    const now = this.clock.now();
    const at = this.clearAt(now);
    return Number.isFinite(at) ? Math.max(0, at - now) : Math.ceil(this.ownAirtimeMs + this.turnaroundMs);
  }

  grant(nowMs: number): number | Promise<void> {
    if (this.sensing) return this.sensing;
    this.firstAskAt ??= nowMs;
    // Sensed clear just now and nothing sent or heard since: go without sensing again.
    if (this.clearEpoch === this.epoch && nowMs - this.clearSensedAt <= this.turnaroundMs) return this.go(nowMs);
    const at = this.clearAt(nowMs);
    if (at > nowMs) return at;
    if (!this.senseFn) return this.go(nowMs);
    const epoch = this.epoch;
    const senseStart = nowMs;
    this.counters.senses++;
    let sensed: Promise<SenseResult>;
    try { sensed = this.senseFn(); } catch (e) { sensed = Promise.reject(e); }
    this.sensing = sensed.then((r) => {
      this.sensing = undefined;
      this.senseSpentMs += this.clock.now() - senseStart;
      if (!r.busy) { if (this.epoch === epoch) { this.clearEpoch = epoch; this.clearSensedAt = this.clock.now(); } return; }
      this.counters.busy++;
      this.busyStreak++;
      const now = this.clock.now();
      this.busyUntil = now + this.frameAirtimeMs(this.maxFrameLen) * (0.5 + this.random());
    }, () => {
      this.sensing = undefined;
      this.senseSpentMs += this.clock.now() - senseStart;
      this.counters.senseErrors++;
      if (this.epoch === epoch) { this.clearEpoch = epoch; this.clearSensedAt = this.clock.now(); }
    });
    return this.sensing;
  }

  private go(nowMs: number): number {
    const waited = this.firstAskAt === undefined ? 0 : nowMs - this.firstAskAt - this.senseSpentMs;
    if (waited > 0) {
      this.counters.deferred++;
      this.counters.deferredMs += waited;
    }
    if (this.heardAt > this.ownStartAt && this.heardAddressed && nowMs <= this.heardAt + this.slotMs + this.senseMs) this.counters.answerSlots++;
    return nowMs;
  }

  started(frame: { frameLen: number; airtimeMs: number; expectsAnswer: boolean }): void {
    const now = this.clock.now();
    this.counters.frames++;
    this.ownInAnswerSlot = this.heardAt > this.ownStartAt && this.heardAddressed && now <= this.heardAt + this.slotMs + this.senseMs;
    this.transmitting = true;
    this.firstAskAt = undefined;
    this.senseSpentMs = 0;
    this.clearEpoch = -1;
    this.epoch++;
    this.ownStartAt = now;
    this.ownAirtimeMs = frame.airtimeMs;
    this.ownExpectsAnswer = frame.expectsAnswer;
    this.windowAnswered = false;
    this.ownEndAt = now + frame.airtimeMs + this.turnaroundMs;
  }

  finished(ok: boolean): void {
    const now = this.clock.now();
    this.transmitting = false;
    this.epoch++;
    // A modem that reports TX_DONE resolves when the frame has left; the others when it was written.
    this.ownEndAt = ok ? (this.sendEndsAtTxDone ? now : now + this.ownAirtimeMs) : now;
    if (ok) this.noteAirtime(this.ownEndAt, this.ownAirtimeMs);
    if (ok && this.ownExpectsAnswer) {
      this.counters.rxWindows++;
      const hold = this.canSense ? this.slotMs : this.frameAirtimeMs(this.maxFrameLen) + this.slotMs;
      this.rxWindowUntil = this.ownEndAt + this.answerDelay() + this.turnaroundMs + hold;
    } else {
      this.ownExpectsAnswer = false;
      this.rxWindowUntil = NEVER;
    }
    this.ifsMs = this.drawIfs(now);
  }

  stats(): ChannelAccessStats {
    return { sense: this.canSense ? 'host' : 'none', slotMs: round3(this.slotMs), ...this.counters, deferredMs: Math.round(this.counters.deferredMs), utilisation: round3(this.utilisation(this.clock.now())) };
  }

  /** (2 + r) slots, r uniform in 0..CW. */
  private drawIfs(now: number): number {
    const span = this.cwMaxExp - this.cwMinExp;
    const e = Math.min(this.cwMaxExp, this.cwMinExp + Math.round(this.utilisation(now) * span) + this.busyStreak);
    this.cwSlots = 2 ** e;
    const r = Math.floor(this.random() * this.cwSlots);
    return (2 + r) * this.slotMs;
  }

  private noteAirtime(endMs: number, airtimeMs: number): void {
    this.recent.push([endMs, airtimeMs]);
    const cutoff = endMs - this.utilWindowMs;
    while (this.recent.length > 0 && this.recent[0]![0] < cutoff) this.recent.shift();
  }

  private utilisation(now: number): number {
    const from = now - this.utilWindowMs;
    let used = 0;
    for (const [end, a] of this.recent) used += Math.max(0, Math.min(a, end - from));
    return Math.min(1, used / this.utilWindowMs);
  }

  /**
   * Wait for a grant without a TxQueue (a link with no airtime rules): resolves when a frame may
   * start now. The caller then calls `started` and `finished` around its send.
   */
  async acquire(): Promise<void> {
    for (;;) {
      const now = this.clock.now();
      const g = this.grant(now);
      if (typeof g !== 'number') { await g; continue; }
      if (g <= now) return;
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(g) ? this.clock.setTimer(g - now, () => { this.waiters.delete(wake); resolve(); }) : undefined;
        const wake = (): void => { timer?.cancel(); resolve(); };
        this.waiters.add(wake);
      });
    }
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
