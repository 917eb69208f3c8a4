import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChaChaPoly } from '../../../src/secure/cipher-functions.ts';
import {
  FRAME_OVERHEAD, NONCE_LOOKAHEAD, REPLAY_WINDOW, SecureTransport, type TransportSnapshot, reconstructNonce,
} from '../../../src/secure/transport.ts';
import { toHex } from '../../../src/util/bytes.ts';
import { codeOf, seededRandom, transportPair } from './support.ts';

const H = new Uint8Array([0x42, 0x01, 0x02]); // a stand-in for the compact CoAP header
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

describe('transport frame format', () => {
  it('adds exactly 1 nonce byte + 16 tag bytes per frame, in both modes', () => {
    expect(FRAME_OVERHEAD).toBe(17);
    for (const mode of ['encrypt', 'authenticate'] as const) {
      const { a, b } = transportPair({ mode });
      for (const len of [0, 1, 11, 200]) {
        const pt = seededRandom(`p${len}`)(len);
        const frame = a.seal(H, pt);
        expect(frame.length).toBe(len + 17);
        expect(toHex(b.open(H, frame))).toBe(toHex(pt));
      }
    }
  });

  it('carries the low 8 bits of the nonce in the first byte', () => {
    const { a } = transportPair();
    for (let i = 0; i < 300; i++) expect(a.seal(H, new Uint8Array(0))[0]).toBe(i & 0xff);
  });

  it('works in both directions and binds the header', () => {
    const { a, b } = transportPair();
    expect(dec(b.open(H, a.seal(H, enc('ping'))))).toBe('ping');
    expect(dec(a.open(H, b.seal(H, enc('pong'))))).toBe('pong');
    const f = a.seal(H, enc('x'));
    expect(codeOf(() => b.open(new Uint8Array([0x42, 0x01, 0x03]), f))).toBe('ERR_NOISE_DECRYPT');
    expect(codeOf(() => b.open(H, f.subarray(0, 16)))).toBe('ERR_NOISE_DECRYPT');
    expect(dec(b.open(H, f))).toBe('x'); // rejections left the state unchanged
  });

  it('authenticate-only mode sends the payload in clear, tag over header and payload', () => {
    const { a, b } = transportPair({ mode: 'authenticate' });
    const frame = a.seal(H, enc('CQ de N0CALL'));
    expect(dec(frame.subarray(1, frame.length - 16))).toBe('CQ de N0CALL');
    const forged = frame.slice();
    forged[1]! ^= 0x20; // 'C' -> 'c'
    expect(codeOf(() => b.open(H, forged))).toBe('ERR_NOISE_DECRYPT');
    // moving a byte between header and payload does not verify either
    const shifted = new Uint8Array([frame[0]!, H[2]!, ...frame.subarray(1)]);
    expect(codeOf(() => b.open(H.subarray(0, 2), shifted))).toBe('ERR_NOISE_DECRYPT');
    expect(dec(b.open(H, frame))).toBe('CQ de N0CALL');
  });
});

describe('tampering and replay', () => {
  it('rejects every single-bit flip of a sample of frames (and of their header)', () => {
    for (const mode of ['encrypt', 'authenticate'] as const) {
      const { a, b } = transportPair({ mode }, `flip-${mode}`);
      const frames: Uint8Array[] = [];
      for (let i = 0; i < 8; i++) frames.push(a.seal(H, seededRandom(`f${i}`)(i * 5)));
      for (const frame of frames) {
        for (let bit = 0; bit < frame.length * 8; bit++) {
          const bad = frame.slice();
          bad[bit >> 3]! ^= 1 << (bit & 7);
          expect(['ERR_NOISE_DECRYPT', 'ERR_NOISE_REPLAY']).toContain(codeOf(() => b.open(H, bad)));
        }
        for (let bit = 0; bit < H.length * 8; bit++) {
          const badH = H.slice();
          badH[bit >> 3]! ^= 1 << (bit & 7);
          expect(codeOf(() => b.open(badH, frame))).toBe('ERR_NOISE_DECRYPT');
        }
        b.open(H, frame); // still accepted after all the forgeries
      }
    }
  });

  it('rejects a replayed frame with ERR_NOISE_REPLAY', () => {
    const { a, b } = transportPair();
    const f = a.seal(H, enc('once'));
    b.open(H, f);
    expect(codeOf(() => b.open(H, f))).toBe('ERR_NOISE_REPLAY');
    const later = [a.seal(H, enc('1')), a.seal(H, enc('2'))];
    b.open(H, later[1]!);
    b.open(H, later[0]!);
    expect(codeOf(() => b.open(H, later[0]!))).toBe('ERR_NOISE_REPLAY');
    expect(codeOf(() => b.open(H, later[1]!))).toBe('ERR_NOISE_REPLAY');
  });

  it('rejects frames older than the window', () => {
    const { a, b } = transportPair();
    const frames = Array.from({ length: 200 }, (_, i) => a.seal(H, enc(`m${i}`)));
    b.open(H, frames[100]!);
    b.open(H, frames[199]!);
    // nonce 199 − 64 = 135 is just outside the 64-nonce window: its low byte maps ahead and fails
    expect(codeOf(() => b.open(H, frames[199 - REPLAY_WINDOW]!))).toBe('ERR_NOISE_DECRYPT');
    expect(dec(b.open(H, frames[199 - REPLAY_WINDOW + 1]!))).toBe(`m${199 - REPLAY_WINDOW + 1}`);
    // before anything is accepted, a low byte ≥ 192 would be a negative nonce: too old
    const { a: a2, b: b2 } = transportPair({}, 'fresh');
    const f = Array.from({ length: 200 }, () => a2.seal(H, new Uint8Array(0)));
    expect(codeOf(() => b2.open(H, f[195]!))).toBe('ERR_NOISE_REPLAY');
  });

  it('accepts any reordering within the window exactly once', () => {
    fc.assert(fc.property(fc.shuffledSubarray([...Array(REPLAY_WINDOW).keys()], { minLength: REPLAY_WINDOW }), (order) => {
      const { a, b } = transportPair({}, 'reorder');
      const frames = Array.from({ length: REPLAY_WINDOW }, (_, i) => a.seal(H, enc(`m${i}`)));
      for (const i of order) expect(dec(b.open(H, frames[i]!))).toBe(`m${i}`);
      for (const i of order) expect(codeOf(() => b.open(H, frames[i]!))).toBe('ERR_NOISE_REPLAY');
    }), { numRuns: 20 });
  });

  it('rejects frames of an old session after a re-handshake', () => {
    const old = transportPair({}, 'session-1');
    const fresh = transportPair({}, 'session-2');
    const stale = Array.from({ length: 5 }, (_, i) => old.a.seal(H, enc(`old${i}`)));
    for (const f of stale) expect(codeOf(() => fresh.b.open(H, f))).toBe('ERR_NOISE_DECRYPT');
    expect(dec(fresh.b.open(H, fresh.a.seal(H, enc('new'))))).toBe('new');
  });
});

describe('1-byte nonce reconstruction', () => {
  it('picks the unique value in [highest − 63, highest + 192]', () => {
    expect(reconstructNonce(-1n, 0)).toBe(0n);
    expect(reconstructNonce(-1n, 191)).toBe(191n);
    expect(reconstructNonce(-1n, 192)).toBe(-64n);
    expect(reconstructNonce(255n, 0)).toBe(256n);
    expect(reconstructNonce(256n, 255)).toBe(255n);
    expect(REPLAY_WINDOW + NONCE_LOOKAHEAD).toBe(256);
    fc.assert(fc.property(fc.bigInt({ min: 63n, max: (1n << 64n) - 300n }), fc.integer({ min: -63, max: 192 }), (h, d) => {
      const n = h + BigInt(d);
      expect(reconstructNonce(h, Number(n & 0xffn))).toBe(n);
    }));
  });

  it('crosses the 255 → 256 wrap, in order and reordered', () => {
    const { a, b } = transportPair();
    const frames = Array.from({ length: 300 }, (_, i) => a.seal(H, enc(`m${i}`)));
    for (let i = 0; i < 250; i++) b.open(H, frames[i]!);
    for (const i of [257, 252, 255, 256, 250, 254, 251, 253, 259, 258]) expect(dec(b.open(H, frames[i]!))).toBe(`m${i}`);
    expect(b.highestReceived).toBe(259n);
  });

  it('survives 191 lost frames in a row but not 192', () => {
    const { a, b } = transportPair();
    const frames = Array.from({ length: 600 }, (_, i) => a.seal(H, enc(`m${i}`)));
    b.open(H, frames[10]!);
    expect(dec(b.open(H, frames[10 + NONCE_LOOKAHEAD]!))).toBe(`m${10 + NONCE_LOOKAHEAD}`); // 191 lost
    const h = 10 + NONCE_LOOKAHEAD;
    expect(['ERR_NOISE_DECRYPT', 'ERR_NOISE_REPLAY']).toContain(codeOf(() => b.open(H, frames[h + NONCE_LOOKAHEAD + 1]!))); // 192 lost
    expect(dec(b.open(H, frames[h + 150]!))).toBe(`m${h + 150}`);
  });
});

describe('rekey every 2^K messages (§11.3)', () => {
  it('changes keys at epoch boundaries, agreed from the counter alone, across reordering', () => {
    const { a, b } = transportPair({ rekeyIntervalLog2: 8 }, 'rekey');
    const frames = Array.from({ length: 1100 }, (_, i) => a.seal(H, enc(`m${i}`)));
    const order = [...Array(1100).keys()];
    // swap neighbours around every boundary so frames of epoch e−1 arrive after epoch e began
    for (const boundary of [256, 512, 768, 1024]) {
      [order[boundary - 2], order[boundary + 1]] = [order[boundary + 1]!, order[boundary - 2]!];
    }
    for (const i of order) expect(dec(b.open(H, frames[i]!))).toBe(`m${i}`);
    expect(a.exportState().send.epoch).toBe('4');
  });

  it('really uses new keys: a peer that rekeys later fails from the first boundary on', () => {
    const key1 = seededRandom('k1')(32);
    const key2 = seededRandom('k2')(32);
    const a = SecureTransport.fromKeys(key1, key2, { rekeyIntervalLog2: 8 });
    const b = SecureTransport.fromKeys(key2, key1, { rekeyIntervalLog2: 9 });
    const frames = Array.from({ length: 257 }, () => a.seal(H, new Uint8Array(0)));
    for (let i = 0; i < 256; i++) b.open(H, frames[i]!);
    expect(codeOf(() => b.open(H, frames[256]!))).toBe('ERR_NOISE_DECRYPT');
    // and the frame at 256 is exactly ENCRYPT(REKEY(k), 256, header, "")
    const expected = ChaChaPoly.encrypt(ChaChaPoly.rekey(key1), 256n, H, new Uint8Array(0));
    expect(toHex(frames[256]!.subarray(1))).toBe(toHex(expected));
  });

  it('refuses options outside the safe range', () => {
    expect(codeOf(() => transportPair({ rekeyIntervalLog2: 7 }))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => transportPair({ persistMargin: 129 }))).toBe('ERR_NOISE_STATE');
  });
});

describe('restart: export/import never reuses a nonce', () => {
  /** Independent oracle: find the nonce of a frame by trial decryption under the key schedule. */
  function nonceOf(k0: Uint8Array, k: number, frame: Uint8Array, maxNonce: number): { key: string; nonce: number } {
    for (let n = frame[0]!; n <= maxNonce; n += 256) {
      let key = k0;
      for (let e = 0; e < n >> k; e++) key = ChaChaPoly.rekey(key);
      try {
        ChaChaPoly.decrypt(key, BigInt(n), H, frame.subarray(1));
        return { key: toHex(key), nonce: n };
      } catch { /* try the next candidate */ }
    }
    throw new Error('frame matches no nonce');
  }

  it('with a persist hook, across random crash points', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 150 }), { minLength: 1, maxLength: 6 }), (runs) => {
      const kA = seededRandom('ka')(32);
      const kB = seededRandom('kb')(32);
      const opts = { rekeyIntervalLog2: 8, persistMargin: 32 };
      let disk: TransportSnapshot | null = null;
      const persist = (s: TransportSnapshot): void => { disk = JSON.parse(JSON.stringify(s)) as TransportSnapshot; };
      let sender = SecureTransport.fromKeys(kA, kB, { ...opts, persist });
      const receiver = SecureTransport.fromKeys(kB, kA, opts);
      const used = new Set<string>();
      for (const count of runs) {
        for (let i = 0; i < count; i++) {
          const frame = sender.seal(H, enc(`x${i}`));
          const { key, nonce } = nonceOf(kA, 8, frame, 2000);
          const pair = `${key}:${nonce}`;
          expect(used.has(pair)).toBe(false);
          used.add(pair);
          expect(dec(receiver.open(H, frame))).toBe(`x${i}`); // the peer follows the restart jumps
        }
        // crash: only what the hook wrote survives
        if (disk !== null) sender = SecureTransport.importState(disk, { persist });
      }
    }), { numRuns: 30 });
  });

  it('without a hook, sealing past the margin or after import needs an explicit export', () => {
    const { a, b } = transportPair({ persistMargin: 4 });
    for (let i = 0; i < 10; i++) b.open(H, a.seal(H, new Uint8Array(0))); // not engaged yet
    const snap = a.exportState();
    for (let i = 0; i < 4; i++) b.open(H, a.seal(H, new Uint8Array(0)));
    expect(codeOf(() => a.seal(H, new Uint8Array(0)))).toBe('ERR_NOISE_STATE');
    const resumed = SecureTransport.importState(snap);
    expect(resumed.sendNonce).toBe(14n);
    expect(codeOf(() => resumed.seal(H, new Uint8Array(0)))).toBe('ERR_NOISE_STATE');
    resumed.exportState();
    expect(b.open(H, resumed.seal(H, enc('back'))).length).toBe(4);
  });

  it('a restarted receiver never delivers a frame twice', () => {
    const kA = seededRandom('ra')(32);
    const kB = seededRandom('rb')(32);
    let disk: TransportSnapshot | null = null;
    const persist = (s: TransportSnapshot): void => { disk = s; };
    const sender = SecureTransport.fromKeys(kA, kB, { persistMargin: 16 });
    let receiver = SecureTransport.fromKeys(kB, kA, { persistMargin: 16, persist });
    const frames = Array.from({ length: 200 }, (_, i) => sender.seal(H, enc(`m${i}`)));
    const delivered = new Set<number>();
    for (let i = 0; i < 100; i++) { receiver.open(H, frames[i]!); delivered.add(i); }
    expect(disk).not.toBeNull();
    receiver = SecureTransport.importState(disk!, { persist });
    for (let i = 0; i < 200; i++) {
      try {
        receiver.open(H, frames[i]!);
        expect(delivered.has(i)).toBe(false);
        delivered.add(i);
      } catch (e) {
        expect((e as { code: string }).code).toMatch(/ERR_NOISE_(REPLAY|DECRYPT)/);
      }
    }
    expect(delivered.has(199)).toBe(true);
  });

  it('snapshots are plain JSON and validated on import', () => {
    const { a } = transportPair();
    const snap = a.exportState();
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(codeOf(() => SecureTransport.importState({ ...snap, send: { ...snap.send, key: 'zz' } }))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => SecureTransport.importState({ ...snap, version: 2 } as unknown as TransportSnapshot))).toBe('ERR_NOISE_STATE');
  });
});
