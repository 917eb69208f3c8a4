import { hkdf } from '@noble/hashes/hkdf.js';
import { blake2b, blake2s } from '@noble/hashes/blake2.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChaChaPoly, MAX_NONCE, chachaPolyNonce } from '../../../src/secure/cipher-functions.ts';
import { CipherState } from '../../../src/secure/cipher-state.ts';
import { X25519 } from '../../../src/secure/dh.ts';
import { HandshakeState } from '../../../src/secure/handshake-state.ts';
import { BLAKE2b, BLAKE2s, HASH_FUNCTIONS, SHA256, SHA512 } from '../../../src/secure/hash.ts';
import { BASE_PATTERN_NAMES, parseHandshakePattern, splitProtocolName } from '../../../src/secure/patterns.ts';
import { SymmetricState } from '../../../src/secure/symmetric-state.ts';
import { toHex } from '../../../src/util/bytes.ts';
import { codeOf, handshake, seededRandom } from './support.ts';

const XX = 'Noise_XX_25519_ChaChaPoly_BLAKE2s';
const IK = 'Noise_IK_25519_ChaChaPoly_BLAKE2s';

describe('hash functions (§4.3, §12)', () => {
  it('has the HASHLEN/BLOCKLEN of the spec', () => {
    expect([SHA256, SHA512, BLAKE2s, BLAKE2b].map((h) => [h.name, h.HASHLEN, h.BLOCKLEN])).toEqual([
      ['SHA256', 32, 64], ['SHA512', 64, 128], ['BLAKE2s', 32, 64], ['BLAKE2b', 64, 128],
    ]);
  });

  it('HKDF equals RFC 5869 with ck as salt and empty info', () => {
    const nobles = { SHA256: sha256, SHA512: sha512, BLAKE2s: blake2s, BLAKE2b: blake2b } as const;
    fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), fc.uint8Array({ minLength: 32, maxLength: 64 }), (ikm, ck) => {
      for (const h of Object.values(HASH_FUNCTIONS)) {
        const [o1, o2, o3] = h.hkdf(ck, ikm, 3);
        const ref = hkdf(nobles[h.name], ikm, ck, new Uint8Array(0), 3 * h.HASHLEN);
        expect(toHex(new Uint8Array([...o1!, ...o2!, ...o3!]))).toBe(toHex(ref));
      }
    }), { numRuns: 25 });
  });
});

describe('CipherState (§5.1)', () => {
  const key = new Uint8Array(32).fill(7);

  it('lays the ChaChaPoly nonce out as 32 zero bits + 64-bit little-endian counter (§12.3)', () => {
    expect(toHex(chachaPolyNonce(0x0102030405060708n))).toBe('000000000807060504030201');
  });

  it('passes plaintext through without a key and encrypts with one', () => {
    const cs = new CipherState(ChaChaPoly);
    expect(cs.hasKey()).toBe(false);
    expect(toHex(cs.encryptWithAd(new Uint8Array(0), new Uint8Array([1, 2])))).toBe('0102');
    cs.initializeKey(key);
    const ct = cs.encryptWithAd(new Uint8Array([9]), new Uint8Array([1, 2]));
    expect(ct.length).toBe(2 + 16);
    expect(cs.nonce).toBe(1n);
    const peer = new CipherState(ChaChaPoly);
    peer.initializeKey(key);
    expect(toHex(peer.decryptWithAd(new Uint8Array([9]), ct))).toBe('0102');
  });

  it('reserves nonce 2^64-1', () => {
    const cs = new CipherState(ChaChaPoly);
    cs.initializeKey(key);
    cs.setNonce(MAX_NONCE - 1n);
    cs.encryptWithAd(new Uint8Array(0), new Uint8Array(0));
    expect(codeOf(() => cs.encryptWithAd(new Uint8Array(0), new Uint8Array(0)))).toBe('ERR_NOISE_NONCE');
  });

  it('fails closed: after a failed decrypt every call throws ERR_NOISE_STATE', () => {
    const a = new CipherState(ChaChaPoly);
    const b = new CipherState(ChaChaPoly);
    a.initializeKey(key);
    b.initializeKey(key);
    const ct = a.encryptWithAd(new Uint8Array(0), new Uint8Array([1]));
    ct[0]! ^= 1;
    expect(codeOf(() => b.decryptWithAd(new Uint8Array(0), ct))).toBe('ERR_NOISE_DECRYPT');
    ct[0]! ^= 1;
    expect(codeOf(() => b.decryptWithAd(new Uint8Array(0), ct))).toBe('ERR_NOISE_STATE');
    expect(b.hasKey()).toBe(false);
  });

  it('Rekey replaces k with REKEY(k) and keeps n (§4.2, §11.3)', () => {
    const a = new CipherState(ChaChaPoly);
    const b = new CipherState(ChaChaPoly);
    a.initializeKey(key);
    b.initializeKey(key);
    a.encryptWithAd(new Uint8Array(0), new Uint8Array(0));
    a.rekey();
    expect(a.nonce).toBe(1n);
    const ct = a.encryptWithAd(new Uint8Array(0), new Uint8Array([5]));
    b.setNonce(1n);
    const expected = ChaChaPoly.encrypt(ChaChaPoly.rekey(key), 1n, new Uint8Array(0), new Uint8Array([5]));
    expect(toHex(ct)).toBe(toHex(expected));
    b.rekey();
    expect(toHex(b.decryptWithAd(new Uint8Array(0), ct))).toBe('05');
  });
});

describe('SymmetricState (§5.2)', () => {
  it('pads a short protocol name and hashes a long one', () => {
    const name32 = 'Noise_NN_25519_ChaChaPoly_SHA256'; // exactly HASHLEN: used as is
    expect(new TextDecoder().decode(new SymmetricState(name32, ChaChaPoly, SHA256).getHandshakeHash())).toBe(name32);
    const name16 = 'Noise_N_25519_ChaChaPoly_SHA512'; // shorter than 64: zero-padded
    const padded = new SymmetricState(name16, ChaChaPoly, SHA512).getHandshakeHash();
    expect(padded.length).toBe(64);
    expect(new TextDecoder().decode(padded).replace(/\0+$/, '')).toBe(name16);
    const longName = XX; // 33 bytes > 32: hashed
    const long = new SymmetricState(longName, ChaChaPoly, BLAKE2s);
    expect(toHex(long.getHandshakeHash())).toBe(toHex(blake2s(new TextEncoder().encode(longName))));
  });
});

describe('patterns (§7, §9, §10.2)', () => {
  it('knows every pattern of §7: 3 one-way, 12 fundamental, 23 deferred', () => {
    expect(BASE_PATTERN_NAMES.length).toBe(38);
    for (const d of ['NK1', 'NX1', 'X1N', 'X1K', 'XK1', 'X1K1', 'X1X', 'XX1', 'X1X1', 'K1N', 'K1K', 'KK1', 'K1K1', 'K1X', 'KX1', 'K1X1', 'I1N', 'I1K', 'IK1', 'I1K1', 'I1X', 'IX1', 'I1X1']) {
      expect(BASE_PATTERN_NAMES).toContain(d);
    }
  });

  it('places psk tokens per §9.2 and parses modifier lists', () => {
    expect(parseHandshakePattern('NNpsk0').messages[0]!.tokens).toEqual(['psk', 'e']);
    expect(parseHandshakePattern('IKpsk2').messages[1]!.tokens).toEqual(['e', 'ee', 'se', 'psk']);
    const both = parseHandshakePattern('NNpsk0+psk2');
    expect(both.messages.map((m) => m.tokens)).toEqual([['psk', 'e'], ['e', 'ee', 'psk']]);
    expect(both.psk).toBe(true);
    const fb = parseHandshakePattern('XXfallback');
    expect(fb.initiatorPreMessage).toEqual(['e']);
    expect(fb.messages.map((m) => m.from)).toEqual(['responder', 'initiator']);
  });

  it('rejects malformed names with ERR_NOISE_PATTERN', () => {
    for (const bad of ['XY', 'XXpsk9', 'XXfoo', 'NKfallback', 'XXpsk0+psk0', 'xx', '']) {
      expect(codeOf(() => parseHandshakePattern(bad))).toBe('ERR_NOISE_PATTERN');
    }
    for (const bad of ['Noise_XX_25519_ChaChaPoly', 'Nois_XX_25519_ChaChaPoly_SHA256', 'Noise_XX__ChaChaPoly_SHA256']) {
      expect(codeOf(() => splitProtocolName(bad))).toBe('ERR_NOISE_PATTERN');
    }
    expect(codeOf(() => new HandshakeState({ protocolName: 'Noise_XX_448_ChaChaPoly_SHA256', initiator: true }))).toBe('ERR_NOISE_PATTERN');
    expect(codeOf(() => new HandshakeState({ protocolName: 'Noise_XX_25519_AESGCM_SHA256', initiator: true }))).toBe('ERR_NOISE_PATTERN');
  });
});

describe('HandshakeState (§5.3)', () => {
  const hashes = ['BLAKE2s', 'BLAKE2b', 'SHA256', 'SHA512'];
  const names = BASE_PATTERN_NAMES.flatMap((p) => hashes.map((h) => `Noise_${p}_25519_ChaChaPoly_${h}`));
  const pskNames = ['NNpsk0', 'NNpsk2', 'NKpsk0+psk2', 'XXpsk3', 'IKpsk1', 'Npsk0', 'Xpsk1', 'KKpsk0+psk2', 'X1X1psk4']
    .map((p) => `Noise_${p}_25519_ChaChaPoly_BLAKE2s`);

  it.each([...names, ...pskNames])('%s completes with equal handshake hashes and working transport keys', (name) => {
    const { initiator, responder } = handshake(name, name, new Uint8Array([0x61]));
    expect(responder.isFinished()).toBe(true);
    const a = initiator.split();
    const b = responder.split();
    expect(toHex(a.handshakeHash)).toBe(toHex(b.handshakeHash));
    const ct = a.c1.encryptWithAd(new Uint8Array(0), new Uint8Array([1, 2, 3]));
    expect(toHex(b.c1.decryptWithAd(new Uint8Array(0), ct))).toBe('010203');
  });

  it('learns the peer static key in XX (for pinning before IK)', () => {
    const { initiator, responder } = handshake(XX);
    expect(initiator.getRemoteStatic()).not.toBeNull();
    expect(responder.getRemoteStatic()).not.toBeNull();
  });

  it('runs XXfallback (Noise Pipes, §10.4): Bob speaks first, Alice reuses her ephemeral', () => {
    const rnd = seededRandom('fallback');
    const aliceE = X25519.generateKeyPair(rnd);
    const name = 'Noise_XXfallback_25519_ChaChaPoly_BLAKE2s';
    const alice = new HandshakeState({ protocolName: name, initiator: true, e: aliceE, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    const bob = new HandshakeState({ protocolName: name, initiator: false, re: aliceE.publicKey, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    expect(bob.isMyTurn()).toBe(true);
    alice.readMessage(bob.writeMessage(new Uint8Array([1])));
    bob.readMessage(alice.writeMessage(new Uint8Array([2])));
    expect(toHex(alice.getHandshakeHash())).toBe(toHex(bob.getHandshakeHash()));
  });

  it('message sizes with empty payloads: XX 32+96+64, IK 96+48 (25519/ChaChaPoly/BLAKE2s)', () => {
    expect(handshake(XX).sizes).toEqual([32, 96, 64]);
    expect(handshake(IK).sizes).toEqual([96, 48]);
  });

  it('fails closed on a tampered message: ERR_NOISE_DECRYPT, then ERR_NOISE_STATE', () => {
    const rnd = seededRandom('tamper');
    const i = new HandshakeState({ protocolName: XX, initiator: true, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    const r = new HandshakeState({ protocolName: XX, initiator: false, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    r.readMessage(i.writeMessage());
    const m2 = r.writeMessage();
    m2[40]! ^= 0x01;
    expect(codeOf(() => i.readMessage(m2))).toBe('ERR_NOISE_DECRYPT');
    m2[40]! ^= 0x01;
    expect(codeOf(() => i.readMessage(m2))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => i.writeMessage())).toBe('ERR_NOISE_STATE');
  });

  it('rejects short messages, calls out of turn and missing keys', () => {
    const rnd = seededRandom('misc');
    const i = new HandshakeState({ protocolName: XX, initiator: true, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    const r = new HandshakeState({ protocolName: XX, initiator: false, s: X25519.generateKeyPair(rnd), randomBytes: rnd });
    expect(codeOf(() => r.readMessage(new Uint8Array(31)))).toBe('ERR_NOISE_HANDSHAKE');
    expect(codeOf(() => i.readMessage(new Uint8Array(32)))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => new HandshakeState({ protocolName: IK, initiator: true, s: X25519.generateKeyPair(rnd), randomBytes: rnd }))).toBe('ERR_NOISE_KEY');
    expect(codeOf(() => new HandshakeState({ protocolName: XX, initiator: true, randomBytes: rnd }))).toBe('ERR_NOISE_KEY');
    expect(codeOf(() => new HandshakeState({ protocolName: 'Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s', initiator: true, randomBytes: rnd }))).toBe('ERR_NOISE_KEY');
  });

  it('rejects a low-order remote ephemeral', () => {
    const rnd = seededRandom('low');
    const r = new HandshakeState({ protocolName: 'Noise_NN_25519_ChaChaPoly_BLAKE2s', initiator: false, randomBytes: rnd });
    r.readMessage(new Uint8Array(32)); // the all-zero point is accepted as bytes here …
    expect(codeOf(() => r.writeMessage())).toBe('ERR_NOISE_HANDSHAKE'); // … and refused by DH(e, re)
  });
});
