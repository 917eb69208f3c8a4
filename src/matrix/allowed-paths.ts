/**
 * What a gateway performs: the Matrix client-server API, nothing else. A field kit (or anyone who
 * took one) must not reach the homeserver's admin API (/_synapse/admin), federation, or any
 * other path the gateway's network can see, and no path may climb out of the prefix it starts
 * with. Checked on the host before a request is encoded (nothing crosses the air) and on the
 * gateway after it is decoded (a kit running other code is not trusted either).
 *
 *  - ALLOWED: /_matrix/client/… (every CS-API endpoint, versions, unstable and MSC prefixes
 *    included) and /_matrix/media/… (legacy media; authenticated media is under /client/v1).
 *  - REFUSED: any segment that, percent-decoded, is "." or "..", or contains one between "/"
 *    or "\" (a server or proxy that decodes %2F before routing would climb out); a path that
 *    is not absolute or carries a query or fragment; malformed percent-encoding.
 *
 * RFC 3986 §5.2.4 is why: a URL library removes dot segments before the request leaves (WHATWG
 * URL does, and so does fetch), so "/_matrix/client/v3/../../../_synapse/admin/v1/users"
 * becomes "/_synapse/admin/v1/users" on the wire.
 */
import { TrickleError } from '../errors.ts';

/** The first two (decoded) segments of every path a gateway performs. */
export const ALLOWED_PATH_PREFIXES: readonly (readonly [string, string])[] = Object.freeze([
  ['_matrix', 'client'],
  ['_matrix', 'media'],
]);

function refuse(message: string, path: string, reason: 'prefix' | 'dot-segment' | 'malformed'): never {
  throw new TrickleError('ERR_MATRIX_PATH', 'matrix', message, { path: path.slice(0, 200), reason });
}

/** Throws ERR_MATRIX_PATH (detail.reason: prefix | dot-segment | malformed) unless `path` may be performed. */
export function checkClientServerPath(path: string): void {
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('?') || path.includes('#')) {
    refuse('a request path must be absolute and carry no query or fragment', String(path), 'malformed');
  }
  const decoded = path.split('/').slice(1).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return refuse(`malformed percent-encoding in ${JSON.stringify(path.slice(0, 200))}`, path, 'malformed');
    }
  });
  for (const seg of decoded) {
    if (seg.split(/[/\\]/).some((p) => p === '.' || p === '..')) {
      refuse(`dot segments ("." or "..", also percent-encoded) are refused: ${JSON.stringify(path.slice(0, 200))} would leave the Matrix client-server API`, path, 'dot-segment');
    }
  }
  if (!ALLOWED_PATH_PREFIXES.some(([a, b]) => decoded[0] === a && decoded[1] === b)) {
    refuse(`only the Matrix client-server API (/_matrix/client/…, /_matrix/media/…) is carried; ${JSON.stringify(path.slice(0, 200))} is not`, path, 'prefix');
  }
}
