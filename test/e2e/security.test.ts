/**
 * Security at the application level, with the real host and gateway over a socat PTY pair:
 * an unauthorized field kit never causes a homeserver request, and a restart of either end
 * with its stored session resumes with zero handshake bytes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPtyPair, type PtyPair } from '../../src/link/pty.ts';
import { silentLogger } from '../../src/log.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { buildSecurity, stateStores } from '../../src/cli/security.ts';
import { loadOrCreateIdentity } from '../../src/cli/keys.ts';
import { freePort, pairedStateDirs } from '../helpers/stack.ts';

const logger = silentLogger();
const radio = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 9, codingRate: 5 }, maxBodyBytes: 1 << 20 };
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c(); });

async function gatewayAt(pair: PtyPair, dir: string, homeserverUrl: string): Promise<Gateway> {
  const g = await startGateway({ device: pair.b, homeserverUrl, ...radio, homeserverTimeoutMs: 5_000, logger,
    security: buildSecurity('gateway', dir, 'encrypt', logger)!, ...stateStores(dir, 'gateway', logger) });
  cleanups.push(() => g.close());
  return g;
}
async function hostAt(pair: PtyPair, dir: string, requestTimeoutMs = 20_000): Promise<Host> {
  const h = await startHost({ device: pair.a, listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs, logger,
    security: buildSecurity('host', dir, 'encrypt', logger)!, ...stateStores(dir, 'host', logger) });
  cleanups.push(() => h.close());
  return h;
}

describe('security between trickle host and trickle gateway', () => {
  it('never performs a homeserver request for a field kit that is not authorized', async () => {
    const pair = await createPtyPair();
    cleanups.push(() => pair.close());
    const root = mkdtempSync(join(tmpdir(), 'trickle-unauth-'));
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));
    loadOrCreateIdentity(join(root, 'gw'));
    loadOrCreateIdentity(join(root, 'stranger'));
    const gw = await gatewayAt(pair, join(root, 'gw'), `http://127.0.0.1:${await freePort()}`);
    const host = await hostAt(pair, join(root, 'stranger'), 4_000);
    const r = await fetch(`http://127.0.0.1:${host.port}/_matrix/client/versions`);
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(gw.homeserver.requestsTotal).toBe(0);
    const sec = gw.status().radio as { security: { established: boolean } };
    expect(sec.security.established).toBe(false);
  });

  it('resumes after a restart of either end with zero handshake bytes', async () => {
    const pair = await createPtyPair();
    cleanups.push(() => pair.close());
    const state = await pairedStateDirs();
    cleanups.push(() => state.cleanup());
    const hsUrl = `http://127.0.0.1:${await freePort()}`; // answers come back as 502: the link is what is tested
    let gw = await gatewayAt(pair, state.gatewayDir, hsUrl);
    let host = await hostAt(pair, state.hostDir);
    let handshake = 0;
    host.radio.onControlFrame((_d, n) => { handshake += n; });
    const ask = async () => (await fetch(`http://127.0.0.1:${host.port}/_matrix/client/versions`)).status;

    expect(await ask()).toBe(502);
    expect(handshake).toBeGreaterThan(0); // first contact: XX
    expect(gw.homeserver.requestsTotal).toBe(1);

    // Restart the gateway: same state directory, the stored session goes on.
    await gw.close();
    gw = await gatewayAt(pair, state.gatewayDir, hsUrl);
    handshake = 0;
    let gwHandshake = 0;
    gw.radio!.onControlFrame((_d, n) => { gwHandshake += n; });
    expect(await ask()).toBe(502);
    expect(gw.homeserver.requestsTotal).toBe(1);
    expect(handshake).toBe(0);
    expect(gwHandshake).toBe(0);

    // Restart the field kit: the same.
    await host.close();
    host = await hostAt(pair, state.hostDir);
    handshake = 0;
    host.radio.onControlFrame((_d, n) => { handshake += n; });
    expect(await ask()).toBe(502);
    expect(handshake).toBe(0);
    expect(gwHandshake).toBe(0);
    expect(gw.homeserver.requestsTotal).toBe(2);
  });
});
