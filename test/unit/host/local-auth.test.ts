import { describe, expect, it } from 'vitest';
import { LocalAuth } from '../../../src/host/local-auth.ts';
import { TokenRegistry } from '../../../src/host/token-registry.ts';
import { silentLogger } from '../../../src/log.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const res = (status: number, body: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: enc.encode(JSON.stringify(body)) });
const get = (path: string, accessToken?: string): HttpRequestLike => ({ method: 'GET', path, query: '', body: new Uint8Array(0), ...(accessToken ? { accessToken } : {}) });
const SYNC = '/_matrix/client/v3/sync';

/** A homeserver behind a fake radio: whoami answers for the tokens it knows; calls are counted and can be held. */
function fakeRadio(valid: Record<string, string>) {
  const calls: HttpRequestLike[] = [];
  let hold: Promise<void> | undefined;
  return {
    calls,
    holdUntil(p: Promise<void>) { hold = p; },
    carry: async (req: HttpRequestLike): Promise<HttpResponseLike> => {
      calls.push(req);
      if (hold) await hold;
      const user = req.accessToken ? valid[req.accessToken] : undefined;
      return user ? res(200, { user_id: user, device_id: 'DEV' }) : res(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.', soft_logout: false });
    },
  };
}

function setup(valid: Record<string, string>, opts: { burst?: number; refillMs?: number; maxQueued?: number; revalidateAfterMs?: number } = {}) {
  const clock = new FakeClock();
  const registry = new TokenRegistry({ clock });
  const radio = fakeRadio(valid);
  const auth = new LocalAuth({ registry, carry: radio.carry, logger: silentLogger(), clock, ...opts });
  return { clock, registry, radio, auth };
}

const errcode = (r: HttpResponseLike) => (JSON.parse(dec.decode(r.body)) as { errcode?: string }).errcode;

describe('LocalAuth', () => {
  it('no token: 401 M_MISSING_TOKEN where required, nothing carried; open and optional endpoints pass', async () => {
    const { auth, radio } = setup({});
    const r = await auth.check(get(SYNC));
    expect(r.kind).toBe('deny');
    expect(r.kind === 'deny' && r.response.status).toBe(401);
    expect(r.kind === 'deny' && errcode(r.response)).toBe('M_MISSING_TOKEN');
    expect((await auth.check(get('/_matrix/client/versions'))).kind).toBe('allow');
    expect((await auth.check(get('/_matrix/client/v3/publicRooms'))).kind).toBe('allow');
    expect((await auth.check(get('/_matrix/client/v3/login', 'stale'))).kind).toBe('allow');
    expect(radio.calls).toHaveLength(0);
  });

  it('a malformed credential is M_MISSING_TOKEN', async () => {
    const { auth } = setup({});
    const r = await auth.check(get(SYNC), 'the Authorization header is not "Bearer <access token>"');
    expect(r.kind === 'deny' && errcode(r.response)).toBe('M_MISSING_TOKEN');
  });

  it('an unknown token is checked once with whoami; a good one is then known, a bad one refused from the cache', async () => {
    const { auth, radio } = setup({ good: '@alice:hs' });
    expect(await auth.check(get(SYNC, 'good'))).toEqual({ kind: 'allow', userId: '@alice:hs' });
    expect(await auth.check(get(SYNC, 'good'))).toEqual({ kind: 'allow', userId: '@alice:hs' });
    expect(radio.calls.map((c) => c.path)).toEqual(['/_matrix/client/v3/account/whoami']);
    const bad = await auth.check(get(SYNC, 'bogus'));
    expect(bad.kind === 'deny' && bad.response.status).toBe(401);
    expect(bad.kind === 'deny' && JSON.parse(dec.decode(bad.response.body))).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false });
    const again = await auth.check(get(SYNC, 'bogus'));
    expect(again.kind === 'deny' && errcode(again.response)).toBe('M_UNKNOWN_TOKEN');
    expect(radio.calls).toHaveLength(2);
  });

  it('coalesces concurrent checks of one token into one whoami', async () => {
    const { auth, radio } = setup({ good: '@alice:hs' });
    let release!: () => void;
    radio.holdUntil(new Promise<void>((r) => { release = r; }));
    const all = Promise.all([1, 2, 3, 4, 5].map(() => auth.check(get(SYNC, 'good'))));
    await Promise.resolve();
    release();
    expect((await all).every((r) => r.kind === 'allow' && r.userId === '@alice:hs')).toBe(true);
    expect(radio.calls).toHaveLength(1);
  });

  it('rate-limits checks of new tokens: a burst, then one per refill, 429 with retry_after_ms between', async () => {
    const { auth, radio, clock } = setup({}, { burst: 3, refillMs: 20_000 });
    for (const t of ['x1', 'x2', 'x3']) expect(errcode(((await auth.check(get(SYNC, t))) as { response: HttpResponseLike }).response)).toBe('M_UNKNOWN_TOKEN');
    const limited = await auth.check(get(SYNC, 'x4'));
    expect(limited.kind === 'deny' && limited.response.status).toBe(429);
    const body = JSON.parse(dec.decode((limited as { response: HttpResponseLike }).response.body)) as { errcode: string; retry_after_ms: number };
    expect(body.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(body.retry_after_ms).toBeGreaterThan(19_000);
    expect(body.retry_after_ms).toBeLessThanOrEqual(20_000);
    expect(radio.calls).toHaveLength(3);
    clock.advance(20_000);
    expect(errcode(((await auth.check(get(SYNC, 'x4'))) as { response: HttpResponseLike }).response)).toBe('M_UNKNOWN_TOKEN');
    expect(radio.calls).toHaveLength(4);
    // A refused token costs nothing more, limit or not.
    for (let i = 0; i < 10; i++) await auth.check(get(SYNC, 'x1'));
    expect(radio.calls).toHaveLength(4);
  });

  it('one check in flight at a time; a bounded queue behind it', async () => {
    const { auth, radio } = setup({ a: '@a:hs', b: '@b:hs' }, { burst: 10, maxQueued: 1 });
    let release!: () => void;
    radio.holdUntil(new Promise<void>((r) => { release = r; }));
    const pa = auth.check(get(SYNC, 'a'));
    const pb = auth.check(get(SYNC, 'b'));
    const pc = await auth.check(get(SYNC, 'c'));
    expect(pc.kind === 'deny' && pc.response.status).toBe(429); // the queue (1) is full
    await new Promise((r) => setTimeout(r, 0));
    expect(radio.calls).toHaveLength(1); // b waits for a
    release();
    expect(await pa).toEqual({ kind: 'allow', userId: '@a:hs' });
    expect(await pb).toEqual({ kind: 'allow', userId: '@b:hs' });
    expect(radio.calls).toHaveLength(2);
  });

  it('passes a failure to reach the homeserver through, uncached (fail closed)', async () => {
    const clock = new FakeClock();
    const registry = new TokenRegistry({ clock });
    let up = false;
    const auth = new LocalAuth({ registry, clock, logger: silentLogger(), carry: async (r) => up ? res(200, { user_id: '@a:hs' }) : res(504, { errcode: 'M_UNKNOWN', error: `no answer for ${r.path}` }) });
    const r = await auth.check(get(SYNC, 'tok'));
    expect(r.kind === 'deny' && r.response.status).toBe(504);
    up = true;
    expect(await auth.check(get(SYNC, 'tok'))).toEqual({ kind: 'allow', userId: '@a:hs' });
  });

  it('a whoami with an unknown token is its own check: answered, not carried twice', async () => {
    const { auth, radio } = setup({ good: '@alice:hs' });
    const r = await auth.check(get('/_matrix/client/v3/account/whoami', 'good'));
    expect(r.kind).toBe('answered');
    expect(radio.calls).toHaveLength(1);
  });

  it('revalidates a token confirmed long ago in the background, and stops it once the homeserver refuses it', async () => {
    const valid: Record<string, string> = { t: '@a:hs' };
    const { auth, radio, clock, registry } = setup(valid, { revalidateAfterMs: 1000 });
    await auth.check(get(SYNC, 't'));
    clock.advance(2000);
    delete valid['t']; // revoked from another device
    expect((await auth.check(get(SYNC, 't'))).kind).toBe('allow'); // still served while it is checked
    await new Promise((r) => setTimeout(r, 0));
    expect(radio.calls).toHaveLength(2);
    expect(registry.lookup('t')).toBeUndefined();
    const r = await auth.check(get(SYNC, 't'));
    expect(r.kind === 'deny' && errcode(r.response)).toBe('M_UNKNOWN_TOKEN');
  });
});
