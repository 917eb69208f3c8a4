/**
 * Helpers for the tests that run over the Direwolf pair (scripts/direwolf-pair.ts).
 *
 * Direwolf 1.6 is a real dependency of the hardware-in-the-loop tests: when it is missing they
 * FAIL with the install command, unless TRICKLE_ALLOW_SKIP_DIREWOLF=1 explicitly allows
 * skipping (then they skip with that reason, never pass silently).
 */
import { direwolfInstalled } from '../../scripts/direwolf-pair.ts';

export { startDirewolfPair, type DirewolfPair, type Burst } from '../../scripts/direwolf-pair.ts';

/** The executable the tests use: TRICKLE_DIREWOLF, or `direwolf` on the PATH. */
export const direwolfPath: string = process.env['TRICKLE_DIREWOLF'] ?? 'direwolf';
export const direwolfAvailable: boolean = direwolfInstalled(direwolfPath);
export const direwolfSkipAllowed: boolean = process.env['TRICKLE_ALLOW_SKIP_DIREWOLF'] === '1';
export const noDirewolfMessage =
  `direwolf is not installed (${direwolfPath} not found): install it with \`apt-get install direwolf\` (CI installs it); ` +
  'set TRICKLE_ALLOW_SKIP_DIREWOLF=1 to skip the Direwolf tests instead';
