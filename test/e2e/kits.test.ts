/**
 * Issue 12 end to end: one gateway, three field kits, one shared channel. Real parts
 * throughout: a real Synapse, the real `trickle gateway` and three real `trickle host`s, each
 * opening its own tty (PTY) to an emulated Trickle-firmware board; the boards share one
 * simulated RF medium (src/modem/emulator/rf-medium.ts: airtime, collisions, capture, half
 * duplex, CAD) on EU868 869.525 MHz (10 % sub-band, the ledger on), SF7. The gateway runs
 * `--network shared`: every frame carries its kit's link address, the gateway keeps one
 * security session, CoAP endpoint, Matrix session and push registrations per kit.
 *
 * Users: kit 0 has two (k0a, k0b), kits 1 and 2 one each; all four use matrix-js-sdk clients
 * against their own kit and sit in one room. Each sends 10 messages: every client receives every
 * message exactly once, each sender's in the order sent. k0b also has a private room with a
 * secret in it: no other user — not k0a on the same kit, not the users of the other kits —
 * ever sees it (their clients' rooms and events, and a full /sync through their kit).
 *
 * Then a handshake storm: all three kits stop, lose their security sessions (so each must run a
 * whole XX handshake again) and start at the same moment, each user sending at once; the storm
 * settles with every kit connected and every one of those messages delivered exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, unlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, ClientEvent, RoomEvent, type MatrixClient, type MatrixEvent, type Room } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { silentLogger } from '../../src/log.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import { RfMedium } from '../../src/modem/emulator/rf-medium.ts';
import { startEmulatedDevice, type EmulatedDevice } from '../../src/modem/emulator/radio-pair.ts';
import { NATIVE_RADIO_DEFAULTS, NativeModem, type NativeRadioSettings } from '../../src/modem/native/native-modem.ts';
import { startHost, type Host } from '../../src/host/host.ts';
import { startGateway, type Gateway } from '../../src/gateway/gateway.ts';
import { loadOrCreateIdentity, runKeysCommand } from '../../src/cli/keys.ts';
import { buildSecurity, stateStores, sharedKitStores } from '../../src/cli/security.ts';
import { encodePublicKey } from '../../src/secure/fingerprint.ts';
import { deriveKitAddress, MAX_KIT_ADDRESS } from '../../src/net/link-address.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */

const FREQ_HZ = 869_525_000;
const SF = 7;
const KITS = 3;
const PER_USER = 10;
const SECRET = 'the spare radio is in the blue barrel';

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface User {
  name: string;
  kit: number;
  userId: string;
  token: string;
  client?: MatrixClient;
  /** m.room.message events of the shared room as the client saw them: [eventId, body]. */
  seen: [string, string][];
  /** Everything the client ever held, as text, to search for the secret. */
  everything: string[];
}

describe('kits: one gateway, three field kits and four people on one shared channel', () => {
  const logger = silentLogger();
  let hs: SynapseHandle;
  let root: string;
  const medium = new RfMedium({ seed: 12, lossRate: 0 });
  const radioSettings: NativeRadioSettings = { ...NATIVE_RADIO_DEFAULTS, frequencyHz: FREQ_HZ, bandwidthHz: 125_000, sf: SF, codingRate: 5 };
  const stackRadio = {
    baudRate: 115_200, maxFrameLen: 255, maxBodyBytes: 1 << 20,
    radio: { region: 'eu868', freqHz: FREQ_HZ, bandwidthHz: 125_000, sf: SF, codingRate: 5 },
  };
  const devices: EmulatedDevice[] = [];
  let gateway: Gateway;
  const hosts: (Host | undefined)[] = [];
  const ports: number[] = [];
  const kitDirs: string[] = [];
  const addresses: number[] = [];
  const users: User[] = [];
  let roomId = '';
  let secretRoom = '';

  const native = async (device: string): Promise<{ link: Awaited<ReturnType<typeof openSerialLink>>; createModem: () => NativeModem }> => {
    const open = () => openSerialLink(device, { baudRate: 115_200 });
    const link = await open();
    const modem = await NativeModem.start(link, { radio: radioSettings, reopenLink: open });
    return { link, createModem: () => modem };
  };
  const startKit = async (i: number): Promise<Host> => {
    const h = await startHost({
      ...(await native(devices[i + 1]!.devicePath)), listenHost: '127.0.0.1', listenPort: ports[i] ?? 0, ...stackRadio, requestTimeoutMs: 120_000, logger,
      linkAddress: addresses[i]!, pushSync: true,
      security: buildSecurity('host', kitDirs[i]!, 'encrypt', logger)!, ...stateStores(kitDirs[i]!, 'host', logger),
    });
    ports[i] = h.port;
    hosts[i] = h;
    return h;
  };
  const url = (u: User): string => `http://127.0.0.1:${ports[u.kit]}`;
  const viaKit = async (u: User, method: string, p: string, body?: unknown): Promise<any> => {
    const r = await fetch(`${url(u)}/_matrix/client/v3${p}`, {
      method, headers: { authorization: `Bearer ${u.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    if (r.status !== 200) process.stderr.write(`[kits] ${u.name} ${method} ${p} → ${r.status}; gateway kits: ${JSON.stringify((gateway.status() as any).kits?.map((k: any) => ({ a: k.address, sec: k.security, coap: k.coap?.retransmissions })))}\n`);
    expect(r.status, `${u.name} ${method} ${p}: ${text}`).toBe(200);
    return JSON.parse(text);
  };

  beforeAll(async () => {
    hs = await startSynapse();
    root = mkdtempSync(join(tmpdir(), 'trickle-kits-'));
    const gatewayDir = join(root, 'gateway');
    loadOrCreateIdentity(gatewayDir);
    devices.push(await startEmulatedDevice(medium, { name: 'gateway', positionM: { xM: 0, yM: 0 }, crystalPpm: -3 }));
    const taken = new Set<number>();
    for (let i = 0; i < KITS; i++) {
      const dir = join(root, `kit${i}`);
      kitDirs.push(dir);
      const key = loadOrCreateIdentity(dir).keyPair.publicKey;
      await runKeysCommand(['add', encodePublicKey(key), `kit${i}`, '--state-dir', gatewayDir], () => {});
      // As an operator does when the gateway reports two kits on one address: the next free one.
      let a = deriveKitAddress(key);
      while (taken.has(a)) a = (a + 1) % (MAX_KIT_ADDRESS + 1);
      taken.add(a);
      addresses.push(a);
      const angle = (2 * Math.PI * i) / KITS;
      devices.push(await startEmulatedDevice(medium, { name: `kit${i}`, positionM: { xM: 1500 * Math.cos(angle), yM: 1500 * Math.sin(angle) }, crystalPpm: 2 + i }));
    }
    gateway = await startGateway({
      ...(await native(devices[0]!.devicePath)), homeserverUrl: hs.baseUrl, ...stackRadio, homeserverTimeoutMs: 60_000, logger,
      security: buildSecurity('gateway', gatewayDir, 'encrypt', logger)!, ...stateStores(gatewayDir, 'gateway', logger),
      shared: sharedKitStores(gatewayDir, logger),
    });
    // The first contact of all three kits at once (each kit's first request starts its XX handshake).
    await Promise.all(Array.from({ length: KITS }, (_, i) => startKit(i)));
    const plan: [string, number][] = [['k0a', 0], ['k0b', 0], ['k1a', 1], ['k2a', 2]];
    for (const [name] of plan) await hs.registerUser(name, `${name}-pw`);
    await Promise.all(plan.map(async ([name, kit]) => {
      const r = await fetch(`http://127.0.0.1:${ports[kit]}/_matrix/client/v3/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: name }, password: `${name}-pw` }),
      });
      expect(r.status).toBe(200);
      const j = await r.json() as any;
      users.push({ name, kit, userId: j.user_id, token: j.access_token, seen: [], everything: [] });
    }));
    users.sort((a, b) => a.name.localeCompare(b.name));
    const [k0a, k0b] = [users[0]!, users[1]!];
    roomId = (await viaKit(k0a, 'POST', '/createRoom', { name: 'valley', preset: 'private_chat', invite: users.slice(1).map((u) => u.userId) })).room_id;
    await Promise.all(users.slice(1).map((u) => viaKit(u, 'POST', `/join/${encodeURIComponent(roomId)}`, {})));
    secretRoom = (await viaKit(k0b, 'POST', '/createRoom', { name: 'k0b alone', preset: 'private_chat' })).room_id;
    await viaKit(k0b, 'PUT', `/rooms/${encodeURIComponent(secretRoom)}/send/m.room.message/secret1`, { msgtype: 'm.text', body: SECRET });

    // A matrix-js-sdk client per user, against the user's own kit.
    await Promise.all(users.map(async (u) => {
      const client = createClient({ baseUrl: url(u), accessToken: u.token, userId: u.userId });
      u.client = client;
      // What the user's timeline shows, as matrix-js-sdk builds it: a remote event is added; an
      // own message counts from the moment it has its homeserver id (the local echo before that
      // is the client's own guess); an event the sdk takes out again (its remote echo came before
      // the send's answer, without a transaction id) is taken out here too.
      const inRoom = (ev: MatrixEvent, room: Room | undefined): boolean => room?.roomId === roomId && ev.getType() === 'm.room.message';
      client.on(RoomEvent.Timeline, (ev: MatrixEvent, room: Room | undefined, _toStart: boolean | undefined, removed: boolean) => {
        u.everything.push(JSON.stringify(ev.getEffectiveEvent()), room?.roomId ?? '');
        if (!inRoom(ev, room)) return;
        if (removed) {
          const at = u.seen.findIndex(([id]) => id === ev.getId());
          if (at >= 0) u.seen.splice(at, 1);
        } else if (ev.status === null) u.seen.push([ev.getId()!, ev.getContent()['body'] as string]);
      });
      client.on(RoomEvent.LocalEchoUpdated, (ev: MatrixEvent, room: Room, oldId?: string) => {
        if (inRoom(ev, room) && typeof oldId === 'string' && oldId.startsWith('~') && !ev.getId()!.startsWith('~')) u.seen.push([ev.getId()!, ev.getContent()['body'] as string]);
      });
      const prepared = new Promise<void>((resolve) => client.on(ClientEvent.Sync, (state) => { if (state === 'PREPARED') resolve(); }));
      await client.startClient({ initialSyncLimit: 50 });
      await prepared;
    }));
  }, 600_000);

  afterAll(async () => {
    for (const u of users) u.client?.stopClient();
    for (const h of hosts) await h?.close().catch(() => undefined);
    await gateway?.close().catch(() => undefined);
    for (const d of devices) await d.close().catch(() => undefined);
    await hs?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Every client holds exactly `bodies` from the shared room, each once, each sender's in order. */
  const checkDelivery = (bodies: string[]): void => {
    for (const u of users) {
      // The client's own account of its room, after the fact: each message held once.
      const held = u.client!.getRoom(roomId)!.getUnfilteredTimelineSet().getTimelines()
        .flatMap((t) => t.getEvents()).filter((e) => e.getType() === 'm.room.message' && bodies.includes(e.getContent()['body'] as string));
      expect(held.map((e) => e.getContent()['body'] as string).sort(), `${u.name}: the room holds every message once`).toEqual([...bodies].sort());
      const got = u.seen.map(([, b]) => b).filter((b) => bodies.includes(b));
      const ids = u.seen.filter(([, b]) => bodies.includes(b)).map(([id]) => id);
      expect(new Set(ids).size, `${u.name}: no event twice`).toBe(ids.length);
      expect([...got].sort(), `${u.name}: every message exactly once`).toEqual([...bodies].sort());
      for (const s of users) {
        const fromS = got.filter((b) => b.startsWith(`${s.name} `));
        expect(fromS, `${u.name} sees ${s.name}'s messages in the order sent`).toEqual(bodies.filter((b) => b.startsWith(`${s.name} `)));
      }
    }
  };

  it('each of four users on three kits sends 10 messages: every client receives every message exactly once, in each sender\'s order', async () => {
    const bodies = users.flatMap((u) => Array.from({ length: PER_USER }, (_, i) => `${u.name} #${String(i).padStart(2, '0')}`));
    await Promise.all(users.map(async (u) => {
      for (let i = 0; i < PER_USER; i++) await u.client!.sendTextMessage(roomId, `${u.name} #${String(i).padStart(2, '0')}`);
    }));
    await until('every client to hold every message', () => users.every((u) => bodies.every((b) => u.seen.some(([, s]) => s === b))), 300_000);
    await new Promise((r) => setTimeout(r, 3_000)); // a late copy would show up now
    checkDelivery(bodies);

    // The gateway keeps one session per kit, each established, each heard with RSSI and SNR.
    const st = gateway.status() as any;
    expect(st.network).toBe('shared');
    const kits = (st.kits as any[]).filter((k) => k.security?.established);
    expect(kits.map((k) => k.kit.name).sort()).toEqual(['kit0', 'kit1', 'kit2']);
    for (const k of kits) {
      expect(typeof k.lastHeard.rssiDbm).toBe('number');
      expect(typeof k.lastHeard.snrDb).toBe('number');
      expect(k.airtime.airtimeMs).toBeGreaterThan(0);
    }
  }, 400_000);

  it('no user ever receives data of an account they do not own (k0a shares k0b\'s kit)', async () => {
    const k0b = users.find((u) => u.name === 'k0b')!;
    expect(k0b.everything.join('\n')).toContain(SECRET); // the check below can find it
    for (const u of users.filter((x) => x !== k0b)) {
      expect(u.client!.getRoom(secretRoom), `${u.name} holds k0b's private room`).toBeNull();
      expect(u.everything.join('\n'), `${u.name}'s client`).not.toContain(SECRET);
      expect(u.everything.join('\n'), `${u.name}'s client`).not.toContain(secretRoom);
      // A full sync through the user's own kit (its store for this account).
      const r = await fetch(`${url(u)}/_matrix/client/v3/sync?timeout=0`, { headers: { authorization: `Bearer ${u.token}` } });
      const text = await r.text();
      expect(r.status).toBe(200);
      expect(text, `${u.name}'s /sync`).not.toContain(SECRET);
      expect(text, `${u.name}'s /sync`).not.toContain(secretRoom);
    }
  }, 60_000);

  it('a handshake storm (every kit restarts at once, its session gone) settles with every kit connected and nothing lost', async () => {
    const resetsBefore = (gateway.status() as any).kits.map((k: any) => k.sessionResets as number).reduce((a: number, b: number) => a + b, 0);
    await Promise.all(hosts.map((h) => h!.close()));
    for (const dir of kitDirs) {
      // The kit forgets its session and resumption secret: only a whole XX handshake can follow.
      const f = join(dir, 'session-host.json');
      if (existsSync(f)) unlinkSync(f);
    }
    const control: Record<string, number> = {};
    const count = (k: string): void => { control[k] = (control[k] ?? 0) + 1; };
    for (const r of gateway.kits()) r.onControlFrame((dir, _n, kind) => count(`gw:${dir}:${kind.toString(16)}`));
    const lostOnAir: Record<string, number> = {};
    medium.onEvent((e) => { if (e.kind === 'lost') lostOnAir[`${e.from}->${e.to}:${e.reason}`] = (lostOnAir[`${e.from}->${e.to}:${e.reason}`] ?? 0) + 1; });
    await Promise.all(Array.from({ length: KITS }, (_, i) => startKit(i)));
    for (const [i, h] of hosts.entries()) h!.radio.onControlFrame((dir, _n, kind) => count(`kit${i}:${dir}:${kind.toString(16)}`));
    const bodies = users.map((u) => `${u.name} after the storm`);
    // Straight away, all at once: each request waits in its kit for the handshake.
    const tSend = Date.now();
    await Promise.all(users.map((u) => viaKit(u, 'PUT', `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/storm-${u.name}`, { msgtype: 'm.text', body: `${u.name} after the storm` })));
    const answeredMs = Date.now() - tSend;
    const t0 = Date.now();
    try {
      await until('every client to hold every message sent after the storm', () => users.every((u) => bodies.every((b) => u.seen.some(([, s]) => s === b))), 240_000);
    } catch (e) {
      // What the channel and the handshakes did, for whoever reads the failure.
      process.stderr.write(`[storm] sends answered after ${answeredMs} ms; control frames ${JSON.stringify(control)}; lost on air ${JSON.stringify(lostOnAir)}\n`);
      for (const u of users) process.stderr.write(`[storm] ${u.name} lacks ${JSON.stringify(bodies.filter((b) => !u.seen.some(([, s]) => s === b)))}\n`);
      process.stderr.write(`[storm] gateway kits ${JSON.stringify((gateway.status() as any).kits, null, 1)}\n`);
      for (const h of hosts) process.stderr.write(`[storm] host ${JSON.stringify(h!.status())}\n`);
      throw e;
    }
    process.stderr.write(`[storm] sends answered after ${answeredMs} ms, delivered everywhere ${Date.now() - t0} ms later\n`);
    await new Promise((r) => setTimeout(r, 3_000));
    for (const u of users) {
      const got = u.seen.filter(([, b]) => bodies.includes(b));
      expect(new Set(got.map(([id]) => id)).size, `${u.name}: nothing twice`).toBe(got.length);
      expect(got.map(([, b]) => b).sort()).toEqual([...bodies].sort());
    }
    const st = gateway.status() as any;
    const established = (st.kits as any[]).filter((k) => k.security?.established);
    expect(established.length).toBe(KITS);
    const resetsAfter = (st.kits as any[]).map((k) => k.sessionResets as number).reduce((a, b) => a + b, 0);
    expect(resetsAfter, 'every kit ran a new handshake').toBeGreaterThanOrEqual(resetsBefore + KITS);
  }, 400_000);
});
