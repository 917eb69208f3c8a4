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

export const KNOWN_ISSUES: readonly KnownIssue[] = [
  {
    target: 'native',
    error: /decodeNativeMessage accepted [0-9a-f]*?efbbbf[0-9a-f]* but it re-encodes as/,
    owner: 'src/util/bytes.ts utf8.decode (a TextDecoder without ignoreBOM)',
    summary: 'a text field starting with U+FEFF loses it on decode (silent truncation)',
  },
  {
    target: 'session-body',
    error: /TEXT_MESSAGE payload "0xefbbbf/,
    owner: 'src/util/bytes.ts utf8.decode (a TextDecoder without ignoreBOM)',
    summary: 'a TEXT_MESSAGE starting with U+FEFF loses it on decode (silent truncation)',
  },
];

export function knownIssue(f: { target: string; error: string }): KnownIssue | undefined {
  return KNOWN_ISSUES.find((k) => k.target === f.target && k.error.test(f.error));
}
