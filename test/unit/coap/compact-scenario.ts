/**
 * One session between a host (A, the client) and a gateway (B), as the matrix layer
 * shapes its messages: every compact rule and header form appears at least once. Used
 * by compact.test.ts (against test/vectors/coap/compact-v1.json), by the tshark check,
 * and to (re)generate the vectors: `npx tsx test/unit/coap/compact-scenario.ts > test/vectors/coap/compact-v1.json`.
 */
import { fileURLToPath } from 'node:url';
import { createCompactContext, encodeCompact, decodeCompact, sequenceToken, type CompactContext } from '../../../src/coap/compact.ts';
import { encodeMessage, stringOption, uintOption, type CoapMessage, type CoapOption } from '../../../src/coap/message.ts';
import { encodeBlock } from '../../../src/coap/block.ts';
import {
  ACK, CON, EMPTY, NON, RST, Method, Opt, Response, ContentFormat, TrickleContentFormat, TRICKLE_OPT_HTTP_STATUS, TYPE_NAMES, codeToString,
} from '../../../src/coap/numbers.ts';
import { toHex, utf8 } from '../../../src/util/bytes.ts';
import { RULE_CF_CBOR_DEFLATE, RULE_OPT_HANDLE_BASE, RULE_OPT_PART } from '../../../src/coap/compact-rules-v1.ts';

export interface Step {
  readonly name: string;
  readonly from: 'A' | 'B';
  readonly rule: string;
  readonly msg: CoapMessage;
}

const E = new Uint8Array(0);
const path = (...s: string[]): CoapOption[] => s.map((x) => stringOption(Opt.URI_PATH, x));
const query = (...s: string[]): CoapOption[] => s.map((x) => stringOption(Opt.URI_QUERY, x));
const cf = (n: number): CoapOption => uintOption(Opt.CONTENT_FORMAT, n);
const block = (number: number, num: number, more: boolean, szx: number): CoapOption => ({ number, value: encodeBlock({ num, more, szx }) });
const tok = sequenceToken;
/** CBOR {"errcode": "M_NOT_FOUND"}-ish bytes; content does not matter here. */
const cbor = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (0xa0 + i * 7) & 0xff);
const eventId = Uint8Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff);
export const MSC3079_OPT_AUTHORIZATION = 256;

/** A's sequence numbers start at 1 (CoapEndpoint's default); B's too. */
export function scenario(): Step[] {
  return [
    { name: 'send Hello World (fresh request)', from: 'A', rule: 'send-text',
      msg: { type: CON, code: Method.PUT, mid: 1, token: tok(1), options: [...path('9', '~3', 'm.room.message'), cf(TrickleContentFormat.TEXT_MESSAGE)], payload: utf8.encode('Hello World') } },
    { name: 'its piggybacked event id', from: 'B', rule: 'ack-event-id',
      msg: { type: ACK, code: Response.CONTENT, mid: 1, token: tok(1), options: [cf(TrickleContentFormat.EVENT_ID)], payload: eventId } },
    { name: 'send a reaction (CBOR)', from: 'A', rule: 'send-event',
      msg: { type: CON, code: Method.PUT, mid: 2, token: tok(2), options: [...path('9', '~3', 'm.reaction'), cf(ContentFormat.CBOR)], payload: cbor(20) } },
    { name: 'its answer as CBOR', from: 'B', rule: 'ack-content-cbor',
      msg: { type: ACK, code: Response.CONTENT, mid: 2, token: tok(2), options: [cf(ContentFormat.CBOR)], payload: cbor(10) } },
    { name: 'long-poll sync', from: 'A', rule: 'sync',
      msg: { type: CON, code: Method.GET, mid: 3, token: tok(3), options: [...path('7'), ...query('since=~7', 'timeout=30000')], payload: E } },
    { name: 'empty ACK for the sync', from: 'B', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 3, token: E, options: [], payload: E } },
    { name: 'separate sync response', from: 'B', rule: 'con-content-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 1, token: tok(3), options: [cf(ContentFormat.CBOR)], payload: cbor(40) } },
    { name: 'ACK of the separate response', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 1, token: E, options: [], payload: E } },
    { name: 'get an event', from: 'A', rule: 'get',
      msg: { type: CON, code: Method.GET, mid: 4, token: tok(4), options: path('A', '~3', '$YUwRidLecu4WRN1Cs9Rg2k5aJRKfbiT8OgkxSHCNg4A'), payload: E } },
    { name: 'block 0 of a big answer', from: 'B', rule: 'ack-block2-first-cbor',
      msg: { type: ACK, code: Response.CONTENT, mid: 4, token: tok(4), options: [cf(ContentFormat.CBOR), block(Opt.BLOCK2, 0, true, 3), uintOption(Opt.SIZE2, 300)], payload: cbor(128) } },
    { name: 'Block2 follow-up (token = S − 1)', from: 'A', rule: 'get-block2',
      msg: { type: CON, code: Method.GET, mid: 5, token: tok(4), options: [...path('A', '~3', '$YUwRidLecu4WRN1Cs9Rg2k5aJRKfbiT8OgkxSHCNg4A'), block(Opt.BLOCK2, 1, false, 3)], payload: E } },
    { name: 'block 1', from: 'B', rule: 'ack-block2',
      msg: { type: ACK, code: Response.CONTENT, mid: 5, token: tok(4), options: [block(Opt.BLOCK2, 1, true, 3)], payload: cbor(128) } },
    { name: 'sync Block2 follow-up', from: 'A', rule: 'sync-block2',
      msg: { type: CON, code: Method.GET, mid: 6, token: tok(3), options: [...path('7'), ...query('since=~7', 'timeout=30000'), block(Opt.BLOCK2, 1, false, 3)], payload: E } },
    { name: 'a Matrix error (4.04, CBOR)', from: 'B', rule: 'ack-cbor',
      msg: { type: ACK, code: Response.NOT_FOUND, mid: 6, token: tok(3), options: [cf(ContentFormat.CBOR)], payload: cbor(12) } },
    { name: 'set the room name (state, empty state key)', from: 'A', rule: 'put-cbor',
      msg: { type: CON, code: Method.PUT, mid: 7, token: tok(7), options: [...path('8', '~3', 'm.room.name', ''), cf(ContentFormat.CBOR)], payload: cbor(9) } },
    { name: '2.04 without a body', from: 'B', rule: 'ack-code',
      msg: { type: ACK, code: Response.CHANGED, mid: 7, token: tok(7), options: [], payload: E } },
    { name: 'join a room by alias (POST, CBOR, query)', from: 'A', rule: 'post-cbor',
      msg: { type: CON, code: Method.POST, mid: 8, token: tok(8), options: [...path('L', '#trickle:example.org'), cf(ContentFormat.CBOR), ...query('server_name=example.org')], payload: cbor(1) } },
    { name: 'logout (POST, no body)', from: 'A', rule: 'post',
      msg: { type: CON, code: Method.POST, mid: 9, token: tok(9), options: path('3'), payload: E } },
    { name: 'delete a device', from: 'A', rule: 'delete',
      msg: { type: CON, code: Method.DELETE, mid: 10, token: tok(10), options: path('e', 'QWERTYUIOP'), payload: E } },
    { name: 'first request of a session: access token + Block1', from: 'A', rule: 'request',
      msg: { type: CON, code: Method.PUT, mid: 11, token: tok(11), options: [...path('9', '~3', 'm.room.message'), cf(ContentFormat.CBOR), block(Opt.BLOCK1, 0, true, 2), uintOption(Opt.SIZE1, 100), { number: MSC3079_OPT_AUTHORIZATION, value: utf8.encode('syt_dGVzdA_abcdefghij_0123') }], payload: cbor(64) } },
    { name: '2.31 Continue', from: 'B', rule: 'ack-continue',
      msg: { type: ACK, code: Response.CONTINUE, mid: 11, token: tok(11), options: [block(Opt.BLOCK1, 0, true, 2)], payload: E } },
    { name: 'Block1 follow-up 10 behind (token = S − 1 … form B)', from: 'A', rule: 'request',
      msg: { type: CON, code: Method.PUT, mid: 12, token: tok(11), options: [...path('9', '~3', 'm.room.message'), cf(ContentFormat.CBOR), block(Opt.BLOCK1, 1, false, 2)], payload: cbor(36) } },
    { name: 'exact HTTP status (409) in 4.00', from: 'B', rule: 'ack-response',
      msg: { type: ACK, code: Response.BAD_REQUEST, mid: 12, token: tok(11), options: [cf(ContentFormat.CBOR), block(Opt.BLOCK1, 1, false, 2), uintOption(TRICKLE_OPT_HTTP_STATUS, 409)], payload: cbor(30) } },
    { name: 'typing as NON', from: 'A', rule: 'non-request',
      msg: { type: NON, code: Method.PUT, mid: 13, token: tok(13), options: [...path('Y', '~3', '~1'), cf(ContentFormat.CBOR)], payload: cbor(8) } },
    { name: 'NON answer', from: 'B', rule: 'non-response',
      msg: { type: NON, code: Response.CONTENT, mid: 2, token: tok(13), options: [], payload: cbor(1) } },
    { name: 'send, slow homeserver', from: 'A', rule: 'send-text',
      msg: { type: CON, code: Method.PUT, mid: 14, token: tok(14), options: [...path('9', '~3', 'm.room.message'), cf(TrickleContentFormat.TEXT_MESSAGE)], payload: utf8.encode('ünïcødé ✓') } },
    { name: 'empty ACK', from: 'B', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 14, token: E, options: [], payload: E } },
    { name: 'separate event id', from: 'B', rule: 'con-event-id',
      msg: { type: CON, code: Response.CONTENT, mid: 3, token: tok(14), options: [cf(TrickleContentFormat.EVENT_ID)], payload: eventId } },
    { name: 'ACK of it', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 3, token: E, options: [], payload: E } },
    { name: 'members (GET with query)', from: 'A', rule: 'get',
      msg: { type: CON, code: Method.GET, mid: 15, token: tok(15), options: [...path('C', '~3'), ...query('membership=join', 'at=~12', 'limit=20', 'x-custom=1')], payload: E } },
    { name: 'empty ACK', from: 'B', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 15, token: E, options: [], payload: E } },
    { name: 'separate, block 0', from: 'B', rule: 'con-block2-first-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 4, token: tok(15), options: [cf(ContentFormat.CBOR), block(Opt.BLOCK2, 0, true, 3), uintOption(Opt.SIZE2, 1000)], payload: cbor(128) } },
    { name: 'RST: the client gave up on it', from: 'A', rule: 'rst',
      msg: { type: RST, code: EMPTY, mid: 4, token: E, options: [], payload: E } },
    { name: 'separate 4.29 with no body', from: 'B', rule: 'con-response',
      msg: { type: CON, code: Response.TOO_MANY_REQUESTS, mid: 5, token: tok(15), options: [uintOption(Opt.MAX_AGE, 60)], payload: E } },
    { name: 'CoAP ping (CON Empty): uncompressed', from: 'A', rule: 'rfc7252',
      msg: { type: CON, code: EMPTY, mid: 16, token: E, options: [], payload: E } },
    { name: 'a foreign random token (explicit header form)', from: 'A', rule: 'get',
      msg: { type: CON, code: Method.GET, mid: 17, token: Uint8Array.of(0xde, 0xad), options: path('I'), payload: E } },
    { name: 'a jump far ahead (full sequence number, form D)', from: 'A', rule: 'sync',
      msg: { type: CON, code: Method.GET, mid: 1000 & 0xffff, token: tok(1000), options: [...path('7'), ...query('since=s72594_4483_1934', 'filter=~2', 'set_presence=offline')], payload: E } },
  ];
}

/**
 * An RFC 7641 observation between the same two ends, from fresh contexts: registration,
 * first response, notifications (both Observe rules and all 'ntf' header forms), a large
 * notification fetched with the registration token, RST, deregistration. Vectors:
 * test/vectors/coap/compact-v1-observe.json (`npx tsx test/unit/coap/compact-scenario.ts observe`).
 */
export function observeScenario(): Step[] {
  const sync = [...path('7'), ...query('since=~7', 'timeout=30000')];
  const observe = (n: number): CoapOption => uintOption(Opt.OBSERVE, n);
  return [
    { name: 'register: sync with Observe = 0', from: 'A', rule: 'request',
      msg: { type: CON, code: Method.GET, mid: 1, token: tok(1), options: [observe(0), ...sync], payload: E } },
    { name: 'empty ACK of the registration', from: 'B', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 1, token: E, options: [], payload: E } },
    { name: 'first response (separate CON, Observe = S)', from: 'B', rule: 'notify-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 1, token: tok(1), options: [observe(1), cf(ContentFormat.CBOR)], payload: cbor(30) } },
    { name: 'its ACK', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 1, token: E, options: [], payload: E } },
    { name: 'notification, 40-byte CBOR delta', from: 'B', rule: 'notify-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 2, token: tok(1), options: [observe(2), cf(ContentFormat.CBOR)], payload: cbor(40) } },
    { name: 'ACK of the notification', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 2, token: E, options: [], payload: E } },
    { name: 'large notification, block 0', from: 'B', rule: 'notify-block2-first-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 3, token: tok(1), options: [observe(3), cf(ContentFormat.CBOR), block(Opt.BLOCK2, 0, true, 3), uintOption(Opt.SIZE2, 200)], payload: cbor(128) } },
    { name: 'ACK of block 0', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 3, token: E, options: [], payload: E } },
    { name: 'fetch block 1 with the registration token', from: 'A', rule: 'sync-block2',
      msg: { type: CON, code: Method.GET, mid: 2, token: tok(1), options: [...sync, block(Opt.BLOCK2, 1, false, 3)], payload: E } },
    { name: 'block 1', from: 'B', rule: 'ack-block2',
      msg: { type: ACK, code: Response.CONTENT, mid: 2, token: tok(1), options: [block(Opt.BLOCK2, 1, false, 3)], payload: cbor(72) } },
    { name: 're-sent notification keeps its Observe value (form 1101)', from: 'B', rule: 'notify-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 4, token: tok(1), options: [observe(2), cf(ContentFormat.CBOR)], payload: cbor(40) } },
    { name: 'ACK of the re-send', from: 'A', rule: 'ack',
      msg: { type: ACK, code: EMPTY, mid: 4, token: E, options: [], payload: E } },
    { name: 'notification for a foreign token (form 1100)', from: 'B', rule: 'notify-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 5, token: Uint8Array.of(0xbe, 0xef), options: [observe(5), cf(ContentFormat.CBOR)], payload: cbor(4) } },
    { name: 'RST: no such observation', from: 'A', rule: 'rst',
      msg: { type: RST, code: EMPTY, mid: 5, token: E, options: [], payload: E } },
    { name: 'deregister: Observe = 1', from: 'A', rule: 'request',
      msg: { type: CON, code: Method.GET, mid: 3, token: tok(1), options: [observe(1), ...sync], payload: E } },
    { name: 'its answer', from: 'B', rule: 'ack-content-cbor',
      msg: { type: ACK, code: Response.CONTENT, mid: 3, token: tok(1), options: [cf(ContentFormat.CBOR)], payload: cbor(2) } },
  ];
}

/**
 * The rules appended to v1 for responses that define handles and for push-sync parts
 * (notify-*-handles, notify-*-part, ack-content-*-handles), from fresh contexts. Vectors:
 * test/vectors/coap/compact-v1-handles.json (`npx tsx test/unit/coap/compact-scenario.ts handles`).
 */
export function handlesScenario(): Step[] {
  const sync = [...path('7'), ...query('timeout=30000')];
  const observe = (n: number): CoapOption => uintOption(Opt.OBSERVE, n);
  const hb = (n: number): CoapOption => uintOption(RULE_OPT_HANDLE_BASE, n);
  const part = (index: number, more: boolean): CoapOption => uintOption(RULE_OPT_PART, (index << 1) | (more ? 1 : 0));
  const ack = (mid: number): Step => ({ name: `ACK ${mid}`, from: 'A', rule: 'ack', msg: { type: ACK, code: EMPTY, mid, token: E, options: [], payload: E } });
  return [
    { name: 'register: sync with Observe = 0', from: 'A', rule: 'request',
      msg: { type: CON, code: Method.GET, mid: 1, token: tok(1), options: [observe(0), ...sync], payload: E } },
    { name: 'empty first response', from: 'B', rule: 'notify-cbor',
      msg: { type: CON, code: Response.CONTENT, mid: 1, token: tok(1), options: [observe(1), cf(ContentFormat.CBOR)], payload: Uint8Array.of(0xa0) } },
    ack(1),
    { name: 'a pushed message that names new handles', from: 'B', rule: 'notify-cbor-handles',
      msg: { type: CON, code: Response.CONTENT, mid: 2, token: tok(1), options: [observe(2), cf(ContentFormat.CBOR), hb(147)], payload: cbor(60) } },
    ack(2),
    { name: 'a deflated push that names new handles', from: 'B', rule: 'notify-deflate-handles',
      msg: { type: CON, code: Response.CONTENT, mid: 3, token: tok(1), options: [observe(3), cf(RULE_CF_CBOR_DEFLATE), hb(200)], payload: cbor(90) } },
    ack(3),
    { name: 'part 0 of a split body, with handles', from: 'B', rule: 'notify-cbor-handles-part',
      msg: { type: CON, code: Response.CONTENT, mid: 4, token: tok(1), options: [observe(4), cf(ContentFormat.CBOR), hb(260), part(0, true)], payload: cbor(200) } },
    ack(4),
    { name: 'part 1 (last)', from: 'B', rule: 'notify-part',
      msg: { type: CON, code: Response.CONTENT, mid: 5, token: tok(1), options: [observe(5), part(1, false)], payload: cbor(120) } },
    ack(5),
    { name: 'part 0 of a split deflated body, with handles', from: 'B', rule: 'notify-deflate-handles-part',
      msg: { type: CON, code: Response.CONTENT, mid: 6, token: tok(1), options: [observe(6), cf(RULE_CF_CBOR_DEFLATE), hb(300), part(0, true)], payload: cbor(200) } },
    ack(6),
    { name: 'part 0 of a split body without new handles', from: 'B', rule: 'notify-cbor-part',
      msg: { type: CON, code: Response.CONTENT, mid: 7, token: tok(1), options: [observe(7), cf(ContentFormat.CBOR), part(0, true)], payload: cbor(200) } },
    ack(7),
    { name: 'part 1 of 3', from: 'B', rule: 'notify-part',
      msg: { type: CON, code: Response.CONTENT, mid: 8, token: tok(1), options: [observe(8), part(1, true)], payload: cbor(200) } },
    ack(8),
    { name: 'a join', from: 'A', rule: 'post',
      msg: { type: CON, code: Method.POST, mid: 2, token: tok(2), options: [...path('K', '!room:hs')], payload: E } },
    { name: 'its answer names a handle', from: 'B', rule: 'ack-content-cbor-handles',
      msg: { type: ACK, code: Response.CONTENT, mid: 2, token: tok(2), options: [cf(ContentFormat.CBOR), hb(301)], payload: cbor(12) } },
    { name: 'a polled sync', from: 'A', rule: 'sync',
      msg: { type: CON, code: Method.GET, mid: 3, token: tok(3), options: [...sync], payload: E } },
    { name: 'its deflated answer names handles', from: 'B', rule: 'ack-content-deflate-handles',
      msg: { type: ACK, code: Response.CONTENT, mid: 3, token: tok(3), options: [cf(RULE_CF_CBOR_DEFLATE), hb(302)], payload: cbor(150) } },
  ];
}

export interface VectorStep {
  name: string;
  from: 'A' | 'B';
  rule: string;
  type: string;
  code: string;
  mid: number;
  token: string;
  rfc7252: string;
  compact: string;
}

/** Runs the scenario through two fresh contexts (initialSeq 0). */
export function runScenario(steps0: Step[] = scenario()): { steps: VectorStep[]; ctxA: CompactContext; ctxB: CompactContext } {
  const ctxA = createCompactContext();
  const ctxB = createCompactContext();
  const steps = steps0.map((s) => {
    const [tx, rx] = s.from === 'A' ? [ctxA, ctxB] : [ctxB, ctxA];
    const compact = encodeCompact(s.msg, tx);
    decodeCompact(compact, rx);
    return {
      name: s.name, from: s.from, rule: s.rule, type: TYPE_NAMES[s.msg.type], code: codeToString(s.msg.code),
      mid: s.msg.mid, token: toHex(s.msg.token), rfc7252: toHex(encodeMessage(s.msg)), compact: toHex(compact),
    };
  });
  return { steps, ctxA, ctxB };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2] === 'handles') {
  process.stdout.write(`${JSON.stringify({
    description: 'Compact CoAP header form, rules v1, the rules appended for responses that name handles and for push-sync parts '
      + '(notify-cbor-handles … ack-content-deflate-handles; src/coap/compact-rules-v1.ts), host (A) and gateway (B), in order, '
      + 'from two fresh contexts (initialSeq 0). Same format as compact-v1.json. Regenerate only together with a new rules version.',
    steps: runScenario(handlesScenario()).steps,
  }, null, 2)}\n`);
} else if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2] === 'observe') {
  process.stdout.write(`${JSON.stringify({
    description: 'Compact CoAP header form, rules v1, the Observe rules (notify-cbor, notify-block2-first-cbor; '
      + 'src/coap/compact-rules-v1.ts): one RFC 7641 observation between host (A) and gateway (B), in order, from two '
      + 'fresh contexts (initialSeq 0). Same format as compact-v1.json. Regenerate only together with a new rules version.',
    steps: runScenario(observeScenario()).steps,
  }, null, 2)}\n`);
} else if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.write(`${JSON.stringify({
    description: 'Compact CoAP header form, rules v1 (src/coap/compact-rules-v1.ts): one host (A) ⇄ gateway (B) session, '
      + 'in order, from two fresh contexts (initialSeq 0). Each step: the RFC 7252 message (hex) and its compact frame (hex). '
      + 'Decoding the frames in order with the receiving side\'s context yields the RFC 7252 bytes exactly. Hand-checked; '
      + 'regenerate only together with a new rules version.',
    steps: runScenario().steps,
  }, null, 2)}\n`);
}
