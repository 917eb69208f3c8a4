/**
 * The shared channel's link address (src/net/link-address.ts): what both ends must agree on
 * byte for byte, and what a stranger's frame can and cannot do with it.
 */
import { describe, expect, it } from 'vitest';
import { addressFrame, deriveKitAddress, parseLinkAddress, readAddress, MAX_KIT_ADDRESS, RESERVED_ADDRESS } from '../../../src/net/link-address.ts';
import { isTrickleError } from '../../../src/errors.ts';

describe('link address', () => {
  it('puts D|AAAAAAA in front of the frame and reads it back', () => {
    expect([...addressFrame(0x2a, 'up', new Uint8Array([0x05, 0x06]))]).toEqual([0x2a, 0x05, 0x06]);
    expect([...addressFrame(0x2a, 'down', new Uint8Array([0x05]))]).toEqual([0xaa, 0x05]);
    const r = readAddress(new Uint8Array([0xaa, 0x05, 0x06]));
    expect(r.address).toBe(0x2a);
    expect(r.direction).toBe('down');
    expect([...r.frame]).toEqual([0x05, 0x06]);
  });

  it('derives a kit address 0..126 from the key, the same on both ends, never the reserved 127', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const key = new Uint8Array(32);
      key[0] = i & 0xff; key[1] = i >> 8;
      const a = deriveKitAddress(key);
      expect(a).toBeGreaterThanOrEqual(0);
      expect(a).toBeLessThanOrEqual(MAX_KIT_ADDRESS);
      expect(a).not.toBe(RESERVED_ADDRESS);
      expect(deriveKitAddress(key.slice())).toBe(a);
      seen.add(a);
    }
    expect(seen.size).toBe(MAX_KIT_ADDRESS + 1); // every address is reachable
  });

  it('refuses a frame with nothing after its address byte, with a coded error (a stranger\'s 1-byte frame)', () => {
    for (const bytes of [new Uint8Array(0), new Uint8Array([0x2a])]) {
      let err: unknown;
      try { readAddress(bytes); } catch (e) { err = e; }
      expect(isTrickleError(err, 'ERR_LINK_ADDRESS')).toBe(true);
    }
  });

  it('--link-address takes auto or 0..126 and names the allowed range otherwise', () => {
    expect(parseLinkAddress(undefined)).toBeUndefined();
    expect(parseLinkAddress('auto')).toBeUndefined();
    expect(parseLinkAddress('0')).toBe(0);
    expect(parseLinkAddress('0x7e')).toBe(126);
    for (const bad of ['127', '-1', '1.5', 'kit', '']) expect(() => parseLinkAddress(bad)).toThrow(/0 to 126/);
  });
});
