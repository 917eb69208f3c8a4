/**
 * Inputs the fuzzers found (npm run fuzz), replayed through the same watched worker the campaign
 * uses and checked directly against the decoders that were fixed.
 */
import { describe, expect, it } from 'vitest';
import { replay } from '../../fuzz/campaign.ts';
import { decodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { decodeNativeMessage } from '../../../src/modem/native/codec.ts';
import { MAX_MESSAGE_LEN } from '../../../src/modem/native/protocol-generated.ts';

const codeOf = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined; } catch (e) { return (e as { code?: string }).code; }
};

describe('fuzz-found inputs', () => {
  it('a CBOR float32 NaN or infinity has no JSON form: refused like the float64 ones (it was returned as NaN)', () => {
    expect(codeOf(() => decodeTrickleCbor(Uint8Array.from([0xfa, 0x7f, 0xc0, 0x00, 0x00])))).toBe('ERR_CBOR_TYPE');
    expect(codeOf(() => decodeTrickleCbor(Uint8Array.from([0xfa, 0x7f, 0x80, 0x00, 0x00])))).toBe('ERR_CBOR_TYPE');
    expect(decodeTrickleCbor(Uint8Array.from([0xfa, 0x3f, 0xc0, 0x00, 0x00]))).toBe(1.5);
  });

  it('a native-protocol message over MAX_MESSAGE_LEN is refused, never decoded (variable layouts had no bound)', () => {
    const big = new Uint8Array(MAX_MESSAGE_LEN + 1);
    big[0] = 0x01;
    expect(codeOf(() => decodeNativeMessage(big))).toBe('ERR_FRAME_TOO_LONG');
  });

  it('the same inputs replayed through the campaign worker raise no failure', async () => {
    const failures = await replay('trickle-cbor', ['fa7fc00000', 'fa7f800000']);
    expect(failures.flat()).toEqual([]);
  }, 60_000);
});
