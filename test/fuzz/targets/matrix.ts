/**
 * Matrix session decoders: the gateway's view of a request (GatewaySession.decodeRequest), the
 * host's view of a response (HostSession.decodeResponse), the body codec both share
 * (session-wire.ts decodeBody), push-sync deltas (sync-wire.ts deltaFromWire) and their parts
 * (sync-parts.ts acceptPart).
 *
 * The sessions are put in a realistic state first: a scripted conversation between a real
 * HostSession and GatewaySession (login, sync, send, state, join, to-device …) leaves both with
 * handles, a session token and txns; its messages are the seeds. Each input then runs against a
 * fresh session imported from that state, so a failure replays from its input alone.
 */
import { TrickleError, WireError } from '../../../src/errors.ts';
import { decodeMessage, encodeMessage, type CoapMessage } from '../../../src/coap/message.ts';
import { ACK, CON, Opt, Response } from '../../../src/coap/numbers.ts';
import { sequenceToken } from '../../../src/coap/compact.ts';
import { GatewaySession, HostSession, type GatewaySessionState, type HostSessionState } from '../../../src/matrix/session.ts';
import { decodeBody, encodeBody, parseWireValue, CONTENT_FORMAT_TEXT_MESSAGE } from '../../../src/matrix/session-wire.ts';
import { getUintOption } from '../../../src/coap/message.ts';
import type { HttpRequestLike, HttpResponseLike } from '../../../src/matrix/http.ts';
import { encodeTrickleCbor, decodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { deltaFromWire, deltaToWire, type WireTimeBase } from '../../../src/matrix/sync-wire.ts';
import { SyncReducer } from '../../../src/matrix/sync-delta.ts';
import type { SyncDelta } from '../../../src/matrix/sync-types.ts';
import { acceptPart, splitIntoParts, MAX_PARTS, TRICKLE_OPT_PART, type PartialBody } from '../../../src/matrix/sync-parts.ts';
import { uintOption } from '../../../src/coap/message.ts';
import { equalBytes } from '../../../src/util/bytes.ts';
import { check, expectCoded, Rng, type FuzzTarget } from '../engine.ts';
import { deepEqual, joinSeq, show, splitSeq, utf8Bytes } from '../util.ts';
import { CBOR_TOKENS, handleOf, resolveHandle } from './codec.ts';
import { loadSyncVectors } from '../../vectors/sync/load.ts';

export const SESSION_ID = 'k3x9';
/** Decode bound in the fuzz sessions (the real default is 16 MiB). */
export const FUZZ_MAX_BODY = 64 * 1024;
/** A decoded body may grow (enums, handles, event ids and JSON quoting) but only by a bounded factor. */
const maxExpanded = (wireBytes: number): number => 64 * wireBytes + 4096;

const anyCoded = (e: TrickleError): boolean => e.code.startsWith('ERR_');

const json = (v: unknown): Uint8Array => utf8Bytes(JSON.stringify(v));
const TOKEN = 'syt_Ym9i_aGVsbG8gd29ybGQ_0123';

function httpReq(method: string, path: string, opts: { query?: string; token?: string | null; body?: unknown } = {}): HttpRequestLike {
  return {
    method, path, query: opts.query ?? '',
    ...(opts.token === null ? {} : { accessToken: opts.token ?? TOKEN }),
    ...(opts.body !== undefined ? { contentType: 'application/json' } : {}),
    body: opts.body !== undefined ? json(opts.body) : new Uint8Array(0),
  };
}

const ROOM = '!LPFxx2cicGw996xyi9uwx3beNE2LUytYixXmuhZPank';
const ROOM2 = '!MGVn2jwe131ONgqDi9xzGJnTfzBCrJPQPefz-DdE-Xo';
const EVENT = '$LYINMXTTdyrb5SZ558dcJjRbm38NPZHkW8G_2_EEiv4';

/** What the client asks, in order (the conversation runs twice so handles get used and confirmed). */
export const REQUESTS: readonly HttpRequestLike[] = [
  httpReq('GET', '/_matrix/client/versions', { token: null }),
  httpReq('POST', '/_matrix/client/v3/login', { token: null, body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: 'REDACTED' } }),
  httpReq('GET', '/_matrix/client/v3/sync', { query: 'timeout=0&filter=0' }),
  httpReq('GET', '/_matrix/client/v3/sync', { query: 'since=s72594_4483_1934&timeout=30000&filter=0' }),
  httpReq('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.room.message/m1700000000.1`, { body: { msgtype: 'm.text', body: 'Hello World' } }),
  httpReq('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.reaction/m1700000000.2`, { body: { 'm.relates_to': { rel_type: 'm.annotation', event_id: EVENT, key: '👍' } } }),
  httpReq('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/state/m.room.topic/`, { body: { topic: 'radio' } }),
  httpReq('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/messages`, { query: 'from=t47-1234_0&dir=b&limit=10' }),
  httpReq('POST', `/_matrix/client/v3/join/${encodeURIComponent(ROOM2)}`, { body: {} }),
  httpReq('GET', '/_matrix/client/v3/profile/%40alice%3Alocalhost'),
  httpReq('PUT', '/_matrix/client/v3/sendToDevice/m.test/txn77', { body: { messages: { '@alice:localhost': { DEV: { x: 1 } } } } }),
  httpReq('POST', `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/receipt/m.read/${encodeURIComponent(EVENT)}`, { body: {} }),
  httpReq('GET', '/_matrix/client/v3/some/unknown/path', { query: 'a=~b&c' }),
  httpReq('DELETE', '/_matrix/client/v3/devices/ABCDEF'),
];

/** The homeserver: canned answers shaped like Synapse's. */
function homeserver(r: HttpRequestLike): HttpResponseLike {
  const ok = (v: unknown, status = 200): HttpResponseLike => ({ status, contentType: 'application/json', body: json(v) });
  const p = r.path;
  if (p.endsWith('/versions')) return ok({ versions: ['r0.6.1', 'v1.1', 'v1.11'], unstable_features: { 'org.matrix.msc3882': false } });
  if (p.endsWith('/login')) return ok({ user_id: '@bob:localhost', access_token: TOKEN, device_id: 'LJSACAYJRS', home_server: 'localhost' });
  if (p.endsWith('/sync')) {
    return ok({
      next_batch: 's72595_4483_1934', account_data: { events: [] },
      rooms: { join: { [ROOM]: { timeline: { events: [{ type: 'm.room.message', sender: '@alice:localhost', event_id: EVENT, origin_server_ts: 1700000000000, content: { msgtype: 'm.text', body: 'hi' } }], prev_batch: 't47-1234_0', limited: false }, unread_notifications: { notification_count: 1, highlight_count: 0 } } } },
    });
  }
  if (p.includes('/send/')) return ok({ event_id: EVENT });
  if (p.includes('/state/')) return ok({ event_id: '$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' });
  if (p.includes('/messages')) return ok({ start: 't47-1234_0', end: 't40-1200_0', chunk: [{ type: 'm.room.member', state_key: '@alice:localhost', sender: '@alice:localhost', content: { membership: 'join' }, event_id: '$m1', origin_server_ts: 1 }] });
  if (p.includes('/join/')) return ok({ room_id: ROOM2 });
  if (p.includes('/profile/')) return ok({ displayname: 'Alice', avatar_url: 'mxc://localhost/abc' });
  if (p.includes('/unknown/')) return ok({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }, 404);
  if (p.includes('/devices/')) return ok({ flows: [{ stages: ['m.login.password'] }], session: 'xyz' }, 401);
  return ok({});
}

export interface SessionWorld {
  readonly hostState: HostSessionState;
  readonly gatewayState: GatewaySessionState;
  /** RFC 7252 CON requests as the host sent them (token = S). */
  readonly requestMessages: Uint8Array[];
  /** RFC 7252 ACK responses, mid = the index in REQUESTS of the request they answer. */
  readonly responseMessages: Uint8Array[];
}

let world: SessionWorld | undefined;

export function sessionWorld(): SessionWorld {
  if (world) return world;
  const host = new HostSession({ maxBodyBytes: FUZZ_MAX_BODY });
  const gateway = new GatewaySession({ sessionId: SESSION_ID, maxBodyBytes: FUZZ_MAX_BODY });
  const requestMessages: Uint8Array[] = [];
  const responseMessages: Uint8Array[] = [];
  let seq = 0;
  for (let round = 0; round < 2; round++) {
    REQUESTS.forEach((r, index) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const enc = host.encodeRequest(r, { literalsOnly: attempt > 0 });
        let s: number;
        const known = enc.txnKey !== undefined ? host.txnSequence(enc.txnKey) : undefined;
        if (known !== undefined) s = known;
        else { s = ++seq; if (enc.txnKey !== undefined) host.rememberTxn(enc.txnKey, s); }
        const msg: CoapMessage = { type: CON, code: enc.code, mid: s & 0xffff, token: sequenceToken(s), options: enc.options, payload: enc.payload };
        requestMessages.push(encodeMessage(msg));
        let res;
        try {
          const decoded = gateway.decodeRequest({ code: enc.code, options: enc.options, payload: enc.payload, token: sequenceToken(s) });
          res = gateway.encodeResponse(homeserver(decoded), decoded);
        } catch (e) {
          res = gateway.encodeError(e);
        }
        responseMessages.push(encodeMessage({ type: ACK, code: res.code, mid: index, token: sequenceToken(s), options: res.options, payload: res.payload }));
        const out = host.decodeResponse(res, enc.sent);
        if (out.kind === 'response') break;
      }
    });
  }
  world = {
    hostState: JSON.parse(JSON.stringify(host.exportState())) as HostSessionState,
    gatewayState: JSON.parse(JSON.stringify(gateway.exportState())) as GatewaySessionState,
    requestMessages, responseMessages,
  };
  return world;
}

export function freshGateway(state: unknown = sessionWorld().gatewayState): GatewaySession {
  const g = new GatewaySession({ sessionId: SESSION_ID, maxBodyBytes: FUZZ_MAX_BODY });
  g.importState(state);
  return g;
}

export function freshHost(state: unknown = sessionWorld().hostState): HostSession {
  const h = new HostSession({ maxBodyBytes: FUZZ_MAX_BODY });
  h.importState(state);
  return h;
}

const OPTION_TOKENS = [
  Uint8Array.of(0xff), Uint8Array.of(0xb1, 0x37), Uint8Array.of(0x41, 0x7e), Uint8Array.of(0x12, 0x00, 0x3c), Uint8Array.of(0x11, 0x3c),
  Uint8Array.of(0xe2, 0xfc, 0xe3), Uint8Array.of(0xe1, 0xfc, 0xe5), Uint8Array.of(0xe0, 0xfc, 0xe6), Uint8Array.of(0xe1, 0xfc, 0xe4), Uint8Array.of(0xd1, 0xf3),
  Uint8Array.of(0x7e, 0x7e), Uint8Array.of(0x7e, 0x31), Uint8Array.of(0xc2, 0xfd, 0xe8), Uint8Array.of(0xef, 0xbb, 0xbf),
];

const decodeRfc = (input: Uint8Array): CoapMessage | string => {
  try { return decodeMessage(input); } catch (e) {
    if (e instanceof WireError) return `rfc:${e.code}`;
    throw e;
  }
};

export const sessionGateway: FuzzTarget = {
  name: 'session-gateway',
  description: 'GatewaySession.decodeRequest on RFC 7252 requests, session in a realistic state: only coded errors, each answerable by encodeError; path/body bounded; encodeResponse works; state stays exportable and importable',
  maxLen: 1024,
  dictionary: [...OPTION_TOKENS, ...CBOR_TOKENS.slice(0, 8)],
  cost: 2,
  seeds() { return sessionWorld().requestMessages; },
  run(input) {
    const m = decodeRfc(input);
    if (typeof m === 'string') return m;
    const gw = freshGateway();
    let req: HttpRequestLike;
    try {
      req = gw.decodeRequest({ code: m.code, options: m.options, payload: m.payload, token: m.token });
    } catch (e) {
      if (!(e instanceof TrickleError && e.code.startsWith('ERR_'))) throw e;
      // The contract: every refusal is answered with encodeError(e), a valid CoAP response.
      const parts = gw.encodeError(e);
      encodeMessage({ type: ACK, code: parts.code, mid: m.mid, token: m.token, options: parts.options, payload: parts.payload });
      checkGatewayState(gw);
      const reason = e.detail?.['reason'];
      return typeof reason === 'string' ? `${e.code}:${reason}` : e.code;
    }
    check(['GET', 'POST', 'PUT', 'DELETE'].includes(req.method), `method ${req.method}`);
    // DESIGN.md: "The gateway performs only the Matrix client-server API" (/_matrix/client/,
    // /_matrix/media/), and the path fetch() requests is the path decoded (no dot segment to resolve).
    const resolved = new URL(req.path, 'http://homeserver.invalid').pathname;
    check(/^\/_matrix\/(client|media)(\/|$)/.test(req.path) && resolved === req.path,
      () => `the gateway would request ${show(req.path)} (resolves to ${show(resolved)}), outside the client-server API`);
    check(req.accessToken === undefined || req.accessToken.length > 0, 'empty access token');
    check(req.body.length <= maxExpanded(m.payload.length), `body of ${req.body.length} bytes from a ${m.payload.length}-byte payload`);
    const res = gw.encodeResponse({ status: 200, contentType: 'application/json', body: json({ event_id: EVENT, next_batch: 's1', room_id: ROOM }) }, req);
    encodeMessage({ type: ACK, code: res.code, mid: m.mid, token: m.token, options: res.options, payload: res.payload });
    checkGatewayState(gw);
    return `ok:${req.method}:${req.body.length > 0 ? 'body' : ''}:${req.path.split('/').slice(0, 5).join('/').replace(/[!$@%].*/, '…')}`;
  },
};

function checkGatewayState(gw: GatewaySession): void {
  const st = JSON.parse(JSON.stringify(gw.exportState())) as unknown;
  const again = expectCoded(() => freshGateway(st), anyCoded);
  check(again.ok, () => `the gateway's own exported state does not import: ${again.ok ? '' : again.outcome}`);
}

function checkHostState(h: HostSession): void {
  const st = JSON.parse(JSON.stringify(h.exportState())) as unknown;
  const again = expectCoded(() => freshHost(st), anyCoded);
  check(again.ok, () => `the host's own exported state does not import: ${again.ok ? '' : again.outcome}`);
}

export const sessionHost: FuzzTarget = {
  name: 'session-host',
  description: 'HostSession.decodeResponse on RFC 7252 responses to a real request (chosen by mid): only coded errors; statuses 100–599; JSON bodies parse; bodies bounded; state stays exportable and importable',
  maxLen: 1024,
  dictionary: [...OPTION_TOKENS, ...CBOR_TOKENS.slice(0, 8)],
  cost: 2,
  seeds() { return sessionWorld().responseMessages; },
  run(input) {
    const m = decodeRfc(input);
    if (typeof m === 'string') return m;
    const host = freshHost();
    const request = REQUESTS[m.mid % REQUESTS.length]!;
    const enc = host.encodeRequest(request);
    const r = expectCoded(() => host.decodeResponse({ code: m.code, options: m.options, payload: m.payload }, enc.sent), anyCoded);
    checkHostState(host);
    if (!r.ok) return r.outcome;
    const out = r.value;
    if (out.kind === 'retry') {
      check(out.reason === 'token-missing' || (Number.isInteger(out.handle) && out.handle >= 0 && out.handle < 2 ** 21), () => `retry ${show(out)}`);
      return `retry:${out.reason}`;
    }
    const res = out.response;
    check(Number.isInteger(res.status) && res.status >= 100 && res.status <= 599, `status ${res.status}`);
    check(res.body.length <= maxExpanded(m.payload.length), `body of ${res.body.length} bytes from a ${m.payload.length}-byte payload`);
    if (res.contentType === 'application/json') {
      let ok = true;
      try { JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(res.body)); } catch { ok = false; }
      check(ok, 'a JSON response body that is not JSON');
    }
    return `ok:${res.status}:${res.contentType ?? 'none'}`;
  },
};

// ---------------------------------------------------------------------------------------------

export const sessionBody: FuzzTarget = {
  name: 'session-body',
  description: 'session-wire decodeBody (CBOR, deflated CBOR, TEXT_MESSAGE, EVENT_ID, octets) and parseWireValue: only coded errors; bounded; a JSON body re-encoded by encodeBody decodes to the same bytes',
  maxLen: 1024,
  dictionary: [...OPTION_TOKENS, ...CBOR_TOKENS],
  seeds() {
    const w = sessionWorld();
    return [...w.requestMessages, ...w.responseMessages];
  },
  run(input) {
    const m = decodeRfc(input);
    if (typeof m === 'string') return m;
    const outcomes: string[] = [];
    for (const [allowTextMessage, allowEventId] of [[true, false], [false, true]] as const) {
      const o = { allowTextMessage, allowEventId, maxBodyBytes: FUZZ_MAX_BODY, resolveHandle };
      const r = expectCoded(() => decodeBody(m.options, m.payload, o), anyCoded);
      if (!r.ok) { outcomes.push(r.outcome); continue; }
      const b = r.value;
      check(b.body.length <= maxExpanded(m.payload.length), `body of ${b.body.length} bytes from a ${m.payload.length}-byte payload`);
      if (b.value !== undefined) {
        check(equalBytes(b.body, json(b.value)), 'body is not JSON.stringify(value)');
        if (getUintOption(m.options, Opt.CONTENT_FORMAT) === CONTENT_FORMAT_TEXT_MESSAGE) {
          const text = (b.value as { body: string }).body;
          check(equalBytes(utf8Bytes(text), m.payload), () => `TEXT_MESSAGE payload ${show(m.payload)} decoded to the body ${show(text)}, which is other text`);
        }
        const enc = encodeBody(b.contentType, b.body, { textMessage: allowTextMessage, eventId: allowEventId }, { handleOf });
        const again = decodeBody(enc.options, enc.payload, o);
        check(equalBytes(again.body, b.body), () => `encodeBody → decodeBody changed ${show(new TextDecoder().decode(b.body))} into ${show(new TextDecoder().decode(again.body))}`);
      }
      outcomes.push(`ok:${b.contentType ?? 'none'}`);
    }
    for (const opt of m.options) {
      if (opt.number !== Opt.URI_PATH && opt.number !== Opt.URI_QUERY) continue;
      let s: string;
      try { s = new TextDecoder('utf-8', { fatal: true }).decode(opt.value); } catch { continue; }
      const w = expectCoded(() => parseWireValue(s, 'x'), anyCoded);
      if (w.ok && 'handle' in w.value) check(Number.isInteger(w.value.handle) && w.value.handle >= 0 && w.value.handle < 2 ** 21, `handle ${w.value.handle}`);
    }
    return outcomes.join(',');
  },
};

// ---------------------------------------------------------------------------------------------

const ROOM_BASES = new Map<string, number>([[ROOM, 1_700_000_000_000], ['!LPFxx2cicGw996xyi9uwx3beNE2LUytYixXmuhZPank', 1_700_000_000_000], ['!r1:example.org', 5]]);
const TIME_BASE: WireTimeBase = { baseTs: (room) => ROOM_BASES.get(room) };

let syncSeeds: Uint8Array[] | undefined;

function deltas(): SyncDelta[] {
  const v = loadSyncVectors();
  const r = new SyncReducer({ initialChunkBytes: 1500 });
  const out: SyncDelta[] = [];
  for (const s of v.steps) {
    let d = r.ingest(s.gateway);
    while (d) { out.push(d); r.acknowledge(d.seq); d = r.nextDelta(); }
  }
  const msg = (body: string, ts: number): unknown => ({ type: 'm.room.message', content: { msgtype: 'm.text', body }, sender: '@alice:localhost', event_id: EVENT, origin_server_ts: ts });
  out.push(
    { seq: 9, rooms: { join: { [ROOM]: { timeline: [msg('hi', 1_700_000_000_500)] } } } } as unknown as SyncDelta,
    { seq: 10, rooms: { join: { [ROOM]: { timeline: [msg('hi', 1_700_000_001_000)], unread_notifications: { notification_count: 2 } } } } } as unknown as SyncDelta,
    { seq: 11, rooms: { join: { '!r1:example.org': { timeline: [msg('a', 7), { type: 'm.reaction', content: {}, sender: '@b:hs' }], unread_notifications: { notification_count: 2, highlight_count: 1 } } }, leave: { '!r2:example.org': { timeline: [msg('bye', 3)] } } }, to_device: [{ type: 'm.x', content: {} }] } as unknown as SyncDelta,
  );
  return out;
}

export const syncWire: FuzzTarget = {
  name: 'sync-wire',
  description: 'Trickle CBOR → deltaFromWire (with room time bases): CBOR errors coded, shape errors TypeError only; deltaFromWire(deltaToWire(d)) == d; the re-encoded wire form is valid Trickle CBOR',
  maxLen: 2048,
  dictionary: CBOR_TOKENS,
  seeds() {
    syncSeeds ??= deltas().map((d) => encodeTrickleCbor(deltaToWire(d, TIME_BASE), { handleOf })).filter((b) => b.length <= 2048);
    return syncSeeds;
  },
  run(input) {
    const c = expectCoded(() => decodeTrickleCbor(input, { resolveHandle }), anyCoded);
    if (!c.ok) return `cbor:${c.outcome}`;
    let d: SyncDelta;
    try { d = deltaFromWire(c.value, TIME_BASE); } catch (e) {
      if (e instanceof TypeError) return 'TypeError';
      throw e;
    }
    check(Number.isSafeInteger(d.seq), `seq ${show(d.seq)}`);
    const w2 = deltaToWire(d, TIME_BASE);
    const bytes = encodeTrickleCbor(w2, { handleOf });
    const d2 = deltaFromWire(decodeTrickleCbor(bytes, { resolveHandle }), TIME_BASE);
    check(deepEqual(d2, d), () => `delta changed through deltaToWire → deltaFromWire: ${show(d)} → ${show(d2)}`);
    return `ok:${Array.isArray(c.value) ? (c.value as unknown[]).length : '?'}:${Object.keys(d.rooms ?? {}).sort().join('+')}`;
  },
};

// ---------------------------------------------------------------------------------------------

export const syncParts: FuzzTarget = {
  name: 'sync-parts',
  description: 'acceptPart over a sequence of RFC 7252 notifications: only ERR_COAP_OPTION; parts ≤ MAX_PARTS; a whole body is no longer than its parts; the partial state survives JSON persistence',
  maxLen: 1500,
  dictionary: [Uint8Array.of(0xe3, 0xfc, 0xe7), Uint8Array.of(0xe1, 0xfc, 0xe7, 0x01), Uint8Array.of(0xe1, 0xfc, 0xe7, 0x00), Uint8Array.of(0xe2, 0xfc, 0xe7, 0x00, 0x03)],
  seeds() {
    const rng = new Rng(7);
    const res = { code: Response.CONTENT, options: [uintOption(Opt.CONTENT_FORMAT, 60), uintOption(65008, 12)], payload: rng.bytes(300) };
    const parts = splitIntoParts(res, () => 80);
    const msgs = parts.map((p, i) => encodeMessage({ type: CON, code: p.code, mid: i, token: sequenceToken(1), options: p.options, payload: p.payload }));
    const whole = encodeMessage({ type: CON, code: Response.CONTENT, mid: 9, token: sequenceToken(1), options: [uintOption(Opt.CONTENT_FORMAT, 60)], payload: Uint8Array.of(0xa0) });
    return [joinSeq(msgs), joinSeq([...msgs.slice(0, 2), msgs[1]!, ...msgs.slice(2)]), joinSeq([msgs[0]!, msgs[2]!]), joinSeq([whole, ...msgs.slice(0, 2), whole])];
  },
  run(input) {
    let held: PartialBody | undefined;
    let total = 0;
    const kinds: string[] = [];
    for (const frame of splitSeq(input, 16)) {
      const m = decodeRfc(frame);
      if (typeof m === 'string') { kinds.push('rfc'); continue; }
      total += m.payload.length;
      const r = expectCoded(() => acceptPart(held, { code: m.code, options: m.options, payload: m.payload }), (e) => e instanceof WireError && e.code === 'ERR_COAP_OPTION');
      if (!r.ok) { kinds.push(r.outcome); continue; }
      const p = r.value;
      kinds.push(p.kind);
      if (p.kind === 'whole') {
        check(p.response.payload.length <= total, `whole body of ${p.response.payload.length} bytes from ${total} bytes of parts`);
        check(!p.response.options.some((o) => o.number === TRICKLE_OPT_PART) || held === undefined, 'Trickle-Part left in a reassembled body');
        held = undefined;
      } else if (p.kind === 'partial') {
        check(p.partial.chunks.length <= MAX_PARTS, `${p.partial.chunks.length} parts held`);
        const persisted = JSON.parse(JSON.stringify(p.partial)) as PartialBody;
        check(deepEqual(persisted, p.partial), 'partial body does not survive JSON');
        held = persisted;
      } else if (p.kind === 'gap') {
        held = undefined;
      }
    }
    return `ok:${[...new Set(kinds)].sort().join('+')}`;
  },
};

export const MATRIX_TARGETS: readonly FuzzTarget[] = [sessionGateway, sessionHost, sessionBody, syncWire, syncParts];

/** For state.ts: the session states as JSON seeds. */
export function sessionStateSeeds(): { host: Uint8Array[]; gateway: Uint8Array[] } {
  const w = sessionWorld();
  return {
    host: [json(w.hostState), json(new HostSession().exportState())],
    gateway: [json(w.gatewayState), json(new GatewaySession({ sessionId: SESSION_ID }).exportState())],
  };
}

