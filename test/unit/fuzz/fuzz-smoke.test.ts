/**
 * A slice of the fuzzing campaign in `npm test`: every target of test/fuzz/targets.ts for a
 * fixed number of inputs (2,000, fewer for the targets that do public-key crypto per input)
 * from a fixed seed, in the same watched worker as `npm run fuzz`. Deterministic: the same
 * inputs every run. Call times are reported by `npm run fuzz`, not asserted here (a loaded
 * machine is not a slow decoder); a call running 10 s is a hang and fails the test.
 */
import { describe, expect, it } from 'vitest';
import { runCampaign, type TargetResult } from '../../fuzz/campaign.ts';
import { TARGETS } from '../../fuzz/targets.ts';
import { knownIssue } from '../../fuzz/known-issues.ts';

const SEED = 20261127;
const INPUTS = 2000;
const inputsFor = (name: string): number => Math.ceil(INPUTS / (TARGETS.find((t) => t.name === name)?.cost ?? 1));

describe('fuzz smoke (fixed seed, every target)', () => {
  let results: TargetResult[] = [];

  it('runs every target for its inputs without a new failure', async () => {
    results = await runCampaign({
      targets: TARGETS.map((t) => t.name), seed: SEED, slowMs: 60_000, hangMs: 10_000,
      plan: (name) => ({ maxInputs: inputsFor(name) }),
    });
    expect(results.map((r) => r.target)).toEqual(TARGETS.map((t) => t.name));
    for (const r of results) expect(r.inputs, r.target).toBe(inputsFor(r.target));
    const fresh = results.flatMap((r) => r.failures).filter((f) => !knownIssue(f))
      .map((f) => `${f.target} [${f.kind}] ${f.error.split('\n')[0]} input ${f.inputHex.slice(0, 400)}`);
    expect(fresh).toEqual([]);
  }, 180_000);

  it('reaches several code paths of each decoder (the seeds are valid, the mutations vary the outcome)', () => {
    expect(results.length).toBe(TARGETS.length);
    for (const r of results) expect(r.outcomes, r.target).toBeGreaterThanOrEqual(3);
  });
});
