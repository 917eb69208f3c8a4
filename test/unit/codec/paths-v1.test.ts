import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  COAP_PATH_ENUMS_V1,
  coapPathToHttpPath,
  httpPathToCoapPath,
  httpPathToUriPath,
  isCoapPathEnumV1,
  uriPathToHttpPath,
} from '../../../src/codec/paths-v1.ts';
import { ConfigError, TrickleError, WireError } from '../../../src/errors.ts';
import { loadMsc3079Vectors } from './vectors.ts';

const shared = loadMsc3079Vectors();

function errorOf(fn: () => unknown): TrickleError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TrickleError) return e;
    throw e;
  }
  throw new Error('expected a TrickleError');
}

describe('Appendix B table (v1)', () => {
  it('has the enums 0-9, A-Z, a-u in order, each once', () => {
    expect(COAP_PATH_ENUMS_V1.map(([id]) => id).join('')).toBe('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu');
    expect(new Set(COAP_PATH_ENUMS_V1.map(([, t]) => t)).size).toBe(COAP_PATH_ENUMS_V1.length);
  });

  it('is frozen', () => {
    expect(Object.isFrozen(COAP_PATH_ENUMS_V1)).toBe(true);
    expect(Object.isFrozen(COAP_PATH_ENUMS_V1[0])).toBe(true);
  });

  it('spot checks against MSC3079 Appendix B', () => {
    const t = new Map(COAP_PATH_ENUMS_V1);
    expect(t.get('0')).toBe('/_matrix/client/versions');
    expect(t.get('7')).toBe('/_matrix/client/r0/sync');
    expect(t.get('9')).toBe('/_matrix/client/r0/rooms/{roomId}/send/{eventType}/{txnId}');
    expect(t.get('L')).toBe('/_matrix/client/r0/join/{roomIdOrAlias}');
    expect(t.get('n')).toBe('/_matrix/client/r0/pushrules/');
    expect(t.get('r')).toBe('/_matrix/client/r0/user/{userId}/account_data/{type}');
    expect(t.get('u')).toBe('/_matrix/client/r0/rooms/{roomId}/report/{eventId}');
    for (const [id, tpl] of COAP_PATH_ENUMS_V1) {
      if (id !== '0') expect(tpl.startsWith('/_matrix/client/r0/'), id).toBe(true);
    }
  });

  it('every template maps to its own enum and back (r0 and v3), never to another one', () => {
    for (const [id, tpl] of COAP_PATH_ENUMS_V1) {
      let i = 0;
      const http = tpl.replace(/\{[^}]+\}/g, () => `p${i++}`);
      const coap = `/${[id, ...Array.from({ length: i }, (_, k) => `p${k}`)].join('/')}`;
      expect(httpPathToCoapPath(http), http).toBe(coap);
      expect(coapPathToHttpPath(coap), coap).toBe(http);
      const v3 = http.replace('/_matrix/client/r0/', '/_matrix/client/v3/');
      expect(httpPathToCoapPath(v3), v3).toBe(coap);
      expect(coapPathToHttpPath(coap, { clientVersion: 'v3' }), coap).toBe(v3);
      expect(httpPathToUriPath(v3)).toEqual(coap.slice(1).split('/'));
      expect(uriPathToHttpPath(coap.slice(1).split('/'), { clientVersion: 'v3' })).toBe(v3);
      expect(isCoapPathEnumV1(id)).toBe(true);
    }
  });
});

describe('MSC3079 shared path vectors (cbor-v1.json)', () => {
  it('keeps its provenance', () => {
    expect(shared.source).toMatch(/MSC3079/);
    expect(shared.paths.length).toBeGreaterThan(0);
  });

  for (const v of shared.paths) {
    const label = `${v.coap} ⇄ ${v.http}${v.note ? ` (${v.note})` : ''}`;
    it(`CoAP → HTTP: ${label}`, () => {
      expect(coapPathToHttpPath(v.coap)).toBe(v.http);
      expect(coapPathToHttpPath(v.coap, { clientVersion: 'r0' })).toBe(v.http);
    });
    if (!v.coap_to_http_only) {
      it(`HTTP → CoAP: ${label}`, () => {
        expect(httpPathToCoapPath(v.http)).toBe(v.coap);
        // The structured form agrees with the string form on these (no % or / in parameters).
        expect(`/${httpPathToUriPath(v.http).join('/')}`).toBe(v.coap);
        expect(uriPathToHttpPath(httpPathToUriPath(v.http))).toBe(v.http);
      });
    }
  }
});

describe('HTTP → CoAP', () => {
  it('treats /v3/ exactly like /r0/', () => {
    expect(httpPathToCoapPath('/_matrix/client/v3/sync')).toBe('/7');
    expect(httpPathToCoapPath('/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t1')).toBe('/9/!r:hs/m.room.message/t1');
  });

  it('decodes parameters once: the real client path round-trips to the same room, event type and txn id', () => {
    const http = '/_matrix/client/v3/rooms/!abc%3Alocalhost/send/m.room.message/m123.4';
    expect(httpPathToUriPath(http)).toEqual(['9', '!abc:localhost', 'm.room.message', 'm123.4']);
    expect(httpPathToCoapPath(http)).toBe('/9/!abc:localhost/m.room.message/m123.4');
    const out = coapPathToHttpPath(httpPathToCoapPath(http), { clientVersion: 'v3' });
    expect(out).toBe('/_matrix/client/v3/rooms/!abc:localhost/send/m.room.message/m123.4');
    expect(uriPathToHttpPath(httpPathToUriPath(http), { clientVersion: 'v3' })).toBe(out);
    // The canonical form is a fixed point, byte for byte.
    expect(coapPathToHttpPath(httpPathToCoapPath(out), { clientVersion: 'v3' })).toBe(out);
  });

  it('carries spaces, slashes, percent signs and # inside a parameter', () => {
    const http = '/_matrix/client/v3/rooms/!r%3Ahs/state/m.room.name/a%2Fb%20c%25d%23e%3Ff';
    expect(httpPathToUriPath(http)).toEqual(['8', '!r:hs', 'm.room.name', 'a/b c%d#e?f']);
    expect(httpPathToCoapPath(http)).toBe('/8/!r:hs/m.room.name/a%2Fb c%25d#e?f');
    const want = '/_matrix/client/v3/rooms/!r:hs/state/m.room.name/a%2Fb%20c%25d%23e%3Ff';
    expect(coapPathToHttpPath(httpPathToCoapPath(http), { clientVersion: 'v3' })).toBe(want);
    expect(uriPathToHttpPath(httpPathToUriPath(http), { clientVersion: 'v3' })).toBe(want);
  });

  it('keeps the empty state key (trailing slash) and refuses no segment count it cannot restore', () => {
    const http = '/_matrix/client/v3/rooms/!r:hs/state/m.room.name/';
    expect(httpPathToCoapPath(http)).toBe('/8/!r:hs/m.room.name/');
    expect(httpPathToUriPath(http)).toEqual(['8', '!r:hs', 'm.room.name', '']);
    expect(coapPathToHttpPath('/8/!r:hs/m.room.name/', { clientVersion: 'v3' })).toBe(http);
    // Without the trailing slash it is a different endpoint shape: not an enum, passes through.
    const noKey = '/_matrix/client/v3/rooms/!r:hs/state/m.room.name';
    expect(httpPathToCoapPath(noKey)).toBe(noKey);
  });

  it('matches pushrules/ exactly and nothing looser', () => {
    expect(httpPathToCoapPath('/_matrix/client/v3/pushrules/')).toBe('/n');
    expect(coapPathToHttpPath('/n', { clientVersion: 'v3' })).toBe('/_matrix/client/v3/pushrules/');
    for (const p of ['/_matrix/client/v3/pushrules', '/_matrix/client/v3/pushrules/global/', '/_matrix/client/r0/sync/']) {
      expect(httpPathToCoapPath(p)).toBe(p);
    }
  });

  it('passes other versions and trees through unchanged, in both forms', () => {
    const through = [
      '/_matrix/client/v1/rooms/!r:hs/hierarchy',
      '/_matrix/client/v1/rooms/!r:hs/messages',
      '/_matrix/client/unstable/org.matrix.msc2716/rooms/!r:hs/batch_send',
      '/_matrix/client/api/v1/sync',
      '/_matrix/client/v1/media/download/hs/abc',
      '/_matrix/media/r0/download/hs/abc',
      '/_matrix/media/v3/upload',
      '/_matrix/client/v2_alpha/sync',
      '/_matrix/client/r0/rooms/!r:hs/relations/$e',
      '/.well-known/matrix/client',
      '/',
      '',
      '/AAA',
    ];
    for (const p of through) {
      expect(httpPathToCoapPath(p), p).toBe(p);
      expect(coapPathToHttpPath(p), p).toBe(p);
      expect(uriPathToHttpPath(httpPathToUriPath(p)), p).toBe(p === '' ? '/' : p);
    }
  });

  it('versions has no version segment and never gains one', () => {
    expect(httpPathToCoapPath('/_matrix/client/versions')).toBe('/0');
    expect(coapPathToHttpPath('/0', { clientVersion: 'v3' })).toBe('/_matrix/client/versions');
    expect(httpPathToCoapPath('/_matrix/client/v3/versions')).toBe('/_matrix/client/v3/versions');
  });

  it('refuses query strings and fragments', () => {
    for (const p of ['/_matrix/client/v3/sync?since=s1', '/_matrix/client/v3/devices/A?x', '/_matrix/client/v3/join/#a:hs']) {
      expect(errorOf(() => httpPathToCoapPath(p)).code).toBe('ERR_PATH_ENUM');
      expect(errorOf(() => httpPathToUriPath(p)).code).toBe('ERR_PATH_ENUM');
    }
  });

  it('refuses an unmapped path that would read as an enum on the other side', () => {
    for (const p of ['/7/x', '/9', '/L/%23a:hs']) {
      expect(errorOf(() => httpPathToCoapPath(p)).code).toBe('ERR_PATH_ENUM');
      expect(errorOf(() => httpPathToUriPath(p)).code).toBe('ERR_PATH_ENUM');
    }
    // %37 is "7" once decoded: only the structured form decodes it.
    expect(httpPathToCoapPath('/%37/x')).toBe('/%37/x');
    expect(errorOf(() => httpPathToUriPath('/%37/x')).code).toBe('ERR_PATH_ENUM');
  });

  it('does not map a parameter with malformed percent-encoding', () => {
    const p = '/_matrix/client/v3/rooms/!r%ZZ/join';
    expect(httpPathToCoapPath(p)).toBe(p);
    expect(errorOf(() => httpPathToUriPath(p)).code).toBe('ERR_PATH_ENUM');
    expect(errorOf(() => httpPathToUriPath('/_matrix/client/v3/rooms/%ED%A0%80/join')).code).toBe('ERR_PATH_ENUM');
  });
});

describe('CoAP → HTTP', () => {
  it('drops extra segments and refuses missing parameters', () => {
    expect(coapPathToHttpPath('/e/deviceid/andmore')).toBe('/_matrix/client/r0/devices/deviceid');
    expect(uriPathToHttpPath(['7', 'extra'])).toBe('/_matrix/client/r0/sync');
    for (const p of ['/9', '/9/!r:hs', '/9/!r:hs/m.room.message']) {
      const e = errorOf(() => coapPathToHttpPath(p));
      expect(e).toBeInstanceOf(WireError);
      expect(e.code).toBe('ERR_PATH_ENUM');
    }
    expect(errorOf(() => uriPathToHttpPath(['q', '@u:hs'])).code).toBe('ERR_PATH_ENUM');
  });

  it('accepts a path without the leading slash, like lb', () => {
    expect(coapPathToHttpPath('7')).toBe('/_matrix/client/r0/sync');
    expect(coapPathToHttpPath('AAA')).toBe('AAA');
  });

  it('undoes only the %25 and %2F escapes of the string form', () => {
    expect(coapPathToHttpPath('/L/%23a:hs')).toBe('/_matrix/client/r0/join/%2523a:hs');
    expect(coapPathToHttpPath('/L/a%2fb%25%252F')).toBe('/_matrix/client/r0/join/a%2Fb%25%252F');
  });

  it('the empty Uri-Path is the root', () => {
    expect(uriPathToHttpPath([])).toBe('/');
    expect(httpPathToUriPath('/')).toEqual([]);
  });

  it('refuses an unknown clientVersion', () => {
    expect(() => coapPathToHttpPath('/7', { clientVersion: 'v1' as 'v3' })).toThrow(ConfigError);
    expect(() => uriPathToHttpPath(['7'], { clientVersion: 'r1' as 'r0' })).toThrow(ConfigError);
  });

  it('refuses a segment with no UTF-8 form', () => {
    expect(errorOf(() => uriPathToHttpPath(['L', '\ud800'])).code).toBe('ERR_PATH_ENUM');
  });
});

describe('properties', () => {
  const param = fc.string({ unit: 'grapheme', maxLength: 16 });
  const template = fc.constantFrom(...COAP_PATH_ENUMS_V1);
  const version = fc.constantFrom('r0' as const, 'v3' as const);

  /** Build an HTTP path the way matrix-js-sdk does: encodeURIComponent on every parameter. */
  function build(tpl: string, params: readonly string[], v: string): string {
    let i = 0;
    return tpl.replace('/_matrix/client/r0/', `/_matrix/client/${v}/`).replace(/\{[^}]+\}/g, () => encodeURIComponent(params[i++] as string));
  }

  it('any parameters survive HTTP → CoAP → HTTP exactly (structured and string forms)', () => {
    fc.assert(
      fc.property(template, fc.array(param, { minLength: 5, maxLength: 5 }), version, version, ([id, tpl], params, vin, vout) => {
        const n = (tpl.match(/\{/g) ?? []).length;
        const used = params.slice(0, n);
        const http = build(tpl, used, vin);
        const uri = httpPathToUriPath(http);
        expect(uri).toEqual([id, ...used]);
        const out = uriPathToHttpPath(uri, { clientVersion: vout });
        expect(httpPathToUriPath(out)).toEqual(uri);
        expect(coapPathToHttpPath(httpPathToCoapPath(http), { clientVersion: vout })).toBe(out);
        // Our output is canonical: a second trip changes nothing.
        expect(uriPathToHttpPath(httpPathToUriPath(out), { clientVersion: vout })).toBe(out);
        expect(coapPathToHttpPath(httpPathToCoapPath(out), { clientVersion: vout })).toBe(out);
        // And it is what the homeserver would decode to the same parameters.
        const tail = out.split('/').slice(id === '0' ? 3 : 4).map(decodeURIComponent);
        for (const p of used) expect(tail).toContain(p);
      }),
      { numRuns: 1000 },
    );
  });

  it('unmapped /_matrix paths pass through: verbatim in the string form, segment-exact in the structured form', () => {
    const segment = fc.string({ unit: 'grapheme', maxLength: 10 });
    fc.assert(
      fc.property(fc.constantFrom('client/v1', 'client/unstable', 'media/v3', 'federation/v1'), fc.array(segment, { maxLength: 5 }), (prefix, segs) => {
        const http = `/_matrix/${prefix}/${segs.map(encodeURIComponent).join('/')}`;
        expect(httpPathToCoapPath(http)).toBe(http);
        expect(coapPathToHttpPath(http)).toBe(http);
        const uri = httpPathToUriPath(http);
        expect(uri).toEqual(['_matrix', ...prefix.split('/'), ...(segs.length ? segs : [''])]);
        expect(httpPathToUriPath(uriPathToHttpPath(uri))).toEqual(uri);
      }),
      { numRuns: 500 },
    );
  });

  it('arbitrary strings never throw anything but a codec TrickleError', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        for (const f of [() => httpPathToCoapPath(s), () => httpPathToUriPath(s), () => coapPathToHttpPath(s), () => uriPathToHttpPath(s.split('/'))]) {
          try {
            f();
          } catch (e) {
            if (!(e instanceof TrickleError) || e.code !== 'ERR_PATH_ENUM') throw e;
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});
