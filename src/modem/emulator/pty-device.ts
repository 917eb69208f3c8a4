/**
 * An emulated board served on a PTY pair, with a stable device path that an application opens
 * like a USB serial device: `<dir>/<name>` → `<dir>/.pty-<name>/a`; socat's other end is the
 * board. Unplugging kills socat (both ttys hang up with EIO and the path dangles, so opening it
 * fails with ENOENT, as for a USB device that is not there); replugging reboots the board.
 */
import { mkdir, mkdtemp, rm, symlink, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPtyPair, type PtyPair } from '../../link/pty.ts';
import { openSerialLink } from '../../link/serial.ts';
import type { Link } from '../../link/link.ts';

export interface PtyServedDevice {
  attach(link: Link, options?: { reboot?: boolean }): void;
  detach(): void;
  shutdown(): void;
}

export interface PtyDevice<T extends PtyServedDevice> {
  /** Path the application opens (a symlink to a /dev/pts device). */
  readonly devicePath: string;
  readonly emulator: T;
  /** The current PTY pair (replaced by `replug`). */
  readonly pty: PtyPair;
  /** Pull the cable: socat exits, both ttys hang up (EIO), the device path dangles. */
  unplug(): Promise<void>;
  /** Plug it back in at the same path; the board rebooted (USB power cycle). */
  replug(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Serve `emulator` behind a socat PTY pair: the app opens `<dir>/<name>` exactly as it would
 * open /dev/ttyACM0. `<dir>/<name>` is a symlink to the pair's end, so it dangles (ENOENT)
 * while unplugged, as a USB device that is not there.
 */
export async function servePtyDevice<T extends PtyServedDevice>(name: string, emulator: T, options: { dir?: string } = {}): Promise<PtyDevice<T>> {
  const safe = name.replace(/[^\w-]/g, '_');
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), `trickle-${safe}-`)));
  const ownDir = options.dir === undefined;
  const devicePath = join(dir, safe);
  const ptyDir = join(dir, `.pty-${safe}`);
  let pty: PtyPair | undefined;
  let link: Link | undefined;
  const plug = async (reboot: boolean): Promise<void> => {
    pty = await createPtyPair({ dir: ptyDir });
    link = await openSerialLink(pty.b);
    emulator.attach(link, { reboot });
  };
  await mkdir(ptyDir, { recursive: true });
  await unlink(devicePath).catch(() => undefined);
  await symlink(join(`.pty-${safe}`, 'a'), devicePath);
  await plug(false);
  const unplug = async (): Promise<void> => {
    emulator.detach();
    const p = pty;
    pty = undefined;
    await p?.close();
    await link?.close();
    link = undefined;
  };
  let closed = false;
  return {
    devicePath,
    emulator,
    get pty(): PtyPair {
      if (!pty) throw new Error(`${name} is unplugged`);
      return pty;
    },
    unplug,
    replug: async () => { if (!pty) await plug(true); },
    close: async () => {
      if (closed) return;
      closed = true;
      await unplug();
      emulator.shutdown();
      await unlink(devicePath).catch(() => undefined);
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
