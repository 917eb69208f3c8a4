import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lockStateDir } from '../../../src/util/state-lock.ts';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'trickle-lock-'));

function errorOf(fn: () => unknown): { code?: string; message: string } {
  try { fn(); } catch (e) { return e as { code?: string; message: string }; }
  throw new Error('expected an error');
}

/** A real second process holding the lock until it is killed. */
async function holder(dir: string): Promise<{ pid: number; kill: (sig: NodeJS.Signals) => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '-e',
    `import('./src/util/state-lock.ts').then((m) => { m.lockStateDir(${JSON.stringify(dir)}, 'trickle gateway'); console.log('locked'); setInterval(() => {}, 1000); })`],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('locked')) resolve(); });
    child.once('exit', (c) => reject(new Error(`holder exited ${c}`)));
  });
  return {
    pid: child.pid!,
    kill: (sig) => new Promise<void>((r) => { child.once('exit', () => r()); child.kill(sig); }),
  };
}

describe('one process per state directory', () => {
  it('a second process is refused with the holder named; a killed holder\'s lock is taken over', async () => {
    const dir = tmp();
    const h = await holder(dir);
    const e = errorOf(() => lockStateDir(dir, 'trickle host'));
    expect(e.code).toBe('ERR_CONFIG');
    expect(e.message).toContain(`pid ${h.pid}`);
    expect(e.message).toContain('trickle gateway');
    expect(e.message).toContain('another --state-dir');
    await h.kill('SIGKILL'); // no exit handler runs: the lock file stays, stale
    expect(existsSync(join(dir, 'lock'))).toBe(true);
    const mine = lockStateDir(dir, 'trickle host');
    expect(JSON.parse(readFileSync(mine.path, 'utf8')).pid).toBe(process.pid);
    mine.release();
    expect(existsSync(join(dir, 'lock'))).toBe(false);
  }, 30_000);

  it('a holder that exits normally releases the lock', async () => {
    const dir = tmp();
    const h = await holder(dir);
    await h.kill('SIGTERM');
    const mine = lockStateDir(dir, 'trickle host');
    mine.release();
  }, 30_000);

  it('a lock from before a reboot is stale; a lock held on another machine is never taken over', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'lock'), JSON.stringify({ pid: process.ppid, what: 'trickle host', host: hostname(), bootId: 'an-earlier-boot', startedAt: '2026-01-01T00:00:00Z' }));
    lockStateDir(dir, 'trickle host').release();
    writeFileSync(join(dir, 'lock'), JSON.stringify({ pid: 4242, what: 'trickle gateway', host: 'hill-top-pi', bootId: null, startedAt: '2026-01-01T00:00:00Z' }));
    const e = errorOf(() => lockStateDir(dir, 'trickle gateway'));
    expect(e.message).toContain('hill-top-pi');
    expect(e.message).toContain(`remove ${join(dir, 'lock')}`);
  });

  it('a torn or empty lock file (its writer died while writing it) is stale', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'lock'), '{"pid": 12');
    lockStateDir(dir, 'trickle host').release();
  });
});
