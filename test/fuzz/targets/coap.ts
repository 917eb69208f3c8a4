/**
 * CoAP decoders: RFC 7252 messages, the compact on-air form (with a live context), Block1/Block2
 * values, and the scheduler's packing container that carries them.
 */
import { TrickleError, WireError } from '../../../src/errors.ts';
import { decodeMessage, encodeMessage, type CoapMessage } from '../../../src/coap/message.ts';
import {
  cloneCompactContext, decodeCompact, encodeCompact, explainCompact, type CompactContext,
} from '../../../src/coap/compact.ts';
import { decodeBlock, encodeBlock, decodeSize, blockSize, blockOffset, BLOCK_NUM_MAX, BLOCK_SZX_MAX } from '../../../src/coap/block.ts';
import { unpackFrame, packFrame, MAX_PACKED_MESSAGES, MAX_INNER_MESSAGE_LEN } from '../../../src/scheduler/packing.ts';
import { equalBytes, toHex } from '../../../src/util/bytes.ts';
import { check, expectCoded, type FuzzTarget } from '../engine.ts';
import { hex, readJson, show } from '../util.ts';
import { runScenario, scenario, observeScenario, handlesScenario } from '../../unit/coap/compact-scenario.ts';

const isCoap = (e: TrickleError): boolean => e instanceof WireError && e.layer === 'coap' && e.code.startsWith('ERR_COAP_');

const OPTION_TOKENS = [
  Uint8Array.of(0xff), Uint8Array.of(0xd0), Uint8Array.of(0xe0), Uint8Array.of(0xdd, 0x00), Uint8Array.of(0xee, 0xff, 0xff),
  Uint8Array.of(0xe1, 0xfc, 0xe5), Uint8Array.of(0xb1, 0x37), Uint8Array.of(0x41, 0x00), Uint8Array.of(0x0f), Uint8Array.of(0xf0),
];

interface MessageVectors { valid: { hex: string }[]; invalid: { hex: string }[] }

function scenarioFrames(): { rfc7252: Uint8Array[]; compact: Uint8Array[] } {
  const all = [scenario(), observeScenario(), handlesScenario()].flatMap((s) => runScenario(s).steps);
  return { rfc7252: all.map((s) => hex(s.rfc7252)), compact: all.map((s) => hex(s.compact)) };
}

export const coapMessage: FuzzTarget = {
  name: 'coap-message',
  description: 'decodeMessage (RFC 7252 §3): only ERR_COAP_* WireErrors; a decoded message re-encodes to exactly the input bytes',
  maxLen: 512,
  dictionary: OPTION_TOKENS,
  seeds() {
    const v = readJson<MessageVectors>('test/vectors/coap/messages.json');
    return [...v.valid.map((x) => hex(x.hex)), ...v.invalid.map((x) => hex(x.hex)), ...scenarioFrames().rfc7252];
  },
  run(input) {
    const r = expectCoded(() => decodeMessage(input), isCoap);
    if (!r.ok) return r.outcome;
    const m = r.value;
    check(m.token.length <= 8 && m.mid >= 0 && m.mid <= 0xffff && m.type >= 0 && m.type <= 3, 'decoded header out of range');
    const again = encodeMessage(m);
    check(equalBytes(again, input), () => `decode → encode changed the bytes: ${toHex(again)}`);
    return `ok:${m.type}:${m.code >> 5}:${Math.min(m.options.length, 3)}:${m.payload.length > 0 ? 'p' : ''}`;
  },
};

// ---------------------------------------------------------------------------------------------

/** Everything a compact context holds, as a string (to prove a failed decode left it alone). */
function fingerprint(ctx: CompactContext): string {
  return JSON.stringify({
    tx: [ctx.tx.hi, ctx.tx.lo, ctx.tx.tokenHi, [...ctx.tx.sent].map(([k, e]) => [k, e.seq, e.mid, toHex(e.token)])],
    rx: [ctx.rx.ref, ctx.rx.tokenHi, [...ctx.rx.received].map(([k, e]) => [k, e.seq, toHex(e.token), e.answered])],
  });
}

interface CompactPair { name: string; rx: CompactContext; tx: CompactContext }

let compactPairs: CompactPair[] | undefined;

/**
 * The receiving and sending contexts at the end of each scenario, both directions: consistent
 * pairs ("have seen the same frames"), which is what compact.ts's round-trip promise needs.
 */
function pairs(): CompactPair[] {
  if (compactPairs) return compactPairs;
  compactPairs = [];
  for (const [name, s] of [['main', scenario()], ['observe', observeScenario()], ['handles', handlesScenario()]] as const) {
    const { ctxA, ctxB } = runScenario(s);
    compactPairs.push({ name: `${name}:A→B`, rx: ctxB, tx: ctxA }, { name: `${name}:B→A`, rx: ctxA, tx: ctxB });
  }
  return compactPairs;
}

const sameMessage = (a: CoapMessage, b: CoapMessage): boolean => equalBytes(encodeMessage(a), encodeMessage(b));

export const coapCompact: FuzzTarget = {
  name: 'coap-compact',
  description: 'decodeCompact against six live contexts: only coded WireErrors; a failed decode leaves the context unchanged; explainCompact agrees; the message is valid RFC 7252; re-encoding it with the peer context decodes to the same message',
  maxLen: 400,
  dictionary: [...OPTION_TOKENS, Uint8Array.of(0xc4), Uint8Array.of(0xd4), Uint8Array.of(0xe0), Uint8Array.of(0x80), Uint8Array.of(0x7f),
    Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f), Uint8Array.of(0x80, 0x00)],
  seeds() {
    return scenarioFrames().compact;
  },
  run(input) {
    const outcomes: string[] = [];
    for (const p of pairs()) {
      const rx = cloneCompactContext(p.rx);
      const before = fingerprint(rx);
      const r = expectCoded(() => decodeCompact(input, rx), isCoap);
      if (!r.ok) {
        check(fingerprint(rx) === before, () => `${p.name}: decode failed (${r.outcome}) but changed the context`);
        outcomes.push(r.outcome);
        continue;
      }
      const m = r.value;
      const ex = explainCompact(input, cloneCompactContext(p.rx));
      check(sameMessage(ex.message, m), `${p.name}: explainCompact and decodeCompact disagree`);
      check(equalBytes(ex.rfc7252, encodeMessage(m)), `${p.name}: explainCompact's RFC 7252 bytes differ`);
      const rfc = encodeMessage(m);
      check(sameMessage(decodeMessage(rfc), m), `${p.name}: the RFC 7252 expansion does not decode to the message`);
      // The sender (in the matching state) re-encodes the message; the receiver reads it back.
      const y = encodeCompact(m, cloneCompactContext(p.tx));
      const m2 = expectCoded(() => decodeCompact(y, cloneCompactContext(p.rx)), isCoap);
      check(m2.ok && sameMessage(m2.value, m), () => `${p.name}: message ${toHex(rfc)} re-encoded by the sender as ${toHex(y)} decodes to ${m2.ok ? toHex(encodeMessage(m2.value)) : m2.outcome}`);
      if (input[0] === 0) check(equalBytes(input.subarray(1), rfc), `${p.name}: rule 0 frame is not its RFC 7252 message`);
      outcomes.push(`ok:${input[0]}`);
    }
    return [...new Set(outcomes)].sort().join(',');
  },
};

// ---------------------------------------------------------------------------------------------

export const coapBlock: FuzzTarget = {
  name: 'coap-block',
  description: 'decodeBlock / decodeSize: only ERR_COAP_OPTION; NUM < 2^20, SZX ≤ 6, offsets finite; encodeBlock(decodeBlock(v)) decodes to the same value',
  maxLen: 8,
  seeds() {
    return [Uint8Array.of(), Uint8Array.of(0x0e), Uint8Array.of(0x1a), Uint8Array.of(0xff, 0xfe), Uint8Array.of(0xff, 0xff, 0xfe), encodeBlock({ num: BLOCK_NUM_MAX, more: true, szx: 6 }), Uint8Array.of(0, 0, 1)];
  },
  run(input) {
    const size = expectCoded(() => decodeSize(input), isCoap);
    if (size.ok) check(size.value >= 0 && size.value <= 0xffff_ffff, `Size ${size.value}`);
    const r = expectCoded(() => decodeBlock(input), isCoap);
    if (!r.ok) return `${r.outcome}/${size.ok ? 'size' : 'nosize'}`;
    const b = r.value;
    check(Number.isInteger(b.num) && b.num >= 0 && b.num <= BLOCK_NUM_MAX && b.szx >= 0 && b.szx <= BLOCK_SZX_MAX, () => `block ${show(b)} out of range`);
    check(Number.isSafeInteger(blockOffset(b)) && blockSize(b.szx) <= 1024, 'block offset/size');
    const again = decodeBlock(encodeBlock(b));
    check(again.num === b.num && again.more === b.more && again.szx === b.szx, () => `block ${show(b)} does not survive encode → decode`);
    return `ok:${input.length}:${b.more ? 'M' : ''}`;
  },
};

// ---------------------------------------------------------------------------------------------

export const packing: FuzzTarget = {
  name: 'packing',
  description: 'unpackFrame (packing container v1): only ERR_PACKED_FRAME; 1..16 non-empty messages, all but the last ≤ 255 bytes, covering the frame; packFrame(unpackFrame(x)) == x',
  maxLen: 600,
  dictionary: [Uint8Array.of(0xf0), Uint8Array.of(0xfe), Uint8Array.of(0xff), Uint8Array.of(0x00), Uint8Array.of(0x01)],
  seeds() {
    const f = scenarioFrames().compact;
    return [packFrame(f.slice(0, 2)), packFrame(f.slice(2, 6)), packFrame(f.slice(0, 16)), f[0]!, packFrame([f[1]!, new Uint8Array(300).fill(9)])];
  },
  run(input) {
    const r = expectCoded(() => unpackFrame(input), (e) => e instanceof WireError && e.code === 'ERR_PACKED_FRAME');
    if (!r.ok) return r.outcome;
    const msgs = r.value;
    check(msgs.length >= 1 && msgs.length <= MAX_PACKED_MESSAGES, `${msgs.length} messages`);
    check(msgs.every((m, i) => m.length >= 1 && (i === msgs.length - 1 || m.length <= MAX_INNER_MESSAGE_LEN)), 'a message is empty or too long');
    if (msgs.length === 1) {
      check(equalBytes(msgs[0]!, input), 'a lone message is not the whole frame');
      return 'ok:1';
    }
    const again = packFrame(msgs);
    check(equalBytes(again, input), () => `unpack → pack changed the frame: ${toHex(again)}`);
    return `ok:${msgs.length}`;
  },
};

export const COAP_TARGETS: readonly FuzzTarget[] = [coapMessage, coapCompact, coapBlock, packing];
