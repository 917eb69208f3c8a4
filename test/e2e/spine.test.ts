/**
 * The spine, end to end with real parts:
 *   user A: matrix-js-sdk 37.5.0 → `trickle host` → PTY ⇄ relay ⇄ PTY → `trickle gateway` → Synapse
 *   user B: matrix-js-sdk directly against the same Synapse.
 * While they talk, the relay injects random bytes, truncated frames and frames with a bad
 * CRC into both directions; they must be dropped and counted, and the conversation must
 * complete anyway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, ClientEvent, RoomEvent, type MatrixClient, type MatrixEvent } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { encodeTransparentFrame } from '../../src/modem/transparent/transparent-modem.ts';
import { createRadioPath, freePort, pairedStateDirs, spawnTrickle, waitForHttp, type RadioPath, type TrickleProcess } from '../helpers/stack.ts';


function waitFor<T>(what: string, ms: number, register: (done: (v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((v) => { clearTimeout(t); resolve(v); });
  });
}

function waitForMessage(client: MatrixClient, roomId: string, body: string, ms = 60_000): Promise<MatrixEvent> {
  return waitFor(`message ${JSON.stringify(body)} at ${client.getUserId()}`, ms, (done) => {
    const room = client.getRoom(roomId);
    const existing = room?.getLiveTimeline().getEvents().find((e) => e.getContent()['body'] === body);
    if (existing) return done(existing);
    client.on(RoomEvent.Timeline, (ev, r) => {
      if (r?.roomId === roomId && ev.getType() === 'm.room.message' && ev.getContent()['body'] === body) done(ev);
    });
  });
}

async function startSyncing(client: MatrixClient): Promise<void> {
  const ready = waitFor<void>(`first sync of ${client.getUserId()}`, 60_000, (done) => {
    client.on(ClientEvent.Sync, (state) => { if (state === 'PREPARED' || state === 'SYNCING') done(); });
  });
  await client.startClient({ initialSyncLimit: 10 });
  await ready;
}

async function status(url: string): Promise<any> { return (await fetch(url)).json(); }

describe.each([
  { mode: '--poll-sync: every /sync crosses the radio', push: false },
  { mode: 'default, push sync: the gateway holds the long poll and pushes', push: true },
])('spine ($mode): matrix-js-sdk through host, serial link and gateway to a real Synapse', ({ push }) => {
  let hs: SynapseHandle;
  let radio: RadioPath;
  let host: TrickleProcess;
  let gateway: TrickleProcess;
  let hostUrl = '';
  let gatewayStatusUrl = '';
  const clients: MatrixClient[] = [];
  let state: Awaited<ReturnType<typeof pairedStateDirs>> | undefined;

  beforeAll(async () => {
    hs = await startSynapse();
    state = await pairedStateDirs();
    radio = await createRadioPath();
    const gp = await freePort();
    const hp = await freePort();
    // Security is on by default: Noise XX on first contact, then encrypted frames.
    gateway = spawnTrickle(['gateway', '--region', 'none', '--state-dir', state.gatewayDir, '--device', radio.gatewayDevice, '--homeserver', hs.baseUrl, '--listen', `127.0.0.1:${gp}`]);
    host = spawnTrickle(['host', '--region', 'none', '--state-dir', state.hostDir, '--device', radio.hostDevice, '--listen', `127.0.0.1:${hp}`, ...(push ? [] : ['--poll-sync'])]);
    hostUrl = `http://127.0.0.1:${hp}`;
    gatewayStatusUrl = `http://127.0.0.1:${gp}/_trickle/status`;
    await waitForHttp(`${hostUrl}/_trickle/status`, 30_000, host);
    await waitForHttp(gatewayStatusUrl, 30_000, gateway);
  });

  afterAll(async () => {
    for (const c of clients) c.stopClient();
    await host?.stop();
    await gateway?.stop();
    await radio?.close();
    await hs?.stop();
    state?.cleanup();
  });

  it('logs in, creates a room, invites, sends and receives through the radio path, surviving line noise', async () => {
    await hs.registerUser('alice', 'alice-pw');
    const bobAccount = await hs.registerUser('bob', 'bob-pw');

    // Noise on the serial line, both directions, for the whole conversation.
    let injected = 0;
    const injectOne = () => {
      const kind = injected % 3;
      let bytes: Uint8Array;
      if (kind === 0) {
        bytes = new Uint8Array(1 + Math.floor(Math.random() * 40));
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
      } else {
        const good = encodeTransparentFrame(new Uint8Array([0x40, 0x01, 0x12, 0x34, 0xde, 0xad]));
        if (kind === 1) bytes = good.subarray(0, good.length - 3);               // truncated frame
        else { bytes = good.slice(); bytes[3] = (bytes[3] ?? 0) ^ 0x01; }       // bad CRC
      }
      void radio.relay.inject(injected % 2 === 0 ? 'aToB' : 'bToA', bytes);
      injected++;
    };
    for (let i = 0; i < 12; i++) injectOne();   // every kind, both directions, before the first request
    const noise = setInterval(injectOne, 25);

    try {
      // A logs in through the host: the login itself crosses the radio.
      const loginClient = createClient({ baseUrl: hostUrl });
      const login = await loginClient.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw' });
      expect(login.user_id).toBe('@alice:localhost');

      const alice = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
      const bob = createClient({ baseUrl: hs.baseUrl, accessToken: bobAccount.accessToken, userId: bobAccount.userId });
      clients.push(alice, bob);
      await startSyncing(alice);
      await startSyncing(bob);

      const { room_id: roomId } = await alice.createRoom({ name: 'valley', preset: 'private_chat' as never });
      const bobInvited = waitFor<void>('invite at bob', 60_000, (done) => {
        bob.on(RoomEvent.MyMembership, (room, membership) => { if (room.roomId === roomId && membership === 'invite') done(); });
      });
      await alice.invite(roomId, bob.getUserId()!);
      await bobInvited;
      await bob.joinRoom(roomId);

      const hello = 'Hello from the valley: ünïcødé ✓, {"json": true}, 12:00 \u{1F4E1}';
      const bobGot = waitForMessage(bob, roomId, hello);
      await alice.sendTextMessage(roomId, hello);
      const atBob = await bobGot;
      expect(atBob.getSender()).toBe('@alice:localhost');
      expect(atBob.getContent()['body']).toBe(hello);

      const reply = 'Copy that, station on the hill.';
      const aliceGot = waitForMessage(alice, roomId, reply);
      await bob.sendTextMessage(roomId, reply);
      const atAlice = await aliceGot;
      expect(atAlice.getSender()).toBe('@bob:localhost');
      // Alice's typing notification is answered by the host (no --send-typing): well-formed, no airtime.
      await alice.sendTyping(roomId, true, 5_000);
    } finally {
      clearInterval(noise);
    }

    // The gateway was in the path: it performed A's login, room creation, invite, send and syncs.
    const gw = await status(gatewayStatusUrl);
    const routes = gw.requests.byRoute as Record<string, number>;
    expect(routes['POST /1']).toBeGreaterThanOrEqual(1);   // login
    expect(routes['POST /G']).toBe(1);                     // createRoom
    expect(routes['POST /J']).toBe(1);                     // invite
    expect(routes['PUT /9']).toBe(1);                      // send: exactly once despite noise
    if (push) {
      // Receiving: alice's sync loop never crossed the air; the host registered one observation
      // of /sync and the gateway pushed what changed.
      expect(routes['GET /7']).toBeUndefined();
      expect(routes['GET /7 observe']).toBe(1);
      expect(gw.pushSync.notifications).toBeGreaterThanOrEqual(1);
    } else {
      expect(routes['GET /7']).toBeGreaterThanOrEqual(2);  // alice's own sync loop, over the radio
      expect(routes['GET /7 observe']).toBeUndefined();
    }

    // The noise was seen, dropped and counted on both ends.
    const hostStatus = await status(`${hostUrl}/_trickle/status`);
    expect(hostStatus.requests.typingAnsweredLocally).toBe(1);
    expect(routes['PUT /Y']).toBeUndefined(); // typing never reached the gateway
    const droppedAtHost = Object.values(hostStatus.radio.modem.dropped as Record<string, number>).reduce((a, b) => a + b, 0);
    const droppedAtGateway = Object.values(gw.radio.modem.dropped as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(injected).toBeGreaterThanOrEqual(12);
    expect(droppedAtHost).toBeGreaterThan(0);
    expect(droppedAtGateway).toBeGreaterThan(0);
    expect(hostStatus.radio.modem.dropped.ERR_FRAME_BAD_FCS).toBeGreaterThan(0);
    // Every frame was encrypted: a session was established and the compact form was on air.
    expect(hostStatus.radio.security.established).toBe(true);
    expect(hostStatus.radio.codec).toBe('compact');
  }, 180_000);
});
