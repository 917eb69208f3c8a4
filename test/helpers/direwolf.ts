/**
 * Helpers for the tests that run over the Direwolf pair (scripts/direwolf-pair.ts).
 *
 * Direwolf 1.6 is a real dependency of the hardware-in-the-loop tests: when it is missing they
 * FAIL with the install command, unless TRICKLE_ALLOW_SKIP_DIREWOLF=1 explicitly allows
 * skipping (then they skip with that reason, never pass silently).
 */
import type { Link } from '../../src/link/link.ts';
import { LinkEvents } from '../../src/link/link-events.ts';
import type { Modem } from '../../src/modem/modem.ts';
import { TransparentDeframer, encodeTransparentFrame } from '../../src/modem/transparent/transparent-modem.ts';
import { TrickleError } from '../../src/errors.ts';
import { direwolfInstalled } from '../../scripts/direwolf-pair.ts';

export { startDirewolfPair, type DirewolfPair, type Burst } from '../../scripts/direwolf-pair.ts';

/** The executable the tests use: TRICKLE_DIREWOLF, or `direwolf` on the PATH. */
export const direwolfPath: string = process.env['TRICKLE_DIREWOLF'] ?? 'direwolf';
export const direwolfAvailable: boolean = direwolfInstalled(direwolfPath);
export const direwolfSkipAllowed: boolean = process.env['TRICKLE_ALLOW_SKIP_DIREWOLF'] === '1';
export const noDirewolfMessage =
  `direwolf is not installed (${direwolfPath} not found): install it with \`apt-get install direwolf\` (CI installs it); ` +
  'set TRICKLE_ALLOW_SKIP_DIREWOLF=1 to skip the Direwolf tests instead';

/**
 * A Link that speaks the transparent dialect (SLIP + CRC, what `openRadioStack` puts on a
 * link by default) on one side and hands each whole frame to `modem` on the other:
 *
 *   host/gateway TransparentModem ⇄ this link ⇄ KissModem ⇄ TCP ⇄ direwolf ~~ audio ~~ …
 *
 * It lets the end-to-end test put the real host and gateway on the Direwolf pair before
 * the host/gateway options accept a modem factory; the bytes on air are exactly the
 * KissModem's (the SLIP/CRC layer never leaves this process).
 */
export function modemAsTransparentLink(modem: Modem, maxFrameLen: number): Link {
  const events = new LinkEvents();
  const deframer = new TransparentDeframer({ maxFrameLen });
  modem.onFrame((frame) => events.emitData(encodeTransparentFrame(frame)));
  modem.onClose((err) => events.emitClose(err));
  return {
    name: `bridge:${modem.dialect}`,
    write(bytes) {
      if (events.closed) return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'link', 'write on closed bridge link'));
      const { frames } = deframer.push(bytes);
      return Promise.all(frames.map((f) => modem.send(f))).then(() => undefined);
    },
    onData: (l) => events.onData(l),
    onClose: (l) => events.onClose(l),
    async close() {
      if (events.closed) return;
      await modem.close();
      events.emitClose();
    },
  };
}
