import { describe, expect, it } from 'vitest';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { toHex, fromHex } from '../../../src/util/bytes.ts';
import { ByteCollector, closedOf } from '../../helpers/pty.ts';

describe('createMemoryLinkPair', () => {
  it('carries bytes both ways, in order, asynchronously', async () => {
    const [a, b] = createMemoryLinkPair('m');
    expect([a.name, b.name]).toEqual(['m.a', 'm.b']);
    const atB = new ByteCollector(b);
    const atA = new ByteCollector(a);
    const p = a.write(fromHex('0102'));
    expect(atB.length).toBe(0); // never delivered inside write
    void a.write(fromHex('03'));
    await b.write(fromHex('ff'));
    await p;
    await atB.until(3);
    await atA.until(1);
    expect(toHex(atB.bytes())).toBe('010203');
    expect(toHex(atA.bytes())).toBe('ff');
  });

  it('copies written bytes: the caller may reuse its buffer', async () => {
    const [a, b] = createMemoryLinkPair();
    const got = new ByteCollector(b);
    const buf = fromHex('0a0b');
    await a.write(buf);
    buf.fill(0);
    await got.until(2);
    expect(toHex(got.bytes())).toBe('0a0b');
  });

  it('closing one end closes the other with ERR_LINK_IO after in-flight bytes arrive', async () => {
    const [a, b] = createMemoryLinkPair();
    const got = new ByteCollector(b);
    const aClosed = closedOf(a);
    const bClosed = closedOf(b);
    void a.write(fromHex('01'));
    await a.close();
    expect(await aClosed).toBeUndefined();
    const err = await bClosed;
    expect(isTrickleError(err, 'ERR_LINK_IO')).toBe(true);
    expect(toHex(got.bytes())).toBe('01');
    await expect(a.write(fromHex('02'))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
    await expect(b.write(fromHex('02'))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
    // A close listener registered late still hears about it, once.
    expect(isTrickleError(await closedOf(b), 'ERR_LINK_IO')).toBe(true);
    await a.close(); // idempotent
  });
});
