import { describe, expect, it } from 'vitest';
import { LinkRelay, type RelayDirection } from '../../../src/link/relay.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import { ByteCollector } from '../../helpers/pty.ts';

/** host ⇄ [hostEnd, relayA] ⇄ relay ⇄ [relayB, gwEnd] ⇄ gateway */
function chain() {
  const [host, relayA] = createMemoryLinkPair('host');
  const [relayB, gateway] = createMemoryLinkPair('gw');
  const relay = new LinkRelay(relayA, relayB);
  return { host, gateway, relay, atGateway: new ByteCollector(gateway), atHost: new ByteCollector(host) };
}

describe('LinkRelay', () => {
  it('copies bytes both ways and counts them per direction', async () => {
    const { host, gateway, relay, atGateway, atHost } = chain();
    await host.write(fromHex('010203'));
    await gateway.write(fromHex('ff'));
    await Promise.all([atGateway.until(3), atHost.until(1)]);
    expect(toHex(atGateway.bytes())).toBe('010203');
    expect(toHex(atHost.bytes())).toBe('ff');
    const s = relay.stats();
    expect(s.aToB).toMatchObject({ chunksIn: 1, bytesIn: 3, bytesOut: 3, chunksDropped: 0 });
    expect(s.bToA).toMatchObject({ chunksIn: 1, bytesIn: 1, bytesOut: 1 });
  });

  it('lets an observer see chunks, a filter drop or alter them, and inject bytes in order', async () => {
    const { host, relay, atGateway } = chain();
    const seen: [RelayDirection, string][] = [];
    relay.onChunk((c, d) => seen.push([d, toHex(c)]));
    relay.setFilter((c) => (c[0] === 0xdd ? null : c[0] === 0xee ? fromHex('eeee') : c));
    await host.write(fromHex('01'));
    await host.write(fromHex('dd')); // dropped
    await host.write(fromHex('ee')); // doubled
    await atGateway.until(3);
    await relay.inject('aToB', fromHex('4242'));
    await host.write(fromHex('02'));
    await atGateway.until(6);
    expect(toHex(atGateway.bytes())).toBe('01eeee424202');
    expect(seen).toEqual([['aToB', '01'], ['aToB', 'dd'], ['aToB', 'ee'], ['aToB', '02']]);
    const s = relay.stats().aToB;
    expect(s).toMatchObject({ chunksIn: 4, bytesIn: 4, chunksDropped: 1, bytesInjected: 2, bytesOut: 6 });
    relay.setFilter(undefined);
    await host.write(fromHex('dd'));
    await atGateway.until(7);
    expect(toHex(atGateway.bytes())).toBe('01eeee424202dd');
  });

  it('reports a side closing and closes both links on close()', async () => {
    const { host, relay } = chain();
    const sides: string[] = [];
    relay.onClose((side, err) => sides.push(`${side}:${err ? 'err' : 'ok'}`));
    await host.close(); // the relay's side A sees its peer vanish
    await new Promise((r) => setImmediate(r));
    expect(sides).toEqual(['a:err']);
    await relay.close();
    expect(sides).toEqual(['a:err', 'b:ok']);
  });
});
