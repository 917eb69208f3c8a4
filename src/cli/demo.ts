/**
 * `npm run demo` / `trickle demo`: the whole path on one machine, with real parts.
 *
 *   matrix-js-sdk (alice) → trickle host → PTY —socat— PTY → trickle gateway → Synapse ← matrix-js-sdk (bob)
 *
 * Starts a throwaway Synapse (installed once into a cached virtualenv), a socat PTY pair as
 * the "radio", a gateway and a host; alice creates a room through the radio, invites bob,
 * says hello; bob answers; alice's own /sync loop receives the answer over the radio.
 * Then it prints, per request, the HTTP bytes beside the bytes that crossed the serial link.
 */
import { createClient, ClientEvent, RoomEvent, type MatrixClient } from 'matrix-js-sdk';
import { startSynapse, SynapseUnavailableError, type SynapseHandle } from '../../scripts/synapse.ts';
import { createLogger } from '../log.ts';
import { openSerialLink } from '../link/serial.ts';
import { startEmulatedRadioPair, type EmulatedRadioPair } from '../modem/emulator/radio-pair.ts';
import { NativeModem } from '../modem/native/native-modem.ts';
import { startHost, type ExchangeReport, type Host } from '../host/host.ts';
import { startGateway, type Gateway } from '../gateway/gateway.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateIdentity, runKeysCommand } from './keys.ts';
import { buildSecurity, stateStores } from './security.ts';
import { encodePublicKey } from '../secure/fingerprint.ts';

const t0 = Date.now();
const out = (s = '') => process.stdout.write(process.env['TRICKLE_DEMO_TIMES'] ? `[${((Date.now() - t0) / 1000).toFixed(1)}] ${s}\n` : `${s}\n`);

function until<T>(what: string, ms: number, register: (done: (v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((v) => { clearTimeout(t); resolve(v); });
  });
}

async function syncing(c: MatrixClient): Promise<void> {
  const ready = until<void>('first sync', 60_000, (done) => c.on(ClientEvent.Sync, (s) => { if (s === 'PREPARED' || s === 'SYNCING') done(); }));
  await c.startClient({ initialSyncLimit: 5 });
  await ready;
}

function shortPath(p: string): string {
  const s = decodeURIComponent(p).replace('/_matrix/client', '').replace(/![^/]+/g, '!room').replace(/\$[^/]+/g, '$event');
  return s.length > 44 ? `${s.slice(0, 41)}...` : s;
}

/**
 * matrix-js-sdk logs through console, and its child loggers force DEBUG level; the demo is for
 * people, so keep its chatter (e.g. a harmless "[MatrixRTCSessionManager] Got room state event
 * for unknown room" race at room creation) off the screen unless TRICKLE_LOG=debug.
 */
function quietMatrixSdk(): void {
  if (process.env['TRICKLE_LOG'] === 'debug') return;
  // The demo itself writes to process.stdout directly; console belongs to the SDK.
  for (const m of ['log', 'info', 'debug', 'warn'] as const) console[m] = () => {};
  const error = console.error.bind(console);
  console.error = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && /^\[[A-Za-z]+\]/.test(args[0])) return;
    error(...args);
  };
}

export async function runDemo(argv: string[] = []): Promise<number> {
  const pushSync = !argv.includes('--poll-sync');
  quietMatrixSdk();
  const logger = createLogger({ level: process.env['TRICKLE_LOG'] ?? 'error' });
  let hs: SynapseHandle | undefined;
  let emu: EmulatedRadioPair | undefined;
  let gateway: Gateway | undefined;
  let host: Host | undefined;
  const clients: MatrixClient[] = [];
  const exchanges: ExchangeReport[] = [];
  let stateRoot: string | undefined;
  let handshakeBytes = 0;
  let allBytes = 0;
  try {
    out('Trickle demo: Matrix over a serial radio link, all on this machine.\n');
    out('1. Starting a throwaway Synapse homeserver (the first run installs it into ~/.cache/trickle) ...');
    try {
      hs = await startSynapse();
    } catch (e) {
      if (e instanceof SynapseUnavailableError) {
        out(`\n${e.message}\n`);
        out('Without a local Synapse the demo cannot run. To use Trickle with an existing homeserver instead:');
        out('  trickle gateway --device /dev/ttyUSB0 --homeserver https://your.homeserver.example');
        out('  trickle host    --device /dev/ttyUSB1 --listen 127.0.0.1:8008');
        return 1;
      }
      throw e;
    }
    out(`   Synapse is at ${hs.baseUrl}`);
    const sf = 7;
    emu = await startEmulatedRadioPair({ sf, bandwidthHz: 125_000, distanceM: 2_000, lossRate: 0 });
    out(`2. The radio: two emulated LoRa modems (Trickle's firmware protocol over PTYs ${emu.hostDevice} and ${emu.gatewayDevice}),`);
    out(`   2 km apart on a simulated channel at ${emu.radioSettings.frequencyHz / 1e6} MHz, SF${sf} BW125 CR4/5: every frame takes its real time on air`);
    const native = async (device: string) => {
      const open = () => openSerialLink(device, { baudRate: 115_200 });
      const link = await open();
      const modem = await NativeModem.start(link, { radio: emu!.radioSettings, reopenLink: open });
      return { link, createModem: () => modem };
    };
    // Keys as an operator would make them: each end has its own identity, the gateway
    // authorizes the field kit (`trickle keys add`), the kit pins the gateway on first contact.
    stateRoot = mkdtempSync(join(tmpdir(), 'trickle-demo-'));
    const hostDir = join(stateRoot, 'field-kit');
    const gatewayDir = join(stateRoot, 'gateway');
    const kitKey = loadOrCreateIdentity(hostDir).keyPair.publicKey;
    loadOrCreateIdentity(gatewayDir);
    await runKeysCommand(['add', encodePublicKey(kitKey), 'demo-kit', '--state-dir', gatewayDir], () => {});
    // The duty cycle is not applied here: nothing is transmitted, and the demo should finish in a minute.
    const radio = { baudRate: 115_200, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf, codingRate: 5 }, maxBodyBytes: 16 << 20 };
    gateway = await startGateway({
      ...(await native(emu.gatewayDevice)), homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 60_000, logger,
      security: buildSecurity('gateway', gatewayDir, 'encrypt', logger)!, ...stateStores(gatewayDir, 'gateway', logger),
    });
    host = await startHost({
      ...(await native(emu.hostDevice)), listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs: 120_000, logger,
      security: buildSecurity('host', hostDir, 'encrypt', logger)!, ...stateStores(hostDir, 'host', logger), pushSync,
    });
    host.radio.onControlFrame((_d, n) => { handshakeBytes += n; });
    host.radio.onFrameRecord((r) => { allBytes += r.onAirBytes; });
    host.onExchange((rep) => exchanges.push(rep));
    const hostUrl = `http://127.0.0.1:${host.port}`;
    out(`3. trickle gateway on ${emu.gatewayDevice} -> ${hs.baseUrl}`);
    out(`   trickle host on ${emu.hostDevice}, serving Matrix clients at ${hostUrl}`);

    await hs.registerUser('alice', 'alice-password');
    const bobAccount = await hs.registerUser('bob', 'bob-password');
    out('4. Registered @alice:localhost (field kit, through the radio) and @bob:localhost (directly on the homeserver)\n');

    const login = await createClient({ baseUrl: hostUrl }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-password' });
    const alice = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    const bob = createClient({ baseUrl: hs.baseUrl, accessToken: bobAccount.accessToken, userId: bobAccount.userId });
    clients.push(alice, bob);
    out(`   alice logged in through the radio as ${login.user_id}`);
    await syncing(alice);
    await syncing(bob);

    const { room_id: roomId } = await alice.createRoom({ name: 'Valley rescue' });
    out(`   alice created room "Valley rescue" (${roomId})`);
    const invited = until<void>('invite', 60_000, (done) => bob.on(RoomEvent.MyMembership, (r, m) => { if (r.roomId === roomId && m === 'invite') done(); }));
    await alice.invite(roomId, bob.getUserId()!);
    await invited;
    await bob.joinRoom(roomId);
    out('   alice invited bob; bob joined');

    const hello = 'Hello World';
    const bobGot = until<string>('hello at bob', 60_000, (done) => bob.on(RoomEvent.Timeline, (ev, r) => {
      if (r?.roomId === roomId && ev.getType() === 'm.room.message' && ev.getContent()['body'] === hello) done(ev.getContent()['body'] as string);
    }));
    await alice.sendTextMessage(roomId, hello);
    out(`   alice -> room: ${JSON.stringify(hello)}`);
    out(`   bob   <- room: ${JSON.stringify(await bobGot)}`);

    const reply = 'Loud and clear, valley. Sending help.';
    const aliceGot = until<string>('reply at alice', 60_000, (done) => alice.on(RoomEvent.Timeline, (ev, r) => {
      if (r?.roomId === roomId && ev.getType() === 'm.room.message' && ev.getContent()['body'] === reply) done(ev.getContent()['body'] as string);
    }));
    await bob.sendTextMessage(roomId, reply);
    out(`   bob   -> room: ${JSON.stringify(reply)}`);
    out(`   alice <- room (her own /sync loop, over the radio): ${JSON.stringify(await aliceGot)}\n`);

    alice.stopClient();
    bob.stopClient();
    await new Promise((r) => setTimeout(r, 200));

    out('5. Every request alice\'s client made, as HTTP on 127.0.0.1 and as it crossed the radio:\n');
    const header = ['#', 'request', 'status', 'HTTP bytes', 'CoAP bytes', 'on-air bytes', 'frames', 'seconds'];
    const rows = exchanges.map((e, i) => [
      String(i + 1), `${e.method} ${shortPath(e.path)}`, String(e.status),
      String(e.httpRequestBytes + e.httpResponseBytes),
      String(e.compactBytesSent + e.compactBytesReceived),
      String(e.onAirBytesSent + e.onAirBytesReceived),
      `${e.framesSent}/${e.framesReceived}`,
      (e.durationMs / 1000).toFixed(1),
    ]);
    const sum = (f: (e: ExchangeReport) => number) => exchanges.reduce((a, e) => a + f(e), 0);
    rows.push(['', 'total', '', String(sum((e) => e.httpRequestBytes + e.httpResponseBytes)), String(sum((e) => e.compactBytesSent + e.compactBytesReceived)), String(sum((e) => e.onAirBytesSent + e.onAirBytesReceived)), `${sum((e) => e.framesSent)}/${sum((e) => e.framesReceived)}`, '']);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const fmt = (r: string[]) => r.map((c, i) => (i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    out(fmt(header));
    out(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const r of rows) out(fmt(r));
    const modem = host.radio.modem.stats();
    const medium = emu.medium.stats() as unknown as Record<string, unknown>;
    out(`\nAt the field kit's modem: ${modem.framesSent} frames sent, ${modem.framesReceived} received. Simulated channel: ${JSON.stringify(medium)}`);
    out(`The Noise handshake (XX on first contact) took ${handshakeBytes} bytes on air in all, both ways.`);
    out('CoAP bytes: the messages in Trickle\'s compact CoAP form (blockwise in frames of at most 255 bytes);');
    out('on-air bytes add the Noise envelope (1-byte nonce + 16-byte tag): the payload of the LoRa packets.');
    out('frames = messages sent/received by the host, ACKs included; seconds = the client\'s wait, LoRa airtime included.');
    const push = host.status()['pushSync'] as { notifications: number } | null;
    if (push) {
      const pushedBytes = allBytes - sum((e) => e.onAirBytesSent + e.onAirBytesReceived);
      out(`Every /sync above was answered by the host from its store (0 bytes on air): the gateway held the homeserver's long poll`);
      out(`and pushed ${push.notifications} notifications, ${pushedBytes} bytes on air with their ACKs, for everything alice received.`);
    } else {
      out('Every /sync long poll of alice\'s client crossed the radio (--poll-sync; without it the host answers them');
      out('from its store and the gateway pushes what changed).');
    }
    out(`All told, about ${allBytes + handshakeBytes} bytes crossed the air for this conversation, the handshake included.`);
    return 0;
  } finally {
    for (const c of clients) c.stopClient();
    const step = async (what: string, f: () => Promise<void> | undefined) => { const t = Date.now(); await f(); if (process.env['TRICKLE_DEMO_TIMES']) out(`closed ${what} in ${Date.now() - t} ms`); };
    await step('host', () => host?.close());
    await step('gateway', () => gateway?.close());
    await step('radio', () => emu?.close());
    await step('synapse', () => hs?.stop());
    if (stateRoot) rmSync(stateRoot, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  runDemo(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`demo failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
