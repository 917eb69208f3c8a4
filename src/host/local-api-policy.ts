/**
 * What the host's local Matrix API lets in, as pure functions (no I/O, no logging): which
 * addresses it may listen on, which Origin and Host headers it serves, where an access token
 * is read from, which endpoints need one, and how a `well_known` answer is rewritten.
 *
 * The threat (DESIGN.md, "any web page on the kit's laptop"): the local API sits on a laptop
 * whose browser runs pages from anywhere. A page can make the browser send requests to
 * http://127.0.0.1:8008 (CORS decides only whether it may READ the answer, not whether the
 * request is sent), and a page on a rebinding name (evil.example resolving to 127.0.0.1) is
 * same-origin with the kit as far as the browser knows. So:
 *  - a request whose Origin header is not one the operator named (--allow-origin) is refused
 *    before anything is read from the store or sent over the radio; browsers send Origin on
 *    every cross-origin request and on same-origin non-GET requests (Fetch standard,
 *    "append a request `Origin` header"), native clients and matrix-js-sdk in Node send none;
 *  - a request whose Host header names something other than this kit (an IP literal,
 *    `localhost`, the --listen name, or a name given with --allow-host) is refused: that is
 *    DNS rebinding, since a browser puts the page's own host name there;
 *  - CORS headers are only ever sent for an allowed origin, echoing it (never `*`), with
 *    `Vary: Origin`.
 */
import { isIP } from 'node:net';
import { TrickleError } from '../errors.ts';

// ---------------------------------------------------------------------------------------------
// Listening

/** 127.0.0.0/8, ::1, ::ffff:127.x.y.z and `localhost` (RFC 6761 §6.3: it resolves to loopback). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^(?:0{1,4}:){7}0{0,3}1$/.test(h) || /^::ffff:127\./.test(h);
  return false;
}

/**
 * Refuses a non-loopback listen address unless `allowLan`; with it, returns the warning to log.
 * A host NAME other than localhost counts as non-loopback: it may resolve to any interface.
 */
export function checkListenAddress(host: string, allowLan: boolean): { warning?: string } {
  if (isLoopbackHost(host)) return {};
  if (!allowLan) {
    throw new TrickleError('ERR_CONFIG', 'config',
      `--listen ${host} is not a loopback address: anyone on that network could use this field kit's Matrix API and spend its airtime. ` +
      'Listen on 127.0.0.1 (the default), or add --allow-lan if phones or laptops on the local network must reach the kit');
  }
  return { warning: `the local Matrix API listens on ${host} (--allow-lan): anyone who can reach this address on the network can try it; every request still needs a valid access token` };
}

// ---------------------------------------------------------------------------------------------
// Origin and Host

/**
 * An `--allow-origin` value as the browser serializes an origin (RFC 6454 §6.1): scheme://host
 * with the port only when it is not the scheme's default, lower case, no path. `*` and `null`
 * are refused: each would let any page (or any sandboxed frame) read the team's messages.
 */
export function parseAllowedOrigin(raw: string): string {
  const bad = (why: string) => new TrickleError('ERR_CONFIG', 'config', `--allow-origin ${JSON.stringify(raw)}: ${why}; give an origin such as https://app.element.io or http://localhost:8080 (scheme, host and port only)`);
  if (raw === '*' || raw.toLowerCase() === 'null') throw bad('a wildcard or the opaque origin "null" would let any web page use the kit; name each origin');
  let u: URL;
  try { u = new URL(raw); } catch { throw bad('not a URL'); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad('only http and https origins exist for web clients');
  if (u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) throw bad('an origin has no path, query, fragment or user');
  return u.origin;
}

/** The host name of a Host header (RFC 9110 §7.2: uri-host [":" port]), lower case, brackets kept off. */
export function hostHeaderName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') >= 0 ? h.indexOf(']') : undefined);
  const colon = h.lastIndexOf(':');
  return colon >= 0 ? h.slice(0, colon) : h;
}

export interface OriginPolicy {
  /** Exact serialized origins (parseAllowedOrigin) whose pages may use the API. */
  allowedOrigins: ReadonlySet<string>;
  /** Host names (lower case) besides IP literals, localhost and the listen name. */
  allowedHostNames: ReadonlySet<string>;
}

/**
 * The Host header check. IP literals are always accepted: a rebinding attack needs a DNS name
 * (the browser puts the page's host there), and a page on an IP literal other than the kit's
 * is cross-origin, so its requests carry an Origin header and meet the Origin check. The port is
 * not compared: a port forward (ssh -L) legitimately changes it.
 */
export function hostAllowed(hostHeader: string | undefined, policy: OriginPolicy): boolean {
  if (hostHeader === undefined || hostHeader === '') return true; // HTTP/1.0: no browser sends that
  const name = hostHeaderName(hostHeader);
  if (isIP(name) !== 0) return true;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return policy.allowedHostNames.has(name);
}

/**
 * The Origin check. No Origin header: not a cross-origin browser request (native clients, curl,
 * matrix-js-sdk in Node, same-origin GET). The kit's own origin (the URL the request came to) is
 * allowed too: only a page the kit itself served could send it, and it serves no pages.
 */
export function originAllowed(origin: string | undefined, ownBaseUrl: string, policy: OriginPolicy): boolean {
  if (origin === undefined) return true;
  const o = origin.trim().toLowerCase();
  if (o === ownBaseUrl.toLowerCase()) return true;
  for (const a of policy.allowedOrigins) if (a.toLowerCase() === o) return true;
  return false;
}

/** Headers for an allowed cross-origin request or preflight (Fetch standard §3.2.3 "CORS protocol"). */
export function corsHeaders(origin: string, preflight: boolean): Record<string, string> {
  return {
    'access-control-allow-origin': origin,
    vary: 'Origin',
    ...(preflight ? {
      'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
      'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization',
      'access-control-max-age': '600',
    } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Access tokens

export type TokenExtraction =
  | { kind: 'none'; query: string }
  | { kind: 'token'; token: string; query: string }
  /** A malformed or ambiguous credential: answered 401 M_MISSING_TOKEN where a token is needed. */
  | { kind: 'invalid'; reason: string; query: string };

/**
 * The access token of a request, from `Authorization: Bearer …` (CS-API "Using access tokens")
 * or the deprecated `access_token` query parameter, which clients still send. The query
 * parameter is removed from the returned query (the rest kept byte for byte), so the token
 * never travels in the URI: the session layer sends it once, as the Authorization option. Both
 * at once, two query tokens or a non-Bearer Authorization header are `invalid`, as Synapse
 * treats them.
 */
export function extractAccessToken(authorization: string | undefined, query: string): TokenExtraction {
  const parts = query === '' ? [] : query.split('&');
  const kept: string[] = [];
  const fromQuery: string[] = [];
  for (const p of parts) {
    const eq = p.indexOf('=');
    const key = safeDecode(eq >= 0 ? p.slice(0, eq) : p);
    if (key === 'access_token') fromQuery.push(safeDecode(eq >= 0 ? p.slice(eq + 1) : ''));
    else kept.push(p);
  }
  const rest = fromQuery.length > 0 ? kept.join('&') : query;
  if (authorization !== undefined) {
    if (fromQuery.length > 0) return { kind: 'invalid', reason: 'an access token in both the Authorization header and the access_token query parameter', query: rest };
    const m = /^Bearer +(\S+)\s*$/i.exec(authorization);
    if (!m) return { kind: 'invalid', reason: 'the Authorization header is not "Bearer <access token>"', query: rest };
    return { kind: 'token', token: m[1]!, query: rest };
  }
  if (fromQuery.length > 1) return { kind: 'invalid', reason: 'more than one access_token query parameter', query: rest };
  if (fromQuery.length === 1) {
    return fromQuery[0] ? { kind: 'token', token: fromQuery[0], query: rest } : { kind: 'invalid', reason: 'an empty access_token query parameter', query: rest };
  }
  return { kind: 'none', query };
}

function safeDecode(s: string): string {
  try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; }
}

/**
 * How an endpoint treats access tokens (CS-API v1.16, each endpoint's "Requires authentication"):
 *  - 'open': no token is needed and none is checked (a stale token sent to /login must not stop
 *    the client from logging in again);
 *  - 'optional': works without a token; a token that is sent is checked;
 *  - 'required': everything else, including every path this table does not know (fail closed).
 */
export type TokenRequirement = 'open' | 'optional' | 'required';

const C = '^/_matrix/client/(?:r0|v3)';
const OPEN: readonly [string, RegExp][] = [
  ['GET', /^\/_matrix\/client\/versions$/],
  ['GET', /^\/\.well-known\/matrix\/(?:client|support)$/],
  ['*', new RegExp(`${C}/login$`)],                                         // GET flows, POST log in
  ['GET', new RegExp(`${C}/login/sso/redirect(?:/[^/]+)?$`)],
  ['POST', new RegExp(`${C}/register$`)],
  ['GET', new RegExp(`${C}/register/available$`)],
  ['POST', new RegExp(`${C}/register/(?:email|msisdn)/requestToken$`)],
  ['GET', /^\/_matrix\/client\/v1\/register\/m\.login\.registration_token\/validity$/],
  ['POST', /^\/_matrix\/client\/(?:v1|v3)\/refresh$/],
  ['POST', new RegExp(`${C}/account/password/(?:email|msisdn)/requestToken$`)],
  ['GET', new RegExp(`${C}/auth/[^/]+/fallback/web$`)],
  ['GET', /^\/_matrix\/client\/v1\/auth_(?:metadata|issuer)$/],
  // Legacy unauthenticated media (deprecated in v1.11 for /_matrix/client/v1/media, which needs a token).
  ['GET', /^\/_matrix\/media\/(?:r0|v3)\/(?:download|thumbnail)\//],
];
const OPTIONAL: readonly [string, RegExp][] = [
  ['GET', new RegExp(`${C}/profile/[^/]+(?:/[^/]+)?$`)],
  ['GET', new RegExp(`${C}/publicRooms$`)],
  ['GET', new RegExp(`${C}/directory/room/[^/]+$`)],
  ['POST', new RegExp(`${C}/account/password$`)],                          // UIA without a token (email reset)
  ['POST', new RegExp(`${C}/account/deactivate$`)],
  ['GET', /^\/_matrix\/client\/v1\/room_summary\/[^/]+$/],
];

export function tokenRequirement(method: string, path: string): TokenRequirement {
  // A path that a dot segment or an encoded slash could make mean something else is never open.
  if (/%2[ef]|\/\.\.?(?:\/|$)|\\/i.test(path)) return 'required';
  const m = method.toUpperCase();
  const match = (rows: readonly [string, RegExp][]) => rows.some(([rm, re]) => (rm === '*' || rm === m) && re.test(path));
  if (match(OPEN)) return 'open';
  if (match(OPTIONAL)) return 'optional';
  return 'required';
}

// ---------------------------------------------------------------------------------------------
// well_known

/**
 * A client discovery document (CS-API "Well-known URIs", and the `well_known` of a /login answer)
 * as the kit must present it: `m.homeserver.base_url` is the kit's own URL, since the real
 * homeserver is behind the radio and a client that believed it would go around the kit (or
 * nowhere: there is no internet). `m.identity_server` is dropped: the identity-server API is not
 * the CS-API, the gateway does not perform it, and a client sending 3PID look-ups straight to the
 * internet would bypass the kit. Every other key (client configuration) is kept.
 */
export function rewriteWellKnown(doc: unknown, ownBaseUrl: string): Record<string, unknown> {
  const out: Record<string, unknown> = doc && typeof doc === 'object' && !Array.isArray(doc) ? { ...(doc as Record<string, unknown>) } : {};
  const hs = out['m.homeserver'];
  out['m.homeserver'] = { ...(hs && typeof hs === 'object' && !Array.isArray(hs) ? hs as Record<string, unknown> : {}), base_url: ownBaseUrl };
  delete out['m.identity_server'];
  return out;
}

/** The kit's own base URL as a client that sent `hostHeader` reaches it. */
export function ownBaseUrl(hostHeader: string | undefined, listenHost: string, port: number): string {
  if (hostHeader && /^[a-z0-9.\-[\]:]+$/i.test(hostHeader)) return `http://${hostHeader.toLowerCase()}`;
  const h = listenHost === '0.0.0.0' ? '127.0.0.1' : listenHost === '::' ? '[::1]' : isIP(listenHost) === 6 ? `[${listenHost}]` : listenHost;
  return `http://${h}:${port}`;
}
