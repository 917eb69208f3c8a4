/**
 * `npm run bench:network [-- --json] [-- --out FILE] [-- --scenario NAME] [-- --messages N] [-- --sf 7..12] [-- --seed N] [-- --mac auto|on|off]`:
 * how well the channel is shared (issue 12). Each scenario puts emulated Trickle-firmware boards
 * on one simulated RF medium (src/modem/emulator/rf-medium.ts: airtime, collisions, half duplex,
 * CAD), joins them to the REAL `trickle host` and `trickle gateway` code through PTYs (socat),
 * exactly as the demo does — startHost/startGateway in this process, NativeModem opening a tty —
 * and runs Matrix traffic against a real Synapse (scripts/synapse.ts): every kit account and a
 * user on the homeserver ("far") send each other messages at random (Poisson) moments, with
 * plain fetch: the kit account through its host's local API, far straight to Synapse. Each
 * side's /sync long-poll loop records when each message arrives.
 *
 *   fetch (kit account) ─HTTP─▶ trickle host ─PTY─ board ~~ RfMedium ~~ board ─PTY─ trickle gateway ─HTTP─▶ Synapse ◀─HTTP─ fetch (far)
 *
 * Channel: EU868 sub-band g3, 869.525 MHz, 10 % duty cycle (ETSI EN 300 220-2), BW 125 kHz,
 * CR 4/5, SF9 by default (the apps' default; `--sf` to change), with the duty-cycle ledger on
 * (region eu868, not 'none'). Boards 2 km from the gateway, 14 dBm, no random loss: every frame
 * lost is lost to the channel access (collision or half duplex).
 *
 * Counted on the medium (its events), for the whole scenario from the first frame (handshake,
 * login, room set-up and the messages) until the link has been quiet for 3 s after the last
 * message arrived:
 *   transmissions      every frame any board put on air
 *   lostToCollision    frames lost at their intended receiver (kit ⇄ gateway) because another
 *                      transmission overlapped them
 *   lostToHalfDuplex   frames lost because the intended receiver was itself transmitting
 *   channelEfficiency  useful frames / transmissions, where useful = frames delivered to their
 *                      intended receiver less those the receiver threw away as copies or noise
 *                      (CoAP duplicates and drops, security and container drops, both ends)
 *   airtimeShareMin/Max  the smallest and largest share one kit got of the gateway's airtime
 *                      spent on the kits (its downlinks, by the address byte; 1 and 1 with a
 *                      single kit): the legal budget the gateway shares out fairly
 * and for the messages: delivered (distinct messages that reached the other side), duplicates
 * (extra copies the receiving client saw: a second event for one message, or one event twice),
 * latency from the send request to its arrival in the receiver's /sync (p50, p95, seconds).
 *
 * Scenarios: `p2p` (1 kit, 1 account: the point-to-point link, no link address). `team` (4 kits ×
 * 2 accounts) and `busy` (8 kits) run the gateway with `--network shared`: every frame carries
 * its kit's 1-byte link address (derived from the kit's key; a kit whose derived address is
 * taken gets the next free one with --link-address, as the gateway's warning tells an operator).
 * `busy` starts with half of the gateway's hourly budget already spent (gatewayBudgetUsed): a
 * gateway after a busy hour. Setting up eight kits (handshakes, logins, rooms, first syncs)
 * spends most of the rest, so the messages run with the gateway at its legal limit, sending no
 * faster than the law lets old airtime expire (detail: gatewayBudgetUsedPeak, AtEnd). With 85 %
 * spent before, the law alone held the answers longer than the 300 s the scenario waits (81 of
 * 160 delivered, 2026-12-05): fairness can be measured there, delivery cannot.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startSynapse, type SynapseHandle } from '../scripts/synapse.ts';
import { createLogger } from '../src/log.ts';
import { openSerialLink } from '../src/link/serial.ts';
import { RfMedium, mulberry32, type RfEvent } from '../src/modem/emulator/rf-medium.ts';
import { startEmulatedDevice, type EmulatedDevice } from '../src/modem/emulator/radio-pair.ts';
import { NATIVE_RADIO_DEFAULTS, NativeModem, type NativeRadioSettings } from '../src/modem/native/native-modem.ts';
import { startHost, type Host } from '../src/host/host.ts';
import { startGateway, type Gateway } from '../src/gateway/gateway.ts';
import type { RadioStack, RadioStackOptions } from '../src/net/radio-stack.ts';
import { loadOrCreateIdentity, runKeysCommand } from '../src/cli/keys.ts';
import { buildSecurity, stateStores, sharedKitStores } from '../src/cli/security.ts';
import { deriveKitAddress, MAX_KIT_ADDRESS } from '../src/net/link-address.ts';
import { encodePublicKey } from '../src/secure/fingerprint.ts';
import { resolveChannel } from '../src/scheduler/regions.ts';
import { writeStateFile } from '../src/util/state-file.ts';
import { loraAirtimeMs } from '../src/scheduler/airtime.ts';

// ---------------------------------------------------------------------------------------------
// Scenarios

export interface ScenarioSpec {
  name: string;
  kits: number;
  accountsPerKit: number;
  /** Messages each kit account sends, and far sends into each kit account's room. */
  messagesPerAccount: number;
  /** Mean gap between two sends of one sender (exponential: Poisson arrivals), ms. */
  meanGapMs: number;
  /** Why the scenario cannot run yet; undefined when it can. */
  pending?: string;
  /**
   * The share of its hourly legal budget the gateway has already spent when the scenario starts
   * (as after a busy hour: transmissions spread evenly over the last hour, in its airtime state
   * file), so that the scenario runs at the legal limit: the gateway can only send as fast as old
   * airtime leaves the window, and the kits compete for it.
   */
  gatewayBudgetUsed?: number;
}

export const SCENARIOS: readonly ScenarioSpec[] = [
  { name: 'p2p', kits: 1, accountsPerKit: 1, messagesPerAccount: 20, meanGapMs: 4_000 },
  { name: 'team', kits: 4, accountsPerKit: 2, messagesPerAccount: 10, meanGapMs: 8_000 },
  { name: 'busy', kits: 8, accountsPerKit: 1, messagesPerAccount: 10, meanGapMs: 8_000, gatewayBudgetUsed: 0.5 },
];

/** One row of `--json` (the names are a contract). */
export interface ScenarioResult {
  name: string;
  kits: number;
  accounts: number;
  messages: number;
  delivered: number;
  duplicates: number;
  transmissions: number;
  lostToCollision: number;
  lostToHalfDuplex: number;
  channelEfficiency: number;
  p50LatencyS: number;
  p95LatencyS: number;
  airtimeShareMin: number;
  airtimeShareMax: number;
}

/** What the table shows besides the JSON row. */
interface ScenarioDetail {
  lostOther: number;
  delivered: number;
  wasted: Record<string, number>;
  airtimeS: Record<string, number>;
  gatewayAirtimeToS: Record<string, number>;
  durationS: number;
  /** The gateway's legal budget of the last hour in use when the scenario ended, and at most during it (0..1). */
  gatewayBudgetUsedAtEnd: number | null;
  gatewayBudgetUsedPeak: number | null;
  sendFailures: number;
  channelAccess: Record<string, unknown>[];
}

export interface BenchOptions {
  sf: number;
  seed: number;
  messages?: number;
  mac: 'auto' | 'on' | 'off' | 'timing';
  /** Write every medium event and every CoAP frame record (both ends) here, one JSON line each. */
  trace?: string;
}

const FREQ_HZ = 869_525_000;
const BANDWIDTH_HZ = 125_000;
const CODING_RATE = 5;
const DISTANCE_M = 2_000;
const QUIET_MS = 3_000;
const DELIVERY_DEADLINE_MS = 300_000;
const QUIET_WAIT_MAX_MS = 30_000;

/**
 * Write the gateway's airtime state (src/net/station.ts AirtimeState) as after a busy hour:
 * `used` of the hourly budget, in frames of one 60-byte packet's airtime spread evenly over the
 * last hour, so that the oldest leave the window first and at the legal rate.
 */
function prefillAirtime(gatewayDir: string, used: number, sf: number): void {
  const rules = resolveChannel('eu868', FREQ_HZ, BANDWIDTH_HZ).rules;
  const hourBudgetMs = Math.min(...rules.limits.map((l) => (l.budgetMs / l.windowMs) * 3_600_000));
  const frameMs = loraAirtimeMs({ payloadBytes: 60, sf, bandwidthHz: BANDWIDTH_HZ, codingRate: CODING_RATE });
  const n = Math.floor((used * hourBudgetMs) / frameMs);
  const now = Date.now();
  const entries: [number, number][] = Array.from({ length: n }, (_, i) => [Math.round(now - 3_600_000 + ((i + 1) * 3_600_000) / (n + 1)), frameMs]);
  writeStateFile(join(gatewayDir, 'airtime-gateway.json'), { version: 1, subBandId: rules.subBandId, entries });
}

// ---------------------------------------------------------------------------------------------
// A minimal Matrix client over fetch

interface MxAnswer { status: number; body: Record<string, unknown> }

async function mx(base: string, method: string, path: string, token?: string, body?: unknown, signal?: AbortSignal): Promise<MxAnswer> {
  const r = await fetch(`${base}/_matrix/client/v3${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    ...(signal ? { signal } : {}),
  });
  const text = await r.text();
  let json: Record<string, unknown> = {};
  try { json = text ? JSON.parse(text) as Record<string, unknown> : {}; } catch { json = { raw: text }; }
  return { status: r.status, body: json };
}

async function mxOk(base: string, method: string, path: string, token?: string, body?: unknown): Promise<Record<string, unknown>> {
  const a = await mx(base, method, path, token, body);
  if (a.status !== 200) throw new Error(`${method} ${path} at ${base}: ${a.status} ${JSON.stringify(a.body)}`);
  return a.body;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Send one message as a client would: the same txn id on every retry, waiting as told. */
async function sendMessage(base: string, token: string, roomId: string, txnId: string, text: string): Promise<boolean> {
  for (let attempt = 0; attempt < 8; attempt++) {
    try {
      const a = await mx(base, 'PUT', `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(txnId)}`, token, { msgtype: 'm.text', body: text });
      if (a.status === 200) return true;
      const retry = typeof a.body['retry_after_ms'] === 'number' ? a.body['retry_after_ms'] : 2_000;
      await sleep(Math.min(60_000, retry));
    } catch {
      await sleep(2_000);
    }
  }
  return false;
}

/** A /sync long-poll loop that reports every m.room.message body it sees, with its event id. */
function syncLoop(base: string, token: string, onMessage: (body: string, eventId: string) => void): { stop(): void; firstSync: Promise<void> } {
  const abort = new AbortController();
  let since: string | undefined;
  let resolveFirst!: () => void;
  const firstSync = new Promise<void>((r) => { resolveFirst = r; });
  const run = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      try {
        const q = since ? `?timeout=30000&since=${encodeURIComponent(since)}` : '?timeout=0';
        const a = await mx(base, 'GET', `/sync${q}`, token, undefined, abort.signal);
        if (a.status !== 200) { await sleep(1_000); continue; }
        since = a.body['next_batch'] as string;
        const join = ((a.body['rooms'] as Record<string, unknown> | undefined)?.['join'] ?? {}) as Record<string, { timeline?: { events?: { type: string; event_id: string; content?: { body?: unknown } }[] } }>;
        for (const room of Object.values(join)) {
          for (const ev of room.timeline?.events ?? []) {
            if (ev.type === 'm.room.message' && typeof ev.content?.body === 'string') onMessage(ev.content.body, ev.event_id);
          }
        }
        resolveFirst();
      } catch {
        if (abort.signal.aborted) return;
        await sleep(1_000);
      }
    }
  };
  void run();
  return { stop: () => abort.abort(), firstSync };
}

// ---------------------------------------------------------------------------------------------
// The runner

interface Kit {
  index: number;
  name: string;
  device: EmulatedDevice;
  host: Host;
  url: string;
  accounts: { user: string; userId: string; token: string; roomId: string }[];
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

const round = (x: number, d: number): number => Math.round(x * 10 ** d) / 10 ** d;

/** Frames a radio stack received and threw away (copies, noise, forgeries), by reason, from its status page. */
function wastedAt(radio: RadioStack): Record<string, number> {
  const st = radio.status() as { coap: { duplicates: number }; dropped: { container: number; security: Record<string, number>; coap: Record<string, number> } };
  const out: Record<string, number> = {};
  const add = (k: string, n: number): void => { if (n > 0) out[k] = (out[k] ?? 0) + n; };
  add('coap duplicate', st.coap.duplicates);
  add('container', st.dropped.container);
  for (const [k, n] of Object.entries(st.dropped.security)) add(`security ${k}`, n);
  for (const [k, n] of Object.entries(st.dropped.coap)) add(`coap ${k}`, n);
  return out;
}

const total = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

export async function runScenario(spec: ScenarioSpec, hs: SynapseHandle, opts: BenchOptions): Promise<{ result: ScenarioResult; detail: ScenarioDetail }> {
  if (spec.pending) throw new Error(`scenario ${spec.name}: ${spec.pending}`);
  const started = Date.now();
  const rnd = mulberry32(opts.seed);
  const perAccount = opts.messages ?? spec.messagesPerAccount;
  const logger = createLogger({ level: process.env['TRICKLE_LOG'] ?? 'error' });
  const medium = new RfMedium({ seed: opts.seed, lossRate: 0 });
  const radioSettings: NativeRadioSettings = { ...NATIVE_RADIO_DEFAULTS, frequencyHz: FREQ_HZ, bandwidthHz: BANDWIDTH_HZ, sf: opts.sf, codingRate: CODING_RATE };
  const stackRadio: Pick<RadioStackOptions, 'baudRate' | 'maxFrameLen' | 'radio' | 'maxBodyBytes' | 'channelAccess'> = {
    baudRate: 115_200, maxFrameLen: 255, maxBodyBytes: 1 << 20,
    radio: { region: 'eu868', freqHz: FREQ_HZ, bandwidthHz: BANDWIDTH_HZ, sf: opts.sf, codingRate: CODING_RATE },
    channelAccess: opts.mac,
  };

  // ── the medium's own account of every frame ──
  const gatewayName = 'gateway';
  const kitNames = Array.from({ length: spec.kits }, (_, i) => `kit${i}`);
  const isPair = (a: string, b: string): boolean => (a === gatewayName && kitNames.includes(b)) || (b === gatewayName && kitNames.includes(a));
  const airtimeMs: Record<string, number> = {};
  /** The gateway's airtime per kit it addressed (all of it to the one kit on a point-to-point link). */
  const gatewayAirtimeTo: Record<string, number> = {};
  let transmissions = 0;
  let delivered = 0;
  const lost = { collision: 0, halfDuplex: 0, other: 0 };
  let lastTxAt = Date.now();
  const traceLines: string[] = [];
  const trace = (o: Record<string, unknown>): void => { if (opts.trace) traceLines.push(JSON.stringify({ t: Date.now() - started, ...o })); };
  // On a shared channel a downlink is for one kit (its address byte); every other kit hears it unintended.
  const kitOfAddress = new Map<number, string>();
  const downlinkTo = new Map<number, string>();
  const intendedPair = (e: { id: number; from: string; to: string }): boolean => {
    if (!isPair(e.from, e.to)) return false;
    const to = downlinkTo.get(e.id);
    return to === undefined || to === e.to;
  };
  medium.onEvent((e: RfEvent) => {
    trace({ medium: e });
    if (e.kind === 'txStart') {
      transmissions++; lastTxAt = Date.now(); airtimeMs[e.from] = (airtimeMs[e.from] ?? 0) + e.airtimeMs;
      if (e.from === gatewayName && kitOfAddress.size > 0) downlinkTo.set(e.id, kitOfAddress.get(e.firstByte & 0x7f) ?? '?');
      if (e.from === gatewayName) {
        const to = kitOfAddress.size > 0 ? downlinkTo.get(e.id)! : kitNames[0]!;
        gatewayAirtimeTo[to] = (gatewayAirtimeTo[to] ?? 0) + e.airtimeMs;
      }
    }
    else if (e.kind === 'delivered' && intendedPair(e)) delivered++;
    else if (e.kind === 'lost' && intendedPair(e)) {
      if (e.reason === 'collision') lost.collision++; else if (e.reason === 'halfDuplex') lost.halfDuplex++; else lost.other++;
    }
  });

  const root = mkdtempSync(join(tmpdir(), `trickle-bench-${spec.name}-`));
  const devices: EmulatedDevice[] = [];
  const kits: Kit[] = [];
  let gateway: Gateway | undefined;
  let offSignal = (): void => undefined;
  let peakLedgerUse: number | null = null;
  const loops: { stop(): void }[] = [];
  try {
    const native = async (device: string): Promise<{ link: Awaited<ReturnType<typeof openSerialLink>>; createModem: () => NativeModem }> => {
      const open = () => openSerialLink(device, { baudRate: 115_200 });
      const link = await open();
      const modem = await NativeModem.start(link, { radio: radioSettings, reopenLink: open });
      return { link, createModem: () => modem };
    };
    // Keys as an operator makes them: each end its own identity, the gateway authorizes each kit.
    const gatewayDir = join(root, 'gateway');
    loadOrCreateIdentity(gatewayDir);
    if (spec.gatewayBudgetUsed !== undefined) prefillAirtime(gatewayDir, spec.gatewayBudgetUsed, opts.sf);
    const gwDevice = await startEmulatedDevice(medium, { name: gatewayName, positionM: { xM: 0, yM: 0 }, crystalPpm: -3 });
    devices.push(gwDevice);
    const kitDirs: string[] = [];
    for (let i = 0; i < spec.kits; i++) {
      const dir = join(root, kitNames[i]!);
      kitDirs.push(dir);
      await runKeysCommand(['add', encodePublicKey(loadOrCreateIdentity(dir).keyPair.publicKey), kitNames[i]!, '--state-dir', gatewayDir], () => {});
      const angle = (2 * Math.PI * i) / spec.kits;
      devices.push(await startEmulatedDevice(medium, {
        name: kitNames[i]!, positionM: { xM: DISTANCE_M * Math.cos(angle), yM: DISTANCE_M * Math.sin(angle) }, crystalPpm: 2 + i,
      }));
    }
    const traceStack = (name: string, r: RadioStack): void => { r.onFrameRecord((rec) => trace({ at: name, ...rec })); };
    const shared = spec.kits > 1;
    gateway = await startGateway({
      ...(await native(gwDevice.devicePath)), homeserverUrl: hs.baseUrl, ...stackRadio, homeserverTimeoutMs: 60_000, logger,
      security: buildSecurity('gateway', gatewayDir, 'encrypt', logger)!, ...stateStores(gatewayDir, 'gateway', logger),
      ...(shared ? { shared: sharedKitStores(gatewayDir, logger) } : {}),
    });
    if (gateway.radio) traceStack(gatewayName, gateway.radio);
    // `kill -USR2 <pid>`: every station's status (queues, channel access, sessions) to a file.
    const statusFile = join(tmpdir(), `bench-network-status-${process.pid}.json`);
    const dumpStatus = (): void => {
      writeFileSync(statusFile, JSON.stringify({ gateway: gateway?.status(), kits: kits.map((k) => ({ name: k.name, status: k.host.status() })) }, null, 1));
      process.stderr.write(`bench:network: status of every station written to ${statusFile}\n`);
    };
    process.on('SIGUSR2', dumpStatus);
    offSignal = () => { process.off('SIGUSR2', dumpStatus); };
    const taken = new Set<number>();
    for (let i = 0; i < spec.kits; i++) {
      let linkAddress: number | undefined;
      if (shared) {
        linkAddress = deriveKitAddress(loadOrCreateIdentity(kitDirs[i]!).keyPair.publicKey);
        while (taken.has(linkAddress)) linkAddress = (linkAddress + 1) % (MAX_KIT_ADDRESS + 1);
        taken.add(linkAddress);
        kitOfAddress.set(linkAddress, kitNames[i]!);
      }
      const host = await startHost({
        ...(await native(devices[i + 1]!.devicePath)), listenHost: '127.0.0.1', listenPort: 0, ...stackRadio, requestTimeoutMs: 120_000, logger,
        ...(linkAddress !== undefined ? { linkAddress } : {}),
        security: buildSecurity('host', kitDirs[i]!, 'encrypt', logger)!, ...stateStores(kitDirs[i]!, 'host', logger), pushSync: true,
      });
      kits.push({ index: i, name: kitNames[i]!, device: devices[i + 1]!, host, url: `http://127.0.0.1:${host.port}`, accounts: [] });
      traceStack(kitNames[i]!, host.radio);
    }

    // ── accounts and rooms: each kit account has a room with far ──
    const run = randomBytes(3).toString('hex');
    const far = await hs.registerUser(`far-${run}`, 'far-password');
    for (const kit of kits) {
      for (let j = 0; j < spec.accountsPerKit; j++) {
        const user = `${kit.name}a${j}-${run}`;
        await hs.registerUser(user, 'kit-password');
        const login = await mxOk(kit.url, 'POST', '/login', undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password: 'kit-password' });
        const token = login['access_token'] as string;
        const room = await mxOk(kit.url, 'POST', '/createRoom', token, { name: `${user} and far`, preset: 'private_chat', invite: [far.userId] });
        const roomId = room['room_id'] as string;
        await mxOk(hs.baseUrl, 'POST', `/join/${encodeURIComponent(roomId)}`, far.accessToken, {});
        kit.accounts.push({ user, userId: login['user_id'] as string, token, roomId });
      }
    }

    // ── receivers: every kit account through its host, far on the homeserver ──
    const sentAt = new Map<string, number>();
    const arrivedAt = new Map<string, number>();
    const seenEvents = new Map<string, Set<string>>();
    let duplicates = 0;
    const receive = (receiver: string) => (body: string, eventId: string): void => {
      if (!sentAt.has(body) || !body.endsWith(`→${receiver}`)) return;
      const seen = seenEvents.get(body) ?? new Set<string>();
      if (seen.size > 0) duplicates++; // a second event for one message, or one event twice
      seen.add(eventId);
      seenEvents.set(body, seen);
      if (!arrivedAt.has(body)) { arrivedAt.set(body, Date.now()); trace({ arrived: body }); }
    };
    const firstSyncs: Promise<void>[] = [];
    for (const kit of kits) {
      for (const acc of kit.accounts) {
        const l = syncLoop(kit.url, acc.token, receive(acc.user));
        loops.push(l);
        firstSyncs.push(l.firstSync);
      }
    }
    const farLoop = syncLoop(hs.baseUrl, far.accessToken, receive('far'));
    loops.push(farLoop);
    firstSyncs.push(farLoop.firstSync);
    await Promise.all(firstSyncs);
    // Let the set-up traffic (push registrations, room state) finish before the messages start.
    while (Date.now() - lastTxAt < QUIET_MS) await sleep(200);

    // ── the messages: Poisson arrivals per sender, both ways ──
    let sendFailures = 0;
    const sends: Promise<void>[] = [];
    const schedule = (label: string, base: string, token: string, roomId: string, to: string): void => {
      let t = 0;
      for (let i = 0; i < perAccount; i++) {
        t += -Math.log(1 - rnd()) * spec.meanGapMs;
        const body = `${label} #${i} ${run} →${to}`;
        sends.push(sleep(t).then(async () => {
          sentAt.set(body, Date.now());
          trace({ send: body });
          if (!(await sendMessage(base, token, roomId, `bench-${run}-${label}-${i}`, body))) sendFailures++;
        }));
      }
    };
    for (const kit of kits) {
      for (const acc of kit.accounts) {
        schedule(acc.user, kit.url, acc.token, acc.roomId, 'far');
        schedule(`far-to-${acc.user}`, hs.baseUrl, far.accessToken, acc.roomId, acc.user);
      }
    }
    const messages = kits.reduce((n, k) => n + k.accounts.length, 0) * perAccount * 2;
    const ledgerPeak = setInterval(() => { peakLedgerUse = Math.max(peakLedgerUse ?? 0, gatewayLedgerUse(gateway!) ?? 0); }, 1_000);
    ledgerPeak.unref();
    // Progress for a run of minutes: what has been sent, delivered and put on air so far.
    const progress = setInterval(() => process.stderr.write(`bench:network: ${spec.name}: ${round((Date.now() - started) / 1000, 0)} s, sent ${sentAt.size}/${messages}, delivered ${arrivedAt.size}, ${transmissions} frames on air, gateway at ${Math.round(100 * (gatewayLedgerUse(gateway!) ?? 0))} % of its hourly budget\n`), 30_000);
    progress.unref();
    try {
      await Promise.all(sends);
      const deadline = Date.now() + DELIVERY_DEADLINE_MS;
      while (arrivedAt.size < messages && Date.now() < deadline) await sleep(200);
    } finally { clearInterval(progress); clearInterval(ledgerPeak); }
    // Until the link is quiet, but not for ever: kits whose requests the law still holds go on
    // repeating them.
    const quietBy = Date.now() + QUIET_WAIT_MAX_MS;
    while (Date.now() - lastTxAt < QUIET_MS && Date.now() < quietBy) await sleep(200);

    // ── results ──
    const wasted: Record<string, number> = {};
    for (const r of [...gateway.kits(), ...kits.map((k) => k.host.radio)]) for (const [k, n] of Object.entries(wastedAt(r))) wasted[k] = (wasted[k] ?? 0) + n;
    if (process.env["BENCH_DEBUG"]) for (const r of [...gateway.kits(), ...kits.map((k) => k.host.radio)]) process.stderr.write(`${JSON.stringify(wastedAt(r))} ${JSON.stringify((r.status() as Record<string, unknown>)["coap"])}\n`);
    // Delivered to their intended receiver: a downlink is heard by every kit but is for one.
    const forUs = (st: Record<string, unknown>): number => ((st['radio'] ?? st) as { framesForUs?: number }).framesForUs ?? 0;
    const intended = forUs(gateway.status()) + kits.reduce((n, k) => n + forUs(k.host.radio.status()), 0);
    const useful = Math.max(0, intended - total(wasted));
    const latencies = [...arrivedAt].map(([body, at]) => (at - sentAt.get(body)!) / 1000);
    const kitAirtime = kitNames.map((n) => gatewayAirtimeTo[n] ?? 0);
    const kitTotal = kitAirtime.reduce((a, b) => a + b, 0);
    const shares = kitAirtime.map((a) => (kitTotal > 0 ? a / kitTotal : 0));
    const result: ScenarioResult = {
      name: spec.name,
      kits: spec.kits,
      accounts: spec.kits * spec.accountsPerKit,
      messages,
      delivered: arrivedAt.size,
      duplicates,
      transmissions,
      lostToCollision: lost.collision,
      lostToHalfDuplex: lost.halfDuplex,
      channelEfficiency: round(transmissions > 0 ? useful / transmissions : 0, 3),
      p50LatencyS: round(quantile(latencies, 0.5), 2),
      p95LatencyS: round(quantile(latencies, 0.95), 2),
      airtimeShareMin: round(Math.min(...shares), 3),
      airtimeShareMax: round(Math.max(...shares), 3),
    };
    const access = (r: RadioStack): Record<string, unknown> => ((r.status() as Record<string, unknown>)['channelAccess'] ?? { mac: 'none' }) as Record<string, unknown>;
    const detail: ScenarioDetail = {
      lostOther: lost.other,
      delivered,
      wasted,
      airtimeS: Object.fromEntries(Object.entries(airtimeMs).map(([k, v]) => [k, round(v / 1000, 1)])),
      gatewayAirtimeToS: Object.fromEntries(kitNames.map((k) => [k, round((gatewayAirtimeTo[k] ?? 0) / 1000, 1)])),
      durationS: round((Date.now() - started) / 1000, 0),
      gatewayBudgetUsedAtEnd: gatewayLedgerUse(gateway),
      gatewayBudgetUsedPeak: peakLedgerUse,
      sendFailures,
      channelAccess: [(gateway.status()['radio'] as Record<string, unknown>)['channelAccess'] as Record<string, unknown> ?? { mac: 'none' }, ...kits.map((k) => access(k.host.radio))],
    };
    return { result, detail };
  } finally {
    offSignal();
    if (opts.trace) writeFileSync(opts.trace, `${traceLines.join('\n')}\n`);
    for (const l of loops) l.stop();
    for (const k of kits) await k.host.close().catch(() => undefined);
    await gateway?.close().catch(() => undefined);
    for (const d of devices) await d.close().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
}

/** The share of its hourly legal budget the gateway has used in the last hour (0..1), from its /_trickle/status. */
function gatewayLedgerUse(gateway: Gateway): number | null {
  const sub = ((gateway.status()['radio'] as { dutyCycle?: { subBands?: { airtimeUsedLastHourMs: number; budgetPerHourMs: number }[] } } | undefined)?.dutyCycle?.subBands ?? [])[0];
  return sub && sub.budgetPerHourMs > 0 ? round(sub.airtimeUsedLastHourMs / sub.budgetPerHourMs, 3) : null;
}

// ---------------------------------------------------------------------------------------------
// Output

const COLUMNS: [keyof ScenarioResult, string][] = [
  ['name', 'scenario'], ['kits', 'kits'], ['accounts', 'accounts'], ['messages', 'messages'], ['delivered', 'delivered'],
  ['duplicates', 'dup'], ['transmissions', 'tx'], ['lostToCollision', 'lost coll.'], ['lostToHalfDuplex', 'lost half-dup.'],
  ['channelEfficiency', 'efficiency'], ['p50LatencyS', 'p50 s'], ['p95LatencyS', 'p95 s'], ['airtimeShareMin', 'share min'], ['airtimeShareMax', 'share max'],
];

export function table(rows: ScenarioResult[]): string {
  const body = rows.map((r) => COLUMNS.map(([k]) => String(r[k])));
  const head = COLUMNS.map(([, h]) => h);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      scenario: { type: 'string', multiple: true },
      messages: { type: 'string' },
      sf: { type: 'string', default: '9' },
      seed: { type: 'string', default: '1' },
      mac: { type: 'string', default: 'auto' },
      trace: { type: 'string' },
    },
  });
  const int = (name: string, v: string | undefined, lo: number, hi: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) { process.stderr.write(`bench:network: --${name} must be an integer ${lo}..${hi}, got ${JSON.stringify(v)}\n`); process.exit(2); }
    return n;
  };
  const mac = values.mac as string;
  if (!['auto', 'on', 'off', 'timing'].includes(mac)) { process.stderr.write(`bench:network: --mac must be auto, on, timing or off, got ${JSON.stringify(mac)}\n`); return 2; }
  const messages = int('messages', values.messages, 1, 10_000);
  const opts: BenchOptions = { sf: int('sf', values.sf, 7, 12)!, seed: int('seed', values.seed, 0, 2 ** 31)!, mac: mac as BenchOptions['mac'], ...(values.trace ? { trace: values.trace } : {}), ...(messages !== undefined ? { messages } : {}) };
  const names = values.scenario ?? SCENARIOS.map((s) => s.name);
  const chosen: ScenarioSpec[] = [];
  for (const n of names) {
    const s = SCENARIOS.find((x) => x.name === n);
    if (!s) { process.stderr.write(`bench:network: no scenario ${JSON.stringify(n)}; known: ${SCENARIOS.map((x) => x.name).join(', ')}\n`); return 2; }
    if (s.pending) { process.stderr.write(`bench:network: skipping ${s.name} (${s.kits} kits): ${s.pending}\n`); continue; }
    chosen.push(s);
  }
  for (const m of ['log', 'info', 'debug', 'warn'] as const) console[m] = () => {};
  const hs = await startSynapse();
  const rows: ScenarioResult[] = [];
  const details: ScenarioDetail[] = [];
  try {
    for (const s of chosen) {
      process.stderr.write(`bench:network: ${s.name}: ${s.kits} kit(s) × ${s.accountsPerKit} account(s), ${opts.messages ?? s.messagesPerAccount} messages each way per account, SF${opts.sf}, channel access ${opts.mac} ...\n`);
      const { result, detail } = await runScenario(s, hs, opts);
      rows.push(result);
      details.push(detail);
      // Each scenario's row as soon as it is measured: a long run stopped later keeps it.
      process.stderr.write(`bench:network: ${s.name} done: ${JSON.stringify(result)} ${JSON.stringify({ gatewayBudgetUsedPeak: detail.gatewayBudgetUsedPeak, gatewayBudgetUsedAtEnd: detail.gatewayBudgetUsedAtEnd, durationS: detail.durationS })}\n`);
    }
  } finally {
    await hs.stop();
  }
  const json = `${JSON.stringify({ scenarios: rows })}\n`;
  if (values.out) writeFileSync(values.out, json);
  if (values.json) {
    process.stdout.write(json);
  } else {
    process.stdout.write(`bench:network — EU868 869.525 MHz (10 % sub-band), SF${opts.sf} BW125 CR4/5, emulated native boards ${DISTANCE_M / 1000} km from the gateway, seed ${opts.seed}, channel access ${opts.mac}\n\n${table(rows)}\n\n`);
    for (const [i, d] of details.entries()) {
      process.stdout.write(`${rows[i]!.name}: ${d.durationS} s; delivered on the medium ${d.delivered}, thrown away by receivers ${total(d.wasted)} ${JSON.stringify(d.wasted)}, lost otherwise ${d.lostOther}; send failures ${d.sendFailures}; airtime s ${JSON.stringify(d.airtimeS)}; gateway airtime per kit s ${JSON.stringify(d.gatewayAirtimeToS)}\n`);
      process.stdout.write(`  channel access: ${JSON.stringify(d.channelAccess)}\n`);
    }
  }
  const bad = rows.some((r) => r.delivered !== r.messages || r.duplicates !== 0);
  return bad ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`bench:network failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
