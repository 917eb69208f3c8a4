import { describe, expect, it } from 'vitest';
import { LocalLogin } from '../../../src/host/local-login.ts';
import { LocalAuth } from '../../../src/host/local-auth.ts';
import { checkPassword, formatLocalAccounts, makeVerifier, parseLocalAccounts, type LocalAccount } from '../../../src/host/local-accounts.ts';
import { TokenRegistry } from '../../../src/host/token-registry.ts';
import { silentLogger } from '../../../src/log.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const res = (status: number, body: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: enc.encode(JSON.stringify(body)) });
const parse = (r: HttpResponseLike): any => JSON.parse(dec.decode(r.body));
const login = (body: unknown): HttpRequestLike => ({ method: 'POST', path: '/_matrix/client/v3/login', query: '', contentType: 'application/json', body: enc.encode(JSON.stringify(body)) });
const pw = (user: string, password: string) => login({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password });
/** Cheap scrypt parameters for tests (the real default costs ~0.3 s a check). */
const FAST = { N: 1024, r: 8, p: 1 };
const BASE = 'http://127.0.0.1:8008';

async function setup(opts: { bound?: { user_id: string; device_id?: string } | 'unbound'; accounts?: [string, string][] } = {}) {
  const clock = new FakeClock();
  const registry = new TokenRegistry({ clock });
  const accounts: LocalAccount[] = [];
  for (const [userId, password] of opts.accounts ?? [['@alice:hs.example', 'correct horse']]) {
    accounts.push({ userId, scrypt: await makeVerifier(password, FAST), setAt: '' });
  }
  const carried: HttpRequestLike[] = [];
  const carry = async (req: HttpRequestLike): Promise<HttpResponseLike> => {
    carried.push(req);
    if (opts.bound === 'unbound') return res(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'trickle gateway: no Matrix account is bound to this field kit (X); on the gateway run: trickle keys bind X <@user:server> --homeserver H', soft_logout: false });
    return res(200, opts.bound ?? { user_id: '@alice:hs.example', device_id: 'GWDEVICE' });
  };
  const local = new LocalLogin({ accounts: () => accounts, carry, registry, logger: silentLogger(), clock, failureBurst: 3, failureRefillMs: 10_000 });
  return { clock, registry, carried, local };
}

describe('local accounts: scrypt verifiers', () => {
  it('checks the password, never stores it, and refuses files that are malformed or ask for too much', async () => {
    const v = await makeVerifier('correct horse', FAST);
    expect(JSON.stringify(v)).not.toContain('correct horse');
    expect(await checkPassword('correct horse', v)).toBe(true);
    expect(await checkPassword('correct horsf', v)).toBe(false);
    const other = await makeVerifier('correct horse', FAST);
    expect(other.salt).not.toBe(v.salt); // a random salt per verifier
    const file = formatLocalAccounts([{ userId: '@a:hs', scrypt: v, setAt: 'now' }]);
    expect(parseLocalAccounts(JSON.parse(JSON.stringify(file)), 'f')).toHaveLength(1);
    expect(() => parseLocalAccounts({ ...file, accounts: [{ userId: '@a:hs', scrypt: { ...v, N: 2 ** 24 }, setAt: '' }] }, 'f')).toThrow(/scrypt parameters/);
    expect(() => parseLocalAccounts({ ...file, accounts: [{ userId: 'alice', scrypt: v, setAt: '' }] }, 'f')).toThrow(/user id/);
    expect(() => parseLocalAccounts({ version: 2 }, 'f')).toThrow(/version 1/);
  });
});

describe('LocalLogin: the field kit answers logins, nothing secret crosses the air', () => {
  it('GET /login advertises only m.login.password', async () => {
    const { local } = await setup();
    expect(parse(local.flows())).toEqual({ flows: [{ type: 'm.login.password' }] });
  });

  it('a wrong password or an unknown account: 403 M_FORBIDDEN and nothing is carried', async () => {
    const { local, carried, registry } = await setup();
    for (const r of [pw('alice', 'wrong'), pw('@bob:hs.example', 'correct horse'), pw('@alice:other.example', 'correct horse')]) {
      const a = await local.login(r, BASE);
      expect(a.status).toBe(403);
      expect(parse(a).errcode).toBe('M_FORBIDDEN');
    }
    expect(carried).toHaveLength(0);
    expect(registry.status()['knownTokens']).toBe(0);
  });

  it('a good password: asks the gateway for the bound account (no token on air), mints a token the registry knows', async () => {
    const { local, carried, registry } = await setup();
    for (const user of ['alice', '@alice:hs.example', 'ALICE']) {
      const a = await local.login(pw(user, 'correct horse'), BASE);
      expect(a.status, user).toBe(200);
      const body = parse(a);
      expect(body).toMatchObject({ user_id: '@alice:hs.example', device_id: 'GWDEVICE', home_server: 'hs.example', well_known: { 'm.homeserver': { base_url: BASE } } });
      expect(body.access_token).toMatch(/^trk_[A-Za-z0-9_-]{43}$/);
      expect(registry.lookup(body.access_token)).toMatchObject({ userId: '@alice:hs.example', deviceId: 'GWDEVICE' });
    }
    expect(carried.map((r) => `${r.method} ${r.path}`)).toEqual(Array(3).fill('GET /_matrix/client/v3/account/whoami'));
    const legacy = await local.login(login({ type: 'm.login.password', user: 'alice', password: 'correct horse' }), BASE);
    expect(legacy.status).toBe(200);
  });

  it('a kit bound to another account, or to none: 403 M_FORBIDDEN that says so, and no token', async () => {
    const other = await setup({ bound: { user_id: '@carol:hs.example' } });
    const a = await other.local.login(pw('alice', 'correct horse'), BASE);
    expect(a.status).toBe(403);
    expect(parse(a).error).toContain('@carol:hs.example');
    expect(other.registry.status()['knownTokens']).toBe(0);
    const none = await setup({ bound: 'unbound' });
    const b = await none.local.login(pw('alice', 'correct horse'), BASE);
    expect(b.status).toBe(403);
    expect(parse(b).error).toContain('trickle keys bind');
    expect(none.registry.status()['knownTokens']).toBe(0);
  });

  it('other login types and identifiers are refused with 400', async () => {
    const { local, carried } = await setup();
    expect((await local.login(login({ type: 'm.login.token', token: 'x' }), BASE)).status).toBe(400);
    expect((await local.login(login({ type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address: 'a@b' }, password: 'p' }), BASE)).status).toBe(400);
    expect((await local.login({ ...login({}), body: enc.encode('not json') }, BASE)).status).toBe(400);
    expect(carried).toHaveLength(0);
  });

  it('failed attempts are limited: 429 with retry_after_ms before any password is checked; a refill lets one more through', async () => {
    const { local, clock } = await setup();
    const wrong = await Promise.all([1, 2, 3, 4, 5].map(() => local.login(pw('alice', 'wrong'), BASE)));
    expect(wrong.map((r) => r.status).sort()).toEqual([403, 403, 403, 429, 429]);
    const limited = await local.login(pw('alice', 'correct horse'), BASE);
    expect(limited.status).toBe(429);
    expect(parse(limited).retry_after_ms).toBeGreaterThan(0);
    clock.advance(10_000);
    expect((await local.login(pw('alice', 'correct horse'), BASE)).status).toBe(200);
  });

  it('with LocalAuth not validating over the radio: an unknown token is refused at once, a minted one passes, logout ends it', async () => {
    const { local, registry, carried } = await setup();
    const auth = new LocalAuth({ registry, carry: async () => { throw new Error('must not be carried'); }, logger: silentLogger(), validateOverRadio: false });
    const get = (t: string): HttpRequestLike => ({ method: 'GET', path: '/_matrix/client/v3/sync', query: '', accessToken: t, body: new Uint8Array(0) });
    const unknown = await auth.check(get('syt_made_up'));
    expect(unknown.kind === 'deny' && unknown.response.status).toBe(401);
    const token = parse(await local.login(pw('alice', 'correct horse'), BASE)).access_token as string;
    expect(await auth.check(get(token))).toEqual({ kind: 'allow', userId: '@alice:hs.example' });
    registry.logout(token);
    expect((await auth.check(get(token))).kind).toBe('deny');
    expect(carried).toHaveLength(1); // the login's whoami only
  });
});
