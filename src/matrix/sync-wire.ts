/**
 * The on-air shape of a SyncDelta (before Trickle CBOR + handles), version 2. Lossless both ways;
 * `deltaFromWire` validates the shape and throws TypeError on anything else.
 *
 *   [seq, join?, rest?]
 *
 *   seq   the delta's sequence number (a bare integer: no key).
 *   join  `rooms.join` as an ARRAY of room deltas, each with its room id as `room_id` (a room id as
 *         a map KEY can only travel as a ~45-byte literal, while as a VALUE it is a handle of 1–3
 *         bytes once the host knows it). Omitted when there is no rest and nothing joined;
 *         an empty array when there is a rest but nothing joined.
 *   rest  every other top-level field of the delta, with `rooms.leave|invite|knock` as arrays the
 *         same way under `rooms`. Omitted when empty.
 *
 * ONE MESSAGE, the commonest push (a delta that is exactly one plain text message in one joined
 * room, with its room's new notification count or not), travels flat:
 *
 *   [seq, room_id, body, sender, event_id, ts, notification_count?]
 *
 * and its `ts` is RELATIVE when both ends know the room's previous event: `opts.baseTs(room)`,
 * the origin_server_ts of the last timeline event of the room in an acknowledged delta (gateway,
 * given only for a single-fragment delta) = of the last event applied (host). A relative ts is
 * the negative integer −1 − (ts − base) (an absolute one is positive): 3 bytes for a message
 * within a minute of the previous one instead of 9.
 *
 * A joined room whose delta is only a timeline, with unread counts or not, travels as the tuple
 * `[room_id, timeline]`, `[room_id, timeline, notification_count]` or `[room_id, timeline,
 * notification_count, highlight_count]` instead of a map (5 bytes less: no keys).
 *
 * The one-message delta, the common push, thus spends 2 bytes on structure instead of ~11 for
 * `{"seq": …, "rooms": {"join": …}}`.
 *
 * Plain text messages: a timeline event `{type: "m.room.message", content: {msgtype: "m.text",
 * body: S}}` (exactly those two content keys, no state_key) travels without `type` and with
 * `content: S`. A real event's content is always an object, so a string content is unambiguous.
 * That saves 8 bytes per message, the same idea as the TEXT_MESSAGE content format of sends.
 * When such an event has nothing but sender, event_id and origin_server_ts besides, it travels
 * as the TUPLE `[S, sender, event_id, origin_server_ts]` (an event is otherwise always a map),
 * 4 more bytes saved: no keys at all.
 */
import { isObject, type JsonObject, type MatrixEvent, type SyncDelta } from './sync-types.ts';

const SECTIONS = ['join', 'leave', 'invite', 'knock'] as const;
const OTHER_SECTIONS = ['leave', 'invite', 'knock'] as const;

export type WireSyncDelta = [number, (JsonObject | unknown[])[]?, JsonObject?];

export interface WireTimeBase {
  /** The shared time base of a room (see the header), or undefined when there is none. */
  baseTs?: (roomId: string) => number | undefined;
  /**
   * Receiver: a relative timestamp arrived for a room whose base this end does not hold (cannot
   * happen between correct peers). With this, the message is kept with this timestamp (e.g. the
   * local clock) rather than refused; without it, deltaFromWire throws.
   */
  missingBase?: (roomId: string) => number;
}

export function deltaToWire(d: SyncDelta, opts: WireTimeBase = {}): WireSyncDelta | unknown[] {
  const flat = flatMessage(d, opts);
  if (flat) return flat;
  const { seq, rooms, ...rest } = d;
  const restOut: JsonObject = { ...rest };
  let join: JsonObject[] = [];
  if (rooms) {
    if (rooms.join) join = Object.entries(rooms.join).map(([roomId, r]) => joinedToWire(roomId, r as JsonObject)) as JsonObject[];
    const others: JsonObject = {};
    for (const s of OTHER_SECTIONS) {
      const m = rooms[s];
      if (m) others[s] = Object.entries(m).map(([roomId, r]) => roomToWire(roomId, r as JsonObject));
    }
    if (Object.keys(others).length > 0) restOut['rooms'] = others;
  }
  if (Object.keys(restOut).length > 0) return [seq, join, restOut];
  return join.length > 0 ? [seq, join] : [seq];
}

export function deltaFromWire(w: unknown, opts: WireTimeBase = {}): SyncDelta {
  if (Array.isArray(w) && (w.length === 6 || w.length === 7) && typeof w[1] === 'string') return flatFromWire(w, opts);
  if (!Array.isArray(w) || w.length < 1 || w.length > 3 || !Number.isSafeInteger(w[0])) throw new TypeError('sync delta: not [seq, join?, rest?]');
  const [seq, join, rest] = w as [number, unknown, unknown];
  if (join !== undefined && !Array.isArray(join)) throw new TypeError('sync delta: join is not a list');
  if (rest !== undefined && !isObject(rest)) throw new TypeError('sync delta: rest is not a map');
  const { rooms: otherRooms, seq: _ignored, ...top } = (rest ?? {}) as JsonObject;
  if (_ignored !== undefined) throw new TypeError('sync delta: seq inside rest');
  const out = { seq, ...top } as unknown as SyncDelta;
  const r: Record<string, Record<string, unknown>> = {};
  if (join && join.length > 0) r['join'] = roomsFromWire('join', join.map(joinedFromWire));
  if (otherRooms !== undefined) {
    if (!isObject(otherRooms)) throw new TypeError('sync delta: rooms is not a map');
    for (const [s, list] of Object.entries(otherRooms)) {
      if (!(OTHER_SECTIONS as readonly string[]).includes(s) || !Array.isArray(list)) throw new TypeError(`sync delta: bad rooms section ${s}`);
      r[s] = roomsFromWire(s as (typeof SECTIONS)[number], list);
    }
  }
  if (Object.keys(r).length > 0) out.rooms = r as NonNullable<SyncDelta['rooms']>;
  return out;
}

function roomToWire(roomId: string, r: JsonObject): JsonObject {
  const out: JsonObject = { room_id: roomId, ...r };
  if (Array.isArray(r['timeline'])) out['timeline'] = (r['timeline'] as MatrixEvent[]).map(eventToWire);
  if (Array.isArray(r['more'])) {
    out['more'] = (r['more'] as JsonObject[]).map((c) => (Array.isArray(c['timeline']) ? { ...c, timeline: (c['timeline'] as MatrixEvent[]).map(eventToWire) } : c));
  }
  return out;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function flatMessage(d: SyncDelta, opts: WireTimeBase): unknown[] | undefined {
  const keys = Object.keys(d);
  if (keys.length !== 2 || !keys.includes('seq') || !keys.includes('rooms') || !d.rooms) return undefined;
  const sections = Object.keys(d.rooms);
  if (sections.length !== 1 || sections[0] !== 'join') return undefined;
  const joined = Object.entries(d.rooms.join ?? {});
  if (joined.length !== 1) return undefined;
  const [roomId, rd] = joined[0]!;
  const tuple = joinedToWire(roomId, rd as JsonObject);
  if (!Array.isArray(tuple) || tuple.length > 3) return undefined;
  const timeline = tuple[1] as unknown[];
  if (timeline.length !== 1 || !Array.isArray(timeline[0])) return undefined;
  const [body, sender, eventId, ts] = timeline[0] as [string, string, string, number];
  const base = opts.baseTs?.(roomId);
  const wireTs = base !== undefined && ts >= base && ts > 0 ? -1 - (ts - base) : ts;
  return [d.seq, roomId, body, sender, eventId, wireTs, ...(tuple.length === 3 ? [tuple[2]] : [])];
}

function flatFromWire(w: unknown[], opts: WireTimeBase): SyncDelta {
  const [seq, roomId, body, sender, eventId, wireTs, nc] = w as [unknown, string, unknown, unknown, unknown, unknown, unknown];
  if (!Number.isSafeInteger(seq) || typeof body !== 'string' || typeof sender !== 'string' || typeof eventId !== 'string'
    || !Number.isSafeInteger(wireTs) || wireTs === 0 || (w.length === 7 && !isCount(nc))) {
    throw new TypeError('sync delta: a one-message delta is not [seq, room_id, body, sender, event_id, ts, notification_count?]');
  }
  let ts = wireTs as number;
  if (ts < 0) {
    const base = opts.baseTs?.(roomId);
    if (base !== undefined) ts = base + (-1 - ts);
    else if (opts.missingBase) ts = opts.missingBase(roomId);
    else throw new TypeError(`sync delta: a relative timestamp for room ${roomId}, whose time base this end does not hold`);
  }
  const room: JsonObject = { timeline: [{ type: 'm.room.message', content: { msgtype: 'm.text', body }, sender, event_id: eventId, origin_server_ts: ts }] };
  if (w.length === 7) room['unread_notifications'] = { notification_count: nc };
  return { seq: seq as number, rooms: { join: { [roomId]: room } } } as SyncDelta;
}

function joinedToWire(roomId: string, r: JsonObject): JsonObject | unknown[] {
  const out = roomToWire(roomId, r);
  const keys = Object.keys(r);
  const unread = r['unread_notifications'];
  if (!Array.isArray(r['timeline']) || keys.some((k) => k !== 'timeline' && k !== 'unread_notifications')) return out;
  if (unread === undefined) return [roomId, out['timeline']];
  if (!isObject(unread)) return out;
  const nc = unread['notification_count'];
  const hc = unread['highlight_count'];
  const uk = Object.keys(unread);
  if (uk.length === 1 && isCount(nc)) return [roomId, out['timeline'], nc];
  if (uk.length === 2 && isCount(nc) && isCount(hc)) return [roomId, out['timeline'], nc, hc];
  return out;
}

function joinedFromWire(item: unknown): unknown {
  if (!Array.isArray(item)) return item;
  const [roomId, timeline, nc, hc] = item as unknown[];
  if (item.length < 2 || item.length > 4 || typeof roomId !== 'string' || !Array.isArray(timeline)
    || (item.length >= 3 && !isCount(nc)) || (item.length === 4 && !isCount(hc))) {
    throw new TypeError('sync delta: a joined-room tuple is not [room_id, timeline, notification_count?, highlight_count?]');
  }
  const out: JsonObject = { room_id: roomId, timeline };
  if (item.length === 3) out['unread_notifications'] = { notification_count: nc };
  if (item.length === 4) out['unread_notifications'] = { notification_count: nc, highlight_count: hc };
  return out;
}

function roomsFromWire(section: (typeof SECTIONS)[number], list: unknown[]): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const item of list) {
    if (!isObject(item) || typeof item['room_id'] !== 'string') throw new TypeError(`sync delta: ${section} item without room_id`);
    const { room_id: roomId, ...rd } = item;
    if (Object.hasOwn(m, roomId as string)) throw new TypeError(`sync delta: room ${String(roomId)} twice in ${section}`);
    if (Array.isArray(rd['timeline'])) rd['timeline'] = (rd['timeline'] as unknown[]).map(eventFromWire);
    if (Array.isArray(rd['more'])) {
      rd['more'] = (rd['more'] as unknown[]).map((c) => (isObject(c) && Array.isArray(c['timeline']) ? { ...c, timeline: (c['timeline'] as unknown[]).map(eventFromWire) } : c));
    }
    m[roomId as string] = rd;
  }
  return m;
}

function isPlainText(e: MatrixEvent): boolean {
  if (e.type !== 'm.room.message' || e.state_key !== undefined || !isObject(e.content)) return false;
  const keys = Object.keys(e.content);
  return keys.length === 2 && e.content['msgtype'] === 'm.text' && typeof e.content['body'] === 'string';
}

const TUPLE_KEYS = ['content', 'event_id', 'origin_server_ts', 'sender', 'type'];

function eventToWire(e: MatrixEvent): JsonObject | unknown[] {
  if (!isObject(e) || !isPlainText(e)) return e;
  const { type: _t, content, ...rest } = e;
  const keys = Object.keys(e).sort();
  if (keys.length === TUPLE_KEYS.length && keys.every((k, i) => k === TUPLE_KEYS[i])
    && typeof e.sender === 'string' && typeof e.event_id === 'string' && Number.isSafeInteger(e.origin_server_ts)) {
    return [content['body'], e.sender, e.event_id, e.origin_server_ts];
  }
  return { content: content['body'], ...rest };
}

function eventFromWire(e: unknown): unknown {
  if (Array.isArray(e)) {
    const [body, sender, eventId, ts] = e as unknown[];
    if (e.length !== 4 || typeof body !== 'string' || typeof sender !== 'string' || typeof eventId !== 'string' || !Number.isSafeInteger(ts)) {
      throw new TypeError('sync delta: a text tuple is not [body, sender, event_id, origin_server_ts]');
    }
    return { type: 'm.room.message', content: { msgtype: 'm.text', body }, sender, event_id: eventId, origin_server_ts: ts };
  }
  if (!isObject(e) || typeof e['content'] !== 'string') return e;
  if (e['type'] !== undefined) throw new TypeError('sync delta: a text shorthand with a type');
  const { content, ...rest } = e;
  return { type: 'm.room.message', content: { msgtype: 'm.text', body: content }, ...rest };
}
