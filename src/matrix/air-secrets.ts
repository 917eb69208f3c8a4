/**
 * What must never cross the air in authenticate-only mode (amateur bands: every transport frame
 * is cleartext plus a tag, SECURITY.md "Amateur radio"), as one pure check that both ends apply
 * to a client-server request: the host before carrying it (refused there: nothing goes on air),
 * the gateway before performing it (a kit running other code is refused, never acted on).
 *
 * In that mode the field kit answers logins itself (host/local-login.ts) and the gateway holds
 * the access token of the Matrix account bound to the kit's key (gateway/bound-accounts.ts), so
 * no request needs a secret. airSecretRefusal() names why a request is refused:
 *  - POST /login            a password or login token would go, an access token come back;
 *  - POST /register         a password would go, an access token come back;
 *  - POST /refresh          a refresh token would go, an access token come back;
 *  - POST /logout, /logout/all   they would end the device the gateway is bound to (the kit
 *                           forgets its own local tokens instead);
 *  - POST /login/get_token  (MSC3882) a login token would come back;
 *  - POST /user/{userId}/openid/request_token   an OpenID access token would come back;
 *  - any other request whose JSON body holds a password: a top-level `password` or
 *    `new_password`, or `auth.password` (User-Interactive Authentication with
 *    m.login.password: /account/password, /account/deactivate, /delete_devices,
 *    /keys/device_signing/upload, …), or an identity-server `id_access_token` (3pid invites
 *    and bindings). Room events, room state and to-device messages are not
 *    inspected: their content is what the users chose to send, readable on air by design.
 * The access token itself never rides in a body or a query: the host takes `access_token` out of
 * the query (local-api-policy.ts) and the session layer sends no option 256 in this mode
 * (session.ts, HostSession `sendAccessToken: false`; GatewaySession `boundAccessToken`).
 *
 * Pure: no I/O, no logging.
 */
import { utf8 } from '../util/bytes.ts';
import { isJsonContentType, type HttpRequestLike } from './http.ts';

const C = '^/_matrix/client/(?:r0|v3)';
const REFUSED: readonly [RegExp, string][] = [
  [new RegExp(`${C}/login$`), 'logging in over the air would put the password on air and bring the access token back in clear; the field kit answers logins itself'],
  [new RegExp(`${C}/register$`), 'registering over the air would put the password on air and bring an access token back in clear; register the account at the homeserver, then bind it on the gateway (trickle keys bind)'],
  [/^\/_matrix\/client\/(?:v1|v3)\/refresh$/, 'refresh tokens would cross the air in clear; the field kit\'s own access tokens do not expire'],
  [new RegExp(`${C}/logout(?:/all)?$`), 'logging out over the air would end the device the gateway is bound to; the field kit forgets its own access tokens instead'],
  [/^\/_matrix\/client\/(?:v1|unstable\/org\.matrix\.msc3882)\/login\/get_token$/, 'a login token would come back over the air in clear'],
  [new RegExp(`${C}/user/[^/]+/openid/request_token$`), 'an OpenID access token would come back over the air in clear'],
];
/** Bodies that are the users' own messages: readable on air by design, never inspected. */
const USER_CONTENT = /^\/_matrix\/client\/(?:r0|v3)\/(?:rooms\/[^/]+\/(?:send|state)\/|sendToDevice\/)/;

/** Why carrying `req` would put a secret on air (or end the bound device), or undefined when it may go. */
export function airSecretRefusal(req: HttpRequestLike): string | undefined {
  if (req.method.toUpperCase() === 'POST') {
    for (const [re, why] of REFUSED) if (re.test(req.path)) return why;
  }
  if (req.body.length === 0 || USER_CONTENT.test(req.path)) return undefined;
  if (req.contentType !== undefined && !isJsonContentType(req.contentType)) return undefined;
  const text = utf8.decode(req.body);
  if (!text.includes('password') && !text.includes('id_access_token')) return undefined; // cheap: no such key can be there
  let body: unknown;
  try { body = JSON.parse(text); } catch { return undefined; }
  if (!body || typeof body !== 'object' || Array.isArray(body)) return undefined;
  const o = body as Record<string, unknown>;
  const auth = o['auth'];
  const inAuth = auth !== null && typeof auth === 'object' && !Array.isArray(auth) && 'password' in auth;
  if ('password' in o || 'new_password' in o || inAuth) {
    return 'the request holds a password, which would cross the air in clear; change passwords and confirm with a password where the homeserver can be reached directly';
  }
  if ('id_access_token' in o) {
    return 'the request holds an identity-server access token (3pid invites and bindings), which would cross the air in clear; do that where the homeserver can be reached directly';
  }
  return undefined;
}
