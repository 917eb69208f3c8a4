import { describe, expect, it } from 'vitest';
import { explainFrame } from '../../../src/cli/frame-explain.ts';
import { encodeCompact, createCompactContext } from '../../../src/coap/compact.ts';
import { encodeMessage, stringOption, uintOption } from '../../../src/coap/message.ts';
import { CON, Method, Opt, TrickleContentFormat } from '../../../src/coap/numbers.ts';
import { encodeTransparentFrame } from '../../../src/modem/transparent/transparent-modem.ts';
import { toHex, utf8 } from '../../../src/util/bytes.ts';

const sendHello = {
  type: CON, code: Method.PUT, mid: 1, token: new Uint8Array([0, 0, 0, 1]),
  options: [stringOption(Opt.URI_PATH, '9'), stringOption(Opt.URI_PATH, '~3'), stringOption(Opt.URI_PATH, 'm.room.message'), uintOption(Opt.CONTENT_FORMAT, TrickleContentFormat.TEXT_MESSAGE)],
  payload: utf8.encode('Hello World'),
} as const;

describe('trickle frame explain', () => {
  it('peels SLIP+CRC, the compact form, RFC 7252, the payload and the HTTP request', () => {
    const compact = encodeCompact(sendHello, createCompactContext());
    const text = explainFrame(toHex(encodeTransparentFrame(compact)), { security: 'none' });
    expect(text).toContain('SLIP + CRC-16/X.25 (transparent radio), CRC ok');
    expect(text).toContain(`compact CoAP (${compact.length} bytes)`);
    expect(text).toContain(toHex(encodeMessage(sendHello)));
    expect(text).toContain('CON 0.03');
    expect(text).toContain('"body":"Hello World"');
    expect(text).toMatch(/HTTP: PUT \/_matrix\/client\/v3\/rooms\/~3\/send\/m\.room\.message/);
  });

  it('reads plain RFC 7252 with --codec rfc7252 and reports a bad CRC', () => {
    const wire = encodeTransparentFrame(encodeMessage(sendHello));
    expect(explainFrame(toHex(wire), { security: 'none', codec: 'rfc7252' })).toContain('"body":"Hello World"');
    const bad = wire.slice(); bad[3] = bad[3]! ^ 1;
    expect(explainFrame(toHex(bad), { security: 'none', codec: 'rfc7252' })).toMatch(/neither a SLIP frame with a good CRC/);
  });

  it('names secure frames and says when content is encrypted', () => {
    expect(explainFrame('80' + '00'.repeat(32))).toMatch(/secure control frame XX1, 33 bytes/);
    expect(explainFrame('05' + 'aa'.repeat(14) + 'bb'.repeat(16))).toMatch(/nonce LSBs 5, 14 bytes of ciphertext[\s\S]*cannot be shown without the session keys/);
  });

  it('shows an authenticated-cleartext frame inside', () => {
    const compact = encodeCompact(sendHello, createCompactContext());
    const frame = new Uint8Array([0x07, ...compact, ...new Uint8Array(16)]);
    expect(explainFrame(toHex(frame), { security: 'authenticate-only' })).toContain('"body":"Hello World"');
  });

  it('refuses input that is not hex, with the usage', () => {
    expect(() => explainFrame('zz')).toThrowError(/not a hex string[\s\S]*usage: trickle frame explain/);
  });
});
