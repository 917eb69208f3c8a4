import { chmodSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readStateFile, readTextFile, removeStateFile, writeStateFile } from '../../../src/util/state-file.ts';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'trickle-state-'));

function errorOf(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

describe('state files', () => {
  it('round-trips JSON; file 0600, created directories 0700; no temp file left', () => {
    const root = tmp();
    const path = join(root, 'a', 'b', 'state.json');
    writeStateFile(path, { n: 1, s: 'x' });
    expect(readStateFile(path)).toEqual({ n: 1, s: 'x' });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(root, 'a')).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'a', 'b')).mode & 0o777).toBe(0o700);
    writeStateFile(path, { n: 2 });
    expect(readStateFile(path)).toEqual({ n: 2 });
    expect(readdirSync(join(root, 'a', 'b'))).toEqual(['state.json']);
  });

  it('replacing keeps 0600 even over a file that was 0644', () => {
    const path = join(tmp(), 's.json');
    writeFileSync(path, '{}', { mode: 0o644 });
    writeStateFile(path, { ok: true });
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('a missing file reads as undefined', () => {
    expect(readStateFile(join(tmp(), 'nope.json'))).toBeUndefined();
    expect(readTextFile(join(tmp(), 'nope'))).toBeUndefined();
    removeStateFile(join(tmp(), 'nope')); // no error
  });

  it('errors name the path and what to do', () => {
    const root = tmp();
    const bad = join(root, 'bad.json');
    writeFileSync(bad, '{not json', { mode: 0o600 });
    const e1 = errorOf(() => readStateFile(bad));
    expect(e1.code).toBe('ERR_CONFIG');
    expect(e1.message).toContain(bad);
    expect(e1.message).toContain('not valid JSON');

    const open = join(root, 'open.json');
    writeFileSync(open, '{}', { mode: 0o644 });
    chmodSync(open, 0o644);
    const e2 = errorOf(() => readStateFile(open, { private: true }));
    expect(e2.message).toContain(`chmod 600 ${open}`);

    const file = join(root, 'file');
    writeFileSync(file, 'x');
    const e3 = errorOf(() => writeStateFile(join(file, 'sub', 'state.json'), {}));
    expect(e3.code).toBe('ERR_CONFIG');
    expect(e3.message).toContain(join(file, 'sub'));

    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(errorOf(() => writeStateFile(join(root, 'c.json'), cyclic)).message).toContain(join(root, 'c.json'));
  });

  // Root ignores directory permissions, so this cannot be observed when the tests run as root.
  it.skipIf(process.getuid?.() === 0)('a read-only directory gives a clear error, not a half-written file (skipped as root: permissions not enforced)', () => {
    const root = tmp();
    chmodSync(root, 0o500);
    try {
      const e = errorOf(() => writeStateFile(join(root, 's.json'), { a: 1 }));
      expect(e.message).toMatch(/cannot write .*s\.json: permission denied/);
      expect(readdirSync(root)).toEqual([]);
    } finally {
      chmodSync(root, 0o700);
    }
  });
});

describe('state files bound to the file that was written', () => {
  it('a copy (restored backup, cloned directory) is recognised; the original is not', async () => {
    const { readBoundStateFile } = await import('../../../src/util/state-file.ts');
    const { copyFileSync, renameSync: mv } = await import('node:fs');
    const root = tmp();
    const path = join(root, 'session.json');
    writeStateFile(path, { keys: 'secret' }, { bindToFile: true });
    expect(readBoundStateFile(path)).toEqual({ value: expect.objectContaining({ keys: 'secret' }), copied: false });
    writeStateFile(path, { keys: 'newer' }, { bindToFile: true }); // each write binds the new file
    expect(readBoundStateFile(path)!.copied).toBe(false);
    copyFileSync(path, join(root, 'backup.json'));
    copyFileSync(join(root, 'backup.json'), join(root, 'restored.json'));
    mv(join(root, 'restored.json'), path); // the backup restored in place
    expect(readBoundStateFile(path)!.copied).toBe(true);
    writeFileSync(join(root, 'old.json'), '{"keys":"from an older version"}', { mode: 0o600 });
    expect(readBoundStateFile(join(root, 'old.json'))!.copied).toBe(true); // no binding at all
    expect(readBoundStateFile(join(root, 'none.json'))).toBeUndefined();
  });
});
