/**
 * Issue 12, "many accounts per kit", end to end with real parts: one field kit (host), one
 * gateway, a serial link between them (PTY pair and relay), a real Synapse. alice and bob each
 * use the kit with their own account (matrix-js-sdk clients, plus a plain /sync loop each that
 * records every event exactly as the kit hands it out); carol talks to Synapse directly.
 *
 *  - both in one room: each gets every message exactly once, in the homeserver's order;
 *  - alice's private room never reaches bob: not in his /sync (initial, incremental, or with
 *    alice's since token), not through /messages with alice's store tokens, not in his store's
 *    section of the kit's state file;
 *  - the kit keeps one store, one registration and one gateway long-poll per account;
 *  - a restart of the host keeps both stores (the same since tokens go on, nothing twice);
 *  - so does a new link session (the gateway restarted without its secure-link snapshot): what
 *    was sent while the kit was cut off arrives whole (no gap), at the plain loops and the sdk;
 *  - a state file written before issue 12 (one store, owned by alice) is migrated: alice keeps
 *    her store, bob gets a new one, fed from a new delta stream (the gateway's old stream for
 *    him is refused by his new store), and still nothing of alice's room.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient, ClientEvent, type MatrixClient } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { silentLogger } from '../../src/log.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { buildSecurity, stateStores } from '../../src/cli/security.ts';
import { FILES } from '../../src/cli/keys.ts';
import { createRadioPath, pairedStateDirs, type RadioPath } from '../helpers/stack.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */

interface Account { userId: string; token: string }

/** A plain /sync loop through the kit: every timeline event of every answer, in order. */
class SyncLoop {
  since: string | undefined;
  readonly events: { roomId: string; eventId: string; type: string; body: string | undefined }[] = [];
  /** Every answer's text, to search for what must never be there. */
  text = '';
  answers = 0;
  private stopped = false;
  private running: Promise<void> | undefined;
  constructor(private readonly url: () => string, private readonly token: string, private readonly filterId: () => string | undefined) {}

  start(): void { this.stopped = false; this.running = this.run(); }
  async stop(): Promise<void> { this.stopped = true; await this.running; }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const q = new URLSearchParams({ timeout: '1000' });
      if (this.since) q.set('since', this.since);
      const f = this.filterId();
      if (f) q.set('filter', f);
      let r: Response;
      try {
        r = await fetch(`${this.url()}/_matrix/client/v3/sync?${q}`, { headers: { authorization: `Bearer ${this.token}` }, signal: AbortSignal.timeout(15_000) });
      } catch { await new Promise((res) => setTimeout(res, 200)); continue; } // the host restarting
      const text = await r.text();
      if (r.status !== 200) { await new Promise((res) => setTimeout(res, 200)); continue; }
      this.text += text;
      this.answers++;
      const json = JSON.parse(text);
      for (const [roomId, room] of Object.entries<any>(json.rooms?.join ?? {})) {
        for (const e of room.timeline?.events ?? []) this.events.push({ roomId, eventId: e.event_id, type: e.type, body: e.content?.body });
      }
      this.since = json.next_batch;
    }
  }

  messages(roomId: string): { eventId: string; body: string | undefined }[] {
    return this.events.filter((e) => e.roomId === roomId && e.type === 'm.room.message');
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('push sync with several accounts on one field kit', () => {
  let hs: SynapseHandle;
  let path: RadioPath;
  let host: Host | undefined;
  let gateway: Gateway;
  let state: Awaited<ReturnType<typeof pairedStateDirs>>;
  let hostPort = 0;
  const hostUrl = (): string => `http://127.0.0.1:${hostPort}`;
  const logger = silentLogger();
  const radio = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 7, codingRate: 5 }, maxBodyBytes: 1 << 20 };
  const startH = async (): Promise<Host> => {
    const h = await startHost({ device: path.hostDevice, listenHost: '127.0.0.1', listenPort: hostPort, ...radio, requestTimeoutMs: 60_000, logger, pushSync: true,
      security: buildSecurity('host', state.hostDir, 'encrypt', logger)!, ...stateStores(state.hostDir, 'host', logger) });
    hostPort = h.port;
    return h;
  };
  let alice: Account;
  let bob: Account;
  let carol: Account;
  const filters: Record<string, string | undefined> = {};
  let aliceLoop: SyncLoop;
  let bobLoop: SyncLoop;
  const clients: MatrixClient[] = [];
  let roomId = '';
  let secretRoom = '';
  const SECRET = 'the cache is under the third pine';

  const viaHost = async (who: Account, method: string, p: string, body?: unknown): Promise<{ status: number; json: any; text: string }> => {
    const r = await fetch(`${hostUrl()}${p}`, { method, headers: { authorization: `Bearer ${who.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await r.text();
    let json: any;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: r.status, json, text };
  };
  const direct = async (who: Account, method: string, p: string, body?: unknown): Promise<any> => {
    const r = await fetch(`${hs.baseUrl}${p}`, { method, headers: { authorization: `Bearer ${who.token}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    expect(r.status, `${method} ${p}`).toBe(200);
    return r.json();
  };
  let txn = 0;
  const send = async (who: Account, room: string, body: string, through: 'host' | 'direct'): Promise<string> => {
    const p = `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/send/m.room.message/acc${txn++}`;
    if (through === 'direct') return (await direct(who, 'PUT', p, { msgtype: 'm.text', body })).event_id;
    const r = await viaHost(who, 'PUT', p, { msgtype: 'm.text', body });
    expect(r.status, r.text).toBe(200);
    return r.json.event_id;
  };
  /** The room's messages in the homeserver's order, as carol sees them. */
  const serverOrder = async (): Promise<string[]> => {
    const r = await direct(carol, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=500`);
    return (r.chunk as any[]).filter((e) => e.type === 'm.room.message').map((e) => e.event_id as string).reverse();
  };
  const hostState = (): any => JSON.parse(readFileSync(join(state.hostDir, 'sync-host.json'), 'utf8'));
  /** Every message exactly once, others' in the homeserver's order, one's own in the order sent. */
  const checkExactlyOnce = (loop: SyncLoop, me: Account, order: string[], sentByMe: string[]): void => {
    const got = loop.messages(roomId).map((m) => m.eventId);
    expect(new Set(got).size, 'no message twice').toBe(got.length);
    expect([...got].sort()).toEqual([...order].sort());
    const mine = new Set(sentByMe);
    expect(got.filter((id) => !mine.has(id))).toEqual(order.filter((id) => !mine.has(id)));
    expect(got.filter((id) => mine.has(id))).toEqual(order.filter((id) => mine.has(id)));
    void me;
  };
  const sent: Record<string, string[]> = { alice: [], bob: [] };

  beforeAll(async () => {
    hs = await startSynapse();
    state = await pairedStateDirs();
    path = await createRadioPath();
    gateway = await startGateway({ device: path.gatewayDevice, homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 60_000, logger,
      security: buildSecurity('gateway', state.gatewayDir, 'encrypt', logger)!, ...stateStores(state.gatewayDir, 'gateway', logger) });
    host = await startH();
    await hs.registerUser('alice', 'alice-pw');
    await hs.registerUser('bob', 'bob-pw');
    const c = await hs.registerUser('carol', 'carol-pw');
    carol = { userId: c.userId, token: c.accessToken };
    const login = async (user: string): Promise<Account> => {
      const r = await fetch(`${hostUrl()}/_matrix/client/v3/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password: `${user}-pw` }) });
      expect(r.status).toBe(200);
      const j = await r.json() as any;
      return { userId: j.user_id, token: j.access_token };
    };
    alice = await login('alice');
    bob = await login('bob');
  }, 180_000);

  afterAll(async () => {
    for (const c of clients) c.stopClient();
    await aliceLoop?.stop();
    await bobLoop?.stop();
    await host?.close();
    await gateway?.close();
    await path?.close();
    await hs?.stop();
    state?.cleanup();
  });

  it('each account gets its own store, filters and registration; both see every message of a shared room exactly once, in order', async () => {
    // Filters are per account: both get the kit's first filter id, each with its own content.
    for (const [who, limit] of [[alice, 30], [bob, 40]] as const) {
      const f = await viaHost(who, 'POST', `/_matrix/client/v3/user/${encodeURIComponent(who.userId)}/filter`, { room: { timeline: { limit } } });
      expect(f.status).toBe(200);
      filters[who.userId] = f.json.filter_id;
    }
    expect(filters[alice.userId]).toBe(filters[bob.userId]);
    expect((await viaHost(alice, 'GET', `/_matrix/client/v3/user/${encodeURIComponent(alice.userId)}/filter/${filters[alice.userId]}`)).json.room.timeline.limit).toBe(30);
    expect((await viaHost(bob, 'GET', `/_matrix/client/v3/user/${encodeURIComponent(bob.userId)}/filter/${filters[bob.userId]}`)).json.room.timeline.limit).toBe(40);
    expect((await viaHost(bob, 'GET', `/_matrix/client/v3/user/${encodeURIComponent(alice.userId)}/filter/${filters[alice.userId]}`)).status).toBe(403);

    aliceLoop = new SyncLoop(hostUrl, alice.token, () => filters[alice.userId]);
    bobLoop = new SyncLoop(hostUrl, bob.token, () => filters[bob.userId]);
    aliceLoop.start();
    bobLoop.start();
    // matrix-js-sdk clients of both, through the kit, beside the plain loops.
    for (const who of [alice, bob]) {
      const c = createClient({ baseUrl: hostUrl(), accessToken: who.token, userId: who.userId });
      clients.push(c);
      const ready = new Promise<void>((resolve) => c.on(ClientEvent.Sync, (s) => { if (s === 'PREPARED' || s === 'SYNCING') resolve(); }));
      await c.startClient({ initialSyncLimit: 5 });
      await ready;
    }

    roomId = (await direct(carol, 'POST', '/_matrix/client/v3/createRoom', { preset: 'private_chat', invite: [alice.userId, bob.userId] })).room_id;
    await until('both invites through the kit', () => clients.every((c) => c.getRoom(roomId)?.getMyMembership() === 'invite'));
    await clients[0]!.joinRoom(roomId);
    await clients[1]!.joinRoom(roomId);
    await until('both joins seen by both', () => clients.every((c) => c.getRoom(roomId)?.getJoinedMemberCount() === 3));

    // Interleaved: carol directly, alice and bob through the kit.
    for (let i = 0; i < 5; i++) {
      await send(carol, roomId, `carol ${i}`, 'direct');
      sent['alice']!.push(await send(alice, roomId, `alice ${i}`, 'host'));
      await send(carol, roomId, `carol ${i}b`, 'direct');
      sent['bob']!.push(await send(bob, roomId, `bob ${i}`, 'host'));
    }
    const order = await serverOrder();
    expect(order).toHaveLength(20);
    await until('all 20 messages at both', () => aliceLoop.messages(roomId).length >= 20 && bobLoop.messages(roomId).length >= 20);
    await new Promise((r) => setTimeout(r, 2000)); // anything doubled would show by now
    checkExactlyOnce(aliceLoop, alice, order, sent['alice']!);
    checkExactlyOnce(bobLoop, bob, order, sent['bob']!);
    // A client starting afresh gets the room in the homeserver's order from each store.
    for (const who of [alice, bob]) {
      const full = await viaHost(who, 'GET', `/_matrix/client/v3/sync?timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 100 } } }))}`);
      const ids = (full.json.rooms.join[roomId].timeline.events as any[]).filter((e) => e.type === 'm.room.message').map((e) => e.event_id);
      expect(ids).toEqual(order);
    }
    // The library's view too: each message once.
    for (const c of clients) {
      await until('the sdk timeline', () => (c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === 'm.room.message' && e.getId()?.startsWith('$')).length >= 20);
      const ids = (c.getRoom(roomId)!.getLiveTimeline().getEvents()).filter((e) => e.getType() === 'm.room.message').map((e) => e.getId());
      expect(new Set(ids).size).toBe(ids.length);
    }

    // One store per account at the kit, one registration (and long-poll) per account at the gateway.
    const hst = host!.status()['pushSync'] as any;
    expect(hst.accounts).toBe(2);
    expect(hst.registeredAccounts).toBe(2);
    expect(JSON.stringify(hst)).not.toContain(alice.userId); // /_trickle/status names nobody
    const gst = gateway.status() as any;
    const gps = JSON.stringify(gst);
    expect(gps).toContain(alice.userId);
    expect(gps).toContain(bob.userId);
    const saved = hostState();
    expect(saved.version).toBe(2);
    expect(saved.accounts.map((a: any) => a.userId).sort()).toEqual([alice.userId, bob.userId].sort());
  }, 300_000);

  it('a room only alice is in never reaches bob: not in his /sync, /messages, filters or store', async () => {
    const created = await viaHost(alice, 'POST', '/_matrix/client/v3/createRoom', { preset: 'private_chat', name: 'alice only' });
    expect(created.status).toBe(200);
    secretRoom = created.json.room_id;
    await send(alice, secretRoom, SECRET, 'host');
    await send(carol, roomId, 'carol after the secret', 'direct'); // bob's store moves past it
    await until('the secret in alice\'s store', () => aliceLoop.text.includes(SECRET));
    await until('carol\'s next message at bob', () => bobLoop.text.includes('carol after the secret'));
    const aliceFull = await viaHost(alice, 'GET', '/_matrix/client/v3/sync?timeout=0');
    const aliceSince: string = aliceFull.json.next_batch;
    const aliceEpoch: string = hostState().accounts.find((a: any) => a.userId === alice.userId).store.epoch;
    // Tokens of alice's store: her room's prev_batch, its live end, a since position.
    const aliceTokens = [aliceFull.json.rooms.join[secretRoom].timeline.prev_batch as string, `trickle_b_${aliceEpoch}_end`, `trickle_s_${aliceEpoch}_1`];

    const leaks: string[] = [bobLoop.text];
    leaks.push((await viaHost(bob, 'GET', '/_matrix/client/v3/sync?timeout=0')).text);
    // alice's since token means nothing in bob's store (another epoch): an initial sync of bob's.
    leaks.push((await viaHost(bob, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(aliceSince)}`)).text);
    for (const from of aliceTokens) {
      const m = await viaHost(bob, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(secretRoom)}/messages?dir=b&limit=10&from=${encodeURIComponent(from)}`);
      // Not answered from bob's store (another epoch): carried, the homeserver's answer for bob,
      // who is not in the room (it names the room bob asked about, nothing more).
      expect(m.status).toBe(403);
      expect(m.json.errcode).toBe('M_FORBIDDEN');
      expect(m.text).not.toContain(SECRET);
    }
    const bobSection = hostState().accounts.find((a: any) => a.userId === bob.userId);
    leaks.push(JSON.stringify(bobSection));
    for (const text of leaks) {
      expect(text).not.toContain(secretRoom);
      expect(text).not.toContain(SECRET);
    }
    // And alice's own view has it.
    expect(aliceFull.text).toContain(SECRET);
  }, 120_000);

  it('a restart of the host keeps both stores: the same since tokens go on, nothing arrives twice', async () => {
    const epochs = hostState().accounts.map((a: any) => [a.userId, a.store.epoch]);
    const before = { alice: aliceLoop.answers, bob: bobLoop.answers };
    await host!.close();
    host = await startH();
    expect(hostState().accounts.map((a: any) => [a.userId, a.store.epoch])).toEqual(epochs);
    sent['alice']!.push(await send(alice, roomId, 'alice after restart', 'host'));
    await send(carol, roomId, 'carol after restart', 'direct');
    sent['bob']!.push(await send(bob, roomId, 'bob after restart', 'host'));
    const order = await serverOrder();
    await until('the new messages at both', () => aliceLoop.messages(roomId).length >= order.length && bobLoop.messages(roomId).length >= order.length);
    await new Promise((r) => setTimeout(r, 2000));
    expect(aliceLoop.answers).toBeGreaterThan(before.alice);
    checkExactlyOnce(aliceLoop, alice, order, sent['alice']!);
    checkExactlyOnce(bobLoop, bob, order, sent['bob']!);
    const hst = host!.status()['pushSync'] as any;
    expect(hst.accounts).toBe(2);
    expect(bobLoop.text).not.toContain(SECRET);
  }, 180_000);

  it('a new link session (the gateway restarted without its secure-link snapshot) keeps both stores: what was sent meanwhile arrives whole, nothing twice', async () => {
    const epochs = hostState().accounts.map((a: any) => [a.userId, a.store.epoch]);
    const resetsBefore = (host!.status() as any).radio.sessionResets as number;
    await gateway.close();
    rmSync(join(state.gatewayDir, FILES.session('responder')), { force: true });
    // While the kit is cut off, carol writes more than the 10 events a fresh initial sync would
    // bring (a gateway starting its reducers afresh would leave the first of them in a gap).
    const burst = 15;
    for (let i = 0; i < burst; i++) await send(carol, roomId, `carol while cut off ${i}`, 'direct');
    gateway = await startGateway({ device: path.gatewayDevice, homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 60_000, logger,
      security: buildSecurity('gateway', state.gatewayDir, 'encrypt', logger)!, ...stateStores(state.gatewayDir, 'gateway', logger) });
    // alice's next request finds no session at the gateway: the kit re-establishes one (IK) and
    // registers both accounts again.
    sent['alice']!.push(await send(alice, roomId, 'alice after the new session', 'host'));
    const order = await serverOrder();
    await until('every message at both', () => aliceLoop.messages(roomId).length >= order.length && bobLoop.messages(roomId).length >= order.length, 120_000);
    await new Promise((r) => setTimeout(r, 2000));
    checkExactlyOnce(aliceLoop, alice, order, sent['alice']!);
    checkExactlyOnce(bobLoop, bob, order, sent['bob']!);
    // The stores went on (no new epoch: no client re-synced), over a link session that is new;
    // alice's PUT, cut off by it, went again on the new session (same txn: sent once, above).
    expect(hostState().accounts.map((a: any) => [a.userId, a.store.epoch])).toEqual(epochs);
    expect((host!.status() as any).radio.sessionResets).toBeGreaterThan(resetsBefore);
    expect((host!.status() as any).requests.retriedAfterNewSession).toBeGreaterThanOrEqual(1);
    const hst = host!.status()['pushSync'] as any;
    expect(hst.storesRestarted).toBe(0);
    expect(hst.registeredAccounts).toBe(2);
    // The library's view: every message of the burst once, no gap.
    for (const c of clients) {
      const bodies = (): string[] => (c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
        .filter((e) => e.getType() === 'm.room.message' && e.getId()?.startsWith('$')).map((e) => e.getContent()['body'] as string);
      await until('the burst in the sdk timeline', () => bodies().includes(`carol while cut off ${burst - 1}`));
      const got = bodies().filter((b) => b.startsWith('carol while cut off'));
      expect(got).toEqual(Array.from({ length: burst }, (_, i) => `carol while cut off ${i}`));
    }
  }, 240_000);

  it('a state file from before issue 12 (one store, owned by alice) is migrated: alice keeps hers, bob starts a new one', async () => {
    await bobLoop.stop();
    for (const c of clients) c.stopClient(); // only the plain loops from here on
    await host!.close();
    const v2 = hostState();
    const a = v2.accounts.find((s: any) => s.userId === alice.userId);
    writeFileSync(join(state.hostDir, 'sync-host.json'), JSON.stringify({
      version: 1, store: a.store, filters: a.filters, nextFilter: a.nextFilter, owner: alice.userId,
      registeredWith: a.registeredWith, registration: a.registration, partial: a.partial,
    }), { mode: 0o600 });
    host = await startH();
    const migrated = hostState();
    expect(migrated.version).toBe(2);
    expect(migrated.accounts.map((s: any) => s.userId)).toEqual([alice.userId]);
    expect(migrated.accounts[0].store.epoch).toBe(a.store.epoch);

    // alice goes on with her since token; bob, whose store the old file did not have, starts over.
    const bobFresh = new SyncLoop(hostUrl, bob.token, () => undefined);
    bobFresh.start();
    try {
      sent['alice']!.push(await send(alice, roomId, 'alice after migration', 'host'));
      await send(carol, roomId, 'carol after migration', 'direct');
      const order = await serverOrder();
      await until('alice has the new messages', () => aliceLoop.messages(roomId).length >= order.length);
      await until('bob\'s new store has the room again', () => bobFresh.text.includes('carol after migration'), 120_000);
      await new Promise((r) => setTimeout(r, 2000));
      checkExactlyOnce(aliceLoop, alice, order, sent['alice']!);
      const bobIds = bobFresh.messages(roomId).map((m) => m.eventId);
      expect(new Set(bobIds).size).toBe(bobIds.length);
      expect(bobIds.at(-1)).toBe(order.at(-1));
      // A whole room, not the middle of an old stream: its state is there from its creation on.
      const full = await viaHost(bob, 'GET', '/_matrix/client/v3/sync?timeout=0');
      const room = full.json.rooms.join[roomId];
      const types = [...(room.state?.events ?? []), ...(room.timeline?.events ?? [])].map((e: any) => e.type);
      expect(types).toContain('m.room.create');
      expect(types).toContain('m.room.power_levels');
      expect(bobFresh.text).not.toContain(SECRET);
      expect(bobFresh.text).not.toContain(secretRoom);
      const hst = host!.status()['pushSync'] as any;
      expect(hst.accounts).toBe(2);
      // The gateway still had bob's old stream; his new store refused it, and a new one fed it.
      expect(hst.streamsRefused).toBeGreaterThanOrEqual(1);
      const bobSection = hostState().accounts.find((s: any) => s.userId === bob.userId);
      expect(JSON.stringify(bobSection)).not.toContain(SECRET);
    } finally {
      await bobFresh.stop();
    }
  }, 240_000);
});
