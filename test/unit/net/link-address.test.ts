/**
 * The shared channel's link address (src/net/link-address.ts): what both ends must agree on
 * byte for byte, and what a stranger's frame can and cannot do with it.
 */
import { describe, expect, it } from 'vitest';
import { addressFrame, deriveKitAddress, parseLinkAddress, readAddress, MAX_KIT_ADDRESS, RESERVED_ADDRESS } from '../../../src/net/link-address.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runKeysCommand } from '../../../src/cli/keys.ts';
import { encodePublicKey } from '../../../src/secure/fingerprint.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';

interface Vectors {
  derive: { comment: string; publicKey: string; address: number }[];
  frames: { comment: string; address: number; direction: 'up' | 'down'; frame: string; onAir: string }[];
  invalid: { comment: string; onAir: string; error: string }[];
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/net/link-address.json', import.meta.url), 'utf8')) as Vectors;

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

  describe('vectors (test/vectors/net/link-address.json, docs/PROTOCOL.md)', () => {
    it.each(vectors.derive)('derives $address from $comment', (v) => {
      expect(deriveKitAddress(fromHex(v.publicKey))).toBe(v.address);
    });
    it.each(vectors.frames)('frames and reads back: $comment', (v) => {
      expect(toHex(addressFrame(v.address, v.direction, fromHex(v.frame)))).toBe(v.onAir);
      const r = readAddress(fromHex(v.onAir));
      expect({ address: r.address, direction: r.direction, frame: toHex(r.frame) }).toEqual({ address: v.address, direction: v.direction, frame: v.frame });
    });
    it.each(vectors.invalid)('refuses $comment', (v) => {
      let err: unknown;
      try { readAddress(fromHex(v.onAir)); } catch (e) { err = e; }
      expect(isTrickleError(err, v.error as 'ERR_LINK_ADDRESS')).toBe(true);
    });
  });

  it('"trickle keys list" shows each kit\'s address and names the kits that share one, with the fix', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trickle-keys-addr-'));
    try {
      const byComment = (c: string): string => encodePublicKey(fromHex(vectors.derive.find((v) => v.comment.startsWith(c))!.publicKey));
      // Bob's key and 91 02 00… both have address 0; 00 01 02… has 5.
      await runKeysCommand(['add', byComment("RFC 7748 §6.1 Bob"), 'bob-kit', '--state-dir', dir], () => {});
      await runKeysCommand(['add', encodePublicKey(fromHex('9102' + '00'.repeat(30))), 'twin-kit', '--state-dir', dir], () => {});
      await runKeysCommand(['add', byComment('00 01 02'), 'lone-kit', '--state-dir', dir], () => {});
      const lines: string[] = [];
      await runKeysCommand(['list', '--state-dir', dir], (l) => lines.push(l));
      const line = (name: string): string => lines.find((l) => l.startsWith(`${name}\t`))!;
      expect(line('bob-kit')).toMatch(/link address 0x00 \(also twin-kit: .*--link-address N/);
      expect(line('twin-kit')).toMatch(/link address 0x00 \(also bob-kit/);
      expect(line('lone-kit')).toContain('link address 0x05');
      expect(line('lone-kit')).not.toContain('also');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
