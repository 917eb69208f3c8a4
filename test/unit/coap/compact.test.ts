import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { WireError } from '../../../src/errors.ts';
import { fromHex, toHex, utf8 } from '../../../src/util/bytes.ts';
import {
  cloneCompactContext, compactRuleFor, compactSizeBound, createCompactContext, decodeCompact, encodeCompact, explainCompact,
  sequenceToken, tokenSequence, type CompactContext,
} from '../../../src/coap/compact.ts';
import {
  COMPACT_RULES_V1, PATH_ENUMS_V1, QUERY_ITEMS_V1, WELL_KNOWN_STRINGS_V1, RULE_RFC7252,
} from '../../../src/coap/compact-rules-v1.ts';
import { decodeMessage, encodeMessage, stringOption, uintOption, type CoapMessage } from '../../../src/coap/message.ts';
import { ACK, CON, EMPTY, Method, Opt, Response, ContentFormat, TrickleContentFormat } from '../../../src/coap/numbers.ts';
import { ChaChaPoly } from '../../../src/secure/cipher-functions.ts';
import { handlesScenario, observeScenario, runScenario, scenario, type Step, type VectorStep } from './compact-scenario.ts';

const vectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };
/** The Observe rules' vectors (appended to v1 without changing a byte of the vectors above). */
const observeVectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1-observe.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };
const handlesVectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1-handles.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };

const E = new Uint8Array(0);
const path = (...s: string[]) => s.map((x) => stringOption(Opt.URI_PATH, x));
const query = (...s: string[]) => s.map((x) => stringOption(Opt.URI_QUERY, x));
const cf = (n: number) => uintOption(Opt.CONTENT_FORMAT, n);
const rfcHex = (m: CoapMessage) => toHex(encodeMessage(m));

function sendText(s: number, text = 'Hello World'): CoapMessage {
  return {
    type: CON, code: Method.PUT, mid: s & 0xffff, token: sequenceToken(s),
    options: [...path('9', '~3', 'm.room.message'), cf(TrickleContentFormat.TEXT_MESSAGE)], payload: utf8.encode(text),
  };
}
function eventIdAck(mid: number, token: Uint8Array): CoapMessage {
  return { type: ACK, code: Response.CONTENT, mid, token, options: [cf(TrickleContentFormat.EVENT_ID)], payload: new Uint8Array(32).fill(0x5a) };
}
const emptyAck = (mid: number): CoapMessage => ({ type: ACK, code: EMPTY, mid, token: E, options: [], payload: E });

function expectReject(f: () => unknown, reason?: string): void {
  let err: unknown;
  try { f(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(WireError);
  if (reason) expect((err as WireError).detail?.reason).toBe(reason);
}

/** A scenario's contexts just before step i (sender, receiver), rebuilt from scratch. */
function before(steps: Step[], i: number): { tx: CompactContext; rx: CompactContext; step: Step } {
  const a = createCompactContext();
  const b = createCompactContext();
  for (let j = 0; j < i; j++) {
    const s = steps[j]!;
    const [tx, rx] = s.from === 'A' ? [a, b] : [b, a];
    decodeCompact(encodeCompact(s.msg, tx), rx);
  }
  const step = steps[i]!;
  return step.from === 'A' ? { tx: a, rx: b, step } : { tx: b, rx: a, step };
}

/** The main scenario's contexts just before step i. */
const contextsBefore = (i: number) => before(scenario(), i);

/**
 * Step i of a scenario against its vector: the rule, the frozen compact bytes, the exact RFC 7252
 * expansion, the size bound, and no truncation decoding to the same message.
 */
function checkVectorStep(steps: Step[], i: number, v: VectorStep): void {
  const { tx, rx, step } = before(steps, i);
  expect(compactRuleFor(step.msg).name, v.name).toBe(v.rule);
  expect(toHex(encodeCompact(step.msg, tx))).toBe(v.compact);
  expect(toHex(explainCompact(fromHex(v.compact), rx).rfc7252)).toBe(v.rfc7252);
  expect(rfcHex(decodeCompact(fromHex(v.compact), rx))).toBe(v.rfc7252);
  expect(v.compact.length / 2).toBeLessThanOrEqual(compactSizeBound(step.msg));
  for (let n = 0; n < v.compact.length / 2; n++) {
    // Every truncation fails or decodes to something else; never to this message.
    try { expect(rfcHex(decodeCompact(fromHex(v.compact).subarray(0, n), cloneCompactContext(rx)))).not.toBe(v.rfc7252); }
    catch (e) { expect(e).toBeInstanceOf(WireError); }
  }
}

describe('compact rules v1: the static context', () => {
  it('has unique even-parity rule ids (a single bit flip in byte 0 never names a rule)', () => {
    const ids = COMPACT_RULES_V1.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      let ones = 0;
      for (let b = id; b; b >>= 1) ones += b & 1;
      expect(ones % 2, `rule 0x${id.toString(16)}`).toBe(0);
    }
    expect(COMPACT_RULES_V1[0]!.id).toBe(RULE_RFC7252);
  });

  it('lists each rule\'s option fields in ascending option-number order, and documents it', () => {
    for (const r of COMPACT_RULES_V1) {
      expect(r.doc.length).toBeGreaterThan(10);
      const numbers = r.fields.map((f) => ('option' in f ? f.option : f.kind === 'queries' ? Opt.URI_QUERY : Opt.URI_PATH));
      expect([...numbers].sort((x, y) => x - y)).toEqual(numbers);
      if (r.payload === 'rfc7252') expect(r.fields).toEqual([]);
    }
  });

  it('keeps one-byte tables within one byte', () => {
    expect(PATH_ENUMS_V1).toHaveLength(57);
    expect(new Set(PATH_ENUMS_V1).size).toBe(57);
    expect(WELL_KNOWN_STRINGS_V1.length).toBeLessThanOrEqual(32); // 4i + 2 < 128
    expect(QUERY_ITEMS_V1.length).toBeLessThan(0x7f);
  });

  it('has a vector for every rule', () => {
    const used = new Set([...vectors.steps, ...observeVectors.steps, ...handlesVectors.steps].map((s) => s.rule));
    for (const r of COMPACT_RULES_V1) expect(used.has(r.name), r.name).toBe(true);
  });
});

describe('compact form: vectors (test/vectors/coap/compact-v1.json)', () => {
  it('the scenario still encodes to the frozen vectors byte for byte', () => {
    const { steps } = runScenario();
    expect(steps).toEqual(vectors.steps);
  });

  it.each(vectors.steps.map((s, i) => [i, s.name, s] as const))('step %i (%s): decodes to its RFC 7252 message with the expected rule', (i, _n, v) => {
    const { tx, rx, step } = contextsBefore(i);
    expect(compactRuleFor(step.msg).name).toBe(v.rule);
    expect(toHex(encodeCompact(step.msg, tx))).toBe(v.compact);
    const explained = explainCompact(fromHex(v.compact), rx);
    expect(explained.rule).toBe(v.rule);
    expect(toHex(explained.rfc7252)).toBe(v.rfc7252);
    const decoded = decodeCompact(fromHex(v.compact), rx);
    expect(rfcHex(decoded)).toBe(v.rfc7252);
    // The expansion is a valid RFC 7252 message that decodes back to the same thing.
    expect(rfcHex(decodeMessage(fromHex(v.rfc7252)))).toBe(v.rfc7252);
    // The size bound holds for every state.
    expect(v.compact.length / 2).toBeLessThanOrEqual(compactSizeBound(step.msg));
  });

  it('meets the byte budget of a Matrix send and its answer', () => {
    const by = (name: string) => vectors.steps.find((s) => s.name === name)!;
    expect(by('send Hello World (fresh request)').compact.length / 2).toBe(14);   // target ≤ 15
    expect(by('its piggybacked event id').compact.length / 2).toBe(34);           // target ≤ 35
    expect(by('empty ACK for the sync').compact.length / 2).toBe(2);
    expect(by('separate sync response').compact.length / 2).toBe(4 + 40);         // rule + S + 16 token LSBs + CBOR
    expect(by('separate event id').compact.length / 2).toBe(4 + 32);
    expect(by('long-poll sync').compact.length / 2).toBe(6);                      // since=~7&timeout=30000
  });

  it('explains a frame field by field without touching the context', () => {
    const { rx } = contextsBefore(0);
    const before = JSON.stringify(cloneCompactContext(rx), (_k, v: unknown) => (v instanceof Map ? [...v] : v));
    const x = explainCompact(fromHex(vectors.steps[0]!.compact), rx);
    expect(JSON.stringify(rx, (_k, v: unknown) => (v instanceof Map ? [...v] : v))).toBe(before);
    expect(x).toMatchObject({ ruleId: 0x03, rule: 'send-text', compactBytes: 14 });
    expect(x.fields.map((f) => `${f.name}:${f.hex}`)).toEqual([
      'rule:03', 'header:01', 'Uri-Path:', 'Uri-Path:07', 'Uri-Path:', 'Content-Format:', `payload:${toHex(utf8.encode('Hello World'))}`,
    ]);
    expect(x.fields[1]!.value).toMatch(/S 1 \(7 LSBs\), token = S/);
    expect(x.fields[3]!.value).toBe('handle ~3');
    expect(toHex(x.rfc7252)).toBe(vectors.steps[0]!.rfc7252);
  });
});

describe('compact form: Observe notifications (test/vectors/coap/compact-v1-observe.json)', () => {
  const O = (n: number) => uintOption(Opt.OBSERVE, n);
  it('the observation scenario still encodes to its frozen vectors byte for byte', () => {
    expect(runScenario(observeScenario()).steps).toEqual(observeVectors.steps);
  });

  it.each(observeVectors.steps.map((s, i) => [i, s.name, s] as const))('step %i (%s): decodes to its RFC 7252 message', (i, _n, v) => {
    checkVectorStep(observeScenario(), i, v);
  });

  it('the appended handle and part rules: frozen vectors, exact expansion, bounded size, no truncation accepted', () => {
    expect(runScenario(handlesScenario()).steps).toEqual(handlesVectors.steps);
    handlesVectors.steps.forEach((v, i) => checkVectorStep(handlesScenario(), i, v));
    // A push that names handles costs rule + 3 header bytes + the Handle-Base varint.
    const by = (name: string) => handlesVectors.steps.find((s) => s.name === name)!;
    expect(by('a pushed message that names new handles').compact.length / 2).toBe(1 + 3 + 2 + 60);
    expect(by('part 1 (last)').compact.length / 2).toBe(1 + 3 + 1 + 120);
    expect(by('its answer names a handle').compact.length / 2).toBe(1 + 1 + 2 + 12);
  });

  it('meets the budget: a notification with 40 bytes of CBOR has a 4-byte header, its ACK 2 bytes', () => {
    const by = (name: string) => observeVectors.steps.find((s) => s.name === name)!;
    expect(by('notification, 40-byte CBOR delta').compact.length / 2).toBe(4 + 40);
    expect(by('notification, 40-byte CBOR delta').rfc7252.length / 2).toBe(53);
    expect(by('ACK of the notification').compact.length / 2).toBe(2);
    expect(by('re-sent notification keeps its Observe value (form 1101)').compact.length / 2).toBe(1 + 1 + 4 + 4 + 3 + 40);
    const x = explainCompact(fromHex(by('notification, 40-byte CBOR delta').compact), before(observeScenario(), 4).rx);
    expect(x.fields.map((f) => `${f.name}:${f.hex}`).slice(0, 4)).toEqual(['rule:39', 'header:020001', 'Observe:', 'Content-Format:']);
  });

  it('implies Observe = S mod 2^24 only in the short and 1100 forms; any other value rides in form 1101', () => {
    const a = createCompactContext({ initialSeq: 0x12345670 });
    const b = createCompactContext({ initialSeq: 0x12345670 });
    const token = sequenceToken(0x12345670);
    b.rx.tokenHi = 0x12345670; // B received that request
    a.tx.tokenHi = 0x12345670;
    const ntf = (mid: number, obs: number): CoapMessage => ({
      type: CON, code: Response.CONTENT, mid, token, options: [O(obs), cf(ContentFormat.CBOR)], payload: Uint8Array.of(0xa0),
    });
    const s = 0x12345671;
    const implied = encodeCompact(ntf(s & 0xffff, s % 2 ** 24), b);
    expect(implied).toHaveLength(1 + 3 + 1);
    expect(decodeCompact(implied, a).options[0]).toEqual(O(0x345671));
    const other = encodeCompact(ntf((s + 1) & 0xffff, 7), b);
    expect(other[1]! & 0xf0).toBe(0xd0);
    expect(rfcHex(decodeCompact(other, a))).toBe(rfcHex(ntf((s + 1) & 0xffff, 7)));
  });

  it('leaves Observe values it cannot carry to the generic rules, and rejects reserved ntf forms', () => {
    const ctx = createCompactContext();
    const base = { type: CON, code: Response.CONTENT, mid: 1, token: sequenceToken(1), payload: Uint8Array.of(1) } as const;
    // 2^24 is not an Observe value (RFC 7641 §2: 0–3 bytes); a leading zero byte is not canonical.
    expect(compactRuleFor({ ...base, options: [{ number: Opt.OBSERVE, value: Uint8Array.of(1, 0, 0, 0) }, cf(60)] }).name).toBe('con-response');
    expect(compactRuleFor({ ...base, options: [{ number: Opt.OBSERVE, value: Uint8Array.of(0, 5) }, cf(60)] }).name).toBe('con-response');
    expect(compactRuleFor({ ...base, options: [cf(60)] }).name).toBe('con-content-cbor');
    expectReject(() => decodeCompact(Uint8Array.of(0x39, 0xe0, 0, 0, 0, 1), ctx), 'reserved-form');
    expectReject(() => decodeCompact(Uint8Array.of(0x39, 0xd9, 0, 0, 0, 1), ctx), 'reserved-form'); // token length 9
    expectReject(() => decodeCompact(Uint8Array.of(0x39, 0xd0, 0, 0, 0, 1, 0, 0), ctx), 'truncated');
    expectReject(() => decodeCompact(Uint8Array.of(0x39, 0x80), ctx), 'reserved-form');
  });
});

describe('compact form: round trips and LSB state', () => {
  it('round-trips odd shapes through the fallback and generic rules', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    const msgs: CoapMessage[] = [
      { type: CON, code: Method.FETCH, mid: 1, token: sequenceToken(1), options: [{ number: Opt.IF_NONE_MATCH, value: E }], payload: E },
      { type: CON, code: Method.GET, mid: 2, token: sequenceToken(2), options: [...path('7'), ...query('since=', '=x', 'timeout=030', 'timeout=99999999999', 'a')], payload: E },
      { type: CON, code: Method.PUT, mid: 3, token: sequenceToken(3), options: [...path('9', '~03', '~2097152', '~2097151'), cf(ContentFormat.CBOR)], payload: E },
      { type: CON, code: Method.PUT, mid: 4, token: sequenceToken(4), options: [...path('9', '~3', 'm.room.message'), cf(TrickleContentFormat.TEXT_MESSAGE)], payload: E },
      { type: CON, code: Method.GET, mid: 5, token: sequenceToken(5), options: [...path('5', 'x'), { number: Opt.BLOCK2, value: Uint8Array.of(0, 0x16) }], payload: E },
      { type: CON, code: Method.GET, mid: 6, token: E, options: [], payload: E },
      { type: CON, code: Method.POST, mid: 7, token: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), options: path('G'), payload: Uint8Array.of(0xa0) },
    ];
    for (const m of msgs) expect(rfcHex(decodeCompact(encodeCompact(m, a), b))).toBe(rfcHex(m));
  });

  it('keeps decoding exactly while frames are lost, switching to longer forms when the window could be exceeded', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    let rng = 12345;
    const rand = () => ((rng = (rng * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const sizes = new Map<number, number>();
    for (let s = 1; s <= 3000; s++) {
      const m = sendText(s, 'x');
      const f = encodeCompact(m, a);
      sizes.set(f.length, (sizes.get(f.length) ?? 0) + 1);
      // Bursts of loss, some long: the peer's reference falls far behind.
      const lost = s % 500 < 200 ? true : rand() < 0.3;
      if (lost) continue;
      const got = decodeCompact(f, b);
      expect(rfcHex(got)).toBe(rfcHex(m));
      // The peer ACKs (this is how A learns what B has decoded); ACKs get lost too.
      const ack = encodeCompact(emptyAck(m.mid), b);
      if (rand() < 0.7) expect(decodeCompact(ack, a).mid).toBe(m.mid);
    }
    // Mostly the 1-byte header (rule + header + handle + 'x' = 4 bytes); 2 bytes (5) or
    // the full sequence number (8) while the peer's acknowledgements lag.
    expect(sizes.get(4)!).toBeGreaterThan(1500);
    expect((sizes.get(5) ?? 0) + (sizes.get(8) ?? 0)).toBeGreaterThan(10);
    expect([...sizes.keys()].sort()).toEqual([4, 5, 8].filter((k) => sizes.has(k)));
  });

  it('decodes retransmissions and Block follow-ups sent while later requests advanced the sequence', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    const first = sendText(1);
    decodeCompact(encodeCompact(first, a), b);
    for (let s = 2; s <= 40; s++) decodeCompact(encodeCompact(sendText(s), a), b);
    // S 1 again (a retransmission) after 39 newer: out of the 7-bit window's 16 behind → longer form.
    const again = encodeCompact(first, a);
    expect(again.length).toBeGreaterThan(14);
    expect(rfcHex(decodeCompact(again, b))).toBe(rfcHex(first));
    // A follow-up of request 30 as S 41: token = S − 11, form B (2 bytes).
    const follow: CoapMessage = { ...sendText(41), token: sequenceToken(30) };
    const f = encodeCompact(follow, a);
    expect(f[1]! >> 6).toBe(0b10);
    expect(rfcHex(decodeCompact(f, b))).toBe(rfcHex(follow));
  });

  it('answers a message in the 1-byte ACK form once; a re-sent answer carries the mid and token in full', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    const req = sendText(1);
    decodeCompact(encodeCompact(req, a), b);
    const ack = eventIdAck(1, req.token);
    const first = encodeCompact(ack, b);
    const again = encodeCompact(ack, b);
    expect(first).toHaveLength(34);
    expect(again).toHaveLength(34 + 2 + 4); // explicit form: + mid (2) + token (4)
    expect(rfcHex(decodeCompact(first, a))).toBe(rfcHex(ack));
    expect(rfcHex(decodeCompact(again, a))).toBe(rfcHex(ack));
  });

  it('resolves a separate response\'s token among the requests sent (16 LSBs)', () => {
    const a = createCompactContext();
    const b = createCompactContext();
    for (let s = 1; s <= 70000; s += 997) {
      const req: CoapMessage = { type: CON, code: Method.GET, mid: s & 0xffff, token: sequenceToken(s), options: path('7'), payload: E };
      decodeCompact(encodeCompact(req, a), b);
      decodeCompact(encodeCompact(emptyAck(req.mid), b), a);
    }
    const sep: CoapMessage = { type: CON, code: Response.CONTENT, mid: 1, token: sequenceToken(68794), options: [cf(ContentFormat.CBOR)], payload: Uint8Array.of(0xa0) };
    const f = encodeCompact(sep, b);
    expect(f).toHaveLength(5);
    const got = decodeCompact(f, a);
    expect(tokenSequence(got.token)).toBe(68794);
  });
});

describe('compact form: rejection', () => {
  const sample = () => {
    const a = createCompactContext();
    const b = createCompactContext();
    return { a, b, frame: encodeCompact(sendText(1), a) };
  };

  it('rejects an unknown rule, an empty frame and trailing bytes', () => {
    const { b, frame } = sample();
    expectReject(() => decodeCompact(Uint8Array.of(0x01, 0x01), b), 'unknown-rule');
    expectReject(() => decodeCompact(Uint8Array.of(0xff), b), 'unknown-rule');
    expectReject(() => decodeCompact(E, b), 'empty');
    const ackFrame = Uint8Array.of(0x1b, 0x01);
    const a2 = createCompactContext();
    encodeCompact(sendText(1), a2);
    expectReject(() => decodeCompact(Uint8Array.of(...ackFrame, 0), a2), 'trailing-bytes');
    expect(decodeCompact(frame, b).mid).toBe(1);
  });

  it('rejects every truncation of a frame whose rule ends with a fixed-size field', () => {
    for (const v of vectors.steps) {
      const rule = COMPACT_RULES_V1.find((r) => r.name === v.rule)!;
      const i = vectors.steps.indexOf(v);
      const { rx } = contextsBefore(i);
      const bytes = fromHex(v.compact);
      const fixedEnd = rule.payload === 'none' || typeof rule.payload === 'object';
      for (let n = 0; n < bytes.length; n++) {
        const cut = bytes.subarray(0, n);
        let ok = false;
        try { decodeCompact(cut, cloneCompactContext(rx)); ok = true; } catch (e) { expect(e).toBeInstanceOf(WireError); }
        if (fixedEnd) expect(ok, `${v.name} cut to ${n}`).toBe(false);
      }
    }
  });

  it('rejects reserved header forms, bad enum indices, non-minimal varints, non-canonical encodings and wrong codes', () => {
    const { a, b } = sample();
    decodeCompact(encodeCompact(sendText(1), a), b);
    expectReject(() => decodeCompact(Uint8Array.of(0x03, 0xd0), b), 'reserved-form');              // req 1101xxxx
    expectReject(() => decodeCompact(Uint8Array.of(0x03, 0xc9, 0, 0, 0, 2), b), 'reserved-form');  // token length 9
    expectReject(() => decodeCompact(Uint8Array.of(0x1b, 0x80), a), 'reserved-form');              // ack 1000xxxx
    expectReject(() => decodeCompact(Uint8Array.of(0x0a, 0x02, 57, 0, 0), b), 'bad-enum');         // path enum 57
    expectReject(() => decodeCompact(Uint8Array.of(0x05, 0x02, 0x07, 4 * 32 + 2, 0x01), b), 'bad-enum'); // well-known 32
    expectReject(() => decodeCompact(Uint8Array.of(0x06, 0x02, 0x01, 0x50), b), 'bad-enum');      // query item 0x50
    expectReject(() => decodeCompact(Uint8Array.of(0x06, 0x02, 0x01, 0x01, 0x80, 0x00), b), 'bad-varint');
    expectReject(() => decodeCompact(Uint8Array.of(0x17, 0x45, 0x02), b), 'bad-enum');             // 2.05 in a request rule
    // "m.room.message" spelt out where the well-known index would do.
    const literal = [0x05, 0x02, 0x07, 4 * 14, ...utf8.encode('m.room.message')];
    expectReject(() => decodeCompact(Uint8Array.from(literal), b), 'non-canonical');
    // A CBOR PUT /9 sent through the generic "request" rule instead of "send-event".
    const generic = encodeMessage({ type: CON, code: Method.PUT, mid: 0, token: E, options: [...path('9', '~3', 'm.reaction'), cf(60)], payload: Uint8Array.of(0xa0) }).subarray(4);
    expectReject(() => decodeCompact(Uint8Array.of(0x17, Method.PUT, 0x02, ...generic), b), 'non-canonical');
  });

  it('rejects ACK LSBs that match nothing sent, or only a message too old', () => {
    const a = createCompactContext();
    expectReject(() => decodeCompact(Uint8Array.of(0x1b, 0x05), a), 'no-context');
    for (let s = 1; s <= 200; s++) encodeCompact(sendText(s), a);
    // 0x05 was last used by S 133 (within the last 128): fine. Make it stale:
    const a2 = createCompactContext();
    encodeCompact(sendText(5), a2);
    for (let s = 6; s <= 500; s += 128) encodeCompact(sendText(s), a2); // never 5 mod 128 again, S advances past
    expectReject(() => decodeCompact(Uint8Array.of(0x1b, 0x05), a2), 'out-of-window');
    expect(decodeCompact(Uint8Array.of(0x1b, 0x05), a).mid).toBe(133);
  });

  it('leaves the context unchanged when it rejects', () => {
    const { b } = sample();
    const snap = JSON.stringify(b, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
    expectReject(() => decodeCompact(Uint8Array.of(0x03, 0x85), b));
    expectReject(() => decodeCompact(Uint8Array.of(0x17, 0x45, 0x02), b));
    expect(JSON.stringify(b, (_k, v: unknown) => (v instanceof Map ? [...v] : v))).toBe(snap);
  });

  it('never throws anything but WireError on random input', () => {
    let rng = 99;
    const rand = () => ((rng = (rng * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const { a } = sample();
    for (let i = 0; i < 20000; i++) {
      const f = Uint8Array.from({ length: Math.floor(rand() * 24) }, () => Math.floor(rand() * 256));
      if (f.length > 0 && rand() < 0.7) f[0] = COMPACT_RULES_V1[Math.floor(rand() * COMPACT_RULES_V1.length)]!.id;
      try {
        const m = decodeCompact(f, cloneCompactContext(a));
        decodeMessage(encodeMessage(m)); // whatever decodes expands to valid CoAP
      } catch (e) {
        expect(e).toBeInstanceOf(WireError);
      }
    }
  });
});

describe('compact form: single-bit flips', () => {
  /**
   * The compact form has no check of its own (neither has SCHC). A flip in the rule
   * byte always fails (even-parity ids); a flip in a value — an LSB, a handle, a text
   * byte — yields another well-formed message. Every compact byte is sealed by the
   * security layer's AEAD (ChaCha20-Poly1305 in Noise), which rejects all of them.
   */
  const samples = ['send Hello World (fresh request)', 'its piggybacked event id', 'long-poll sync', 'empty ACK for the sync', 'separate sync response', 'set the room name (state, empty state key)'];

  it.each(samples)('%s: rule-byte flips always fail; every other outcome is listed; the AEAD rejects all', (name) => {
    const i = vectors.steps.findIndex((s) => s.name === name);
    const v = vectors.steps[i]!;
    const { rx } = contextsBefore(i);
    const frame = fromHex(v.compact);
    const outcomes = { rejected: 0, decodedDifferent: 0, headerAccepted: [] as number[] };
    const headerEnd = 2; // rule byte + the first header byte
    for (let bit = 0; bit < frame.length * 8; bit++) {
      const f = frame.slice();
      f[bit >> 3]! ^= 1 << (bit & 7);
      let m: CoapMessage | undefined;
      try { m = decodeCompact(f, cloneCompactContext(rx)); } catch (e) { expect(e).toBeInstanceOf(WireError); }
      if (!m) { outcomes.rejected++; continue; }
      expect(rfcHex(m)).not.toBe(v.rfc7252); // a flip never decodes to the same message
      outcomes.decodedDifferent++;
      if ((bit >> 3) === 0) throw new Error(`rule-byte flip at bit ${bit} was accepted`);
      if ((bit >> 3) < headerEnd) outcomes.headerAccepted.push(bit);
    }
    // All 8 rule-byte flips are among the rejected.
    expect(outcomes.rejected).toBeGreaterThanOrEqual(8);
    // Sealed as the security layer does (the compact bytes as AEAD plaintext), every flip fails.
    const key = new Uint8Array(32).fill(7);
    const sealed = ChaChaPoly.encrypt(key, 5n, E, frame);
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const s = sealed.slice();
      s[bit >> 3]! ^= 1 << (bit & 7);
      expect(() => ChaChaPoly.decrypt(key, 5n, E, s)).toThrow();
    }
    expect(toHex(ChaChaPoly.decrypt(key, 5n, E, sealed))).toBe(v.compact);
  });
});
