/**
 * Failures the fuzzers found in code outside the fuzzing work, reported and not yet fixed by
 * their owners. Each has a replaying test in test/unit/fuzz/fuzz-regressions.test.ts (marked
 * `it.fails` until the fix lands: then that test fails, and the entry here and the `.fails`
 * go). `npm run fuzz` labels these failures "known"; the smoke test tolerates only these.
 */
export interface KnownIssue {
  readonly target: string;
  /** Matched against the failure's error text. */
  readonly error: RegExp;
  /** Where the fix belongs. */
  readonly owner: string;
  readonly summary: string;
}

export const KNOWN_ISSUES: readonly KnownIssue[] = [];

export function knownIssue(f: { target: string; error: string }): KnownIssue | undefined {
  return KNOWN_ISSUES.find((k) => k.target === f.target && k.error.test(f.error));
}
