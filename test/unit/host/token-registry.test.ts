import { describe, expect, it } from 'vitest';
import { TokenRegistry, hashToken, type TokenRegistryState, type ForgetEvent } from '../../../src/host/token-registry.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';

const enc = new TextEncoder();
const req = (method: string, path: string, accessToken?: string, body?: unknown): HttpRequestLike => ({
  method, path, query: '', body: body === undefined ? new Uint8Array(0) : enc.encode(JSON.stringify(body)), ...(accessToken ? { accessToken } : {}),
});
const res = (status: number, body: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: enc.encode(JSON.stringify(body)) });

function memStore() {
  let saved: unknown;
  return { load: () => saved, save: (v: unknown) => { saved = JSON.parse(JSON.stringify(v)); }, get: () => saved as TokenRegistryState | undefined };
}

describe('TokenRegistry', () => {
  it('learns from login, register and whoami; persists only hashes', () => {
    const store = memStore();
    const r = new TokenRegistry({ store });
    r.observe(req('POST', '/_matrix/client/v3/login', undefined, { type: 'm.login.password' }), res(200, { access_token: 'syt_alice_secret', user_id: '@alice:hs', device_id: 'D1' }));
    r.observe(req('POST', '/_matrix/client/v3/register', undefined, {}), res(200, { access_token: 'syt_bob_secret', user_id: '@bob:hs', device_id: 'D2' }));
    r.observe(req('GET', '/_matrix/client/v3/account/whoami', 'syt_carol_secret'), res(200, { user_id: '@carol:hs', device_id: 'D3' }));
    expect(r.lookup('syt_alice_secret')).toMatchObject({ userId: '@alice:hs', deviceId: 'D1' });
    expect(r.lookup('syt_bob_secret')?.userId).toBe('@bob:hs');
    expect(r.lookup('syt_carol_secret')?.userId).toBe('@carol:hs');
    const text = JSON.stringify(store.get());
    expect(text).not.toContain('secret');
    expect(text).toContain(hashToken('syt_alice_secret'));
    // A restarted kit still knows them.
    expect(new TokenRegistry({ store }).lookup('syt_bob_secret')?.userId).toBe('@bob:hs');
  });

  it('does not learn from failed answers or from a whoami without a user', () => {
    const r = new TokenRegistry();
    r.observe(req('POST', '/_matrix/client/v3/login', undefined, {}), res(403, { errcode: 'M_FORBIDDEN' }));
    r.observe(req('GET', '/_matrix/client/v3/account/whoami', 'x'), res(200, {}));
    expect(r.status()['knownTokens']).toBe(0);
  });

  it('forgets on logout, logout/all, device deletion, password change, and a 401 M_UNKNOWN_TOKEN', () => {
    const r = new TokenRegistry();
    const forgotten: ForgetEvent[] = [];
    r.onForget((e) => forgotten.push(e));
    const login = (t: string, u: string, d: string) => r.observe(req('POST', '/_matrix/client/v3/login', undefined, {}), res(200, { access_token: t, user_id: u, device_id: d }));
    login('a1', '@a:hs', 'A1'); login('a2', '@a:hs', 'A2'); login('a3', '@a:hs', 'A3'); login('b1', '@b:hs', 'B1');
    r.observe(req('POST', '/_matrix/client/v3/logout', 'a1', {}), res(200, {}));
    expect(r.lookup('a1')).toBeUndefined();
    expect(r.isRefused('a1')).toBe(true);
    r.observe(req('DELETE', '/_matrix/client/v3/devices/A2', 'a3', {}), res(200, {}));
    expect(r.lookup('a2')).toBeUndefined();
    expect(r.lookup('a3')).toBeDefined();
    r.observe(req('POST', '/_matrix/client/v3/account/password', 'a3', { new_password: 'x' }), res(200, {}));
    expect(r.lookup('a3')).toBeDefined(); // the token that changed it stays
    r.observe(req('GET', '/_matrix/client/v3/joined_rooms', 'b1'), res(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'gone' }));
    expect(r.lookup('b1')).toBeUndefined();
    expect(r.isRefused('b1')).toBe(true);
    r.observe(req('POST', '/_matrix/client/v3/logout/all', 'a3', {}), res(200, {}));
    expect(r.hasUser('@a:hs')).toBe(false);
    expect(forgotten.map((e) => e.hash)).toEqual([hashToken('a1'), hashToken('a2'), hashToken('b1'), hashToken('a3')]);
    // A 401 that is a UIA challenge is not a refusal.
    login('c1', '@c:hs', 'C1');
    r.observe(req('POST', '/_matrix/client/v3/delete_devices', 'c1', { devices: ['X'] }), res(401, { flows: [], session: 's' }));
    expect(r.lookup('c1')).toBeDefined();
  });

  it('a refresh answer belongs to the user of the refresh token and replaces the device\'s old token', () => {
    const r = new TokenRegistry();
    r.observe(req('POST', '/_matrix/client/v3/login', undefined, { refresh_token: true }), res(200, { access_token: 'old', refresh_token: 'r1', user_id: '@a:hs', device_id: 'D' }));
    r.observe(req('POST', '/_matrix/client/v3/refresh', undefined, { refresh_token: 'r1' }), res(200, { access_token: 'new', refresh_token: 'r2' }));
    expect(r.lookup('new')?.userId).toBe('@a:hs');
    expect(r.lookup('old')).toBeUndefined();
    r.observe(req('POST', '/_matrix/client/v3/refresh', undefined, { refresh_token: 'r1' }), res(200, { access_token: 'stolen', refresh_token: 'r3' }));
    expect(r.lookup('stolen')).toBeUndefined(); // r1 was used up: no owner known
  });

  it('is bounded, and refused tokens expire from the negative cache', () => {
    const clock = new FakeClock();
    const r = new TokenRegistry({ clock, maxTokens: 3, refusedTtlMs: 1000 });
    for (let i = 0; i < 5; i++) r.observe(req('GET', '/_matrix/client/v3/account/whoami', `t${i}`), res(200, { user_id: `@u${i}:hs` }));
    expect(r.status()['knownTokens']).toBe(3);
    expect(r.lookup('t0')).toBeUndefined();
    expect(r.lookup('t4')).toBeDefined();
    r.refuse('t4');
    expect(r.isRefused('t4')).toBe(true);
    clock.advance(1001);
    expect(r.isRefused('t4')).toBe(false);
  });

  it('ignores a damaged state file row by row', () => {
    const store = memStore();
    store.save({ version: 1, tokens: [[hashToken('ok'), '@a:hs', null, 1], ['nothex', '@b:hs', null, 1], 'junk'], refresh: [] });
    const r = new TokenRegistry({ store });
    expect(r.lookup('ok')?.userId).toBe('@a:hs');
    expect(r.status()['knownTokens']).toBe(1);
  });
});
