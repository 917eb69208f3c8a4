/**
 * Compact CoAP header form, static context version 1: the rules, as data.
 *
 * In the spirit of SCHC (RFC 8724, and RFC 8824 for CoAP): both ends hold this table;
 * byte 0 of a compact frame names a rule, the rule fixes what both ends already know
 * (type, code, the option pattern, constant option values) and says how the remaining
 * fields are carried. The engine is compact.ts; this file holds no logic.
 *
 * FROZEN WIRE TABLE. Any change to an existing rule, table entry or matching outcome is a
 * new version (compact-rules-v2.ts), negotiated in the handshake like the other tables.
 * The one kind of addition that keeps version 1: rules appended at the end that match
 * only messages no earlier rule carried in a specific form, so every frame an earlier
 * v1 encoder produced still decodes, byte for byte, to the same message and is still
 * canonical (test/vectors/coap/compact-v1.json guards this). The Observe rules (0x39,
 * 0x3a: RFC 7641 notifications) are such an addition: they need the Observe option,
 * which no specific rule before them carries. A peer built before them cannot decode
 * them (it drops the frame as an unknown rule); it never registers an observation
 * either, and our registration request travels in the generic 'request' rule it knows.
 *
 * Rule ids have EVEN PARITY (an even number of 1 bits), so a single flipped bit in the
 * rule byte always yields an unknown rule and the frame is rejected.
 *
 * Header kinds (how Message ID and token travel; compact.ts has the exact bit layouts):
 *  - 'req'  a request: own sequence number S (mid = S mod 2^16) and a token that is
 *           usually S itself or S − d (Block follow-ups): 1 byte in the common case.
 *  - 'rsp'  a separate response: own S, and the peer's request token by its 16 LSBs: 3 bytes.
 *  - 'ack'  ACK / RST: the peer's mid by its 7 LSBs, the token implied (the token of
 *           the message acknowledged): 1 byte.
 *  - 'ntf'  an Observe notification (RFC 7641 §4.2) sent as CON: own S and the
 *           registration token by its 16 LSBs, as 'rsp', and the Observe value implied
 *           as S mod 2^24 (CoapEndpoint numbers notifications that way): 3 bytes.
 *  Each kind also has an explicit form that always works (full 32-bit S or 16-bit
 *  mid, token bytes as they are).
 *
 * Field kinds (in option-number order, consuming the message's sorted options exactly):
 *  - const   one option with exactly this value: 0 bytes.
 *  - param   one option whose value is a handle "~N" (0 ≤ N < 2^21, decimal without
 *            leading zeros), a well-known string (WELL_KNOWN_STRINGS_V1) or any bytes:
 *            one varint x: x odd → handle N = (x − 1) / 2; x ≡ 2 mod 4 → well-known
 *            string (x − 2) / 4; x ≡ 0 mod 4 → x / 4 literal bytes follow.
 *  - pathEnum  one Uri-Path option that is an MSC3079 Appendix B path enum: 1 byte,
 *            index into PATH_ENUMS_V1.
 *  - segments  all remaining Uri-Path options: varint count, then `param` each.
 *  - queries   all Uri-Query options, in order: varint count, then per option one byte
 *            indexing QUERY_ITEMS_V1 (0x7F = raw: varint length + bytes) and the value
 *            the item's kind asks for.
 *  - uint    one uint option (canonical, minimal bytes) as a varint.
 *  - code    (not an option) the CoAP code byte, for rules that leave it open.
 *  - observe the Observe option (uint < 2^24), carried by the 'ntf' header: 0 bytes here.
 * Payload: 'none' (frame ends), 'rest' (every remaining byte; zero bytes = no payload),
 * { exact: n } (exactly n bytes), or 'rfc7252' (rest = RFC 7252 §3.1 options, payload
 * marker and payload, as after the token of a full message).
 *
 * Varints are unsigned LEB128, minimal, at most 5 bytes (< 2^32).
 */
import { ACK, CON, EMPTY, NON, Method, Opt, RST, Response, ContentFormat, TrickleContentFormat, type CoapType } from './numbers.ts';

export const COMPACT_RULES_VERSION = 1;

export type HeaderKind = 'req' | 'rsp' | 'ack' | 'ntf';

export type FieldSpec =
  | { readonly kind: 'const'; readonly option: number; readonly value: string | number }
  | { readonly kind: 'param'; readonly option: number }
  | { readonly kind: 'pathEnum' }
  | { readonly kind: 'segments' }
  | { readonly kind: 'queries' }
  | { readonly kind: 'uint'; readonly option: number }
  | { readonly kind: 'observe'; readonly option: typeof Opt.OBSERVE };

export type PayloadSpec = 'none' | 'rest' | 'rfc7252' | { readonly exact: number };

export interface CompactRule {
  /** Byte 0 of the frame; even parity. */
  readonly id: number;
  readonly name: string;
  /** What the rule is for (shown by `trickle frame explain`). */
  readonly doc: string;
  readonly type: CoapType;
  /** A fixed code, or 'field': one code byte follows the header. */
  readonly code: number | 'field';
  readonly header: HeaderKind;
  /** Options in ascending option-number order. Empty for 'rfc7252' payloads. */
  readonly fields: readonly FieldSpec[];
  readonly payload: PayloadSpec;
}

/** Rule 0x00: the uncompressed fallback. The rest of the frame is a whole RFC 7252 message. */
export const RULE_RFC7252 = 0x00;

/**
 * MSC3079 Appendix B path enums (version 1), in table order: 0–9, A–Z, a–u. The
 * same alphabet as codec/paths-v1.ts, repeated here because coap/ sits below codec/.
 */
export const PATH_ENUMS_V1: readonly string[] = Object.freeze(
  [...'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu'],
);

/** Strings a `param` field carries in one byte (index < 32). Event types first. */
export const WELL_KNOWN_STRINGS_V1: readonly string[] = Object.freeze([
  'm.room.message', 'm.reaction', 'm.room.member', 'm.room.name',
  'm.room.topic', 'm.room.avatar', 'm.room.encrypted', 'm.room.redaction',
  'm.room.power_levels', 'm.room.join_rules', 'm.room.history_visibility', 'm.room.canonical_alias',
  'm.room.create', 'm.room.encryption', 'm.room.pinned_events', 'm.room.guest_access',
  'm.sticker', 'm.read', 'm.read.private', 'm.fully_read',
  'm.typing', 'm.direct', 'm.push_rules', 'm.tag',
  'm.room_key_request', 'm.room_key', 'm.forwarded_room_key', 'm.key.verification.request',
  'm.ignored_user_list', 'm.call.invite', 'm.call.answer', 'm.call.hangup',
]);

/**
 * Uri-Query items. `key` items carry "key=value" with the value as the kind says
 * ('uint': canonical decimal < 2^32 as a varint; 'param': as a `param` field);
 * `const` items are whole "key=value" strings that cost the index byte alone.
 */
export type QueryItem =
  | { readonly key: string; readonly kind: 'uint' | 'param' }
  | { readonly const: string };

export const QUERY_ITEMS_V1: readonly QueryItem[] = Object.freeze([
  /* 0x00 */ { key: 'since', kind: 'param' },
  /* 0x01 */ { key: 'timeout', kind: 'uint' },
  /* 0x02 */ { key: 'filter', kind: 'param' },
  /* 0x03 */ { key: 'full_state', kind: 'param' },
  /* 0x04 */ { key: 'set_presence', kind: 'param' },
  /* 0x05 */ { key: 'limit', kind: 'uint' },
  /* 0x06 */ { key: 'from', kind: 'param' },
  /* 0x07 */ { key: 'to', kind: 'param' },
  /* 0x08 */ { key: 'dir', kind: 'param' },
  /* 0x09 */ { key: 'server_name', kind: 'param' },
  /* 0x0a */ { key: 'via', kind: 'param' },
  /* 0x0b */ { key: 'membership', kind: 'param' },
  /* 0x0c */ { key: 'not_membership', kind: 'param' },
  /* 0x0d */ { key: 'at', kind: 'param' },
  /* 0x0e */ { key: 'user_id', kind: 'param' },
  /* 0x0f */ { const: 'timeout=30000' },
  /* 0x10 */ { const: 'timeout=0' },
  /* 0x11 */ { const: 'full_state=true' },
  /* 0x12 */ { const: 'full_state=false' },
  /* 0x13 */ { const: 'set_presence=offline' },
  /* 0x14 */ { const: 'set_presence=online' },
  /* 0x15 */ { const: 'set_presence=unavailable' },
  /* 0x16 */ { const: 'dir=b' },
  /* 0x17 */ { const: 'dir=f' },
] as QueryItem[]);

/** Query item index meaning "raw Uri-Query bytes follow (varint length + bytes)". */
export const QUERY_RAW = 0x7f;

const CF = Opt.CONTENT_FORMAT;
const PATH = Opt.URI_PATH;
const cfCbor = { kind: 'const', option: CF, value: ContentFormat.CBOR } as const;
const cfEventId = { kind: 'const', option: CF, value: TrickleContentFormat.EVENT_ID } as const;
const EVENT_ID_BYTES = 32;
/**
 * Options of the matrix layer that the appended rules below fix (numbers only; this layer does
 * not interpret them): Handle-Base (matrix/session-wire.ts TRICKLE_OPT_HANDLE_BASE), the
 * push-sync Part (matrix/sync-parts.ts TRICKLE_OPT_PART) and the deflated Trickle CBOR
 * Content-Format (session-wire.ts CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE). A test checks they agree.
 */
export const RULE_OPT_HANDLE_BASE = 65008;
export const RULE_OPT_PART = 65013;
export const RULE_CF_CBOR_DEFLATE = 65002;
const cfDeflate = { kind: 'const', option: CF, value: RULE_CF_CBOR_DEFLATE } as const;
const observe = { kind: 'observe', option: Opt.OBSERVE } as const;
const handleBase = { kind: 'uint', option: RULE_OPT_HANDLE_BASE } as const;
const part = { kind: 'uint', option: RULE_OPT_PART } as const;

/**
 * The rules. Matching order: the encoder uses the first rule in table order that
 * matches the message exactly among the specific rules (payload not 'rfc7252'), else
 * the first generic one ('rfc7252' payload), else rule 0. (Until the Observe rules were
 * appended, every specific rule stood before every generic rule of its type and code
 * class, so this order is the table order for every message an earlier encoder saw.)
 */
export const COMPACT_RULES_V1: readonly CompactRule[] = Object.freeze(([
  {
    id: RULE_RFC7252, name: 'rfc7252', type: CON, code: 'field', header: 'req', fields: [], payload: 'rfc7252',
    doc: 'Uncompressed fallback: the rest of the frame is one whole RFC 7252 message (any type, code, mid, token). '
      + 'Carries what no other rule does (NON/CON Empty pings, exotic shapes); it leaves the LSB state alone. '
      + '(type, code and header here are placeholders: they come from the embedded message.)',
  },
  // ------------------------------------------------------------------ requests (CON)
  {
    id: 0x03, name: 'send-text', type: CON, code: Method.PUT, header: 'req',
    fields: [{ kind: 'const', option: PATH, value: '9' }, { kind: 'param', option: PATH },
      { kind: 'const', option: PATH, value: 'm.room.message' }, { kind: 'const', option: CF, value: TrickleContentFormat.TEXT_MESSAGE }],
    payload: 'rest',
    doc: 'Send an m.text message: PUT /9/{room}/m.room.message (txn id omitted: the gateway derives it from the token), '
      + 'Content-Format TEXT_MESSAGE, payload = the UTF-8 body.',
  },
  {
    id: 0x05, name: 'send-event', type: CON, code: Method.PUT, header: 'req',
    fields: [{ kind: 'const', option: PATH, value: '9' }, { kind: 'param', option: PATH }, { kind: 'param', option: PATH }, cfCbor],
    payload: 'rest',
    doc: 'Send any room event: PUT /9/{room}/{eventType}, CBOR content.',
  },
  {
    id: 0x06, name: 'sync', type: CON, code: Method.GET, header: 'req',
    fields: [{ kind: 'const', option: PATH, value: '7' }, { kind: 'queries' }],
    payload: 'none',
    doc: 'GET /7 (sync) with its query (since, timeout, filter, …).',
  },
  {
    id: 0x09, name: 'sync-block2', type: CON, code: Method.GET, header: 'req',
    fields: [{ kind: 'const', option: PATH, value: '7' }, { kind: 'queries' }, { kind: 'uint', option: Opt.BLOCK2 }],
    payload: 'none',
    doc: 'A Block2 follow-up of a sync response: GET /7 with its query and Block2.',
  },
  {
    id: 0x0a, name: 'get', type: CON, code: Method.GET, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, { kind: 'queries' }],
    payload: 'none',
    doc: 'GET /{pathEnum}/{params…}?{query}.',
  },
  {
    id: 0x0c, name: 'get-block2', type: CON, code: Method.GET, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, { kind: 'queries' }, { kind: 'uint', option: Opt.BLOCK2 }],
    payload: 'none',
    doc: 'A Block2 follow-up of a GET: the same request plus Block2.',
  },
  {
    id: 0x0f, name: 'put-cbor', type: CON, code: Method.PUT, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, cfCbor, { kind: 'queries' }],
    payload: 'rest',
    doc: 'PUT /{pathEnum}/{params…}?{query} with a CBOR body (state events, typing, tags, …).',
  },
  {
    id: 0x11, name: 'post-cbor', type: CON, code: Method.POST, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, cfCbor, { kind: 'queries' }],
    payload: 'rest',
    doc: 'POST /{pathEnum}/{params…}?{query} with a CBOR body (login, createRoom, join, receipts, read markers, …).',
  },
  {
    id: 0x12, name: 'post', type: CON, code: Method.POST, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, { kind: 'queries' }],
    payload: 'none',
    doc: 'POST /{pathEnum}/{params…}?{query} without a body.',
  },
  {
    id: 0x14, name: 'delete', type: CON, code: Method.DELETE, header: 'req',
    fields: [{ kind: 'pathEnum' }, { kind: 'segments' }, { kind: 'queries' }],
    payload: 'none',
    doc: 'DELETE /{pathEnum}/{params…}?{query}.',
  },
  {
    id: 0x17, name: 'request', type: CON, code: 'field', header: 'req', fields: [], payload: 'rfc7252',
    doc: 'Any CON request: code byte, compressed header, then options and payload as in RFC 7252 '
      + '(Block1 transfers, the access token on the first request, unusual paths).',
  },
  {
    id: 0x18, name: 'non-request', type: NON, code: 'field', header: 'req', fields: [], payload: 'rfc7252',
    doc: 'Any NON request: as "request".',
  },
  // ------------------------------------------------------- ACK / RST (piggybacked)
  {
    id: 0x1b, name: 'ack', type: ACK, code: EMPTY, header: 'ack', fields: [], payload: 'none',
    doc: 'Empty ACK (RFC 7252 §4.2): rule + 1 byte.',
  },
  {
    id: 0x1d, name: 'rst', type: RST, code: EMPTY, header: 'ack', fields: [], payload: 'none',
    doc: 'RST (RFC 7252 §4.2, §4.3).',
  },
  {
    id: 0x1e, name: 'ack-event-id', type: ACK, code: Response.CONTENT, header: 'ack', fields: [cfEventId],
    payload: { exact: EVENT_ID_BYTES },
    doc: 'Piggybacked 2.05 with an event id (the answer to a send): Content-Format EVENT_ID, exactly 32 bytes.',
  },
  {
    id: 0x21, name: 'ack-content-cbor', type: ACK, code: Response.CONTENT, header: 'ack', fields: [cfCbor], payload: 'rest',
    doc: 'Piggybacked 2.05 with a CBOR body.',
  },
  {
    id: 0x22, name: 'ack-cbor', type: ACK, code: 'field', header: 'ack', fields: [cfCbor], payload: 'rest',
    doc: 'Piggybacked response of any code with a CBOR body (2.01, Matrix errors as 4.xx).',
  },
  {
    id: 0x24, name: 'ack-code', type: ACK, code: 'field', header: 'ack', fields: [], payload: 'none',
    doc: 'Piggybacked response of any code, no options, no payload.',
  },
  {
    id: 0x27, name: 'ack-continue', type: ACK, code: Response.CONTINUE, header: 'ack',
    fields: [{ kind: 'uint', option: Opt.BLOCK1 }], payload: 'none',
    doc: '2.31 Continue with the Block1 echo (RFC 7959 §2.3).',
  },
  {
    id: 0x28, name: 'ack-block2-first-cbor', type: ACK, code: Response.CONTENT, header: 'ack',
    fields: [cfCbor, { kind: 'uint', option: Opt.BLOCK2 }, { kind: 'uint', option: Opt.SIZE2 }], payload: 'rest',
    doc: 'Block 0 of a big CBOR 2.05 response: Block2 and Size2 (RFC 7959 §2.4, §4).',
  },
  {
    id: 0x2b, name: 'ack-block2', type: ACK, code: Response.CONTENT, header: 'ack',
    fields: [{ kind: 'uint', option: Opt.BLOCK2 }], payload: 'rest',
    doc: 'A later block of a 2.05 response (representation options ride in block 0 only).',
  },
  {
    id: 0x2d, name: 'ack-response', type: ACK, code: 'field', header: 'ack', fields: [], payload: 'rfc7252',
    doc: 'Any piggybacked response: code byte, then RFC 7252 options and payload.',
  },
  // ---------------------------------------------------- separate responses (CON)
  {
    id: 0x2e, name: 'con-event-id', type: CON, code: Response.CONTENT, header: 'rsp', fields: [cfEventId],
    payload: { exact: EVENT_ID_BYTES },
    doc: 'Separate 2.05 with an event id.',
  },
  {
    id: 0x30, name: 'con-content-cbor', type: CON, code: Response.CONTENT, header: 'rsp', fields: [cfCbor], payload: 'rest',
    doc: 'Separate 2.05 with a CBOR body (the answer to a long poll).',
  },
  {
    id: 0x33, name: 'con-block2-first-cbor', type: CON, code: Response.CONTENT, header: 'rsp',
    fields: [cfCbor, { kind: 'uint', option: Opt.BLOCK2 }, { kind: 'uint', option: Opt.SIZE2 }], payload: 'rest',
    doc: 'Separate 2.05, block 0 of a big CBOR body.',
  },
  {
    id: 0x35, name: 'con-response', type: CON, code: 'field', header: 'rsp', fields: [], payload: 'rfc7252',
    doc: 'Any separate CON response: code byte, then RFC 7252 options and payload.',
  },
  {
    id: 0x36, name: 'non-response', type: NON, code: 'field', header: 'rsp', fields: [], payload: 'rfc7252',
    doc: 'Any NON response (the answer to a NON request).',
  },
  // ----------------------------------------- Observe notifications (RFC 7641, CON)
  {
    id: 0x39, name: 'notify-cbor', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [{ kind: 'observe', option: Opt.OBSERVE }, cfCbor], payload: 'rest',
    doc: 'A 2.05 Observe notification (or the separate first response of a registration) with a CBOR body: '
      + 'rule + S LSBs + 16 registration-token LSBs, Observe implied as S mod 2^24 (RFC 7641 §4.2).',
  },
  {
    id: 0x3a, name: 'notify-block2-first-cbor', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [{ kind: 'observe', option: Opt.OBSERVE }, cfCbor, { kind: 'uint', option: Opt.BLOCK2 }, { kind: 'uint', option: Opt.SIZE2 }],
    payload: 'rest',
    doc: 'Block 0 of a large CBOR notification (RFC 7959 §3.4 with RFC 7641): Block2 and Size2; '
      + 'the client fetches the rest with the registration token.',
  },
  // Appended (still v1, see the header): responses that define handles and push-sync parts.
  // Every message they match went as a generic rule ('ack-response', 'con-response' or rule 0)
  // before, never as a specific one.
  {
    id: 0x3c, name: 'notify-cbor-handles', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, cfCbor, handleBase], payload: 'rest',
    doc: 'A push-sync notification that names new handles: Handle-Base as a varint.',
  },
  {
    id: 0x3f, name: 'notify-deflate-handles', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, cfDeflate, handleBase], payload: 'rest',
    doc: 'The same with a DEFLATE-compressed Trickle CBOR body.',
  },
  {
    id: 0x41, name: 'notify-part', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, part], payload: 'rest',
    doc: 'A later part of a push-sync body split across notifications (matrix/sync-parts.ts).',
  },
  {
    id: 0x42, name: 'notify-cbor-handles-part', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, cfCbor, handleBase, part], payload: 'rest',
    doc: 'Part 0 of a split push-sync body that names new handles.',
  },
  {
    id: 0x44, name: 'notify-deflate-handles-part', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, cfDeflate, handleBase, part], payload: 'rest',
    doc: 'Part 0 of a split, DEFLATE-compressed push-sync body that names new handles.',
  },
  {
    id: 0x47, name: 'notify-cbor-part', type: CON, code: Response.CONTENT, header: 'ntf',
    fields: [observe, cfCbor, part], payload: 'rest',
    doc: 'Part 0 of a split push-sync body without new handles.',
  },
  {
    id: 0x48, name: 'ack-content-cbor-handles', type: ACK, code: Response.CONTENT, header: 'ack',
    fields: [cfCbor, handleBase], payload: 'rest',
    doc: 'A piggybacked 2.05 CBOR answer that names new handles (join, createRoom, a polled /sync, …).',
  },
  {
    id: 0x4b, name: 'ack-content-deflate-handles', type: ACK, code: Response.CONTENT, header: 'ack',
    fields: [cfDeflate, handleBase], payload: 'rest',
    doc: 'The same with a DEFLATE-compressed body.',
  },
] as CompactRule[]).map((r) => Object.freeze(r)));
