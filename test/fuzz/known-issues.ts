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
    target: 'transport-import',
    error: /^TypeError: Cannot read properties of null \(reading '(nonce|highest|epoch|key|bitmap|previousKey)'\)/,
    owner: 'src/secure/transport.ts SecureTransport.importState',
    summary: 'importState throws a TypeError (not ERR_NOISE_STATE) when send or receive is null',
  },
  {
    target: 'transport-import',
    error: /^(Hang|Crash|Error: call took)/,
    owner: 'src/secure/transport.ts SecureTransport.importState',
    summary: 'importState accepts key epochs far behind their nonces; the next seal()/open() rekeys once per missing epoch (hang, memory)',
  },
  {
    target: 'secure-link-restore',
    error: /^(Hang|Crash|Error: call took)/,
    owner: 'src/secure/transport.ts SecureTransport.importState (via SecureLink restore)',
    summary: 'a restored snapshot with key epochs far behind their nonces makes the first send/receive rekey once per missing epoch',
  },
];

export function knownIssue(f: { target: string; error: string }): KnownIssue | undefined {
  return KNOWN_ISSUES.find((k) => k.target === f.target && k.error.test(f.error));
}
