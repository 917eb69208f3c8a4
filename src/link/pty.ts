/**
 * A pair of pseudo-terminals joined back to back by socat: whatever is written to one
 * device comes out of the other, like a null-modem cable. The demo and the
 * hardware-in-the-loop tests open these with `openSerialLink`, so they exercise the same
 * tty code path as a real USB serial radio.
 *
 *   socat -d -d pty,raw,echo=0,link=<dir>/a pty,raw,echo=0,link=<dir>/b
 *
 * `raw,echo=0` puts both slave sides in raw mode without echo, so every byte value
 * (0xC0, 0x11/0x13, CR, …) crosses unchanged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrickleError } from '../errors.ts';

export interface PtyPair {
  /** Stable path (a symlink to /dev/pts/N) of one end. */
  readonly a: string;
  /** Stable path of the other end. */
  readonly b: string;
  /** The /dev/pts devices socat reported, in the order a, b. */
  readonly devices: readonly [string, string];
  /** Process id of the socat process (tests kill it to simulate the cable being pulled). */
  readonly pid: number;
  /** Resolves when socat has exited, for whatever reason. */
  readonly exited: Promise<void>;
  /** Stop socat and remove the symlinks. Idempotent. */
  close(): Promise<void>;
}

export interface PtyPairOptions {
  /** Directory for the two symlinks; a fresh temporary directory by default. */
  dir?: string;
  /** How long to wait for socat to create both devices. */
  readyTimeoutMs?: number;
  /** socat executable; `socat` on the PATH by default. */
  socatPath?: string;
}

const PTY_LINE = /PTY is (\S+)/g;

/** socat processes still running; killed if this process exits without closing them. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => { for (const c of liveChildren) c.kill('SIGTERM'); });
  }
}

export async function createPtyPair(options: PtyPairOptions = {}): Promise<PtyPair> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 5_000;
  const socatPath = options.socatPath ?? 'socat';
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'trickle-pty-')));
  const a = join(dir, 'a');
  const b = join(dir, 'b');

  const child = spawn(
    socatPath,
    ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  track(child);

  const cleanup = async (): Promise<void> => {
    liveChildren.delete(child);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    if (ownDir) await rm(dir, { recursive: true, force: true });
  };

  try {
    const devices = await new Promise<[string, string]>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new TrickleError('ERR_LINK_OPEN', 'link',
          `socat did not create the PTY pair within ${readyTimeoutMs} ms; its output was: ${stderr.trim() || '(nothing)'}`));
      }, readyTimeoutMs);
      const done = (f: () => void): void => { clearTimeout(timer); f(); };
      child.once('error', (err: NodeJS.ErrnoException) => done(() => reject(
        err.code === 'ENOENT'
          ? new TrickleError('ERR_LINK_OPEN', 'link',
            `cannot create a PTY pair: socat is not installed (${socatPath} not found); install it with \`apt-get install socat\``,
            { socatPath }, { cause: err })
          : new TrickleError('ERR_LINK_OPEN', 'link', `cannot start socat (${socatPath}): ${err.message}`,
            { socatPath }, { cause: err }),
      )));
      child.once('exit', (code, signal) => done(() => reject(new TrickleError('ERR_LINK_OPEN', 'link',
        `socat exited (${signal ?? `code ${String(code)}`}) before the PTY pair was ready: ${stderr.trim() || '(no output)'}`))));
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (text: string) => {
        stderr += text;
        // "starting data transfer loop" is printed after both PTYs exist and both links are made.
        if (stderr.includes('starting data transfer loop')) {
          const found = [...stderr.matchAll(PTY_LINE)].map((m) => m[1]!);
          if (found.length >= 2) done(() => resolve([found[0]!, found[1]!]));
        }
      });
    });
    // Belt and braces: the symlinks must exist before anyone tries to open them.
    await Promise.all([lstat(a), lstat(b)]);
    // Keep draining stderr so socat never blocks on a full pipe.
    child.stderr?.resume();
    let closing: Promise<void> | undefined;
    return {
      a, b, devices,
      pid: child.pid ?? -1,
      exited,
      close: () => (closing ??= cleanup()),
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
