/**
 * Small state files that must survive a crash: keys, pinned keys, session snapshots.
 *
 * Writes are atomic and durable: the new content goes to a temporary file in the same
 * directory (created 0600, exclusively), is fsync'ed, renamed over the target (rename(2) is
 * atomic within a file system), and the directory is fsync'ed so the rename itself survives a
 * power loss. A reader sees the old file or the new one, never a mix. A directory this module
 * creates gets mode 0700. The calls are synchronous on purpose: the security layer's persist
 * hook must know the snapshot is on disk before the next frame goes out.
 *
 * A directory fsync that fails is an error, not a warning: without it a power loss after the
 * rename can bring back the older file, and for a nonce snapshot that means nonce reuse.
 *
 * BINDING TO THE FILE (writeStateFile's `bindToFile`). A session snapshot is only safe to resume
 * by the one process that wrote it, in the file it wrote: a copy (a restored backup, the state
 * directory copied to a second kit) would resume the same keys at the same nonces. The writer
 * records the inode number of the file it creates inside the content; readBoundStateFile()
 * reports a file whose inode differs (copied, restored, or moved across file systems) as
 * `copied`, so the caller starts afresh instead of resuming. (The inode, not the device
 * number: a USB disk may get another device number at the next boot.)
 *
 * CRASH POINTS. `TRICKLE_TEST_CRASH_AT=<step>:<n>` (tests only) kills the process with SIGKILL
 * the n-th time a write reaches <step>: open, write, fsync, close, rename, dirsync. A test uses
 * it to show that a crash between any two steps never leads to nonce reuse.
 *
 * Every error names the path and what to do (ERR_CONFIG).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TrickleError } from '../errors.ts';

function fileError(message: string, path: string, cause?: unknown): TrickleError {
  return new TrickleError('ERR_CONFIG', 'util', message, { path }, cause === undefined ? undefined : { cause });
}

function describe(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOSPC') return 'no space left on the device';
  if (code === 'EROFS') return 'read-only file system';
  if (code === 'ENOTDIR') return 'a parent is not a directory';
  if (code === 'EISDIR') return 'it is a directory';
  return (e as Error).message;
}

export interface ReadStateFileOptions {
  /** Refuse a file that group or others may read (key files): like ssh, name the chmod to run. */
  readonly private?: boolean;
}

/** Read a text file; undefined if it does not exist. */
export function readTextFile(path: string, opts: ReadStateFileOptions = {}): string | undefined {
  let text: string;
  try {
    if (opts.private === true) {
      const st = statSync(path);
      if ((st.mode & 0o077) !== 0) {
        throw fileError(`${path} is accessible by other users (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); it holds secrets: run "chmod 600 ${path}"`, path);
      }
    }
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof TrickleError) throw e;
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    throw fileError(`cannot read ${path}: ${describe(e)}`, path, e);
  }
  return text;
}

/** Read and parse a JSON state file; undefined if it does not exist. */
export function readStateFile(path: string, opts: ReadStateFileOptions = {}): unknown {
  const text = readTextFile(path, opts);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw fileError(`${path} is not valid JSON (${(e as Error).message}); fix it or move it away to start fresh`, path, e);
  }
}

/** Create `dir` (and parents) with mode 0700 where they do not exist. */
export function ensureStateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw fileError(`cannot create directory ${dir}: ${describe(e)}`, dir, e);
  }
}

const crashPlan = ((): { step: string; n: number } | undefined => {
  const v = process.env['TRICKLE_TEST_CRASH_AT'];
  const m = v === undefined ? null : /^(open|write|fsync|close|rename|dirsync):(\d+)$/.exec(v);
  return m === null ? undefined : { step: m[1]!, n: Number(m[2]) };
})();
const crashCounts = new Map<string, number>();

/** Tests only (TRICKLE_TEST_CRASH_AT): die here, as a power cut or kill -9 would. */
function crashPoint(step: string): void {
  if (crashPlan === undefined || crashPlan.step !== step) return;
  const n = (crashCounts.get(step) ?? 0) + 1;
  crashCounts.set(step, n);
  if (n === crashPlan.n) process.kill(process.pid, 'SIGKILL');
}

/** Atomically replace `path` with `text` (mode 0600); `textFor(inode)` may put the new file's inode in it. */
function writeAtomically(path: string, textFor: (inode: number) => string): void {
  const dir = dirname(path);
  ensureStateDir(dir);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    crashPoint('open');
    const buf = Buffer.from(textFor(fstatSync(fd).ino), 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    crashPoint('write');
    fsyncSync(fd);
    crashPoint('fsync');
    closeSync(fd);
    fd = undefined;
    crashPoint('close');
    renameSync(tmp, path);
    crashPoint('rename');
  } catch (e) {
    if (fd !== undefined) {
      try { closeSync(fd); } catch { /* already failing */ }
    }
    try { unlinkSync(tmp); } catch { /* may not exist */ }
    throw fileError(`cannot write ${path}: ${describe(e)}`, path, e);
  }
  // Make the rename durable: until the directory is on disk, a power cut can undo it.
  try {
    const dfd = openSync(dir, 'r');
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
  } catch (e) {
    throw fileError(`cannot make ${path} durable: fsync of the directory ${dir} failed (${describe(e)}); `
      + 'keep the state directory on a local file system that supports it (ext4, xfs, btrfs, f2fs)', path, e);
  }
  crashPoint('dirsync');
}

/** Atomically replace `path` with `text` (mode 0600). */
export function writeTextFile(path: string, text: string): void {
  writeAtomically(path, () => text);
}

export interface WriteStateFileOptions {
  /** Record the new file's inode in the content (an object): see BINDING TO THE FILE. */
  readonly bindToFile?: boolean;
}

/** The field writeStateFile adds with `bindToFile`. */
export const FILE_BINDING_KEY = 'boundToInode';

/** Atomically replace `path` with `value` as pretty JSON (mode 0600). */
export function writeStateFile(path: string, value: unknown, opts: WriteStateFileOptions = {}): void {
  const bind = opts.bindToFile === true;
  if (bind && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw fileError(`cannot bind ${path} to its file: the state is not an object`, path);
  }
  const serialise = (v: unknown): string => {
    try {
      return `${JSON.stringify(v, null, 2)}\n`;
    } catch (e) {
      throw fileError(`cannot serialise the state for ${path}: ${(e as Error).message}`, path, e);
    }
  };
  if (!bind) {
    const text = serialise(value);
    writeAtomically(path, () => text);
    return;
  }
  writeAtomically(path, (inode) => serialise({ ...(value as object), [FILE_BINDING_KEY]: inode }));
}

/**
 * Read a state file written with `bindToFile`: `copied` when the file is not the one its writer
 * created (its inode differs from the one recorded), or when it carries no binding at all.
 */
export function readBoundStateFile(path: string, opts: ReadStateFileOptions = {}): { value: unknown; copied: boolean } | undefined {
  const value = readStateFile(path, opts);
  if (value === undefined) return undefined;
  let inode: number;
  try {
    inode = statSync(path).ino;
  } catch (e) {
    throw fileError(`cannot read ${path}: ${describe(e)}`, path, e);
  }
  const recorded = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[FILE_BINDING_KEY] : undefined;
  return { value, copied: recorded !== inode };
}

/** Remove a state file if it exists. */
export function removeStateFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return;
    throw fileError(`cannot remove ${path}: ${describe(e)}`, path, e);
  }
}
