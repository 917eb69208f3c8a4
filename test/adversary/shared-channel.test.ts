/**
 * A shared channel under attack (SECURITY.md, attack 9), on a fake clock: one gateway
 * (openPeerTable, `--network shared`), two genuine field kits (openRadioStack with their derived
 * link addresses) and a stranger, each an emulated Trickle-firmware board driven by the real
 * NativeModem over an in-memory link, all on one simulated RF medium (airtime, collisions, half
 * duplex, CAD) on EU868 869.525 MHz, the 10 % sub-band, SF7; security on (encrypt), the gateway
 * authorizing the two kits' keys. The gateway answers every CoAP request with its payload. The
 * stranger is a raw board: it transmits whatever bytes the test gives it, with no ledger and no
 * listening.
 *
 * 1. Baseline: both kits are answered; the gateway lists both, established.
 * 2. The stranger sprays every address byte (0..255: both direction bits, 127 reserved) with
 *    forged XX1, IK1, XX3/FB2, transport frames, forged REFUSED/UNKNOWN_SESSION, garbage and
 *    1-byte frames, for two virtual hours at the highest rate a transmitter may legally use here
 *    (10 %; much more is jamming, which nothing but the law stops: SECURITY.md "Not protected").
 *    At most 127 stacks (never one for 127); the gateway's replies to unauthenticated frames stay
 *    inside the reply budget at every moment (burst + elapsed / refill) and its transmissions
 *    inside the duty cycle; the kits are answered throughout, with no new handshake.
 * 3. Frames on kit A's address (forged transport frames, XX1, XX3): A's session survives, its
 *    next request needs no handshake, and nothing reaches the CoAP handler. Three forged frames
 *    right after A's exchange made the gateway itself answer UNKNOWN_SESSION, which A took for
 *    the answer to its last frame and dropped its session (fixed in secure/secure-link.ts).
 * 4. Kit A floods 2000 requests at once: kit B's request is answered within seconds. A and the
 *    gateway used to ping-pong in answer slots and kept B off the channel until B's request gave
 *    up (fixed in scheduler/channel-access.ts). With the gateway's duty cycle spent, A's answers
 *    fill the gateway's whole transmit queue (1024): B's answer used to be refused until the
 *    flood drained (fixed in scheduler/tx-queue.ts: longest queue drop).
 * 5. A stranger's frames on addresses never used leave nothing that makes them known kits at
 *    the next start (cli/security.ts sharedKitStores); after a restart the two kits resume.
 *
 * What each run measured is printed once at the end (the figures of SECURITY.md, row 9).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../helpers/fake-clock.ts';
import { mulberry32 } from '../helpers/prng.ts';
import { checkWindows } from '../sim/window-checker.ts';
import { createMemoryLinkPair } from '../../src/link/memory.ts';
import { silentLogger } from '../../src/log.ts';
import { RfMedium, type RfEvent } from '../../src/modem/emulator/rf-medium.ts';
import { EmulatedModem } from '../../src/modem/emulator/emulated-modem.ts';
import { NativeModem } from '../../src/modem/native/native-modem.ts';
import { loraAirtimeMs } from '../../src/scheduler/airtime.ts';
import { resolveChannel } from '../../src/scheduler/regions.ts';
import { unpackFrame } from '../../src/scheduler/packing.ts';
import { openRadioStack, type RadioStack } from '../../src/net/radio-stack.ts';
import { openPeerTable, type PeerTable, type PeerTableOptions } from '../../src/net/peer-table.ts';
import { deriveKitAddress, formatAddress, MAX_KIT_ADDRESS, RESERVED_ADDRESS } from '../../src/net/link-address.ts';
import { sharedKitStores } from '../../src/cli/security.ts';
import { X25519, type KeyPair } from '../../src/secure/dh.ts';
import { FrameKind } from '../../src/secure/secure-link.ts';
import { Method, Response } from '../../src/coap/numbers.ts';
import { equalBytes } from '../../src/util/bytes.ts';

const FREQ_HZ = 869_525_000;
const SF = 7;
const HOUR = 3_600_000;
const EU10 = resolveChannel('eu868', FREQ_HZ, 125_000).rules;
const BOARD_RADIO = { frequencyHz: FREQ_HZ, bandwidthHz: 125_000, sf: SF, codingRate: 5, txPowerDbm: 14 };
const STACK = {
  baudRate: 115_200, maxFrameLen: 255, maxBodyBytes: 1 << 16,
  radio: { region: 'eu868', freqHz: FREQ_HZ, bandwidthHz: 125_000, sf: SF, codingRate: 5 },
} as const;
/** The gateway grows its reply budget's burst by two per kit it has authenticated (net/peer-table.ts, docs/PROTOCOL.md). */
const BURST_PER_KNOWN_KIT = 2;
/** What a gateway sends in answer to frames that prove nothing: XX2, FB1, REFUSED, UNKNOWN_SESSION. */
const UNAUTHENTICATED_REPLIES: ReadonlySet<number> = new Set([FrameKind.XX2, FrameKind.FB1, FrameKind.REFUSED, FrameKind.UNKNOWN_SESSION]);
const T0 = 1_700_000_000_000;

const air = (len: number): number => loraAirtimeMs({ payloadBytes: len, sf: SF, bandwidthHz: 125_000, codingRate: 5 });
const flush = async (): Promise<void> => { for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r)); };
const seededBytes = (seed: number) => {
  const rnd = mulberry32(seed);
  return (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
};

/** The messages of a frame heard on air, after its address byte ([] for what no station could unpack). */
function messagesOf(frame: Uint8Array): Uint8Array[] {
  try { return unpackFrame(frame.subarray(1)); } catch { return []; }
}

interface Tx { id: number; from: string; atMs: number; airtimeMs: number; frame: Uint8Array }

interface Kit {
  name: string;
  address: number;
  keys: KeyPair;
  radio: RadioStack;
  /** Handshake frames (XX1, IK1, XX3, FB2) it transmitted. */
  handshakes: number;
}

interface World {
  clock: FakeClock;
  medium: RfMedium;
  /** Every transmission on the medium, with its bytes. */
  txs: Tx[];
  gateway: PeerTable;
  kits: Kit[];
  /** Addresses whose stack the current gateway made, in order; `madeAtStart` before any frame. */
  made: number[];
  madeAtStart: number[];
  /** Requests that reached the gateway's CoAP handler. */
  handled: { address: number; payload: Uint8Array }[];
  /** Run the simulation until `done()`; throws when `maxVirtualMs` pass first. */
  drive(done: () => boolean, maxVirtualMs: number): Promise<void>;
  runFor(ms: number): Promise<void>;
  /** The stranger's board. */
  stranger: NativeModem;
  /** The stranger transmits `frame`; the simulation runs until it has left the antenna. */
  strangerSends(frame: Uint8Array): Promise<void>;
  restartGateway(): Promise<void>;
  close(): Promise<void>;
}

async function board(medium: RfMedium, clock: FakeClock, name: string, xM: number): Promise<{ emu: EmulatedModem; modem: NativeModem }> {
  const emu = new EmulatedModem(medium, { name, positionM: { xM, yM: 0 } });
  const [hostSide, boardSide] = createMemoryLinkPair(name);
  emu.attach(boardSide);
  return { emu, modem: await NativeModem.start(hostSide, { radio: BOARD_RADIO, clock, pingIntervalMs: 0 }) };
}

async function world(seed: number, opts: { gatewayHistory?: [number, number][]; stores?: Pick<PeerTableOptions, 'kitStores' | 'knownAddresses'> } = {}): Promise<World> {
  const clock = new FakeClock(T0);
  const medium = new RfMedium({ clock, seed });
  // Every txStart of the medium, with the bytes on air (the event carries only the first byte:
  // they are taken where the medium starts the transmission, which emits the event).
  const txs: Tx[] = [];
  medium.onEvent((e: RfEvent) => {
    if (e.kind === 'txStart') txs.push({ id: e.id, from: e.from, atMs: e.atMs, airtimeMs: e.airtimeMs, frame: new Uint8Array(0) });
  });
  const startTransmission = medium.startTransmission.bind(medium);
  medium.startTransmission = (node, frame, config, airtimeMs) => {
    const tx = startTransmission(node, frame, config, airtimeMs);
    const rec = txs[txs.length - 1];
    if (rec?.id === tx.id) rec.frame = frame.slice();
    return tx;
  };
  const rnd = seededBytes(seed);
  const gwKeys = X25519.generateKeyPair(rnd);
  const kitKeys: KeyPair[] = [];
  while (kitKeys.length < 2) {
    const k = X25519.generateKeyPair(rnd);
    if (kitKeys.every((o) => deriveKitAddress(o.publicKey) !== deriveKitAddress(k.publicKey))) kitKeys.push(k);
  }
  const names = ['kit-a', 'kit-b'];
  const handled: World['handled'] = [];
  let made: number[] = [];
  const gw = await board(medium, clock, 'gateway', 0);
  const { modem: stranger } = await board(medium, clock, 'stranger', 800);
  let restarts = 0;
  const startGateway = (modem: NativeModem): Promise<PeerTable> => openPeerTable({
    ...STACK, link: modem.currentLink, createModem: () => modem, logger: silentLogger(), clock, randomBytes: seededBytes(seed + 1 + 100 * restarts),
    ...(opts.gatewayHistory ? { airtimeStore: { load: () => ({ version: 1 as const, subBandId: EU10.subBandId, entries: opts.gatewayHistory! }), save: () => {} } } : {}),
    security: {
      role: 'responder', staticKeyPair: gwKeys, mode: 'encrypt',
      isAuthorized: (rs) => { const i = kitKeys.findIndex((k) => equalBytes(k.publicKey, rs)); return i < 0 ? undefined : names[i]; },
    },
    kitStores: opts.stores?.kitStores ?? (() => ({})),
    ...(opts.stores?.knownAddresses ? { knownAddresses: opts.stores.knownAddresses } : {}),
    onKit: (address, radio) => {
      made.push(address);
      radio.onRequest(async (req) => { handled.push({ address, payload: req.payload.slice() }); return { code: Response.CONTENT, payload: req.payload }; });
    },
  });
  const w: World = {
    clock, medium, txs, gateway: await startGateway(gw.modem), kits: [], handled, made, madeAtStart: [], stranger,
    async drive(done, maxVirtualMs) {
      let reached = false;
      const sentinel = clock.setTimer(maxVirtualMs, () => { reached = true; });
      try {
        for (;;) {
          await flush();
          if (done()) return;
          if (reached) throw new Error(`not done within ${maxVirtualMs} virtual ms`);
          clock.step();
        }
      } finally { sentinel.cancel(); }
    },
    async runFor(ms) {
      const until = clock.now() + ms;
      await w.drive(() => clock.now() >= until, ms + 1);
    },
    async strangerSends(frame) {
      let done = false;
      w.stranger.send(frame).then(() => { done = true; }, () => { done = true; });
      await w.drive(() => done, 60_000);
    },
    async restartGateway() {
      await w.gateway.close();
      restarts++;
      const [hostSide, boardSide] = createMemoryLinkPair(`gateway-${restarts}`);
      gw.emu.attach(boardSide, { reboot: true });
      const modem = await NativeModem.start(hostSide, { radio: BOARD_RADIO, clock, pingIntervalMs: 0 });
      made = [];
      w.made = made;
      w.gateway = await startGateway(modem);
      w.madeAtStart = [...made];
    },
    async close() {
      for (const k of w.kits) await k.radio.close();
      await w.gateway.close();
      await w.stranger.close();
    },
  };
  w.madeAtStart = [...made];
  for (let i = 0; i < 2; i++) {
    const { modem } = await board(medium, clock, names[i]!, 400 + 300 * i);
    const address = deriveKitAddress(kitKeys[i]!.publicKey);
    const radio = await openRadioStack({
      ...STACK, link: modem.currentLink, createModem: () => modem, logger: silentLogger(), clock, randomBytes: seededBytes(seed + 10 + i), linkAddress: address,
      security: { role: 'initiator', staticKeyPair: kitKeys[i]!, remoteStaticPinned: gwKeys.publicKey, mode: 'encrypt' },
    });
    const kit: Kit = { name: names[i]!, address, keys: kitKeys[i]!, radio, handshakes: 0 };
    radio.onControlFrame((direction) => { if (direction === 'tx') kit.handshakes++; });
    w.kits.push(kit);
  }
  return w;
}

/** Kit `i` asks; resolves with whether it was answered with its own payload, and when. */
async function ask(w: World, i: number, payload: Uint8Array, maxVirtualMs = 600_000): Promise<{ ok: boolean; atMs: number; error?: string }> {
  let out: { ok: boolean; atMs: number; error?: string } | undefined;
  w.kits[i]!.radio.request({ code: Method.POST, options: [], payload }).then(
    (r) => { out = { ok: r.code === Response.CONTENT && equalBytes(r.payload, payload), atMs: w.clock.now() }; },
    (e: unknown) => { out = { ok: false, atMs: w.clock.now(), error: (e as { code?: string }).code ?? String(e) }; },
  );
  await w.drive(() => out !== undefined, maxVirtualMs);
  return out!;
}

const kitRow = (w: World, address: number): Record<string, unknown> =>
  w.gateway.kitsStatus(() => ({})).find((k) => k['address'] === formatAddress(address))!;
const kitResets = (k: Kit): number => (k.radio.status() as { sessionResets: number }).sessionResets;

/** Measured here, printed once at the end (SECURITY.md row 9 quotes them). */
const measured: Record<string, unknown> = {};

describe('a shared channel under attack (emulated boards on one medium, fake clock)', () => {
  const closers: (() => Promise<void> | void)[] = [];
  afterEach(async () => { for (const c of closers.splice(0).reverse()) await c(); });

  it('baseline: both kits are answered, and the gateway lists both as established kits', async () => {
    const w = await world(1);
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1, 2, 3))).toMatchObject({ ok: true });
    const rows = w.gateway.kitsStatus(() => ({}));
    expect(rows.map((r) => r['address']).sort()).toEqual(w.kits.map((k) => formatAddress(k.address)).sort());
    for (const k of w.kits) {
      expect(kitRow(w, k.address)).toMatchObject({ kit: { name: k.name }, security: { established: true } });
    }
    expect(w.handled.map((h) => h.address).sort()).toEqual(w.kits.map((k) => k.address).sort());
  });

  it('a stranger spraying every address for two virtual hours at 10 %: ≤ 127 stacks, replies within the budget, the law kept, the kits served without a new handshake', async () => {
    const w = await world(Number(process.env['SPRAY_SEED'] ?? 2));
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 0))).toMatchObject({ ok: true });
    const resetsBefore = w.kits.map((k) => [kitResets(k), kitRow(w, k.address)['sessionResets']]);
    const handshakesBefore = w.kits.map((k) => k.handshakes);
    const start = w.clock.now();
    const txsBefore = w.txs.length;

    // The stranger: every (address byte, kind) in turn, as fast as a legal transmitter may (10 %).
    const rnd = seededBytes(99);
    const r = mulberry32(7);
    const kinds = ['xx1', 'ik1', 'final', 'transport', 'control', 'garbage', 'one'] as const;
    // Not a forged REFUSED / UNKNOWN_SESSION at a kit (a downlink on its address): together
    // with the stranger's own collisions that forces a re-handshake now and then (jamming plus
    // a hint at the right moment: SECURITY.md "Not protected"; this spray, with them, forced one
    // in two hours). Everything else, on every address byte.
    const atKit = (a: number): boolean => w.kits.some((k) => a === (0x80 | k.address));
    const frameFor = (n: number): Uint8Array => {
      const a = n % 256;
      const kind = kinds[Math.floor(n / 256) % kinds.length]!;
      switch (kind === 'control' && atKit(a) ? 'garbage' : kind) {
        case 'xx1': return Uint8Array.of(a, FrameKind.XX1, ...rnd(32));
        case 'ik1': return Uint8Array.of(a, FrameKind.IK1, ...rnd(96 + Math.floor(r() * 40)));
        case 'final': return Uint8Array.of(a, r() < 0.5 ? FrameKind.XX3 : FrameKind.FB2, ...rnd(64 + Math.floor(r() * 20)));
        case 'transport': return Uint8Array.of(a, Math.floor(r() * 0x80), ...rnd(17 + Math.floor(r() * 40)));
        case 'control': return Uint8Array.of(a, r() < 0.5 ? FrameKind.REFUSED : FrameKind.UNKNOWN_SESSION);
        case 'garbage': return Uint8Array.of(a, ...rnd(1 + Math.floor(r() * 80)));
        case 'one': return Uint8Array.of(a);
      }
    };
    const DURATION = 2 * HOUR;
    let sent = 0;
    let stop = false;
    const next = (): void => {
      if (stop) return;
      const f = frameFor(sent++);
      const again = (): void => { w.clock.setTimer(9 * air(f.length), next); };
      w.stranger.send(f).then(again, again); // as it is, without listening first
    };
    // Meanwhile each kit asks once a minute.
    const latencies: number[] = [];
    let asked = 0;
    let failed = 0;
    const tick = (i: number): void => {
      if (w.clock.now() - start >= DURATION) return;
      const at = w.clock.now();
      const payload = Uint8Array.of(i, asked >> 8, asked & 0xff);
      asked++;
      w.kits[i]!.radio.request({ code: Method.POST, options: [], payload }).then(
        (res) => { if (res.code === Response.CONTENT && equalBytes(res.payload, payload)) latencies.push(w.clock.now() - at); else failed++; },
        (e: unknown) => { failed++; process.stderr.write(`[spray] kit ${i}'s request at +${at - start} ms: ${(e as Error).message}\n`); },
      );
      w.clock.setTimer(60_000, () => tick(i));
    };
    tick(0);
    w.clock.setTimer(30_000, () => tick(1)); // half a minute apart, as two kits rarely ask at the same instant
    next();
    await w.drive(() => w.clock.now() - start >= DURATION, DURATION + 1);
    stop = true;
    await w.drive(() => latencies.length + failed === asked, 600_000);
    const end = w.clock.now();
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 0xee))).toMatchObject({ ok: true });

    // Stacks: one per address heard, never more than 127, never the reserved 127.
    const made = new Set(w.made);
    expect(made.size).toBe(w.made.length);
    expect(made.size).toBeLessThanOrEqual(MAX_KIT_ADDRESS + 1);
    expect(made.has(RESERVED_ADDRESS)).toBe(false);
    expect(w.gateway.kit(RESERVED_ADDRESS)).toBeUndefined();
    expect(made.size).toBe(MAX_KIT_ADDRESS + 1); // every kit address was sprayed (the bound is reached, not just respected)
    const strangerTxs = w.txs.slice(txsBefore).filter((t) => t.from === 'stranger');
    expect(strangerTxs.some((t) => t.frame[0] === RESERVED_ADDRESS)).toBe(true);

    // Replies to unauthenticated frames: inside the budget at every moment.
    const { burst: baseBurst, refillMs } = w.gateway.station.unauthenticatedReplies;
    const burst = baseBurst + BURST_PER_KNOWN_KIT * w.kits.length;
    const gatewayTxs = w.txs.filter((t) => t.from === 'gateway');
    const replies: number[] = [];
    for (const t of gatewayTxs) if (t.atMs >= start) for (const m of messagesOf(t.frame)) if (UNAUTHENTICATED_REPLIES.has(m[0]!)) replies.push(t.atMs);
    replies.forEach((atMs, n) => { expect(n + 1, `reply ${n + 1} at +${atMs - start} ms`).toBeLessThanOrEqual(burst + Math.ceil((atMs - start) / refillMs)); });
    const bound = burst + Math.ceil((w.clock.now() - start) / refillMs);
    expect(replies.length).toBeLessThanOrEqual(bound);
    expect(replies.length).toBeGreaterThan(burst); // the stranger did empty the bucket: its refill was what bound it
    // Airtime the gateway spent on addresses that are no kit's: those replies and nothing else.
    const kitAddresses = new Set(w.kits.map((k) => k.address));
    const strangersAirtime = gatewayTxs.filter((t) => t.atMs >= start && !kitAddresses.has(t.frame[0]! & 0x7f)).reduce((s, t) => s + t.airtimeMs, 0);
    expect(strangersAirtime).toBeLessThanOrEqual(bound * air(1 + 97));
    // The law: the gateway's transmissions within 10 % in every window of an hour.
    expect(checkWindows(gatewayTxs.map((t) => ({ startMs: t.atMs, airtimeMs: t.airtimeMs })), { windowMs: HOUR, budgetMs: EU10.dutyCycle! * HOUR }, 1).violations).toBe(0);

    // The kits: every request answered but a rare one CoAP gives up on, no session reset, no new
    // handshake. The stranger transmits blind (no listening), a 26 ms frame every 259 ms, so each
    // 62 ms frame of ours overlaps one with probability about 1/3: now and then all five
    // transmissions of a request, or their answers, meet one (seeds 2, 5, 7, 9, 11, 13: 1, 1, 2,
    // 0, 0, 1 of 240; before the channel-access fix of 2026-12-05 0, 1, 2, 1, 0, 0). No medium
    // access prevents that; the bound says it stays rare.
    expect(failed).toBeLessThanOrEqual(Math.ceil(asked / 100));
    expect(latencies.length).toBe(asked - failed);
    expect(Math.max(...latencies)).toBeLessThan(60_000);
    expect(w.kits.map((k) => [kitResets(k), kitRow(w, k.address)['sessionResets']])).toEqual(resetsBefore);
    expect(w.kits.map((k) => k.handshakes)).toEqual(handshakesBefore);
    const sorted = [...latencies].sort((a, b) => a - b);
    measured['spray'] = {
      virtualHours: (end - start) / HOUR, strangerFrames: strangerTxs.length, stacks: made.size,
      replies: replies.length, replyBound: bound, burst, refillMs, strangersAirtimeS: +(strangersAirtime / 1000).toFixed(2),
      kitRequests: asked, kitRequestsGivenUp: failed, latencyMsMedian: Math.round(sorted[sorted.length >> 1]!), latencyMsMax: Math.round(sorted.at(-1)!),
      addressDrops: w.gateway.station.status()['addressDrops'],
    };
  }, 60_000);

  it('frames on kit A\'s address (forged transport frames, XX1, XX3) neither end A\'s session nor reach the CoAP handler', async () => {
    const w = await world(4);
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1))).toMatchObject({ ok: true });
    const A = w.kits[0]!;
    const rnd = seededBytes(5);
    const resets = [kitResets(A), kitRow(w, A.address)['sessionResets']];
    const handshakes = A.handshakes;
    const from = w.txs.length;
    const decryptDrops = (): number => ((kitRow(w, A.address)['dropped'] as { security: Record<string, number> }).security['ERR_NOISE_DECRYPT'] ?? 0);
    let forged = 0;
    const forge = async (): Promise<void> => {
      const frames = [
        ...[0, 1, 2].map((i) => Uint8Array.of(A.address, 0x40 + i, ...rnd(30))), // transport frames
        Uint8Array.of(A.address, FrameKind.XX1, ...rnd(32)), // leaves a handshake pending...
        Uint8Array.of(A.address, 0x50, ...rnd(30)), // ...after which one failure used to be enough
        Uint8Array.of(A.address, FrameKind.XX3, ...rnd(70)),
      ];
      for (const f of frames) { await w.strangerSends(f); forged++; }
    };

    // Right after A's request was answered: the gateway once answered the three with
    // UNKNOWN_SESSION, and A took it for the answer to its last frame.
    expect(await ask(w, 0, Uint8Array.of(0, 2))).toMatchObject({ ok: true });
    await forge();
    await w.runFor(60_000);
    // Right after A's answer to a request of the gateway's (a frame nobody answers).
    A.radio.onRequest(async (req) => ({ code: Response.CONTENT, payload: req.payload }));
    let pushed = false;
    w.gateway.kit(A.address)!.request({ code: Method.POST, options: [], payload: Uint8Array.of(7) }).then(() => { pushed = true; }, () => {});
    await w.drive(() => pushed, 60_000);
    await forge();
    await w.runFor(60_000);

    expect(await ask(w, 0, Uint8Array.of(0, 3))).toMatchObject({ ok: true });
    expect(decryptDrops()).toBe(8); // the forged transport frames arrived, and were dropped
    expect([kitResets(A), kitRow(w, A.address)['sessionResets']]).toEqual(resets);
    expect(A.handshakes).toBe(handshakes); // no new handshake
    const toA = w.txs.slice(from).filter((t) => t.from === 'gateway' && t.frame[0] === (0x80 | A.address));
    const unknownSessions = toA.flatMap((t) => messagesOf(t.frame)).filter((m) => m[0] === FrameKind.UNKNOWN_SESSION).length;
    expect(unknownSessions).toBe(0);
    // The handler saw A's three requests and nothing else.
    expect(w.handled.filter((h) => h.address === A.address).map((h) => [...h.payload])).toEqual([[0, 1], [0, 2], [0, 3]]);
    measured['spoof'] = { forgedFrames: forged, decryptDrops: decryptDrops(), unknownSessionsToA: unknownSessions, kitSessionResets: kitResets(A) - (resets[0] as number) };
  }, 30_000);

  it('kit A floods 2000 requests at once: kit B\'s request is answered within seconds', async () => {
    const w = await world(3);
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1))).toMatchObject({ ok: true });
    let settled = 0;
    for (let n = 0; n < 2000; n++) {
      w.kits[0]!.radio.request({ code: Method.POST, options: [], payload: Uint8Array.of(0, n >> 8, n & 0xff, 1, 2, 3, 4, 5) }).then(() => { settled++; }, () => { settled++; });
    }
    await w.runFor(5_000); // the flood is on the air
    const askedAt = w.clock.now();
    const b = await ask(w, 1, Uint8Array.of(1, 2), 300_000);
    expect(b.ok).toBe(true);
    expect(b.atMs - askedAt).toBeLessThan(20_000);
    expect(settled).toBeLessThan(2000); // B was answered during the flood, not after it
    measured['flood'] = { bAnsweredAfterMs: Math.round(b.atMs - askedAt), aRequestsSettledBy: settled };
  }, 30_000);

  it('…while the gateway\'s duty cycle is spent: A\'s answers fill its transmit queue, and B\'s answer still gets in', async () => {
    // The hour before: 0.9 s on air every 9 s, the whole 360 s budget; it comes back as slowly.
    const history: [number, number][] = [];
    for (let t = T0 - HOUR + 9_000; t <= T0; t += 9_000) history.push([t - 900, 900]);
    const w = await world(3, { gatewayHistory: history });
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1))).toMatchObject({ ok: true });
    const start = w.clock.now();
    for (let n = 0; n < 2000; n++) {
      w.kits[0]!.radio.request({ code: Method.POST, options: [], payload: Uint8Array.of(0, n >> 8, n & 0xff, 1, 2, 3, 4, 5) }).catch(() => {});
    }
    const queue = w.gateway.station.txQueue!;
    const queued = (): number => queue.status().peers.reduce((s, p) => s + p.queuedMessages, 0);
    await w.drive(() => queued() >= 1024, 600_000); // A's answers alone fill the whole queue
    const fullAt = w.clock.now();
    const b = await ask(w, 1, Uint8Array.of(1, 2), 600_000);
    expect(b.ok).toBe(true);
    expect(b.atMs - fullAt).toBeLessThan(20_000);
    const peers = queue.status().peers;
    const rowOf = (k: Kit) => peers.find((p) => p.peer === String(k.address))!;
    expect(rowOf(w.kits[1]!).queueFullDrops).toBe(0);
    expect(rowOf(w.kits[0]!).queueFullDrops).toBeGreaterThan(0); // the queue really was full, for A
    // Still the law, counting the hour before.
    const gatewayTxs = w.txs.filter((t) => t.from === 'gateway');
    const all = [...history.map(([startMs, airtimeMs]) => ({ startMs, airtimeMs })), ...gatewayTxs.map((t) => ({ startMs: t.atMs, airtimeMs: t.airtimeMs }))];
    expect(checkWindows(all, { windowMs: HOUR, budgetMs: EU10.dutyCycle! * HOUR }, 1).violations).toBe(0);
    measured['flood, duty cycle spent'] = {
      queueFullAfterS: Math.round((fullAt - start) / 1000), bAnsweredAfterMs: Math.round(b.atMs - fullAt),
      pushedOutOrRefused: { a: rowOf(w.kits[0]!).queueFullDrops, b: rowOf(w.kits[1]!).queueFullDrops },
    };
  }, 30_000);

  it('a kit that repeats its request while the gateway\'s duty cycle holds the answer gets one copy of it, not one per repeat', async () => {
    // The hour before spent the whole budget (0.9 s every 9 s: it comes back 0.9 s at a time),
    // and kit B keeps the gateway busy: kit A's answer waits its turn for seconds.
    const history: [number, number][] = [];
    for (let t = T0 - HOUR + 9_000; t <= T0; t += 9_000) history.push([t - 900, 900]);
    const w = await world(5, { gatewayHistory: history });
    closers.push(() => w.close());
    const kit = w.kits[0]!;
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1))).toMatchObject({ ok: true }); // the handshakes, first
    for (let n = 0; n < 300; n++) w.kits[1]!.radio.request({ code: Method.POST, options: [], payload: Uint8Array.of(1, n >> 8, n & 0xff, 1, 2, 3) }).catch(() => {});
    await w.runFor(3_000);
    const before = (kit.radio.status() as { coap: { retransmissions: number } }).coap.retransmissions;
    const askedAt = w.clock.now();
    const txsBefore = w.txs.length;
    const r = await ask(w, 0, Uint8Array.of(0, 9), 600_000);
    expect(r.ok).toBe(true);
    const retransmissions = (kit.radio.status() as { coap: { retransmissions: number } }).coap.retransmissions - before;
    const answers = w.txs.slice(txsBefore).filter((t) => t.from === 'gateway' && (t.frame[0]! & 0x7f) === kit.address).length;
    // The kit did repeat (it cannot know the gateway's hour), and the gateway heard the repeats
    // while its answer waited: each found the answer still queued and added no copy.
    expect(retransmissions).toBeGreaterThanOrEqual(2);
    expect(kitRow(w, kit.address)['coalesced']).toBeGreaterThanOrEqual(1);
    expect(answers).toBeLessThanOrEqual(retransmissions + 1 - (kitRow(w, kit.address)['coalesced'] as number));
    measured['repeats while held'] = { answeredAfterS: Math.round((r.atMs - askedAt) / 1000), kitRetransmissions: retransmissions, gatewayAnswersSent: answers, copiesNotQueued: kitRow(w, kit.address)['coalesced'] };
  }, 30_000);

  it('a stranger\'s frames on addresses never used leave no known kit behind: after a restart only the two kits are made, and they resume without a handshake', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'trickle-shared-'));
    closers.push(() => rmSync(stateDir, { recursive: true, force: true }));
    const shared = sharedKitStores(stateDir, silentLogger());
    const w = await world(6, {
      stores: {
        kitStores: (a) => { const s = shared.kitStores(a); return { ...(s.coapStateStore ? { coapStateStore: s.coapStateStore } : {}), ...(s.secure ? { secure: s.secure } : {}) }; },
        knownAddresses: shared.knownAddresses,
      },
    });
    closers.push(() => w.close());
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 1))).toMatchObject({ ok: true });
    const kitAddresses = w.kits.map((k) => k.address).sort((a, b) => a - b);
    const fresh = Array.from({ length: 127 }, (_, a) => a).filter((a) => !kitAddresses.includes(a)).slice(0, 8);
    const rnd = seededBytes(8);
    for (const a of fresh) {
      await w.strangerSends(Uint8Array.of(a, FrameKind.XX1, ...rnd(32)));
      await w.strangerSends(Uint8Array.of(a, FrameKind.IK1, ...rnd(100)));
      await w.strangerSends(Uint8Array.of(a, 0x33, ...rnd(30)));
      await w.strangerSends(Uint8Array.of(a, ...rnd(12)));
      await w.strangerSends(Uint8Array.of(a));
      await w.runFor(1_000);
    }
    await w.runFor(10_000);
    for (const a of fresh) expect(w.made).toContain(a); // the stranger got its stacks...
    const written = fresh.filter((a) => { try { return readdirSync(join(stateDir, 'kits', a.toString(16).padStart(2, '0'))).length > 0; } catch { return false; } });
    expect(written.length).toBeGreaterThan(0); // ...and answered XX1s were persisted (replay protection)
    expect(shared.knownAddresses().sort((a, b) => a - b)).toEqual(kitAddresses); // but no kit of it

    const handshakes = w.kits.map((k) => k.handshakes);
    await w.restartGateway();
    expect([...w.madeAtStart].sort((a, b) => a - b)).toEqual(kitAddresses);
    for (const i of [0, 1]) expect(await ask(w, i, Uint8Array.of(i, 2))).toMatchObject({ ok: true });
    expect(w.kits.map((k) => k.handshakes)).toEqual(handshakes); // resumed from disk
    measured['restart'] = { strangerAddresses: fresh.length, withAFile: written.length, knownAtRestart: w.madeAtStart.length };
  }, 30_000);
});

describe('measurements', () => {
  it('prints what the attacks measured', () => {
    expect(Object.keys(measured).length).toBeGreaterThan(0);
    process.stdout.write(`shared channel: ${JSON.stringify(measured)}\n`);
  });
});
