import { describe, expect, it } from 'vitest';
import {
  Method, Opt, Response, ContentFormat, TRICKLE_OPT_AUTHORIZATION, TRICKLE_OPT_HTTP_STATUS,
  codeToString, parseCode, isCritical, isUnsafe, isNoCacheKey, isRepeatable, isRequestCode, isResponseCode,
  isReservedCode, optionName, OPTION_INFO,
} from '../../../src/coap/numbers.ts';

describe('numbers', () => {
  it('formats codes as c.dd', () => {
    expect(codeToString(Method.GET)).toBe('0.01');
    expect(codeToString(Response.CONTENT)).toBe('2.05');
    expect(codeToString(Response.CONTINUE)).toBe('2.31');
    expect(codeToString(Response.REQUEST_ENTITY_TOO_LARGE)).toBe('4.13');
    expect(codeToString(Response.PROXYING_NOT_SUPPORTED)).toBe('5.05');
    expect(codeToString(0)).toBe('0.00');
    for (let c = 0; c < 256; c++) expect(parseCode(codeToString(c))).toBe(c);
    expect(parseCode('2.32')).toBeUndefined();
    expect(parseCode('8.00')).toBeUndefined();
  });

  it('classifies codes', () => {
    expect(isRequestCode(Method.POST)).toBe(true);
    expect(isRequestCode(0)).toBe(false);
    expect(isResponseCode(Response.NOT_FOUND)).toBe(true);
    expect(isReservedCode(0x20)).toBe(true);
    expect(isReservedCode(0xe0)).toBe(true);
  });

  it('derives option properties from the number (RFC 7252 §5.4.6)', () => {
    // The §5.10 table: If-Match C, Uri-Host C U, ETag -, If-None-Match C, Uri-Port C U,
    // Uri-Path C U, Content-Format -, Max-Age U, Size1 N, Proxy-Uri C U.
    expect([isCritical(Opt.IF_MATCH), isUnsafe(Opt.IF_MATCH)]).toEqual([true, false]);
    expect([isCritical(Opt.URI_HOST), isUnsafe(Opt.URI_HOST)]).toEqual([true, true]);
    expect([isCritical(Opt.ETAG), isUnsafe(Opt.ETAG)]).toEqual([false, false]);
    expect([isCritical(Opt.URI_PATH), isUnsafe(Opt.URI_PATH)]).toEqual([true, true]);
    expect([isCritical(Opt.MAX_AGE), isUnsafe(Opt.MAX_AGE)]).toEqual([false, true]);
    expect(isNoCacheKey(Opt.SIZE1)).toBe(true);
    expect(isNoCacheKey(Opt.SIZE2)).toBe(true);
    expect(isNoCacheKey(Opt.CONTENT_FORMAT)).toBe(false);
    expect([isCritical(Opt.BLOCK1), isUnsafe(Opt.BLOCK1)]).toEqual([true, true]);
    expect(isRepeatable(Opt.URI_PATH)).toBe(true);
    expect(isRepeatable(Opt.CONTENT_FORMAT)).toBe(false);
  });

  it("keeps Trickle's options in the experimental range with the intended properties", () => {
    for (const n of [TRICKLE_OPT_AUTHORIZATION, TRICKLE_OPT_HTTP_STATUS]) {
      expect(n).toBeGreaterThanOrEqual(65000);
      expect(n).toBeLessThanOrEqual(65535);
      expect(OPTION_INFO.has(n)).toBe(true);
    }
    expect([isCritical(TRICKLE_OPT_AUTHORIZATION), isUnsafe(TRICKLE_OPT_AUTHORIZATION)]).toEqual([true, true]);
    expect([isCritical(TRICKLE_OPT_HTTP_STATUS), isUnsafe(TRICKLE_OPT_HTTP_STATUS)]).toEqual([false, false]);
    expect(Math.abs(TRICKLE_OPT_AUTHORIZATION - TRICKLE_OPT_HTTP_STATUS)).toBeLessThan(13);
    expect(optionName(TRICKLE_OPT_AUTHORIZATION)).toBe('Trickle-Authorization');
    expect(optionName(9999)).toBe('Option-9999');
    expect(ContentFormat.CBOR).toBe(60);
  });
});
