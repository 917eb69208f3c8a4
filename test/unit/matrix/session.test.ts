import { describe, expect, it } from 'vitest';
import { createCompactContext, encodeCompact, decodeCompact, compactRuleFor, sequenceToken } from '../../../src/coap/compact.ts';
import { ACK, CON, Method, Opt, TrickleContentFormat, makeCode } from '../../../src/coap/numbers.ts';
import { getOption, getOptions, stringOption, uintOption, type CoapMessage, type CoapOption } from '../../../src/coap/message.ts';
import { encodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { utf8 } from '../../../src/util/bytes.ts';
import { MSC3079_OPT_AUTHORIZATION } from '../../../src/matrix/http-coap.ts';
import { GatewaySession, HostSession, HANDLE_LIMIT } from '../../../src/matrix/session.ts';
import {
  HANDLE_RETAIN, HANDLE_WINDOW, TRICKLE_OPT_HANDLE_BASE, TRICKLE_OPT_NO_AUTH, TRICKLE_OPT_SESSION_ERROR,
} from '../../../src/matrix/session-wire.ts';
import { Link, eventId, ok, parse, req } from './support.ts';

const TOKEN = 'syt_YWxpY2U_secretsecret_0abc12';
const ROOM = '!kvAmAzfXgsDomFSLXW:example.org';
const ALICE = '@alice:example.org';
const BOB = '@bob:example.org';
const text = (o: readonly CoapOption[], n: number): string[] => getOptions(o, n).map((b) => utf8.decode(b));

function expectWire(fn: () => unknown, code: string): void {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err, `expected ${code}`).toBeDefined();
  expect(isTrickleError(err, code as never), `got ${(err as Error).message}`).toBe(true);
  expect((err as Error).name).toBe('WireError');
}

/** A host+gateway pair that has synced once: ROOM, ALICE, BOB and the since token have confirmed handles. */
async function warmLink(): Promise<{ link: Link; nextBatch: string }> {
  let n = 0;
  const link = new Link('k3x9', (r) => {
    if (r.path.endsWith('/sync')) {
      n++;
      return ok({ next_batch: `s${n}_77_0_1`, rooms: { join: { [ROOM]: { timeline: { events: [{ type: 'm.room.message', sender: BOB, event_id: eventId(n), content: { msgtype: 'm.text', body: 'yo' } }], prev_batch: `p${n}` } } } }, account_data: { events: [] } });
    }
    if (r.path.includes('/send/')) return ok({ event_id: eventId(1000 + n) });
    return ok({});
  });
  await link.carry(req('GET', '/_matrix/client/v3/account/whoami', { token: TOKEN })); // carries the token once
  await link.carry(req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'timeout=0' }));
  await link.carry(req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'since=s1_77_0_1&timeout=30000' })); // uses ~ since → confirms
  return { link, nextBatch: 's2_77_0_1' };
}

describe('HostSession / GatewaySession: requests', () => {
  it('maps method, enum path, query, token and JSON body and back (first contact, all literal)', () => {
    const link = new Link();
    const r = req('POST', '/_matrix/client/r0/rooms/!r%3Ahs/invite', { token: TOKEN, query: 'a=1&b=x%20y&flag', body: { user_id: ALICE, reason: 'hi' } });
    const enc = link.host.encodeRequest(r);
    expect(enc.code).toBe(Method.POST);
    expect(text(enc.options, Opt.URI_PATH)).toEqual(['J', '!r:hs']);
    expect(text(enc.options, Opt.URI_QUERY)).toEqual(['a=1', 'b=x y', 'flag']);
    expect(text(enc.options, MSC3079_OPT_AUTHORIZATION)).toEqual([TOKEN]);
    expect(getOption(enc.options, Opt.CONTENT_FORMAT)).toEqual(uintOption(12, 60).value);
    const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(1) });
    expect(at.method).toBe('POST');
    expect(at.path).toBe('/_matrix/client/v3/rooms/!r:hs/invite');
    expect(at.query).toBe('a=1&b=x%20y&flag');
    expect(at.accessToken).toBe(TOKEN);
    expect(at.contentType).toBe('application/json');
    expect(parse(at.body)).toEqual({ user_id: ALICE, reason: 'hi' });
  });

  it('refuses methods and query keys it cannot carry', () => {
    const h = new HostSession();
    expect(() => h.encodeRequest(req('PATCH', '/_matrix/client/v3/x'))).toThrowError(expect.objectContaining({ code: 'ERR_MATRIX_REQUEST' }));
    expect(() => h.encodeRequest(req('GET', '/_matrix/client/v3/sync', { query: 'a%3Db=c' }))).toThrowError(expect.objectContaining({ code: 'ERR_MATRIX_REQUEST' }));
  });

  it('carries a {msgtype: m.text, body} body as TEXT_MESSAGE and nothing else', () => {
    const h = new HostSession();
    const enc = h.encodeRequest(req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/txn1`, { token: TOKEN, body: { msgtype: 'm.text', body: 'Hello World' } }));
    expect(getOption(enc.options, Opt.CONTENT_FORMAT)).toEqual(uintOption(12, TrickleContentFormat.TEXT_MESSAGE).value);
    expect(utf8.decode(enc.payload)).toBe('Hello World');
    const withMore = h.encodeRequest(req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/txn2`, { token: TOKEN, body: { msgtype: 'm.text', body: 'x', format: 'org.matrix.custom.html' } }));
    expect(getOption(withMore.options, Opt.CONTENT_FORMAT)).toEqual(uintOption(12, 60).value);
    const empty = h.encodeRequest(req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/txn3`, { token: TOKEN, body: { body: '', msgtype: 'm.text' } }));
    expect(empty.payload.length).toBe(0);
    const g = new GatewaySession({ sessionId: 'a' });
    expect(parse(g.decodeRequest({ ...empty, token: sequenceToken(3) }).body)).toEqual({ msgtype: 'm.text', body: '' });
  });

  it('carries non-JSON and odd JSON bodies as octets with their content type', () => {
    const link = new Link();
    const raw = Uint8Array.of(0x89, 0x50, 0x4e, 0x47);
    const enc = link.host.encodeRequest(req('POST', '/_matrix/media/v3/upload', { token: TOKEN, raw, contentType: 'image/png', query: 'filename=a.png' }));
    const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(1) });
    expect(at.contentType).toBe('image/png');
    expect([...at.body]).toEqual([...raw]);
    const big = link.host.encodeRequest(req('POST', '/_matrix/client/v3/createRoom', { token: TOKEN, raw: utf8.encode('{"n":12345678901234567890}'), contentType: 'application/json' }));
    const at2 = link.gateway.decodeRequest({ ...big, token: sequenceToken(2) });
    expect(utf8.decode(at2.body)).toBe('{"n":12345678901234567890}');
  });

  it('omits the txn id of send / redact / sendToDevice; the gateway derives t<session>.<seq>', () => {
    const h = new HostSession();
    const g = new GatewaySession({ sessionId: 'k3x9' });
    const cases: [string, string[], string][] = [
      [`/_matrix/client/r0/rooms/${ROOM}/send/m.room.message/m123`, ['9', ROOM, 'm.room.message'], `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/tk3x9.77`],
      [`/_matrix/client/v3/rooms/${ROOM}/redact/${eventId(1)}/m124`, ['F', ROOM, eventId(1)], `/_matrix/client/v3/rooms/${ROOM}/redact/${eventId(1)}/tk3x9.77`],
      ['/_matrix/client/v3/sendToDevice/m.room_key_request/m125', ['c', 'm.room_key_request'], '/_matrix/client/v3/sendToDevice/m.room_key_request/tk3x9.77'],
    ];
    for (const [path, wire, out] of cases) {
      const enc = h.encodeRequest(req('PUT', path, { token: TOKEN, body: {} }));
      expect(text(enc.options, Opt.URI_PATH)).toEqual(wire);
      expect(enc.txnKey).toMatch(/^[0-9a-f]{32}$/);
      // A CoAP retransmission or a resend with the same token: the same homeserver txn id.
      expect(g.decodeRequest({ ...enc, token: sequenceToken(77) }).path).toBe(out);
      expect(g.decodeRequest({ ...enc, token: sequenceToken(77) }).path).toBe(out);
    }
    expect(g.decodeRequest({ ...h.encodeRequest(req('PUT', cases[0]![0], { token: TOKEN, body: {} })), token: Uint8Array.of(1, 2) }).path)
      .toBe(`/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/tk3x9.x0102`);
  });

  it('gives the same txnKey to a client retry (r0 or v3), another to another txn, token or room', () => {
    const h = new HostSession();
    const key = (path: string, token = TOKEN): string | undefined => h.encodeRequest(req('PUT', path, { token, body: {} })).txnKey;
    const a = key(`/_matrix/client/r0/rooms/${ROOM}/send/m.room.message/m1`);
    expect(key(`/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/m1`)).toBe(a);
    expect(key(`/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/m2`)).not.toBe(a);
    expect(key(`/_matrix/client/v3/rooms/!other:hs/send/m.room.message/m1`)).not.toBe(a);
    expect(key(`/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/m1`, 'other-token')).not.toBe(a);
    expect(key('/_matrix/client/v3/rooms/!a:b/state/m.room.name/')).toBeUndefined();
    h.rememberTxn(a!, 41);
    expect(h.txnSequence(a!)).toBe(41);
    const small = new HostSession({ maxTxns: 2 });
    small.rememberTxn('a', 1); small.rememberTxn('b', 2); small.rememberTxn('c', 3);
    expect(small.txnSequence('a')).toBeUndefined();
    expect(small.txnSequence('c')).toBe(3);
  });

  it('a client retry of a txn goes out with the same token, so the homeserver sees the same txn id', async () => {
    const link = new Link();
    const r = req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/m1`, { token: TOKEN, body: { msgtype: 'm.text', body: 'a' } });
    const enc = link.host.encodeRequest(r);
    expect(link.send(enc, { response: true })).toBeUndefined(); // answer lost
    link.host.requestFailed(enc.sent);
    await link.carry(req('GET', '/_matrix/client/v3/sync', { token: TOKEN }));
    await link.carry(r); // the client retries its txn
    const sends = link.performed.filter((p) => p.path.includes('/send/'));
    expect(sends.map((p) => p.path)).toEqual([
      `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/tk3x9.1`,
      `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/tk3x9.1`,
    ]);
  });

  it('escapes literals that start with "~" and rejects malformed "~" values', () => {
    const link = new Link();
    const r = req('PUT', '/_matrix/client/v3/rooms/!r:hs/state/m.room.name/~5', { token: TOKEN, query: 'x=~7&y=~~&since=~', body: { name: '~3' } });
    const enc = link.host.encodeRequest(r);
    expect(text(enc.options, Opt.URI_PATH)).toEqual(['8', '!r:hs', 'm.room.name', '~~5']);
    expect(text(enc.options, Opt.URI_QUERY)).toEqual(['x=~~7', 'y=~~~', 'since=~~']);
    const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(1) });
    expect(at.path).toBe('/_matrix/client/v3/rooms/!r:hs/state/m.room.name/~5');
    expect(at.query).toBe('x=~7&y=~~&since=~');
    for (const bad of ['~x', '~05', '~', '~12345678']) {
      const opts = enc.options.map((o) => (o.number === Opt.URI_PATH && utf8.decode(o.value) === '~~5' ? stringOption(Opt.URI_PATH, bad) : o));
      expectWire(() => link.gateway.decodeRequest({ ...enc, options: opts, token: sequenceToken(2) }), 'ERR_MATRIX_REQUEST');
    }
  });
});

describe('access token once per session', () => {
  it('sends option 256 until an answer confirms it, then relies on the gateway', async () => {
    const link = new Link();
    const r = req('GET', '/_matrix/client/v3/joined_rooms', { token: TOKEN });
    const first = link.host.encodeRequest(r);
    const second = link.host.encodeRequest(r); // concurrent, before any answer
    expect(text(first.options, MSC3079_OPT_AUTHORIZATION)).toEqual([TOKEN]);
    expect(text(second.options, MSC3079_OPT_AUTHORIZATION)).toEqual([TOKEN]);
    const res = link.send(first)!;
    expect(link.host.decodeResponse(res, first.sent).kind).toBe('response');
    const third = link.host.encodeRequest(r);
    expect(getOption(third.options, MSC3079_OPT_AUTHORIZATION)).toBeUndefined();
    expect(link.gateway.decodeRequest({ ...third, token: sequenceToken(9) }).accessToken).toBe(TOKEN);
    expect(link.host.exportState().confirmedToken).toMatch(/^[0-9a-f]{32}$/);
    expect(JSON.stringify(link.host.exportState())).not.toContain(TOKEN);
  });

  it('does not confirm on an empty CoAP-level error (e.g. 4.13 from the endpoint) or while another token is in flight', () => {
    const h = new HostSession();
    const a = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'A' }));
    h.decodeResponse({ code: makeCode(4, 13), options: [], payload: new Uint8Array(0) }, a.sent);
    expect(h.status().tokenConfirmed).toBe(false);
    const a2 = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'A' }));
    const b = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'B' }));
    const g = new GatewaySession({ sessionId: 'a' });
    // a2's answer arrives while b (another token) is in flight and was issued later: no confirmation.
    h.decodeResponse(g.encodeResponse(ok({ joined_rooms: [] })), a2.sent);
    expect(h.status().tokenConfirmed).toBe(false);
    h.decodeResponse(g.encodeResponse(ok({ joined_rooms: [] })), b.sent);
    expect(h.status().tokenConfirmed).toBe(true);
    const next = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'B' }));
    expect(getOption(next.options, MSC3079_OPT_AUTHORIZATION)).toBeUndefined();
    const switched = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'A' }));
    expect(text(switched.options, MSC3079_OPT_AUTHORIZATION)).toEqual(['A']);
    expect(h.status().tokenConfirmed).toBe(false); // a different token went out: the gateway's may change
  });

  it('the gateway holds the token even when the rest of the request is refused (its answer confirms it)', () => {
    const h = new HostSession();
    const g = new GatewaySession({ sessionId: 'a' });
    const enc = h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: TOKEN }));
    const bad = { ...enc, options: [...enc.options, { number: 65013, value: new Uint8Array(0) }], token: sequenceToken(1) };
    let err: unknown;
    try { g.decodeRequest(bad); } catch (e) { err = e; }
    const answer = g.encodeError(err);
    expect(answer.payload.length).toBeGreaterThan(0);
    expect(h.decodeResponse(answer, enc.sent).kind).toBe('response');
    expect(h.status().tokenConfirmed).toBe(true);
    expect(g.status().hasAccessToken).toBe(true);
  });

  it('marks token-less requests No-Auth, so the gateway never attaches its token to them', async () => {
    const { link } = await warmLink();
    const enc = link.host.encodeRequest(req('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', user: 'alice', password: 'pw' } }));
    expect(getOption(enc.options, TRICKLE_OPT_NO_AUTH)).toEqual(new Uint8Array(0));
    const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(99) });
    expect(at.accessToken).toBeUndefined();
    const bad = [...enc.options, stringOption(MSC3079_OPT_AUTHORIZATION, TOKEN)];
    expectWire(() => link.gateway.decodeRequest({ ...enc, options: bad, token: sequenceToken(100) }), 'ERR_COAP_OPTION');
  });

  it('a gateway that lost its token answers Session-Error; carry() resends with the token', async () => {
    const { link } = await warmLink();
    const state = link.gateway.exportState();
    link.gateway.importState({ ...state, accessToken: null });
    const before = link.performed.length;
    const res = await link.carry(req('GET', '/_matrix/client/v3/joined_rooms', { token: TOKEN }));
    expect(res.status).toBe(200);
    expect(link.performed.length).toBe(before + 1);
    expect(link.performed.at(-1)!.accessToken).toBe(TOKEN);
    expect(link.gateway.status().hasAccessToken).toBe(true);
    const enc = link.host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: TOKEN }));
    expect(getOption(enc.options, MSC3079_OPT_AUTHORIZATION)).toBeUndefined();
  });
});

describe('handles', () => {
  it('a sync response defines handles with Handle-Base; the host uses them; the gateway only once confirmed', () => {
    const link = new Link();
    const body = { next_batch: 's1_2', rooms: { join: { [ROOM]: { timeline: { events: [{ sender: ALICE, event_id: eventId(1), type: 'm.room.message', content: { body: 'hi', msgtype: 'm.text' } }], prev_batch: 'p1' } } } } };
    const r1 = link.host.encodeRequest(req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'timeout=0' }));
    const at1 = link.gateway.decodeRequest({ ...r1, token: sequenceToken(1) });
    const w1 = link.gateway.encodeResponse(ok(body), at1);
    expect(getOption(w1.options, TRICKLE_OPT_HANDLE_BASE)).toEqual(new Uint8Array(0)); // H0 = 0
    expect(w1.definesHandles).toBe(5); // values s1_2, @alice, $event, p1 in encoding order, then the key !room
    const d1 = link.host.decodeResponse(w1, r1.sent);
    expect(d1.kind === 'response' && parse(d1.response.body)).toEqual(body);
    expect(link.host.exportState().handles).toEqual([[0, 's1_2'], [1, ALICE], [2, eventId(1)], [3, 'p1'], [4, ROOM]]);

    // Not confirmed yet: the gateway still sends literals (and numbers them again).
    const r2 = link.host.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms'));
    const w2 = link.gateway.encodeResponse(ok({ joined_rooms: [ROOM] }), link.gateway.decodeRequest({ ...r2, token: sequenceToken(2) }));
    expect(Buffer.from(w2.payload).includes(ROOM)).toBe(true);
    expect(w2.definesHandles).toBe(1);
    link.host.decodeResponse(w2, r2.sent);

    // The host's next sync uses since=~0: that confirms the whole first response.
    const r3 = link.host.encodeRequest(req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'since=s1_2&timeout=30000' }));
    expect(text(r3.options, Opt.URI_QUERY)).toEqual(['since=~0', 'timeout=30000']);
    const at3 = link.gateway.decodeRequest({ ...r3, token: sequenceToken(3) });
    expect(at3.query).toBe('since=s1_2&timeout=30000');
    const w3 = link.gateway.encodeResponse(ok({ joined_rooms: [ROOM], who: ALICE, x: '@new:hs' }), at3);
    expect(Buffer.from(w3.payload).includes(ROOM)).toBe(false);
    expect(w3.payload).toEqual(encodeTrickleCbor({ joined_rooms: [ROOM], who: ALICE, x: '@new:hs' }, { handleOf: (s) => (s === ROOM ? 4 : s === ALICE ? 1 : undefined) }));
    const d3 = link.host.decodeResponse(w3, r3.sent);
    expect(d3.kind === 'response' && parse(d3.response.body)).toEqual({ joined_rooms: [ROOM], who: ALICE, x: '@new:hs' });
  });

  it('confirmDelivered: a push the host ACKed whole confirms its handles without a request using them', () => {
    const g = new GatewaySession({ sessionId: 'p' });
    const h = new HostSession();
    const sent = h.encodeRequest(req('GET', '/_matrix/client/v3/sync', { token: TOKEN })).sent;
    const push = (v: unknown) => g.encodeResponse(ok(v));
    const first = push([1, [{ room_id: ROOM, timeline: [{ content: 'hi', sender: BOB, event_id: eventId(1) }] }]]);
    expect(h.decodeResponse(first, sent).kind).toBe('response');
    const base = getOption(first.options, TRICKLE_OPT_HANDLE_BASE)!;
    // Not confirmed yet: the next push spells BOB and ROOM out again.
    const again = push([2, [{ room_id: ROOM, timeline: [{ content: 'ho', sender: BOB, event_id: eventId(2) }] }]]);
    expect(again.payload.length).toBeGreaterThan(first.payload.length - 4);
    g.confirmDelivered(base.length === 1 ? base[0]! : (base[0]! << 8) | base[1]!);
    const third = push([3, [{ room_id: ROOM, timeline: [{ content: 'hu', sender: BOB, event_id: eventId(3) }] }]]);
    // Room and sender now go as handles: only the event id, the text and the structure remain.
    expect(third.payload.length).toBeLessThan(again.payload.length - 20);
    expect(third.payload.length).toBeLessThanOrEqual(34 + 3 + 15);
    h.decodeResponse(again, sent);
    const back = h.decodeResponse(third, sent);
    expect(back.kind === 'response' && parse(back.response.body)).toEqual([3, [{ room_id: ROOM, timeline: [{ content: 'hu', sender: BOB, event_id: eventId(3) }] }]]);
    g.confirmDelivered(99_999); // unknown base: nothing happens
  });

  it('the host uses the newest number of a string, in path, query and body', async () => {
    const { link } = await warmLink();
    const enc = link.host.encodeRequest(req('POST', `/_matrix/client/v3/rooms/${ROOM}/invite`, { query: `user_id=${BOB}`, body: { user_id: BOB } }));
    const [, room] = text(enc.options, Opt.URI_PATH);
    expect(room).toMatch(/^~\d+$/);
    expect(text(enc.options, Opt.URI_QUERY)[0]).toMatch(/^user_id=~\d+$/);
    expect(enc.payload.length).toBeLessThan(6);
    const at = link.gateway.decodeRequest({ ...enc, token: sequenceToken(50) });
    expect(at.path).toBe(`/_matrix/client/v3/rooms/${ROOM}/invite`);
    expect(at.query).toBe(`user_id=${encodeURIComponent(BOB)}`);
    expect(parse(at.body)).toEqual({ user_id: BOB });
    // literalsOnly: no handle anywhere
    const lit = link.host.encodeRequest(req('POST', `/_matrix/client/v3/rooms/${ROOM}/invite`, { query: `user_id=${BOB}`, body: { user_id: BOB } }), { literalsOnly: true });
    expect(text(lit.options, Opt.URI_PATH)[1]).toBe(ROOM);
  });

  it('an unknown handle at the gateway → Session-Error; the host forgets it and resends literally', async () => {
    const { link } = await warmLink();
    const roomHandle = Number(text(link.host.encodeRequest(req('GET', `/_matrix/client/v3/rooms/${ROOM}/joined_members`)).options, Opt.URI_PATH)[1]!.slice(1));
    // The gateway forgets that handle (as if evicted).
    const st = link.gateway.exportState();
    link.gateway.importState({ ...st, handles: st.handles.filter(([h]) => h !== roomHandle) });
    const enc = link.host.encodeRequest(req('GET', `/_matrix/client/v3/rooms/${ROOM}/joined_members`));
    const res = link.send(enc)!;
    expect(getOption(res.options, TRICKLE_OPT_SESSION_ERROR)).toEqual(uintOption(0, roomHandle * 4 + 1).value);
    expect(res.code).toBe(makeCode(4, 0));
    const r = link.host.decodeResponse(res, enc.sent);
    expect(r).toEqual({ kind: 'retry', reason: 'handle-unknown', handle: roomHandle });
    expect(link.host.exportState().handles.some(([h]) => h === roomHandle)).toBe(false);
    const res2 = await link.carry(req('GET', `/_matrix/client/v3/rooms/${ROOM}/joined_members`));
    expect(res2.status).toBe(200);
    expect(link.performed.at(-1)!.path).toBe(`/_matrix/client/v3/rooms/${ROOM}/joined_members`);
  });

  it('an unknown handle in a body at the gateway is reported with its number', () => {
    const g = new GatewaySession({ sessionId: 'a' });
    const payload = encodeTrickleCbor({ user_id: 'x' }, { handleOf: () => 300 });
    let err: unknown;
    try { g.decodeRequest({ code: Method.POST, options: [stringOption(Opt.URI_PATH, 'G'), uintOption(Opt.CONTENT_FORMAT, 60), { number: TRICKLE_OPT_NO_AUTH, value: new Uint8Array(0) }], payload, token: sequenceToken(1) }); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_HANDLE_UNKNOWN') && err.detail).toEqual({ handle: 300 });
    const res = g.encodeError(err);
    expect(getOption(res.options, TRICKLE_OPT_SESSION_ERROR)).toEqual(uintOption(0, 1201).value);
  });

  it('numbers request literals first, each distinct string once, and never for an EVENT_ID answer', () => {
    const link = new Link();
    const r = link.host.encodeRequest(req('POST', '/_matrix/client/v3/join/%23room%3Ahs', { token: TOKEN, query: 'server_name=hs&via=hs', body: {} }));
    const at = link.gateway.decodeRequest({ ...r, token: sequenceToken(1) });
    const w = link.gateway.encodeResponse(ok({ room_id: '!new:hs', also: '#room:hs', again: '!new:hs' }), at);
    link.host.decodeResponse(w, r.sent);
    expect(link.host.exportState().handles).toEqual([[0, '#room:hs'], [1, '!new:hs']]);
    const s = link.host.encodeRequest(req('PUT', '/_matrix/client/v3/rooms/!new:hs/send/m.room.message/1', { body: { msgtype: 'm.text', body: 'x' } }));
    const ws = link.gateway.encodeResponse(ok({ event_id: eventId(5) }), link.gateway.decodeRequest({ ...s, token: sequenceToken(2) }));
    expect(ws.options).toEqual([uintOption(Opt.CONTENT_FORMAT, TrickleContentFormat.EVENT_ID)]);
    expect(ws.payload.length).toBe(32);
    const d = link.host.decodeResponse(ws, s.sent);
    expect(d.kind === 'response' && parse(d.response.body)).toEqual({ event_id: eventId(5) });
  });

  it('keeps at most 2·HANDLE_WINDOW handles per side and uses only the last HANDLE_WINDOW', () => {
    const link = new Link();
    const r = link.host.encodeRequest(req('GET', '/_matrix/client/v3/sync', { token: TOKEN }));
    const at = link.gateway.decodeRequest({ ...r, token: sequenceToken(1) });
    const many = Array.from({ length: HANDLE_RETAIN + 5000 }, (_, i) => `@u${i}:hs`);
    link.host.decodeResponse(link.gateway.encodeResponse(ok({ many }), at), r.sent);
    expect(link.gateway.status().handles).toBe(HANDLE_RETAIN);
    // The host sweeps lazily (numbers may arrive out of order): at most RETAIN + RETAIN/8.
    expect(link.host.status().handles).toBeLessThanOrEqual(HANDLE_RETAIN + HANDLE_RETAIN / 8);
    link.host.decodeResponse(link.gateway.encodeResponse(ok({ more: Array.from({ length: 5000 }, (_, i) => `@v${i}:hs`) }), at), r.sent);
    expect(link.host.status().handles).toBeLessThanOrEqual(HANDLE_RETAIN);
    const old = link.host.encodeRequest(req('GET', `/_matrix/client/v3/profile/${many[10]}`));
    expect(text(old.options, Opt.URI_PATH)[1]).toBe(many[10]); // evicted: literal
    const mid = link.host.encodeRequest(req('GET', `/_matrix/client/v3/profile/${many[HANDLE_RETAIN + 5000 - HANDLE_WINDOW - 10]}`));
    expect(text(mid.options, Opt.URI_PATH)[1]).toMatch(/^@/); // retained but outside the use window: literal
    const recent = link.host.encodeRequest(req('GET', `/_matrix/client/v3/profile/${many.at(-1)}`));
    expect(text(recent.options, Opt.URI_PATH)[1]).toBe(`~${HANDLE_RETAIN + 4999}`);
  });

  it('stops assigning at 2^21 (exhausted) and keeps working with literals', () => {
    const g = new GatewaySession({ sessionId: 'a' });
    g.importState({ ...g.exportState(), next: HANDLE_LIMIT - 1 });
    const w = g.encodeResponse(ok({ a: '@x:hs', b: '@y:hs' }));
    expect(getOption(w.options, TRICKLE_OPT_HANDLE_BASE)).toBeUndefined();
    expect(g.exhausted).toBe(false);
    g.encodeResponse(ok({ a: '@x:hs' }));
    expect(g.exhausted).toBe(true);
  });

  it('exports and imports both sides as plain JSON', async () => {
    const { link } = await warmLink();
    const hs = JSON.parse(JSON.stringify(link.host.exportState()));
    const gs = JSON.parse(JSON.stringify(link.gateway.exportState()));
    const h2 = new HostSession();
    h2.importState(hs);
    const g2 = new GatewaySession({ sessionId: 'k3x9' });
    g2.importState(gs);
    expect(h2.exportState()).toEqual(link.host.exportState());
    expect(g2.exportState()).toEqual(link.gateway.exportState());
    const enc = h2.encodeRequest(req('GET', `/_matrix/client/v3/rooms/${ROOM}/members`, { token: TOKEN }));
    expect(text(enc.options, Opt.URI_PATH)[1]).toMatch(/^~/);
    expect(getOption(enc.options, MSC3079_OPT_AUTHORIZATION)).toBeUndefined();
    expect(g2.decodeRequest({ ...enc, token: sequenceToken(70) }).path).toBe(`/_matrix/client/v3/rooms/${ROOM}/members`);
    expect(() => g2.importState({ ...gs, sessionId: 'other' })).toThrowError(expect.objectContaining({ code: 'ERR_MATRIX_STATE' }));
    expect(() => h2.importState({ ...hs, handles: [[1, 2]] })).toThrowError(expect.objectContaining({ code: 'ERR_MATRIX_STATE' }));
    expect(() => new GatewaySession({ sessionId: 'Bad!' })).toThrowError(expect.objectContaining({ code: 'ERR_CONFIG' }));
  });
});

describe('damaged messages are rejected with coded errors', () => {
  const g = new GatewaySession({ sessionId: 'a' });
  const noAuth = { number: TRICKLE_OPT_NO_AUTH, value: new Uint8Array(0) };
  const put = (cf: number, payload: Uint8Array, extra: CoapOption[] = []) => ({
    code: Method.PUT, token: sequenceToken(1), payload,
    options: [stringOption(Opt.URI_PATH, '9'), stringOption(Opt.URI_PATH, '!r:hs'), stringOption(Opt.URI_PATH, 'm.room.message'), uintOption(Opt.CONTENT_FORMAT, cf), noAuth, ...extra],
  });

  it('gateway: unknown handle, bad Content-Format, invalid UTF-8 TEXT_MESSAGE, EVENT_ID in a request, unknown critical option', () => {
    const path = [stringOption(Opt.URI_PATH, 'C'), stringOption(Opt.URI_PATH, '~12'), noAuth];
    expectWire(() => g.decodeRequest({ code: Method.GET, options: path, payload: new Uint8Array(0), token: sequenceToken(1) }), 'ERR_HANDLE_UNKNOWN');
    expectWire(() => g.decodeRequest({ code: Method.GET, options: [stringOption(Opt.URI_PATH, '7'), stringOption(Opt.URI_QUERY, 'since=~3'), noAuth], payload: new Uint8Array(0), token: sequenceToken(1) }), 'ERR_HANDLE_UNKNOWN');
    expectWire(() => g.decodeRequest(put(61, utf8.encode('hi'))), 'ERR_MATRIX_BODY');
    expectWire(() => g.decodeRequest(put(TrickleContentFormat.TEXT_MESSAGE, Uint8Array.of(0x48, 0xc3, 0x28))), 'ERR_MATRIX_BODY');
    expectWire(() => g.decodeRequest(put(TrickleContentFormat.EVENT_ID, new Uint8Array(32))), 'ERR_MATRIX_BODY');
    expectWire(() => g.decodeRequest(put(60, new Uint8Array(0))), 'ERR_MATRIX_BODY');
    expectWire(() => g.decodeRequest(put(60, Uint8Array.of(0xa1, 0x41))), 'ERR_CBOR_DECODE');
    expectWire(() => g.decodeRequest(put(60, Uint8Array.of(0xa0), [{ number: 65013, value: new Uint8Array(0) }])), 'ERR_COAP_OPTION');
    expectWire(() => g.decodeRequest(put(60, Uint8Array.of(0xa0), [uintOption(Opt.CONTENT_FORMAT, 60)])), 'ERR_COAP_OPTION');
    expectWire(() => g.decodeRequest({ code: Method.GET, options: [stringOption(Opt.URI_PATH, '7')], payload: Uint8Array.of(1), token: sequenceToken(1) }), 'ERR_MATRIX_BODY');
    // a 9-byte "handle" byte string in CBOR has no meaning either
    expectWire(() => g.decodeRequest(put(60, Uint8Array.of(0xa1, 0x18, 0x1b, 0x49, 1, 2, 3, 4, 5, 6, 7, 8, 9))), 'ERR_CBOR_TYPE');
  });

  it('host: unknown handle ref, 31/33-byte EVENT_ID, EVENT_ID outside 2.05, TEXT_MESSAGE in a response, bad Handle-Base, conflicting Handle-Base', () => {
    const h = new HostSession();
    const sent = () => h.encodeRequest(req('GET', '/_matrix/client/v3/joined_rooms', { token: 'T' })).sent;
    const cf = (n: number): CoapOption => uintOption(Opt.CONTENT_FORMAT, n);
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(60)], payload: encodeTrickleCbor({ room_id: 'x' }, { handleOf: () => 4 }) }, sent()), 'ERR_HANDLE_UNKNOWN');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(TrickleContentFormat.EVENT_ID)], payload: new Uint8Array(31) }, sent()), 'ERR_MATRIX_BODY');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(TrickleContentFormat.EVENT_ID)], payload: new Uint8Array(33) }, sent()), 'ERR_MATRIX_BODY');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 1), options: [cf(TrickleContentFormat.EVENT_ID)], payload: new Uint8Array(32) }, sent()), 'ERR_MATRIX_BODY');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(TrickleContentFormat.TEXT_MESSAGE)], payload: utf8.encode('x') }, sent()), 'ERR_MATRIX_BODY');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(65099)], payload: utf8.encode('x') }, sent()), 'ERR_MATRIX_BODY');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(65002)], payload: utf8.encode('x') }, sent()), 'ERR_INFLATE'); // not DEFLATE
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), uintOption(TRICKLE_OPT_HANDLE_BASE, HANDLE_LIMIT - 1)], payload: encodeTrickleCbor(['@a:b', '@c:d']) }, sent()), 'ERR_COAP_OPTION');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), { number: TRICKLE_OPT_HANDLE_BASE, value: new Uint8Array(4) }], payload: encodeTrickleCbor(['@a:b']) }, sent()), 'ERR_COAP_OPTION');
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), uintOption(TRICKLE_OPT_SESSION_ERROR, 3)], payload: new Uint8Array(0) }, sent()), 'ERR_COAP_OPTION');
    h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), uintOption(TRICKLE_OPT_HANDLE_BASE, 7)], payload: encodeTrickleCbor(['@a:b']) }, sent());
    expectWire(() => h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), uintOption(TRICKLE_OPT_HANDLE_BASE, 7)], payload: encodeTrickleCbor(['@other:b']) }, sent()), 'ERR_MATRIX_HANDLE_CONFLICT');
    // A rejected message defines nothing.
    expect(h.exportState().handles).toEqual([[7, '@a:b']]);
    // The same definition again (a duplicate delivery) is fine.
    h.decodeResponse({ code: makeCode(2, 5), options: [cf(60), uintOption(TRICKLE_OPT_HANDLE_BASE, 7)], payload: encodeTrickleCbor(['@a:b']) }, sent());
  });

  it('no single bit flip in a compact send frame turns into a different valid request at this layer', async () => {
    const { link } = await warmLink();
    const enc = link.host.encodeRequest(req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/t1`, { token: TOKEN, body: { msgtype: 'm.text', body: 'Hello World' } }));
    const msg: CoapMessage = { type: CON, code: enc.code, mid: 1, token: sequenceToken(1), options: enc.options, payload: enc.payload };
    const frame = encodeCompact(msg, createCompactContext());
    const original = link.gateway.decodeRequest({ ...enc, token: sequenceToken(1) });
    let same = 0; let rejected = 0; let differentButValid = 0;
    for (let bit = 0; bit < frame.length * 8; bit++) {
      const f = frame.slice();
      f[bit >> 3]! ^= 1 << (bit & 7);
      let m: CoapMessage;
      try { m = decodeCompact(f, createCompactContext()); } catch { rejected++; continue; }
      try {
        const r = link.gateway.decodeRequest({ ...m });
        if (r.path === original.path && utf8.decode(r.body) === utf8.decode(original.body)) same++; else differentButValid++;
      } catch (e) {
        expect(isTrickleError(e)).toBe(true);
        rejected++;
      }
    }
    // Flips inside the text or the handle number give another well-formed request: the
    // compact form has no check of its own (compact.ts "Integrity"): the secure layer's AEAD
    // rejects them. Everything structural is rejected with a code.
    expect(rejected + same + differentButValid).toBe(frame.length * 8);
    expect(rejected).toBeGreaterThan(0);
  });
});

describe('on-air sizes (compact form, fresh context)', () => {
  it('send "Hello World" to a room with a confirmed handle ≤ 15 B, its answer ≤ 35 B, sync since=~N', async () => {
    const { link } = await warmLink();
    const A = createCompactContext();
    const B = createCompactContext();
    const sizes: Record<string, number> = {};
    let seq = 0;
    const roundTrip = (name: string, r: ReturnType<typeof req>, res: (at: ReturnType<typeof link.gateway.decodeRequest>) => ReturnType<typeof ok>): void => {
      seq++;
      const enc = link.host.encodeRequest(r);
      const m: CoapMessage = { type: CON, code: enc.code, mid: seq, token: sequenceToken(seq), options: enc.options, payload: enc.payload };
      const f = encodeCompact(m, A);
      const got = decodeCompact(f, B);
      sizes[`${name} (${compactRuleFor(m).name})`] = f.length;
      const at = link.gateway.decodeRequest({ ...got });
      const w = link.gateway.encodeResponse(res(at), at);
      const a: CoapMessage = { type: ACK, code: w.code, mid: got.mid, token: got.token, options: w.options, payload: w.payload };
      const fa = encodeCompact(a, B);
      sizes[`${name} answer (${compactRuleFor(a).name})`] = fa.length;
      const back = decodeCompact(fa, A);
      expect(link.host.decodeResponse(back, enc.sent).kind).toBe('response');
    };
    roundTrip('send Hello World', req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.room.message/m1`, { token: TOKEN, body: { msgtype: 'm.text', body: 'Hello World' } }), () => ok({ event_id: eventId(77) }));
    roundTrip('sync since=~N', req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'since=s2_77_0_1&timeout=30000' }), () => ok({ next_batch: 's3_77_0_1' }));
    roundTrip('sync since=~N filter=~F', req('GET', '/_matrix/client/v3/sync', { token: TOKEN, query: 'filter=0&since=s3_77_0_1&timeout=30000' }), () => ok({ next_batch: 's4_77_0_1', rooms: { join: { [ROOM]: { timeline: { events: [{ type: 'm.room.message', sender: BOB, event_id: eventId(9), origin_server_ts: 1700000000000, content: { msgtype: 'm.text', body: 'Hello World' } }] } } } } }));
    roundTrip('reaction', req('PUT', `/_matrix/client/v3/rooms/${ROOM}/send/m.reaction/m2`, { token: TOKEN, body: { 'm.relates_to': { rel_type: 'm.annotation', event_id: eventId(9), key: '👍' } } }), () => ok({ event_id: eventId(78) }));
    console.log('compact sizes:', JSON.stringify(sizes, null, 1));
    expect(sizes['send Hello World (send-text)']).toBeLessThanOrEqual(15);
    expect(sizes['send Hello World answer (ack-event-id)']).toBeLessThanOrEqual(35);
    expect(sizes['sync since=~N (sync)']).toBeLessThanOrEqual(8);
  });
});

describe('two accounts on one kit: a request that left its token out never runs as the other account', () => {
  it('a request carrying a new token waits until requests relying on the old one are answered', async () => {
    const link = new Link('acct', (r) => ok({ user_id: r.accessToken === 'tok-alice' ? '@alice:hs' : r.accessToken === 'tok-bob' ? '@bob:hs' : '?' }));
    const who = '/_matrix/client/v3/account/whoami';
    // Alice's first request confirms her token at the gateway.
    await link.host.carry(req('GET', who, { token: 'tok-alice' }), async (enc) => link.send(enc)!);
    // Her next request leaves the token out and is slow (lost, being retransmitted).
    let releaseAlice!: () => void;
    const aliceDone = new Promise<void>((r) => { releaseAlice = r; });
    const order: string[] = [];
    const alice = link.host.carry(req('GET', who, { token: 'tok-alice' }), async (enc) => {
      expect(getOption(enc.options, MSC3079_OPT_AUTHORIZATION)).toBeUndefined();
      await aliceDone;
      order.push('alice at gateway');
      return link.send(enc)!;
    });
    // Bob's request carries his token: it must not reach the gateway before alice's.
    const bob = link.host.carry(req('GET', who, { token: 'tok-bob' }), async (enc) => {
      expect(getOption(enc.options, MSC3079_OPT_AUTHORIZATION)).toBeDefined();
      order.push('bob at gateway');
      return link.send(enc)!;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual([]);
    releaseAlice();
    const [a, b] = await Promise.all([alice, bob]);
    expect(order).toEqual(['alice at gateway', 'bob at gateway']);
    expect(parse(a.body)).toEqual({ user_id: '@alice:hs' });
    expect(parse(b.body)).toEqual({ user_id: '@bob:hs' });
    // Alice after bob: her token goes out again (the gateway holds bob's now).
    const a2 = await link.host.carry(req('GET', who, { token: 'tok-alice' }), async (enc) => {
      expect(getOption(enc.options, MSC3079_OPT_AUTHORIZATION)).toBeDefined();
      return link.send(enc)!;
    });
    expect(parse(a2.body)).toEqual({ user_id: '@alice:hs' });
  });
});
