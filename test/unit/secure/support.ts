/** Shared helpers for the secure-layer tests: seeded randomness and complete handshakes. */
import { sha256 } from '@noble/hashes/sha2.js';
import type { RandomBytes } from '../../../src/util/clock.ts';
import { X25519, type KeyPair } from '../../../src/secure/dh.ts';
import { HandshakeState, resolveProtocol } from '../../../src/secure/handshake-state.ts';
import { SecureTransport, type TransportOptions } from '../../../src/secure/transport.ts';

/** Deterministic RandomBytes: SHA-256(seed ‖ counter) blocks. */
export function seededRandom(seed: string): RandomBytes {
  let counter = 0;
  const seedBytes = new TextEncoder().encode(seed);
  return (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n; off += 32) {
      const block = new Uint8Array(seedBytes.length + 4);
      block.set(seedBytes);
      new DataView(block.buffer).setUint32(seedBytes.length, counter++);
      out.set(sha256(block).subarray(0, Math.min(32, n - off)), off);
    }
    return out;
  };
}

export interface Pair {
  initiator: HandshakeState;
  responder: HandshakeState;
  /** Message sizes in order. */
  sizes: number[];
}

/** Run a whole handshake of any pattern with fresh keys; psk count inferred from the name. */
export function handshake(protocolName: string, seed = 'hs', payload = new Uint8Array(0)): Pair {
  const rnd = seededRandom(seed);
  const iS: KeyPair = X25519.generateKeyPair(rnd);
  const rS: KeyPair = X25519.generateKeyPair(rnd);
  const { pattern } = resolveProtocol(protocolName);
  const psks = Array.from({ length: pattern.messages.reduce((n, m) => n + m.tokens.filter((t) => t === 'psk').length, 0) }, () => rnd(32));
  const initiator = new HandshakeState({
    protocolName, initiator: true, prologue: new Uint8Array([1, 2]), s: iS, psks, randomBytes: rnd,
    ...(pattern.responderPreMessage.includes('s') ? { rs: rS.publicKey } : {}),
  });
  const responder = new HandshakeState({
    protocolName, initiator: false, prologue: new Uint8Array([1, 2]), s: rS, psks, randomBytes: rnd,
    ...(pattern.initiatorPreMessage.includes('s') ? { rs: iS.publicKey } : {}),
  });
  const sizes: number[] = [];
  while (!initiator.isFinished()) {
    const [w, r] = initiator.isMyTurn() ? [initiator, responder] : [responder, initiator];
    const msg = w.writeMessage(payload);
    sizes.push(msg.length);
    r.readMessage(msg);
  }
  return { initiator, responder, sizes };
}

/** Two transports over an XX handshake. */
export function transportPair(opts: TransportOptions = {}, seed = 'tp'): { a: SecureTransport; b: SecureTransport } {
  const { initiator, responder } = handshake('Noise_XX_25519_ChaChaPoly_BLAKE2s', seed);
  return { a: SecureTransport.fromHandshake(initiator, opts), b: SecureTransport.fromHandshake(responder, opts) };
}

/** Run fn and return the TrickleError code it throws (or 'no error'). */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'no error';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}
