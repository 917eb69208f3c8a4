/**
 * gateway/sync-pusher.ts with several accounts on one kit (issue 12): one registration per
 * account, each polling the homeserver with its own token and pushing to its own observation
 * only; a newer registration of an account replaces the older and goes on with its reducer
 * (the same delta stream); a refused one parks or discards its stream; the bound-account mode
 * has one account per kit; the limit; a 401 ends a registration; version 1 state is read. The
 * radio endpoint, the Matrix session and the homeserver are stand-ins (the whole path with
 * Synapse: test/e2e/push-sync-accounts.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { SyncPusher, type SyncPusherState } from '../../../src/gateway/sync-pusher.ts';
import { deltaFromWire } from '../../../src/matrix/sync-wire.ts';
import { silentLogger } from '../../../src/log.ts';
import { toHex, utf8 } from '../../../src/util/bytes.ts';
import type { RadioStack } from '../../../src/net/radio-stack.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import type { HomeserverClient } from '../../../src/gateway/homeserver-client.ts';
import type { SyncDelta } from '../../../src/matrix/sync-types.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */

const USERS: Record<string, string> = { 'tok-a1': '@alice:hs', 'tok-a2': '@alice:hs', 'tok-b': '@bob:hs', 'tok-c': '@carol:hs', 'tok-bound': '@kit:hs' };

/** A homeserver stand-in: whoami by token, /sync answers queued per token (a long-poll waits for one). */
class FakeHomeserver {
  readonly polls: { token: string; since: string | null }[] = [];
  readonly queues = new Map<string, unknown[]>();
  private wakers: (() => void)[] = [];
  dead = new Set<string>();
  push(token: string, res: unknown): void {
    this.queues.set(token, [...(this.queues.get(token) ?? []), res]);
    const w = this.wakers; this.wakers = []; for (const f of w) f();
  }
  async perform(req: HttpRequestLike, signal?: AbortSignal): Promise<HttpResponseLike> {
    const token = req.accessToken ?? '';
    const json = (status: number, v: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) });
    if (this.dead.has(token)) return json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'gone' });
    if (req.path.endsWith('/account/whoami')) return USERS[token] ? json(200, { user_id: USERS[token] }) : json(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'no' });
    this.polls.push({ token, since: new URLSearchParams(req.query).get('since') });
    for (;;) {
      if (signal?.aborted) return json(499, {});
      const q = this.queues.get(token);
      if (q && q.length > 0) return json(200, q.shift());
      await new Promise<void>((r) => { this.wakers.push(r); signal?.addEventListener('abort', () => r(), { once: true }); });
    }
  }
}

let batch = 0;
const syncAnswer = (body: string): unknown => ({
  next_batch: `s${++batch}`,
  rooms: { join: { '!room:hs': { timeline: { events: [{ type: 'm.room.message', event_id: `$${batch}`, sender: '@carol:hs', origin_server_ts: 1_700_000_000_000 + batch, content: { msgtype: 'm.text', body } }] } } } },
});

/** The radio endpoint stand-in: registrations, notifications sent (by token), deliveries on demand. */
function fakeRadio() {
  const listeners = { delivered: [] as ((t: Uint8Array) => void)[], failed: [] as ((t: Uint8Array) => void)[], ended: [] as ((t: Uint8Array, r: string) => void)[] };
  const regs = new Set<string>();
  const sent: { token: string; code: number; body: string }[] = [];
  const endpoint = {
    onNotificationDelivered: (l: any) => { listeners.delivered.push(l); },
    onNotificationFailed: (l: any) => { listeners.failed.push(l); },
    onObservationEnded: (l: any) => { listeners.ended.push(l); },
    notify: (token: Uint8Array, res: any) => {
      if (!regs.has(toHex(token))) return false;
      sent.push({ token: toHex(token), code: res.code, body: utf8.decode(res.payload ?? new Uint8Array(0)) });
      return true;
    },
    notificationPayloadLimit: () => 100_000,
    removeObservation: (token: Uint8Array) => { const k = toHex(token); if (!regs.delete(k)) return false; for (const l of listeners.ended) l(token, 'removed'); return true; },
    importObservations: (rs: { token: string }[]) => { for (const r of rs) regs.add(r.token); },
    exportObservations: () => [...regs].map((token) => ({ token, sequence: 1 })),
    retryNotifications: () => undefined,
  };
  const radio = { resumed: true, onSessionReset: () => undefined, endpoint } as unknown as RadioStack;
  return {
    radio, sent, regs,
    /** The kit's ACK of the token's notification in flight (or of its first response). */
    deliver: (token: Uint8Array) => { for (const l of listeners.delivered) l(token); },
    /** The kit refused (RST) a notification: the registration ends. */
    reset: (token: Uint8Array) => { regs.delete(toHex(token)); for (const l of listeners.ended) l(token, 'reset'); },
  };
}

const session = {
  encodeResponse: (res: HttpResponseLike) => ({ code: res.status === 200 ? 69 : 128 + (res.status - 400), options: [], payload: res.body }),
  unconfirmAll: () => undefined, confirmDelivered: () => undefined, sessionAccessToken: undefined,
};

class MemoryStore { value: unknown; load(): unknown { return this.value; } save(v: unknown): void { this.value = JSON.parse(JSON.stringify(v)); } }

function setup(o: { bound?: boolean; max?: number; store?: MemoryStore } = {}) {
  const hs = new FakeHomeserver();
  const r = fakeRadio();
  const store = o.store ?? new MemoryStore();
  const pusher = new SyncPusher({
    radio: r.radio, homeserver: hs as unknown as HomeserverClient, session: () => session as any, logger: silentLogger(), store: store as any,
    ...(o.bound ? { boundAccessToken: () => 'tok-bound' } : {}),
    ...(o.max !== undefined ? { maxRegistrations: o.max } : {}),
  });
  /** Register `token` as the kit does: the endpoint accepts, the first (empty) response is ACKed. */
  const register = (n: number, accessToken?: string) => {
    const token = Uint8Array.of(n);
    const res = pusher.register(token, accessToken) as any;
    if (res.observe) { r.regs.add(toHex(token)); r.deliver(token); }
    return { token, res };
  };
  return { hs, pusher, store, register, ...r };
}

const deltasTo = (sent: { token: string; code: number; body: string }[], token: Uint8Array): SyncDelta[] =>
  sent.filter((s) => s.token === toHex(token) && s.code === 69 && s.body !== '{}').map((s) => deltaFromWire(JSON.parse(s.body)));
const bodies = (d: SyncDelta[]): string[] => d.flatMap((x) => Object.values(x.rooms?.join ?? {}).flatMap((r: any) => (r.timeline ?? []).map((e: any) => e.content.body)));
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
}

describe('SyncPusher: one registration per account on a kit', () => {
  it('each account polls with its own token and gets its own deltas, on its own observation only', async () => {
    const t = setup();
    const a = t.register(1, 'tok-a1');
    const b = t.register(2, 'tok-b');
    t.hs.push('tok-a1', syncAnswer('for alice'));
    t.hs.push('tok-b', syncAnswer('for bob'));
    await until(() => deltasTo(t.sent, a.token).length > 0 && deltasTo(t.sent, b.token).length > 0);
    expect(bodies(deltasTo(t.sent, a.token))).toEqual(['for alice']);
    expect(bodies(deltasTo(t.sent, b.token))).toEqual(['for bob']);
    expect(new Set(t.hs.polls.map((p) => p.token))).toEqual(new Set(['tok-a1', 'tok-b']));
    const st = t.pusher.status() as any;
    expect(st.registrations).toBe(2);
    expect(st.accounts.map((x: any) => x.user).sort()).toEqual(['@alice:hs', '@bob:hs']);
    t.pusher.close();
  });

  it('a newer registration of the same account replaces the older and goes on with its stream', async () => {
    const t = setup();
    const a1 = t.register(1, 'tok-a1');
    const b = t.register(2, 'tok-b');
    t.hs.push('tok-a1', syncAnswer('one'));
    await until(() => deltasTo(t.sent, a1.token).length === 1);
    const first = deltasTo(t.sent, a1.token)[0]!;
    expect(first.base).toBe(0);
    t.deliver(a1.token); // the kit has delta 1
    const a2 = t.register(3, 'tok-a2'); // another token of alice (her token was refreshed)
    await until(() => !t.regs.has(toHex(a1.token)));
    expect(t.regs.has(toHex(b.token))).toBe(true); // bob undisturbed
    t.hs.push('tok-a2', syncAnswer('two'));
    await until(() => deltasTo(t.sent, a2.token).length === 1);
    const next = deltasTo(t.sent, a2.token)[0]!;
    expect(next.stream).toBe(first.stream);
    expect(next.base).toBe(first.seq);
    expect(next.seq).toBe(first.seq + 1);
    expect(bodies([next])).toEqual(['two']);
    expect(t.hs.polls.filter((p) => p.token === 'tok-a2').every((p) => p.since !== null)).toBe(true); // no initial sync again
    expect((t.pusher.status() as any).registrations).toBe(2);
    t.pusher.close();
  });

  it('refused after its first delta arrived: the stream is parked for the account\'s next registration; refused before: a new stream', async () => {
    const t = setup();
    const a1 = t.register(1, 'tok-a1');
    t.hs.push('tok-a1', syncAnswer('one'));
    await until(() => deltasTo(t.sent, a1.token).length === 1);
    const first = deltasTo(t.sent, a1.token)[0]!;
    t.deliver(a1.token);
    t.reset(a1.token); // e.g. a part gap at the kit
    const a2 = t.register(2, 'tok-a1');
    t.hs.push('tok-a1', syncAnswer('two'));
    await until(() => deltasTo(t.sent, a2.token).length === 1);
    const again = deltasTo(t.sent, a2.token)[0]!;
    expect(again.stream).toBe(first.stream);
    expect(again.base).toBe(first.seq);
    // Refused at once, before the kit took any delta of this registration (a new store): a new stream from scratch.
    t.reset(a2.token);
    const a3 = t.register(3, 'tok-a1');
    t.hs.push('tok-a1', syncAnswer('three'));
    await until(() => deltasTo(t.sent, a3.token).length === 1);
    const fresh = deltasTo(t.sent, a3.token)[0]!;
    expect(fresh.stream).not.toBe(first.stream);
    expect(fresh.base).toBe(0);
    t.pusher.close();
  });

  it('authenticate-only mode: one account per kit, every poll with the bound token, a new registration replaces the old', async () => {
    const t = setup({ bound: true });
    const r1 = t.register(1);
    const r2 = t.register(2);
    expect(t.regs.has(toHex(r1.token))).toBe(false);
    expect(t.regs.has(toHex(r2.token))).toBe(true);
    t.hs.push('tok-bound', syncAnswer('bound'));
    await until(() => deltasTo(t.sent, r2.token).length === 1);
    expect(t.hs.polls.every((p) => p.token === 'tok-bound')).toBe(true);
    expect((t.store.value as SyncPusherState).registrations.every((r) => r.accessToken === null)).toBe(true);
    t.pusher.close();
  });

  it('at most maxRegistrations accounts: one more is refused 4.29 M_LIMIT_EXCEEDED; a known account\'s new registration still replaces', async () => {
    const t = setup({ max: 2 });
    t.register(1, 'tok-a1');
    t.register(2, 'tok-b');
    const c = t.register(3, 'tok-c');
    expect(c.res.observe).toBeUndefined();
    expect(c.res.code).toBe(128 + 29);
    const body = JSON.parse(utf8.decode(c.res.payload));
    expect(body.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(body.error).toContain('at most 2 accounts');
    const again = t.register(4, 'tok-a1');
    expect(again.res.observe).toBe(true);
    expect((t.pusher.status() as any).registrations).toBe(2);
    t.pusher.close();
  });

  it('a token the homeserver no longer knows ends its registration with a final 401 notification', async () => {
    const t = setup();
    const b = t.register(2, 'tok-b');
    t.hs.dead.add('tok-b');
    await until(() => t.sent.some((s) => s.token === toHex(b.token) && s.code === 129));
    expect(JSON.parse(t.sent.find((s) => s.code === 129)!.body).errcode).toBe('M_UNKNOWN_TOKEN');
    expect((t.pusher.status() as any).registrations).toBe(0);
    t.pusher.close();
  });

  it('reads version 1 state (one registration, before issue 12): its account is found at its first poll, and a restart keeps every registration', async () => {
    const store = new MemoryStore();
    store.value = { version: 1, reducer: null, registration: { token: '07', sequence: 3 }, accessToken: 'tok-b' };
    const t = setup({ store });
    t.hs.push('tok-b', syncAnswer('after the upgrade'));
    await until(() => deltasTo(t.sent, Uint8Array.of(7)).length === 1);
    await until(() => (store.value as SyncPusherState).version === 2 && (store.value as SyncPusherState).registrations[0]?.account === '@bob:hs');
    t.register(8, 'tok-a1');
    await until(() => (store.value as SyncPusherState).registrations.length === 2);
    t.pusher.close();
    const t2 = setup({ store });
    expect((t2.pusher.status() as any).accounts.map((x: any) => x.user).sort()).toEqual(['@alice:hs', '@bob:hs']);
    t2.pusher.close();
  });
});
