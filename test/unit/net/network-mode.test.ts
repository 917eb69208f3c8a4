/**
 * A field kit and a gateway started in different --network modes (p2p / shared) cannot talk: the
 * gateway names the mismatch and its fix instead of only counting dropped frames. Real stacks
 * over an in-memory link (no radio rules: region none).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { lineLogger, silentLogger } from '../../../src/log.ts';
import { openRadioStack, type RadioStack } from '../../../src/net/radio-stack.ts';
import { openPeerTable, type PeerTable } from '../../../src/net/peer-table.ts';
import { otherNetworkMode } from '../../../src/net/link-address.ts';
import { buildSecurity } from '../../../src/cli/security.ts';
import { Method } from '../../../src/coap/numbers.ts';
import { fromHex } from '../../../src/util/bytes.ts';
import { pairedStateDirs } from '../../helpers/stack.ts';

const radioOpts = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 7, codingRate: 5 }, maxBodyBytes: 1 << 16 } as const;

describe('--network mismatch', () => {
  const closers: (() => Promise<void> | void)[] = [];
  afterEach(async () => { for (const c of closers.splice(0).reverse()) await c(); });

  it('recognises a kit handshake in the other mode by its shape only', () => {
    const xx1 = new Uint8Array(33); xx1[0] = 0x80;
    const withAddress = new Uint8Array(34); withAddress[0] = 0x15; withAddress[1] = 0x80;
    expect(otherNetworkMode(withAddress, false)).toMatch(/--network shared \(link address 0x15\).*start the gateway with --network shared/);
    expect(otherNetworkMode(xx1, true)).toMatch(/--network p2p.*start the kit with --network shared/);
    // What each mode expects is no mismatch; nor is a transport frame or a reserved address.
    expect(otherNetworkMode(xx1, false)).toBeUndefined();
    expect(otherNetworkMode(withAddress, true)).toBeUndefined();
    expect(otherNetworkMode(fromHex('15' + '00'.repeat(40)), false)).toBeUndefined();
    const reserved = withAddress.slice(); reserved[0] = 0x7f;
    expect(otherNetworkMode(reserved, false)).toBeUndefined();
  });

  async function run(gatewayShared: boolean): Promise<{ lines: string[]; status: Record<string, unknown> }> {
    const state = await pairedStateDirs();
    closers.push(() => state.cleanup());
    const [gwLink, kitLink] = createMemoryLinkPair('mode');
    const lines: string[] = [];
    const logger = lineLogger((l) => lines.push(l));
    const security = buildSecurity('gateway', state.gatewayDir, 'encrypt', silentLogger())!;
    let status: () => Record<string, unknown>;
    if (gatewayShared) {
      const table: PeerTable = await openPeerTable({ link: gwLink, logger, ...radioOpts, security, kitStores: () => ({}), onKit: () => {} });
      closers.push(() => table.close());
      status = () => table.station.status() as Record<string, unknown>;
    } else {
      const gw: RadioStack = await openRadioStack({ link: gwLink, logger, ...radioOpts, security });
      closers.push(() => gw.close());
      status = () => (gw.status() as { radio?: Record<string, unknown> }).radio ?? gw.status();
    }
    const kit = await openRadioStack({
      link: kitLink, logger: silentLogger(), ...radioOpts, security: buildSecurity('host', state.hostDir, 'encrypt', silentLogger())!,
      ...(gatewayShared ? {} : { linkAddress: 0x15 }),
    });
    closers.push(() => kit.close());
    // The kit's handshake goes unanswered and is repeated: the second copy names the mismatch.
    await kit.request({ code: Method.GET, options: [] }, { responseTimeoutMs: 4_000 }).catch(() => undefined);
    return { lines, status: status() };
  }

  it('a p2p gateway names a kit started with --network shared, and the fix', async () => {
    const { lines, status } = await run(false);
    const errors = lines.filter((l) => l.includes('ERR_NETWORK_MODE'));
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0]).toContain('start the gateway with --network shared');
    expect(JSON.stringify(status)).toMatch(/"networkMismatch":[1-9]/);
  }, 20_000);

  it('a shared gateway names a kit started with --network p2p, and the fix', async () => {
    const { lines, status } = await run(true);
    const errors = lines.filter((l) => l.includes('ERR_NETWORK_MODE'));
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0]).toContain('start the kit with --network shared');
    expect(status['networkMismatch']).toBeGreaterThanOrEqual(1);
  }, 20_000);
});
