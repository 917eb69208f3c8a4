/**
 * TxQueue: the one place that decides when a frame goes on air.
 *
 * Order: which message goes next.
 *   1. Control (CoAP ACK/RST, handshake) first, across all peers, FIFO. It is small, and holding
 *      it back costs more airtime than it saves: the peer retransmits.
 *   2. Then fair sharing ACROSS PEERS (`peer` is the destination: at a gateway, one field kit).
 *      The duty cycle is one legal budget for the whole radio, so one busy kit must not starve
 *      the others. Weighted fair queueing (Demers, Keshav & Shenker, "Analysis and simulation of
 *      a fair queueing algorithm", SIGCOMM 1989) with the start tags and virtual time of
 *      start-time fair queueing (Goyal, Vin & Cheng, "Start-time fair queueing", SIGCOMM 1996),
 *      counted in AIRTIME, not bytes (airtime is what the law rations; a byte at SF12 costs 32×
 *      one at SF7): each backlogged peer p carries a start tag S_p; the next frame goes to the
 *      peer with the smallest virtual finish S_p + airtime(head)/w_p (weight w_p, default 1:
 *      `peerWeights`, setPeerWeight()); sending a frame of airtime a moves S_p by a/w_p, and the
 *      virtual time V to the start tag of the frame now in service. A peer that becomes
 *      backlogged starts at max(its last finish, V): time spent idle earns no burst credit
 *      (SFQ). LoRaWAN network servers likewise schedule downlinks per device, not per arrival.
 *   3. Within the chosen peer, its highest class: interactive (a person is waiting) > sync
 *      (pushes) > bulk, FIFO within a class.
 *   Control frames charge their peer's tags too (no free airtime behind the control class), but
 *   do not move V.
 * - Law first: a frame starts only when the channel's DutyCycleLedger allows it, to the
 *   millisecond (timers are set for the exact `nextAllowedAt`, never polled). The law binds all
 *   peers alike, so the chosen peer's head waits for it and nobody overtakes it with a smaller
 *   frame that would fit sooner (a sliding window returns budget in the shape it was spent:
 *   small frames that always fit first would starve big ones for ever).
 * - Reserves (`classShares`): a class and every class below it together may use at most their
 *   share of the hourly duty-cycle budget, each share measured by its own sliding sub-ledger.
 *   Default { bulk: 0.5 }: bulk never takes more than half. Adding e.g. { sync: 0.9 } makes sync +
 *   bulk leave a tenth for ACKs and people, so an urgent message finds budget even while pushes
 *   saturate the channel (a sliding window lets a saturated queue spend a whole hour's budget in
 *   one burst; without a reserve the next ACK waits for that burst to slide out: see the bench).
 *   Dwell limits of a few seconds refill by themselves and are not subject to reserves. In a packed frame each
 *   message's share of the bytes is its share of the airtime.
 *   A reserve is policy, not law: when the fairest peer's head is held by a reserve (it could go
 *   by law sooner than its reserve lets it), peers whose heads are of a class ABOVE that reserve
 *   go ahead, in fair order; peers whose heads the same reserve covers wait behind it (the same
 *   starvation argument as for the law). A peer held back this way earns no credit for it: when
 *   another goes, its start tag catches up with V, as an idle peer's would.
 * - Packing: when the head message may go now, other queued messages for the same peer ride in
 *   the same frame (container: ./packing.ts) as long as the bigger frame is still allowed now,
 *   fits `maxFrameLen`, and costs less airtime than sending them apart. Control and interactive
 *   messages for that peer go in first; the rest of the frame is filled to the most bytes (a
 *   bounded knapsack over the peer's oldest 32 messages). So two messages to one peer may leave in
 *   a different order; every layer above tolerates reordering, as the radio itself reorders.
 *   A frame carries messages for one peer only, and its whole airtime is charged to that peer.
 * - Channel access (optional `access`, ./channel-access.ts): once the ledger lets the head go,
 *   the medium-access rules are asked (receive windows, inter-frame space, listen before talk);
 *   the frame is built and recorded only when they grant it, so time spent waiting or sensing
 *   is never counted as airtime and never lets a frame past the ledger. A message that asks the
 *   peer for an answer (`expectsAnswer`) opens a receive window after its frame.
 * - Room: at most `maxQueued` messages (default 1024) for all peers together, and no peer can
 *   lock the others out of it. A peer alone may fill the whole queue (a point-to-point link, a
 *   gateway with one busy kit). When it is full, a message for a peer that holds FEWER messages
 *   than the peer holding the most is let in by pushing out that peer's newest message of its
 *   lowest class (rejected with ERR_QUEUE_FULL); otherwise the new message is refused
 *   (ERR_QUEUE_FULL). This is "longest queue drop" (Suter, Lakshman, Stiliadis & Choudhury,
 *   "Design considerations for supporting TCP with per-flow queueing", INFOCOM 1998), as
 *   shared-buffer routers isolate flows. The guarantee: a peer is refused only while it holds at
 *   least as many messages as every other peer, hence at least maxQueued / (peers with messages
 *   queued). Chosen over a fixed per-peer cap such as max(16, maxQueued / active peers): a cap
 *   wastes the room a lone peer could use, must shrink as peers arrive (and then either refuse a
 *   newcomer while others are over the new cap, or push out anyway), and a gateway's kits come
 *   and go. On a gateway, one kit flooding requests fills the queue with its answers while the
 *   duty cycle holds them (the budget spent): without this, another kit's answer was refused
 *   until the flood drained (test/adversary/shared-channel.test.ts). Counted per peer
 *   (status().peers[].queueFullDrops: its messages refused or pushed out).
 * - enqueue() resolves with a receipt once the modem took the frame, or rejects — never hangs:
 *   ERR_DUTY_CYCLE (a DutyCycleError with `retryAfterMs`) when the message cannot start within
 *   its `deadlineMs`; ERR_DWELL_TIME when it could never be sent on this channel; ERR_QUEUE_FULL
 *   when the queue is full (see Room), also later, for a queued message pushed out;
 *   ERR_MODEM_MTU for an oversize message; the transmit error if the modem fails.
 * - status() accounts per peer (airtime total and in the last hour, frames, messages, what is
 *   queued and for how long). The peer table is bounded: beyond MAX_PEERS entries, peers with
 *   nothing queued and no airtime in the last hour are forgotten, least recently active first.
 *
 * Stateful: runs on the injected Clock; does no I/O itself (the owner's `transmit` does).
 */
import { TrickleError } from '../errors.ts';
import type { Clock, TimerHandle } from '../util/clock.ts';
import { DutyCycleLedger, type LedgerEntry, type LimitUsage } from './duty-cycle.ts';
import type { MediumAccess } from './channel-access.ts';
import { canPack, MAX_INNER_MESSAGE_LEN, MAX_PACKED_MESSAGES, packedLength, packFrame } from './packing.ts';
import { HOUR_MS, type ChannelRules } from './regions.ts';

export type Priority = 'control' | 'interactive' | 'sync' | 'bulk';
/** How many of a peer's queued messages the packer considers at once (bounds its work). */
const PACK_CANDIDATES = 32;
/** Peers remembered for fair sharing and accounting, beyond which idle ones are forgotten. */
export const MAX_PEERS = 256;
export const PRIORITIES: readonly Priority[] = ['control', 'interactive', 'sync', 'bulk'];

export interface TxQueueOptions {
  clock: Clock;
  /** The channel's rules (from resolveChannel(...).rules). */
  rules: ChannelRules;
  /**
   * Hand one frame to the modem (Modem.send). May resolve with `{ airtimeMs }` measured by the
   * modem, and `endedAtMs` when it resolves only once the frame has left the antenna (a modem
   * that reports transmit-done): the frame is then counted over [endedAtMs − airtime, endedAtMs).
   */
  transmit: (frame: Uint8Array, peer: string) => Promise<unknown>;
  /** PHY airtime of a frame of this many bytes (e.g. n => loraAirtimeMs({ ...radio, payloadBytes: n })); a pure function of n. */
  frameAirtimeMs: (frameBytes: number) => number;
  /** Largest frame the modem carries (ModemCapabilities.maxFrameLen). */
  maxFrameLen: number;
  /** Frames use the packing container (both ends must agree). Default true. */
  packing?: boolean;
  /**
   * Cumulative reserves: share (0, 1] of the hourly duty-cycle budget that a class together with
   * all lower classes may use. Default { bulk: 0.5 } (the others: 1).
   * Shares must not increase towards lower classes.
   */
  classShares?: Partial<Record<Priority, number>>;
  /** Also enforce the strict per-transmission off-time. Default false. */
  strictOffTime?: boolean;
  /** Bound on queued messages (all classes, all peers; see Room in the header). Default 1024. */
  maxQueued?: number;
  /**
   * This radio's transmissions before a restart, on the same channel (airtimeHistory() of the
   * previous run): they count against the duty cycle as if they had just been recorded, so a
   * restart (or a crash loop) never buys a fresh budget. Entries are kept at their recorded
   * times, even ones in the future (the clock went back): the radio then waits for them as if
   * they were real, which is stricter than the truth, never looser.
   */
  history?: readonly LedgerEntry[];
  /** Medium access (./channel-access.ts): asked after the ledger, right before each frame. */
  access?: MediumAccess;
  /**
   * Fair-share weights by peer (finite, > 0; default 1): over a busy period each backlogged peer
   * gets airtime in proportion to its weight. Also settable later with setPeerWeight().
   */
  peerWeights?: Readonly<Record<string, number>>;
}

export interface EnqueueOptions {
  priority: Priority;
  /**
   * Longest acceptable wait, in ms from now, before the message starts on air. When it cannot,
   * the promise rejects with ERR_DUTY_CYCLE and `retryAfterMs` (at once if the ledger alone
   * already rules it out, otherwise when the deadline passes). Omitted: wait as long as it takes.
   */
  deadlineMs?: number;
  /**
   * The destination. Airtime is shared fairly across peers (see the header), and messages for
   * the same peer may share a frame. Default ''.
   */
  peer?: string;
  /** The message asks the peer for an answer (a CoAP CON, a handshake message): its frame opens a receive window. */
  expectsAnswer?: boolean;
}

export interface SentReceipt {
  /** When the frame was counted as starting on air (clock ms). */
  sentAtMs: number;
  /** Airtime of the whole frame. */
  airtimeMs: number;
  frameLen: number;
  messagesInFrame: number;
  waitedMs: number;
}

/** ERR_DUTY_CYCLE: the budget is spent; `retryAfterMs` says when a retry can go. */
export class DutyCycleError extends TrickleError {
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, detail: Record<string, unknown> = {}) {
    super('ERR_DUTY_CYCLE', 'scheduler', message, { ...detail, retryAfterMs });
    this.name = 'DutyCycleError';
    this.retryAfterMs = retryAfterMs;
  }
}

/** What the scheduling decision looks at (a queued message, or a planned one in estimateWaitMs). */
interface SchedItem {
  readonly len: number;
  /** PRIORITIES.indexOf(priority): 0 = control. */
  readonly rank: number;
  /** Enqueue order (ties). */
  readonly seq: number;
  readonly peer: string;
}

/** A peer as the scheduling decision sees it: its queued messages per class, and its SFQ start tag. */
interface SchedPeer<I extends SchedItem> {
  readonly id: string;
  /** FIFO per class, index = rank. */
  readonly queues: I[][];
  /** Virtual start tag of its next frame (valid while it has queued messages). */
  startTag: number;
  /** Virtual finish tag of its last frame. */
  finishTag: number;
}

interface Item extends SchedItem {
  payload: Uint8Array;
  priority: Priority;
  expectsAnswer: boolean;
  enqueuedAtMs: number;
  resolve: (r: SentReceipt) => void;
  reject: (e: unknown) => void;
  timer: TimerHandle | null;
}

export interface QueueClassStatus { messages: number; bytes: number; oldestWaitMs: number | null }

/** One peer's share of the radio (status().peers). */
export interface PeerStatus {
  peer: string;
  weight: number;
  /** Airtime of the frames the modem took for this peer, since it was first seen. */
  airtimeMs: number;
  /** The same, inside [now − 1 h, now). */
  airtimeLastHourMs: number;
  frames: number;
  messagesSent: number;
  queuedMessages: number;
  queuedBytes: number;
  /** How long its oldest queued message has waited (null: nothing queued). */
  oldestWaitMs: number | null;
  /** Its messages refused, or pushed out for another peer's, because the queue was full. */
  queueFullDrops: number;
}

interface PeerState extends SchedPeer<Item> {
  queued: number;
  queuedBytes: number;
  airtimeMs: number;
  frames: number;
  messagesSent: number;
  queueFullDrops: number;
  /** Its frames that may still overlap the last hour (accounting). */
  recent: LedgerEntry[];
  lastActiveMs: number;
}

/** The scheduling decision: the message to send (and when it may), or when to look again. */
interface Choice<I extends SchedItem> {
  item: I | null;
  /** When `item` may start (Infinity when none). */
  atMs: number;
  /** The earliest moment the decision may change without a new arrival (≤ atMs). */
  wakeAtMs: number;
  /** Peers ahead of `item` in fair order that were held by a reserve (or queued behind one). */
  passed: SchedPeer<I>[];
  /** A message that can never be sent (ERR_DWELL_TIME), found while deciding. */
  failed?: { item: I; error: unknown };
}

interface CapLedger { rank: number; priority: Priority; share: number; ledger: DutyCycleLedger }

export interface TxQueueStatus {
  nowMs: number;
  transmitting: boolean;
  subBands: {
    id: string;
    regulation: string;
    dutyCycle: number | null;
    /** Airtime this radio used in [now − 1 h, now). */
    airtimeUsedLastHourMs: number;
    /** The hourly duty-cycle budget, or null when the channel has none. */
    budgetPerHourMs: number | null;
    /** Budget left in the last-hour accounting (null without an hourly budget). */
    budgetLeftMs: number | null;
    /** Every window limit (duty cycle, dwell) with its use. */
    limits: LimitUsage[];
    /** When the next frame (the head of the queue, or a minimal one if idle) may start. */
    nextAllowedSendAtMs: number;
    nextAllowedSendInMs: number;
    /** The longest frame airtime that could start right now. */
    sendableNowMs: number | null;
    /** Per reserve: the classes it covers, their share, and their use. */
    reserves: { classes: Priority[]; share: number; limits: LimitUsage[] }[];
  }[];
  queue: Record<Priority, QueueClassStatus>;
  totals: { frames: number; messages: number; airtimeMs: number };
  /** Per peer seen (sorted by peer): its airtime, messages and queue. */
  peers: PeerStatus[];
}

export class TxQueue {
  private readonly clock: Clock;
  private readonly rules: ChannelRules;
  private readonly transmit: (frame: Uint8Array, peer: string) => Promise<unknown>;
  private readonly frameAirtimeMs: (frameBytes: number) => number;
  private readonly maxFrameLen: number;
  private readonly packing: boolean;
  private readonly shares: Record<Priority, number>;
  private readonly maxQueued: number;
  readonly ledger: DutyCycleLedger;
  /** One sub-ledger per class with a share < 1: airtime of that class and all below it. */
  private readonly capLedgers: CapLedger[];
  /** Accounting only: every transmission of the last hour, for status(). */
  private readonly hourLedger: DutyCycleLedger;
  private readonly queues: Record<Priority, Item[]> = { control: [], interactive: [], sync: [], bulk: [] };
  private queued = 0;
  private busy = false;
  /** The access layer is sensing the channel for the head (no frame built yet). */
  private sensing = false;
  private readonly access: MediumAccess | undefined;
  private closed = false;
  private wake: TimerHandle | null = null;
  private wakeAtMs = Infinity;
  private totals = { frames: 0, messages: 0, airtimeMs: 0 };
  private readonly peers = new Map<string, PeerState>();
  /** Configured weights (absent: 1). */
  private readonly weights = new Map<string, number>();
  /** SFQ virtual time: the start tag of the last non-control frame sent. */
  private vtime = 0;
  private seq = 0;

  constructor(opts: TxQueueOptions) {
    this.clock = opts.clock;
    this.rules = opts.rules;
    this.transmit = opts.transmit;
    // A pure function of the length (the contract): computed once per length, since the
    // scheduling decision and its replay in estimateWaitMs ask for it many times per message.
    const airtimeByLen = new Map<number, number>();
    this.frameAirtimeMs = (n) => {
      let a = airtimeByLen.get(n);
      if (a === undefined) { a = opts.frameAirtimeMs(n); airtimeByLen.set(n, a); }
      return a;
    };
    if (!(Number.isInteger(opts.maxFrameLen) && opts.maxFrameLen >= 2)) {
      throw new TrickleError('ERR_CONFIG', 'scheduler', `maxFrameLen must be an integer ≥ 2 (got ${opts.maxFrameLen})`);
    }
    this.maxFrameLen = opts.maxFrameLen;
    this.packing = opts.packing ?? true;
    this.shares = { control: 1, interactive: 1, sync: 1, bulk: 0.5, ...opts.classShares };
    let prev = 1;
    for (const p of PRIORITIES) {
      const sh = this.shares[p];
      if (!(sh > 0 && sh <= prev)) {
        throw new TrickleError('ERR_CONFIG', 'scheduler',
          `classShares.${p} must be in (0, ${prev}] (a lower class cannot have a larger share; got ${sh})`);
      }
      prev = sh;
    }
    this.maxQueued = opts.maxQueued ?? 1024;
    for (const [peer, w] of Object.entries(opts.peerWeights ?? {})) this.setPeerWeight(peer, w);
    this.access = opts.access;
    this.access?.onChange(() => this.pump());
    const strict = opts.strictOffTime ?? false;
    this.ledger = new DutyCycleLedger(opts.rules, { strictOffTime: strict });
    // Reserves apply to the HOURLY duty-cycle budget only. Short dwell windows (FCC: 20 s) refill
    // within seconds anyway.
    const dcRules = { ...opts.rules, limits: opts.rules.limits.filter((l) => l.kind === 'duty-cycle') };
    this.capLedgers = PRIORITIES.map((p, rank) => ({ p, rank }))
      .filter(({ p }) => this.shares[p] < 1 && dcRules.limits.length > 0)
      .map(({ p, rank }) => ({ rank, priority: p, share: this.shares[p], ledger: new DutyCycleLedger(dcRules, { budgetScale: this.shares[p], ignoreMaxFrameAirtime: true }) }));
    this.hourLedger = new DutyCycleLedger(
      { subBandId: opts.rules.subBandId, dutyCycle: null, limits: [{ kind: 'duty-cycle', windowMs: HOUR_MS, budgetMs: HOUR_MS }], maxFrameAirtimeMs: null, regulation: 'accounting' },
      { ignoreMaxFrameAirtime: true },
    );
    for (const h of [...(opts.history ?? [])].sort((a, b) => a.startMs - b.startMs)) {
      if (!(Number.isFinite(h.startMs) && Number.isFinite(h.airtimeMs) && h.airtimeMs > 0)) continue;
      this.ledger.record(h.startMs, h.airtimeMs);
      this.hourLedger.record(h.startMs, h.airtimeMs);
    }
  }

  /** The transmissions that still count (main ledger), to persist across a restart (`history`). */
  airtimeHistory(): LedgerEntry[] {
    return this.ledger.entries();
  }

  /**
   * Fair-share weight of a peer (finite, > 0; default 1): while several peers are backlogged,
   * each gets airtime in proportion to its weight. Takes effect from the peer's next frame.
   */
  setPeerWeight(peer: string, weight: number): void {
    if (!(Number.isFinite(weight) && weight > 0)) {
      throw new TrickleError('ERR_CONFIG', 'scheduler', `the weight of peer ${JSON.stringify(peer)} must be a finite number > 0 (got ${weight})`);
    }
    if (weight === 1) this.weights.delete(peer); else this.weights.set(peer, weight);
  }

  private weightOf(peer: string): number {
    return this.weights.get(peer) ?? 1;
  }

  /** Largest message enqueue accepts. */
  get maxMessageLen(): number {
    return this.packing ? this.maxFrameLen - 1 : this.maxFrameLen;
  }

  private frameLen(lengths: readonly number[]): number {
    return this.packing ? packedLength(lengths) : lengths[0]!;
  }

  private airtimeOf(lengths: readonly number[]): number {
    return this.frameAirtimeMs(this.frameLen(lengths));
  }

  enqueue(payload: Uint8Array, opts: EnqueueOptions): Promise<SentReceipt> {
    const priority = opts.priority;
    if (!PRIORITIES.includes(priority)) {
      return Promise.reject(new TrickleError('ERR_CONFIG', 'scheduler', `priority ${String(priority)} is not known; allowed: ${PRIORITIES.join(', ')}`));
    }
    if (this.closed) return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'scheduler', 'the transmit queue is closed'));
    if (payload.length < 1 || payload.length > this.maxMessageLen) {
      return Promise.reject(new TrickleError('ERR_MODEM_MTU', 'scheduler',
        `message of ${payload.length} bytes does not fit: 1..${this.maxMessageLen} bytes per message`, { len: payload.length, max: this.maxMessageLen }));
    }
    const peer = opts.peer ?? '';
    let pushOut: Item | undefined;
    if (this.queued >= this.maxQueued) {
      pushOut = this.pushOutCandidate(peer);
      if (pushOut === undefined) {
        const ps = this.peers.get(peer);
        if (ps) ps.queueFullDrops++;
        return Promise.reject(new TrickleError('ERR_QUEUE_FULL', 'scheduler',
          `transmit queue holds ${this.queued} messages (limit ${this.maxQueued}), ${ps?.queued ?? 0} of them for peer ${JSON.stringify(peer)}, no fewer than any other peer's`,
          { queued: this.queued, peer, peerQueued: ps?.queued ?? 0 }));
      }
    }
    const now = this.clock.now();
    const a = this.airtimeOf([payload.length]);
    let earliest: number;
    try {
      earliest = this.earliestFor(this.ledger, this.capsFor(PRIORITIES.indexOf(priority)), a, now);
    } catch (e) {
      return Promise.reject(e); // ERR_DWELL_TIME: never sendable here
    }
    const deadlineMs = opts.deadlineMs;
    if (deadlineMs !== undefined) {
      if (!(deadlineMs >= 0)) return Promise.reject(new TrickleError('ERR_CONFIG', 'scheduler', `deadlineMs must be ≥ 0 (got ${deadlineMs})`));
      if (earliest > now + deadlineMs) {
        const retryAfterMs = Math.max(earliest - now, this.estimateWaitMs(payload.length, priority));
        return Promise.reject(this.dutyCycleError(payload.length, priority, retryAfterMs, deadlineMs));
      }
    }
    return new Promise<SentReceipt>((resolve, reject) => {
      if (pushOut) this.pushOut(pushOut, peer);
      const rank = PRIORITIES.indexOf(priority);
      const item: Item = {
        payload, len: payload.length, priority, rank, seq: this.seq++, peer,
        expectsAnswer: opts.expectsAnswer ?? false, enqueuedAtMs: now, resolve, reject, timer: null,
      };
      const ps = this.peerState(item.peer, now);
      // Newly backlogged: start where the busy peers are now (SFQ), never earlier — no credit for idle time.
      if (ps.queued === 0) ps.startTag = Math.max(ps.finishTag, this.vtime);
      ps.queues[rank]!.push(item);
      ps.queued++;
      ps.queuedBytes += item.len;
      ps.lastActiveMs = now;
      this.queues[priority].push(item);
      this.queued++;
      if (deadlineMs !== undefined) item.timer = this.clock.setTimer(deadlineMs, () => this.onDeadline(item, deadlineMs));
      this.pump();
    });
  }

  private dutyCycleError(len: number, priority: Priority, retryAfterMs: number, deadlineMs: number): DutyCycleError {
    const used = this.ledger.usage(this.clock.now());
    const what = used.map((u) => `${u.kind} ${u.usedMs.toFixed(0)}/${u.budgetMs} ms per ${u.windowMs / 1000} s`).join(', ');
    return new DutyCycleError(
      `a ${priority} message of ${len} bytes cannot go on air within ${deadlineMs} ms on ${this.rules.subBandId} (${what || 'radio busy'}); retry in ${Math.ceil(retryAfterMs / 1000)} s`,
      retryAfterMs, { subBand: this.rules.subBandId, priority, len, deadlineMs },
    );
  }

  private onDeadline(item: Item, deadlineMs: number): void {
    item.timer = null;
    if (!this.queues[item.priority].includes(item)) return; // already sent
    this.pump(); // its last chance, at exactly the deadline
    if (!this.remove(item)) return; // it went out
    const retryAfterMs = this.estimateWaitMs(item.payload.length, item.priority);
    item.reject(this.dutyCycleError(item.payload.length, item.priority, retryAfterMs, deadlineMs));
  }

  /**
   * The queue is full and `peer` wants room (see Room in the header): the newest message of the
   * lowest class of the peer holding the most messages, if that peer holds more than `peer`.
   */
  private pushOutCandidate(peer: string): Item | undefined {
    const mine = this.peers.get(peer)?.queued ?? 0;
    let longest: PeerState | undefined;
    for (const p of this.peers.values()) {
      if (p.id !== peer && p.queued > mine && (longest === undefined || p.queued > longest.queued)) longest = p;
    }
    if (longest === undefined) return undefined;
    for (let r = PRIORITIES.length - 1; r >= 0; r--) {
      const q = longest.queues[r]!;
      if (q.length > 0) return q[q.length - 1];
    }
    return undefined;
  }

  private pushOut(item: Item, forPeer: string): void {
    if (!this.remove(item)) return;
    item.timer?.cancel();
    item.timer = null;
    const ps = this.peers.get(item.peer)!;
    ps.queueFullDrops++;
    item.reject(new TrickleError('ERR_QUEUE_FULL', 'scheduler',
      `pushed out of the full transmit queue (limit ${this.maxQueued}): peer ${JSON.stringify(item.peer)} held the most messages (${ps.queued + 1}) and peer ${JSON.stringify(forPeer)} needed room`,
      { peer: item.peer, peerQueued: ps.queued, forPeer }));
  }

  private remove(item: Item): boolean {
    const q = this.queues[item.priority];
    const i = q.indexOf(item);
    if (i < 0) return false;
    q.splice(i, 1);
    this.queued--;
    const ps = this.peers.get(item.peer)!;
    const pq = ps.queues[item.rank]!;
    pq.splice(pq.indexOf(item), 1);
    ps.queued--;
    ps.queuedBytes -= item.len;
    return true;
  }

  /** The peer's state, created on first sight; the table is bounded (see MAX_PEERS). */
  private peerState(peer: string, now: number): PeerState {
    let ps = this.peers.get(peer);
    if (ps) return ps;
    ps = {
      id: peer, queues: PRIORITIES.map(() => []), startTag: this.vtime, finishTag: this.vtime,
      queued: 0, queuedBytes: 0, airtimeMs: 0, frames: 0, messagesSent: 0, queueFullDrops: 0, recent: [], lastActiveMs: now,
    };
    // Make room first (the newcomer itself has nothing queued yet and must not be the one forgotten).
    if (this.peers.size >= MAX_PEERS) this.forgetIdlePeers(now, MAX_PEERS - 1);
    this.peers.set(peer, ps);
    return ps;
  }

  /** Forget peers with nothing queued and no airtime in the last hour, least recently active first, down to `keep`. */
  private forgetIdlePeers(now: number, keep: number): void {
    const idle = [...this.peers.values()]
      .filter((p) => p.queued === 0 && this.prunePeerHistory(p, now).length === 0)
      .sort((a, b) => a.lastActiveMs - b.lastActiveMs);
    for (const p of idle) {
      if (this.peers.size <= keep) break;
      this.peers.delete(p.id);
    }
  }

  /** Drops a peer's frames that ended before the last hour; returns the rest. */
  private prunePeerHistory(p: PeerState, now: number): readonly LedgerEntry[] {
    const from = now - HOUR_MS;
    let drop = 0;
    while (drop < p.recent.length && p.recent[drop]!.startMs + p.recent[drop]!.airtimeMs <= from) drop++;
    if (drop > 0) p.recent.splice(0, drop);
    return p.recent;
  }

  /** A peer's airtime inside [now − 1 h, now), as the ledgers count it. */
  private peerAirtimeLastHour(p: PeerState, now: number): number {
    const from = now - HOUR_MS;
    let sum = 0;
    for (const e of this.prunePeerHistory(p, now)) sum += Math.max(0, Math.min(e.startMs + e.airtimeMs, now) - Math.max(e.startMs, from));
    return sum;
  }

  /**
   * Expected wait (ms from now) before a new message of `len` bytes, this priority and for this
   * peer would start on air: the scheduling decision replayed forward on copies of the ledgers
   * and the fair-queueing tags over everything queued, each message as its own frame, with no
   * further arrivals, until the new message goes. Packing only makes it sooner. Throws
   * ERR_DWELL_TIME if such a message can never be sent here.
   */
  estimateWaitMs(len: number, priority: Priority, peer = ''): number {
    const now = this.clock.now();
    const L = this.ledger.clone();
    const caps = this.capLedgers.map((c) => ({ ...c, ledger: c.ledger.clone() }));
    const peers = new Map<string, SchedPeer<SchedItem>>();
    for (const p of this.peers.values()) {
      if (p.queued > 0) peers.set(p.id, { id: p.id, queues: p.queues.map((q) => [...q]), startTag: p.startTag, finishTag: p.finishTag });
    }
    const control: SchedItem[] = [...this.queues.control];
    const rank = PRIORITIES.indexOf(priority);
    const mine: SchedItem = { len: Math.max(1, Math.min(len, this.maxMessageLen)), rank, seq: Infinity, peer };
    let mp = peers.get(peer);
    if (!mp) {
      const known = this.peers.get(peer);
      const startTag = Math.max(known?.finishTag ?? 0, this.vtime);
      mp = { id: peer, queues: PRIORITIES.map(() => []), startTag, finishTag: startTag };
      peers.set(peer, mp);
    }
    mp.queues[rank]!.push(mine);
    if (rank === 0) control.push(mine);
    const vt = { v: this.vtime };
    const drop = (it: SchedItem): void => {
      const q = peers.get(it.peer)!.queues[it.rank]!;
      q.splice(q.indexOf(it), 1);
      if (it.rank === 0) control.splice(control.indexOf(it), 1);
    };
    let t = now;
    // Each pass either sends a message or moves t to a later moment where the decision may change.
    for (let guard = 0; guard < 16 * (this.queued + 2); guard++) {
      const c = this.choose(t, L, caps, control, peers.values());
      if (c.failed) {
        if (c.failed.item === mine) throw c.failed.error;
        drop(c.failed.item);
        continue;
      }
      if (!c.item || c.atMs > t) {
        if (!Number.isFinite(c.wakeAtMs)) break;
        t = c.wakeAtMs;
        continue;
      }
      const a = this.airtimeOf([c.item.len]);
      L.record(t, a);
      for (const cap of caps) if (cap.rank <= c.item.rank) cap.ledger.record(t, a);
      this.charge(vt, peers.get(c.item.peer)!, c.item.rank, a, c.passed);
      if (c.item === mine) return t - now;
      drop(c.item);
    }
    // Not reached for sendable messages; the law alone is a lower bound.
    return this.earliestFor(this.ledger, this.capsFor(rank), this.airtimeOf([mine.len]), t) - now;
  }

  /**
   * The scheduling decision (see the header), on the live state or on the copies of a replay:
   * control first (FIFO); else peers in order of virtual finish, each offering its highest-class
   * message; the first whose reserves do not hold it back beyond the law is chosen.
   */
  private choose<I extends SchedItem>(now: number, L: DutyCycleLedger, caps: readonly CapLedger[], control: readonly I[], peers: Iterable<SchedPeer<I>>): Choice<I> {
    const timing = (it: I): { law: number; at: number; a: number } => {
      const a = this.airtimeOf([it.len]);
      const law = L.nextAllowedAt(a, now);
      const at = this.earliestFor(L, caps.filter((c) => c.rank <= it.rank).map((c) => c.ledger), a, now);
      return { law, at, a };
    };
    const c0 = control[0];
    if (c0) {
      try {
        const { at } = timing(c0);
        return { item: c0, atMs: at, wakeAtMs: at, passed: [] };
      } catch (error) {
        return { item: null, atMs: Infinity, wakeAtMs: Infinity, passed: [], failed: { item: c0, error } };
      }
    }
    const cands: { p: SchedPeer<I>; head: I; key: number }[] = [];
    for (const p of peers) {
      let head: I | undefined;
      for (let r = 1; r < p.queues.length && !head; r++) head = p.queues[r]![0];
      if (head) cands.push({ p, head, key: p.startTag + this.airtimeOf([head.len]) / this.weightOf(p.id) });
    }
    cands.sort((x, y) => x.key - y.key || x.head.rank - y.head.rank || x.head.seq - y.head.seq);
    // `limit`: heads of this rank or lower are covered by a reserve that holds a fairer peer back.
    let limit = PRIORITIES.length;
    let wakeAtMs = Infinity;
    const passed: SchedPeer<I>[] = [];
    for (const { p, head } of cands) {
      if (head.rank >= limit) { passed.push(p); continue; }
      let tm: { law: number; at: number; a: number };
      try {
        tm = timing(head);
      } catch (error) {
        return { item: null, atMs: Infinity, wakeAtMs: Infinity, passed: [], failed: { item: head, error } };
      }
      wakeAtMs = Math.min(wakeAtMs, tm.at);
      if (tm.at <= tm.law) return { item: head, atMs: tm.at, wakeAtMs, passed };
      // Held by a reserve: the lowest-ranked (widest) reserve that is binding at the law's moment.
      passed.push(p);
      let held = head.rank;
      for (const c of caps) if (c.rank <= head.rank && c.rank < held && c.ledger.nextAllowedAt(tm.a, tm.law) > tm.law) held = c.rank;
      limit = Math.min(limit, held);
    }
    return { item: null, atMs: Infinity, wakeAtMs, passed };
  }

  /**
   * Charge a frame of `airtimeMs` to `peer` (SFQ): its tags move by airtime/weight; a non-control
   * frame moves the virtual time to its start tag, and peers that were passed over (held by a
   * reserve) catch up with it, so being held earns no credit.
   */
  private charge<I extends SchedItem>(vt: { v: number }, peer: SchedPeer<I>, rank: number, airtimeMs: number, passed: readonly SchedPeer<I>[]): void {
    const start = peer.startTag;
    if (rank > 0) {
      vt.v = Math.max(vt.v, start);
      for (const p of passed) if (p !== peer) p.startTag = Math.max(p.startTag, vt.v);
    }
    peer.finishTag = start + airtimeMs / this.weightOf(peer.id);
    peer.startTag = peer.finishTag;
  }

  /** Sub-ledgers that a frame whose messages are all of rank ≥ r must satisfy. */
  private capsFor(r: number): DutyCycleLedger[] {
    return this.capLedgers.filter((c) => c.rank <= r).map((c) => c.ledger);
  }

  /** Earliest start satisfying the main ledger and the given caps (each monotone: iterate to a fixpoint). */
  private earliestFor(main: DutyCycleLedger, caps: readonly DutyCycleLedger[], a: number, from: number): number {
    let t = main.nextAllowedAt(a, from);
    for (;;) {
      let moved = false;
      for (const c of caps) {
        const u = c.nextAllowedAt(a, t);
        if (u > t) { t = main.nextAllowedAt(a, u); moved = true; }
      }
      if (!moved) return t;
    }
  }

  /** Each cap's share of a frame's airtime: the bytes of messages of that class or below. */
  private capPortions(items: readonly Item[], airtime: number): number[] {
    const total = this.payloadBytes(items);
    return this.capLedgers.map((c) => {
      let n = 0;
      for (const it of items) if (PRIORITIES.indexOf(it.priority) >= c.rank) n += it.payload.length;
      return (airtime * n) / total;
    });
  }

  /** Decide: send now, or set a timer for the exact moment the decision may change. */
  private pump(): void {
    if (this.busy || this.sensing || this.closed) return;
    const now = this.clock.now();
    const c = this.choose(now, this.ledger, this.capLedgers, this.queues.control, this.peers.values());
    if (c.failed) {
      // Cannot happen for validated items unless the rules changed; fail the item, not the queue.
      const it = c.failed.item;
      this.remove(it);
      it.timer?.cancel();
      it.reject(c.failed.error);
      this.pump();
      return;
    }
    const head = c.item;
    if (!head || c.atMs > now) {
      if (Number.isFinite(c.wakeAtMs)) this.setWake(c.wakeAtMs); else this.cancelWake();
      return;
    }
    if (this.access) {
      // The ledger allows the head now; the medium-access rules decide the moment.
      const g = this.access.grant(now);
      if (typeof g !== 'number') {
        this.cancelWake();
        this.sensing = true;
        const resume = (): void => { this.sensing = false; this.pump(); };
        g.then(resume, resume);
        return;
      }
      if (g > now) {
        if (Number.isFinite(g)) this.setWake(g); else this.cancelWake();
        return;
      }
    }
    this.cancelWake();
    this.sendNow(head, this.airtimeOf([head.len]), now, c.passed as PeerState[]);
  }

  private setWake(atMs: number): void {
    if (this.wake && this.wakeAtMs === atMs) return;
    this.cancelWake();
    this.wakeAtMs = atMs;
    this.wake = this.clock.setTimer(atMs - this.clock.now(), () => {
      this.wake = null;
      this.wakeAtMs = Infinity;
      this.pump();
    });
  }

  private cancelWake(): void {
    this.wake?.cancel();
    this.wake = null;
    this.wakeAtMs = Infinity;
  }

  private payloadBytes(items: readonly Item[]): number {
    let n = 0;
    for (const it of items) n += it.payload.length;
    return n;
  }

  /** First fit: candidates in class order, FIFO within a class, each added if the frame stays legal now. */
  private packFirstFit(head: Item, aHead: number, now: number): { items: Item[]; airtime: number } {
    const frameItems: Item[] = [head];
    let airtime = aHead;
    for (const q of this.peers.get(head.peer)!.queues) {
      for (const it of q) {
        if (frameItems.length >= MAX_PACKED_MESSAGES) return { items: frameItems, airtime };
        if (it === head) continue;
        const trial = [...frameItems, it];
        const a = this.packedAirtimeIfLegal(trial, airtime, it, now);
        if (a === null) continue;
        frameItems.push(it);
        airtime = a;
      }
    }
    return { items: frameItems, airtime };
  }

  /** Airtime of `trial` if it may go now, fits, and saves airtime over sending `added` apart. */
  private packedAirtimeIfLegal(trial: readonly Item[], current: number, added: Item | null, now: number): number | null {
    const lengths = trial.map((x) => x.payload.length);
    if (!orderForPacking(lengths)) return null; // a message over 255 bytes can only be last
    const len = packedLength(lengths);
    if (len > this.maxFrameLen) return null;
    const a = this.frameAirtimeMs(len);
    if (added && !(a < current + this.airtimeOf([added.payload.length]))) return null; // must save airtime
    if (!this.ledger.canSendAt(a, now)) return null;
    const portions = this.capPortions(trial, a);
    if (!this.capLedgers.every((c, i) => portions[i]! <= 0 || c.ledger.canSendAt(portions[i]!, now))) return null;
    return a;
  }

  /**
   * Best fill: the longest frame allowed now, filled by a bounded 0/1 knapsack over the peer's
   * first PACK_CANDIDATES queued messages (class order, FIFO). Control and interactive messages
   * weigh more than any number of bytes, so they are never left out for bulk; then the most
   * bytes; ties go to the older message. Falls back to first fit if the result is not legal.
   */
  private packBestFill(head: Item, aHead: number, now: number): { items: Item[]; airtime: number } {
    const firstFit = this.packFirstFit(head, aHead, now);
    const maxA = this.ledger.maxAirtimeAt(now);
    let maxLen = this.maxFrameLen;
    while (maxLen > head.payload.length + 1 && this.frameAirtimeMs(maxLen) > maxA) maxLen--;
    const cands: Item[] = [];
    for (const q of this.peers.get(head.peer)!.queues) {
      for (const it of q) {
        if (it !== head && it.payload.length <= MAX_INNER_MESSAGE_LEN) cands.push(it);
        if (cands.length >= PACK_CANDIDATES) break;
      }
      if (cands.length >= PACK_CANDIDATES) break;
    }
    const capacity = maxLen - head.payload.length - 1; // the container byte; each added message costs len + 1
    if (cands.length === 0 || capacity <= 1) return firstFit;
    const n = cands.length;
    const value = cands.map((it, i) => {
      const urgent = it.priority === 'control' ? 4e7 : it.priority === 'interactive' ? 2e7 : 0;
      return urgent + (it.payload.length + 1) * 2048 + (n - i);
    });
    // best[c] = best value using capacity c; keep[i][c] marks item i taken at capacity c.
    const best = new Float64Array(capacity + 1);
    const keep = cands.map(() => new Uint8Array(capacity + 1));
    cands.forEach((it, i) => {
      const w = it.payload.length + 1;
      for (let c = capacity; c >= w; c--) {
        const v = best[c - w]! + value[i]!;
        if (v > best[c]!) { best[c] = v; keep[i]![c] = 1; }
      }
    });
    const chosen: Item[] = [];
    let c = capacity;
    for (let i = n - 1; i >= 0; i--) {
      if (keep[i]![c]) { chosen.push(cands[i]!); c -= cands[i]!.payload.length + 1; }
    }
    chosen.reverse();
    if (chosen.length + 1 > MAX_PACKED_MESSAGES) return firstFit;
    const items = [head, ...chosen];
    const a = this.packedAirtimeIfLegal(items, Infinity, null, now);
    if (a === null) return firstFit;
    return this.payloadBytes(items) > this.payloadBytes(firstFit.items) ? { items, airtime: a } : firstFit;
  }

  private sendNow(head: Item, aHead: number, now: number, passed: readonly PeerState[]): void {
    const { items: frameItems, airtime } = this.packing ? this.packBestFill(head, aHead, now) : { items: [head], airtime: aHead };
    const peer = this.peers.get(head.peer)!;
    const vt = { v: this.vtime };
    this.charge(vt, peer, head.rank, airtime, passed);
    this.vtime = vt.v;
    for (const it of frameItems) {
      this.remove(it);
      it.timer?.cancel();
      it.timer = null;
    }
    const lengths = frameItems.map((x) => x.payload.length);
    const order = this.packing ? orderForPacking(lengths)! : [0];
    const frame = this.packing ? packFrame(order.map((i) => frameItems[i]!.payload)) : head.payload;
    const portions = this.capPortions(frameItems, airtime);
    this.busy = true;
    this.ledger.record(now, airtime);
    this.hourLedger.record(now, airtime);
    this.capLedgers.forEach((c, i) => { if (portions[i]! > 0) c.ledger.record(now, portions[i]!); });
    this.access?.started({ frameLen: frame.length, airtimeMs: airtime, expectsAnswer: frameItems.some((it) => it.expectsAnswer) });

    let sending: Promise<unknown>;
    try {
      sending = this.transmit(frame, head.peer);
    } catch (e) {
      sending = Promise.reject(e);
    }
    sending.then(
      (report) => {
        // Count the frame from the moment the modem took it (never earlier than planned) and for
        // the longer of the computed and the measured airtime.
        // A modem that reports transmit-done resolves at the END of the frame: it started one
        // airtime earlier (never earlier than planned). Counting it from transmit-done instead
        // would hold the channel's ledger closed for one more airtime after every frame.
        const acceptedAt0 = this.clock.now();
        const rep = typeof report === 'object' && report !== null ? report as { airtimeMs?: unknown; endedAtMs?: unknown } : {};
        const measured = typeof rep.airtimeMs === 'number' ? rep.airtimeMs : 0;
        const final = Math.max(airtime, measured);
        const acceptedAt = typeof rep.endedAtMs === 'number' && Number.isFinite(rep.endedAtMs) ? Math.max(now, rep.endedAtMs - final) : acceptedAt0;
        this.ledger.amendLast(acceptedAt, final);
        this.hourLedger.amendLast(acceptedAt, final);
        this.capLedgers.forEach((c, i) => { if (portions[i]! > 0) c.ledger.amendLast(acceptedAt, (final * portions[i]!) / airtime); });
        const sentAtMs = Math.max(now, acceptedAt);
        this.totals.frames++;
        this.totals.messages += frameItems.length;
        this.totals.airtimeMs += final;
        if (final > airtime) {
          peer.finishTag += (final - airtime) / this.weightOf(peer.id);
          peer.startTag = Math.max(peer.startTag, peer.finishTag);
        }
        peer.airtimeMs += final;
        peer.frames++;
        peer.messagesSent += frameItems.length;
        peer.recent.push({ startMs: acceptedAt, airtimeMs: final });
        peer.lastActiveMs = this.clock.now();
        this.busy = false;
        this.access?.finished(true);
        for (const it of frameItems) {
          it.resolve({ sentAtMs, airtimeMs: final, frameLen: frame.length, messagesInFrame: frameItems.length, waitedMs: now - it.enqueuedAtMs });
        }
        this.pump();
      },
      (err: unknown) => {
        // The airtime stays recorded: we cannot know whether any of it went out.
        this.busy = false;
        this.access?.finished(false);
        for (const it of frameItems) it.reject(err);
        this.pump();
      },
    );
  }

  /** JSON for GET /_trickle/status. */
  status(): TxQueueStatus {
    const now = this.clock.now();
    let next: number;
    try {
      if (this.queued > 0) {
        const c = this.choose(now, this.ledger, this.capLedgers, this.queues.control, this.peers.values());
        next = c.failed || !Number.isFinite(c.wakeAtMs) ? now : c.wakeAtMs;
      } else {
        next = this.earliestFor(this.ledger, this.capsFor(0), this.airtimeOf([1]), now);
      }
    } catch {
      next = now;
    }
    // The main ledger is authoritative for an hourly limit (it may hold airtime restored from before
    // a restart); the accounting ledger covers channels without one.
    const dcUse = this.ledger.usage(now).find((u) => u.kind === 'duty-cycle' && u.windowMs === HOUR_MS);
    const hourUsed = dcUse ? dcUse.usedMs : this.hourLedger.usage(now)[0]!.usedMs;
    const perHour = this.rules.dutyCycle === null ? null : this.rules.dutyCycle * HOUR_MS;
    const sendable = this.busy ? 0 : this.ledger.maxAirtimeAt(now);
    const queue = {} as Record<Priority, QueueClassStatus>;
    for (const p of PRIORITIES) {
      const q = this.queues[p];
      queue[p] = { messages: q.length, bytes: q.reduce((s, x) => s + x.payload.length, 0), oldestWaitMs: q[0] ? now - q[0].enqueuedAtMs : null };
    }
    return {
      nowMs: now,
      transmitting: this.busy,
      subBands: [{
        id: this.rules.subBandId,
        regulation: this.rules.regulation,
        dutyCycle: this.rules.dutyCycle,
        airtimeUsedLastHourMs: round3(hourUsed),
        budgetPerHourMs: perHour,
        budgetLeftMs: perHour === null ? null : round3(Math.max(0, perHour - hourUsed)),
        limits: this.ledger.usage(now).map(roundUsage),
        nextAllowedSendAtMs: next,
        nextAllowedSendInMs: next - now,
        sendableNowMs: Number.isFinite(sendable) ? round3(sendable) : null,
        reserves: this.capLedgers.map((c) => ({ classes: PRIORITIES.slice(c.rank), share: c.share, limits: c.ledger.usage(now).map(roundUsage) })),
      }],
      queue,
      totals: { ...this.totals, airtimeMs: round3(this.totals.airtimeMs) },
      peers: [...this.peers.values()].sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)).map((p) => {
        let oldest = Infinity;
        for (const q of p.queues) if (q[0]) oldest = Math.min(oldest, q[0].enqueuedAtMs);
        return {
          peer: p.id,
          weight: this.weightOf(p.id),
          airtimeMs: round3(p.airtimeMs),
          airtimeLastHourMs: round3(this.peerAirtimeLastHour(p, now)),
          frames: p.frames,
          messagesSent: p.messagesSent,
          queuedMessages: p.queued,
          queuedBytes: p.queuedBytes,
          oldestWaitMs: Number.isFinite(oldest) ? now - oldest : null,
          queueFullDrops: p.queueFullDrops,
        };
      }),
    };
  }

  /** Stop: cancel timers and reject everything still queued with ERR_LINK_CLOSED. */
  close(): void {
    this.closed = true;
    this.cancelWake();
    for (const p of PRIORITIES) {
      for (const it of this.queues[p].splice(0)) {
        it.timer?.cancel();
        it.reject(new TrickleError('ERR_LINK_CLOSED', 'scheduler', 'the transmit queue was closed before this message was sent'));
      }
    }
    for (const p of this.peers.values()) {
      for (const q of p.queues) q.length = 0;
      p.queued = 0;
      p.queuedBytes = 0;
    }
    this.queued = 0;
  }
}

/**
 * An order of the messages that the container can carry (a message over 255 bytes must be last),
 * keeping the given order otherwise; null if impossible.
 */
function orderForPacking(lengths: readonly number[]): number[] | null {
  const idx = lengths.map((_, i) => i);
  const big = idx.filter((i) => lengths[i]! > MAX_INNER_MESSAGE_LEN);
  if (big.length > 1) return null;
  const order = big.length === 1 ? [...idx.filter((i) => i !== big[0]), big[0]!] : idx;
  return canPack(order.map((i) => lengths[i]!)) ? order : null;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function roundUsage(u: LimitUsage): LimitUsage {
  return { ...u, usedMs: round3(u.usedMs), leftMs: round3(u.leftMs), budgetMs: round3(u.budgetMs) };
}

/**
 * CoAP ACK_TIMEOUT for a confirmable message over this link (RFC 7252 §4.8 leaves ACK_TIMEOUT to
 * the deployment; 2 s is a default for fast links, wrong for one that may wait minutes): our wait
 * and airtime, the peer's turnaround and wait before its ACK, and the ACK's airtime, times a
 * safety factor (RFC 7252's ACK_RANDOM_FACTOR is 1.5).
 */
export function coapAckTimeoutMs(p: {
  ownWaitMs: number;
  ownAirtimeMs: number;
  ackAirtimeMs: number;
  peerWaitMs?: number;
  peerTurnaroundMs?: number;
  factor?: number;
}): number {
  const base = p.ownWaitMs + p.ownAirtimeMs + (p.peerTurnaroundMs ?? 200) + (p.peerWaitMs ?? 0) + p.ackAirtimeMs;
  return Math.ceil(base * (p.factor ?? 1.5));
}
