/**
 * Hardware-in-the-loop over a real packet-radio channel: two Direwolf 1.6 soundcard TNCs
 * joined by a real-time audio relay (scripts/direwolf-pair.ts), AFSK 1200 bd, KISS over TCP.
 *
 *   KissModem N0CALL-1 ⇄ TCP ⇄ direwolf A ~~ AFSK audio, real time ~~ direwolf B ⇄ TCP ⇄ KissModem N0CALL-2
 *
 * (a) the two modems exchange frames both ways; the airtime of each transmission is
 *     measured on the simulated channel and checked against the AX.25 bit count;
 * (b) the end-to-end path: matrix-js-sdk → host → KISS/Direwolf → gateway → Synapse, and back,
 *     with startHost/startGateway given the TCP link and a KissModem factory, as
 *     `trickle host|gateway --modem kiss --kiss-tcp …` does.
 *
 * Direwolf missing: the tests fail with `apt-get install direwolf`, unless
 * TRICKLE_ALLOW_SKIP_DIREWOLF=1 allows skipping.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { createClient, Direction } from 'matrix-js-sdk';
import { openTcpLink } from '../../src/link/tcp.ts';
import { DEFAULT_KISS_MAX_FRAME_LEN, KissModem, kissModemFactory, type KissModemOptions } from '../../src/modem/kiss/kiss-modem.ts';
import { encodeKissDataFrame } from '../../src/modem/kiss/kiss.ts';
import { ax25AirtimeMs, encodeAx25UiFrame, parseAx25Address, parseCallsign } from '../../src/modem/kiss/ax25.ts';
import { toHex } from '../../src/util/bytes.ts';
import { silentLogger } from '../../src/log.ts';
import type { RadioSettings } from '../../src/net/radio-stack.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import {
  direwolfAvailable, direwolfPath, direwolfSkipAllowed, noDirewolfMessage, startDirewolfPair,
  type Burst, type DirewolfPair,
} from '../helpers/direwolf.ts';
import { freePort } from '../helpers/stack.ts';
import { mulberry32Int as prng } from '../helpers/prng.ts';

const BAUD = 1200;
/** Channel access tuned for a two-station test channel: transmit as soon as it is clear. */
const FAST: Partial<KissModemOptions> = { txDelayMs: 200, persistence: 255, slotTimeMs: 10, txTailMs: 30 };

if (!direwolfAvailable && !direwolfSkipAllowed) {
  describe('Direwolf pair', () => {
    it('needs direwolf', () => { throw new Error(noDirewolfMessage); });
  });
}


function nextFrame(modem: KissModem, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no frame at ${modem.config.source.callsign}-${modem.config.source.ssid} within ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    modem.onFrame((f) => { if (!done) { done = true; clearTimeout(t); resolve(f); } });
  });
}

function nextBurst(pair: DirewolfPair, timeoutMs: number): Promise<Burst> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no transmission within ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    pair.onBurst((b) => { if (!done) { done = true; clearTimeout(t); resolve(b); } });
  });
}

describe.skipIf(!direwolfAvailable)(`two KissModems over the Direwolf pair (AFSK ${BAUD} bd)${direwolfAvailable ? '' : ` (${noDirewolfMessage})`}`, () => {
  let pair: DirewolfPair;
  let a: KissModem;
  let b: KissModem;

  beforeAll(async () => {
    pair = await startDirewolfPair({ callsigns: ['N0CALL-1', 'N0CALL-2'], direwolfPath });
    a = new KissModem(await openTcpLink('127.0.0.1', pair.a.kissPort), { callsign: 'N0CALL-1', peer: 'N0CALL-2', ...FAST });
    b = new KissModem(await openTcpLink('127.0.0.1', pair.b.kissPort), { callsign: 'N0CALL-2', peer: 'N0CALL-1', ...FAST });
    await Promise.all([a.ready, b.ready]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await pair?.close();
  });

  it('carries one frame A → B; its airtime matches the AX.25 bit count; Direwolf decodes our addresses', async () => {
    const payload = new TextEncoder().encode('Hello from the valley');
    const burst = nextBurst(pair, 10_000);
    const got = nextFrame(b, 10_000);
    const t0 = performance.now();
    await a.send(payload);
    const frame = await got;
    const latencyMs = performance.now() - t0;
    const measured = await burst;
    expect(toHex(frame)).toBe(toHex(payload));
    const ax25 = encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-1'), info: payload });
    const predictedMs = ax25AirtimeMs(ax25, { baud: BAUD, txDelayMs: FAST.txDelayMs!, txTailMs: FAST.txTailMs! });
    // Direwolf rounds TXDELAY/TXTAIL to whole flags (6.7 ms each) and adds a few bits; 5 % + 30 ms.
    expect(measured.from).toBe('a');
    expect(Math.abs(measured.airtimeMs - predictedMs)).toBeLessThan(predictedMs * 0.05 + 30);
    // The receiving Direwolf printed the frame with our source and destination: an
    // independent check of our address encoding.
    expect(pair.b.log()).toContain('N0CALL-1>TRICKL');
    console.info(`[direwolf pair] ${payload.length}-byte payload (${ax25.length}-byte AX.25 frame): ` +
      `airtime measured ${measured.airtimeMs.toFixed(0)} ms, predicted ${predictedMs.toFixed(0)} ms ` +
      `(TXDELAY ${FAST.txDelayMs} ms + frame + TXtail ${FAST.txTailMs} ms); send → receive latency ${latencyMs.toFixed(0)} ms`);
  }, 20_000);

  it('carries random frames both ways, full size and full of FEND/FESC bytes, in order', async () => {
    const rnd = prng(0x7121c41e);
    const make = (len: number) => Uint8Array.from({ length: len }, () => (rnd(4) === 0 ? [0xc0, 0xdb, 0xdc, 0xdd][rnd(4)]! : rnd(256)));
    const lengths = [256, 1, 100, 37];
    const toB = lengths.map(make);
    const toA = lengths.map(make).reverse();
    const atB: string[] = [];
    const atA: string[] = [];
    const all = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out: ${atB.length}/${toB.length} at B, ${atA.length}/${toA.length} at A`)), 40_000);
      const check = () => { if (atB.length === toB.length && atA.length === toA.length) { clearTimeout(t); resolve(); } };
      b.onFrame((f) => { atB.push(toHex(f)); check(); });
      a.onFrame((f) => { atA.push(toHex(f)); check(); });
    });
    // Both stations have traffic at once: CSMA (Direwolf's carrier detect) takes turns.
    await Promise.all([
      (async () => { for (const f of toB) await a.send(f); })(),
      (async () => { for (const f of toA) await b.send(f); })(),
    ]);
    await all;
    expect(atB).toEqual(toB.map(toHex));
    expect(atA).toEqual(toA.map(toHex));
    expect(a.stats().dropped).toEqual({});
    expect(b.stats().dropped).toEqual({});
  }, 60_000);

  it('on the shared channel, drops what another station sends to another destination', async () => {
    // A third KISS client on direwolf A transmits an APRS-style frame (to APRS, not TRICKL).
    const other = connect(pair.a.kissPort, '127.0.0.1');
    await new Promise<void>((r) => other.once('connect', () => r()));
    const before = b.stats().dropped['ERR_AX25_NOT_OURS'] ?? 0;
    const dropped = new Promise<void>((resolve) => b.onDrop((code) => { if (code === 'ERR_AX25_NOT_OURS') resolve(); }));
    other.write(encodeKissDataFrame(0, encodeAx25UiFrame({
      destination: parseAx25Address('APRS'), source: parseCallsign('W1AW-9'), info: new TextEncoder().encode('>hello APRS'),
    })));
    await dropped;
    expect(b.stats().dropped['ERR_AX25_NOT_OURS']).toBe(before + 1);
    other.destroy();
  }, 20_000);
});

describe.skipIf(!direwolfAvailable)(`end to end: matrix-js-sdk → host → KISS/Direwolf → gateway → Synapse${direwolfAvailable ? '' : ` (${noDirewolfMessage})`}`, () => {
  let hs: SynapseHandle;
  let pair: DirewolfPair;
  let host: Host;
  let gateway: Gateway;
  let hostUrl = '';
  const MAX_FRAME_LEN = DEFAULT_KISS_MAX_FRAME_LEN;

  beforeAll(async () => {
    hs = await startSynapse();
    pair = await startDirewolfPair({ callsigns: ['N0CALL-1', 'N0CALL-2'], direwolfPath });
    // 1200 bd AFSK: LoRa SF10/125 kHz (977 bit/s) is the closest the stack's airtime model
    // has; region 'none' since amateur bands have no duty-cycle limit.
    const radio: RadioSettings = { region: 'none', bandwidthHz: 125_000, sf: 10, codingRate: 5 };
    const common = { baudRate: 9600, maxFrameLen: MAX_FRAME_LEN, radio, maxBodyBytes: 1 << 20, logger: silentLogger() };
    // The stack puts the KissModem straight on the TCP link to each Direwolf: the bytes on
    // air are exactly what `trickle … --modem kiss --kiss-tcp` sends.
    gateway = await startGateway({
      ...common,
      link: await openTcpLink('127.0.0.1', pair.b.kissPort),
      createModem: kissModemFactory({ callsign: 'N0CALL-2', peer: 'N0CALL-1', ...FAST }),
      homeserverUrl: hs.baseUrl, homeserverTimeoutMs: 60_000,
    });
    const port = await freePort();
    host = await startHost({
      ...common,
      link: await openTcpLink('127.0.0.1', pair.a.kissPort),
      createModem: kissModemFactory({ callsign: 'N0CALL-1', peer: 'N0CALL-2', ...FAST }),
      listenHost: '127.0.0.1', listenPort: port, requestTimeoutMs: 120_000,
    });
    hostUrl = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await host?.close();
    await gateway?.close();
    await pair?.close();
    await hs?.stop();
  });

  it('logs in, creates a room, invites, sends, and reads the reply, all over AFSK 1200', async () => {
    await hs.registerUser('alice', 'alice-pw');
    const bobAccount = await hs.registerUser('bob', 'bob-pw');
    const t0 = performance.now();

    const loginClient = createClient({ baseUrl: hostUrl });
    const login = await loginClient.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw' });
    expect(login.user_id).toBe('@alice:localhost');
    const alice = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    const bob = createClient({ baseUrl: hs.baseUrl, accessToken: bobAccount.accessToken, userId: bobAccount.userId });

    const { room_id: roomId } = await alice.createRoom({ name: 'over the air', preset: 'private_chat' as never });
    await alice.invite(roomId, bobAccount.userId);
    await bob.joinRoom(roomId);

    const hello = 'Hello over AFSK 1200 ✓';
    const { event_id: helloId } = await alice.sendTextMessage(roomId, hello);
    // Bob, straight on Synapse, sees alice's message as she sent it.
    const atBob = await bob.fetchRoomEvent(roomId, helloId);
    expect(atBob.sender).toBe('@alice:localhost');
    expect(atBob.content?.['body']).toBe(hello);

    const reply = 'Copy, 73';
    await bob.sendTextMessage(roomId, reply);
    // …and back: alice reads the room's latest messages through the radio.
    const page = await alice.createMessagesRequest(roomId, null, 5, Direction.Backward);
    const bodies = page.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content['body']);
    expect(bodies).toContain(reply);
    expect(bodies).toContain(hello);

    const elapsedMs = performance.now() - t0;
    expect(host.radio.modem.dialect).toBe('kiss');
    expect(gateway.modem.dialect).toBe('kiss');
    expect(host.radio.maxFrameLen).toBe(MAX_FRAME_LEN);
    const hostModem = host.radio.modem.stats();
    const bursts = pair.bursts();
    const airtimeMs = bursts.reduce((s, x) => s + x.airtimeMs, 0);
    console.info(`[direwolf e2e] ${(elapsedMs / 1000).toFixed(1)} s for login, createRoom, invite, send, messages; ` +
      `${bursts.length} transmissions, ${(airtimeMs / 1000).toFixed(1)} s on air; host sent ${hostModem.framesSent} frames, received ${hostModem.framesReceived}, ` +
      `dropped ${JSON.stringify(hostModem.dropped)}`);
    const gw = gateway.status() as { requests?: { byRoute?: Record<string, number> } };
    expect(gw.requests?.byRoute?.['PUT /9']).toBe(1);
    expect(bursts.length).toBeGreaterThan(0);
  }, 300_000);
});
