/**
 * Host side of sync shaping: `SyncStore` holds what the gateway pushed (sync-delta.ts deltas) and
 * answers EVERY local client's `GET /_matrix/client/v3/sync` from it, so no client long-poll crosses
 * the radio (DESIGN.md "No chatter on an idle link"). Pure: no I/O, no timers, clock values passed in;
 * `exportState()` is plain JSON the host persists (DESIGN.md "Nothing lost").
 *
 * POSITIONS AND TOKENS (all local: they never go on air)
 *   Every write to the store takes the next integer position `p` (event, state change, account data,
 *   receipt, to-device message, …). A local client's `next_batch` is `trickle_s_<epoch>_<pos>`: the
 *   next incremental answer holds everything written after `pos`, so any number of local clients
 *   sync independently. `epoch` is chosen by the caller when the store is created (random); a since
 *   token of another epoch, or garbage, is answered like an initial sync (every room `limited`).
 *   Pagination tokens handed out as `prev_batch`/`end`:
 *     - a homeserver token (the `prev_batch` the gateway sent for the start of a run of events): the
 *       host forwards /messages as it is;
 *     - `trickle_b_<epoch>_<p>_<eventId>`: "just before stored event p" — answered by `messages()`;
 *     - `trickle_b_<epoch>_end`: the live end of the room;
 *     - `trickle_c_<epoch>_<eventId>`: "before this event, which the store no longer pages past":
 *       `messages()` says `{kind:'context'}`; the host gets a homeserver token with
 *       GET /rooms/{roomId}/context/{eventId}?limit=0 (its `start`) and forwards /messages with it.
 *
 * ORDER AND IDEMPOTENCE
 *   A room's timeline is kept in homeserver order. Deltas carry a cumulative seq: a delta with
 *   seq ≤ the last applied one is ignored; a newer one may overlap what was applied (a re-send),
 *   and the per-room event count `n` (RoomDelta.n) says which of its events are already here; event
 *   ids are checked as well. Own echoes (`synthesizeOwnEcho`) sit after the confirmed events until
 *   the same event id arrives in a delta; then the echo moves to its homeserver position keeping its
 *   store position and `unsigned.transaction_id` — clients that already had it do not get it again.
 *   A homeserver gap (RoomDelta.limited) before an echo that never arrived confirms the echo in place.
 *
 * BOUNDS (documented limits of the persisted state)
 *   - the last `maxEventsPerRoom` (M, default 200) timeline events per room; older ones are paged
 *     from the homeserver (see tokens); the ids of the last 64 pruned ones (an own echo must come
 *     within 64 events of the room after its event, or it could be shown twice);
 *   - current room state in full (all state events received: lazy-loaded members only);
 *   - receipts: the newest per (receipt type, user, thread); typing: the newest m.typing;
 *   - to-device: until a local client syncs with a since token past them (as a homeserver deletes
 *     them), at most `maxToDevice` (1000);
 *   - rooms left: the `maxLeftRooms` (50) most recent; invites/knocks until they change;
 *   - presence: the newest per user, at most `maxPresence` (500) users;
 *   - device list changes: the newest per user, at most 2000.
 */
import { chunksOf, lastTimelineTs, receiptContent, receiptEntries } from './sync-delta.ts';
import {
  clone, isObject, jsonEqual, matchesEventFilter, matchesRoomFilter, stateKeyOf,
  type ClientFilter, type JsonObject, type MatrixEvent, type RoomDelta, type RoomEventFilter, type RoomSummary, type SyncDelta,
  type SyncResponse, type UnreadNotificationCounts,
} from './sync-types.ts';

export interface SyncStoreOptions {
  /** Distinguishes this store's tokens from those of an earlier, lost store ([A-Za-z0-9]+). */
  epoch: string;
  maxEventsPerRoom: number;
  maxToDevice: number;
  maxLeftRooms: number;
  maxPresence: number;
}

export const DEFAULT_SYNC_STORE_OPTIONS: Readonly<SyncStoreOptions> = Object.freeze({
  epoch: '0', maxEventsPerRoom: 200, maxToDevice: 1000, maxLeftRooms: 50, maxPresence: 500,
});

/** Synapse's default timeline limit when a client's filter names none. */
const DEFAULT_TIMELINE_LIMIT = 10;
const MAX_TIMELINE_LIMIT = 1000;
const MAX_DEVICE_LIST_USERS = 2000;
const PRUNED_IDS = 64;

type Membership = 'join' | 'leave' | 'invite' | 'knock';

interface Stored { p: number; e: MatrixEvent }
/** A timeline entry. echo: an own echo not yet seen in a delta; gap: the homeserver skipped events
 *  just before it; anchor: a homeserver pagination token just before it. */
interface TimelineEntry extends Stored { echo?: true; gap?: true; anchor?: string }
interface Valued<T> { p: number; v: T }
interface ReceiptEntry { p: number; eventId: string; rtype: string; user: string; data: unknown }

interface RoomRecord {
  m: Membership;
  /** Position of the last membership change. */
  mp: number;
  /** Position at which the room was (re)joined: a client whose since is older gets its full state. */
  jp: number;
  /** Timeline events applied from deltas (the gateway's `n` numbering). */
  count: number;
  tl: TimelineEntry[];
  /** Highest position among events pruned from `tl` (0: none pruned). */
  prunedP: number;
  /** Ids of the last PRUNED_IDS events pruned, so a late own echo of one is not taken for new. */
  prunedIds?: string[];
  state: Record<string, Stored>;
  ad: Record<string, Stored>;
  unread?: Valued<UnreadNotificationCounts>;
  threads?: Valued<Record<string, UnreadNotificationCounts>>;
  summary?: Valued<RoomSummary>;
  typing?: Stored;
  receipts: Record<string, ReceiptEntry>;
  invite?: Valued<MatrixEvent[]>;
  knock?: Valued<MatrixEvent[]>;
  /** origin_server_ts of the last timeline event applied from a delta (sync-wire's time base). */
  lts?: number;
}

/** Plain-JSON state of a SyncStore. */
export interface SyncStoreState {
  version: 1;
  epoch: string;
  pos: number;
  /** Last delta seq applied. */
  seq: number;
  /** Homeserver next_batch of recent deltas, by the store position after them (newest last). */
  hsTokens: [number, string][];
  progress?: { roomsDone: number; roomsTotal: number };
  rooms: Record<string, RoomRecord>;
  ad: Record<string, Stored>;
  toDevice: Stored[];
  toDeviceCount: number;
  deviceLists: Record<string, { p: number; left: boolean }>;
  otk?: Valued<Record<string, number>>;
  fallback?: Valued<string[]>;
  presence: Record<string, Stored>;
}

export interface OwnEcho {
  roomId: string;
  type: string;
  content: JsonObject;
  /** The local client's transaction id (the one in its PUT …/send/{type}/{txnId}). */
  txnId: string;
  sender: string;
  eventId: string;
  originServerTs: number;
  /** For state events sent with PUT …/state/{type}/{stateKey}. */
  stateKey?: string;
}

export interface AnswerOptions {
  /** `full_state=true` in the request. */
  fullState?: boolean;
  /** Clock value: when given, events get `unsigned.age` = nowMs − origin_server_ts as a homeserver would. */
  nowMs?: number;
}

export interface MessagesRequest {
  from?: string;
  dir: 'b' | 'f';
  limit?: number;
  filter?: RoomEventFilter;
}

export type MessagesResult =
  /** Answer the client with this body. */
  | { kind: 'local'; response: { chunk: MatrixEvent[]; start: string; end?: string; state: MatrixEvent[] } }
  /** Forward the request to the homeserver: unchanged, or with `from` replaced by this homeserver token. */
  | { kind: 'homeserver'; from?: string }
  /** Get a homeserver token before eventId (GET …/context/{eventId}?limit=0 → start), then forward /messages from it. */
  | { kind: 'context'; eventId: string };

export class SyncStore {
  readonly options: Readonly<SyncStoreOptions>;
  private s: SyncStoreState;

  constructor(options: Partial<SyncStoreOptions> = {}, state?: SyncStoreState) {
    this.options = { ...DEFAULT_SYNC_STORE_OPTIONS, ...options };
    if (!/^[A-Za-z0-9]+$/.test(this.options.epoch)) throw new Error('SyncStore epoch must be [A-Za-z0-9]+');
    if (state !== undefined) {
      if (state.version !== 1) throw new Error(`SyncStore state version ${String(state.version)} is not 1`);
      this.s = clone(state);
    } else {
      this.s = { version: 1, epoch: this.options.epoch, pos: 0, seq: 0, hsTokens: [], rooms: {}, ad: {}, toDevice: [], toDeviceCount: 0, deviceLists: {}, presence: {} };
    }
  }

  /** The newest position: a waiter for `since` wakes when this exceeds `waitKey(since)`. */
  get position(): number { return this.s.pos; }
  /** The last delta seq applied (acknowledge this one to the gateway). */
  get lastAppliedSeq(): number { return this.s.seq; }
  /** Initial-sync progress as last pushed by the gateway. */
  get progress(): { roomsDone: number; roomsTotal: number } | undefined { return this.s.progress; }
  get epoch(): string { return this.s.epoch; }
  /** The timestamp of the last timeline event of `roomId` applied from a delta (sync-wire's time base). */
  lastTimelineTs(roomId: string): number | undefined { return this.s.rooms[roomId]?.lts; }

  exportState(): SyncStoreState { return clone(this.s); }

  /** The position a long-poll with this since token waits past (−1: answer at once). */
  waitKey(since: string | undefined): number {
    const p = this.parseSince(since);
    return p === undefined ? -1 : p;
  }

  hasNewerThan(since: string | undefined): boolean { return this.s.pos > this.waitKey(since); }

  /** The homeserver since token matching a local one (newest delta applied at or before it), for
   *  requests that take sync tokens (/keys/changes); undefined when not known. */
  homeserverToken(localSince: string): string | undefined {
    const p = this.parseSince(localSince);
    if (p === undefined) return undefined;
    let best: string | undefined;
    for (const [pos, tok] of this.s.hsTokens) if (pos <= p) best = tok;
    return best;
  }

  // ---------------------------------------------------------------------------------------------
  // Writing

  /**
   * Apply a delta from the gateway. Returns whether anything was applied, and the seq to
   * acknowledge (after the caller has persisted `exportState()`).
   */
  applyDelta(delta: SyncDelta): { applied: boolean; ackSeq: number } {
    if (!isObject(delta) || !Number.isInteger(delta.seq)) throw new TypeError('not a sync delta: seq missing');
    if (delta.seq <= this.s.seq) return { applied: false, ackSeq: this.s.seq };
    this.s.seq = delta.seq;
    const rooms = delta.rooms ?? {};
    for (const [roomId, rd] of Object.entries(rooms.join ?? {})) this.applyRoom(roomId, rd, 'join');
    for (const [roomId, rd] of Object.entries(rooms.leave ?? {})) this.applyRoom(roomId, rd, 'leave');
    for (const [roomId, r] of Object.entries(rooms.invite ?? {})) this.applyInviteLike(roomId, 'invite', r.invite_state ?? []);
    for (const [roomId, r] of Object.entries(rooms.knock ?? {})) this.applyInviteLike(roomId, 'knock', r.knock_state ?? []);

    for (const e of delta.account_data ?? []) this.setStored(this.s.ad, e.type, e);
    if (delta.presence) {
      for (const e of delta.presence) if (e.sender !== undefined) { delete this.s.presence[e.sender]; this.setStored(this.s.presence, e.sender, e); }
      trimRecord(this.s.presence, this.options.maxPresence);
    }
    if (delta.to_device) {
      const n = delta.to_device_n ?? this.s.toDeviceCount;
      const skip = Math.max(0, this.s.toDeviceCount - n);
      delta.to_device.forEach((e, i) => { if (i >= skip) this.s.toDevice.push({ p: ++this.s.pos, e: clone(e) }); });
      this.s.toDeviceCount = Math.max(this.s.toDeviceCount, n + delta.to_device.length);
      if (this.s.toDevice.length > this.options.maxToDevice) this.s.toDevice.splice(0, this.s.toDevice.length - this.options.maxToDevice);
    }
    if (delta.device_lists) {
      for (const u of delta.device_lists.changed ?? []) { delete this.s.deviceLists[u]; this.s.deviceLists[u] = { p: ++this.s.pos, left: false }; }
      for (const u of delta.device_lists.left ?? []) { delete this.s.deviceLists[u]; this.s.deviceLists[u] = { p: ++this.s.pos, left: true }; }
      trimRecord(this.s.deviceLists, MAX_DEVICE_LIST_USERS);
    }
    if (delta.device_one_time_keys_count && !jsonEqual(delta.device_one_time_keys_count, this.s.otk?.v)) {
      this.s.otk = { p: ++this.s.pos, v: { ...delta.device_one_time_keys_count } };
    }
    if (delta.device_unused_fallback_key_types && !jsonEqual(delta.device_unused_fallback_key_types, this.s.fallback?.v)) {
      this.s.fallback = { p: ++this.s.pos, v: [...delta.device_unused_fallback_key_types] };
    }
    if (delta.progress) this.s.progress = { ...delta.progress };
    if (delta.next_batch !== undefined) {
      this.s.hsTokens.push([this.s.pos, delta.next_batch]);
      if (this.s.hsTokens.length > 64) this.s.hsTokens.shift();
    }
    this.trimLeftRooms();
    return { applied: true, ackSeq: this.s.seq };
  }

  /**
   * A local client's send succeeded (the homeserver's event id came back over the air): insert the
   * event as its own echo, with `unsigned.transaction_id` = the client's txn id, so the remote echo
   * never has to cross the air. Returns false if the event was already in the store (the delta came
   * first; the stored event then gains the transaction id).
   */
  synthesizeOwnEcho(echo: OwnEcho): boolean {
    if (!this.s.rooms[echo.roomId]) {
      const r = this.room(echo.roomId);
      r.mp = r.jp = ++this.s.pos;
    }
    const room = this.room(echo.roomId);
    if (room.prunedIds?.includes(echo.eventId)) return false;
    const known = room.tl.find((x) => x.e.event_id === echo.eventId);
    if (known) {
      known.e = { ...known.e, unsigned: { ...(known.e.unsigned ?? {}), transaction_id: echo.txnId } };
      return false;
    }
    const e: MatrixEvent = {
      type: echo.type, content: clone(echo.content), sender: echo.sender, event_id: echo.eventId,
      origin_server_ts: echo.originServerTs, unsigned: { transaction_id: echo.txnId },
    };
    if (echo.stateKey !== undefined) e.state_key = echo.stateKey;
    const entry: TimelineEntry = { p: ++this.s.pos, e, echo: true };
    room.tl.push(entry);
    if (e.state_key !== undefined) room.state[stateKeyOf(e)] = { p: entry.p, e };
    if (e.type === 'm.room.redaction') this.redact(room, e);
    this.prune(room);
    return true;
  }

  private room(roomId: string): RoomRecord {
    let r = this.s.rooms[roomId];
    if (!r) {
      r = { m: 'join', mp: 0, jp: 0, count: 0, tl: [], prunedP: 0, state: {}, ad: {}, receipts: {} };
      this.s.rooms[roomId] = r;
    }
    return r;
  }

  private setStored(rec: Record<string, Stored>, key: string, e: MatrixEvent): void {
    if (rec[key] && jsonEqual(rec[key].e, e)) return;
    rec[key] = { p: ++this.s.pos, e: clone(e) };
  }

  private applyInviteLike(roomId: string, m: 'invite' | 'knock', events: MatrixEvent[]): void {
    const room = this.room(roomId);
    room.m = m;
    room.mp = ++this.s.pos;
    delete room.invite; delete room.knock;
    room[m] = { p: room.mp, v: clone(events) };
  }

  private applyRoom(roomId: string, rd: RoomDelta, section: 'join' | 'leave'): void {
    const known = this.s.rooms[roomId] !== undefined;
    const room = this.room(roomId);
    if (!known || room.m !== section) {
      room.m = section;
      room.mp = ++this.s.pos;
      if (section === 'join') room.jp = room.mp;
      // The gateway starts its memory of counts, summary and typing afresh on a membership change.
      delete room.invite; delete room.knock; delete room.unread; delete room.threads; delete room.summary; delete room.typing;
    }
    let idx = rd.n ?? room.count;
    // The gateway believes we hold events we never got (state lost here): the next event follows a gap.
    let missing = idx > room.count;
    if (missing) room.count = idx;
    for (const chunk of chunksOf(rd)) {
      const events = chunk.timeline ?? [];
      if (chunk.state && idx >= room.count) {
        for (const e of chunk.state) {
          const k = stateKeyOf(e);
          if (room.state[k]?.e.event_id === e.event_id && e.event_id !== undefined) continue;
          room.state[k] = { p: ++this.s.pos, e: clone(e) };
        }
      }
      events.forEach((e, i) => {
        if (idx < room.count) { idx++; return; }
        const first = i === 0;
        const gap = (first && chunk.limited === true && room.tl.length > 0) || missing;
        missing = false;
        this.insertConfirmed(room, e, gap, first ? chunk.prev_batch : undefined);
        room.count++;
        idx++;
      });
    }
    const lts = lastTimelineTs(rd);
    if (lts !== undefined) room.lts = lts;
    for (const e of rd.account_data ?? []) this.setStored(room.ad, e.type, e);
    for (const e of rd.ephemeral ?? []) {
      if (e.type === 'm.typing') {
        if (!room.typing || !jsonEqual(room.typing.e, e)) room.typing = { p: ++this.s.pos, e: clone(e) };
      } else if (e.type === 'm.receipt') {
        for (const { key, eventId, rtype, user, data } of receiptEntries(e)) {
          const old = room.receipts[key];
          if (old && old.eventId === eventId && jsonEqual(old.data, data)) continue;
          room.receipts[key] = { p: ++this.s.pos, eventId, rtype, user, data: clone(data) };
        }
      }
    }
    if (rd.unread_notifications) {
      const merged = { ...(room.unread?.v ?? {}), ...rd.unread_notifications };
      if (!jsonEqual(merged, room.unread?.v)) room.unread = { p: ++this.s.pos, v: merged };
    }
    if (rd.unread_thread_notifications && !jsonEqual(rd.unread_thread_notifications, room.threads?.v)) room.threads = { p: ++this.s.pos, v: clone(rd.unread_thread_notifications) };
    if (rd.summary) {
      const merged = { ...(room.summary?.v ?? {}), ...rd.summary };
      if (!jsonEqual(merged, room.summary?.v)) room.summary = { p: ++this.s.pos, v: clone(merged) };
    }
    this.prune(room);
  }

  private insertConfirmed(room: RoomRecord, e: MatrixEvent, gap: boolean, anchor: string | undefined): void {
    if (gap) for (const x of room.tl) delete x.echo; // an echo lost in the gap is confirmed where it is
    const end = confirmedEnd(room);
    const id = e.event_id;
    if (id !== undefined && room.prunedIds?.includes(id)) return;
    if (id !== undefined) {
      const at = room.tl.findIndex((x) => x.e.event_id === id);
      if (at >= 0) {
        const x = room.tl[at]!;
        if (!x.echo) return; // already here
        // The own echo reaches its homeserver position; it keeps its store position and txn id.
        room.tl.splice(at, 1);
        const txn = x.e.unsigned?.['transaction_id'];
        x.e = { ...clone(e), ...(txn !== undefined ? { unsigned: { ...(e.unsigned ?? {}), transaction_id: txn } } : {}) };
        delete x.echo;
        if (gap) x.gap = true;
        if (anchor !== undefined) x.anchor = anchor;
        room.tl.splice(confirmedEnd(room), 0, x);
        if (e.state_key !== undefined) room.state[stateKeyOf(e)] = { p: x.p, e: x.e };
        return;
      }
    }
    const entry: TimelineEntry = { p: ++this.s.pos, e: clone(e) };
    if (gap) entry.gap = true;
    if (anchor !== undefined) entry.anchor = anchor;
    room.tl.splice(end, 0, entry);
    if (e.state_key !== undefined) room.state[stateKeyOf(e)] = { p: entry.p, e: entry.e };
    if (e.type === 'm.room.redaction') this.redact(room, e);
  }

  /** Spec "Redactions": the stored target loses its content (keys kept per the v11 algorithm). */
  private redact(room: RoomRecord, redaction: MatrixEvent): void {
    const target = typeof redaction['redacts'] === 'string' ? redaction['redacts'] : redaction.content['redacts'];
    if (typeof target !== 'string') return;
    const x = room.tl.find((t) => t.e.event_id === target);
    if (!x || isObject(x.e.unsigned?.['redacted_because'])) return;
    const keep = REDACTION_KEEP[x.e.type];
    const content: JsonObject = {};
    if (keep === '*') Object.assign(content, x.e.content);
    else for (const k of keep ?? []) if (k in x.e.content) content[k] = x.e.content[k];
    const redacted: MatrixEvent = { ...x.e, content, unsigned: { redacted_because: clone(redaction) } };
    x.e = redacted;
    if (redacted.state_key !== undefined && room.state[stateKeyOf(redacted)]?.e.event_id === target) room.state[stateKeyOf(redacted)] = { p: room.state[stateKeyOf(redacted)]!.p, e: redacted };
  }

  /** Drops the oldest confirmed events beyond M; unconfirmed own echoes are never dropped. */
  private prune(room: RoomRecord): void {
    const over = Math.min(room.tl.length - this.options.maxEventsPerRoom, confirmedEnd(room));
    if (over <= 0) return;
    const removed = room.tl.splice(0, over);
    for (const x of removed) if (x.p > room.prunedP) room.prunedP = x.p;
    room.prunedIds = [...(room.prunedIds ?? []), ...removed.flatMap((x) => (x.e.event_id !== undefined ? [x.e.event_id] : []))].slice(-PRUNED_IDS);
  }

  private trimLeftRooms(): void {
    const left = Object.entries(this.s.rooms).filter(([, r]) => r.m === 'leave');
    if (left.length <= this.options.maxLeftRooms) return;
    left.sort((a, b) => a[1].mp - b[1].mp);
    for (const [id] of left.slice(0, left.length - this.options.maxLeftRooms)) delete this.s.rooms[id];
  }

  // ---------------------------------------------------------------------------------------------
  // Reading

  private parseSince(since: string | undefined): number | undefined {
    if (since === undefined) return undefined;
    const m = /^trickle_s_([A-Za-z0-9]+)_(\d+)$/.exec(since);
    if (!m || m[1] !== this.s.epoch) return undefined;
    const p = Number(m[2]);
    return Number.isSafeInteger(p) && p <= this.s.pos ? p : undefined;
  }

  private sinceToken(): string { return `trickle_s_${this.s.epoch}_${this.s.pos}`; }
  /** A token for "just before x": its homeserver anchor, or a store token. */
  private beforeToken(x: TimelineEntry): string { return x.anchor ?? this.localBeforeToken(x); }
  private localBeforeToken(x: TimelineEntry): string { return `trickle_b_${this.s.epoch}_${x.p}_${x.e.event_id ?? ''}`; }
  private contextToken(eventId: string): string { return `trickle_c_${this.s.epoch}_${eventId}`; }

  /**
   * A /sync answer for one local client (spec GET /_matrix/client/v3/sync). `since` undefined, of
   * another epoch or unparsable → initial answer. A valid since also acknowledges to-device messages
   * at or before it (they are then deleted, as a homeserver does).
   */
  answer(clientSince: string | undefined, filter: ClientFilter | undefined, opts: AnswerOptions = {}): SyncResponse {
    const sincePos = this.parseSince(clientSince);
    const initial = sincePos === undefined;
    const since = sincePos ?? 0;
    if (!initial) this.s.toDevice = this.s.toDevice.filter((x) => x.p > since);
    const after = (p: number): boolean => initial || p > since;
    const out = (e: MatrixEvent): MatrixEvent => withAge(e, opts.nowMs);
    const roomFilter = filter?.room;
    const join: Record<string, JsonObject> = {};
    const leave: Record<string, JsonObject> = {};
    const invite: Record<string, JsonObject> = {};
    const knock: Record<string, JsonObject> = {};

    for (const [roomId, room] of Object.entries(this.s.rooms)) {
      if (!matchesRoomFilter(roomFilter, roomId)) continue;
      if (room.m === 'invite' || room.m === 'knock') {
        const v = room[room.m];
        if (v && after(v.p)) (room.m === 'invite' ? invite : knock)[roomId] = { [`${room.m}_state`]: { events: v.v.map((e) => clone(e)) } };
        continue;
      }
      if (room.m === 'leave' && (initial ? roomFilter?.include_leave !== true : room.mp <= since)) continue;
      const full = initial || opts.fullState === true || room.jp > since;
      const tl = this.timelineFor(room, full, since, roomFilter?.timeline);
      const inTimeline = new Set(tl.events.map((e) => e.event_id));
      const stateFilter = roomFilter?.state;
      const state = Object.values(room.state)
        .filter((x) => (full || x.p > since) && !inTimeline.has(x.e.event_id) && matchesEventFilter(stateFilter, x.e))
        .sort((a, b) => a.p - b.p)
        .map((x) => out(x.e));
      const adFilter = roomFilter?.account_data;
      const accountData = Object.values(room.ad).filter((x) => (full || x.p > since) && matchesEventFilter(adFilter, x.e)).map((x) => clone(x.e));
      const timeline: JsonObject = { events: tl.events.map(out), limited: tl.limited };
      if (tl.prevBatch !== undefined) timeline['prev_batch'] = tl.prevBatch;
      if (room.m === 'leave') {
        leave[roomId] = { timeline, state: { events: state }, account_data: { events: accountData } };
        continue;
      }
      const ephFilter = roomFilter?.ephemeral;
      const ephemeral: MatrixEvent[] = [];
      if (room.typing && (full || room.typing.p > since) && matchesEventFilter(ephFilter, room.typing.e)) ephemeral.push(clone(room.typing.e));
      const receipts = Object.values(room.receipts).filter((r) => full || r.p > since);
      if (receipts.length > 0) {
        const ev: MatrixEvent = { type: 'm.receipt', content: receiptContent(receipts) };
        if (matchesEventFilter(ephFilter, ev)) ephemeral.push(ev);
      }
      const changed = full || tl.events.length > 0 || tl.limited || state.length > 0 || accountData.length > 0 || ephemeral.length > 0
        || (room.unread !== undefined && room.unread.p > since) || (room.threads !== undefined && room.threads.p > since)
        || (room.summary !== undefined && room.summary.p > since);
      if (!changed) continue;
      const jr: JsonObject = {
        timeline,
        state: { events: state },
        account_data: { events: accountData },
        ephemeral: { events: ephemeral },
        unread_notifications: { highlight_count: room.unread?.v.highlight_count ?? 0, notification_count: room.unread?.v.notification_count ?? 0 },
        summary: room.summary && (full || room.summary.p > since) ? clone(room.summary.v) : {},
      };
      if (room.threads && (full || room.threads.p > since)) jr['unread_thread_notifications'] = clone(room.threads.v);
      join[roomId] = jr;
    }

    const res: SyncResponse = { next_batch: this.sinceToken() };
    const rooms: NonNullable<SyncResponse['rooms']> = {};
    if (Object.keys(join).length > 0) rooms.join = join;
    if (Object.keys(invite).length > 0) rooms.invite = invite;
    if (Object.keys(leave).length > 0) rooms.leave = leave;
    if (Object.keys(knock).length > 0) rooms.knock = knock;
    res.rooms = rooms;
    res.account_data = { events: Object.values(this.s.ad).filter((x) => after(x.p) && matchesEventFilter(filter?.account_data, x.e)).map((x) => clone(x.e)) };
    res.presence = { events: Object.values(this.s.presence).filter((x) => after(x.p) && matchesEventFilter(filter?.presence, x.e)).map((x) => out(x.e)) };
    res.to_device = { events: this.s.toDevice.filter((x) => after(x.p)).map((x) => clone(x.e)) };
    if (!initial) {
      const dl = Object.entries(this.s.deviceLists).filter(([, d]) => d.p > since);
      res.device_lists = { changed: dl.filter(([, d]) => !d.left).map(([u]) => u), left: dl.filter(([, d]) => d.left).map(([u]) => u) };
    }
    if (this.s.otk) res.device_one_time_keys_count = { ...this.s.otk.v };
    if (this.s.fallback) res.device_unused_fallback_key_types = [...this.s.fallback.v];
    return res;
  }

  private timelineFor(room: RoomRecord, full: boolean, since: number, f: RoomEventFilter | undefined): { events: MatrixEvent[]; limited: boolean; prevBatch?: string } {
    const limit = Math.max(1, Math.min(MAX_TIMELINE_LIMIT, Math.floor(f?.limit ?? DEFAULT_TIMELINE_LIMIT)));
    let entries = full ? room.tl : room.tl.filter((x) => x.p > since);
    // A homeserver gap among the new events: the answer starts after the last one.
    let limited = false;
    let gapAt = -1;
    entries.forEach((x, i) => { if (x.gap) gapAt = i; });
    if (gapAt >= 0) { entries = entries.slice(gapAt); limited = true; }
    // Events after since that were pruned from the store are a gap for this client.
    if (!full && room.prunedP > since) limited = true;
    const filtered = entries.filter((x) => matchesEventFilter(f, x.e));
    const chosen = filtered.length > limit ? filtered.slice(filtered.length - limit) : filtered;
    if (chosen.length < filtered.length) limited = true;
    if (full && chosen.length > 0) {
      const first = chosen[0]!;
      if (first !== room.tl[0] || first.anchor !== undefined || room.prunedP > 0) limited = true;
    }
    const firstEntry = chosen[0];
    let prevBatch = firstEntry ? this.beforeToken(firstEntry) : `trickle_b_${this.s.epoch}_end`;
    // Nothing older is stored and the homeserver's token was pruned: say so at once.
    if (firstEntry && firstEntry === room.tl[0] && firstEntry.anchor === undefined && room.prunedP > 0) prevBatch = this.contextToken(firstEntry.e.event_id ?? '');
    return { events: chosen.map((x) => x.e), limited, prevBatch };
  }

  /**
   * GET /rooms/{roomId}/messages for a local client: answered from the store when `from` is a store
   * token, else `{kind:'homeserver'}` (forward unchanged). Backwards pages stop at the start of a
   * run of events the gateway anchored: `end` is then the homeserver token, so the next page goes
   * over the air.
   */
  messages(roomId: string, req: MessagesRequest, nowMs?: number): MessagesResult {
    const from = req.from;
    const ep = this.s.epoch;
    if (from === undefined) return { kind: 'homeserver' };
    const ctx = new RegExp(`^trickle_c_${ep}_(.+)$`).exec(from);
    if (ctx) return { kind: 'context', eventId: ctx[1]! };
    const room = this.s.rooms[roomId];
    const b = new RegExp(`^trickle_b_${ep}_(?:end|(\\d+)_(.*))$`).exec(from);
    const s = this.parseSince(from);
    if (!b && s === undefined) return { kind: 'homeserver' };
    const limit = Math.max(1, Math.min(MAX_TIMELINE_LIMIT, Math.floor(req.limit ?? 10)));
    const tl = room?.tl ?? [];
    let i: number; // boundary: events tl[0..i) are "before"
    if (b && b[1] !== undefined) {
      const p = Number(b[1]);
      i = tl.findIndex((x) => x.p === p);
      if (i < 0) return b[2] ? { kind: 'context', eventId: b[2] } : { kind: 'local', response: { chunk: [], start: from, state: [] } };
    } else if (s !== undefined && req.dir === 'f') {
      const chunk = tl.filter((x) => x.p > s && matchesEventFilter(req.filter, x.e)).slice(0, limit).map((x) => withAge(x.e, nowMs));
      return { kind: 'local', response: { chunk, start: from, state: [] } };
    } else {
      i = tl.length;
    }
    const chunk: MatrixEvent[] = [];
    let end: string | undefined;
    if (req.dir === 'b') {
      // Right before the boundary lies a homeserver gap: the page comes from the homeserver.
      const at = tl[i];
      if (at?.anchor !== undefined) return { kind: 'homeserver', from: at.anchor };
      if (at?.gap || (i === 0 && at !== undefined && room!.prunedP > 0)) return { kind: 'context', eventId: at.e.event_id ?? '' };
      let j = i - 1;
      for (; j >= 0 && chunk.length < limit; j--) {
        const x = tl[j]!;
        if (matchesEventFilter(req.filter, x.e)) chunk.push(withAge(x.e, nowMs));
        if (x.anchor !== undefined) { end = x.anchor; break; }
        if (x.gap) { end = this.contextToken(x.e.event_id ?? ''); break; }
      }
      if (end === undefined) {
        if (j >= 0) end = this.localBeforeToken(tl[j + 1]!);
        else if (tl.length > 0 && (room!.prunedP > 0 || tl[0]!.e.type !== 'm.room.create')) end = tl[0]!.anchor ?? this.contextToken(tl[0]!.e.event_id ?? '');
      }
    } else {
      let j = i;
      for (; j < tl.length && chunk.length < limit; j++) if (matchesEventFilter(req.filter, tl[j]!.e)) chunk.push(withAge(tl[j]!.e, nowMs));
      if (j < tl.length) end = this.localBeforeToken(tl[j]!);
    }
    const response: { chunk: MatrixEvent[]; start: string; end?: string; state: MatrixEvent[] } = { chunk, start: from, state: [] };
    if (end !== undefined) response.end = end;
    return { kind: 'local', response };
  }

  /** Events of a room in store order (homeserver order, then unconfirmed echoes), for tests and the status page. */
  timeline(roomId: string): MatrixEvent[] { return (this.s.rooms[roomId]?.tl ?? []).map((x) => x.e); }
}

/** Redaction algorithm, room version 11 (spec "Redactions"): content keys kept per event type. */
const REDACTION_KEEP: Record<string, string[] | '*'> = {
  'm.room.member': ['membership', 'join_authorised_via_users_server', 'third_party_invite'],
  'm.room.create': '*',
  'm.room.join_rules': ['join_rule', 'allow'],
  'm.room.power_levels': ['ban', 'events', 'events_default', 'invite', 'kick', 'redact', 'state_default', 'users', 'users_default'],
  'm.room.history_visibility': ['history_visibility'],
  'm.room.redaction': ['redacts'],
};

function confirmedEnd(room: RoomRecord): number {
  const i = room.tl.findIndex((x) => x.echo);
  return i < 0 ? room.tl.length : i;
}

function withAge(e: MatrixEvent, nowMs: number | undefined): MatrixEvent {
  const c = clone(e);
  if (nowMs !== undefined && typeof e.origin_server_ts === 'number') c.unsigned = { ...(c.unsigned ?? {}), age: Math.max(0, nowMs - e.origin_server_ts) };
  return c;
}

function trimRecord(rec: Record<string, unknown>, max: number): void {
  const keys = Object.keys(rec);
  for (let i = 0; i < keys.length - max; i++) delete rec[keys[i]!];
}

/** True when a local answer carries nothing new (the host keeps holding the long-poll). */
export function isEmptySyncResponse(r: SyncResponse): boolean {
  const rooms = r.rooms ?? {};
  if (Object.values(rooms).some((sec) => isObject(sec) && Object.keys(sec).length > 0)) return false;
  for (const k of ['account_data', 'presence', 'to_device'] as const) if ((r[k]?.events.length ?? 0) > 0) return false;
  if ((r.device_lists?.changed?.length ?? 0) > 0 || (r.device_lists?.left?.length ?? 0) > 0) return false;
  return true;
}

/**
 * The parameters of a local client's /sync (spec: since, timeout, filter, full_state, set_presence).
 * `filter` is inline JSON (starts with "{") or a filter id, resolved by the caller's `resolveFilter`
 * (the host remembers the bodies of POST /user/{userId}/filter and the ids the homeserver returned).
 */
export function parseSyncQuery(query: string, resolveFilter: (id: string) => ClientFilter | undefined = () => undefined): {
  since?: string; timeoutMs: number; filter?: ClientFilter; fullState: boolean; setPresence?: string;
} {
  const q = new URLSearchParams(query);
  const out: { since?: string; timeoutMs: number; filter?: ClientFilter; fullState: boolean; setPresence?: string } = {
    timeoutMs: 0, fullState: q.get('full_state') === 'true',
  };
  const since = q.get('since');
  if (since !== null && since !== '') out.since = since;
  const t = Number(q.get('timeout') ?? '0');
  out.timeoutMs = Number.isFinite(t) && t > 0 ? Math.min(t, 600_000) : 0;
  const f = q.get('filter');
  if (f !== null && f !== '') {
    if (f.trimStart().startsWith('{')) {
      try { const j: unknown = JSON.parse(f); if (isObject(j)) out.filter = j as ClientFilter; } catch { /* an unparsable filter is ignored like an unknown id */ }
    } else {
      const r = resolveFilter(f);
      if (r) out.filter = r;
    }
  }
  const sp = q.get('set_presence');
  if (sp !== null) out.setPresence = sp;
  return out;
}

/**
 * Long-polls held by the host, keyed by the position each waits past. Pure bookkeeping: the host
 * adds a waiter (with its own timer), and after every applyDelta / synthesizeOwnEcho calls
 * `due(store.position)` and answers the waiters returned.
 */
export class SyncWaitList<T> {
  private waiters: { after: number; value: T }[] = [];
  add(after: number, value: T): void { this.waiters.push({ after, value }); }
  remove(value: T): boolean {
    const i = this.waiters.findIndex((w) => w.value === value);
    if (i < 0) return false;
    this.waiters.splice(i, 1);
    return true;
  }
  /** Remove and return every waiter whose position is now exceeded. */
  due(position: number): T[] {
    const ready = this.waiters.filter((w) => position > w.after);
    this.waiters = this.waiters.filter((w) => position <= w.after);
    return ready.map((w) => w.value);
  }
  get size(): number { return this.waiters.length; }
}
