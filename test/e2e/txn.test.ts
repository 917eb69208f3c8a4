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

describe('transaction ids over the radio', () => {
  let hs: SynapseHandle | undefined;
  let host: Host | undefined;
  let gateway: Gateway | undefined;
  afterAll(async () => { await host?.close(); await gateway?.close(); await hs?.stop(); });

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
});
