/**
 * NO SECRETS ON AIR (session.ts): in authenticate-only mode the host never sends option 256 and
 * the gateway runs every request as the account bound to the kit, refusing a token from the air
 * before it keeps or performs anything.
 */
import { describe, expect, it } from 'vitest';
import { sequenceToken } from '../../../src/coap/compact.ts';
import { getOption, getOptions } from '../../../src/coap/message.ts';
import { codeClass } from '../../../src/coap/numbers.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import { MSC3079_OPT_AUTHORIZATION, coapToHttpStatus } from '../../../src/matrix/http-coap.ts';
import { GatewaySession, HostSession } from '../../../src/matrix/session.ts';
import { TRICKLE_OPT_NO_AUTH, TRICKLE_OPT_SESSION_ERROR } from '../../../src/matrix/session-wire.ts';
import { ok, parse, req } from './support.ts';

const LOCAL = 'trk_local_token_minted_by_the_kit_000';
const BOUND = 'syt_gateway_bound_token_secret_1234';

/** `bound`: the bound account's token, or null for a kit with no binding. */
function pair(bound: string | null = BOUND) {
  let current: string | undefined = bound ?? undefined;
  const host = new HostSession({ sendAccessToken: false });
  const gateway = new GatewaySession({ sessionId: 'b0nd', boundAccessToken: () => current });
  return { host, gateway, rebind: (t: string | undefined) => { current = t; } };
}

describe('no secrets on air: HostSession with sendAccessToken false', () => {
  it('never puts option 256 on air: a request with a token carries neither option, one without carries No-Auth', () => {
    const host = new HostSession({ sendAccessToken: false });
    for (let i = 0; i < 3; i++) {
      const withToken = host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: `${LOCAL}${i}` }));
      expect(getOptions(withToken.options, MSC3079_OPT_AUTHORIZATION)).toEqual([]);
      expect(getOption(withToken.options, TRICKLE_OPT_NO_AUTH)).toBeUndefined();
      expect(withToken.sent.tokenHash).toBeUndefined();
      const bytes = withToken.options.map((o) => utf8.decode(o.value)).join('|');
      expect(bytes).not.toContain(LOCAL);
    }
    const anon = host.encodeRequest(req('GET', '/_matrix/client/versions'));
    expect(getOption(anon.options, TRICKLE_OPT_NO_AUTH)).toEqual(new Uint8Array(0));
    expect(host.status().inFlightWithToken).toBe(0);
  });

  it('a request with another token never waits for the first one\'s (there is one bound account)', async () => {
    const { host, gateway } = pair();
    let answered = 0;
    const send = async (enc: Parameters<Parameters<HostSession['carry']>[1]>[0], seq: number) => {
      const r = gateway.decodeRequest({ ...enc, token: sequenceToken(seq) });
      expect(r.accessToken).toBe(BOUND);
      answered++;
      return gateway.encodeResponse(ok({ user_id: '@a:hs' }), r);
    };
    const slow = host.carry(req('GET', '/_matrix/client/v3/account/whoami', { token: 'one' }), (enc) => new Promise((resolve) => setTimeout(() => resolve(send(enc, 1)), 20)));
    const fast = host.carry(req('GET', '/_matrix/client/v3/account/whoami', { token: 'two' }), (enc) => send(enc, 2));
    expect((await fast).status).toBe(200);
    expect(answered).toBe(1); // did not wait for the slow one
    expect((await slow).status).toBe(200);
  });
});

describe('no secrets on air: GatewaySession with boundAccessToken', () => {
  it('runs a request with neither option as the bound account, and one with No-Auth with no token', () => {
    const { host, gateway } = pair();
    const r = gateway.decodeRequest({ ...host.encodeRequest(req('GET', '/_matrix/client/v3/account/whoami', { token: LOCAL })), token: sequenceToken(1) });
    expect(r.accessToken).toBe(BOUND);
    const anon = gateway.decodeRequest({ ...host.encodeRequest(req('GET', '/_matrix/client/versions')), token: sequenceToken(2) });
    expect(anon.accessToken).toBeUndefined();
    expect(gateway.exportState().accessToken).toBeNull(); // the bound token is never in the session state
    expect(gateway.sessionAccessToken).toBe(BOUND);
  });

  it('refuses a request forged to carry an access token (option 256): 403 M_FORBIDDEN, nothing kept, nothing to perform', () => {
    const { gateway } = pair();
    const forger = new HostSession(); // a kit running other code: sends its token as in encrypt mode
    const enc = forger.encodeRequest(req('PUT', '/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1', { token: 'syt_stolen_or_leaked_token', body: { msgtype: 'm.text', body: 'hi' } }));
    expect(getOptions(enc.options, MSC3079_OPT_AUTHORIZATION).length).toBe(1);
    let err: unknown;
    try { gateway.decodeRequest({ ...enc, token: sequenceToken(1) }); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_MATRIX_SECRET_ON_AIR')).toBe(true);
    const res = gateway.encodeError(err);
    expect(coapToHttpStatus(res.code, res.options)).toBe(403);
    expect(getOption(res.options, TRICKLE_OPT_SESSION_ERROR)).toBeUndefined();
    const body = forger.decodeResponse(res, enc.sent);
    expect(body.kind).toBe('response');
    if (body.kind === 'response') expect(parse(body.response.body)).toMatchObject({ errcode: 'M_FORBIDDEN', error: expect.stringContaining('never cross the air') });
    expect(gateway.exportState().accessToken).toBeNull();
    expect(gateway.sessionAccessToken).toBe(BOUND); // not replaced by the forged one
    expect(gateway.mustPersist).toBe(false);
  });

  it('with no account bound: 401 M_UNKNOWN_TOKEN that names the fix, never the Session-Error that asks the host for its token', async () => {
    const { host, gateway, rebind } = pair(null);
    const enc = host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: LOCAL }));
    let err: unknown;
    try { gateway.decodeRequest({ ...enc, token: sequenceToken(1) }); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_MATRIX_UNBOUND')).toBe(true);
    const res = gateway.encodeError(err);
    expect(codeClass(res.code)).toBe(4);
    expect(getOption(res.options, TRICKLE_OPT_SESSION_ERROR)).toBeUndefined();
    const got = host.decodeResponse(res, enc.sent);
    expect(got.kind).toBe('response');
    if (got.kind === 'response') {
      expect(got.response.status).toBe(401);
      expect(parse(got.response.body)).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false, error: expect.stringContaining('trickle keys bind') });
    }
    rebind(BOUND);
    const again = gateway.decodeRequest({ ...host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: LOCAL })), token: sequenceToken(2) });
    expect(again.accessToken).toBe(BOUND);
  });
});
