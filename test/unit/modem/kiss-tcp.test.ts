/** openTcpLink (src/link/tcp.ts), the KISS-over-TCP byte pipe, against a real local TCP server. */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { openTcpLink } from '../../../src/link/tcp.ts';
import { isTrickleError } from '../../../src/errors.ts';
import { ByteCollector, closedOf } from '../../helpers/pty.ts';
import { freePort } from '../../../scripts/synapse.ts';

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

async function listen(): Promise<{ port: number; peer: Promise<Socket> }> {
  let accept!: (s: Socket) => void;
  const peer = new Promise<Socket>((r) => { accept = r; });
  server = createServer((s) => accept(s));
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, peer };
}

describe('openTcpLink', () => {
  it('carries every byte value both ways, in order', async () => {
    const { port, peer } = await listen();
    const link = await openTcpLink('127.0.0.1', port);
    expect(link.name).toBe(`tcp:127.0.0.1:${port}`);
    const s = await peer;
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const atServer: Buffer[] = [];
    let n = 0;
    const got = new Promise<void>((r) => s.on('data', (d: Buffer) => { atServer.push(d); n += d.length; if (n >= 512) r(); }));
    await link.write(all);
    await link.write(all);
    await got;
    expect([...Buffer.concat(atServer)]).toEqual([...all, ...all]);
    const atLink = new ByteCollector(link);
    s.write(Buffer.from(all));
    await atLink.until(256);
    expect([...atLink.bytes()]).toEqual([...all]);
    await link.close();
  });

  it('says that nothing listens, and what to check, when the connection is refused', async () => {
    const port = await freePort();
    const err = await openTcpLink('127.0.0.1', port).catch((e: unknown) => e);
    expect(isTrickleError(err, 'ERR_LINK_NOT_FOUND')).toBe(true);
    expect((err as Error).message).toBe(`nothing listens on 127.0.0.1:${port}; is direwolf (or your KISS TNC) running with KISSPORT ${port}?`);
  });

  it('rejects a bad port as configuration', async () => {
    await expect(openTcpLink('127.0.0.1', 70000)).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_CONFIG'));
  });

  it('reports the TNC going away once, as ERR_LINK_IO, and later writes reject with ERR_LINK_CLOSED', async () => {
    const { port, peer } = await listen();
    const link = await openTcpLink('127.0.0.1', port);
    const closed = closedOf(link);
    (await peer).destroy();
    const err = await closed;
    expect(isTrickleError(err, 'ERR_LINK_IO')).toBe(true);
    expect((err as Error).message).toContain(`tcp:127.0.0.1:${port}`);
    await expect(link.write(Uint8Array.of(1))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
    // A listener registered after the close still hears about it, with the same error.
    expect(await closedOf(link)).toBe(err);
  });

  it('close is clean and idempotent; writes after it reject with ERR_LINK_CLOSED', async () => {
    const { port, peer } = await listen();
    const link = await openTcpLink('127.0.0.1', port);
    const s = await peer;
    const serverSawEnd = new Promise<void>((r) => s.once('close', () => r()));
    const closed = closedOf(link);
    await Promise.all([link.close(), link.close()]);
    expect(await closed).toBeUndefined();
    await serverSawEnd;
    await expect(link.write(Uint8Array.of(1))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
  });
});
