import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChaChaPoly } from '../../../src/secure/cipher-functions.ts';
import { X25519 } from '../../../src/secure/dh.ts';
import { fingerprint } from '../../../src/secure/fingerprint.ts';
import { FrameKind, IK1_OVERHEAD, LINK_FRAME_OVERHEAD, SecureLink, XX3_OVERHEAD, type SecureLinkEvent } from '../../../src/secure/secure-link.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import { LinkPair, type PairOptions, dec, enc, kindName } from './link-harness.ts';
import { seededRandom } from './support.ts';

const HELLO14 = enc('Hello World!!!'); // the compact "send Hello World" request is 14 bytes
const RESP34 = enc('$AbCdEfGhIjKlMnOpQrStUvWxYz0123456'); // its 34-byte response
const GATEWAY_KEY = X25519.generateKeyPair(seededRandom('pair-rkey'));

/** A pair with the channel cut: frames are recorded, never delivered; the test hands them over. */
function manualPair(opts: PairOptions = {}): LinkPair {
  const p = new LinkPair(opts);
  p.tamper = () => null;
  return p;
}

/** Manual XX: returns the pair with [XX1, XX2, XX3] on the air, all delivered. */
function manualXx(opts: PairOptions = {}, payload = enc('first')): LinkPair {
  const p = manualPair(opts);
  p.initiator.send(payload);
  p.responder.receive(p.air[0]!.bytes);
  p.initiator.receive(p.air[1]!.bytes);
  p.responder.receive(p.air[2]!.bytes);
  return p;
}

/** One flipped bit per byte, the bit position rotating (handshake messages: a fresh state per case is slow). */
function byteFlips(frame: Uint8Array): Uint8Array[] {
  return Array.from(frame, (_, i) => {
    const b = frame.slice();
    b[i]! ^= 1 << ((i * 3) % 8);
    return b;
  });
}

function flips(frame: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let bit = 0; bit < frame.length * 8; bit++) {
    const b = frame.slice();
    b[bit >> 3]! ^= 1 << (bit & 7);
    out.push(b);
  }
  return out;
}

/** The nonce of a 7-bit-format transport frame under split key k0 (epoch 0), by trial decryption. */
function nonceOf(k0: Uint8Array, frame: Uint8Array): number {
  const b0 = frame[0]!;
  for (let n = b0; n < 128 * 64; n += 128) {
    try {
      ChaChaPoly.decrypt(k0, BigInt(n), new Uint8Array([b0]), frame.subarray(1));
      return n;
    } catch { /* next candidate */ }
  }
  throw new Error('frame matches no nonce under this key');
}

describe('on-air sizes (the byte budget)', () => {
  it('transport frame = plaintext + 17; XX = 195; IK = 146 (+ payload)', () => {
    expect(LINK_FRAME_OVERHEAD).toBe(17);
    const p = new LinkPair();
    p.initiator.send(new Uint8Array(0)); // a handshake with empty payloads
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3']);
    const xx = p.air.map((f) => f.bytes.length);
    expect(xx).toEqual([33, 97, 65]);
    expect(p.bytesOnAir()).toBe(195);
    expect(p.delivered.responder).toEqual([]); // an empty payload is not delivered

    let from = p.air.length;
    p.initiator.send(HELLO14);
    p.run();
    expect(p.air[from]!.bytes.length).toBe(31);
    expect(p.delivered.responder).toEqual([dec(HELLO14)]);
    from = p.air.length;
    p.responder.send(RESP34);
    p.run();
    expect(p.air[from]!.bytes.length).toBe(51);

    const ik = new LinkPair({ resumable: true, seed: 'pair' });
    ik.initiator.send(new Uint8Array(0));
    ik.run();
    expect(ik.kinds()).toEqual(['IK1', 'IK2']);
    expect(ik.air.map((f) => f.bytes.length)).toEqual([97, 49]);
    const ik14 = new LinkPair({ resumable: true, seed: 'pair' });
    ik14.initiator.send(HELLO14);
    ik14.run();
    expect(ik14.air.map((f) => f.bytes.length)).toEqual([IK1_OVERHEAD + 14, 49]);
    expect(XX3_OVERHEAD).toBe(65);
    const t14 = p.air.find((f) => kindName(f.bytes) === 'T' && f.dir === 'i2r')!.bytes.length;
    const t34 = p.air.find((f) => kindName(f.bytes) === 'T' && f.dir === 'r2i')!.bytes.length;
    console.log(`[budget] 14 B plaintext → ${t14} B on air; 34 B → ${t34} B; XX (empty payloads) ${xx.join('+')} = ${p.bytesOnAir(0, 3)} B; `
      + `IK ${ik.air.map((f) => f.bytes.length).join('+')} = ${ik.bytesOnAir()} B; IK with 14 B 0-RTT ${ik14.air.map((f) => f.bytes.length).join('+')} = ${ik14.bytesOnAir()} B`);
  });
});

describe('XX on first contact', () => {
  it('pins the gateway key, carries the first request in XX3, then data both ways', () => {
    const p = new LinkPair();
    p.initiator.send(enc('hello'));
    p.initiator.send(enc('second'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3', 'T']);
    expect(p.air[2]!.bytes.length).toBe(XX3_OVERHEAD + 5);
    expect(p.delivered.responder).toEqual(['hello', 'second']);
    expect(p.eventTypes('initiator')).toEqual(['pinned', 'established']);
    const est = p.events.responder.find((e) => e.type === 'established') as Extract<SecureLinkEvent, { type: 'established' }>;
    expect(est.name).toBe('kit-1');
    expect(est.pattern).toBe('XX');
    expect(toHex(p.initiator.pinnedRemoteStatic!)).toBe(toHex(p.responderKey.publicKey));
    p.responder.send(enc('world'));
    p.initiator.send(enc('again'));
    p.run();
    expect(p.delivered.initiator).toEqual(['world']);
    expect(p.delivered.responder).toEqual(['hello', 'second', 'again']);
    expect(p.initiator.stats().state).toBe('established');
  });

  it('a retransmitted XX1 gets the identical XX2; a duplicate XX3 is not delivered twice', () => {
    const p = new LinkPair();
    p.tamper = (f, i) => (i === 1 ? null : f.bytes); // lose the first XX2
    p.initiator.send(enc('once'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX1', 'XX2', 'XX3']);
    expect(toHex(p.air[2]!.bytes)).toBe(toHex(p.air[0]!.bytes));
    expect(toHex(p.air[3]!.bytes)).toBe(toHex(p.air[1]!.bytes));
    p.responder.receive(p.air[4]!.bytes);
    expect(p.delivered.responder).toEqual(['once']);
    expect(p.dropped('responder', 'ERR_NOISE_REPLAY')).toBe(1);
  });

  it('a lost XX3 is recovered through UNKNOWN_SESSION and its data still delivered once', () => {
    const p = new LinkPair();
    p.tamper = (f, i) => (i === 2 ? null : f.bytes); // lose XX3 (which carries "req")
    p.initiator.send(enc('req'));
    p.run();
    expect(p.delivered.responder).toEqual([]);
    p.initiator.send(enc('req (CoAP retransmission)'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3', 'T', 'UNKNOWN', 'XX3']);
    expect(p.delivered.responder).toEqual(['req']);
    p.responder.send(enc('resp'));
    p.initiator.send(enc('next'));
    p.run();
    expect(p.delivered.initiator).toEqual(['resp']);
    expect(p.delivered.responder).toEqual(['req', 'next']);
  });

  it('peers in different modes never establish', () => {
    const p = new LinkPair({ extra: {} });
    const r = p.makeResponder({ mode: 'authenticate' });
    p.responder.close();
    p.responder = r;
    p.initiator.send(enc('x'));
    p.run(120_000);
    expect(p.initiator.established).toBe(false);
    expect(p.delivered.responder).toEqual([]);
    expect(p.eventTypes('initiator')).toContain('handshake-failed');
  });
});

describe('IKpsk1 once the field kit holds a resumption secret', () => {
  it('pinned in advance but no session yet: first contact is XX (IK needs a secret from a completed handshake)', () => {
    const p = new LinkPair({ pinned: GATEWAY_KEY.publicKey });
    p.initiator.send(enc('first'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3']);
    expect(p.delivered.responder).toEqual(['first']);
    expect(p.initiator.stats().resumable).toBe(true);
    expect(p.responder.stats().resumable).toBe(true);
  });

  it('carries the first request as 0-RTT payload: delivered on the first frame, no extra round trip', () => {
    const p = manualPair({ resumable: true });
    p.initiator.send(HELLO14);
    expect(p.kinds()).toEqual(['IK1']);
    p.responder.receive(p.air[0]!.bytes); // the responder's application has the request now
    expect(p.delivered.responder).toEqual([dec(HELLO14)]);
    p.responder.send(RESP34); // its answer goes right after IK2
    expect(p.kinds()).toEqual(['IK1', 'IK2', 'T']);
    p.initiator.receive(p.air[1]!.bytes);
    p.initiator.receive(p.air[2]!.bytes);
    expect(p.delivered.initiator).toEqual([dec(RESP34)]);
    expect(p.bytesOnAir()).toBe(111 + 49 + 51);
    expect(p.eventTypes('initiator')).toEqual(['established']);
  });

  it('a lost IK2 gets the identical IK2 again, and the 0-RTT data is delivered once', () => {
    const p = new LinkPair({ resumable: true });
    p.tamper = (f, i) => (i === 1 ? null : f.bytes);
    p.initiator.send(enc('zero-rtt'));
    p.run();
    expect(p.kinds()).toEqual(['IK1', 'IK2', 'IK1', 'IK2']);
    expect(toHex(p.air[3]!.bytes)).toBe(toHex(p.air[1]!.bytes));
    expect(p.delivered.responder).toEqual(['zero-rtt']);
    expect(p.initiator.established).toBe(true);
  });

  it('a lost IK2 is answered again after a restart of the responder (the exchange is persisted)', () => {
    const p = new LinkPair({ resumable: true });
    p.tamper = (f, i) => (i === 1 ? null : f.bytes);
    p.initiator.send(enc('zero-rtt'));
    p.run(500); // IK1 delivered, IK2 lost, the retransmission not yet due
    p.restart('responder', { restore: true });
    p.run();
    expect(p.kinds()).toEqual(['IK1', 'IK2', 'IK1', 'IK2']);
    expect(p.delivered.responder).toEqual(['zero-rtt']);
    expect(p.initiator.established).toBe(true);
  });

  it('falls back to XX (Noise Pipes XXfallback) when IK1 cannot be read, resending the data', () => {
    const p = new LinkPair({ resumable: true });
    p.tamper = (f, i) => {
      if (i !== 0) return f.bytes;
      const b = f.bytes.slice();
      b[50]! ^= 0x01; // damage the encrypted static key: the responder cannot read IK1
      return b;
    };
    p.initiator.send(enc('via fallback'));
    p.run();
    expect(p.kinds()).toEqual(['IK1', 'FB1', 'FB2']);
    expect(p.delivered.responder).toEqual(['via fallback']);
    expect((p.events.initiator.find((e) => e.type === 'established') as { pattern: string }).pattern).toBe('XXfallback');
    p.responder.send(enc('back'));
    p.run();
    expect(p.delivered.initiator).toEqual(['back']);
  });

  it('responder lost only its session (it kept its secrets): one IK exchange re-establishes', () => {
    const p = new LinkPair({ persist: true });
    p.initiator.send(enc('a'));
    p.run();
    p.responder.send(enc('a-ack')); // the session is confirmed once the gateway has spoken in it
    p.run();
    p.restartWithoutSession('responder');
    const from = p.air.length;
    p.initiator.send(enc('b')); // goes out under the old session
    p.run();
    expect(p.eventTypes('initiator')).toContain('session-lost');
    p.initiator.send(enc('b (retransmitted)'));
    p.run();
    expect(p.kinds(from)).toEqual(['T', 'UNKNOWN', 'IK1', 'IK2']);
    expect(p.delivered.responder).toEqual(['a', 'b (retransmitted)']);
  });

  it('responder lost all its state (same key): XXfallback re-establishes, the data arrives once', () => {
    const p = new LinkPair({ persist: true });
    p.initiator.send(enc('a'));
    p.run();
    p.responder.send(enc('a-ack'));
    p.run();
    p.restart('responder', { restore: false }); // state gone, key kept
    const from = p.air.length;
    p.initiator.send(enc('b'));
    p.run();
    expect(p.eventTypes('initiator')).toContain('session-lost');
    p.initiator.send(enc('b (retransmitted)'));
    p.run();
    expect(p.kinds(from)).toEqual(['T', 'UNKNOWN', 'IK1', 'FB1', 'FB2']);
    expect(p.delivered.responder).toEqual(['a', 'b (retransmitted)']);
    // The new session has a new secret on both sides: the next reset is IK again.
    p.restartWithoutSession('initiator');
    const next = p.air.length;
    p.initiator.send(enc('c'));
    p.run();
    expect(p.kinds(next)).toEqual(['IK1', 'IK2']);
    expect(p.delivered.responder).toEqual(['a', 'b (retransmitted)', 'c']);
  });

  it('responder lost its keys: fallback reveals a changed key, refused loudly until trusted', () => {
    const p = new LinkPair({ persist: true });
    p.initiator.send(enc('a'));
    p.run();
    const oldKey = p.responderKey;
    p.responderKey = X25519.generateKeyPair(seededRandom('new gateway key'));
    p.restart('responder', { restore: false });
    p.restartWithoutSession('initiator');
    p.initiator.send(enc('secret'));
    p.run();
    expect(p.kinds().slice(-2)).toEqual(['IK1', 'FB1']);
    const changed = p.events.initiator.find((e) => e.type === 'key-changed') as Extract<SecureLinkEvent, { type: 'key-changed' }>;
    expect(changed.expectedFingerprint).toBe(fingerprint(oldKey.publicKey));
    expect(changed.receivedFingerprint).toBe(fingerprint(p.responderKey.publicKey));
    expect(p.delivered.responder).toEqual(['a']); // never delivered to the new key
    const n = p.air.length;
    p.initiator.send(enc('still refused'));
    p.run();
    expect(p.air.length).toBe(n); // nothing sent at all
    expect(p.initiator.stats().state).toBe('key-changed');
    p.initiator.trustRemoteStatic(changed.receivedKey);
    p.initiator.send(enc('after trust'));
    p.run();
    expect(p.kinds(n)).toEqual(['XX1', 'XX2', 'XX3']); // the old secret was for the old key
    expect(p.delivered.responder).toEqual(['a', 'after trust']);
  });

  it('a damaged IK2 is dropped; the retransmitted IK1 gets the genuine IK2', () => {
    const p = new LinkPair({ resumable: true });
    p.tamper = (f, i) => {
      if (i !== 1) return f.bytes;
      const b = f.bytes.slice();
      b[40]! ^= 0x80;
      return b;
    };
    p.initiator.send(enc('x'));
    p.run();
    expect(p.initiator.established).toBe(true);
    expect(p.kinds()).toEqual(['IK1', 'IK2', 'IK1', 'IK2']);
    expect(toHex(p.air[2]!.bytes)).toBe(toHex(p.air[0]!.bytes));
    expect(p.delivered.responder).toEqual(['x']);
  });
});

describe('lossy channel', () => {
  it('establishes and exchanges data under 30 % frame loss (60 seeds)', () => {
    const results: number[] = [];
    for (let seed = 1; seed <= 60; seed++) {
      const p = new LinkPair({ lossRate: 0.3, lossSeed: seed, seed: `loss-${seed}` });
      let gotPong = false;
      p.onDeliver = (side, text) => {
        if (side === 'responder' && text.startsWith('ping')) p.responder.send(enc('pong'));
        if (side === 'initiator' && text === 'pong') gotPong = true;
      };
      // An application that retransmits like CoAP: every 4 s until answered.
      let tries = 0;
      const tick = (): void => {
        if (gotPong || tries > 150) return;
        tries++;
        p.initiator.send(enc(`ping ${tries}`));
        p.clock.setTimer(4000, tick);
      };
      tick();
      p.run(600_000);
      expect(gotPong, `seed ${seed}`).toBe(true);
      expect(p.initiator.established && p.responder.established, `seed ${seed}`).toBe(true);
      // Nothing but pings was ever delivered to the responder, each at most once.
      expect(new Set(p.delivered.responder).size).toBe(p.delivered.responder.length);
      results.push(p.bytesOnAir());
    }
    console.log(`[loss 30%] bytes on air until the first answer: median ${results.sort((a, b) => a - b)[30]}, max ${results[59]}`);
  });
});

describe('tampering', () => {
  it('rejects every single-bit flip of transport frames, both modes', () => {
    for (const mode of ['encrypt', 'authenticate'] as const) {
      const p = manualXx({ mode, seed: `flip-${mode}` });
      for (const [from, to, text] of [['initiator', 'responder', 'CQ de N0CALL'], ['responder', 'initiator', 'x'], ['initiator', 'responder', '']] as const) {
        const n = p.air.length;
        p[from].send(enc(text));
        const frame = p.air[n]!.bytes;
        expect(kindName(frame)).toBe('T');
        const before = p.delivered[to].length;
        for (const bad of flips(frame)) p[to].receive(bad);
        expect(p.delivered[to].length).toBe(before);
        p[to].receive(frame); // the genuine frame still goes through
        if (text !== '') expect(p.delivered[to].at(-1)).toBe(text);
      }
    }
  });

  it('rejects a bit flip in every byte of XX2, XX3, IK1 and IK2 (fresh state per flip)', () => {
    let checked = 0;
    // XX2 → the initiator must not establish with it.
    const xx = manualXx({}, enc('payload'));
    for (const bad of byteFlips(xx.air[1]!.bytes)) {
      const p = manualPair();
      p.initiator.send(enc('payload'));
      p.initiator.receive(bad);
      expect(p.initiator.established).toBe(false);
      checked++;
    }
    // XX3 → the responder must not establish or deliver.
    for (const bad of byteFlips(xx.air[2]!.bytes)) {
      const p = manualPair();
      p.initiator.send(enc('payload'));
      p.responder.receive(p.air[0]!.bytes);
      p.initiator.receive(p.air[1]!.bytes);
      p.responder.receive(bad);
      expect(p.responder.established).toBe(false);
      expect(p.delivered.responder).toEqual([]);
      checked++;
    }
    // IK1 (with 0-RTT data) → nothing delivered, the responder's session not replaced.
    const ik = manualPair({ resumable: true });
    ik.initiator.send(HELLO14);
    ik.responder.receive(ik.air[0]!.bytes);
    expect(ik.delivered.responder).toEqual([dec(HELLO14)]);
    const flipped = manualPair({ resumable: true });
    const established = (p: LinkPair) => p.events.responder.filter((e) => e.type === 'established').length;
    for (const bad of byteFlips(ik.air[0]!.bytes)) {
      flipped.responder.receive(bad);
      expect(established(flipped)).toBe(0);
      expect(flipped.delivered.responder).toEqual([]);
      checked++;
    }
    // IK2 → the initiator must not establish.
    for (const bad of byteFlips(ik.air[1]!.bytes)) {
      const p = manualPair({ resumable: true });
      p.initiator.send(HELLO14);
      p.initiator.receive(bad);
      expect(p.initiator.established).toBe(false);
      checked++;
    }
    expect(checked).toBe(97 + 72 + 111 + 49);
  });

  it('XX1 cannot be authenticated, but a damaged one never leads to a session', () => {
    for (const bit of [0, 9, 100, 263]) {
      const p = new LinkPair();
      p.tamper = (f, i) => {
        if (i !== 0) return f.bytes;
        const b = f.bytes.slice();
        b[bit >> 3]! ^= 1 << (bit & 7);
        return b;
      };
      p.initiator.send(enc('x'));
      p.run();
      expect(p.initiator.established).toBe(true); // after a retransmission
      expect(p.delivered.responder).toEqual(['x']);
    }
  });

  it('never throws on arbitrary input, in any state', () => {
    const idle = manualPair();
    const xx = manualXx();
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      for (const p of [idle, xx]) {
        p.initiator.receive(bytes);
        p.responder.receive(bytes);
      }
    }), { numRuns: 300 });
    expect(xx.delivered.initiator).toEqual([]);
    expect(xx.delivered.responder).toEqual(['first']);
  });
});

describe('replay and old sessions', () => {
  it('a replayed transport frame is dropped', () => {
    const p = manualXx();
    p.initiator.send(enc('pay 10 €'));
    const f = p.air.at(-1)!.bytes;
    p.responder.receive(f);
    p.responder.receive(f);
    expect(p.delivered.responder).toEqual(['first', 'pay 10 €']);
    expect(p.dropped('responder', 'ERR_NOISE_REPLAY')).toBe(1);
  });

  it('a recorded IK1 replayed later delivers nothing and does not replace the session (even after a restart)', () => {
    const p = new LinkPair({ resumable: true });
    p.initiator.send(enc('transfer'));
    p.run();
    const recorded = p.air[0]!.bytes;
    expect(kindName(recorded)).toBe('IK1');
    // The field kit loses its session again: a second IK.
    p.restartWithoutSession('initiator');
    p.initiator.send(enc('second'));
    p.run();
    for (const restart of [false, true]) {
      if (restart) p.restart('responder', { restore: true });
      const n = p.air.length;
      p.responder.receive(recorded);
      expect(p.air.length).toBe(n); // not even answered
      p.initiator.send(enc(`still works ${restart}`));
      p.run();
    }
    expect(p.delivered.responder).toEqual(['transfer', 'second', 'still works false', 'still works true']);
    expect(p.eventTypes('responder').filter((t) => t === 'established')).toHaveLength(2);
  });

  it('the issue-11 attack: forged XX1s flush the ephemeral cache, then the recorded IK1 is replayed — nothing is performed twice, the live session stays', () => {
    const p = new LinkPair({ resumable: true, extra: { unauthenticatedReplies: { burst: 1000, refillMs: 1 } } });
    p.initiator.send(enc('POST /send once'));
    p.run();
    const recorded = p.air[0]!.bytes;
    p.responder.send(enc('ok'));
    p.initiator.send(enc('ack')); // the kit speaks in the new session: it has IK2
    p.run();
    const rnd = seededRandom('attacker');
    for (const restart of [false, true]) {
      if (restart) p.restart('responder', { restore: true, extra: { unauthenticatedReplies: { burst: 1000, refillMs: 1 } } });
      for (let i = 0; i < 100; i++) p.responder.receive(new Uint8Array([FrameKind.XX1, ...rnd(32)]));
      const established = p.events.responder.filter((e) => e.type === 'established').length;
      const sent = p.air.length;
      p.responder.receive(recorded);
      expect(p.events.responder.filter((e) => e.type === 'established').length).toBe(established);
      expect(p.air.length).toBe(sent); // no FB1 either: it is a handshake this responder completed
      // The kit's live session still works, both ways.
      p.initiator.send(enc(`after replay ${restart}`));
      p.responder.send(enc(`answer ${restart}`));
      p.run();
      expect(p.delivered.responder.at(-1)).toBe(`after replay ${restart}`);
      expect(p.delivered.initiator.at(-1)).toBe(`answer ${restart}`);
    }
    expect(p.delivered.responder.filter((t) => t === 'POST /send once')).toHaveLength(1);
    expect(p.dropped('responder', 'ERR_NOISE_REPLAY')).toBe(1); // by the responder restarted last
  });

  it('an IK1 that never reached the responder (jammed and recorded) is useless once a later handshake completed', () => {
    const p = new LinkPair({ resumable: true });
    p.tamper = (f, i) => (i === 0 ? null : f.bytes); // the attacker jams the first IK1 and keeps it
    p.initiator.send(enc('jammed'));
    p.run(500);
    const jammed = p.air[0]!.bytes;
    p.tamper = null;
    p.run(); // the retransmission (the same bytes) gets through: delivered once
    expect(p.delivered.responder).toEqual(['jammed']);
    p.responder.receive(jammed); // identical to the completed exchange: answered from the cache, not processed
    // Now a newer handshake: the recorded IK1 is built on a secret the responder no longer holds.
    p.restartWithoutSession('initiator');
    p.initiator.send(enc('newer'));
    p.run();
    const sessions = p.events.responder.filter((e) => e.type === 'established').length;
    p.responder.receive(jammed);
    p.run();
    expect(p.delivered.responder).toEqual(['jammed', 'newer']);
    expect(p.events.responder.filter((e) => e.type === 'established').length).toBe(sessions);
  });

  it('frames of an old session are rejected after a new handshake', () => {
    const p = new LinkPair({ resumable: true });
    p.initiator.send(enc('s1 a'));
    p.run();
    p.responder.send(enc('s1 b'));
    p.initiator.send(enc('s1 c'));
    p.run();
    const old = p.air.filter((f) => kindName(f.bytes) === 'T');
    p.restartWithoutSession('initiator');
    p.initiator.send(enc('s2 a'));
    p.run();
    expect(p.kinds().slice(-2)).toEqual(['IK1', 'IK2']);
    for (const f of old) (f.dir === 'i2r' ? p.responder : p.initiator).receive(f.bytes);
    expect(p.delivered.responder).toEqual(['s1 a', 's1 c', 's2 a']);
    expect(p.delivered.initiator).toEqual(['s1 b']);
  });
});

describe('authorization (responder)', () => {
  it('an unauthorized key gets nothing delivered: XX', () => {
    const p = new LinkPair({ authorized: false });
    p.initiator.send(enc('let me in'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3', 'REFUSED']);
    expect(p.delivered.responder).toEqual([]);
    expect(p.responder.established).toBe(false);
    expect(p.eventTypes('responder')).toEqual(['refused']);
    expect(p.eventTypes('initiator')).toContain('refused');
    expect(p.dropped('responder', 'ERR_NOISE_KEY')).toBe(1);
    // Transport frames from it go nowhere either.
    p.initiator.send(enc('again'));
    p.run();
    expect(p.delivered.responder).toEqual([]);
  });

  it('an unauthorized key gets nothing delivered: IK 0-RTT', () => {
    const p = new LinkPair({ resumable: true });
    p.authorized = false;
    p.initiator.send(enc('0-rtt request'));
    p.run(600_000);
    expect(p.kinds().slice(0, 2)).toEqual(['IK1', 'REFUSED']);
    expect(p.delivered.responder).toEqual([]);
    // The kit retries (a lone REFUSED may be forged), then reports the refusal.
    expect(p.eventTypes('initiator')).toContain('refused');
    expect(p.kinds().filter((k) => k === 'REFUSED').length).toBeLessThanOrEqual(4); // the reply budget
  });

  it('revoking a key ends a live session before anything more is delivered', () => {
    const p = new LinkPair();
    p.initiator.send(enc('ok'));
    p.run();
    p.authorized = false;
    p.initiator.send(enc('after revoke'));
    p.run();
    expect(p.delivered.responder).toEqual(['ok']);
    expect(p.eventTypes('responder')).toContain('refused');
    expect(p.responder.established).toBe(false);
  });
});

describe('restart and resumption', () => {
  it('restart of either end with restore costs 0 extra bytes and never reuses a nonce', () => {
    const p = new LinkPair({ persist: true });
    p.initiator.send(enc('hello'));
    p.run();
    const keys = { i2r: fromHex(p.disk.initiator!.session!.transport.send.key), r2i: fromHex(p.disk.responder!.session!.transport.send.key) };
    const expectedI = ['hello'];
    const expectedR: string[] = [];
    for (let round = 0; round < 6; round++) {
      // Traffic well past the 32-nonce persist margin, then a crash of one end.
      for (let i = 0; i < 45; i++) {
        p.initiator.send(enc(`i${round}.${i}`));
        p.responder.send(enc(`r${round}.${i}`));
        expectedI.push(`i${round}.${i}`);
        expectedR.push(`r${round}.${i}`);
      }
      p.run(1000);
      p.restart(round % 2 === 0 ? 'initiator' : 'responder', { restore: true });
      const from = p.air.length;
      p.initiator.send(HELLO14);
      p.responder.send(RESP34);
      expectedI.push(dec(HELLO14));
      expectedR.push(dec(RESP34));
      p.run(1000);
      expect(p.kinds(from)).toEqual(['T', 'T']);
      expect(p.bytesOnAir(from)).toBe(31 + 51);
    }
    expect(p.delivered.responder).toEqual(expectedI);
    expect(p.delivered.initiator).toEqual(expectedR);
    expect(p.kinds().filter((k) => k !== 'T')).toEqual(['XX1', 'XX2', 'XX3']);
    for (const dir of ['i2r', 'r2i'] as const) {
      const nonces = p.air.filter((f) => f.dir === dir && kindName(f.bytes) === 'T').map((f) => nonceOf(keys[dir], f.bytes));
      expect(new Set(nonces).size).toBe(nonces.length);
    }
  });

  it('a restored snapshot of another identity or with a different pinned key starts fresh', () => {
    const p = new LinkPair({ persist: true });
    p.initiator.send(enc('a'));
    p.run();
    const other = X25519.generateKeyPair(seededRandom('someone else'));
    const events: string[] = [];
    const l = new SecureLink({
      role: 'initiator', staticKeyPair: p.initiatorKey, remoteStaticPinned: other.publicKey, mode: 'encrypt', clock: p.clock, randomBytes: p.rnd,
      send: () => {}, deliver: () => {}, onEvent: (e) => events.push(e.type), handshakeRetryMs: 1000, restore: p.disk.initiator!,
    });
    expect(l.established).toBe(false);
    expect(events).toEqual(['restore-failed']);
    const r = new SecureLink({
      role: 'responder', staticKeyPair: other, isAuthorized: () => 'x', mode: 'encrypt', clock: p.clock, randomBytes: p.rnd,
      send: () => {}, deliver: () => {}, handshakeRetryMs: 1000, restore: p.disk.responder!,
    });
    expect(r.established).toBe(false);
  });

  it('a persist failure ends the session (fail closed) instead of risking nonce reuse', () => {
    let fail = false;
    const p = new LinkPair({ persist: true });
    const r = p.makeResponder({ persist: () => { if (fail) throw new Error('disk full'); } });
    p.responder.close();
    p.responder = r;
    p.initiator.send(enc('a'));
    p.run();
    fail = true;
    for (let i = 0; i < 40; i++) p.responder.send(enc(`r${i}`));
    expect(p.responder.established).toBe(false);
    expect(p.eventTypes('responder')).toContain('session-lost');
    expect(p.delivered.initiator.length).toBeLessThan(40);
  });
});

describe('authenticate-only mode (amateur bands)', () => {
  it('payload in clear on the channel, every flip rejected, IK 0-RTT data in clear too', () => {
    const p = new LinkPair({ mode: 'authenticate' });
    p.initiator.send(enc('CQ de N0CALL'));
    p.run();
    // XX3 carries no payload in this mode (Noise would encrypt it): the data follows in clear.
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3', 'T']);
    expect(p.air[2]!.bytes.length).toBe(65);
    const t = p.air[3]!.bytes;
    expect(dec(t.subarray(1, t.length - 16))).toBe('CQ de N0CALL');
    expect(t.length).toBe(12 + 17);
    expect(p.delivered.responder).toEqual(['CQ de N0CALL']);

    const ik = manualPair({ mode: 'authenticate', resumable: true });
    ik.initiator.send(enc('QRV? de N0CALL'));
    const ik1 = ik.air[0]!.bytes;
    expect(ik1[0]).toBe(FrameKind.IK1);
    expect(dec(ik1.subarray(97))).toBe('QRV? de N0CALL');
    const q = manualPair({ mode: 'authenticate', resumable: true });
    for (const bad of byteFlips(ik1)) {
      q.responder.receive(bad);
      expect(q.delivered.responder).toEqual([]);
    }
    ik.responder.receive(ik1);
    expect(ik.delivered.responder).toEqual(['QRV? de N0CALL']);
  });
});

describe('unauthenticated input is cheap to ignore', () => {
  it('a forged UNKNOWN_SESSION right after the kit transmits does not end a working session', () => {
    const p = new LinkPair();
    p.onDeliver = (side, text) => { if (side === 'responder') p.responder.send(enc(`re: ${text}`)); };
    p.initiator.send(enc('a'));
    p.run();
    for (let i = 0; i < 5; i++) {
      p.initiator.send(enc(`q${i}`));
      p.initiator.receive(new Uint8Array([FrameKind.UNKNOWN_SESSION])); // the attacker is faster than the gateway
      p.run();
    }
    expect(p.initiator.established).toBe(true);
    expect(p.eventTypes('initiator')).not.toContain('session-lost');
    expect(p.kinds().filter((k) => k !== 'T')).toEqual(['XX1', 'XX2', 'XX3']); // no new handshake
    expect(p.delivered.initiator).toEqual(['re: a', 're: q0', 're: q1', 're: q2', 're: q3', 're: q4']);
    expect(p.dropped('initiator', 'ERR_NOISE_CONTROL')).toBe(5);
  });

  it('frames someone else sends on the kit\'s address do not make the gateway end the kit\'s working session (SECURITY.md, attack 9)', () => {
    // On a shared channel anyone can send frames on a kit's address. Three the gateway cannot
    // open (or one, once a forged XX1 left a handshake pending) made it answer UNKNOWN_SESSION,
    // which the kit took for the answer to its last frame: its session ended, a new handshake
    // followed. Both after an exchange the gateway answered and after the kit's own answer to
    // the gateway (a frame nobody answers).
    const p = new LinkPair();
    p.onDeliver = (side, text) => { if (side === 'responder' && text.startsWith('q')) p.responder.send(enc(`re: ${text}`)); };
    p.initiator.send(enc('q0'));
    p.run();
    const rnd = seededRandom('stranger');
    const forge = (): void => {
      for (let i = 0; i < 3; i++) p.responder.receive(Uint8Array.of(0x40 + i, ...rnd(30)));
      p.responder.receive(Uint8Array.of(FrameKind.XX1, ...rnd(32)));
      p.responder.receive(Uint8Array.of(0x50, ...rnd(30)));
    };
    const from = p.air.length;
    p.initiator.send(enc('q1')); // answered
    p.clock.advance(120);
    forge();
    p.run();
    p.responder.send(enc('push')); // the gateway asks, the kit answers: nothing answers the kit
    p.clock.advance(60);
    p.initiator.send(enc('ack'));
    p.clock.advance(60);
    forge();
    p.run();
    p.initiator.send(enc('q2'));
    p.run();
    expect(p.kinds(from)).not.toContain('UNKNOWN');
    expect(p.kinds(from).filter((k) => k !== 'T' && k !== 'XX2')).toEqual([]); // no new handshake (XX2s answer the forged XX1s)
    expect(p.eventTypes('initiator')).not.toContain('session-lost');
    expect(p.delivered.initiator).toEqual(['re: q0', 're: q1', 'push', 're: q2']);
    expect(p.dropped('responder', 'ERR_NOISE_DECRYPT')).toBe(8); // they arrived, and were dropped
    // A kit whose frames the gateway really cannot open still gets its UNKNOWN_SESSION once the
    // session has not been heard working for a while (here: every frame of the kit is damaged).
    p.run(600_000);
    const before = p.air.length;
    p.tamper = (f) => (f.dir === 'i2r' && kindName(f.bytes) === 'T' ? Uint8Array.of(...f.bytes.subarray(0, -1), f.bytes.at(-1)! ^ 1) : f.bytes);
    for (let i = 0; i < 3; i++) { p.initiator.send(enc(`q${3 + i}`)); p.clock.advance(100); }
    p.run();
    expect(p.kinds(before).slice(0, 2)).toEqual(['T', 'UNKNOWN']); // at once: the forged XX1s left handshakes pending
    expect(p.eventTypes('initiator')).toContain('session-lost');
  });

  it('an UNKNOWN_SESSION after the gateway answered the kit\'s last frame is ignored: the gateway holds the session', () => {
    const p = new LinkPair();
    p.onDeliver = (side, text) => { if (side === 'responder') p.responder.send(enc(`re: ${text}`)); };
    p.initiator.send(enc('a'));
    p.run();
    p.initiator.send(enc('b'));
    p.clock.advance(200); // answered (latency 50 ms each way)
    p.initiator.receive(new Uint8Array([FrameKind.UNKNOWN_SESSION]));
    p.run();
    expect(p.initiator.established).toBe(true);
    expect(p.eventTypes('initiator')).not.toContain('session-lost');
    expect(p.kinds().filter((k) => k !== 'T')).toEqual(['XX1', 'XX2', 'XX3']);
    expect(p.dropped('initiator', 'ERR_NOISE_CONTROL')).toBe(1);
  });

  it('an UNKNOWN_SESSION that answers nothing the kit sent is ignored', () => {
    const p = new LinkPair();
    p.initiator.send(enc('a'));
    p.run();
    p.run(60_000); // idle
    for (let i = 0; i < 20; i++) p.initiator.receive(new Uint8Array([FrameKind.UNKNOWN_SESSION]));
    p.run();
    expect(p.initiator.established).toBe(true);
    expect(p.air.length).toBe(3);
  });

  it('a forged REFUSED does not stop a handshake that the gateway answers', () => {
    const p = new LinkPair();
    p.tamper = (f) => {
      if (f.dir === 'i2r' && kindName(f.bytes) === 'XX1') p.clock.setTimer(1, () => p.initiator.receive(new Uint8Array([FrameKind.REFUSED])));
      return f.bytes;
    };
    p.initiator.send(enc('hello'));
    p.run();
    expect(p.initiator.established).toBe(true);
    expect(p.delivered.responder).toEqual(['hello']);
    expect(p.eventTypes('initiator')).not.toContain('refused');
  });

  it('a forged REFUSED after XX3 is contradicted by the gateway\'s answer', () => {
    const p = new LinkPair();
    p.onDeliver = (side, text) => { if (side === 'responder') p.responder.send(enc(`re: ${text}`)); };
    p.tamper = (f) => {
      if (f.dir === 'i2r' && kindName(f.bytes) === 'XX3') p.clock.setTimer(1, () => p.initiator.receive(new Uint8Array([FrameKind.REFUSED])));
      return f.bytes;
    };
    p.initiator.send(enc('hello'));
    p.run();
    expect(p.initiator.established).toBe(true);
    expect(p.delivered.initiator).toEqual(['re: hello']);
    expect(p.eventTypes('initiator')).not.toContain('refused');
  });

  it('forged handshake answers (XX2, IK2) are dropped without restarting the kit\'s handshake', () => {
    const rnd = seededRandom('forger');
    const p = new LinkPair();
    p.tamper = (f) => {
      if (f.dir === 'i2r' && kindName(f.bytes) === 'XX1') p.initiator.receive(new Uint8Array([FrameKind.XX2, ...rnd(96)]));
      return f.bytes;
    };
    p.initiator.send(enc('x'));
    p.run();
    expect(p.kinds()).toEqual(['XX1', 'XX2', 'XX3']);
    expect(p.delivered.responder).toEqual(['x']);
    const q = new LinkPair({ resumable: true });
    q.tamper = (f) => {
      if (f.dir === 'i2r' && kindName(f.bytes) === 'IK1') q.initiator.receive(new Uint8Array([FrameKind.IK2, ...rnd(48)]));
      return f.bytes;
    };
    q.initiator.send(enc('y'));
    q.run();
    expect(q.kinds()).toEqual(['IK1', 'IK2']);
    expect(q.delivered.responder).toEqual(['y']);
  });

  it('a flood of forged XX1s gets a bounded number of XX2s; a kit with a resumption secret is still served at once', () => {
    const rnd = seededRandom('flood');
    const p = new LinkPair({ resumable: true, extra: { unauthenticatedReplies: { burst: 4, refillMs: 60_000 } } });
    const before = p.air.length;
    for (let i = 0; i < 500; i++) p.responder.receive(new Uint8Array([FrameKind.XX1, ...rnd(32)]));
    p.run(1000);
    const replies = p.since(before).filter((f) => f.dir === 'r2i');
    expect(replies.length).toBe(4);
    expect(p.dropped('responder', 'ERR_NOISE_RATE')).toBe(496);
    p.initiator.send(enc('0-rtt under attack'));
    p.run(1000);
    expect(p.delivered.responder).toEqual(['0-rtt under attack']);
    // An hour later the budget has refilled (one a minute, capped at the burst).
    p.run(3_600_000);
    for (let i = 0; i < 100; i++) p.responder.receive(new Uint8Array([FrameKind.XX1, ...rnd(32)]));
    p.run(1000);
    const later = p.air.filter((f) => f.dir === 'r2i' && kindName(f.bytes) === 'XX2').length;
    expect(later).toBe(4 + 4);
  });

  it('forged XX1s and a garbage XX3 do not destroy a genuine first contact in progress', () => {
    const rnd = seededRandom('spoiler');
    const p = manualPair();
    p.initiator.send(enc('first contact'));
    p.responder.receive(p.air[0]!.bytes); // genuine XX1 → XX2 (pending)
    p.responder.receive(new Uint8Array([FrameKind.XX1, ...rnd(32)])); // a forged one: a second pending
    p.responder.receive(new Uint8Array([FrameKind.XX3, ...rnd(80)])); // garbage XX3
    p.initiator.receive(p.air[1]!.bytes); // the genuine XX2 → XX3
    const xx3 = p.air.find((f) => f.dir === 'i2r' && kindName(f.bytes) === 'XX3')!;
    p.responder.receive(xx3.bytes);
    expect(p.responder.established).toBe(true);
    expect(p.delivered.responder).toEqual(['first contact']);
  });
});
