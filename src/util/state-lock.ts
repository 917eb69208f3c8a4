/**
 * One process per state directory. Two processes resuming the same session snapshot would
 * encrypt with the same key at the same nonces (c1 ⊕ c2 = p1 ⊕ p2), so `trickle host` and
 * `trickle gateway` hold an exclusive lock on their state directory for as long as they run.
 *
 * The lock is a file, `<dir>/lock`, created with O_EXCL (atomic on local file systems) and
 * holding who took it: pid, command, machine, boot id and start time. A lock whose process is
 * gone (a crash, a power cut: no exit handler ran) is stale and taken over: on this machine the
 * pid is not running, or runs something that is not Node, or the machine has rebooted since
 * (another boot id). A lock held on another machine (a state directory on a network share) is
 * never taken over: the error names the machine and the file to remove once it is certain the
 * other process is gone.
 *
 * Copies of a state directory (a restored backup, a cloned SD card) are a separate problem that
 * no lock sees: util/state-file.ts binds session snapshots to the file that was written.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { TrickleError } from '../errors.ts';
import { ensureStateDir } from './state-file.ts';

export interface StateDirLock {
  readonly path: string;
  /** Give the lock up (idempotent); also done when the process exits. */
  release(): void;
}

interface LockInfo {
  pid: number;
  what: string;
  host: string;
  bootId: string | null;
  startedAt: string;
}

function bootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

/** Is `pid` running here, and (where /proc tells) a Node process? */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as { code?: string }).code !== 'EPERM') return false; // ESRCH: no such process
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /node|trickle|tsx/.test(cmdline);
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

function lockError(message: string, path: string): TrickleError {
  return new TrickleError('ERR_CONFIG', 'util', message, { path });
}

/**
 * Take the lock of `dir` for `what` (e.g. "trickle host"), or throw ERR_CONFIG naming the process
 * that holds it and what to do.
 */
export function lockStateDir(dir: string, what: string): StateDirLock {
  ensureStateDir(dir);
  const path = join(dir, 'lock');
  const me: LockInfo = { pid: process.pid, what, host: hostname(), bootId: bootId(), startedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EEXIST') {
        throw lockError(`cannot lock the state directory ${dir}: ${(e as Error).message}`, path);
      }
      let other: Partial<LockInfo> = {};
      try {
        other = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockInfo>;
      } catch { /* empty or torn: written by a process that died while writing it */ }
      const pid = typeof other.pid === 'number' ? other.pid : undefined;
      const who = `${other.what ?? 'another process'}${pid !== undefined ? ` (pid ${pid}` : ' ('}${other.startedAt ? `, since ${other.startedAt}` : ''})`;
      if (other.host !== undefined && other.host !== me.host) {
        throw lockError(`the state directory ${dir} is in use by ${who} on the machine ${other.host}; `
          + `run only one process per state directory. If that process is certainly gone, remove ${path}`, path);
      }
      const stale = pid === undefined || (other.bootId != null && me.bootId !== null && other.bootId !== me.bootId) || !alive(pid);
      if (!stale && pid !== process.pid) {
        throw lockError(`the state directory ${dir} is in use by ${who}; stop it first, or give this one another --state-dir. `
          + 'Two processes on one state directory would reuse encryption nonces.', path);
      }
      try { unlinkSync(path); } catch { /* taken over by someone else meanwhile: retry */ }
      continue;
    }
    try {
      writeSync(fd, `${JSON.stringify(me)}\n`);
    } finally {
      closeSync(fd);
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      process.removeListener('exit', release);
      try {
        const now = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockInfo>;
        if (now.pid === process.pid) unlinkSync(path);
      } catch { /* gone already */ }
    };
    process.on('exit', release);
    return { path, release };
  }
  throw lockError(`cannot lock the state directory ${dir}: another process keeps taking the lock at ${path}`, path);
}
