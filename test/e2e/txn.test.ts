/**
 * "A retried send is never posted twice": the client's txn id never crosses the air; the
 * gateway derives the homeserver's txn id from the CoAP token, and the host reuses the token
 * when a client retries the same transaction. Real Synapse, real host and gateway code.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { createMemoryLinkPair } from '../../src/link/memory.ts';
import { silentLogger } from '../../src/log.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { createPtyPair } from '../../src/link/pty.ts';
import { buildSecurity, stateStores } from '../../src/cli/security.ts';
import { pairedStateDirs } from '../helpers/stack.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

describe('transaction ids over the radio', () => {
  let hs: SynapseHandle | undefined;
  let host: Host | undefined;
  let gateway: Gateway | undefined;
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
    await host?.close(); await gateway?.close(); await hs?.stop();
  });

  it('a client retrying the same txn id gets the same event, posted once', async () => {
    hs = await startSynapse();
    const logger = silentLogger();
    const [a, b] = createMemoryLinkPair();
    const radio = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 9, codingRate: 5 }, maxBodyBytes: 1 << 20 };
    gateway = await startGateway({ link: b, homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 30_000, logger });
    host = await startHost({ link: a, listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs: 30_000, logger });
    const alice = await hs.registerUser('alice', 'pw');
    const base = `http://127.0.0.1:${host.port}/_matrix/client/v3`;
    const auth = { authorization: `Bearer ${alice.accessToken}`, 'content-type': 'application/json' };
    const room = (await (await fetch(`${base}/createRoom`, { method: 'POST', headers: auth, body: '{}' })).json()) as { room_id: string };

    const send = async (txn: string, body: string) => {
      const r = await fetch(`${base}/rooms/${encodeURIComponent(room.room_id)}/send/m.room.message/${txn}`, {
        method: 'PUT', headers: auth, body: JSON.stringify({ msgtype: 'm.text', body }),
      });
      expect(r.status).toBe(200);
      return ((await r.json()) as { event_id: string }).event_id;
    };
    const first = await send('client-txn-1', 'once only');
    const retry = await send('client-txn-1', 'once only');
    const other = await send('client-txn-2', 'once only');
    expect(retry).toBe(first);
    expect(other).not.toBe(first);

    // The homeserver has exactly two such messages.
    const msgs = (await (await fetch(`${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(room.room_id)}/messages?dir=b&limit=50`, {
      headers: { authorization: `Bearer ${alice.accessToken}` },
    })).json()) as { chunk: { type: string; content: { body?: string } }[] };
    expect(msgs.chunk.filter((e) => e.type === 'm.room.message' && e.content.body === 'once only')).toHaveLength(2);
  }, 60_000);

  it('a retry after a new link session (new handshake) still gets the same event, posted once', async () => {
    hs ??= await startSynapse();
    const logger = silentLogger();
    const pair = await createPtyPair();
    cleanups.push(() => pair.close());
    const state = await pairedStateDirs();
    cleanups.push(() => state.cleanup());
    const radio = { baudRate: 115200, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 9, codingRate: 5 }, maxBodyBytes: 1 << 20 };
    const startGw = () => startGateway({ device: pair.b, homeserverUrl: hs!.baseUrl, ...radio, homeserverTimeoutMs: 30_000, logger,
      security: buildSecurity('gateway', state.gatewayDir, 'encrypt', logger)!, ...stateStores(state.gatewayDir, 'gateway', logger) });
    const startKit = () => startHost({ device: pair.a, listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs: 30_000, logger,
      security: buildSecurity('host', state.hostDir, 'encrypt', logger)!, ...stateStores(state.hostDir, 'host', logger) });
    let gw = await startGw();
    let kit = await startKit();
    const bob = await hs.registerUser('bob', 'pw');
    const auth = { authorization: `Bearer ${bob.accessToken}`, 'content-type': 'application/json' };
    const base = () => `http://127.0.0.1:${kit.port}/_matrix/client/v3`;
    const room = (await (await fetch(`${base()}/createRoom`, { method: 'POST', headers: auth, body: '{}' })).json()) as { room_id: string };
    const send = async (txn: string, body: string) => {
      const r = await fetch(`${base()}/rooms/${encodeURIComponent(room.room_id)}/send/m.room.message/${txn}`, { method: 'PUT', headers: auth, body: JSON.stringify({ msgtype: 'm.text', body }) });
      expect(r.status).toBe(200);
      return ((await r.json()) as { event_id: string }).event_id;
    };
    const first = await send('retry-me', 'posted once across sessions');

    // Both ends restart; the field kit without its link session (as after a session loss): a new
    // IKpsk1 handshake, new Matrix sessions on both ends. The client then retries its transaction.
    await kit.close();
    await gw.close();
    const snap = join(state.hostDir, 'session-host.json');
    writeFileSync(snap, JSON.stringify({ ...JSON.parse(readFileSync(snap, 'utf8')) as object, session: null }));
    gw = await startGw();
    kit = await startKit();
    cleanups.push(() => kit.close(), () => gw.close());
    const retried = await send('retry-me', 'posted once across sessions');
    expect((gw.status().radio as { sessionResets: number }).sessionResets).toBe(1); // the new handshake
    expect(retried).toBe(first);
    const other = await send('another', 'posted once across sessions');
    expect(other).not.toBe(first);

    const msgs = (await (await fetch(`${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(room.room_id)}/messages?dir=b&limit=50`, {
      headers: { authorization: `Bearer ${bob.accessToken}` },
    })).json()) as { chunk: { type: string; content: { body?: string } }[] };
    expect(msgs.chunk.filter((e) => e.type === 'm.room.message' && e.content.body === 'posted once across sessions')).toHaveLength(2);
  }, 120_000);
});
