import { describe, expect, it } from 'vitest';
import { airSecretRefusal } from '../../../src/matrix/air-secrets.ts';
import { req } from './support.ts';

describe('airSecretRefusal: what never crosses the air in authenticate-only mode', () => {
  it('refuses logins, registration, refresh, logouts and requests whose answers carry tokens', () => {
    for (const [m, p] of [
      ['POST', '/_matrix/client/v3/login'], ['POST', '/_matrix/client/r0/login'], ['POST', '/_matrix/client/v3/register'],
      ['POST', '/_matrix/client/v3/refresh'], ['POST', '/_matrix/client/v1/refresh'], ['POST', '/_matrix/client/v3/logout'],
      ['POST', '/_matrix/client/v3/logout/all'], ['POST', '/_matrix/client/v1/login/get_token'],
      ['POST', '/_matrix/client/v3/user/%40a%3Ahs/openid/request_token'],
    ] as const) expect(airSecretRefusal(req(m, p, { body: {} })), p).toBeTypeOf('string');
  });

  it('refuses a password anywhere a request body holds one: top level, new_password, UIA auth', () => {
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/account/password', { body: { new_password: 'n', logout_devices: false } }))).toMatch(/password/);
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/delete_devices', { body: { devices: ['D'], auth: { type: 'm.login.password', password: 'p', identifier: { type: 'm.id.user', user: 'a' } } } }))).toMatch(/password/);
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/account/deactivate', { body: { auth: { type: 'm.login.password', password: 'p' } } }))).toMatch(/password/);
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/keys/device_signing/upload', { body: { password: 'p' } }))).toMatch(/password/);
  });

  it('lets everything else go, including messages that mention passwords and token-free login flows', () => {
    expect(airSecretRefusal(req('GET', '/_matrix/client/v3/login'))).toBeUndefined();
    expect(airSecretRefusal(req('GET', '/_matrix/client/v3/sync', { query: 'timeout=0' }))).toBeUndefined();
    expect(airSecretRefusal(req('PUT', '/_matrix/client/v3/rooms/!r%3Ahs/send/m.room.message/t1', { body: { msgtype: 'm.text', body: 'the password is swordfish', password: 'user content' } }))).toBeUndefined();
    expect(airSecretRefusal(req('PUT', '/_matrix/client/v3/rooms/!r%3Ahs/state/x.y/k', { body: { password: 'user content' } }))).toBeUndefined();
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/createRoom', { body: { name: 'password reset help' } }))).toBeUndefined();
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/delete_devices', { body: { devices: ['D'] } }))).toBeUndefined(); // the UIA probe, no auth yet
    expect(airSecretRefusal(req('POST', '/_matrix/client/v3/account/password', { raw: new TextEncoder().encode('password'), contentType: 'text/plain' }))).toBeUndefined();
  });
});

describe('identity-server tokens', () => {
  it('a 3pid invite or binding carrying id_access_token is refused in authenticate-only mode', async () => {
    const { airSecretRefusal } = await import('../../../src/matrix/air-secrets.ts');
    const body = new TextEncoder().encode(JSON.stringify({ id_server: 'id.example', id_access_token: 'secret-id-token', medium: 'email', address: 'a@example.org' }));
    expect(airSecretRefusal({ method: 'POST', path: '/_matrix/client/v3/rooms/!r:hs/invite', query: '', contentType: 'application/json', body })).toMatch(/identity-server/);
    expect(airSecretRefusal({ method: 'POST', path: '/_matrix/client/v3/account/3pid/bind', query: '', contentType: 'application/json', body })).toMatch(/identity-server/);
    const plain = new TextEncoder().encode(JSON.stringify({ user_id: '@bob:hs' }));
    expect(airSecretRefusal({ method: 'POST', path: '/_matrix/client/v3/rooms/!r:hs/invite', query: '', contentType: 'application/json', body: plain })).toBeUndefined();
  });
});
