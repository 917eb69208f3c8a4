import { describe, expect, it } from 'vitest';
import { acceptPart, splitIntoParts, TRICKLE_OPT_PART, type PartialBody, type PartResponse } from '../../../src/matrix/sync-parts.ts';
import { CoapEndpoint } from '../../../src/coap/endpoint.ts';
import { getUintOption, uintOption } from '../../../src/coap/message.ts';
import { compactWireCodec, createCompactContext } from '../../../src/coap/compact.ts';
import { Response } from '../../../src/coap/numbers.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { RULE_CF_CBOR_DEFLATE, RULE_OPT_HANDLE_BASE, RULE_OPT_PART } from '../../../src/coap/compact-rules-v1.ts';
import { CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE, TRICKLE_OPT_HANDLE_BASE } from '../../../src/matrix/session-wire.ts';

const body = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
const cf = uintOption(12, 60);

function reassemble(parts: PartResponse[], start?: PartialBody): { whole?: PartResponse; partial?: PartialBody } {
  let held = start;
  for (const p of parts) {
    const r = acceptPart(held, p);
    if (r.kind === 'whole') return { whole: r.response };
    if (r.kind === 'partial') held = r.partial;
    else throw new Error(`unexpected ${r.kind}`);
  }
  return { partial: held! };
}

describe('push-sync parts', () => {
  it('uses the option numbers the compact rules fix', () => {
    expect([RULE_OPT_PART, RULE_OPT_HANDLE_BASE, RULE_CF_CBOR_DEFLATE]).toEqual([TRICKLE_OPT_PART, TRICKLE_OPT_HANDLE_BASE, CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE]);
  });

  it('leaves a body that fits alone and unchanged', () => {
    const res = { code: Response.CONTENT, options: [cf], payload: body(50) };
    expect(splitIntoParts(res, () => 50)).toEqual([res]);
    expect(acceptPart(undefined, res)).toEqual({ kind: 'whole', response: res });
  });

  it.each([59, 200, 1000, 4321])('splits %i bytes into parts within the room and joins them back (options from part 0)', (n) => {
    const res = { code: Response.CONTENT, options: [cf], payload: body(n) };
    const limitFor = (opts: readonly { number: number; value: Uint8Array }[]) => 60 - opts.reduce((a, o) => a + 1 + o.value.length, 0);
    const parts = splitIntoParts(res, limitFor);
    expect(parts.length).toBeGreaterThan(1);
    parts.forEach((p, i) => {
      expect(p.payload.length).toBeLessThanOrEqual(limitFor(p.options));
      const v = getUintOption(p.options, TRICKLE_OPT_PART)!;
      expect(v >> 1).toBe(i);
      expect(v & 1).toBe(i < parts.length - 1 ? 1 : 0);
      expect(p.options.some((o) => o.number === 12)).toBe(i === 0);
    });
    const { whole } = reassemble(parts);
    expect(whole).toEqual(res);
  });

  it('survives a restart of the receiver in the middle (state is plain JSON), ignores re-sent parts, and reports a gap', () => {
    const res = { code: Response.CONTENT, options: [cf], payload: body(500) };
    const parts = splitIntoParts(res, () => 100);
    const { partial } = reassemble(parts.slice(0, 3));
    const restored = JSON.parse(JSON.stringify(partial)) as PartialBody;
    expect(acceptPart(restored, parts[2]!)).toEqual({ kind: 'duplicate' });
    expect(acceptPart(restored, parts[4]!)).toEqual({ kind: 'gap', expected: 3, got: 4 });
    expect(acceptPart(undefined, parts[1]!)).toEqual({ kind: 'gap', expected: 0, got: 1 });
    expect(reassemble(parts.slice(3), restored).whole).toEqual(res);
    // Part 0 of a new body starts afresh.
    const other = splitIntoParts({ code: Response.CONTENT, options: [], payload: body(250) }, () => 100);
    expect(reassemble(other, restored).whole!.payload).toEqual(body(250));
  });

  it('fits every part of a real notification in one compact frame (CoapEndpoint.notificationPayloadLimit)', () => {
    const ep = new CoapEndpoint({ clock: new FakeClock(), randomBytes: (n) => new Uint8Array(n), maxFrameLen: 120, ackTimeoutMs: 2000, send: () => {}, wireCodec: compactWireCodec(createCompactContext()) });
    const token = Uint8Array.of(0, 0, 0, 9);
    const res = { code: Response.CONTENT, options: [cf, uintOption(65008, 300)], payload: body(2000) };
    const parts = splitIntoParts(res, (o) => ep.notificationPayloadLimit(token, res.code, o));
    expect(parts.length).toBeGreaterThan(16);
    const sizes: number[] = [];
    for (const p of parts) {
      const codec = compactWireCodec(createCompactContext());
      const f = codec.encode({ type: 0, code: p.code, mid: 0xffff, token, options: [...p.options, uintOption(6, 0xffffff)], payload: p.payload });
      sizes.push(f.length);
    }
    expect(Math.max(...sizes)).toBeLessThanOrEqual(120);
    expect(Math.max(...sizes)).toBeGreaterThanOrEqual(110); // and the room is used
    expect(ep.notificationPayloadLimit(token, res.code, [uintOption(65008, 1), { number: 65002, value: new Uint8Array(200) }])).toBe(0);
  });
});
