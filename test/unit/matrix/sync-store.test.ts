import { describe, expect, it } from 'vitest';
import { SyncAccumulator } from 'matrix-js-sdk/lib/sync-accumulator.js';
import { SyncReducer } from '../../../src/matrix/sync-delta.ts';
import { SyncStore, SyncWaitList, isEmptySyncResponse, parseSyncQuery } from '../../../src/matrix/sync-store.ts';
import type { JoinedRoom, MatrixEvent, SyncDelta, SyncResponse } from '../../../src/matrix/sync-types.ts';
import { loadSyncVectors } from '../../vectors/sync/load.ts';

const v = loadSyncVectors();
const { general, quiet, later } = v.provenance.rooms;
const me = v.provenance.user;
const NOW = 1_795_701_400_000;

/** The real stream through a reducer into a store, every delta acknowledged; `before(name)` runs first. */
function run(opts: { until?: string; before?: (name: string, store: SyncStore) => void; store?: SyncStore } = {}): { store: SyncStore; reducer: SyncReducer; deltas: SyncDelta[] } {
  const reducer = new SyncReducer();
  const store = opts.store ?? new SyncStore({ epoch: 'e1' });
  const deltas: SyncDelta[] = [];
  for (const s of v.steps) {
    if (s.name === opts.until) break;
    opts.before?.(s.name, store);
    let d = reducer.ingest(s.gateway);
    while (d) {
      deltas.push(d);
      const r = store.applyDelta(d);
      reducer.acknowledge(r.ackSeq);
      d = reducer.nextDelta();
    }
  }
  return { store, reducer, deltas };
}

const joined = (r: SyncResponse, roomId: string): JoinedRoom => r.rooms!.join![roomId]!;
const bodies = (events: MatrixEvent[]): unknown[] => events.map((e) => e.content['body'] ?? e.type);

describe('SyncStore answers local /sync from real Synapse data', () => {
  it('initial sync: joined rooms with state, the last timeline.limit events, account data, to-device', () => {
    const { store } = run();
    const r = store.answer(undefined, undefined, { nowMs: NOW });
    expect(r.next_batch).toBe(`trickle_s_e1_${store.position}`);
    expect(Object.keys(r.rooms!.join!).sort()).toEqual([general, later].sort());
    expect(r.rooms!.leave).toBeUndefined(); // Quiet was left; not in an initial sync without include_leave
    expect(r.rooms!.invite).toBeUndefined(); // the invite to Later became a join
    const g = joined(r, general);
    expect(g.timeline!.events).toHaveLength(10);
    expect(bodies(g.timeline!.events).slice(-2)).toEqual(['burst 25', 'burst 26']);
    expect(g.timeline!.limited).toBe(true);
    expect(g.timeline!.prev_batch).toMatch(/^trickle_b_e1_\d+_\$/);
    const stateTypes = g.state!.events.map((e) => e.type);
    expect(stateTypes).toEqual(expect.arrayContaining(['m.room.create', 'm.room.name', 'm.room.topic', 'm.room.member', 'm.room.power_levels']));
    expect(g.state!.events.find((e) => e.type === 'm.room.topic')!.content).toEqual({ topic: 'radio talk' });
    expect(g.unread_notifications).toEqual({ highlight_count: 0, notification_count: 29 });
    expect(g.summary).toEqual({ 'm.joined_member_count': 2, 'm.invited_member_count': 0 });
    expect(g.account_data!.events.map((e) => e.type)).toEqual(['m.tag']);
    expect(g.ephemeral).toEqual({ events: [] }); // typing/receipts not carried: still well formed
    expect(g.timeline!.events[0]!.unsigned!['age']).toBe(NOW - g.timeline!.events[0]!.origin_server_ts!);
    expect(r.account_data!.events.find((e) => e.type === 'm.direct')!.content).toEqual({ [v.provenance.other]: [general] });
    expect(r.to_device!.events.map((e) => e.type)).toEqual(['m.trickle.test']);
    expect(r.device_one_time_keys_count).toEqual({ signed_curve25519: 0 });
    expect(r.device_unused_fallback_key_types).toEqual([]);
    // The redaction in Later: the redacted event is empty, with redacted_because.
    const l = joined(r, later);
    const red = l.timeline!.events.find((e) => e.unsigned?.['redacted_because']);
    expect(red!.content).toEqual({});
  });

  it('incremental sync: exactly what came after since; long-poll bookkeeping', () => {
    let since: string | undefined;
    const { store } = run({
      before: (name, s) => { if (name === 'own-message-from-bob') since = s.answer(undefined, undefined).next_batch; },
    });
    expect(store.hasNewerThan(since)).toBe(true);
    const r = store.answer(since, { room: { timeline: { limit: 100 } } });
    // The burst came after a homeserver gap: a timeline cannot hold an inner gap, so the answer starts
    // at the gap (limited, with the homeserver's token: 'hi alice' and the topic are one page back).
    expect(bodies(joined(r, general).timeline!.events)).toEqual(Array.from({ length: 20 }, (_, i) => `burst ${i + 7}`));
    expect(joined(r, general).timeline!.limited).toBe(true);
    expect(joined(r, general).timeline!.prev_batch).toBe(v.steps.find((s) => s.name === 'burst-limited')!.gateway.rooms!.join![general]!.timeline!.prev_batch);
    // The topic changed before the gap: it comes as state.
    expect(joined(r, general).state!.events.map((e) => e.content['topic'])).toContain('radio talk');
    expect(r.rooms!.leave![quiet]!.timeline!.events.map((e) => e.content['membership'])).toEqual(['leave']);
    expect(Object.keys(r.rooms!.join!).sort()).toEqual([general, later].sort());
    expect(r.device_lists!.changed).toEqual(expect.arrayContaining([v.provenance.user]));
    const again = store.answer(r.next_batch, undefined);
    expect(isEmptySyncResponse(again)).toBe(true);
    expect(store.hasNewerThan(r.next_batch)).toBe(false);
    expect(store.waitKey(r.next_batch)).toBe(store.position);
    expect(store.waitKey(undefined)).toBe(-1);
  });

  it('a client that is behind by more than its limit gets limited + a local prev_batch it can page back from', () => {
    let since: string | undefined;
    const { store } = run({ until: 'to-device-and-account-data', before: (name, s) => { if (name === 'burst-limited') since = s.answer(undefined, undefined).next_batch; } });
    const r = store.answer(since, { room: { timeline: { limit: 5 } } });
    const g = joined(r, general);
    expect(bodies(g.timeline!.events)).toEqual(['burst 22', 'burst 23', 'burst 24', 'burst 25', 'burst 26']);
    expect(g.timeline!.limited).toBe(true);
    const page = store.messages(general, { from: g.timeline!.prev_batch!, dir: 'b', limit: 30 });
    expect(page.kind).toBe('local');
    if (page.kind !== 'local') return;
    expect(bodies(page.response.chunk)).toEqual(Array.from({ length: 15 }, (_, i) => `burst ${21 - i}`));
    // The start of the gap: the next page comes from the homeserver, with its own token.
    expect(page.response.end).toBe(v.steps.find((s) => s.name === 'burst-limited')!.gateway.rooms!.join![general]!.timeline!.prev_batch);
    expect(store.messages(general, { from: page.response.end!, dir: 'b' })).toEqual({ kind: 'homeserver' });
    const small = store.messages(general, { from: g.timeline!.prev_batch!, dir: 'b', limit: 3 });
    if (small.kind !== 'local') throw new Error('expected local');
    expect(bodies(small.response.chunk)).toEqual(['burst 21', 'burst 20', 'burst 19']);
    const next = store.messages(general, { from: small.response.end!, dir: 'b', limit: 2 });
    if (next.kind !== 'local') throw new Error('expected local');
    expect(bodies(next.response.chunk)).toEqual(['burst 18', 'burst 17']);
    const fwd = store.messages(general, { from: small.response.end!, dir: 'f', limit: 2 });
    if (fwd.kind !== 'local') throw new Error('expected local');
    expect(bodies(fwd.response.chunk)).toEqual(['burst 19', 'burst 20']);
  });

  it('own echo: the sender gets its transaction id at once; the later delta does not duplicate it', () => {
    let client: string | undefined;
    const { store } = run({
      until: 'topic-receipt-typing',
      before: (name, s) => {
        if (name !== 'own-message-from-bob') return;
        client = s.answer(undefined, undefined).next_batch;
        const own = v.steps.find((x) => x.name === name)!.gateway.rooms!.join![general]!.timeline!.events[0]!;
        expect(own.event_id).toBe(v.provenance.ownEventId);
        expect(s.synthesizeOwnEcho({ roomId: general, type: own.type, content: own.content, txnId: 'm1700.7', sender: me, eventId: own.event_id!, originServerTs: own.origin_server_ts! - 5 })).toBe(true);
        const r = s.answer(client, undefined);
        expect(joined(r, general).timeline!.events.map((e) => [e.content['body'], e.unsigned?.['transaction_id']])).toEqual([['hi alice', 'm1700.7']]);
        client = r.next_batch;
      },
    });
    const tl = store.timeline(general);
    expect(tl.filter((e) => e.event_id === v.provenance.ownEventId)).toHaveLength(1);
    const own = tl.find((e) => e.event_id === v.provenance.ownEventId)!;
    expect(own.unsigned?.['transaction_id']).toBe('m1700.7');
    expect(own.origin_server_ts).toBe(v.steps.find((x) => x.name === 'own-message-from-bob')!.gateway.rooms!.join![general]!.timeline!.events[0]!.origin_server_ts);
    // The client that had the echo does not get the event again.
    const r = store.answer(client, undefined);
    expect(r.rooms!.join?.[general]).toBeUndefined();
    // A delta first, echo second: no duplicate either, the stored event gains the txn id.
    expect(store.synthesizeOwnEcho({ roomId: general, type: 'm.room.message', content: {}, txnId: 'again', sender: me, eventId: v.provenance.ownEventId, originServerTs: 1 })).toBe(false);
    expect(store.timeline(general).filter((e) => e.event_id === v.provenance.ownEventId)).toHaveLength(1);
  });

  it('ignores a delta applied twice and an older delta arriving late', () => {
    const { store, deltas } = run();
    const before = JSON.stringify(store.exportState());
    for (const d of deltas) expect(store.applyDelta(d)).toEqual({ applied: false, ackSeq: deltas[deltas.length - 1]!.seq });
    expect(JSON.stringify(store.exportState())).toBe(before);
  });

  it('to-device messages are deleted once a client syncs past them', () => {
    const { store } = run();
    const first = store.answer(undefined, undefined);
    expect(first.to_device!.events).toHaveLength(1);
    expect(store.answer(undefined, undefined).to_device!.events).toHaveLength(1);
    store.answer(first.next_batch, undefined);
    expect(store.answer(undefined, undefined).to_device!.events).toHaveLength(0);
  });

  it('a since token of another epoch or garbage gets an initial answer', () => {
    const { store } = run();
    for (const t of ['trickle_s_zz_3', 'garbage', `trickle_s_e1_${store.position + 5}`]) {
      const r = store.answer(t, undefined);
      expect(joined(r, general).timeline!.limited).toBe(true);
      expect(joined(r, general).state!.events.length).toBeGreaterThan(3);
    }
  });

  it('exports and imports as plain JSON, and answers the same', () => {
    const { store } = run({ until: 'leave-quiet-join-later' });
    const copy = new SyncStore({ epoch: 'e1' }, JSON.parse(JSON.stringify(store.exportState())));
    expect(copy.answer(undefined, undefined, { nowMs: NOW })).toEqual(store.answer(undefined, undefined, { nowMs: NOW }));
    expect(copy.lastAppliedSeq).toBe(store.lastAppliedSeq);
  });

  it('keeps at most maxEventsPerRoom events per room; older pages go to the homeserver', () => {
    const { store } = run({ store: new SyncStore({ epoch: 'e1', maxEventsPerRoom: 8 }) });
    expect(store.timeline(general)).toHaveLength(8);
    const r = store.answer(undefined, { room: { timeline: { limit: 50 } } });
    expect(joined(r, general).timeline!.events).toHaveLength(8);
    expect(joined(r, general).timeline!.limited).toBe(true);
    // The homeserver token before the oldest kept event was pruned with the events before it.
    const oldest = store.timeline(general)[0]!.event_id!;
    expect(joined(r, general).timeline!.prev_batch).toBe(`trickle_c_e1_${oldest}`);
    expect(store.messages(general, { from: joined(r, general).timeline!.prev_batch!, dir: 'b' })).toEqual({ kind: 'context', eventId: oldest });
    const short = store.answer(undefined, { room: { timeline: { limit: 3 } } });
    const lp = store.messages(general, { from: joined(short, general).timeline!.prev_batch!, dir: 'b', limit: 50 });
    if (lp.kind !== 'local') throw new Error('expected local');
    expect(lp.response.chunk).toHaveLength(5);
    expect(lp.response.end).toBe(`trickle_c_e1_${oldest}`);
    expect(JSON.stringify(store.exportState()).length).toBeLessThan(40_000);
  });

  it('what matrix-js-sdk (SyncAccumulator) builds from the local answers matches the store', () => {
    const acc = new SyncAccumulator();
    let since: string | undefined;
    const sync = (s: SyncStore): void => {
      const r = s.answer(since, { room: { timeline: { limit: 50 } } });
      acc.accumulate(r as never);
      since = r.next_batch;
    };
    const { store } = run({ before: (_name, s) => sync(s) });
    sync(store);
    const json = acc.getJSON();
    expect(json.nextBatch).toBe(since);
    expect(Object.keys(json.roomsData.join).sort()).toEqual([general, later].sort());
    for (const roomId of [general, later]) {
      const got = json.roomsData.join[roomId]!.timeline.events.map((e) => e.event_id);
      const want = store.timeline(roomId).map((e) => e.event_id);
      expect(got.length).toBeGreaterThan(0);
      expect(got).toEqual(want.slice(want.length - got.length));
    }
    const st = (json.roomsData.join[general]!.state?.events ?? []) as MatrixEvent[];
    expect(st.find((e) => e.type === 'm.room.topic')?.content).toEqual({ topic: 'radio talk' });
    expect(json.accountData.find((e) => e.type === 'm.direct')?.content).toEqual({ [v.provenance.other]: [general] });
  });
});

describe('small pieces', () => {
  it('parseSyncQuery reads since, timeout, inline or stored filters', () => {
    const stored = { room: { timeline: { limit: 3 } } };
    expect(parseSyncQuery('since=trickle_s_a_4&timeout=30000&filter=7&full_state=true', (id) => (id === '7' ? stored : undefined)))
      .toEqual({ since: 'trickle_s_a_4', timeoutMs: 30000, filter: stored, fullState: true });
    expect(parseSyncQuery(`filter=${encodeURIComponent('{"room":{"timeline":{"limit":2}}}')}`).filter).toEqual({ room: { timeline: { limit: 2 } } });
    expect(parseSyncQuery('timeout=-5').timeoutMs).toBe(0);
  });

  it('SyncWaitList wakes exactly the waiters passed', () => {
    const w = new SyncWaitList<string>();
    w.add(3, 'a'); w.add(5, 'b'); w.add(-1, 'c');
    expect(w.due(4).sort()).toEqual(['a', 'c']);
    expect(w.size).toBe(1);
    expect(w.remove('b')).toBe(true);
    expect(w.due(100)).toEqual([]);
  });
});
