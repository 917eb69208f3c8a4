/**
 * A pure runner for Noise test vectors in the cacophony / snow JSON format
 * (haskell-cryptography/cacophony `vectors/cacophony.txt`, mcginty/snow `tests/vectors/`):
 * both parties are built from the vector's keys, every handshake message must encrypt to the
 * given ciphertext and decrypt back to the payload, both handshake hashes must equal
 * `handshake_hash`, and the remaining messages are transport messages whose direction
 * alternates by message index (even: initiator → responder), or always initiator → responder
 * for one-way patterns, as cacophony and snow's tests/vectors.rs generate them.
 *
 * Used by scripts/conformance.ts and by the unit tests (one code path). No I/O here.
 */
import { isTrickleError } from '../errors.ts';
import { equalBytes, fromHex, toHex } from '../util/bytes.ts';
import type { CipherState } from './cipher-state.ts';
import { X25519 } from './dh.ts';
import { HandshakeState, type HandshakeOptions } from './handshake-state.ts';
import { splitProtocolName } from './patterns.ts';

export interface NoiseVectorMessage {
  readonly payload: string;
  readonly ciphertext: string;
}

/** One cacophony-format vector (hex strings). Older files call `protocol_name` `name`. */
export interface NoiseVector {
  readonly protocol_name?: string;
  readonly name?: string;
  readonly init_prologue?: string;
  readonly init_static?: string;
  readonly init_ephemeral?: string;
  readonly init_remote_static?: string;
  readonly init_remote_ephemeral?: string;
  readonly init_psks?: readonly string[];
  readonly resp_prologue?: string;
  readonly resp_static?: string;
  readonly resp_ephemeral?: string;
  readonly resp_remote_static?: string;
  readonly resp_remote_ephemeral?: string;
  readonly resp_psks?: readonly string[];
  readonly handshake_hash?: string;
  readonly messages: readonly NoiseVectorMessage[];
}

export type VectorOutcome =
  | { readonly name: string; readonly status: 'pass' }
  | { readonly name: string; readonly status: 'skip'; readonly reason: string }
  | { readonly name: string; readonly status: 'fail'; readonly reason: string };

/** Only these are implemented; anything else is reported as skipped, never as passed. */
const SUPPORTED_DH = new Set(['25519']);
const SUPPORTED_CIPHER = new Set(['ChaChaPoly']);

function noRandomness(): Uint8Array {
  throw new Error('a test vector must not need fresh randomness');
}

function partyOptions(v: NoiseVector, name: string, initiator: boolean): HandshakeOptions {
  const p = initiator ? 'init' : 'resp';
  const get = (k: string): string | undefined => (v as unknown as Record<string, string | undefined>)[`${p}_${k}`];
  const hex = (k: string): Uint8Array | undefined => {
    const x = get(k);
    return x === undefined ? undefined : fromHex(x);
  };
  const psks = (v as unknown as Record<string, readonly string[] | undefined>)[`${p}_psks`];
  const s = hex('static');
  const eph = hex('ephemeral');
  const rs = hex('remote_static');
  const re = hex('remote_ephemeral');
  return {
    protocolName: name,
    initiator,
    prologue: hex('prologue') ?? new Uint8Array(0),
    ...(s !== undefined ? { s: X25519.keyPairFromPrivate(s) } : {}),
    ...(rs !== undefined ? { rs } : {}),
    ...(re !== undefined ? { re } : {}),
    ...(psks !== undefined ? { psks: psks.map(fromHex) } : {}),
    ...(eph !== undefined ? { fixedEphemeralKeyForTestingOnly: eph } : {}),
    randomBytes: noRandomness,
  };
}

/** Run one vector; never throws. */
export function runNoiseVector(v: NoiseVector): VectorOutcome {
  const name = v.protocol_name ?? v.name ?? '(unnamed)';
  try {
    const parts = splitProtocolName(name);
    if (!SUPPORTED_DH.has(parts.dh) || !SUPPORTED_CIPHER.has(parts.cipher)) {
      return { name, status: 'skip', reason: `unsupported ${SUPPORTED_DH.has(parts.dh) ? `cipher ${parts.cipher}` : `DH ${parts.dh}`}` };
    }
    const init = new HandshakeState(partyOptions(v, name, true));
    const resp = new HandshakeState(partyOptions(v, name, false));
    const { pattern } = init.protocol;
    let i = 0;
    for (; i < v.messages.length && !init.isFinished(); i++) {
      const m = v.messages[i]!;
      const [writer, reader] = init.isMyTurn() ? [init, resp] : [resp, init];
      const ct = writer.writeMessage(fromHex(m.payload));
      if (!equalBytes(ct, fromHex(m.ciphertext))) {
        return { name, status: 'fail', reason: `handshake message ${i}: ciphertext ${toHex(ct)} != expected` };
      }
      const pt = reader.readMessage(ct);
      if (!equalBytes(pt, fromHex(m.payload))) return { name, status: 'fail', reason: `handshake message ${i}: payload mismatch` };
    }
    if (!init.isFinished() || !resp.isFinished()) {
      return { name, status: 'fail', reason: `handshake not finished after ${i} messages` };
    }
    const a = init.split();
    const b = resp.split();
    if (v.handshake_hash !== undefined) {
      const want = fromHex(v.handshake_hash);
      if (!equalBytes(a.handshakeHash, want) || !equalBytes(b.handshakeHash, want)) {
        return { name, status: 'fail', reason: `handshake hash ${toHex(a.handshakeHash)} != expected` };
      }
    }
    for (; i < v.messages.length; i++) {
      const m = v.messages[i]!;
      const fromInitiator = pattern.oneWay || i % 2 === 0;
      const [send, recv]: [CipherState, CipherState] = fromInitiator ? [a.c1, b.c1] : [b.c2, a.c2];
      const ct = send.encryptWithAd(new Uint8Array(0), fromHex(m.payload));
      if (!equalBytes(ct, fromHex(m.ciphertext))) {
        return { name, status: 'fail', reason: `transport message ${i}: ciphertext ${toHex(ct)} != expected` };
      }
      const pt = recv.decryptWithAd(new Uint8Array(0), ct);
      if (!equalBytes(pt, fromHex(m.payload))) return { name, status: 'fail', reason: `transport message ${i}: payload mismatch` };
    }
    return { name, status: 'pass' };
  } catch (e) {
    const code = isTrickleError(e) ? `${e.code}: ` : '';
    return { name, status: 'fail', reason: `${code}${e instanceof Error ? e.message : String(e)}` };
  }
}

/** Run every vector of a parsed cacophony-format file (`{ vectors: [...] }`). */
export function runNoiseVectorFile(json: unknown): VectorOutcome[] {
  const vectors = (json as { vectors?: unknown }).vectors;
  if (!Array.isArray(vectors)) throw new TypeError('not a Noise vector file: no "vectors" array');
  return (vectors as NoiseVector[]).map(runNoiseVector);
}

/** "N passed, M failed" plus ", K skipped" when any were skipped. */
export function summarizeOutcomes(outcomes: readonly VectorOutcome[]): string {
  const count = (s: VectorOutcome['status']): number => outcomes.filter((o) => o.status === s).length;
  const skipped = count('skip');
  return `${count('pass')} passed, ${count('fail')} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`;
}
