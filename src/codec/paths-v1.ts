/**
 * MSC3079 "Low Bandwidth Client-Server API", Appendix B: CoAP path enums, version 1.
 *
 * Source: matrix-org/matrix-spec-proposals, proposals/3079-low-bandwidth-csapi.md,
 * "Appendix B: CoAP Path Enums — This is version 1 of this table" (enums 0..9, A..Z, a..u).
 * The same rows open `coapv1pathMappings` in matrix-org/lb `coap_paths_v1.go`; lb's federation
 * rows ("f0".."fS") are not in the MSC and not here.
 *
 * Frozen wire table: a change is a new version (paths-v2.ts), never an edit here.
 *
 * The short form is the enum followed by the path parameters left to right
 * (`/9/{roomId}/{eventType}/{txnId}`). How we carry paths, and why:
 *
 * - Matching (HTTP → CoAP) is exact: same number of segments, static segments equal byte for
 *   byte, the version segment `r0` or `v3` (Matrix v1.1 renamed r0 to v3 with no change for these
 *   endpoints), parameters any segment (possibly empty, e.g. the empty state key). No trailing-
 *   slash tolerance (lb accepts `/sync/` for `/sync`, which cannot round-trip). Other versions
 *   (`/_matrix/client/v1/…`, `unstable`, `api/v1`) and other trees (`/_matrix/media/…`) never
 *   match, so they pass through unchanged.
 * - Parameters are percent-decoded exactly once on the way in (decodeURIComponent), so a
 *   Uri-Path option holds the real value (`!abc:localhost`, `#room:hs`, `a/b`), as RFC 7252 §6.4
 *   asks and as lb's tests expect. On the way out they are re-encoded with encodeURIComponent,
 *   then `@`, `:` and `$` are un-escaped (`!` already is) so Matrix ids stay readable as in the
 *   vectors; `#`, `/`, `%`, `?`, space and everything else stay encoded. Round trips are exact in
 *   the values the homeserver sees; bytes are exact when the input already used this encoding
 *   (`!abc%3Alocalhost` comes back as `!abc:localhost`, the same room for any homeserver).
 * - The version: on the way out the default is `r0` (the MSC and the vectors); `clientVersion:
 *   'v3'` writes `v3`. Enum 0 (`/_matrix/client/versions`) has no version and never changes.
 * - The string form (`/9/!r:hs/m.room.message/t1`) joins the Uri-Path options with `/`; inside a
 *   parameter only `%` and `/` are escaped (`%25`, `%2F`) so the string splits back exactly, and
 *   only those two escapes are undone on the way back. Paths that match no enum are carried
 *   verbatim in the string form. In the structured form they become RFC 7252 §6.4 segments
 *   (decoded) and are re-encoded as above on the way out.
 * - A path that matches no enum but whose first segment IS an enum id (`/7/x`) cannot be carried:
 *   the peer would read it as an enum. It is refused (ERR_PATH_ENUM) rather than misrouted.
 * - HTTP input is the path component only: a `?` or `#` is refused (ERR_PATH_ENUM); the query
 *   travels in Uri-Query options.
 */
import { ConfigError, TrickleError, WireError } from '../errors.ts';

export const COAP_PATH_ENUM_VERSION = 1;

/** [enum, HTTP path template] rows in the order of Appendix B. */
export const COAP_PATH_ENUMS_V1: readonly (readonly [string, string])[] = Object.freeze(([
  ['0', '/_matrix/client/versions'],
  ['1', '/_matrix/client/r0/login'],
  ['2', '/_matrix/client/r0/capabilities'],
  ['3', '/_matrix/client/r0/logout'],
  ['4', '/_matrix/client/r0/register'],
  ['5', '/_matrix/client/r0/user/{userId}/filter'],
  ['6', '/_matrix/client/r0/user/{userId}/filter/{filterId}'],
  ['7', '/_matrix/client/r0/sync'],
  ['8', '/_matrix/client/r0/rooms/{roomId}/state/{eventType}/{stateKey}'],
  ['9', '/_matrix/client/r0/rooms/{roomId}/send/{eventType}/{txnId}'],
  ['A', '/_matrix/client/r0/rooms/{roomId}/event/{eventId}'],
  ['B', '/_matrix/client/r0/rooms/{roomId}/state'],
  ['C', '/_matrix/client/r0/rooms/{roomId}/members'],
  ['D', '/_matrix/client/r0/rooms/{roomId}/joined_members'],
  ['E', '/_matrix/client/r0/rooms/{roomId}/messages'],
  ['F', '/_matrix/client/r0/rooms/{roomId}/redact/{eventId}/{txnId}'],
  ['G', '/_matrix/client/r0/createRoom'],
  ['H', '/_matrix/client/r0/directory/room/{roomAlias}'],
  ['I', '/_matrix/client/r0/joined_rooms'],
  ['J', '/_matrix/client/r0/rooms/{roomId}/invite'],
  ['K', '/_matrix/client/r0/rooms/{roomId}/join'],
  ['L', '/_matrix/client/r0/join/{roomIdOrAlias}'],
  ['M', '/_matrix/client/r0/rooms/{roomId}/leave'],
  ['N', '/_matrix/client/r0/rooms/{roomId}/forget'],
  ['O', '/_matrix/client/r0/rooms/{roomId}/kick'],
  ['P', '/_matrix/client/r0/rooms/{roomId}/ban'],
  ['Q', '/_matrix/client/r0/rooms/{roomId}/unban'],
  ['R', '/_matrix/client/r0/directory/list/room/{roomId}'],
  ['S', '/_matrix/client/r0/publicRooms'],
  ['T', '/_matrix/client/r0/user_directory/search'],
  ['U', '/_matrix/client/r0/profile/{userId}/displayname'],
  ['V', '/_matrix/client/r0/profile/{userId}/avatar_url'],
  ['W', '/_matrix/client/r0/profile/{userId}'],
  ['X', '/_matrix/client/r0/voip/turnServer'],
  ['Y', '/_matrix/client/r0/rooms/{roomId}/typing/{userId}'],
  ['Z', '/_matrix/client/r0/rooms/{roomId}/receipt/{receiptType}/{eventId}'],
  ['a', '/_matrix/client/r0/rooms/{roomId}/read_markers'],
  ['b', '/_matrix/client/r0/presence/{userId}/status'],
  ['c', '/_matrix/client/r0/sendToDevice/{eventType}/{txnId}'],
  ['d', '/_matrix/client/r0/devices'],
  ['e', '/_matrix/client/r0/devices/{deviceId}'],
  ['f', '/_matrix/client/r0/delete_devices'],
  ['g', '/_matrix/client/r0/keys/upload'],
  ['h', '/_matrix/client/r0/keys/query'],
  ['i', '/_matrix/client/r0/keys/claim'],
  ['j', '/_matrix/client/r0/keys/changes'],
  ['k', '/_matrix/client/r0/pushers'],
  ['l', '/_matrix/client/r0/pushers/set'],
  ['m', '/_matrix/client/r0/notifications'],
  ['n', '/_matrix/client/r0/pushrules/'],
  ['o', '/_matrix/client/r0/search'],
  ['p', '/_matrix/client/r0/user/{userId}/rooms/{roomId}/tags'],
  ['q', '/_matrix/client/r0/user/{userId}/rooms/{roomId}/tags/{tag}'],
  ['r', '/_matrix/client/r0/user/{userId}/account_data/{type}'],
  ['s', '/_matrix/client/r0/user/{userId}/rooms/{roomId}/account_data/{type}'],
  ['t', '/_matrix/client/r0/rooms/{roomId}/context/{eventId}'],
  ['u', '/_matrix/client/r0/rooms/{roomId}/report/{eventId}'],
] as const).map((row) => Object.freeze(row)));

export type ClientVersion = 'r0' | 'v3';

export interface CoapToHttpOptions {
  /** Version segment written for versioned enums (default 'r0', as MSC3079 and its vectors). */
  clientVersion?: ClientVersion;
}

/** Versions accepted in the version slot on the way in. */
const VERSIONS_IN: ReadonlySet<string> = new Set(['r0', 'v3']);

type Seg =
  | { readonly kind: 'static'; readonly text: string }
  | { readonly kind: 'version' }
  | { readonly kind: 'param'; readonly name: string };

interface Template {
  readonly id: string;
  /** Segments after splitting on '/'; the first is always '' (leading slash). */
  readonly segs: readonly Seg[];
  readonly params: number;
}

const TEMPLATES: readonly Template[] = COAP_PATH_ENUMS_V1.map(([id, path]) => {
  const segs: Seg[] = path.split('/').map((text, i): Seg => {
    if (text.startsWith('{') && text.endsWith('}')) return { kind: 'param', name: text.slice(1, -1) };
    // "/_matrix/client/<version>/…": the third segment is the version slot.
    if (i === 3 && text === 'r0') return { kind: 'version' };
    return { kind: 'static', text };
  });
  return { id, segs, params: segs.filter((s) => s.kind === 'param').length };
});

const BY_ID: ReadonlyMap<string, Template> = new Map(TEMPLATES.map((t) => [t.id, t]));

/** True when `s` is a v1 path enum. */
export function isCoapPathEnumV1(s: string): boolean {
  return BY_ID.has(s);
}

function pathError(message: string, detail: Record<string, unknown>): never {
  throw new TrickleError('ERR_PATH_ENUM', 'codec', message, detail);
}

function wirePathError(message: string, detail: Record<string, unknown>): never {
  throw new WireError('ERR_PATH_ENUM', 'codec', message, detail);
}

function decodeSegment(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined; // malformed %-escape or invalid UTF-8
  }
}

/** encodeURIComponent, with '@', ':' and '$' left readable ('!' already is). */
function encodeHttpSegment(s: string): string {
  let enc: string;
  try {
    enc = encodeURIComponent(s);
  } catch {
    return wirePathError('path segment has no UTF-8 encoding (lone surrogate)', {});
  }
  return enc.replace(/%(40|3A|24)/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

function checkHttpPath(httpPath: string): string {
  if (typeof httpPath !== 'string') throw new TypeError('path must be a string');
  if (httpPath.includes('?') || httpPath.includes('#')) {
    pathError("HTTP path must be the path component only (no '?' query or '#' fragment)", { path: httpPath.slice(0, 200) });
  }
  return httpPath.startsWith('/') ? httpPath : `/${httpPath}`;
}

/** [template, decoded params] for the enum that matches `path`, if any. */
function matchHttpPath(path: string): { t: Template; params: string[] } | undefined {
  const parts = path.split('/');
  outer: for (const t of TEMPLATES) {
    if (t.segs.length !== parts.length) continue;
    const params: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      const seg = t.segs[i] as Seg;
      const part = parts[i] as string;
      if (seg.kind === 'static') {
        if (seg.text !== part) continue outer;
      } else if (seg.kind === 'version') {
        if (!VERSIONS_IN.has(part)) continue outer;
      } else {
        const v = decodeSegment(part);
        if (v === undefined) continue outer;
        params.push(v);
      }
    }
    return { t, params };
  }
  return undefined;
}

/** `first` is the first segment as the peer will see it (raw in the string form, decoded in the structured form). */
function refuseEnumCollision(first: string | undefined, path: string): void {
  if (first !== undefined && BY_ID.has(first)) {
    pathError(`path ${path.slice(0, 200)} matches no enum but starts with enum segment '${first}'; it cannot be carried`, { path: path.slice(0, 200) });
  }
}

function fill(t: Template, params: readonly string[], version: ClientVersion): string {
  if (params.length < t.params) {
    wirePathError(`path enum '${t.id}' needs ${t.params} parameters, got ${params.length}`, { enum: t.id });
  }
  let p = 0;
  return t.segs
    .map((seg) => {
      if (seg.kind === 'static') return seg.text;
      if (seg.kind === 'version') return version;
      return encodeHttpSegment(params[p++] as string);
    })
    .join('/');
}

function resolveVersion(opts: CoapToHttpOptions): ClientVersion {
  const v = opts.clientVersion ?? 'r0';
  if (v !== 'r0' && v !== 'v3') {
    throw new ConfigError(`clientVersion must be 'r0' or 'v3', got ${String(v)}`, { key: 'clientVersion', allowed: ['r0', 'v3'] });
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Structured form: the values of the CoAP Uri-Path options (RFC 7252 §5.10.1), in order.

/**
 * HTTP path (raw, percent-encoded, path component only) → Uri-Path option values:
 * `[enum, ...decodedParams]` for an enum path, otherwise the RFC 7252 §6.4 segments (decoded).
 * Throws TrickleError ERR_PATH_ENUM for a query/fragment, malformed percent-encoding, or an
 * unmapped path whose first segment collides with an enum.
 */
export function httpPathToUriPath(httpPath: string): string[] {
  const path = checkHttpPath(httpPath);
  const m = matchHttpPath(path);
  if (m) return [m.t.id, ...m.params];
  if (path === '/') return [];
  const segments = path
    .split('/')
    .slice(1)
    .map((s) => decodeSegment(s) ?? pathError('malformed percent-encoding in path', { path: path.slice(0, 200) }));
  refuseEnumCollision(segments[0], path);
  return segments;
}

/**
 * Uri-Path option values → HTTP path. An enum first segment expands to its template (extra
 * segments are dropped, as in lb; missing parameters are a WireError ERR_PATH_ENUM); anything
 * else is re-encoded segment by segment.
 */
export function uriPathToHttpPath(segments: readonly string[], opts: CoapToHttpOptions = {}): string {
  const version = resolveVersion(opts);
  const first = segments[0];
  if (first === undefined) return '/';
  const t = BY_ID.get(first);
  if (t) return fill(t, segments.slice(1), version);
  return `/${segments.map(encodeHttpSegment).join('/')}`;
}

// ---------------------------------------------------------------------------------------------
// String form, as written in MSC3079 and lb (`/9/!room:hs/m.room.message/txn`).

/** `%` → `%25`, `/` → `%2F`: the only escapes the string form needs to split back exactly. */
function escapeCoapSegment(s: string): string {
  return s.replace(/[%/]/g, (c) => (c === '%' ? '%25' : '%2F'));
}

function unescapeCoapSegment(s: string): string {
  return s.replace(/%(25|2F)/gi, (_m, hex: string) => (hex === '25' ? '%' : '/'));
}

/**
 * HTTP path → MSC3079 CoAP path string, e.g. `/_matrix/client/v3/sync` → `/7`. Paths that match
 * no enum are returned unchanged. Throws like httpPathToUriPath.
 */
export function httpPathToCoapPath(httpPath: string): string {
  const path = checkHttpPath(httpPath);
  const m = matchHttpPath(path);
  if (!m) {
    refuseEnumCollision(path.split('/')[1], path);
    return httpPath;
  }
  return `/${[m.t.id, ...m.params.map(escapeCoapSegment)].join('/')}`;
}

/**
 * MSC3079 CoAP path string → HTTP path, e.g. `/7` → `/_matrix/client/r0/sync`. Unknown enums are
 * returned unchanged; extra segments are dropped; missing parameters are a WireError ERR_PATH_ENUM.
 */
export function coapPathToHttpPath(coapPath: string, opts: CoapToHttpOptions = {}): string {
  const version = resolveVersion(opts);
  if (typeof coapPath !== 'string') throw new TypeError('path must be a string');
  const path = coapPath.startsWith('/') ? coapPath : `/${coapPath}`;
  const parts = path.split('/').slice(1);
  const t = BY_ID.get(parts[0] ?? '');
  if (!t) return coapPath;
  return fill(t, parts.slice(1).map(unescapeCoapSegment), version);
}
