import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runNoiseVectorFile, summarizeOutcomes } from '../../../src/secure/noise-vectors.ts';

const SHARED = fileURLToPath(new URL('../../../../shared/vectors/noise/cacophony-25519-chachapoly.json', import.meta.url));
const FULL = fileURLToPath(new URL('../../vectors/noise/cacophony-full-25519-chachapoly.json', import.meta.url));

function load(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8'));
}

describe('Noise conformance vectors (cacophony format)', () => {
  it('passes every vector of the shared file', () => {
    const outcomes = runNoiseVectorFile(load(SHARED));
    expect(outcomes.filter((o) => o.status !== 'pass')).toEqual([]);
    expect(outcomes.length).toBe(6);
    expect(summarizeOutcomes(outcomes)).toBe('6 passed, 0 failed');
  });

  it.skipIf(!existsSync(FULL))('passes every vector of the cacophony 25519/ChaChaPoly subset', () => {
    const json = load(FULL) as { vectors: unknown[] };
    const outcomes = runNoiseVectorFile(json);
    expect(outcomes.filter((o) => o.status !== 'pass')).toEqual([]);
    expect(outcomes.length).toBe(json.vectors.length);
  });

  it('detects a wrong ciphertext, a wrong handshake hash, and skips unsupported algorithms', () => {
    const file = load(SHARED) as { vectors: Record<string, unknown>[] };
    const v = file.vectors[0]!;
    const msgs = v['messages'] as { payload: string; ciphertext: string }[];
    const flip = (hex: string): string => (hex[0] === '0' ? '1' : '0') + hex.slice(1);
    const badCt = { ...v, messages: msgs.map((m, i) => (i === 4 ? { ...m, ciphertext: flip(m.ciphertext) } : m)) };
    const badHash = { ...v, handshake_hash: flip(v['handshake_hash'] as string) };
    const aes = { ...v, protocol_name: 'Noise_NK_25519_AESGCM_BLAKE2s' };
    const x448 = { ...v, protocol_name: 'Noise_NK_448_ChaChaPoly_BLAKE2s' };
    const outcomes = runNoiseVectorFile({ vectors: [badCt, badHash, aes, x448] });
    expect(outcomes.map((o) => o.status)).toEqual(['fail', 'fail', 'skip', 'skip']);
    expect(summarizeOutcomes(outcomes)).toBe('0 passed, 2 failed, 2 skipped');
  });
});
