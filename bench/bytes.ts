/**
 * `npm run bench:bytes [-- --json] [-- --out FILE] [-- --network shared]`: bytes per Matrix operation, measured on
 * real traffic — matrix-js-sdk 37.5.0 requests through `trickle host`, real Synapse answers
 * through `trickle gateway`, over a socat PTY pair, with the defaults a user gets (compact
 * CoAP, Noise security) — beside the same exchange as HTTPS+JSON and as MSC3079 (see
 * bench/models.ts for how those two are modelled).
 *
 * Columns (the JSON names are a contract):
 *   requestCompactBytes / responseCompactBytes  the CoAP messages before the security envelope,
 *                                               every message of the exchange (blocks, ACKs)
 *   requestOnAirBytes / responseOnAirBytes      what the radio transmits for them: the payload of
 *                                               the radio packets (compact + security envelope)
 *   framingOverheadBytes                        what a transparent serial radio adds on top
 *                                               (SLIP + CRC-16), both directions
 *   airtimeMsSF7 / SF9 / SF12                   LoRa time on air of all those packets, BW125 CR4/5
 *   httpsJsonBytes, msc3079Bytes                the reference encodings of the same exchange
 * The handshake rows count every handshake message both ways, as transmitted, less the first
 * request that rides inside the last one (XX3, or IK1 as 0-RTT): those bytes belong to that
 * request and are reported as carriedRequestBytes. `resume_after_restart` counts the handshake
 * bytes a restart with an intact session costs. `--network shared` measures the same on a shared
 * channel (the kit's link address in front of every frame).
 */
import { writeFileSync } from 'node:fs';
import { createClient, MatrixEvent, ReceiptType, Method, type MatrixClient } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from '../scripts/synapse.ts';
import { createPtyPair, type PtyPair } from '../src/link/pty.ts';
import { silentLogger } from '../src/log.ts';
import { startHost, type ExchangeReport, type Host } from '../src/host/host.ts';
import { startGateway, type Gateway } from '../src/gateway/gateway.ts';
import { buildSecurity, sharedKitStores, stateStores } from '../src/cli/security.ts';
import { loadIdentity } from '../src/cli/keys.ts';
import { deriveKitAddress } from '../src/net/link-address.ts';
import { loraAirtimeMs } from '../src/scheduler/airtime.ts';
import { FrameKind, XX3_OVERHEAD, IK1_OVERHEAD } from '../src/secure/secure-link.ts';
import { transparentFramingOverhead } from '../src/modem/transparent/transparent-modem.ts';
import { kissFramingOverhead } from '../src/modem/kiss/kiss-modem.ts';
import { rnodeOnAirOverhead } from '../src/modem/rnode/rnode-protocol.ts';
import { meshtasticOnAirOverhead } from '../src/modem/meshtastic/meshtastic-protocol.ts';
import type { HttpRequestLike, HttpResponseLike } from '../src/matrix/http.ts';
import type { FrameRecord } from '../src/net/radio-stack.ts';
import { pairedStateDirs } from '../test/helpers/stack.ts';
import { httpsJsonBytes, msc3079Bytes } from './models.ts';

export interface OperationRow {
  name: string;
  requests: number;
  requestCompactBytes: number;
  requestOnAirBytes: number;
  responseCompactBytes: number;
  responseOnAirBytes: number;
  framingOverheadBytes: number;
  frames: number;
  airtimeMsSF7: number;
  airtimeMsSF9: number;
  airtimeMsSF12: number;
  httpsJsonBytes: number;
  msc3079Bytes: number;
  /** Handshake rows: bytes of the first request that rode inside the handshake (not counted above). */
  carriedRequestBytes?: number;
  /**
   * What each modem dialect puts on air for the same messages (both directions): the radio
   * packet including the dialect's own header (AX.25 address + FCS for KISS, RNode's header
   * byte, Meshtastic's packet header; the transparent radio sends its SLIP framing and CRC).
   */
  onAirBytesByDialect?: Record<string, number>;
}

/** On-air bytes a dialect adds to a radio payload of n bytes (zeros: SLIP escapes not counted). */
const DIALECT_ON_AIR: Record<string, (n: number) => number> = {
  native: () => 0,
  rnode: (n) => rnodeOnAirOverhead(n),
  transparent: (n) => transparentFramingOverhead(new Uint8Array(n)),
  kiss: (n) => { const o = kissFramingOverhead(new Uint8Array(n)); return o.onAirHeaderBytes + o.onAirFcsBytes; },
  meshtastic: (n) => meshtasticOnAirOverhead(n),
};
const byDialect = (sizes: number[]): Record<string, number> =>
  Object.fromEntries(Object.entries(DIALECT_ON_AIR).map(([d, f]) => [d, sizes.reduce((a, n) => a + n + f(n), 0)]));

interface Performed { req: HttpRequestLike; res: HttpResponseLike; responseWireBytes: number }

for (const m of ['log', 'info', 'debug', 'warn'] as const) console[m] = () => {};

const args = process.argv.slice(2);
const asJson = args.includes('--json');
const outIdx = args.indexOf('--out');
const outFile = outIdx >= 0 ? args[outIdx + 1] : undefined;
// `--network shared`: the same exchanges on a shared channel (every frame carries the kit's link address).
const netIdx = args.indexOf('--network');
const network = netIdx >= 0 ? args[netIdx + 1] : 'p2p';
if (network !== 'p2p' && network !== 'shared') {
  process.stderr.write(`bench:bytes: --network must be p2p or shared, got ${JSON.stringify(network)}\n`);
  process.exit(2);
}

const airtime = (sizes: number[], sf: number): number =>
  Math.round(sizes.reduce((a, n) => a + loraAirtimeMs({ payloadBytes: n, sf, bandwidthHz: 125_000, codingRate: 5 }), 0) * 10) / 10;

const logger = silentLogger();
let hs: SynapseHandle | undefined;
let host: Host | undefined;
let gateway: Gateway | undefined;
let pair: PtyPair | undefined;
const state = await pairedStateDirs('bench-kit');
try {
  hs = await startSynapse();
  pair = await createPtyPair();
  const radio = { baudRate: 9600, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 9, codingRate: 5 }, maxBodyBytes: 16 << 20 };
  gateway = await startGateway({
    device: pair.b, homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 60_000, logger,
    security: buildSecurity('gateway', state.gatewayDir, 'encrypt', logger)!, ...stateStores(state.gatewayDir, 'gateway', logger),
    ...(network === 'shared' ? { shared: sharedKitStores(state.gatewayDir, logger) } : {}),
  });
  const performed: Performed[] = [];
  gateway.homeserver.onPerformed((req, res, responseWireBytes) => performed.push({ req, res, responseWireBytes }));

  const exchanges: ExchangeReport[] = [];
  let handshakeSizes: number[] = [];
  let carried = 0;
  const startTheHost = async (): Promise<Host> => {
    const h = await startHost({
      // sendTyping: the `typing` row measures what a typing notification costs when carried
      // (--send-typing); by default the host answers it itself and it costs nothing.
      device: pair!.a, listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs: 60_000, logger, pushSync: true, sendTyping: true,
      security: buildSecurity('host', state.hostDir, 'encrypt', logger)!, ...stateStores(state.hostDir, 'host', logger),
      ...(network === 'shared' ? { linkAddress: deriveKitAddress(loadIdentity(state.hostDir).publicKey) } : {}),
    });
    h.onExchange((e) => exchanges.push(e));
    h.radio.onControlFrame((dir, n, kind) => {
      // XX3 and IK1 carry the first request (0-RTT); its bytes belong to that request, not to the handshake.
      const payload = kind === FrameKind.XX3 && dir === 'tx' ? n - XX3_OVERHEAD : kind === FrameKind.IK1 && dir === 'tx' ? n - IK1_OVERHEAD : 0;
      carried += payload;
      handshakeSizes.push(n - payload);
    });
    return h;
  };
  host = await startTheHost();
  let hostUrl = `http://127.0.0.1:${host.port}`;

  const rows: OperationRow[] = [];
  const settle = () => new Promise((r) => setTimeout(r, 150)); // the last ACKs land
  const measure = async (name: string, op: () => Promise<unknown>): Promise<void> => {
    await settle();
    exchanges.length = 0;
    performed.length = 0;
    await op();
    await settle();
    if (exchanges.length === 0 || exchanges.length !== performed.length) {
      throw new Error(`${name}: ${exchanges.length} exchanges at the host but ${performed.length} at the homeserver`);
    }
    const sum = (f: (e: ExchangeReport) => number) => exchanges.reduce((a, e) => a + f(e), 0);
    const sizes = exchanges.flatMap((e) => e.onAirMessages);
    rows.push({
      name,
      requests: exchanges.length,
      requestCompactBytes: sum((e) => e.compactBytesSent),
      requestOnAirBytes: sum((e) => e.onAirBytesSent),
      responseCompactBytes: sum((e) => e.compactBytesReceived),
      responseOnAirBytes: sum((e) => e.onAirBytesReceived),
      framingOverheadBytes: sum((e) => e.wireBytesSent + e.wireBytesReceived - e.onAirBytesSent - e.onAirBytesReceived),
      frames: sum((e) => e.framesSent + e.framesReceived),
      airtimeMsSF7: airtime(sizes, 7),
      airtimeMsSF9: airtime(sizes, 9),
      airtimeMsSF12: airtime(sizes, 12),
      httpsJsonBytes: exchanges.reduce((a, e, i) => a + httpsJsonBytes(e.httpRequestBytes, performed[i]!.responseWireBytes), 0),
      msc3079Bytes: performed.reduce((a, p) => a + msc3079Bytes(p.req, p.res), 0),
      onAirBytesByDialect: byDialect(sizes),
    });
  };
  /** A handshake row: every control frame both ways while `op` runs (its request rides inside). */
  const measureHandshake = async (name: string, op: () => Promise<unknown>): Promise<void> => {
    handshakeSizes = [];
    carried = 0;
    await op();
    await settle();
    const total = handshakeSizes.reduce((a, b) => a + b, 0);
    rows.push({
      name, requests: 0, requestCompactBytes: 0, requestOnAirBytes: total, responseCompactBytes: 0, responseOnAirBytes: 0,
      framingOverheadBytes: 0, frames: handshakeSizes.length,
      airtimeMsSF7: airtime(handshakeSizes, 7), airtimeMsSF9: airtime(handshakeSizes, 9), airtimeMsSF12: airtime(handshakeSizes, 12),
      httpsJsonBytes: 0, msc3079Bytes: 0, carriedRequestBytes: carried, onAirBytesByDialect: byDialect(handshakeSizes),
    });
  };

  await hs.registerUser('alice', 'alice-password');
  const bobAccount = await hs.registerUser('bob', 'bob-password');
  const bob = createClient({ baseUrl: hs.baseUrl, accessToken: bobAccount.accessToken, userId: bobAccount.userId });

  // First contact: Noise XX (the first request, GET /versions, rides in its third message).
  await measureHandshake('handshake_xx', () => fetch(`${hostUrl}/_matrix/client/versions`).then((r) => r.text()));

  let alice!: MatrixClient;
  await measure('login', async () => {
    const login = await createClient({ baseUrl: hostUrl }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-password' });
    alice = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  });
  let roomId = '';
  await measure('create_room', async () => { roomId = (await alice.createRoom({ name: 'bench', invite: [bobAccount.userId] })).room_id; });
  await bob.joinRoom(roomId);
  const { room_id: publicRoom } = await bob.createRoom({ name: 'town square', visibility: 'public' as never, preset: 'public_chat' as never });
  await measure('join_room', () => alice.joinRoom(publicRoom));

  let helloId = '';
  await measure('send_text', async () => { helloId = (await alice.sendTextMessage(roomId, 'Hello World')).event_id; });
  const long = 'Trail washed out below the second bridge; we are taking the ridge path instead. Four people, one with a sprained ankle, moving slowly. Water and food for two days. Expect us at the hut around 18:00. Please keep the channel open and tell the team at the road head. Over.'.padEnd(280, '.').slice(0, 280);
  await measure('send_long_text', () => alice.sendTextMessage(roomId, long));
  await measure('send_reaction', () => alice.sendEvent(roomId, 'm.reaction' as never, { 'm.relates_to': { rel_type: 'm.annotation', event_id: helloId, key: '👍' } } as never));

  const bobMsg = await bob.sendTextMessage(roomId, 'Received, on our way.');
  const bobEvent = new MatrixEvent({ event_id: bobMsg.event_id, room_id: roomId, type: 'm.room.message', sender: bobAccount.userId, content: {} });
  await measure('send_read_receipt', () => alice.sendReceipt(bobEvent, ReceiptType.Read));
  await measure('typing', () => alice.sendTyping(roomId, true, 30_000));

  // Receiving is pushed: the client's /sync is answered by the host; what crosses the air is the
  // gateway's notification and the host's ACK. Measured as every frame in a window.
  const frames: FrameRecord[] = [];
  host.radio.onFrameRecord((r) => frames.push(r));
  // The kit's push sync, as /_trickle/status has it since issue 12 (one store per account; the bench's account is the only one).
  const pushStatus = () => {
    const p = host!.status()['pushSync'] as { registered: boolean; notifications: number; stores: { storePosition: number; initialSync: { roomsDone: number; roomsTotal: number } | null }[] };
    const store = p.stores[0];
    return { registered: p.registered, notifications: p.notifications, storePosition: store?.storePosition ?? 0, initialSync: store?.initialSync ?? null };
  };
  const waitUntil = async (what: string, ok: () => boolean, ms = 60_000) => {
    const end = Date.now() + ms;
    while (!ok()) { if (Date.now() > end) throw new Error(`bench: timed out waiting for ${what}`); await new Promise((r) => setTimeout(r, 50)); }
  };
  const measureWindow = async (name: string, op: () => Promise<unknown>, done: () => boolean, quietMs = 1_500): Promise<void> => {
    frames.length = 0;
    await op();
    await waitUntil(name, done);
    let n = -1;
    while (n !== frames.length) { n = frames.length; await new Promise((r) => setTimeout(r, quietMs)); } // until the link is quiet
    const tx = frames.filter((f) => f.direction === 'tx');
    const rx = frames.filter((f) => f.direction === 'rx');
    const sum = (fs: FrameRecord[], k: 'compactBytes' | 'onAirBytes' | 'wireBytes') => fs.reduce((a, f) => a + f[k], 0);
    const sizes = frames.map((f) => f.onAirBytes);
    rows.push({
      name, requests: 0,
      requestCompactBytes: sum(tx, 'compactBytes'), requestOnAirBytes: sum(tx, 'onAirBytes'),
      responseCompactBytes: sum(rx, 'compactBytes'), responseOnAirBytes: sum(rx, 'onAirBytes'),
      framingOverheadBytes: sum(frames, 'wireBytes') - sum(frames, 'onAirBytes'), frames: frames.length,
      airtimeMsSF7: airtime(sizes, 7), airtimeMsSF9: airtime(sizes, 9), airtimeMsSF12: airtime(sizes, 12),
      httpsJsonBytes: 0, msc3079Bytes: 0, onAirBytesByDialect: byDialect(sizes),
    });
  };

  // initial_sync: 5 more rooms with 5 members and 20 messages each, set up directly on the
  // homeserver (off air); then the field kit's first local /sync registers the observation and
  // the gateway pushes the initial sync, most recent rooms first, in chunks.
  const others = await Promise.all(['carol', 'dave', 'erin', 'frank'].map((u) => hs!.registerUser(u, `${u}-password`)));
  const direct = (acc: { accessToken: string; userId: string }) => createClient({ baseUrl: hs!.baseUrl, accessToken: acc.accessToken, userId: acc.userId });
  const aliceDirect = direct({ accessToken: alice.getAccessToken()!, userId: alice.getUserId()! });
  const members = [bob, ...others.map(direct)];
  for (let r = 0; r < 5; r++) {
    const { room_id } = await bob.createRoom({ name: `team ${r + 1}`, invite: [alice.getUserId()!, ...others.slice(0, 3).map((o) => o.userId)] });
    await aliceDirect.joinRoom(room_id);
    for (const m of members.slice(1, 4)) await m.joinRoom(room_id);
    for (let i = 0; i < 20; i++) await members[i % 4]!.sendTextMessage(room_id, `status ${i + 1} from team ${r + 1}: all well, moving to waypoint ${i + 2}`);
  }
  await measureWindow('initial_sync', () => alice.http.authedRequest(Method.Get, '/sync', { timeout: '0' }), () => {
    const p = pushStatus();
    return p.registered && p.notifications >= 1 && p.initialSync !== null && p.initialSync.roomsDone >= p.initialSync.roomsTotal;
  }, 3_000);

  // sync_one_message: one new text message from another user, in a room the field kit knows.
  const before = pushStatus().storePosition;
  await measureWindow('sync_one_message', () => bob.sendTextMessage(roomId, 'Hello World'), () => pushStatus().storePosition > before);

  // idle_hour: a quiet link with a client long-polling the host; measured over IDLE_MS, scaled to an hour.
  const IDLE_MS = 65_000;
  await measureWindow('idle_hour', () => new Promise((r) => setTimeout(r, IDLE_MS)), () => true, 100);
  const idle = rows[rows.length - 1]!;
  const scale = 3_600_000 / IDLE_MS;
  for (const k of ['requestCompactBytes', 'requestOnAirBytes', 'responseCompactBytes', 'responseOnAirBytes', 'framingOverheadBytes', 'frames', 'airtimeMsSF7', 'airtimeMsSF9', 'airtimeMsSF12'] as const) idle[k] = Math.round(idle[k] * scale);

  // Restart the field kit with its stored session: no handshake at all.
  await host.close();
  host = await startTheHost();
  hostUrl = `http://127.0.0.1:${host.port}`;
  alice = createClient({ baseUrl: hostUrl, accessToken: alice.getAccessToken()!, userId: alice.getUserId()!, deviceId: alice.getDeviceId()! });
  await measureHandshake('resume_after_restart', () => alice.sendTextMessage(roomId, 'back'));

  // Restart it without its session, as after a session reset (the gateway's key pinned and the
  // resumption secret of the last session kept): one IKpsk1 exchange, 0-RTT.
  await host.close();
  const { rmSync, readFileSync, writeFileSync: writeFile } = await import('node:fs');
  const { join } = await import('node:path');
  const sessionFile = join(state.hostDir, 'session-host.json');
  writeFile(sessionFile, JSON.stringify({ ...JSON.parse(readFileSync(sessionFile, 'utf8')) as object, session: null }), { mode: 0o600 });
  rmSync(join(state.hostDir, 'coap-host.json'), { force: true });
  host = await startTheHost();
  hostUrl = `http://127.0.0.1:${host.port}`;
  await measureHandshake('handshake_ik', () => fetch(`${hostUrl}/_matrix/client/versions`).then((r) => r.text()));

  if (outFile) writeFileSync(outFile, `${JSON.stringify({ operations: rows }, null, 2)}\n`);
  if (asJson) {
    process.stdout.write(`${JSON.stringify({ operations: rows })}\n`);
  } else {
    const cols: [keyof OperationRow, string][] = [
      ['name', 'operation'], ['requestCompactBytes', 'req compact'], ['requestOnAirBytes', 'req on air'],
      ['responseCompactBytes', 'resp compact'], ['responseOnAirBytes', 'resp on air'], ['framingOverheadBytes', 'SLIP+CRC'],
      ['frames', 'frames'], ['airtimeMsSF7', 'ms SF7'], ['airtimeMsSF9', 'ms SF9'], ['airtimeMsSF12', 'ms SF12'],
      ['httpsJsonBytes', 'HTTPS+JSON'], ['msc3079Bytes', 'MSC3079'],
    ];
    const table = rows.map((r) => cols.map(([k]) => String(r[k])));
    const widths = cols.map(([, h], i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    process.stdout.write(`${line(cols.map(([, h]) => h))}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
    for (const t of table) process.stdout.write(`${line(t)}\n`);
    const dialects = Object.keys(DIALECT_ON_AIR);
    const dtable = rows.map((r) => [r.name, ...dialects.map((d) => String(r.onAirBytesByDialect?.[d] ?? ''))]);
    const dw = ['operation', ...dialects].map((h, i) => Math.max(h.length, ...dtable.map((t) => t[i]!.length)));
    const dline = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(dw[i]!) : c.padStart(dw[i]!))).join('  ');
    process.stdout.write(`\non-air bytes per modem dialect (radio payload + the dialect's own header on air):\n${dline(['operation', ...dialects])}\n${dw.map((w) => '-'.repeat(w)).join('  ')}\n`);
    for (const t of dtable) process.stdout.write(`${dline(t)}\n`);
    process.stdout.write('\nbytes per operation; real matrix-js-sdk requests, real Synapse responses; compact CoAP + Noise on a PTY link.\n');
  }
} finally {
  await host?.close();
  await gateway?.close();
  await pair?.close();
  await hs?.stop();
  state.cleanup();
}
process.exit(0);
