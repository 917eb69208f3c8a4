/**
 * host/push-sync.ts with several accounts (issue 12), without a radio: one store per account,
 * nothing of one reaches another, the account bound, dropping at logout, and the migration of
 * the single-owner state file (version 1). The radio is a stand-in whose observations never
 * answer; the end-to-end behaviour with a gateway and Synapse is test/e2e/push-sync-accounts.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { HostPushSync, type PushSyncState, type PushSyncStateV1 } from '../../../src/host/push-sync.ts';
import { hashToken } from '../../../src/host/token-registry.ts';
import { HostSession } from '../../../src/matrix/session.ts';
import { SyncStore } from '../../../src/matrix/sync-store.ts';
import { silentLogger } from '../../../src/log.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import type { RadioStack } from '../../../src/net/radio-stack.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */

const ALICE = '@alice:hs.example';
const BOB = '@bob:hs.example';
const CAROL = '@carol:hs.example';
const ROOM = '!alice-only:hs.example';
const SECRET = 'the cache is under the third pine';

class MemoryStore { value: unknown; load(): unknown { return this.value; } save(v: unknown): void { this.value = JSON.parse(JSON.stringify(v)); } }

function fakeRadio(opts: { resumed?: boolean } = {}): { radio: RadioStack; observed: string[]; resumed: string[] } {
  const observed: string[] = [];
  const resumed: string[] = [];
  let n = 0;
  const radio = {
    resumed: opts.resumed ?? false,
    onSessionReset: () => undefined,
    endpoint: {
      observe: (enc: any) => {
        observed.push(JSON.stringify(enc.sent.request.accessToken ?? null));
        return { token: Uint8Array.of(++n), first: new Promise(() => undefined), cancel: async () => undefined };
      },
      resumeObservation: (token: Uint8Array) => { resumed.push(Buffer.from(token).toString('hex')); return { token, cancel: async () => undefined }; },
    },
  } as unknown as RadioStack;
  return { radio, observed, resumed };
}

function make(o: { store?: MemoryStore; maxAccounts?: number; hasTokens?: (u: string) => boolean; resumed?: boolean } = {}) {
  const { radio, observed, resumed } = fakeRadio({ resumed: o.resumed ?? false });
  const carried: HttpRequestLike[] = [];
  const session = new HostSession();
  const push = new HostPushSync({
    radio, session: () => session, persistSession: () => undefined, logger: silentLogger(), requestTimeoutMs: 1000,
    carry: async (req) => { carried.push(req); return { status: 403, contentType: 'application/json', body: utf8.encode('{"errcode":"M_FORBIDDEN","error":"not in room"}') }; },
    ...(o.store ? { store: o.store as any } : {}),
    ...(o.maxAccounts !== undefined ? { maxAccounts: o.maxAccounts } : {}),
    ...(o.hasTokens ? { hasTokens: o.hasTokens } : {}),
  });
  return { push, observed, resumed, carried };
}

const tokenOf = (u: string): string => `syt_${u.slice(1, 4)}`;
const req = (method: string, path: string, user: string, query = '', body?: unknown): HttpRequestLike => ({
  method, path, query, accessToken: tokenOf(user), body: body === undefined ? new Uint8Array(0) : utf8.encode(JSON.stringify(body)),
  ...(body === undefined ? {} : { contentType: 'application/json' }),
});
async function ask(push: HostPushSync, user: string, r: HttpRequestLike): Promise<HttpResponseLike & { json: any; text: string }> {
  expect(push.handles(r, user)).toBe(true);
  const res = await push.answer(r, user);
  const text = utf8.decode(res.body);
  return { ...res, text, json: JSON.parse(text) };
}
const sync = (push: HostPushSync, user: string, query = 'timeout=0') => ask(push, user, req('GET', '/_matrix/client/v3/sync', user, query));

/** A store as issue 11 left it for alice: one room only she is in, with a message. */
function aliceStore(): SyncStore {
  const s = new SyncStore({ epoch: 'ab12cd34' });
  s.applyDelta({
    seq: 3,
    rooms: { join: { [ROOM]: { timeline: [{ type: 'm.room.message', event_id: '$secret', sender: ALICE, origin_server_ts: 1_700_000_000_000, content: { msgtype: 'm.text', body: SECRET } }] } as any } },
  });
  return s;
}

function v1(extra: Partial<PushSyncStateV1> = {}): PushSyncStateV1 {
  return { version: 1, store: aliceStore().exportState(), filters: [['t1', { room: { timeline: { limit: 7 } } }]], nextFilter: 2, owner: ALICE, registeredWith: hashToken(tokenOf(ALICE)), registration: '0a0b', partial: null, ...extra };
}

describe('push sync with several accounts on one kit (host side)', () => {
  it('migrates a version 1 state file to its owner\'s section: the same store, filters and registration', async () => {
    const store = new MemoryStore();
    store.value = v1();
    const { push, resumed } = make({ store, resumed: true });
    expect(push.accountIds).toEqual([ALICE]);
    expect(resumed).toEqual(['0a0b']); // the owner's observation goes on (same link session)
    const saved = store.value as PushSyncState;
    expect(saved.version).toBe(2); // written in the new form at once
    expect(saved.accounts).toHaveLength(1);
    expect(saved.accounts[0]!.userId).toBe(ALICE);
    expect(saved.accounts[0]!.store.epoch).toBe('ab12cd34');
    expect(saved.accounts[0]!.registration).toBe('0a0b');
    const a = await sync(push, ALICE);
    expect(a.text).toContain(SECRET);
    expect(a.json.next_batch).toContain('ab12cd34');
    expect((await ask(push, ALICE, req('GET', `/_matrix/client/v3/user/${encodeURIComponent(ALICE)}/filter/t1`, ALICE))).json).toEqual({ room: { timeline: { limit: 7 } } });
  });

  it('a version 1 file from before owners: the one user its tokens name owns it; two users: nobody can tell, it starts empty', () => {
    const one = new MemoryStore();
    one.value = { ...v1({ registration: null }), owner: undefined, users: [[hashToken('x'), ALICE], [hashToken('y'), ALICE]] };
    expect(make({ store: one }).push.accountIds).toEqual([ALICE]);
    const two = new MemoryStore();
    two.value = { ...v1({ registration: null }), owner: undefined, users: [[hashToken('x'), ALICE], [hashToken('y'), BOB]] };
    expect(make({ store: two }).push.accountIds).toEqual([]);
    const none = new MemoryStore();
    none.value = v1({ owner: null, registration: null });
    expect(make({ store: none }).push.accountIds).toEqual([]);
  });

  it('another account gets a store of its own, registered with its own token; nothing of the first reaches it', async () => {
    const store = new MemoryStore();
    store.value = v1({ registration: null });
    const { push, observed, carried } = make({ store });
    const b = await sync(push, BOB);
    expect(b.status).toBe(200);
    expect(b.text).not.toContain(SECRET);
    expect(b.text).not.toContain(ROOM);
    expect(observed).toEqual([JSON.stringify(tokenOf(BOB))]);
    // alice's tokens mean nothing in bob's store (another epoch): an initial sync of his.
    const a = await sync(push, ALICE);
    const withHers = await sync(push, BOB, `timeout=0&since=${encodeURIComponent(a.json.next_batch)}`);
    expect(withHers.text).not.toContain(SECRET);
    // /messages with alice's store tokens: not from bob's store; carried without them (the homeserver answers for bob).
    const prev = a.json.rooms.join[ROOM].timeline.prev_batch as string;
    for (const from of [prev, 'trickle_b_ab12cd34_end', 'trickle_c_ab12cd34_$secret']) {
      const m = await ask(push, BOB, req('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/messages`, BOB, `dir=b&from=${encodeURIComponent(from)}`));
      expect(m.text).not.toContain(SECRET);
      expect(carried.at(-1)!.query).not.toContain('ab12cd34');
      expect(carried.at(-1)!.path).not.toContain('context');
    }
    const saved = store.value as PushSyncState;
    expect(saved.accounts.map((s) => s.userId).sort()).toEqual([ALICE, BOB]);
    expect(JSON.stringify(saved.accounts.find((s) => s.userId === BOB))).not.toContain(SECRET);
    expect(push.status()['accounts']).toBe(2);
    expect(JSON.stringify(push.status())).not.toContain(ALICE); // the status page names nobody
  });

  it('filters are per account: the same ids, each its own content; another user\'s filters are refused', async () => {
    const { push } = make();
    const fa = await ask(push, ALICE, req('POST', `/_matrix/client/v3/user/${encodeURIComponent(ALICE)}/filter`, ALICE, '', { room: { timeline: { limit: 3 } } }));
    const fb = await ask(push, BOB, req('POST', `/_matrix/client/v3/user/${encodeURIComponent(BOB)}/filter`, BOB, '', { room: { timeline: { limit: 9 } } }));
    expect(fa.json.filter_id).toBe('t1');
    expect(fb.json.filter_id).toBe('t1');
    expect((await ask(push, BOB, req('GET', `/_matrix/client/v3/user/${encodeURIComponent(BOB)}/filter/t1`, BOB))).json.room.timeline.limit).toBe(9);
    expect((await ask(push, BOB, req('GET', `/_matrix/client/v3/user/${encodeURIComponent(ALICE)}/filter/t1`, BOB))).status).toBe(403);
  });

  it('a send is echoed into its sender\'s store only', async () => {
    const { push } = make();
    await sync(push, ALICE);
    await sync(push, BOB);
    const send = req('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.room.message/txn1`, ALICE, '', { msgtype: 'm.text', body: SECRET });
    push.afterCarry(send, { status: 200, contentType: 'application/json', body: utf8.encode('{"event_id":"$e1"}') }, ALICE);
    expect((await sync(push, ALICE)).text).toContain(SECRET);
    expect((await sync(push, BOB)).text).not.toContain(SECRET);
  });

  it('at most maxAccounts stores: one more is refused with M_LIMIT_EXCEEDED naming the limit, unless an account without tokens gives way', async () => {
    const live = new Set([ALICE, BOB]);
    const { push } = make({ maxAccounts: 2, hasTokens: (u) => live.has(u) });
    const first = await sync(push, ALICE);
    const held = push.answer(req('GET', '/_matrix/client/v3/sync', ALICE, `timeout=30000&since=${encodeURIComponent(first.json.next_batch)}`), ALICE);
    await sync(push, BOB);
    const refused = await sync(push, CAROL);
    expect(refused.status).toBe(429);
    expect(refused.json.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(refused.json.error).toContain('at most 2 accounts');
    expect(refused.json.retry_after_ms).toBeGreaterThan(0);
    live.delete(ALICE); // alice's tokens were all refused or expired
    live.add(CAROL);
    expect((await sync(push, CAROL)).status).toBe(200);
    expect(push.accountIds.sort()).toEqual([BOB, CAROL]);
    // alice's held /sync is not told she is logged out: she would get a store again if there were a place.
    const h = await held;
    expect(h.status).toBe(429);
    expect(JSON.parse(utf8.decode(h.body)).errcode).toBe('M_LIMIT_EXCEEDED');
  });

  it('an account whose every token is logged out is dropped with its data; its held /sync ends with M_UNKNOWN_TOKEN', async () => {
    const store = new MemoryStore();
    store.value = v1({ registration: null });
    const live = new Set([ALICE, BOB]);
    const { push } = make({ store, hasTokens: (u) => live.has(u) });
    const first = await sync(push, ALICE);
    const held = push.answer(req('GET', '/_matrix/client/v3/sync', ALICE, `timeout=30000&since=${encodeURIComponent(first.json.next_batch)}`), ALICE);
    push.tokenForgotten(hashToken('syt_other'), ALICE, 'refused'); // not logged out: kept
    expect(push.accountIds).toEqual([ALICE]);
    live.delete(ALICE);
    push.tokenForgotten(hashToken(tokenOf(ALICE)), ALICE, 'logout');
    expect(push.accountIds).toEqual([]);
    const res = await held;
    expect(res.status).toBe(401);
    expect(JSON.stringify(store.value)).not.toContain(SECRET);
  });
});
