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
 * Every error names the path and what to do (ERR_CONFIG).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync,
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

/** Atomically replace `path` with `text` (mode 0600). */
export function writeTextFile(path: string, text: string): void {
  const dir = dirname(path);
  ensureStateDir(dir);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    const buf = Buffer.from(text, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try { closeSync(fd); } catch { /* already failing */ }
    }
    try { unlinkSync(tmp); } catch { /* may not exist */ }
    throw fileError(`cannot write ${path}: ${describe(e)}`, path, e);
  }
  // Make the rename durable. Some file systems refuse fsync on a directory: not fatal.
  try {
    const dfd = openSync(dir, 'r');
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
  } catch { /* best effort */ }
}

/** Atomically replace `path` with `value` as pretty JSON (mode 0600). */
export function writeStateFile(path: string, value: unknown): void {
  let text: string;
  try {
    text = `${JSON.stringify(value, null, 2)}\n`;
  } catch (e) {
    throw fileError(`cannot serialise the state for ${path}: ${(e as Error).message}`, path, e);
  }
  writeTextFile(path, text);
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
