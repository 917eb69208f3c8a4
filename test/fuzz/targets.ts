/**
 * Every fuzz target, by name: each decoder that takes bytes from the radio, the serial line or
 * the disk. `npm run fuzz` (scripts/fuzz.ts) runs them for a time budget, and
 * test/unit/fuzz/fuzz-smoke.test.ts runs a fixed-seed slice of each in `npm test`.
 */
import type { FuzzTarget } from './engine.ts';
import { MODEM_TARGETS } from './targets/modem.ts';
import { COAP_TARGETS } from './targets/coap.ts';
import { CODEC_TARGETS } from './targets/codec.ts';
import { MATRIX_TARGETS } from './targets/matrix.ts';
import { SECURE_TARGETS } from './targets/secure.ts';
import { STATE_TARGETS } from './targets/state.ts';
import { CLI_TARGETS } from './targets/cli.ts';

export const TARGETS: readonly FuzzTarget[] = [
  ...MODEM_TARGETS, ...COAP_TARGETS, ...CODEC_TARGETS, ...MATRIX_TARGETS, ...SECURE_TARGETS, ...STATE_TARGETS, ...CLI_TARGETS,
];

export function targetByName(name: string): FuzzTarget | undefined {
  return TARGETS.find((t) => t.name === name);
}

export type { FuzzTarget } from './engine.ts';
