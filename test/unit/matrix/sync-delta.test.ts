import { describe, expect, it } from 'vitest';
import { GATEWAY_SYNC_FILTER, SyncReducer, gatewaySyncFilter, mergeEphemeral } from '../../../src/matrix/sync-delta.ts';
import type { JsonObject, SyncDelta, SyncResponse } from '../../../src/matrix/sync-types.ts';
import { decodeTrickleCbor, encodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { deltaFromWire, deltaToWire, type WireSyncDelta } from '../../../src/matrix/sync-wire.ts';
import { loadSyncVectors, step } from '../../vectors/sync/load.ts';

const v = loadSyncVectors();
const { general, quiet, later } = v.provenance.rooms;
const jsonSize = (x: unknown): number => Buffer.byteLength(JSON.stringify(x));

/** Feed the vector stream up to (not including) `until`, acknowledging every delta. */
function reducerAt(until: string, opts: ConstructorParameters<typeof SyncReducer>[0] = {}): SyncReducer {
  const r = new SyncReducer(opts);
  for (const s of v.steps) {
    if (s.name === until) break;
    let d = r.ingest(s.gateway);
    while (d) { r.acknowledge(d.seq); d = r.nextDelta(); }
  }
  return r;
}

describe('gateway /sync filter', () => {
  it('lazy-loads members, limits the timeline and carries no presence or ephemeral events by default', () => {
    expect(GATEWAY_SYNC_FILTER).toEqual({
      presence: { not_types: ['*'] },
      room: { state: { lazy_load_members: true }, timeline: { limit: 20 }, ephemeral: { not_types: ['*'] } },
    });
    const f = gatewaySyncFilter({ typing: true, receipts: true, presence: true, initialTimelineLimit: 5 }, 'initial') as { room: { ephemeral: unknown; timeline: unknown }; presence: unknown };
    expect(f.room.ephemeral).toEqual({ types: ['m.typing', 'm.receipt'] });
    expect(f.room.timeline).toEqual({ limit: 5 });
    expect(f.presence).toEqual({ types: ['m.presence'] });
    const r = new SyncReducer({ initialTimelineLimit: 7, timelineLimit: 30 });
    expect((r.filter() as { room: { timeline: { limit: number } } }).room.timeline.limit).toBe(7);
    r.ingest(step(v, 'initial').gateway);
    expect((r.filter() as { room: { timeline: { limit: number } } }).room.timeline.limit).toBe(30);
    expect(r.since).toBe(step(v, 'initial').gateway.next_batch);
  });
});

describe('SyncReducer on real Synapse responses', () => {
  it('splits the initial sync into prioritized chunks, one at a time, with progress', () => {
    const r = new SyncReducer({ initialChunkBytes: 3000 });
    const d1 = r.ingest(step(v, 'initial').gateway)!;
    expect(d1.seq).toBe(1);
    // General had the newest message: it goes first, with account data and the invite.
    expect(Object.keys(d1.rooms!.join!)).toEqual([general]);
    expect(Object.keys(d1.rooms!.invite!)).toEqual([later]);
    expect(d1.account_data!.map((e) => e.type).sort()).toEqual(['m.direct', 'm.push_rules']);
    expect(d1.progress).toEqual({ roomsDone: 1, roomsTotal: 2 });
    expect(d1.rooms!.join![general]!.prev_batch).toBeTypeOf('string'); // history anchor of a new room
    expect(r.nextDelta()).toBeUndefined(); // the next chunk waits for the acknowledgement
    expect(r.initialSyncProgress()).toEqual({ roomsDone: 0, roomsTotal: 2 });
    r.acknowledge(1);
    expect(r.initialSyncProgress()).toEqual({ roomsDone: 1, roomsTotal: 2 });
    const d2 = r.nextDelta()!;
    expect(d2.seq).toBe(2);
    expect(Object.keys(d2.rooms!.join!)).toEqual([quiet]);
    expect(d2.progress).toEqual({ roomsDone: 2, roomsTotal: 2 });
    expect(d2.account_data).toBeUndefined();
    r.acknowledge(2);
    expect(r.initialSyncProgress()).toEqual({ roomsDone: 2, roomsTotal: 2 });
    expect(r.nextDelta()).toBeUndefined();
    expect(r.pendingDelta()).toBeUndefined();
  });

  it('live changes do not wait behind the initial sync; changes to a queued room travel with its chunk', () => {
    const r = new SyncReducer({ initialChunkBytes: 3000 });
    r.ingest(step(v, 'initial').gateway);
    // Quiet is still queued; a live message for General goes out at once (merged with chunk 1, unacked).
    const live = r.ingest(step(v, 'one-text-from-alice').gateway)!;
    expect(live.seq).toBe(2);
    expect(Object.keys(live.rooms!.join!)).toEqual([general]);
    expect(live.rooms!.join![general]!.n).toBe(0); // a re-send: the host skips what it has
    r.acknowledge(2);
    const d = r.nextDelta()!;
    expect(Object.keys(d.rooms!.join!)).toEqual([quiet]);
  });

  it('one new text message from another user: one event, changed count only, no noise', () => {
    const r = reducerAt('one-text-from-alice');
    const s = step(v, 'one-text-from-alice');
    const d = r.ingest(s.gateway)!;
    const room = d.rooms!.join![general]!;
    expect(Object.keys(d.rooms!.join!)).toEqual([general]);
    expect(room.timeline).toHaveLength(1);
    const ev = room.timeline![0]!;
    expect(ev.content).toEqual({ msgtype: 'm.text', body: 'Hello World' });
    expect(ev.unsigned).toBeUndefined(); // age and membership dropped
    expect(room.state).toBeUndefined(); // alice's lazy-loaded member event: the host has it
    expect(s.gateway.rooms!.join![general]!.state!.events).toHaveLength(1);
    expect(room.prev_batch).toBeUndefined();
    expect(room.limited).toBeUndefined();
    expect(room.n).toBeUndefined();
    expect(room.unread_notifications).toEqual({ notification_count: 2 });
    expect(room.summary).toBeUndefined();
    expect(d.device_one_time_keys_count).toBeUndefined();
    expect(d.device_unused_fallback_key_types).toBeUndefined();

    // The measurement of the brief (JSON bytes, before Trickle CBOR + handles).
    const onlyMessage: SyncDelta = { seq: d.seq, rooms: d.rooms! };
    const noBatch = new SyncReducer({ ...r.options, includeNextBatch: false }, r.exportState());
    const sizes = {
      rawSynapseUnfiltered: jsonSize(s.raw),
      rawSynapseGatewayFilter: jsonSize(s.gateway),
      delta: jsonSize(d),
      deltaRoomPartOnly: jsonSize(onlyMessage),
      deltaWithoutNextBatch: jsonSize(noBatch.pendingDelta()),
      // The same, as Trickle CBOR v1 (MSC3079 keys, value enums, 32-byte event ids); with handles for
      // the room id and user ids the host learned in the initial sync (the lead's session does this).
      rawSynapseUnfilteredCbor: encodeTrickleCbor(s.raw).length,
      deltaWithoutNextBatchCbor: encodeTrickleCbor(noBatch.pendingDelta()).length,
      deltaWithoutNextBatchCborHandles: encodeTrickleCbor(noBatch.pendingDelta(), { handleOf: (x) => (x === general ? 1 : x.startsWith('@') ? 2 : undefined) }).length,
      deltaRoomPartOnlyCborHandles: encodeTrickleCbor(onlyMessage, { handleOf: (x) => (x === general ? 1 : x.startsWith('@') ? 2 : undefined) }).length,
      // sync-wire.ts: room ids as values, so they can be handles too.
      wireRoomPartOnlyCborHandles: encodeTrickleCbor(deltaToWire(onlyMessage), { handleOf: (x) => (x === general ? 1 : x.startsWith('@') ? 2 : undefined) }).length,
      wireWithoutNextBatchCborHandles: encodeTrickleCbor(deltaToWire(noBatch.pendingDelta()!), { handleOf: (x) => (x === general ? 1 : x.startsWith('@') ? 2 : undefined) }).length,
    };
    console.log('one text message, JSON bytes:', sizes);
    expect(sizes.deltaRoomPartOnly).toBeLessThan(sizes.rawSynapseUnfiltered / 2);
    expect(sizes.delta).toBeLessThan(sizes.rawSynapseUnfiltered);
  });

  it('drops ephemeral events unless carried; typing is sent only when it changes', () => {
    const raw = step(v, 'topic-receipt-typing').raw;
    const off = reducerAt('topic-receipt-typing').ingest(raw)!;
    expect(off.rooms!.join![general]!.ephemeral).toBeUndefined();
    const on = reducerAt('topic-receipt-typing', { typing: true, receipts: true });
    const d = on.ingest(raw)!;
    expect(d.rooms!.join![general]!.ephemeral!.map((e) => e.type).sort()).toEqual(['m.receipt', 'm.typing']);
    on.acknowledge(d.seq);
    const again: SyncResponse = { next_batch: 'x1', rooms: { join: { [general]: { ephemeral: { events: raw.rooms!.join![general]!.ephemeral!.events.filter((e) => e.type === 'm.typing') } } } } };
    expect(on.ingest(again)).toBeUndefined();
  });

  it('an empty long-poll answer yields no delta (no chatter)', () => {
    const r = reducerAt('one-text-from-alice');
    const empty: SyncResponse = { next_batch: 's99', device_one_time_keys_count: { signed_curve25519: 0 }, device_unused_fallback_key_types: [], account_data: { events: [] }, rooms: { join: {} } };
    expect(r.ingest(empty)).toBeUndefined();
    expect(r.since).toBe('s99');
  });

  it('a homeserver gap keeps limited and prev_batch', () => {
    const r = reducerAt('burst-limited');
    const d = r.ingest(step(v, 'burst-limited').gateway)!;
    const room = d.rooms!.join![general]!;
    expect(room.limited).toBe(true);
    expect(room.prev_batch).toBe(step(v, 'burst-limited').gateway.rooms!.join![general]!.timeline!.prev_batch);
    expect(room.timeline).toHaveLength(20);
  });

  it('leave, join of an invited room, to-device and account data', () => {
    const r = reducerAt('to-device-and-account-data');
    const td = r.ingest(step(v, 'to-device-and-account-data').gateway)!;
    expect(td.to_device).toEqual([{ type: 'm.trickle.test', sender: v.provenance.other, content: { hello: 'device' } }]);
    expect(td.to_device_n).toBeUndefined();
    expect(td.account_data!.map((e) => e.type)).toEqual(['m.direct']);
    r.acknowledge(td.seq);
    const d = r.ingest(step(v, 'leave-quiet-join-later').gateway)!;
    expect(Object.keys(d.rooms!.leave!)).toEqual([quiet]);
    expect(d.rooms!.leave![quiet]!.timeline![0]!.content['membership']).toBe('leave');
    expect(Object.keys(d.rooms!.join!)).toEqual([later]);
    const lr = d.rooms!.join![later]!;
    expect(lr.prev_batch).toBeTypeOf('string');
    expect(lr.limited).toBeUndefined(); // new to the host: an anchor, not a gap
    expect(lr.unread_notifications).toEqual({ highlight_count: 0, notification_count: 0 });
    for (const e of lr.timeline!) expect(e.unsigned?.['replaces_state']).toBeUndefined();
  });

  it('redacted_because inside unsigned is compacted too', () => {
    const r = reducerAt('message-and-redaction');
    const d = r.ingest(step(v, 'message-and-redaction').gateway)!;
    const redacted = d.rooms!.join![later]!.timeline!.find((e) => e.unsigned?.['redacted_because'])!;
    expect((redacted.unsigned!['redacted_because'] as { unsigned?: unknown }).unsigned).toBeUndefined();
  });

  it('a lost push is re-sent inside the next delta, with counters, until acknowledged', () => {
    const r = reducerAt('one-text-from-alice');
    const d3 = r.ingest(step(v, 'one-text-from-alice').gateway)!;
    const d4 = r.ingest(step(v, 'own-message-from-bob').gateway)!; // d3 never acknowledged
    expect(d4.seq).toBe(d3.seq + 1);
    const room = d4.rooms!.join![general]!;
    expect(room.timeline!.map((e) => e.content['body'])).toEqual(['Hello World', 'hi alice']);
    expect(room.n).toBe(r.exportState().rooms[general]!.count - 2);
    expect(d4.device_lists!.changed!.sort()).toEqual([v.provenance.other, v.provenance.user].sort());
    expect(r.pendingDelta()).toEqual(d4);
    expect(r.acknowledge(d3.seq)).toBe(true);
    const p = r.pendingDelta()!;
    expect(p.seq).toBe(d4.seq);
    expect(p.rooms!.join![general]!.timeline!.map((e) => e.content['body'])).toEqual(['hi alice']);
    expect(p.rooms!.join![general]!.n).toBeUndefined();
    r.acknowledge(d4.seq);
    expect(r.pendingDelta()).toBeUndefined();
    expect(r.acknowledge(99)).toBe(false);
  });

  it('state exports and imports as plain JSON mid-stream', () => {
    const a = reducerAt('burst-limited');
    const b = new SyncReducer(a.options, JSON.parse(JSON.stringify(a.exportState())));
    for (const name of ['burst-limited', 'to-device-and-account-data', 'leave-quiet-join-later']) {
      expect(b.ingest(step(v, name).gateway)).toEqual(a.ingest(step(v, name).gateway));
    }
    expect(b.exportState()).toEqual(a.exportState());
  });
});

describe('sync-wire', () => {
  it('round-trips every captured delta through the wire shape and Trickle CBOR, and rejects bad shapes', () => {
    const r = new SyncReducer({ initialChunkBytes: 3000 });
    let n = 0;
    let texts = 0;
    let tuples = 0;
    let flats = 0;
    for (const s of v.steps) {
      let d = r.ingest(s.gateway);
      while (d) {
        const any = deltaToWire(d);
        expect(any[0]).toBe(d.seq);
        expect(deltaFromWire(decodeTrickleCbor(encodeTrickleCbor(any)))).toEqual(d);
        if (typeof any[1] === 'string') { flats++; n++; r.acknowledge(d.seq); d = r.nextDelta(); continue; }
        const wire = any as WireSyncDelta;
        expect(wire[1] === undefined || Array.isArray(wire[1])).toBe(true);
        const timelineOf = (room: JsonObject | unknown[]): unknown[] => (Array.isArray(room) ? room[1] as unknown[] : (room['timeline'] as unknown[] | undefined) ?? []);
        texts += (wire[1] ?? []).flatMap(timelineOf).filter((e) => Array.isArray(e) || typeof (e as { content: unknown }).content === 'string').length;
        tuples += (wire[1] ?? []).filter((room) => Array.isArray(room)).length;
        n++;
        r.acknowledge(d.seq);
        d = r.nextDelta();
      }
    }
    expect(n).toBeGreaterThan(8);
    expect(texts).toBeGreaterThan(3); // the plain-text shorthand was exercised
    expect(tuples + flats).toBeGreaterThan(0); // and the joined-room tuple or the one-message form
    expect(() => deltaFromWire([1, [{ timeline: [] }]])).toThrow(TypeError);
    expect(() => deltaFromWire([1, {}])).toThrow(TypeError);
    expect(() => deltaFromWire([1, [{ room_id: '!a' }, { room_id: '!a' }]])).toThrow(TypeError);
    expect(() => deltaFromWire([1, [], { rooms: { join: [] } }])).toThrow(TypeError);
    expect(() => deltaFromWire([1, [{ room_id: '!a', timeline: [{ type: 'm.room.message', content: 'x' }] }]])).toThrow(TypeError);
    expect(() => deltaFromWire({ seq: 1 })).toThrow(TypeError);
    expect(() => deltaFromWire([])).toThrow(TypeError);
    // The text shorthand is only for exactly {msgtype: m.text, body}.
    const ev = (content: JsonObject) => ({ type: 'm.room.message', content, sender: '@a:b', event_id: '$x' });
    const one = (e: JsonObject): SyncDelta => ({ seq: 5, rooms: { join: { '!r:b': { timeline: [e as never] } } } });
    expect(deltaToWire(one(ev({ msgtype: 'm.text', body: 'hi' })))).toEqual([5, [['!r:b', [{ content: 'hi', sender: '@a:b', event_id: '$x' }]]]]);
    // One plain message with exactly sender, event id and timestamp besides: the flat form.
    const plain = one({ ...ev({ msgtype: 'm.text', body: 'hi' }), origin_server_ts: 1700000000000 });
    expect(deltaToWire(plain)).toEqual([5, '!r:b', 'hi', '@a:b', '$x', 1700000000000]);
    expect(deltaFromWire(decodeTrickleCbor(encodeTrickleCbor(deltaToWire(plain))))).toEqual(plain);
    // Its timestamp relative to the room's time base, when both ends hold one.
    const base = { baseTs: (r: string) => (r === '!r:b' ? 1699999990000 : undefined) };
    expect(deltaToWire(plain, base)).toEqual([5, '!r:b', 'hi', '@a:b', '$x', -10001]);
    expect(encodeTrickleCbor(deltaToWire(plain, base)).length).toBe(encodeTrickleCbor(deltaToWire(plain)).length - 6);
    expect(deltaFromWire(decodeTrickleCbor(encodeTrickleCbor(deltaToWire(plain, base))), base)).toEqual(plain);
    expect(() => deltaFromWire(deltaToWire(plain, base))).toThrow(/time base/);
    expect((deltaFromWire(deltaToWire(plain, base), { missingBase: () => 42 }).rooms!.join!['!r:b']!.timeline![0]!).origin_server_ts).toBe(42);
    // A base after the event (the homeserver's clock went back): absolute.
    expect(deltaToWire(plain, { baseTs: () => 1700000000001 })[5]).toBe(1700000000000);
    // Two messages, or another room field: not flat.
    const two: SyncDelta = { seq: 5, rooms: { join: { '!r:b': { timeline: [...plain.rooms!.join!['!r:b']!.timeline!, ...plain.rooms!.join!['!r:b']!.timeline!] } } } };
    expect(typeof deltaToWire(two)[1]).not.toBe('string');
    for (const bad of [[1, '!a', 'hi', '@a', '$x', 0], [1, '!a', 'hi', '@a', '$x', 1.5], [1, '!a', 3, '@a', '$x', 1], [1, '!a', 'hi', '@a', '$x', 1, -1], [1.5, '!a', 'hi', '@a', '$x', 1]]) {
      expect(() => deltaFromWire(bad)).toThrow(TypeError);
    }
    // Unread counts: the notification count rides in the flat form; both counts in the room tuple; anything else makes the room a map again.
    const w = (d: SyncDelta): WireSyncDelta => deltaToWire(d) as WireSyncDelta;
    const counted = (u: JsonObject, extra: JsonObject = {}): SyncDelta => ({ seq: 6, rooms: { join: { '!r:b': { timeline: plain.rooms!.join!['!r:b']!.timeline!, unread_notifications: u, ...extra } } } });
    expect(deltaToWire(counted({ notification_count: 2 }))).toEqual([6, '!r:b', 'hi', '@a:b', '$x', 1700000000000, 2]);
    expect(w(counted({ notification_count: 2, highlight_count: 1 }))[1]).toEqual([['!r:b', [['hi', '@a:b', '$x', 1700000000000]], 2, 1]]);
    for (const d of [counted({ notification_count: 2 }), counted({ notification_count: 2, highlight_count: 1 }), counted({ highlight_count: 1 }), counted({ notification_count: 2 }, { limited: true }), counted({ notification_count: -1 }), two]) {
      expect(deltaFromWire(decodeTrickleCbor(encodeTrickleCbor(deltaToWire(d))))).toEqual(d);
    }
    expect(Array.isArray(w(counted({ highlight_count: 1 }))[1]![0])).toBe(false);
    for (const bad of [['!a'], ['!a', {}], [1, []], ['!a', [], -1], ['!a', [], 1, 'x'], ['!a', [], 1, 2, 3]]) {
      expect(() => deltaFromWire([1, [bad]])).toThrow(TypeError);
    }
    const withUnsigned = one({ ...ev({ msgtype: 'm.text', body: 'hi' }), origin_server_ts: 1, unsigned: { age: 1 } });
    expect(deltaFromWire(deltaToWire(withUnsigned))).toEqual(withUnsigned);
    expect(Array.isArray(((w(withUnsigned)[1]![0] as unknown[])[1] as unknown[])[0])).toBe(false);
    for (const bad of [['hi', '@a:b', '$x'], ['hi', '@a:b', '$x', 'ts'], [1, '@a:b', '$x', 2], ['hi', '@a:b', '$x', 1.5]]) {
      expect(() => deltaFromWire([1, [{ room_id: '!a', timeline: [bad] }]])).toThrow(TypeError);
    }
    for (const c of [{ msgtype: 'm.text', body: 'hi', format: 'x' }, { msgtype: 'm.notice', body: 'hi' }, { msgtype: 'm.text', body: 3 }]) {
      const d = one(ev(c));
      expect((((w(d)[1]![0] as unknown[])[1] as JsonObject[])[0]!)['content']).toEqual(c);
      expect(deltaFromWire(deltaToWire(d))).toEqual(d);
    }
    expect(deltaToWire({ seq: 7 })).toEqual([7]);
    expect(deltaToWire({ seq: 7, to_device: [] })).toEqual([7, [], { to_device: [] }]);
  });
});

describe('mergeEphemeral', () => {
  it('keeps only the newest receipt per (type, user, thread)', () => {
    const m = mergeEphemeral(
      [{ type: 'm.receipt', content: { $a: { 'm.read': { '@u:x': { ts: 1 }, '@v:x': { ts: 1 } } } } }],
      [{ type: 'm.receipt', content: { $b: { 'm.read': { '@u:x': { ts: 2 } } } } }],
    )!;
    expect(m).toEqual([{ type: 'm.receipt', content: { $a: { 'm.read': { '@v:x': { ts: 1 } } }, $b: { 'm.read': { '@u:x': { ts: 2 } } } } }]);
  });
});
