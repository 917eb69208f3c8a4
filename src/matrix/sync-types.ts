/**
 * Shapes shared by the gateway's SyncReducer (sync-delta.ts) and the host's SyncStore
 * (sync-store.ts): the parts of a CS-API `GET /_matrix/client/v3/sync` response they read
 * or write (spec: client-server API, "Syncing"), and the DELTA that travels between them.
 *
 * Everything here is plain JSON: the lead encodes a delta with Trickle CBOR + handles, and
 * persists reducer and store state as JSON.
 */

export type JsonObject = Record<string, unknown>;

/** A client-format event as /sync carries it (room_id omitted inside rooms.*). */
export interface MatrixEvent {
  type: string;
  content: JsonObject;
  sender?: string;
  event_id?: string;
  origin_server_ts?: number;
  state_key?: string;
  unsigned?: JsonObject;
  [key: string]: unknown;
}

export interface UnreadNotificationCounts {
  highlight_count?: number;
  notification_count?: number;
}

export interface RoomSummary {
  'm.heroes'?: string[];
  'm.joined_member_count'?: number;
  'm.invited_member_count'?: number;
  [key: string]: unknown;
}

export interface SyncTimeline {
  events: MatrixEvent[];
  limited?: boolean;
  prev_batch?: string;
}

export interface JoinedRoom {
  summary?: RoomSummary;
  state?: { events: MatrixEvent[] };
  timeline?: SyncTimeline;
  ephemeral?: { events: MatrixEvent[] };
  account_data?: { events: MatrixEvent[] };
  unread_notifications?: UnreadNotificationCounts;
  unread_thread_notifications?: Record<string, UnreadNotificationCounts>;
  [key: string]: unknown;
}

export interface LeftRoom {
  state?: { events: MatrixEvent[] };
  timeline?: SyncTimeline;
  account_data?: { events: MatrixEvent[] };
  [key: string]: unknown;
}

export interface InvitedRoom { invite_state?: { events: MatrixEvent[] }; [key: string]: unknown }
export interface KnockedRoom { knock_state?: { events: MatrixEvent[] }; [key: string]: unknown }

export interface SyncResponse {
  next_batch: string;
  rooms?: {
    join?: Record<string, JoinedRoom>;
    invite?: Record<string, InvitedRoom>;
    leave?: Record<string, LeftRoom>;
    knock?: Record<string, KnockedRoom>;
  };
  account_data?: { events: MatrixEvent[] };
  presence?: { events: MatrixEvent[] };
  to_device?: { events: MatrixEvent[] };
  device_lists?: { changed?: string[]; left?: string[] };
  device_one_time_keys_count?: Record<string, number>;
  device_unused_fallback_key_types?: string[];
  [key: string]: unknown;
}

/**
 * One run of consecutive timeline events of a room, in homeserver order.
 * `state` is room state just before `timeline[0]` (the /sync `state` section of the response the
 * run came from: gap state or lazy-loaded members). `limited` = the homeserver skipped events
 * before `timeline[0]` (a gap); `prev_batch` = a homeserver pagination token pointing just before
 * `timeline[0]` — sent only with a gap or when the host learns of the room (its history anchor).
 */
export interface RoomChunk {
  timeline?: MatrixEvent[];
  state?: MatrixEvent[];
  limited?: true;
  prev_batch?: string;
}

/**
 * What changed in one room. The first chunk's fields sit flat on the object (the common case is
 * one chunk with one event); `more` holds further chunks, only in a merged re-send that spans a gap.
 */
export interface RoomDelta extends RoomChunk {
  /**
   * Index (0-based, counted by the gateway over every timeline event it has sent for this room)
   * of the first event of `timeline` (or of the first chunk that has events). Present only when
   * the delta re-sends content the host may already hold; absent = "continues where the host is".
   */
  n?: number;
  more?: RoomChunk[];
  account_data?: MatrixEvent[];
  /** m.typing / m.receipt, only when carried over the air (SyncReducerOptions). */
  ephemeral?: MatrixEvent[];
  unread_notifications?: UnreadNotificationCounts;
  unread_thread_notifications?: Record<string, UnreadNotificationCounts>;
  /** Only the summary fields that changed (likewise unread_notifications: only the counts that changed). */
  summary?: RoomSummary;
}

/**
 * Gateway → host: what changed since the last acknowledged delta. Every section is optional and
 * present only when non-empty. A delta with sequence number `seq` contains everything the gateway
 * released up to `seq` that the host had not acknowledged when it was built (cumulative), so
 * applying the newest delta that arrives is always enough; older ones are ignored.
 */
export interface SyncDelta {
  seq: number;
  /**
   * The gateway's delta stream (one per reducer, random) and the seq the delta builds on (the
   * last one the host acknowledged, 0: from scratch). Sent in the first delta of a registration
   * only (gateway/sync-pusher.ts), so the host can tell a stream its store follows from a new one
   * (host/push-sync.ts). Travel as fields of the wire delta's rest map.
   */
  stream?: string;
  base?: number;
  /** The homeserver's next_batch after this delta's content (omitted when includeNextBatch=false). */
  next_batch?: string;
  /** While the initial sync is being pushed in chunks: joined rooms sent so far (incl. this delta) / total. */
  progress?: { roomsDone: number; roomsTotal: number };
  rooms?: {
    join?: Record<string, RoomDelta>;
    /** Rooms left (or kicked/banned/rejected): the final events, like /sync's rooms.leave. */
    leave?: Record<string, RoomDelta>;
    invite?: Record<string, { invite_state: MatrixEvent[] }>;
    knock?: Record<string, { knock_state: MatrixEvent[] }>;
  };
  account_data?: MatrixEvent[];
  to_device?: MatrixEvent[];
  /** Serial (gateway count) of to_device[0]; present only in a re-send, like RoomDelta.n. */
  to_device_n?: number;
  device_lists?: { changed?: string[]; left?: string[] };
  device_one_time_keys_count?: Record<string, number>;
  device_unused_fallback_key_types?: string[];
  presence?: MatrixEvent[];
}

/** The subset of a CS-API Filter (spec: "Filtering") that the host's local answers honour. */
export interface EventFilter {
  limit?: number;
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
}

export interface RoomEventFilter extends EventFilter {
  rooms?: string[];
  not_rooms?: string[];
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
}

export interface ClientFilter {
  room?: {
    rooms?: string[];
    not_rooms?: string[];
    include_leave?: boolean;
    timeline?: RoomEventFilter;
    state?: RoomEventFilter;
    ephemeral?: RoomEventFilter;
    account_data?: RoomEventFilter;
  };
  presence?: EventFilter;
  account_data?: EventFilter;
  event_fields?: string[];
  event_format?: 'client' | 'federation';
}

export const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Events of a `{events: [...]}` section, tolerating a missing or malformed section. */
export function eventsOf(section: unknown): MatrixEvent[] {
  if (!isObject(section) || !Array.isArray(section['events'])) return [];
  return (section['events'] as unknown[]).filter((e): e is MatrixEvent => isObject(e) && typeof e['type'] === 'string' && isObject(e['content']));
}

/** The key of a state event in the room state map: type NUL state_key. */
export const stateKeyOf = (e: MatrixEvent): string => `${e.type}\u0000${e.state_key ?? ''}`;

/** Spec "Filtering": types/not_types/senders/not_senders, with `*` wildcards in type names. */
export function matchesEventFilter(f: EventFilter | undefined, e: MatrixEvent): boolean {
  if (!f) return true;
  const typeMatch = (pattern: string): boolean => pattern === e.type || (pattern.includes('*') && wildcard(pattern).test(e.type));
  if (f.not_types && f.not_types.some(typeMatch)) return false;
  if (f.types && !f.types.some(typeMatch)) return false;
  if (e.sender !== undefined) {
    if (f.not_senders && f.not_senders.includes(e.sender)) return false;
    if (f.senders && !f.senders.includes(e.sender)) return false;
  }
  return true;
}

export function matchesRoomFilter(f: { rooms?: string[]; not_rooms?: string[] } | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms && f.not_rooms.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}

const wildcardCache = new Map<string, RegExp>();
function wildcard(pattern: string): RegExp {
  let re = wildcardCache.get(pattern);
  if (!re) {
    re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    if (wildcardCache.size > 256) wildcardCache.clear();
    wildcardCache.set(pattern, re);
  }
  return re;
}

/** Deep structural equality of JSON values (key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((v, i) => jsonEqual(v, bb[i]));
  }
  const ao = a as JsonObject, bo = b as JsonObject;
  const ak = Object.keys(ao), bk = Object.keys(bo);
  return ak.length === bk.length && ak.every((k) => Object.hasOwn(bo, k) && jsonEqual(ao[k], bo[k]));
}

export const clone = <T>(v: T): T => structuredClone(v);
