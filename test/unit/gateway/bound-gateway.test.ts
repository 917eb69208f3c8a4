/**
 * The gateway in authenticate-only mode, through its real radio stack (Noise in authenticate
 * mode over an in-memory serial link), with a stand-in homeserver that records every request:
 * a kit running other code that forges option 256, logs in, logs out or sends a password is
 * refused and nothing reaches the homeserver; honest requests run with the bound account's
 * token; an unbound kit gets a 401 that names the fix.
 */
import { createServer, type Server } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { silentLogger } from '../../../src/log.ts';
import { startGateway, type Gateway } from '../../../src/gateway/gateway.ts';
import { openRadioStack, type RadioStack } from '../../../src/net/radio-stack.ts';
import { buildSecurity, stateStores } from '../../../src/cli/security.ts';
import { loadIdentity } from '../../../src/cli/keys.ts';
import { encodePublicKey } from '../../../src/secure/fingerprint.ts';
import { HostSession } from '../../../src/matrix/session.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import type { BoundAccount } from '../../../src/gateway/bound-accounts.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { pairedStateDirs } from '../../helpers/stack.ts';

const logger = silentLogger();
const radioOpts = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 9, codingRate: 5 }, maxBodyBytes: 1 << 20 } as const;
const BOUND = 'syt_the_gateway_holds_this_token';

let hs: Server;
let hsUrl = '';
const performed: { method: string; path: string; auth: string | undefined }[] = [];
let state: Awaited<ReturnType<typeof pairedStateDirs>>;
let gw: Gateway;
let kit: RadioStack;
let binding: BoundAccount | undefined;

beforeAll(async () => {
  hs = createServer((req, res) => {
    performed.push({ method: req.method ?? '', path: req.url ?? '', auth: req.headers.authorization });
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.headers.authorization === `Bearer ${BOUND}` ? { user_id: '@alice:hs.example', device_id: 'GWDEV' } : {}));
  });
  await new Promise<void>((r) => hs.listen(0, '127.0.0.1', () => r()));
  const a = hs.address();
  hsUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  state = await pairedStateDirs('forger-kit');
  const kitKey = encodePublicKey(loadIdentity(state.hostDir).publicKey);
  binding = { kitKey, kitName: 'forger-kit', userId: '@alice:hs.example', deviceId: 'GWDEV', accessToken: BOUND, homeserver: hsUrl, via: 'password', boundAt: '' };
  const [gwLink, kitLink] = createMemoryLinkPair('bound');
  gw = await startGateway({
    link: gwLink, homeserverUrl: hsUrl, homeserverTimeoutMs: 5_000, logger, ...radioOpts,
    security: buildSecurity('gateway', state.gatewayDir, 'authenticate-only', logger)!, ...stateStores(state.gatewayDir, 'gateway', logger),
    boundAccounts: (k) => (binding && encodePublicKey(k) === binding.kitKey ? binding : undefined),
  });
  kit = await openRadioStack({ link: kitLink, logger, ...radioOpts, security: buildSecurity('host', state.hostDir, 'authenticate-only', logger)! });
});

afterAll(async () => {
  await kit?.close();
  await gw?.close();
  await new Promise<void>((r) => hs.close(() => r()));
  state?.cleanup();
});

/** One request as a kit's HostSession encodes it, carried by the real radio stack. */
async function ask(session: HostSession, req: HttpRequestLike): Promise<HttpResponseLike & { json: any }> {
  const res = await session.carry(req, (enc) => kit.request(enc, { responseTimeoutMs: 10_000 }));
  return { ...res, json: JSON.parse(utf8.decode(res.body)) };
}
const get = (path: string, accessToken?: string): HttpRequestLike => ({ method: 'GET', path, query: '', body: new Uint8Array(0), ...(accessToken ? { accessToken } : {}) });
const post = (path: string, body: unknown, accessToken?: string): HttpRequestLike => ({ method: 'POST', path, query: '', contentType: 'application/json', body: utf8.encode(JSON.stringify(body)), ...(accessToken ? { accessToken } : {}) });

describe('trickle gateway, authenticate-only mode: no secret from the air is ever used', () => {
  it('an honest request runs with the bound account\'s token', async () => {
    const honest = new HostSession({ sendAccessToken: false });
    const r = await ask(honest, get('/_matrix/client/v3/account/whoami', 'trk_local_token'));
    expect(r.status).toBe(200);
    expect(r.json.user_id).toBe('@alice:hs.example');
    expect(performed.at(-1)).toEqual({ method: 'GET', path: '/_matrix/client/v3/account/whoami', auth: `Bearer ${BOUND}` });
  });

  it('a request forged to carry an access token (option 256) is refused 403 and not performed', async () => {
    const before = performed.length;
    const forger = new HostSession(); // sends the token as encrypt mode does
    const r = await ask(forger, get('/_matrix/client/v3/account/whoami', 'syt_someone_elses_token'));
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ errcode: 'M_FORBIDDEN', error: expect.stringContaining('never cross the air') });
    // (A fresh forger: one that saw an answer believes the gateway holds its token and leaves it out.)
    const send = await ask(new HostSession(), { method: 'PUT', path: '/_matrix/client/v3/rooms/!r%3Ahs.example/send/m.room.message/t1', query: '', contentType: 'application/json', body: utf8.encode('{"msgtype":"m.text","body":"x"}'), accessToken: 'syt_someone_elses_token' });
    expect(send.status).toBe(403);
    expect(performed.length).toBe(before);
    expect((gw.status()['boundAccount'] as { secretsRefused: number }).secretsRefused).toBeGreaterThanOrEqual(2);
  });

  it('login, logout, registration and passwords from the air are refused and not performed', async () => {
    const before = performed.length;
    const s = new HostSession({ sendAccessToken: false });
    for (const req of [
      post('/_matrix/client/v3/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'pw' }),
      post('/_matrix/client/v3/logout', {}, 'trk_local'),
      post('/_matrix/client/v3/logout/all', {}, 'trk_local'),
      post('/_matrix/client/v3/register', { username: 'x', password: 'pw' }),
      post('/_matrix/client/v3/delete_devices', { devices: ['GWDEV'], auth: { type: 'm.login.password', password: 'pw' } }, 'trk_local'),
    ]) {
      const r = await ask(s, req);
      expect(r.status, req.path).toBe(403);
      expect(r.json.errcode, req.path).toBe('M_FORBIDDEN');
    }
    expect(performed.length).toBe(before);
  });

  it('a kit with no binding, or one bound for another homeserver, gets 401 M_UNKNOWN_TOKEN naming "trickle keys bind"; token-less requests still go', async () => {
    const saved = binding;
    const before = performed.length;
    const s = new HostSession({ sendAccessToken: false });
    try {
      for (const b of [undefined, { ...saved!, homeserver: 'https://elsewhere.example' }]) {
        binding = b;
        const r = await ask(s, get('/_matrix/client/v3/joined_rooms', 'trk_local'));
        expect(r.status).toBe(401);
        expect(r.json).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false, error: expect.stringContaining('trickle keys bind') });
        expect(r.json.error).toContain(hsUrl);
      }
      expect(performed.length).toBe(before);
      const versions = await ask(s, get('/_matrix/client/versions'));
      expect(versions.status).toBe(200);
      expect(performed.at(-1)).toMatchObject({ path: '/_matrix/client/versions', auth: undefined });
    } finally {
      binding = saved;
    }
  });

  it('the bound token is in no state file the gateway writes', () => {
    const files = readdirSync(state.gatewayDir).filter((f) => f.endsWith('.json'));
    expect(files).toContain('matrix-gateway.json');
    for (const f of files) expect(readFileSync(join(state.gatewayDir, f), 'utf8'), f).not.toContain(BOUND);
  });
});
