/**
 * Gateway side of sync shaping: the gateway holds ONE /sync long-poll per session against the
 * homeserver (spec: client-server API, GET /_matrix/client/v3/sync) with a low-bandwidth filter,
 * and `SyncReducer` turns each response into a compact DELTA for the host (sync-types.ts
 * `SyncDelta`): only non-empty sections, per room only new events and changed values.
 *
 * DELIVERY CONTRACT ("Nothing lost")
 *   - Each homeserver response that adds something becomes a FRAGMENT; a fragment is RELEASED with
 *     the next sequence number `seq` (1, 2, …). A delta `seq` = merge of every released fragment
 *     not yet acknowledged, in order, ending with fragment `seq` (`pendingDelta()`): a push that is
 *     lost is re-sent inside the next, bigger one; the host applies the newest seq it receives and
 *     ignores older ones (`SyncStore.applyDelta`).
 *   - `acknowledge(seq)` is cumulative: fragments ≤ seq are delivered and dropped.
 *   - A delta that merges ≥ 2 fragments carries `n` (per room) and `to_device_n`: the gateway's
 *     count of timeline events / to-device messages before its first one, so the host skips the
 *     part it already applied. A single-fragment delta omits them (the host continues its count).
 *   - The homeserver's since token advances as soon as a response is ingested: what it returned
 *     lives on in the pending fragments (persist `exportState()` before the next long-poll, so a
 *     gateway restart loses nothing, including to-device messages the homeserver deletes once the
 *     next since is used).
 *
 * WHAT IS DROPPED (the host already has it, or can rebuild it)
 *   empty sections and objects; `limited:false`; `prev_batch` except at a gap or for a room new to
 *   the host; unread counts, thread counts, summary fields, typing, one-time-key counts and fallback
 *   key types equal to what was last sent; lazy-loaded member events the host already holds (same
 *   event id); per event `room_id`, `unsigned.age` (the host recomputes it), `unsigned.membership`
 *   (MSC4115, optional), `unsigned.transaction_id` (the gateway's own txn id, meaningless to a local
 *   client: the host's own echo carries the client's), and Synapse extras `unsigned.replaces_state`,
 *   `prev_sender`, `redacted_by`; every `org.matrix.*` key and unknown key of a room or of the top.
 *
 * INITIAL SYNC (no since)
 *   Requested with `filter('initial')` (timeline limit `initialTimelineLimit` = the last K events per
 *   room). The response is split into chunks of ≤ `initialChunkBytes` of JSON (at least one room each):
 *   the first carries account data, to-device, device lists, invites and knocks and the most recent
 *   rooms; joined rooms go most recent first (newest origin_server_ts in their timeline). Chunks are
 *   released one at a time, the next once the previous one is acknowledged; live changes for rooms
 *   still queued are merged into their chunk, other live changes are released at once (they do not
 *   wait behind the initial sync). Older history: the host pages with /messages from the room's
 *   `prev_batch` over the air, as any client would.
 */
import {
  clone, eventsOf, isObject, jsonEqual, stateKeyOf,
  type JsonObject, type MatrixEvent, type RoomChunk, type RoomDelta, type RoomSummary, type SyncDelta, type SyncResponse,
  type UnreadNotificationCounts,
} from './sync-types.ts';

export interface SyncReducerOptions {
  /** Timeline limit of the gateway's incremental /sync filter (N). */
  timelineLimit: number;
  /** Timeline limit for the initial sync of a new session (K, the last K events of each room). */
  initialTimelineLimit: number;
  /** Carry m.typing over the air. */
  typing: boolean;
  /** Carry m.receipt over the air. */
  receipts: boolean;
  /** Carry presence over the air. */
  presence: boolean;
  /** Upper bound of one initial-sync chunk, in bytes of JSON (a single bigger room still goes alone). */
  initialChunkBytes: number;
  /** Put the homeserver's next_batch into every delta (costs ~30–45 B). Off: the host answers with its own tokens, and nothing it serves today needs the homeserver's (SyncStore.homeserverToken would map them for /keys/changes). */
  includeNextBatch: boolean;
}

export const DEFAULT_SYNC_REDUCER_OPTIONS: Readonly<SyncReducerOptions> = Object.freeze({
  timelineLimit: 20,
  initialTimelineLimit: 10,
  typing: false,
  receipts: false,
  presence: false,
  initialChunkBytes: 4096,
  includeNextBatch: false,
});

/**
 * The filter the gateway sends (inline JSON in `?filter=`) with its /sync (spec: "Filtering",
 * "Lazy-loading room members"): lazy-loaded members, timeline limit N (K for the initial sync),
 * presence and ephemeral events only when carried. `not_types: ['*']` excludes everything.
 */
export function gatewaySyncFilter(o: Partial<SyncReducerOptions> = {}, phase: 'initial' | 'incremental' = 'incremental'): JsonObject {
  const opts = { ...DEFAULT_SYNC_REDUCER_OPTIONS, ...o };
  const ephemeralTypes = [...(opts.typing ? ['m.typing'] : []), ...(opts.receipts ? ['m.receipt'] : [])];
  return {
    presence: opts.presence ? { types: ['m.presence'] } : { not_types: ['*'] },
    room: {
      state: { lazy_load_members: true },
      timeline: { limit: phase === 'initial' ? opts.initialTimelineLimit : opts.timelineLimit },
      ephemeral: ephemeralTypes.length > 0 ? { types: ephemeralTypes } : { not_types: ['*'] },
    },
  };
}

/** The default gateway filter (incremental phase, nothing ephemeral, no presence). */
export const GATEWAY_SYNC_FILTER: Readonly<JsonObject> = Object.freeze(gatewaySyncFilter());

type Membership = 'join' | 'leave' | 'invite' | 'knock';

/** What the gateway remembers per room about what the host has been sent. */
interface RoomMemory {
  m: Membership;
  /** Timeline events sent for this room so far (the `n` numbering). */
  count: number;
  unread?: UnreadNotificationCounts;
  threads?: Record<string, UnreadNotificationCounts>;
  summary?: RoomSummary;
  typing?: JsonObject;
  /** State key → event id of every state event the host was sent (for lazy-loaded member dedup). */
  state?: Record<string, string>;
  /** origin_server_ts of the last timeline event in an ACKNOWLEDGED delta (sync-wire's time base). */
  ats?: number;
}

/** A fragment: a SyncDelta without seq, with `n`/`to_device_n` always set where they apply. */
type Fragment = Omit<SyncDelta, 'seq' | 'progress'>;

interface Released { seq: number; fragment: Fragment; initialRooms: number; initialChunk: boolean }
interface Queued { fragment: Fragment; rooms: string[] }

/** Plain-JSON state of a SyncReducer (persist it; restore with `new SyncReducer(opts, state)`). */
export interface SyncReducerState {
  version: 1;
  since?: string;
  seq: number;
  acked: number;
  released: Released[];
  queued: Queued[];
  initial?: { roomsTotal: number; roomsReleased: number; roomsAcked: number };
  rooms: Record<string, RoomMemory>;
  toDeviceCount: number;
  otk?: Record<string, number>;
  fallback?: string[];
}

const DROP_UNSIGNED = ['age', 'membership', 'transaction_id', 'replaces_state', 'prev_sender', 'redacted_by'];

/** An event as it goes to the host: see "WHAT IS DROPPED". */
export function compactEvent(e: MatrixEvent): MatrixEvent {
  const out: MatrixEvent = { ...e };
  delete out['room_id'];
  if (isObject(e.unsigned)) {
    const u: JsonObject = { ...e.unsigned };
    for (const k of DROP_UNSIGNED) delete u[k];
    const rb = u['redacted_because'];
    if (isObject(rb) && typeof rb['type'] === 'string' && isObject(rb['content'])) u['redacted_because'] = compactEvent(rb as MatrixEvent);
    if (Object.keys(u).length > 0) out.unsigned = u; else delete out.unsigned;
  } else {
    delete out.unsigned;
  }
  return out;
}

const normUnread = (u: UnreadNotificationCounts | undefined): UnreadNotificationCounts =>
  ({ highlight_count: u?.highlight_count ?? 0, notification_count: u?.notification_count ?? 0 });

export class SyncReducer {
  readonly options: Readonly<SyncReducerOptions>;
  private s: SyncReducerState;

  constructor(options: Partial<SyncReducerOptions> = {}, state?: SyncReducerState) {
    this.options = { ...DEFAULT_SYNC_REDUCER_OPTIONS, ...options };
    if (state !== undefined && state.version !== 1) throw new Error(`SyncReducer state version ${String(state.version)} is not 1`);
    this.s = state ? clone(state) : { version: 1, seq: 0, acked: 0, released: [], queued: [], rooms: {}, toDeviceCount: 0 };
  }

  /** The since token for the next homeserver /sync (undefined: do the initial sync). */
  get since(): string | undefined { return this.s.since; }

  /** The filter for the next homeserver /sync. */
  filter(): JsonObject {
    return gatewaySyncFilter(this.options, this.s.since === undefined ? 'initial' : 'incremental');
  }

  /** Last sequence number released (0 before the first delta). */
  get seq(): number { return this.s.seq; }

  /**
   * Feed one /sync response (the answer to a request made with `since` and `filter()`).
   * Returns the delta to push now (a new seq), or undefined when nothing new may be pushed.
   */
  ingest(res: SyncResponse): SyncDelta | undefined {
    if (!isObject(res) || typeof res.next_batch !== 'string') throw new TypeError('not a /sync response: next_batch missing');
    const initial = this.s.since === undefined;
    this.s.since = res.next_batch;
    if (initial) {
      this.queueInitial(this.fragmentOf(res, true));
      return this.nextDelta();
    }
    const frag = this.fragmentOf(res, false);
    // Live changes for a room whose initial chunk has not gone yet travel with that chunk.
    for (const section of ['join', 'leave'] as const) {
      const rooms = frag.rooms?.[section];
      if (!rooms) continue;
      for (const [roomId, rd] of Object.entries(rooms)) {
        const q = this.s.queued.find((c) => c.rooms.includes(roomId));
        if (!q) continue;
        q.fragment = mergeFragments(q.fragment, { rooms: { [section]: { [roomId]: rd } } });
        delete rooms[roomId];
      }
    }
    pruneEmpty(frag);
    if (isEmptyFragment(frag)) return this.nextDelta();
    this.release(frag, 0);
    return this.pendingDelta();
  }

  /**
   * Release the next queued initial-sync chunk if the previous one has been acknowledged and
   * return the delta to push (new seq); undefined when there is nothing new to release.
   */
  nextDelta(): SyncDelta | undefined {
    const next = this.s.queued[0];
    if (!next) return undefined;
    if (this.s.released.some((r) => r.initialChunk)) return undefined;
    this.s.queued.shift();
    this.release(next.fragment, next.rooms.length, true);
    return this.pendingDelta();
  }

  /** The merge of every released, unacknowledged fragment, as delta `seq` (undefined: all delivered). */
  pendingDelta(): SyncDelta | undefined {
    const rel = this.s.released;
    if (rel.length === 0) return undefined;
    let merged: Fragment = rel[0]!.fragment;
    for (let i = 1; i < rel.length; i++) merged = mergeFragments(merged, rel[i]!.fragment);
    const out: SyncDelta = { seq: rel[rel.length - 1]!.seq, ...clone(merged) };
    if (!this.options.includeNextBatch) delete out.next_batch;
    if (rel.length === 1) stripCounters(out);
    const ini = this.s.initial;
    if (ini && (this.s.queued.length > 0 || rel.some((r) => r.initialChunk))) {
      out.progress = { roomsDone: ini.roomsReleased, roomsTotal: ini.roomsTotal };
    }
    return reorder(out);
  }

  /** The host confirmed delta `seq` (and so every earlier one). Returns false for an unknown seq. */
  acknowledge(seq: number): boolean {
    if (!Number.isInteger(seq) || seq < 1 || seq > this.s.seq) return false;
    if (seq <= this.s.acked) return true;
    this.s.acked = seq;
    const done = this.s.released.filter((r) => r.seq <= seq);
    this.s.released = this.s.released.filter((r) => r.seq > seq);
    for (const r of done) {
      for (const section of ['join', 'leave'] as const) {
        for (const [roomId, rd] of Object.entries(r.fragment.rooms?.[section] ?? {})) {
          const mem = this.s.rooms[roomId];
          const ts = lastTimelineTs(rd);
          if (mem && ts !== undefined) mem.ats = ts;
        }
      }
    }
    if (this.s.initial) for (const r of done) this.s.initial.roomsAcked += r.initialRooms;
    return true;
  }

  /** The last delta seq the host acknowledged (0: none): the base the pending delta builds on. */
  get acked(): number { return this.s.acked; }

  /** Released deltas not yet acknowledged (1: the pending delta is a single fragment, without `n`). */
  get unacknowledged(): number { return this.s.released.length; }

  /**
   * The timestamp of the last timeline event of `roomId` in an acknowledged delta: the host holds
   * that event as its newest in the room whenever the pending delta is a single fragment.
   */
  ackedLastTs(roomId: string): number | undefined { return this.s.rooms[roomId]?.ats; }

  /** Joined rooms of the initial sync the host has acknowledged / all of them. */
  initialSyncProgress(): { roomsDone: number; roomsTotal: number } {
    const ini = this.s.initial;
    return ini ? { roomsDone: ini.roomsAcked, roomsTotal: ini.roomsTotal } : { roomsDone: 0, roomsTotal: 0 };
  }

  exportState(): SyncReducerState { return clone(this.s); }

  // ---------------------------------------------------------------------------------------------

  private release(frag: Fragment, initialRooms: number, initialChunk = false): void {
    const seq = ++this.s.seq;
    if (this.s.since !== undefined) frag.next_batch = this.s.since;
    this.s.released.push({ seq, fragment: frag, initialRooms, initialChunk });
    if (initialChunk && this.s.initial) this.s.initial.roomsReleased += initialRooms;
  }

  private queueInitial(frag: Fragment): void {
    const joined = Object.entries(frag.rooms?.join ?? {});
    const lastTs = (rd: RoomDelta): number => {
      let ts = 0;
      for (const c of chunksOf(rd)) for (const e of c.timeline ?? []) if (typeof e.origin_server_ts === 'number' && e.origin_server_ts > ts) ts = e.origin_server_ts;
      return ts;
    };
    joined.sort((a, b) => lastTs(b[1]) - lastTs(a[1]) || (a[0] < b[0] ? -1 : 1));
    const first: Fragment = { ...frag };
    const firstRooms = { ...(frag.rooms ?? {}) };
    delete firstRooms.join;
    if (Object.keys(firstRooms).length > 0) first.rooms = firstRooms; else delete first.rooms;
    const chunks: Queued[] = [];
    let cur: Queued = { fragment: first, rooms: [] };
    let size = JSON.stringify(first).length;
    for (const [roomId, rd] of joined) {
      const roomSize = JSON.stringify(rd).length + roomId.length + 4;
      if (cur.rooms.length > 0 && size + roomSize > this.options.initialChunkBytes) {
        chunks.push(cur);
        cur = { fragment: {}, rooms: [] };
        size = 2;
      }
      cur.fragment.rooms = { ...(cur.fragment.rooms ?? {}), join: { ...(cur.fragment.rooms?.join ?? {}), [roomId]: rd } };
      cur.rooms.push(roomId);
      size += roomSize;
    }
    chunks.push(cur);
    this.s.queued = chunks;
    this.s.initial = { roomsTotal: joined.length, roomsReleased: 0, roomsAcked: 0 };
  }

  private memory(roomId: string): RoomMemory | undefined { return this.s.rooms[roomId]; }

  /** One homeserver response → one fragment, updating the memory of what the host was sent. */
  private fragmentOf(res: SyncResponse, initial: boolean): Fragment {
    const frag: Fragment = {};
    const rooms = isObject(res.rooms) ? res.rooms : {};
    const outRooms: NonNullable<SyncDelta['rooms']> = {};

    for (const section of ['join', 'leave'] as const) {
      const src = rooms[section];
      if (!isObject(src)) continue;
      for (const [roomId, jr] of Object.entries(src)) {
        if (!isObject(jr)) continue;
        const rd = this.roomDelta(roomId, jr as JsonObject, section);
        if (rd) ((outRooms[section] ??= {}) as Record<string, RoomDelta>)[roomId] = rd;
      }
    }
    for (const section of ['invite', 'knock'] as const) {
      const src = rooms[section];
      if (!isObject(src)) continue;
      for (const [roomId, ir] of Object.entries(src)) {
        if (!isObject(ir)) continue;
        const events = eventsOf((ir as JsonObject)[`${section}_state`]).map(compactEvent);
        const prev = this.memory(roomId);
        this.s.rooms[roomId] = { m: section, count: prev?.count ?? 0 };
        if (section === 'invite') (outRooms.invite ??= {})[roomId] = { invite_state: events };
        else (outRooms.knock ??= {})[roomId] = { knock_state: events };
      }
    }
    if (Object.keys(outRooms).length > 0) frag.rooms = outRooms;

    const accountData = eventsOf(res.account_data).map(compactEvent);
    if (accountData.length > 0) frag.account_data = accountData;
    if (this.options.presence) {
      const presence = eventsOf(res.presence).map(compactEvent);
      if (presence.length > 0) frag.presence = presence;
    }
    const toDevice = eventsOf(res.to_device);
    if (toDevice.length > 0) {
      frag.to_device = toDevice;
      frag.to_device_n = this.s.toDeviceCount;
      this.s.toDeviceCount += toDevice.length;
    }
    if (isObject(res.device_lists)) {
      const dl: { changed?: string[]; left?: string[] } = {};
      const changed = res.device_lists.changed, left = res.device_lists.left;
      if (Array.isArray(changed) && changed.length > 0) dl.changed = [...changed];
      if (Array.isArray(left) && left.length > 0) dl.left = [...left];
      if (dl.changed || dl.left) frag.device_lists = dl;
    }
    const otk = res.device_one_time_keys_count;
    if (isObject(otk) && !jsonEqual(otk, this.s.otk ?? {})) {
      frag.device_one_time_keys_count = { ...otk };
      this.s.otk = { ...otk };
    }
    const fallbackRaw = res.device_unused_fallback_key_types ?? res['org.matrix.msc2732.device_unused_fallback_key_types'];
    if (Array.isArray(fallbackRaw)) {
      const fb = (fallbackRaw as unknown[]).filter((x): x is string => typeof x === 'string');
      if (!jsonEqual(fb, this.s.fallback ?? (initial ? undefined : []))) {
        frag.device_unused_fallback_key_types = fb;
        this.s.fallback = fb;
      }
    }
    return frag;
  }

  private roomDelta(roomId: string, jr: JsonObject, section: 'join' | 'leave'): RoomDelta | undefined {
    const prev = this.memory(roomId);
    const isNew = !prev || (prev.m !== 'join' && section === 'join');
    const mem: RoomMemory = prev ? { ...prev, m: section } : { m: section, count: 0 };
    if (isNew && section === 'join') { delete mem.unread; delete mem.threads; delete mem.summary; delete mem.typing; }
    const sent = (mem.state = { ...(mem.state ?? {}) });
    const rd: RoomDelta = {};

    const timeline = eventsOf(jr['timeline']).map(compactEvent);
    const tl = isObject(jr['timeline']) ? jr['timeline'] : {};
    // Lazy-loaded members arrive again and again; the host already has the same event.
    const state = eventsOf(jr['state']).map(compactEvent).filter((e) => e.event_id === undefined || sent[stateKeyOf(e)] !== e.event_id);
    for (const e of state) if (e.event_id !== undefined) sent[stateKeyOf(e)] = e.event_id;
    for (const e of timeline) if (e.state_key !== undefined && e.event_id !== undefined) sent[stateKeyOf(e)] = e.event_id;
    if (state.length > 0) rd.state = state;
    if (timeline.length > 0) {
      rd.timeline = timeline;
      rd.n = mem.count;
      mem.count += timeline.length;
    }
    const limited = tl['limited'] === true && prev !== undefined && prev.count > 0;
    const prevBatch = typeof tl['prev_batch'] === 'string' ? tl['prev_batch'] : undefined;
    if (limited) rd.limited = true;
    if (prevBatch !== undefined && (limited || isNew) && timeline.length > 0) rd.prev_batch = prevBatch;

    const accountData = eventsOf(jr['account_data']).map(compactEvent);
    if (accountData.length > 0) rd.account_data = accountData;

    if (section === 'join') {
      const ephemeral: MatrixEvent[] = [];
      for (const e of eventsOf(jr['ephemeral'])) {
        if (e.type === 'm.typing') {
          if (!this.options.typing || jsonEqual(e.content, mem.typing ?? { user_ids: [] })) continue;
          mem.typing = clone(e.content);
        } else if (e.type === 'm.receipt') {
          if (!this.options.receipts) continue;
        } else {
          continue;
        }
        ephemeral.push(compactEvent(e));
      }
      if (ephemeral.length > 0) rd.ephemeral = ephemeral;

      const un = jr['unread_notifications'];
      if (isObject(un)) {
        // Only the counts that changed (the host keeps the other one); both when the room is new to the host.
        const u = normUnread(un as UnreadNotificationCounts), last = normUnread(mem.unread);
        const changed: UnreadNotificationCounts = {};
        if (isNew || u.highlight_count !== last.highlight_count) changed.highlight_count = u.highlight_count!;
        if (isNew || u.notification_count !== last.notification_count) changed.notification_count = u.notification_count!;
        if (Object.keys(changed).length > 0) rd.unread_notifications = changed;
        mem.unread = u;
      }
      const th = jr['unread_thread_notifications'];
      if (isObject(th)) {
        if (!jsonEqual(th, mem.threads ?? {})) rd.unread_thread_notifications = clone(th) as Record<string, UnreadNotificationCounts>;
        mem.threads = clone(th) as Record<string, UnreadNotificationCounts>;
      }
      const sm = jr['summary'];
      if (isObject(sm)) {
        const changed: RoomSummary = {};
        for (const [k, v] of Object.entries(sm)) if (!k.startsWith('org.matrix.') && !jsonEqual(v, mem.summary?.[k])) changed[k] = clone(v);
        if (Object.keys(changed).length > 0) {
          rd.summary = changed;
          mem.summary = { ...(mem.summary ?? {}), ...changed };
        }
      }
    } else {
      delete mem.unread; delete mem.threads; delete mem.summary; delete mem.typing;
    }
    this.s.rooms[roomId] = mem;
    if (Object.keys(rd).length === 0 && !isNew && prev?.m === section) return undefined;
    return rd;
  }
}

// ------------------------------------------------------------------------------------------------
// Merging. `b` is newer than `a`; the result is what a host needs to get from "before a" to "after b".

/** The chunks of a room delta, first chunk from the flat fields. */
export function chunksOf(rd: RoomDelta): RoomChunk[] {
  const first: RoomChunk = {};
  if (rd.timeline) first.timeline = rd.timeline;
  if (rd.state) first.state = rd.state;
  if (rd.limited) first.limited = true;
  if (rd.prev_batch !== undefined) first.prev_batch = rd.prev_batch;
  const out = Object.keys(first).length > 0 ? [first] : [];
  return out.concat(rd.more ?? []);
}

function setChunks(rd: RoomDelta, chunks: RoomChunk[]): void {
  delete rd.timeline; delete rd.state; delete rd.limited; delete rd.prev_batch; delete rd.more;
  const [first, ...rest] = chunks;
  if (first) {
    if (first.timeline) rd.timeline = first.timeline;
    if (first.state) rd.state = first.state;
    if (first.limited) rd.limited = true;
    if (first.prev_batch !== undefined) rd.prev_batch = first.prev_batch;
  }
  if (rest.length > 0) rd.more = rest;
}

/** Consecutive chunks join unless the later one starts after a gap or carries state of its own. */
function appendChunks(a: RoomChunk[], b: RoomChunk[]): RoomChunk[] {
  const out = a.map((c) => ({ ...c }));
  for (const c of b) {
    const last = out[out.length - 1];
    if (last && c.state === undefined && !c.limited && c.prev_batch === undefined) {
      last.timeline = [...(last.timeline ?? []), ...(c.timeline ?? [])];
    } else {
      out.push({ ...c });
    }
  }
  return out;
}

function mergeByKey(a: MatrixEvent[] | undefined, b: MatrixEvent[] | undefined, key: (e: MatrixEvent) => string): MatrixEvent[] | undefined {
  if (!a) return b; if (!b) return a;
  const m = new Map<string, MatrixEvent>();
  for (const e of a) m.set(key(e), e);
  for (const e of b) { m.delete(key(e)); m.set(key(e), e); }
  return [...m.values()];
}

/** Receipts flattened to (receipt type, user, thread) → newest event; m.typing and others: newest wins. */
export function mergeEphemeral(a: MatrixEvent[] | undefined, b: MatrixEvent[] | undefined): MatrixEvent[] | undefined {
  if (!a) return b; if (!b) return a;
  const receipts = new Map<string, { eventId: string; rtype: string; user: string; data: unknown }>();
  const others = new Map<string, MatrixEvent>();
  for (const e of [...a, ...b]) {
    if (e.type !== 'm.receipt') { others.delete(e.type); others.set(e.type, e); continue; }
    for (const r of receiptEntries(e)) {
      receipts.delete(r.key);
      receipts.set(r.key, r);
    }
  }
  const out = [...others.values()];
  if (receipts.size > 0) out.push({ type: 'm.receipt', content: receiptContent(receipts.values()) });
  return out;
}

/** One receipt of an m.receipt event, keyed by (receipt type, user, thread): the newest per key wins. */
export interface ReceiptItem { key: string; eventId: string; rtype: string; user: string; data: unknown }

/** The receipts of an m.receipt event's content ({event id: {receipt type: {user: data}}}), malformed parts skipped. */
export function* receiptEntries(e: MatrixEvent): Generator<ReceiptItem> {
  for (const [eventId, byType] of Object.entries(e.content)) {
    if (!isObject(byType)) continue;
    for (const [rtype, byUser] of Object.entries(byType)) {
      if (!isObject(byUser)) continue;
      for (const [user, data] of Object.entries(byUser)) {
        const thread = isObject(data) && typeof data['thread_id'] === 'string' ? data['thread_id'] : '';
        yield { key: `${rtype}\u0000${user}\u0000${thread}`, eventId, rtype, user, data };
      }
    }
  }
}

export function receiptContent(entries: Iterable<{ eventId: string; rtype: string; user: string; data: unknown }>): JsonObject {
  const content: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const r of entries) ((content[r.eventId] ??= {})[r.rtype] ??= {})[r.user] = r.data;
  return content;
}

export function mergeRoomDelta(a: RoomDelta, b: RoomDelta): RoomDelta {
  const out: RoomDelta = {};
  const aChunks = chunksOf(a), bChunks = chunksOf(b);
  const aHasEvents = aChunks.some((c) => (c.timeline?.length ?? 0) > 0);
  setChunks(out, appendChunks(aChunks, bChunks));
  const n = aHasEvents ? a.n : (b.n ?? a.n);
  if (n !== undefined) out.n = n;
  const ad = mergeByKey(a.account_data, b.account_data, (e) => e.type);
  if (ad) out.account_data = ad;
  const eph = mergeEphemeral(a.ephemeral, b.ephemeral);
  if (eph) out.ephemeral = eph;
  if (a.unread_notifications || b.unread_notifications) out.unread_notifications = { ...(a.unread_notifications ?? {}), ...(b.unread_notifications ?? {}) };
  const th = b.unread_thread_notifications ?? a.unread_thread_notifications;
  if (th) out.unread_thread_notifications = th;
  if (a.summary || b.summary) out.summary = { ...(a.summary ?? {}), ...(b.summary ?? {}) };
  return out;
}

/**
 * Merge two fragments (b newer). A room ends in b's section; when a held timeline content for it and
 * b is an invite/knock, a's content goes to `leave` (the user must have left in between).
 */
export function mergeFragments(a: Fragment, b: Fragment): Fragment {
  const out: Fragment = {};
  const nb = b.next_batch ?? a.next_batch;
  if (nb !== undefined) out.next_batch = nb;
  const rooms: NonNullable<SyncDelta['rooms']> = {
    join: { ...(a.rooms?.join ?? {}) }, leave: { ...(a.rooms?.leave ?? {}) },
    invite: { ...(a.rooms?.invite ?? {}) }, knock: { ...(a.rooms?.knock ?? {}) },
  };
  const join = rooms.join!, leave = rooms.leave!, invite = rooms.invite!, knock = rooms.knock!;
  const takeTimeline = (roomId: string): RoomDelta | undefined => {
    const x = join[roomId] ?? leave[roomId];
    delete join[roomId]; delete leave[roomId];
    return x;
  };
  for (const [roomId, rd] of Object.entries(b.rooms?.join ?? {})) {
    const prior = takeTimeline(roomId);
    delete invite[roomId]; delete knock[roomId];
    join[roomId] = prior ? mergeRoomDelta(prior, rd) : rd;
  }
  for (const [roomId, rd] of Object.entries(b.rooms?.leave ?? {})) {
    const prior = takeTimeline(roomId);
    delete invite[roomId]; delete knock[roomId];
    leave[roomId] = prior ? mergeRoomDelta(prior, rd) : rd;
  }
  for (const section of ['invite', 'knock'] as const) {
    for (const [roomId, r] of Object.entries(b.rooms?.[section] ?? {})) {
      const prior = takeTimeline(roomId);
      if (prior) leave[roomId] = prior;
      delete invite[roomId]; delete knock[roomId];
      if (section === 'invite') invite[roomId] = r as { invite_state: MatrixEvent[] };
      else knock[roomId] = r as { knock_state: MatrixEvent[] };
    }
  }
  out.rooms = rooms;

  const ad = mergeByKey(a.account_data, b.account_data, (e) => e.type);
  if (ad) out.account_data = ad;
  const pr = mergeByKey(a.presence, b.presence, (e) => e.sender ?? '');
  if (pr) out.presence = pr;
  if (a.to_device || b.to_device) {
    out.to_device = [...(a.to_device ?? []), ...(b.to_device ?? [])];
    const tn = a.to_device ? a.to_device_n : b.to_device_n;
    if (tn !== undefined) out.to_device_n = tn;
  }
  if (a.device_lists || b.device_lists) {
    const changed = new Set(a.device_lists?.changed ?? []);
    const left = new Set(a.device_lists?.left ?? []);
    for (const u of b.device_lists?.changed ?? []) { left.delete(u); changed.add(u); }
    for (const u of b.device_lists?.left ?? []) { changed.delete(u); left.add(u); }
    out.device_lists = {};
    if (changed.size > 0) out.device_lists.changed = [...changed];
    if (left.size > 0) out.device_lists.left = [...left];
  }
  const otk = b.device_one_time_keys_count ?? a.device_one_time_keys_count;
  if (otk) out.device_one_time_keys_count = otk;
  const fb = b.device_unused_fallback_key_types ?? a.device_unused_fallback_key_types;
  if (fb) out.device_unused_fallback_key_types = fb;
  pruneEmpty(out);
  return out;
}

function pruneEmpty(f: Fragment): void {
  if (f.rooms) {
    for (const k of ['join', 'leave', 'invite', 'knock'] as const) {
      if (f.rooms[k] && Object.keys(f.rooms[k]!).length === 0) delete f.rooms[k];
    }
    if (Object.keys(f.rooms).length === 0) delete f.rooms;
  }
  if (f.device_lists && !f.device_lists.changed && !f.device_lists.left) delete f.device_lists;
}

function isEmptyFragment(f: Fragment): boolean {
  return Object.keys(f).every((k) => k === 'next_batch');
}

/** A single-fragment delta continues exactly where the host is: no counters needed. */
function stripCounters(d: SyncDelta): void {
  delete d.to_device_n;
  for (const section of ['join', 'leave'] as const) for (const rd of Object.values(d.rooms?.[section] ?? {})) delete rd.n;
}

/** seq first, for readability of dumps (the encoder does not care). */
function reorder(d: SyncDelta): SyncDelta {
  const { seq, next_batch, progress, ...rest } = d;
  return { seq, ...(next_batch !== undefined ? { next_batch } : {}), ...(progress ? { progress } : {}), ...rest };
}

/** origin_server_ts of the last timeline event of a room delta (its last chunk with events). */
export function lastTimelineTs(rd: RoomChunk & { more?: RoomChunk[] }): number | undefined {
  const chunks = [rd, ...(rd.more ?? [])];
  for (let i = chunks.length - 1; i >= 0; i--) {
    const tl = chunks[i]!.timeline;
    if (tl && tl.length > 0) {
      const ts = tl[tl.length - 1]!.origin_server_ts;
      return typeof ts === 'number' && Number.isSafeInteger(ts) ? ts : undefined;
    }
  }
  return undefined;
}
