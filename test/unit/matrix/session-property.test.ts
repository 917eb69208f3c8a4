import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { sequenceToken } from '../../../src/coap/compact.ts';
import { Opt, makeCode } from '../../../src/coap/numbers.ts';
import { getOption, getOptions, type CoapOption } from '../../../src/coap/message.ts';
import { decodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { COAP_PATH_ENUMS_V1 } from '../../../src/codec/paths-v1.ts';
import { TrickleError, isTrickleError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { TRICKLE_OPT_SESSION_ERROR } from '../../../src/matrix/session-wire.ts';
import { GatewaySession, HostSession } from '../../../src/matrix/session.ts';
import { Link, eventId, json, normalise, ok, parse, req } from './support.ts';

// ----------------------------------------------------------------------------- generators

const ROOMS = ['!aaa:hs', '!bbbbbbbbbbbbbbbbbb:example.org', '!c:x'];
const USERS = ['@alice:hs', '@bob:example.org', '@c:x'];
const EVENTS = [1, 2, 3, 4].map(eventId);
const TOKENS_SINCE = ['s1_2_3', 's9', 'p1', 'tok~x', '~7'];
const POOL = [...ROOMS, ...USERS, ...EVENTS, ...TOKENS_SINCE, '#alias:hs', 'm.room.message', ''];

/** Strings that stress the escapes and encodings: "~" forms, "/", "%", "+", "&", "=", unicode, empty. */
const nasty = fc.oneof(
  fc.constantFrom('~', '~0', '~12', '~~', '~~3', 'a/b', '50%', 'a+b', 'a&b=c', ' ', 'é☃😀', '$notanevent', '!', '@'),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
);
const str = fc.oneof(fc.constantFrom(...POOL), nasty);

const templates = COAP_PATH_ENUMS_V1.map(([, t]) => t);
const pathArb = fc.oneof(
  fc.record({ t: fc.constantFrom(...templates), v: fc.constantFrom('r0', 'v3'), params: fc.array(str, { minLength: 4, maxLength: 4 }) }).map(({ t, v, params }) => {
    let i = 0;
    return t.replace('/r0/', `/${v}/`).replace(/\{[^}]+\}/g, () => encodeURIComponent(params[i++]!));
  }),
  fc.array(str, { minLength: 1, maxLength: 3 }).map((p) => `/_matrix/client/v1/rooms/${p.map(encodeURIComponent).join('/')}/relations`),
);
const queryKey = fc.oneof(fc.constantFrom('since', 'from', 'to', 'filter', 'timeout', 'limit', 'dir', 'user_id', 'via'), fc.string({ maxLength: 6 }).filter((k) => !k.includes('=') && k !== ''));
const queryArb = fc.array(fc.tuple(queryKey, fc.option(str, { nil: undefined, freq: 8 })), { maxLength: 4 })
  .map((pairs) => pairs.map(([k, v]) => (v === undefined ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&'));

/** Matrix-shaped JSON mixed with arbitrary JSON. */
const matrixJson: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' },
    str, fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.constantFrom('next_batch', 'prev_batch', 'event_id', 'sender', 'room_id', 'body', 'msgtype', 'content', 'filter_id', 'start', 'end'), fc.constantFrom(...ROOMS, ...USERS, ...EVENTS), fc.string({ maxLength: 5 })), tie('value'), { maxKeys: 4 }),
  ),
})).value;
const jsonBody = fc.oneof(matrixJson, fc.jsonValue({ maxDepth: 3 }), fc.record({ msgtype: fc.constant('m.text'), body: fc.string({ unit: 'grapheme', maxLength: 20 }) }));

const bodyArb = fc.oneof(
  fc.constant({}),
  jsonBody.map((v) => ({ body: v })),
  fc.uint8Array({ minLength: 1, maxLength: 20 }).map((raw) => ({ raw, contentType: 'application/octet-stream' })),
  fc.uint8Array({ minLength: 1, maxLength: 20 }).map((raw) => ({ raw })),
);

const requestArb = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE'),
  path: pathArb,
  query: queryArb,
  token: fc.option(fc.constantFrom('tokA', 'tokB'), { nil: undefined, freq: 2 }),
  body: bodyArb,
}).map((r): HttpRequestLike => req(r.method, r.path, { query: r.query, ...(r.token ? { token: r.token } : {}), ...r.body } as Parameters<typeof req>[2]));

const responseArb = fc.record({
  status: fc.constantFrom(200, 200, 200, 201, 204, 400, 401, 403, 404, 409, 413, 429, 500, 502),
  body: fc.oneof(
    jsonBody.map((v) => ({ contentType: 'application/json', body: json(v) })),
    fc.constantFrom(...EVENTS).map((e) => ({ contentType: 'application/json', body: json({ event_id: e }) })),
    fc.constant({ body: new Uint8Array(0) }),
    fc.uint8Array({ minLength: 1, maxLength: 16 }).map((b) => ({ contentType: 'image/png', body: b })),
  ),
}).map((r): HttpResponseLike => ({ status: r.status, ...r.body }));

function sameResponse(a: HttpResponseLike, b: HttpResponseLike): void {
  expect(b.status).toBe(a.status);
  if (a.body.length === 0) { expect(b.body.length).toBe(0); return; }
  let av: unknown; let isJson = false;
  try { av = parse(a.body); isJson = a.contentType === 'application/json'; } catch { /* octets */ }
  if (isJson && b.contentType === 'application/json') expect(parse(b.body)).toEqual(av);
  else { expect([...b.body]).toEqual([...a.body]); expect(b.contentType).toBe(a.contentType); }
}

// ----------------------------------------------------------------------------- properties

describe('round trip (fast-check)', () => {
  it('every request and response maps HTTP → CoAP → HTTP to an equal one, across a session that accumulates handles', () => {
    const link = new Link('p1');
    let current: HttpResponseLike = ok({});
    link.homeserver = () => current;
    let refs = 0;
    let defined = 0;
    fc.assert(fc.property(requestArb, responseArb, fc.boolean(), (r, res, literalsOnly) => {
      let enc;
      try { enc = link.host.encodeRequest(r, { literalsOnly }); } catch (e) {
        // Only paths the stateless mapping also refuses (unmatched path whose first segment is an
        // enum), and paths with dot segments, which are never carried (matrix/allowed-paths.ts).
        const dots = r.path.split('/').some((seg) => { try { return decodeURIComponent(seg).split(/[/\\]/).some((x) => x === '.' || x === '..'); } catch { return false; } });
        expect(isTrickleError(e, 'ERR_PATH_ENUM') || (dots && isTrickleError(e, 'ERR_MATRIX_PATH'))).toBe(true);
        return;
      }
      const seq = ++link.seq;
      refs += [...getOptions(enc.options, Opt.URI_PATH), ...getOptions(enc.options, Opt.URI_QUERY)].filter((o) => /(^|=)~\d+$/.test(utf8.decode(o))).length;
      const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(seq) });
      expect(normalise(at, { dropTxn: true })).toEqual(normalise(r, { dropTxn: true }));
      if (enc.txnKey) expect(at.path.endsWith(`/tp1.${seq}`)).toBe(true);
      if (r.body.length > 0 && at.contentType === 'application/json' && r.contentType !== 'application/json') {
        // JSON without a Content-Type arrives as application/json: documented.
        expect(r.contentType).toBeUndefined();
      }
      current = res;
      const wire = link.gateway.encodeResponse(res, at);
      defined += wire.definesHandles;
      const back = link.host.decodeResponse(wire, enc.sent);
      expect(back.kind).toBe('response');
      if (back.kind === 'response') sameResponse(res, back.response);
    }), { numRuns: 1500 });
    // The session did define and use handles.
    expect(link.host.status().handles).toBeGreaterThan(10);
    expect(defined).toBeGreaterThan(100);
    expect(refs).toBeGreaterThan(100);
  });

  it('damaged requests and responses give a TrickleError or a value, never another exception', () => {
    const link = new Link('p2');
    const g = link.gateway;
    const h = link.host;
    fc.assert(fc.property(requestArb, responseArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }), (r, res, flips) => {
      let enc;
      try { enc = h.encodeRequest(r); } catch { return; }
      const flip = (p: Uint8Array): Uint8Array => {
        const out = p.slice();
        for (const [i, x] of flips) if (out.length > 0) out[i % out.length]! ^= x;
        return out;
      };
      const flipOpts = (o: readonly CoapOption[]): CoapOption[] => o.map((x, i) => (i === flips[0]![0] % o.length ? { ...x, value: flip(x.value) } : x));
      for (const m of [{ ...enc, payload: flip(enc.payload) }, { ...enc, options: flipOpts(enc.options) }]) {
        try { g.decodeRequest({ ...m, token: sequenceToken(++link.seq) }); } catch (e) { expect(e).toBeInstanceOf(TrickleError); }
      }
      const w = g.encodeResponse(res);
      for (const m of [{ ...w, payload: flip(w.payload) }, { ...w, options: w.options.length ? flipOpts(w.options) : w.options }]) {
        try { h.decodeResponse(m, enc.sent); } catch (e) { expect(e).toBeInstanceOf(TrickleError); }
      }
    }), { numRuns: 1000 });
  });
});

// ----------------------------------------------------------------------------- two sessions, lossy link

/** xorshift32: a deterministic PRNG for the simulation. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

interface SimStats { exchanges: number; lostRequests: number; lostResponses: number; handleUses: number; gatewayRefs: number; sessionErrors: number }

function simulate(seed: number, steps: number, lossRequest: number, lossResponse: number): SimStats {
  const rand = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
  let batch = 0;
  const rooms = ROOMS;
  const events: string[] = [];
  const host = new HostSession();
  const gateway = new GatewaySession({ sessionId: `s${seed.toString(36)}` });
  const stats: SimStats = { exchanges: 0, lostRequests: 0, lostResponses: 0, handleUses: 0, gatewayRefs: 0, sessionErrors: 0 };
  let since: string | undefined;
  /** Handle numbers the host has used in requests the gateway decoded. */
  const usedByHost = new Set<number>();
  let seq = 0;

  const homeserver = (r: HttpRequestLike): HttpResponseLike => {
    if (r.path.endsWith('/sync')) {
      batch++;
      const join: Record<string, unknown> = {};
      for (const room of rooms) {
        if (rand() < 0.5) continue;
        const id = eventId(batch * 10 + rooms.indexOf(room));
        events.push(id);
        join[room] = {
          timeline: { events: [{ type: 'm.room.message', sender: pick(USERS), event_id: id, origin_server_ts: 1700000000000 + batch, content: { msgtype: 'm.text', body: `m${batch}` } }], prev_batch: `p${batch}` },
          ephemeral: { events: [{ type: 'm.receipt', content: { [pick(events)]: { 'm.read': { [pick(USERS)]: { ts: batch } } } } }] },
        };
      }
      return ok({ next_batch: `s${batch}_1_${seed}`, rooms: { join } });
    }
    if (r.path.includes('/send/')) return ok({ event_id: eventId(100000 + batch) });
    if (r.path.endsWith('/joined_members')) return ok({ joined: Object.fromEntries(USERS.map((u) => [u, { display_name: u.slice(1, 4) }])) });
    if (r.path.endsWith('/joined_rooms')) return ok({ joined_rooms: rooms });
    return ok({});
  };

  const requests = (): HttpRequestLike => {
    const k = rand();
    const token = 'tokenA';
    if (k < 0.35) return req('GET', '/_matrix/client/v3/sync', { token, query: since ? `since=${encodeURIComponent(since)}&timeout=30000` : 'timeout=0' });
    if (k < 0.55) return req('PUT', `/_matrix/client/v3/rooms/${pick(rooms)}/send/m.room.message/m${seq}`, { token, body: { msgtype: 'm.text', body: 'Hello World' } });
    if (k < 0.7 && events.length > 0) return req('POST', `/_matrix/client/v3/rooms/${pick(rooms)}/receipt/m.read/${pick(events)}`, { token, body: {} });
    if (k < 0.8) return req('GET', `/_matrix/client/v3/rooms/${pick(rooms)}/joined_members`, { token });
    if (k < 0.9) return req('POST', `/_matrix/client/v3/rooms/${pick(rooms)}/invite`, { token, body: { user_id: pick(USERS) } });
    return req('GET', '/_matrix/client/v3/joined_rooms', { token });
  };

  for (let i = 0; i < steps; i++) {
    const r = requests();
    let literalsOnly = false;
    for (let attempt = 0; attempt < 3; attempt++) {
      const enc = host.encodeRequest(r, { literalsOnly });
      stats.exchanges++;
      const token = sequenceToken(++seq);
      if (rand() < lossRequest) { stats.lostRequests++; host.requestFailed(enc.sent); break; }
      let res;
      try {
        const at = gateway.decodeRequest({ ...enc, token });
        // What the host used, as the gateway resolved it.
        for (const v of [...getOptions(enc.options, Opt.URI_PATH).slice(1), ...getOptions(enc.options, Opt.URI_QUERY).map((q) => q.slice(q.indexOf(0x3d) + 1))]) {
          const m = /^~(\d+)$/.exec(utf8.decode(v));
          if (m) { usedByHost.add(Number(m[1])); stats.handleUses++; }
        }
        if (getOption(enc.options, Opt.CONTENT_FORMAT)?.[0] === 60) {
          decodeTrickleCbor(enc.payload, { resolveHandle: (n) => { usedByHost.add(n); stats.handleUses++; return 'x'; } });
        }
        expect(normalise(at, { dropTxn: true })).toEqual(normalise(r, { dropTxn: true }));
        res = gateway.encodeResponse(homeserver(at), at);
        // Every handle reference the gateway put in the response belongs to a confirmed group:
        // a group with at least one handle the host has used.
        if (res.payload.length > 0 && getOption(res.options, Opt.CONTENT_FORMAT)?.[0] === 60) {
          const st = gateway.exportState();
          const baseOf = new Map(st.handles.map(([h, , b]) => [h, b]));
          const groupOf = (n: number): number => baseOf.get(n)!;
          decodeTrickleCbor(res.payload, { resolveHandle: (n) => {
            stats.gatewayRefs++;
            const b = groupOf(n);
            const g = st.groups.find(([base]) => base === b)!;
            const used = [...usedByHost].some((u) => u >= b && u < b + g[1]);
            expect(used, `gateway used handle ${n} of an unconfirmed group`).toBe(true);
            return 'x';
          } });
        }
      } catch (e) {
        res = gateway.encodeError(e);
      }
      if (getOption(res.options, TRICKLE_OPT_SESSION_ERROR)) stats.sessionErrors++;
      if (rand() < lossResponse) { stats.lostResponses++; host.requestFailed(enc.sent); break; }
      const out = host.decodeResponse(res, enc.sent); // throws (fails the test) on a handle the host lacks
      if (out.kind === 'retry') { literalsOnly = out.reason === 'handle-unknown'; continue; }
      if (r.path.endsWith('/sync')) since = (parse(out.response.body) as { next_batch: string }).next_batch;
      break;
    }
  }
  return stats;
}

describe('two sessions talking over a lossy link', () => {
  it('never uses an unconfirmed handle (gateway) or an unknown one (host), whatever is lost', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const s = simulate(seed, 400, 0.1, 0.3);
      expect(s.sessionErrors).toBe(0);
      expect(s.handleUses).toBeGreaterThan(100);
      expect(s.gatewayRefs).toBeGreaterThan(20);
      expect(s.lostResponses).toBeGreaterThan(50);
    }
  });

  it('also with heavy loss', () => {
    const s = simulate(99, 600, 0.3, 0.6);
    expect(s.sessionErrors).toBe(0);
    expect(s.handleUses).toBeGreaterThan(20);
  });

  it('raises mustPersist exactly where a stale snapshot could do harm', async () => {
    const link = new Link('r1', (r) => (r.path.endsWith('/sync') ? ok({ next_batch: 'n1', rooms: { join: { '!late:hs': {} } } }) : ok({})));
    const { host, gateway } = link;
    // gateway: a new session token, new handle numbers
    const enc = host.encodeRequest(req('GET', '/_matrix/client/v3/sync', { token: 'T' }));
    expect(host.mustPersist).toBe(false); // nothing a restart could get wrong yet
    const at = gateway.decodeRequest({ ...enc, token: sequenceToken(1) });
    expect(gateway.mustPersist).toBe(true); // the token
    gateway.exportState();
    expect(gateway.mustPersist).toBe(false);
    const w = gateway.encodeResponse(ok({ next_batch: 'n1' }), at);
    expect(w.definesHandles).toBe(1);
    expect(gateway.mustPersist).toBe(true); // the numbering
    host.decodeResponse(w, enc.sent);
    gateway.exportState();
    const plain = gateway.encodeResponse(ok({ x: 1 }), at);
    expect(plain.definesHandles).toBe(0);
    expect(gateway.mustPersist).toBe(false);
    // host: a new txn, and a token switch that drops a confirmation
    const send = host.encodeRequest(req('PUT', '/_matrix/client/v3/rooms/!late:hs/send/m.room.message/1', { token: 'T', body: {} }));
    host.rememberTxn(send.txnKey!, 5);
    expect(host.mustPersist).toBe(true);
    host.exportState();
    host.rememberTxn(send.txnKey!, 5); // the same: nothing new
    expect(host.mustPersist).toBe(false);
    host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'OTHER' }));
    expect(host.mustPersist).toBe(true);
  });

  it('a gateway wrongly restored from an older snapshot is caught when it redefines a number', async () => {
    const link = new Link('r1', (r) => (r.path.endsWith('/sync') ? ok({ next_batch: 'n1', rooms: { join: { '!late:hs': {} } } }) : ok({})));
    const snapshot = link.gateway.exportState();
    await link.carry(req('GET', '/_matrix/client/v3/sync', { token: 'T' }));
    link.gateway.importState({ ...snapshot, accessToken: 'T' }); // the caller ignored mustPersist
    await expect(link.carry(req('GET', '/_matrix/client/v3/rooms/!late:hs/joined_members', { token: 'T' })))
      .rejects.toMatchObject({ code: 'ERR_MATRIX_HANDLE_CONFLICT' });
  });

  it('carry() gives up with a 502 Matrix error after repeated Session-Errors', async () => {
    const h = new HostSession();
    const tokenMissing = async () => ({ code: makeCode(4, 1), options: [{ number: TRICKLE_OPT_SESSION_ERROR, value: Uint8Array.of(2) }], payload: new Uint8Array(0) });
    let sends = 0;
    const res = await h.carry(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'T' }), async () => { sends++; return tokenMissing(); });
    expect(sends).toBe(3);
    expect(res.status).toBe(502);
    // "no session token" for a request that had none (it carried No-Auth) cannot be right: a WireError.
    await expect(h.carry(req('GET', '/_matrix/client/v3/versions'), tokenMissing)).rejects.toMatchObject({ code: 'ERR_COAP_OPTION' });
    // A failed send is passed through.
    await expect(h.carry(req('GET', '/_matrix/client/v3/versions'), async () => { throw new Error('timeout'); })).rejects.toThrow('timeout');
  });
});
