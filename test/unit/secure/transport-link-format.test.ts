import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NONCE_FORMATS, SecureTransport, type TransportSnapshot, reconstructNonce } from '../../../src/secure/transport.ts';
import { codeOf, seededRandom } from './support.ts';

const E = new Uint8Array(0);
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function pair(extra: { resyncWraps?: number; persistMargin?: number; receiveMargin?: number; mode?: 'encrypt' | 'authenticate' } = {}) {
  const k1 = seededRandom('k1')(32);
  const k2 = seededRandom('k2')(32);
  return {
    a: SecureTransport.fromKeys(k1, k2, { nonceBits: 7, ...extra }),
    b: SecureTransport.fromKeys(k2, k1, { nonceBits: 7, ...extra }),
  };
}

describe('7-bit link format', () => {
  it('byte 0 is 0b0nnnnnnn and is bound as associated data', () => {
    const { a, b } = pair();
    for (let i = 0; i < 300; i++) {
      const f = a.seal(E, enc(`m${i}`));
      expect(f[0]).toBe(i & 0x7f);
      expect(f.length).toBe(`m${i}`.length + 17);
      if (i === 299) {
        const kind = f.slice();
        kind[0]! |= 0x80;
        expect(codeOf(() => b.open(E, kind))).toBe('ERR_NOISE_DECRYPT');
      }
      expect(dec(b.open(E, f))).toBe(`m${i}`);
    }
  });

  it('reconstructs within [highest − 31, highest + 96]', () => {
    const { window, lookAhead } = NONCE_FORMATS[7];
    expect(window + lookAhead).toBe(128);
    fc.assert(fc.property(fc.bigInt({ min: 31n, max: 1n << 40n }), fc.integer({ min: -31, max: 96 }), (h, d) => {
      const n = h + BigInt(d);
      expect(reconstructNonce(h, Number(n & 0x7fn), 7)).toBe(n);
    }));
  });

  it('without resync a gap beyond the 96-nonce look-ahead breaks the stream; with resync 8 a gap of 999 does not', () => {
    const plain = pair();
    const frames = Array.from({ length: 1200 }, (_, i) => plain.a.seal(E, enc(`m${i}`)));
    plain.b.open(E, frames[0]!);
    expect(codeOf(() => plain.b.open(E, frames[1 + 96 + 32]!))).toBe('ERR_NOISE_DECRYPT');
    const r = pair({ resyncWraps: 8 });
    const rf = Array.from({ length: 1200 }, (_, i) => r.a.seal(E, enc(`m${i}`)));
    r.b.open(E, rf[0]!);
    expect(dec(r.b.open(E, rf[1000]!))).toBe('m1000');
    expect(codeOf(() => r.b.open(E, rf[1000]!))).toBe('ERR_NOISE_REPLAY');
    expect(dec(r.b.open(E, rf[990]!))).toBe('m990'); // still inside the window behind
  });

  it('receiveMargin 1: a restarted receiver drops none of the peer frames and delivers none twice', () => {
    const k1 = seededRandom('a')(32);
    const k2 = seededRandom('b')(32);
    let disk: TransportSnapshot | null = null;
    const persist = (s: TransportSnapshot): void => { disk = JSON.parse(JSON.stringify(s)) as TransportSnapshot; };
    const sender = SecureTransport.fromKeys(k1, k2, { nonceBits: 7 });
    let receiver = SecureTransport.fromKeys(k2, k1, { nonceBits: 7, receiveMargin: 1, persist });
    const frames = Array.from({ length: 100 }, (_, i) => sender.seal(E, enc(`m${i}`)));
    for (let i = 0; i < 50; i++) receiver.open(E, frames[i]!);
    receiver = SecureTransport.importState(disk!, { persist });
    expect(codeOf(() => receiver.open(E, frames[49]!))).toBe('ERR_NOISE_REPLAY');
    for (let i = 50; i < 100; i++) expect(dec(receiver.open(E, frames[i]!))).toBe(`m${i}`);
    expect(disk!.receiveMargin).toBe(1);
    expect(disk!.nonceBits).toBe(7);
  });

  it('rejects impossible options', () => {
    expect(codeOf(() => SecureTransport.fromKeys(new Uint8Array(32), new Uint8Array(32), { nonceBits: 7, persistMargin: 97 }))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => SecureTransport.fromKeys(new Uint8Array(32), new Uint8Array(32), { nonceBits: 6 as 7 }))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => SecureTransport.fromKeys(new Uint8Array(32), new Uint8Array(32), { resyncWraps: 17 }))).toBe('ERR_NOISE_STATE');
  });
});
