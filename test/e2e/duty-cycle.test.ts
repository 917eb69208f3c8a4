/**
 * The law at the local API: when the sub-band's budget is spent, a local client gets
 * M_LIMIT_EXCEEDED with a retry_after_ms that matches the scheduler's sliding ledger, at once,
 * never a hang. Real host and gateway code over an in-memory link, EU868 868.95 MHz (0.1 %:
 * 3.6 s of airtime per hour) at SF10, where one request frame costs about 0.3 s.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createMemoryLinkPair } from '../../src/link/memory.ts';
import { silentLogger } from '../../src/log.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { freePort } from '../helpers/stack.ts';
import type { AirtimeState } from '../../src/net/radio-stack.ts';

describe('duty cycle at the local Matrix API', () => {
  let host: Host | undefined;
  let gateway: Gateway | undefined;
  afterAll(async () => { await host?.close(); await gateway?.close(); });

  it('refuses with M_LIMIT_EXCEEDED and a correct retry_after_ms once the hour is spent', async () => {
    const logger = silentLogger();
    const [a, b] = createMemoryLinkPair();
    const radio = { region: 'eu868', freqHz: 868_950_000, bandwidthHz: 125_000, sf: 10, codingRate: 5 };
    const deadHomeserver = `http://127.0.0.1:${await freePort()}`;
    gateway = await startGateway({ link: b, homeserverUrl: deadHomeserver, baudRate: 9600, maxFrameLen: 255, radio, maxBodyBytes: 1 << 20, homeserverTimeoutMs: 5_000, logger });
    // The host's airtime ledger is persisted (in memory here; a 0600 file in --state-dir in the app).
    let saved: AirtimeState | undefined;
    const airtimeStore = { load: () => saved, save: (v: AirtimeState) => { saved = JSON.parse(JSON.stringify(v)) as AirtimeState; } };
    const startTheHost = () => startHost({ link: a, listenHost: '127.0.0.1', listenPort: 0, baudRate: 9600, maxFrameLen: 255, radio, maxBodyBytes: 1 << 20, requestTimeoutMs: 60_000, maxDutyCycleWaitMs: 30_000, logger, airtimeStore });
    host = await startTheHost();
    const url = `http://127.0.0.1:${host.port}/_matrix/client/versions`;

    const statuses: number[] = [];
    let refusal: { errcode: string; retry_after_ms: number; error: string } | undefined;
    // Until the host refuses locally (at once, no airtime): before that, requests cross the radio
    // (502: the gateway's homeserver is down), or the gateway itself answers 429 in a few bytes
    // when its own budget cannot carry the real answer.
    for (let i = 0; i < 30 && !refusal; i++) {
      const started = Date.now();
      const r = await fetch(url);
      statuses.push(r.status);
      const body = (await r.json()) as NonNullable<typeof refusal>;
      if (r.status === 429 && Date.now() - started < 500) refusal = body;
      else if (r.status === 429) expect(body).toMatchObject({ errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: expect.any(Number) });
      else expect(r.status).toBe(502);
    }
    expect(statuses.filter((s) => s === 502).length).toBeGreaterThanOrEqual(1);
    expect(refusal?.errcode).toBe('M_LIMIT_EXCEEDED');
    expect(refusal?.error).toMatch(/spent its legal duty-cycle budget/);

    // Whichever end ran out (here the gateway: its answers are larger than the requests),
    // retry_after_ms is when that end's sliding 3600 s window has room again, as the host's
    // own ledger or its mirror of the gateway's ledger says, and within the hour.
    const radioStatus = host.status().radio as {
      dutyCycle: { subBands: { nextAllowedSendInMs: number; airtimeUsedLastHourMs: number; budgetPerHourMs: number }[] };
      peerDutyCycle: { heardLastHour: { usedMs: number; budgetMs: number }[]; nextAllowedSendInMs: number };
    };
    const own = radioStatus.dutyCycle.subBands[0]!;
    expect(own.budgetPerHourMs).toBe(3_600);
    const peerUsed = radioStatus.peerDutyCycle.heardLastHour[0]!.usedMs;
    expect(Math.max(own.airtimeUsedLastHourMs, peerUsed)).toBeGreaterThan(3_600 * 0.5);
    expect(Math.max(own.airtimeUsedLastHourMs, peerUsed)).toBeLessThanOrEqual(3_600);
    const expected = Math.max(own.nextAllowedSendInMs, radioStatus.peerDutyCycle.nextAllowedSendInMs);
    expect(refusal!.retry_after_ms).toBeGreaterThan(30_000);
    expect(refusal!.retry_after_ms).toBeLessThanOrEqual(3_600_000);
    expect(Math.abs(refusal!.retry_after_ms - expected)).toBeLessThan(5_000);
    // And the host's mirror agrees with the gateway's own accounting of what it transmitted
    // (the gateway counts a frame from its start, the host from its end: compare totals).
    const gw = (gateway.status().radio as { dutyCycle: { totals: { airtimeMs: number } } }).dutyCycle.totals;
    expect(Math.abs(gw.airtimeMs - peerUsed)).toBeLessThan(1);

    // A restart of the field kit does not give it a fresh hour: what it sent still counts.
    await host.close();
    expect(saved?.entries.length).toBeGreaterThan(0);
    host = await startTheHost();
    const after = (host.status().radio as typeof radioStatus).dutyCycle.subBands[0]!;
    expect(after.airtimeUsedLastHourMs).toBeGreaterThanOrEqual(own.airtimeUsedLastHourMs);
    expect(after.airtimeUsedLastHourMs).toBeGreaterThan(0);
  }, 60_000);
});
