import { afterEach, describe, expect, it } from 'vitest';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSerialLink, mapSerialOpenError } from '../../../src/link/serial.ts';
import { createPtyPair, type PtyPair } from '../../../src/link/pty.ts';
import type { Link } from '../../../src/link/link.ts';
import { isTrickleError, TrickleError } from '../../../src/errors.ts';
import { toHex } from '../../../src/util/bytes.ts';
import { ByteCollector, closedOf, noSocatReason, socatAvailable } from '../../helpers/pty.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function pair(): Promise<PtyPair> {
  const p = await createPtyPair();
  cleanups.push(() => p.close());
  return p;
}
async function open(path: string): Promise<Link> {
  const l = await openSerialLink(path);
  cleanups.push(() => l.close());
  return l;
}
async function openError(path: string): Promise<TrickleError> {
  try {
    const l = await openSerialLink(path);
    await l.close();
  } catch (err) {
    expect(err).toBeInstanceOf(TrickleError);
    return err as TrickleError;
  }
  throw new Error(`expected opening ${path} to fail`);
}

describe('mapSerialOpenError', () => {
  it.each([
    ['Error: No such file or directory, cannot open /dev/ttyUSB9', 'ERR_LINK_NOT_FOUND', /does not exist.*ls \/dev\/serial\/by-id/],
    ['Error Resource temporarily unavailable Cannot lock port', 'ERR_LINK_BUSY', /in use by another program/],
    ['Error: Device or resource busy, cannot open /dev/ttyUSB9', 'ERR_LINK_BUSY', /in use by another program/],
    ['Error: Permission denied, cannot open /dev/ttyUSB9', 'ERR_LINK_PERMISSION', /dialout group/],
    ['Error: Inappropriate ioctl for device, cannot open /dev/ttyUSB9', 'ERR_LINK_OPEN', /cannot open serial device/],
  ] as const)('%s → %s', (message, code, text) => {
    const e = mapSerialOpenError('/dev/ttyUSB9', new Error(message));
    expect(e.code).toBe(code);
    expect(e.layer).toBe('link');
    expect(e.message).toContain('/dev/ttyUSB9');
    expect(e.message).toMatch(text);
  });

  it('also honours errno codes from other bindings', () => {
    const err = Object.assign(new Error('open failed'), { code: 'EACCES' });
    expect(mapSerialOpenError('/dev/ttyS0', err).code).toBe('ERR_LINK_PERMISSION');
  });
});

describe.skipIf(!socatAvailable)(`openSerialLink over a socat PTY pair${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  it('carries every byte value both ways unchanged', async () => {
    const p = await pair();
    const a = await open(p.a);
    const b = await open(p.b);
    expect(a.name).toBe(p.a);
    const atB = new ByteCollector(b);
    const atA = new ByteCollector(a);
    const all = new Uint8Array(4 * 256).map((_, i) => i & 0xff); // includes 0x00, XON/XOFF, CR, LF, 0xC0
    await a.write(all);
    await b.write(all.slice().reverse());
    await Promise.all([atB.until(all.length), atA.until(all.length)]);
    expect(toHex(atB.bytes())).toBe(toHex(all));
    expect(toHex(atA.bytes())).toBe(toHex(all.slice().reverse()));
  });

  it('names a missing device and says how to list devices (ERR_LINK_NOT_FOUND)', async () => {
    const e = await openError('/dev/ttyUSB9-trickle-does-not-exist');
    expect(e.code).toBe('ERR_LINK_NOT_FOUND');
    expect(e.message).toContain('/dev/ttyUSB9-trickle-does-not-exist');
    expect(e.message).toContain('ls /dev/serial/by-id');
  });

  it('refuses a device another opener holds (lock: true → ERR_LINK_BUSY), and frees it on close', async () => {
    const p = await pair();
    const first = await openSerialLink(p.a);
    const e = await openError(p.a);
    expect(e.code).toBe('ERR_LINK_BUSY');
    expect(e.message).toContain(p.a);
    expect(e.message).toMatch(/in use by another program/);
    // The lock is on the device, not the name: the /dev/pts path is busy too.
    expect((await openError(p.devices[0])).code).toBe('ERR_LINK_BUSY');
    await first.close();
    const again = await open(p.a);
    expect(again.name).toBe(p.a);
  });

  it('reports a path that is not a serial device as ERR_LINK_OPEN', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'trickle-serial-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'not-a-tty');
    await writeFile(file, 'hello');
    const e = await openError(file);
    expect(e.code).toBe('ERR_LINK_OPEN');
    expect(e.message).toContain(file);
  });

  it.skipIf(process.getuid?.() === 0)('reports a device without permission as ERR_LINK_PERMISSION (skipped as root: root bypasses file modes)', async () => {
    const p = await pair();
    await chmod(p.devices[0], 0o000);
    const e = await openError(p.a);
    expect(e.code).toBe('ERR_LINK_PERMISSION');
    expect(e.message).toMatch(/dialout/);
  });

  it('gives onClose(ERR_LINK_IO), not a crash, when the other side vanishes (socat killed)', async () => {
    // A hang-up reaches the reader as EIO, as POLLERR ("bad file descriptor") or as read(2)
    // returning end of file, depending on timing. serialport 13 spins forever on the EOF
    // case (see makeHangupAware in serial.ts), so repeat to meet all three.
    for (let i = 0; i < 12; i++) {
      const p = await pair();
      const a = await open(p.a);
      const closed = closedOf(a);
      process.kill(p.pid, 'SIGKILL');
      const err = await closed;
      expect(isTrickleError(err, 'ERR_LINK_IO')).toBe(true);
      expect(err!.message).toContain(p.a);
      await expect(a.write(new Uint8Array([1]))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
      await a.close(); // still fine
    }
  });

  it('rejects a write that is pending when the device fails, with a TrickleError and no crash', async () => {
    const p = await pair();
    const a = await open(p.a);
    const closed = closedOf(a);
    // Nobody reads the far end, so the tty buffers fill and this write stays pending.
    const pending = a.write(new Uint8Array(4 * 1024 * 1024));
    const outcome = pending.then(() => 'resolved', (e: unknown) => e);
    process.kill(p.pid, 'SIGKILL');
    const err = await closed;
    expect(isTrickleError(err, 'ERR_LINK_IO')).toBe(true);
    const result = await outcome;
    expect(isTrickleError(result, 'ERR_LINK_IO') || isTrickleError(result, 'ERR_LINK_CLOSED')).toBe(true);
  });

  it('does not notice the program on the other end closing its side, as on a real cable', async () => {
    // socat keeps its own fd on each PTY slave, so the far end closing never reaches us as
    // EIO or hangup, just as a UART cannot tell whether the program on the far side runs.
    // Only socat itself going away (the test above) ends the link.
    const p = await pair();
    const a = await open(p.a);
    let aClosed = false;
    a.onClose(() => { aClosed = true; });
    const b1 = await openSerialLink(p.b);
    await b1.close();
    // Nobody reads this byte: it may be lost (serialport's open flushes the tty input
    // queue) or delivered late, depending on whether socat relayed it before the reopen.
    await a.write(new Uint8Array([0x11]));
    const b2 = await open(p.b);
    const atB = new ByteCollector(b2);
    const atA = new ByteCollector(a);
    await a.write(new Uint8Array([0x22]));
    await b2.write(new Uint8Array([0x33]));
    await Promise.all([atB.until(1), atA.until(1)]);
    await atB.until(toHex(atB.bytes()).startsWith('11') ? 2 : 1);
    expect(['22', '1122']).toContain(toHex(atB.bytes()));
    expect(toHex(atA.bytes())).toBe('33');
    expect(aClosed).toBe(false);
  });

  it('close() is clean and idempotent; onClose gets no error; writes after close reject', async () => {
    const p = await pair();
    const a = await openSerialLink(p.a);
    const closed = closedOf(a);
    await Promise.all([a.close(), a.close()]);
    expect(await closed).toBeUndefined();
    await expect(a.write(new Uint8Array([1]))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
  });
});

describe('createPtyPair', () => {
  it('says to install socat when it is missing', async () => {
    await expect(createPtyPair({ socatPath: '/nonexistent/socat' })).rejects.toSatisfy(
      (e) => isTrickleError(e, 'ERR_LINK_OPEN') && /apt-get install socat/.test((e as Error).message),
    );
  });
});
