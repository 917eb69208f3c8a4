/**
 * The on-air shape of a SyncDelta (before Trickle CBOR + handles). Identical to the JSON delta except
 * that the per-room maps of `rooms` become arrays whose items carry the room id as `room_id`: a room id
 * as a map KEY can only travel as a ~45-byte literal (a handle is a CBOR byte string, which is never
 * a map key in trickle-cbor-v1), while as a VALUE it is a handle of 1–3 bytes once the host knows it.
 * Lossless both ways; `deltaFromWire` validates the shape and throws TypeError on anything else.
 */
import { isObject, type JsonObject, type SyncDelta } from './sync-types.ts';

const SECTIONS = ['join', 'leave', 'invite', 'knock'] as const;

export type WireSyncDelta = Omit<SyncDelta, 'rooms'> & { rooms?: Partial<Record<(typeof SECTIONS)[number], JsonObject[]>> };

export function deltaToWire(d: SyncDelta): WireSyncDelta {
  const { rooms, ...rest } = d;
  if (!rooms) return { ...rest };
  const out: NonNullable<WireSyncDelta['rooms']> = {};
  for (const s of SECTIONS) {
    const m = rooms[s];
    if (m) out[s] = Object.entries(m).map(([roomId, r]) => ({ room_id: roomId, ...(r as JsonObject) }));
  }
  return { ...rest, rooms: out };
}

export function deltaFromWire(w: unknown): SyncDelta {
  if (!isObject(w) || !Number.isSafeInteger(w['seq'])) throw new TypeError('sync delta: seq missing');
  const { rooms, ...rest } = w;
  const out = { ...rest } as unknown as SyncDelta;
  if (rooms === undefined) return out;
  if (!isObject(rooms)) throw new TypeError('sync delta: rooms is not a map');
  const r: Record<string, Record<string, unknown>> = {};
  for (const [s, list] of Object.entries(rooms)) {
    if (!(SECTIONS as readonly string[]).includes(s) || !Array.isArray(list)) throw new TypeError(`sync delta: bad rooms section ${s}`);
    const m: Record<string, unknown> = {};
    for (const item of list) {
      if (!isObject(item) || typeof item['room_id'] !== 'string') throw new TypeError(`sync delta: ${s} item without room_id`);
      const { room_id: roomId, ...rd } = item;
      if (Object.hasOwn(m, roomId as string)) throw new TypeError(`sync delta: room ${String(roomId)} twice in ${s}`);
      m[roomId as string] = rd;
    }
    r[s] = m;
  }
  out.rooms = r as NonNullable<SyncDelta['rooms']>;
  return out;
}
