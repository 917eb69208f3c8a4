/**
 * Property tests: a model homeserver (one stream of room events and to-device messages, answering
 * /sync like Synapse without gaps), the gateway's SyncReducer, a link that loses, duplicates and
 * reorders pushes and acknowledgements, restarts of both ends through exported JSON, own echoes at
 * random moments, and independent local clients on the host's SyncStore.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SyncReducer } from '../../../src/matrix/sync-delta.ts';
import { SyncStore } from '../../../src/matrix/sync-store.ts';
import { deltaFromWire, deltaToWire } from '../../../src/matrix/sync-wire.ts';
import type { MatrixEvent, SyncDelta, SyncResponse } from '../../../src/matrix/sync-types.ts';

const ME = '@me:hs';
const ROOMS = ['!a:hs', '!b:hs', '!c:hs'];

interface StreamItem { kind: 'event'; room: string; event: MatrixEvent; txnId?: string }
interface DeviceItem { kind: 'device'; event: MatrixEvent }

/**
 * A homeserver: since tokens are stream indexes. Like Synapse with lazy-loaded members, a response
 * puts in a room's `state` the member event of @other as of the start of the timeline when @other
 * sends in it and that version was never sent; renames of @other are member events in the timeline.
 */
class ModelHomeserver {
  stream: (StreamItem | DeviceItem)[] = [];
  private n = 0;
  private llSent = new Map<string, string>();
  member(room: string, upTo: number): MatrixEvent {
    let m: MatrixEvent = { type: 'm.room.member', state_key: '@other:hs', sender: '@other:hs', content: { membership: 'join', displayname: 'v0' }, event_id: `$m0${room}`, origin_server_ts: 1 };
    for (const it of this.stream.slice(0, upTo)) if (it.kind === 'event' && it.room === room && it.event.type === 'm.room.member') m = it.event;
    return structuredClone(m);
  }
  rename(room: string): void {
    const i = ++this.n;
    this.stream.push({ kind: 'event', room, event: { type: 'm.room.member', state_key: '@other:hs', sender: '@other:hs', content: { membership: 'join', displayname: `v${i}` }, event_id: `$e${i}`, origin_server_ts: 1000 + i } });
  }
  send(room: string, fromMe: boolean): StreamItem {
    const i = ++this.n;
    const item: StreamItem = {
      kind: 'event', room,
      event: { type: 'm.room.message', content: { msgtype: 'm.text', body: `m${i}` }, sender: fromMe ? ME : '@other:hs', event_id: `$e${i}`, origin_server_ts: 1000 + i, unsigned: { age: 5, membership: 'join' } },
    };
    if (fromMe) { item.txnId = `gw.${i}`; item.event.unsigned = { ...item.event.unsigned, transaction_id: item.txnId }; }
    this.stream.push(item);
    return item;
  }
  toDevice(): void {
    const i = ++this.n;
    this.stream.push({ kind: 'device', event: { type: 'm.test', sender: '@other:hs', content: { i } } });
  }
  sync(since: string | undefined): SyncResponse {
    const from = since === undefined ? 0 : Number(since.slice(1));
    const items = this.stream.slice(from);
    const join: Record<string, { timeline: { events: MatrixEvent[]; limited: boolean; prev_batch: string }; state: { events: MatrixEvent[] }; unread_notifications: object }> = {};
    if (since === undefined) for (const r of ROOMS) join[r] = { timeline: { events: [], limited: false, prev_batch: 's0' }, state: { events: [] }, unread_notifications: { highlight_count: 0, notification_count: 0 } };
    const toDevice: MatrixEvent[] = [];
    items.forEach((it, k) => {
      if (it.kind === 'device') { toDevice.push(structuredClone(it.event)); return; }
      const jr = (join[it.room] ??= { timeline: { events: [], limited: false, prev_batch: `s${from + k}` }, state: { events: [] }, unread_notifications: {} });
      if (jr.timeline.events.length === 0 && it.event.sender === '@other:hs') {
        const m = this.member(it.room, from + k);
        if (this.llSent.get(it.room) !== m.event_id) { jr.state.events.push(m); this.llSent.set(it.room, m.event_id!); }
      }
      if (it.event.type === 'm.room.member') this.llSent.set(it.room, it.event.event_id!);
      jr.timeline.events.push(structuredClone(it.event));
      jr.unread_notifications = { highlight_count: 0, notification_count: jr.timeline.events.length };
    });
    return { next_batch: `s${this.stream.length}`, rooms: { join }, to_device: { events: toDevice }, device_one_time_keys_count: { signed_curve25519: 0 } };
  }
  roomOrder(room: string): string[] {
    return this.stream.filter((x): x is StreamItem => x.kind === 'event' && x.room === room).map((x) => x.event.event_id!);
  }
}

type Op =
  | { op: 'send'; room: number; me: boolean }
  | { op: 'rename'; room: number }
  | { op: 'toDevice' }
  | { op: 'gatewaySync' }
  | { op: 'repush' }
  | { op: 'deliver'; pick: number; keep: boolean }
  | { op: 'drop'; pick: number }
  | { op: 'ack'; pick: number; lose: boolean }
  | { op: 'echo'; pick: number }
  | { op: 'client'; c: number }
  | { op: 'snapshot' }
  | { op: 'probe'; pick: number }
  | { op: 'restartGateway' }
  | { op: 'restartHost' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('send' as const), room: fc.nat(ROOMS.length - 1), me: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'toDevice' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rename' as const), room: fc.nat(ROOMS.length - 1) }) },
  { weight: 4, arbitrary: fc.constant({ op: 'gatewaySync' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'repush' as const }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('deliver' as const), pick: fc.nat(7), keep: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('drop' as const), pick: fc.nat(7) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('ack' as const), pick: fc.nat(7), lose: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('echo' as const), pick: fc.nat(7) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('client' as const), c: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'snapshot' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('probe' as const), pick: fc.nat(20) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'restartGateway' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'restartHost' as const }) },
);

/** How often the interesting cases happened over all runs (asserted > 0: the test must exercise them). */
const seenCases = { relativeTimestamps: 0, resendsWithCounters: 0, staleDeltasIgnored: 0, echoesBeforeDelta: 0, chunkedInitialSyncs: 0, restarts: 0, probes: 0 };

interface Client { since?: string; rooms: Map<string, string[]>; toDevice: unknown[] }

function simulate(initialEvents: { room: number; me: boolean; rename: boolean }[], ops: Op[], chunkBytes: number, maxEventsPerRoom = 10_000): void {
  const hs = new ModelHomeserver();
  for (const e of initialEvents) { if (e.rename) hs.rename(ROOMS[e.room]!); else hs.send(ROOMS[e.room]!, e.me); }
  const pruning = maxEventsPerRoom < 10_000;
  const rOpts = { initialChunkBytes: chunkBytes, initialTimelineLimit: 1000, timelineLimit: 1000 };
  const sOpts = { epoch: 'p', maxEventsPerRoom };
  let reducer = new SyncReducer(rOpts);
  let store = new SyncStore(sOpts);
  const link: SyncDelta[] = [];
  const acks: number[] = [];
  const pendingEchoes: StreamItem[] = [...hs.stream as StreamItem[]].filter((x) => x.txnId !== undefined);
  const echoed = new Map<string, string>(); // event id → the local client's txn id
  const clients: Client[] = [0, 1, 2].map(() => ({ rooms: new Map(), toDevice: [] }));
  const snapshots: { token: string; ids: Map<string, Set<string>> }[] = [];
  const deviceSeen: unknown[] = [];

  // Every push crosses the wire form with the gateway's time base (sync-wire.ts) and is read back
  // with the host's: a delta the host will apply must come back exactly.
  const wireOf = new WeakMap<SyncDelta, unknown>();
  const push = (d: SyncDelta | undefined): void => {
    if (!d) return;
    const copy = structuredClone(d);
    const single = reducer.unacknowledged === 1 && reducer.pendingDelta()?.seq === d.seq;
    wireOf.set(copy, JSON.parse(JSON.stringify(deltaToWire(d, { baseTs: (r) => (single ? reducer.ackedLastTs(r) : undefined) }))));
    link.push(copy);
  };
  const deliver = (original: SyncDelta): void => {
    let d = original;
    const w = wireOf.get(original);
    if (w !== undefined) {
      const decoded = deltaFromWire(w, { baseTs: (r) => store.lastTimelineTs(r), missingBase: () => -1 });
      if (original.seq > store.lastAppliedSeq) {
        expect(decoded).toEqual(original);
        if (Array.isArray(w) && typeof w[1] === 'string' && (w[5] as number) < 0) seenCases.relativeTimestamps++;
      }
      d = decoded;
    }
    if (Object.values(d.rooms?.join ?? {}).some((rd) => rd.n !== undefined)) seenCases.resendsWithCounters++;
    if (d.progress && d.progress.roomsDone < d.progress.roomsTotal) seenCases.chunkedInitialSyncs++;
    const r = store.applyDelta(structuredClone(d));
    if (!r.applied) seenCases.staleDeltasIgnored++;
    acks.push(r.ackSeq);
  };
  const ack = (seq: number): void => { reducer.acknowledge(seq); push(reducer.nextDelta()); };
  const echo = (it: StreamItem): void => {
    const txn = `local.${it.event.event_id}`;
    echoed.set(it.event.event_id!, txn);
    if (!store.timeline(it.room).some((e) => e.event_id === it.event.event_id)) seenCases.echoesBeforeDelta++;
    store.synthesizeOwnEcho({ roomId: it.room, type: it.event.type, content: it.event.content, txnId: txn, sender: ME, eventId: it.event.event_id!, originServerTs: it.event.origin_server_ts! + 1 });
  };
  const clientSync = (c: Client): void => {
    const res = store.answer(c.since, { room: { timeline: { limit: 100_000 } } });
    for (const [roomId, jr] of Object.entries(res.rooms?.join ?? {})) {
      const list = c.since === undefined ? [] : (c.rooms.get(roomId) ?? []);
      for (const e of jr.timeline!.events) {
        expect(list).not.toContain(e.event_id); // never the same event twice
        list.push(e.event_id!);
        if (echoed.has(e.event_id!) && e.sender === ME) expect(e.unsigned?.['transaction_id']).toBe(echoed.get(e.event_id!));
      }
      c.rooms.set(roomId, list);
    }
    for (const e of res.to_device?.events ?? []) { c.toDevice.push(e.content); deviceSeen.push(e.content); }
    c.since = res.next_batch;
  };
  const timelineIds = (roomId: string): string[] => store.timeline(roomId).map((e) => e.event_id!);

  for (const o of ops) {
    switch (o.op) {
      case 'send': { const it = hs.send(ROOMS[o.room]!, o.me); if (o.me) pendingEchoes.push(it); break; }
      case 'toDevice': hs.toDevice(); break;
      case 'rename': hs.rename(ROOMS[o.room]!); break;
      case 'gatewaySync': push(reducer.ingest(hs.sync(reducer.since))); break;
      case 'repush': push(reducer.pendingDelta()); break;
      case 'deliver': if (link.length) { const i = o.pick % link.length; const d = link[i]!; if (!o.keep) link.splice(i, 1); deliver(d); } break;
      case 'drop': if (link.length) link.splice(o.pick % link.length, 1); break;
      case 'ack': if (acks.length) { const i = o.pick % acks.length; const [s] = acks.splice(i, 1); if (!o.lose) ack(s!); } break;
      case 'echo': if (pendingEchoes.length) {
        const [it] = pendingEchoes.splice(o.pick % pendingEchoes.length, 1);
        // A real echo follows its send at once; the store remembers the last 64 pruned ids of a room.
        if (!pruning || hs.roomOrder(it!.room).length - hs.roomOrder(it!.room).indexOf(it!.event.event_id!) < 60) echo(it!);
        else echoed.delete(it!.event.event_id!);
      } break;
      case 'client': if (!pruning) clientSync(clients[o.c]!); break;
      case 'snapshot': {
        const res = store.answer(undefined, undefined);
        for (const e of res.to_device?.events ?? []) deviceSeen.push(e.content);
        snapshots.push({ token: res.next_batch, ids: new Map(ROOMS.map((r) => [r, new Set(timelineIds(r))])) });
        break;
      }
      case 'probe': {
        const snap = snapshots[o.pick % Math.max(1, snapshots.length)];
        if (!snap) break;
        // A client with a random old since gets exactly the events written after it, in store order.
        const res = store.answer(snap.token, { room: { timeline: { limit: 100_000 } } });
        for (const e of res.to_device?.events ?? []) deviceSeen.push(e.content);
        for (const r of ROOMS) {
          const want = timelineIds(r).filter((id) => !snap.ids.get(r)!.has(id));
          const got = (res.rooms?.join?.[r]?.timeline?.events ?? []).map((e) => e.event_id);
          expect(got).toEqual(want);
          if (want.length > 0) seenCases.probes++;
        }
        break;
      }
      case 'restartGateway': seenCases.restarts++; reducer = new SyncReducer(rOpts, JSON.parse(JSON.stringify(reducer.exportState()))); link.length = 0; acks.length = 0; break;
      case 'restartHost': store = new SyncStore(sOpts, JSON.parse(JSON.stringify(store.exportState()))); link.length = 0; acks.length = 0; break;
    }
  }
  // Drain: the gateway keeps re-pushing until everything is acknowledged.
  for (let guard = 0; guard < 1000; guard++) {
    push(reducer.ingest(hs.sync(reducer.since)));
    const d = reducer.pendingDelta() ?? reducer.nextDelta();
    if (!d) break;
    deliver(d);
    ack(acks.pop()!);
    acks.length = 0;
  }
  expect(reducer.pendingDelta()).toBeUndefined();
  expect(reducer.initialSyncProgress().roomsDone).toBe(reducer.initialSyncProgress().roomsTotal);
  for (const it of pendingEchoes) if (!pruning) echo(it); // echoes that come after the delta

  const final = store.answer(undefined, { room: { timeline: { limit: 100_000 } } });
  for (const r of ROOMS) {
    // Homeserver order exactly: no duplicate, no gap, own echoes at their homeserver position
    // (with pruning: the newest maxEventsPerRoom of it).
    const order = hs.roomOrder(r);
    expect(timelineIds(r)).toEqual(order.slice(Math.max(0, order.length - maxEventsPerRoom)));
    for (const e of store.timeline(r)) if (echoed.has(e.event_id!)) expect(e.unsigned?.['transaction_id']).toBe(echoed.get(e.event_id!));
    // Current state: @other's newest member event (state before the timeline, then the timeline).
    const jr = final.rooms!.join![r]!;
    const members = [...jr.state!.events, ...jr.timeline!.events].filter((e) => e.type === 'm.room.member');
    expect(members[members.length - 1]?.content['displayname'] ?? 'v0').toBe(hs.member(r, hs.stream.length).content['displayname']);
  }
  if (pruning) return;
  const allDevice = hs.stream.filter((x): x is DeviceItem => x.kind === 'device').map((x) => x.event.content);
  for (const c of clients) {
    clientSync(c);
    for (const r of ROOMS) {
      const got = c.rooms.get(r) ?? [];
      expect([...got].sort()).toEqual([...hs.roomOrder(r)].sort());
      const others = (ids: string[]): string[] => ids.filter((id) => !echoed.has(id));
      expect(others(got)).toEqual(others(hs.roomOrder(r)));
    }
    // A client never gets a to-device message twice.
    expect(new Set(c.toDevice.map((x) => JSON.stringify(x))).size).toBe(c.toDevice.length);
  }
  // Every to-device message reached some local reader (they are deleted only once acknowledged).
  const seen = new Set(deviceSeen.map((x) => JSON.stringify(x)));
  for (const x of allDevice) expect(seen.has(JSON.stringify(x))).toBe(true);
}

describe('sync over a lossy link (property)', () => {
  it('store timeline = homeserver order, no duplicates, no gaps; clients get exactly what is new', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ room: fc.nat(ROOMS.length - 1), me: fc.boolean(), rename: fc.boolean() }), { maxLength: 12, size: 'max' }),
        fc.array(opArb, { minLength: 30, maxLength: 150, size: 'max' }),
        fc.constantFrom(200, 600, 100_000),
        (initial, ops, chunkBytes) => simulate(initial, ops, chunkBytes),
      ),
      { numRuns: 300 },
    );
    console.log('cases exercised:', seenCases);
    // The same with a tiny store (pruning): the event counters, not event ids, prevent duplicates.
    fc.assert(
      fc.property(
        fc.array(fc.record({ room: fc.nat(ROOMS.length - 1), me: fc.boolean(), rename: fc.boolean() }), { maxLength: 12, size: 'max' }),
        fc.array(opArb, { minLength: 30, maxLength: 150, size: 'max' }),
        (initial, ops) => simulate(initial, ops, 300, 3),
      ),
      { numRuns: 300 },
    );
    for (const [k, n] of Object.entries(seenCases)) expect(n, k).toBeGreaterThan(0);
  });

  it('own echo + later delta = one event (and the reverse order)', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.boolean(), (echoFirst, lose) => {
        const hs = new ModelHomeserver();
        const reducer = new SyncReducer();
        const store = new SyncStore({ epoch: 'q' });
        const d0 = reducer.ingest(hs.sync(undefined))!;
        reducer.acknowledge(store.applyDelta(d0).ackSeq);
        const it = hs.send(ROOMS[0]!, true);
        const other = hs.send(ROOMS[0]!, false);
        const echo = (): boolean => store.synthesizeOwnEcho({ roomId: it.room, type: 'm.room.message', content: it.event.content, txnId: 'cli-1', sender: ME, eventId: it.event.event_id!, originServerTs: 1 });
        if (echoFirst) expect(echo()).toBe(true);
        const d = reducer.ingest(hs.sync(reducer.since))!;
        if (!lose) store.applyDelta(d);
        store.applyDelta(reducer.pendingDelta()!);
        if (!echoFirst) expect(echo()).toBe(false);
        const tl = store.timeline(ROOMS[0]!);
        expect(tl.map((e) => e.event_id)).toEqual([it.event.event_id, other.event.event_id]);
        expect(tl[0]!.unsigned?.['transaction_id']).toBe('cli-1');
      }),
    );
  });
});
