/**
 * Conformance runner: `tsx scripts/conformance.ts noise FILE…`
 *
 * Runs cacophony-format Noise vector files through src/secure/noise-vectors.ts (the same code
 * path as the unit tests), prints one line per failure and, as its last line,
 * `N passed, M failed[, K skipped]`. Vectors with a DH or cipher other than 25519/ChaChaPoly
 * are skipped, never counted as passed. Exit code 1 if any failed, 2 on usage errors.
 */
import { readFileSync } from 'node:fs';
import { runNoiseVectorFile, summarizeOutcomes, type VectorOutcome } from '../src/secure/noise-vectors.ts';

function main(argv: string[]): number {
  const [suite, ...files] = argv;
  if (suite !== 'noise' || files.length === 0) {
    process.stderr.write('usage: tsx scripts/conformance.ts noise FILE [FILE…]\n');
    return 2;
  }
  const outcomes: VectorOutcome[] = [];
  for (const file of files) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      process.stderr.write(`${file}: cannot read vectors: ${e instanceof Error ? e.message : String(e)}\n`);
      return 2;
    }
    for (const o of runNoiseVectorFile(json)) {
      if (o.status === 'fail') process.stdout.write(`FAIL ${o.name}: ${o.reason}\n`);
      outcomes.push(o);
    }
  }
  process.stdout.write(`${summarizeOutcomes(outcomes)}\n`);
  return outcomes.some((o) => o.status === 'fail') ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
