/**
 * Child process for the crash test (test/unit/secure/crash-nonce.test.ts): a field kit's
 * SecureLink resumed from its real state directory sends `count` frames, printing each one (hex)
 * on stdout, synchronously, BEFORE it would go to the radio — so every frame that could have
 * reached the air is in the parent's record even when this process dies right after.
 * TRICKLE_TEST_CRASH_AT (util/state-file.ts) kills it inside a state-file write; CRASH_AFTER_FRAME=k
 * kills it right after the k-th frame is out.
 *
 * usage: tsx test/helpers/crash-child.ts <state dir> <count> <label>
 */
import { writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { SecureLink } from '../../src/secure/secure-link.ts';
import { loadIdentity, loadPinnedGatewayKey, sessionStore } from '../../src/cli/keys.ts';
import { systemClock } from '../../src/util/clock.ts';
import { toHex } from '../../src/util/bytes.ts';

const [dir, countText, label] = process.argv.slice(2);
const count = Number(countText);
const crashAfter = Number(process.env['CRASH_AFTER_FRAME'] ?? 0);
const store = sessionStore(dir!, 'initiator', (e) => writeSync(2, `restore: ${e.message}\n`));
const pinned = loadPinnedGatewayKey(dir!);
let sent = 0;
const link = new SecureLink({
  role: 'initiator', staticKeyPair: loadIdentity(dir!), ...(pinned ? { remoteStaticPinned: pinned } : {}), mode: 'encrypt',
  clock: systemClock, randomBytes: (n) => new Uint8Array(randomBytes(n)), handshakeRetryMs: 60_000,
  persist: store.persist, ...(store.restore ? { restore: store.restore } : {}),
  send: (frame) => {
    writeSync(1, `${toHex(frame)}\n`);
    sent++;
    if (sent === crashAfter) process.kill(process.pid, 'SIGKILL');
  },
  deliver: () => {},
});
if (!link.established) {
  writeSync(2, 'no session to resume\n');
  process.exit(3);
}
for (let i = 0; i < count; i++) link.send(new TextEncoder().encode(`${label} ${i}`));
link.close();
