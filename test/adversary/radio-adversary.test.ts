/**
 * An attacker in radio range, against the real `trickle host` and `trickle gateway` processes
 * (issue 11). The two are joined by socat PTYs through a LinkRelay in this process, which records
 * every radio frame both ways and can inject anything; the gateway talks to a real Synapse through
 * a logging proxy, so every request the homeserver sees is on record.
 *
 * The attacker records legitimate traffic, then replays every captured frame (in order, shuffled,
 * after flooding the gateway with forged handshake initiations, after restarts of either end),
 * forges control frames at the field kit (UNKNOWN_SESSION, REFUSED), injects garbage, truncated
 * and bit-flipped frames (with valid CRCs, so they reach the security layer). The claims:
 *  - the homeserver sees each legitimate request exactly once, and NOTHING during an attack
 *    window (the gateway's own /sync long-poll aside);
 *  - the field kit's session survives every forged frame: no new handshake unless one is
 *    genuinely needed, and legitimate traffic goes on;
 *  - what an attacker spends is bounded: replies to unauthenticated frames, and log lines.
 *
 * `npm run adversary` runs more rounds (TRICKLE_ADVERSARY_ROUNDS, default 5); `npm test` runs one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { createRadioPath, freePort, pairedStateDirs, spawnTrickle, waitForHttp, type RadioPath, type TrickleProcess } from '../helpers/stack.ts';
import { TransparentDeframer, encodeTransparentFrame } from '../../src/modem/transparent/transparent-modem.ts';
import { unpackFrame } from '../../src/scheduler/packing.ts';
import { mulberry32 } from '../helpers/prng.ts';

const ROUNDS = Number(process.env['TRICKLE_ADVERSARY_ROUNDS'] ?? 1);

interface Logged { method: string; path: string; body: string; atMs: number }
interface Captured { dir: 'kit→gw' | 'gw→kit'; payload: Uint8Array; kinds: number[] }

let hs: SynapseHandle;
let proxy: Server;
const hsLog: Logged[] = [];
let path: RadioPath;
let state: { hostDir: string; gatewayDir: string; cleanup(): void };
let gateway: TrickleProcess;
let host: TrickleProcess;
let hostPort: number;
let gwStatusPort: number;
let proxyUrl: string;
const captured: Captured[] = [];
const rnd = mulberry32(11);
let alice: { token: string; room: string };
let sendNo = 0;
const legitBodies: string[] = [];

/** The homeserver as seen from the gateway: every request logged, then passed to Synapse. */
async function startProxy(target: string): Promise<string> {
  const port = await freePort();
  proxy = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      hsLog.push({ method: req.method ?? '', path: (req.url ?? '').split('?')[0]!, body: body.toString('utf8'), atMs: Date.now() });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host' && k !== 'connection' && k !== 'content-length') headers[k] = v;
      fetch(`${target}${req.url}`, { method: req.method ?? 'GET', headers, ...(body.length > 0 ? { body } : {}) })
        .then(async (r) => {
          const out = Buffer.from(await r.arrayBuffer());
          res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/json' });
          res.end(out);
        })
        .catch(() => { res.writeHead(502); res.end(); });
    });
  });
  await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${port}`;
}

function startGateway(): TrickleProcess {
  const p = spawnTrickle(['gateway', '--region', 'none', '--device', path.gatewayDevice, '--homeserver', proxyUrl,
    '--listen', `127.0.0.1:${gwStatusPort}`, '--state-dir', state.gatewayDir]);
  return p;
}
function startHost(): TrickleProcess {
  return spawnTrickle(['host', '--region', 'none', '--device', path.hostDevice, '--listen', `127.0.0.1:${hostPort}`, '--state-dir', state.hostDir]);
}

async function status(port: number): Promise<any> {
  return (await fetch(`http://127.0.0.1:${port}/_trickle/status`)).json();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Alice sends `n` messages through the kit; each body is unique and recorded as legitimate. */
async function legit(label: string, n = 2): Promise<void> {
  for (let i = 0; i < n; i++) {
    const body = `${label} #${++sendNo}`;
    legitBodies.push(body);
    const r = await fetch(`http://127.0.0.1:${hostPort}/_matrix/client/v3/rooms/${encodeURIComponent(alice.room)}/send/m.room.message/txn-${sendNo}`, {
      method: 'PUT', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ msgtype: 'm.text', body }),
    });
    expect(r.status, `legit send ${body}: ${await r.clone().text()}`).toBe(200);
  }
}

/** Inject one radio frame (payload re-framed with a valid CRC) into a direction. */
function inject(dir: 'kit→gw' | 'gw→kit', payload: Uint8Array): Promise<void> {
  return path.relay.inject(dir === 'kit→gw' ? 'aToB' : 'bToA', encodeTransparentFrame(payload));
}

/**
 * Run `attack`, then wait for the channel to settle; assert the homeserver saw nothing in the
 * meantime except the gateway's own /sync long-polls.
 */
async function attackWindow(name: string, attack: () => Promise<void>): Promise<void> {
  const from = hsLog.length;
  await attack();
  await sleep(2500);
  const seen = hsLog.slice(from).filter((l) => !(l.method === 'GET' && l.path.endsWith('/sync')));
  expect(seen.map((l) => `${l.method} ${l.path} ${l.body.slice(0, 80)}`), `homeserver requests during "${name}"`).toEqual([]);
}

/** Every legitimate message reached the homeserver exactly once; no other message did. */
function checkSends(): void {
  const sends = hsLog.filter((l) => l.method === 'PUT' && l.path.includes('/send/'));
  const bodies = sends.map((l) => (JSON.parse(l.body) as { body: string }).body);
  const counts = new Map<string, number>();
  for (const b of bodies) counts.set(b, (counts.get(b) ?? 0) + 1);
  for (const b of legitBodies) expect(counts.get(b), `"${b}" reached the homeserver`).toBe(1);
  expect(bodies.filter((b) => !legitBodies.includes(b))).toEqual([]);
}

const kitFrames = () => captured.filter((c) => c.dir === 'kit→gw');
/** XX1 / IK1 frames the kit sent so far. */
const handshakesByKit = () => captured.filter((c) => c.dir === 'kit→gw' && c.kinds.some((k) => k === 0x80 || k === 0x83)).length;
const shuffled = <T>(a: T[]): T[] => { const b = [...a]; for (let i = b.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [b[i], b[j]] = [b[j]!, b[i]!]; } return b; };
const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));

beforeAll(async () => {
  hs = await startSynapse();
  proxyUrl = await startProxy(hs.baseUrl);
  state = await pairedStateDirs('valley-team-1');
  path = await createRadioPath();
  // Record every frame both ways (decoded as the receiving modem would).
  const deframers = { aToB: new TransparentDeframer({ maxFrameLen: 255 }), bToA: new TransparentDeframer({ maxFrameLen: 255 }) };
  path.relay.onChunk((chunk, d) => {
    for (const payload of deframers[d].push(chunk).frames) {
      let kinds: number[] = [];
      try { kinds = unpackFrame(payload).map((m) => m[0]!); } catch { /* not ours */ }
      captured.push({ dir: d === 'aToB' ? 'kit→gw' : 'gw→kit', payload: payload.slice(), kinds });
    }
  });
  hostPort = await freePort();
  gwStatusPort = await freePort();
  gateway = startGateway();
  host = startHost();
  await waitForHttp(`http://127.0.0.1:${gwStatusPort}/_trickle/status`, 30_000, gateway);
  await waitForHttp(`http://127.0.0.1:${hostPort}/_trickle/status`, 30_000, host);
  await hs.registerUser('alice', 'alice-password');
  const login = await (await fetch(`http://127.0.0.1:${hostPort}/_matrix/client/v3/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-password' }),
  })).json() as { access_token: string };
  const room = await (await fetch(`http://127.0.0.1:${hostPort}/_matrix/client/v3/createRoom`, {
    method: 'POST', headers: { authorization: `Bearer ${login.access_token}`, 'content-type': 'application/json' }, body: '{}',
  })).json() as { room_id: string };
  alice = { token: login.access_token, room: room.room_id };
  await legit('warm-up');
}, 180_000);

afterAll(async () => {
  await host?.stop();
  await gateway?.stop();
  await path?.close();
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  await hs?.stop();
  state?.cleanup();
});

describe('an attacker in radio range', () => {
  for (let round = 1; round <= ROUNDS; round++) {
    it(`round ${round}: replays of every captured frame, in order and shuffled, perform nothing`, async () => {
      const before = (await status(gwStatusPort)).radio.sessionResets as number;
      await attackWindow('replay in order', async () => { for (const c of kitFrames()) await inject('kit→gw', c.payload); });
      await attackWindow('replay shuffled', async () => { for (const c of shuffled(kitFrames())) await inject('kit→gw', c.payload); });
      await legit(`after replay ${round}`);
      checkSends();
      const gw = await status(gwStatusPort);
      expect(gw.radio.sessionResets).toBe(before); // no replay started or replaced a session
      expect(gw.radio.dropped.security.ERR_NOISE_REPLAY ?? 0).toBeGreaterThan(0);
    }, 120_000);

    it(`round ${round}: forged UNKNOWN_SESSION and REFUSED at the kit do not end its session`, async () => {
      const kit0 = await status(hostPort);
      const handshakes0 = handshakesByKit();
      const sends: Promise<void>[] = [];
      // Forge them while the kit is working (right after its frames), and while it is idle.
      for (let i = 0; i < 6; i++) {
        sends.push(legit(`under forged control ${round}.${i}`, 1));
        await sleep(30);
        await inject('gw→kit', new Uint8Array([0x88]));
        await inject('gw→kit', new Uint8Array([0x87]));
      }
      await Promise.all(sends);
      await attackWindow('forged control frames at an idle kit', async () => {
        for (let i = 0; i < 40; i++) await inject('gw→kit', new Uint8Array([i % 2 === 0 ? 0x88 : 0x87]));
      });
      await legit(`after forged control ${round}`);
      const kit = await status(hostPort);
      expect(kit.radio.sessionResets).toBe(kit0.radio.sessionResets);
      expect(kit.radio.security.state).toBe('established');
      expect(kit.radio.dropped.security.ERR_NOISE_CONTROL ?? 0).toBeGreaterThan(kit0.radio.dropped.security.ERR_NOISE_CONTROL ?? 0);
      expect(handshakesByKit()).toBe(handshakes0); // the kit never started a new handshake
      checkSends();
    }, 120_000);

    it(`round ${round}: a recorded IKpsk1 replayed after a flood of forged XX1s (and after a gateway restart) performs nothing`, async () => {
      // A genuine re-handshake: the kit restarts without its session (as after a session loss).
      await host.stop();
      const snapPath = join(state.hostDir, 'session-host.json');
      const snap = JSON.parse(readFileSync(snapPath, 'utf8')) as Record<string, unknown>;
      writeFileSync(snapPath, JSON.stringify({ ...snap, session: null }), { mode: 0o600 });
      const from = captured.length;
      host = startHost();
      await waitForHttp(`http://127.0.0.1:${hostPort}/_trickle/status`, 30_000, host);
      await legit(`through IK ${round}`, 1);
      const ik1 = captured.slice(from).find((c) => c.dir === 'kit→gw' && c.kinds.includes(0x83));
      expect(ik1, 'the kit re-established with IKpsk1 (0-RTT)').toBeDefined();
      const gwBefore = await status(gwStatusPort);
      const floodAndReplay = async () => {
        for (let i = 0; i < 100; i++) await inject('kit→gw', new Uint8Array([0x80, ...randomBytes(32)]));
        await inject('kit→gw', ik1!.payload);
        for (const c of shuffled(kitFrames())) await inject('kit→gw', c.payload);
      };
      await attackWindow('XX1 flood, then the recorded IK1 and every frame', floodAndReplay);
      const gwAfter = await status(gwStatusPort);
      expect(gwAfter.radio.sessionResets).toBe(gwBefore.radio.sessionResets); // the live session was not replaced
      // What the attacker got back for 100 forged XX1s: at most the reply budget.
      const xx2 = captured.slice(from).filter((c) => c.dir === 'gw→kit' && c.kinds.includes(0x81)).length;
      expect(xx2).toBeLessThanOrEqual(4);
      await legit(`after IK replay ${round}`);

      // The gateway restarts (its state on disk): the same replays still perform nothing.
      await gateway.stop();
      gateway = startGateway();
      await waitForHttp(`http://127.0.0.1:${gwStatusPort}/_trickle/status`, 30_000, gateway);
      await attackWindow('replays after a gateway restart', floodAndReplay);
      await legit(`after gateway restart ${round}`);
      const gw = await status(gwStatusPort);
      expect(gw.radio.sessionResets).toBe(0); // resumed from disk, never replaced by a replay
      checkSends();
    }, 180_000);

    it(`round ${round}: garbage, truncated and bit-flipped frames are dropped, counted, and logged a bounded number of times`, async () => {
      const frames = kitFrames().slice(-30);
      await attackWindow('garbage and damaged frames', async () => {
        await path.relay.inject('aToB', randomBytes(20_000));
        await path.relay.inject('bToA', randomBytes(20_000));
        for (const c of frames) {
          if (c.payload.length > 2) await inject('kit→gw', c.payload.subarray(0, 1 + Math.floor(rnd() * (c.payload.length - 1))));
          const flipped = c.payload.slice();
          const bit = Math.floor(rnd() * flipped.length * 8);
          flipped[bit >> 3]! ^= 1 << (bit & 7);
          await inject('kit→gw', flipped);
        }
        for (const c of captured.filter((x) => x.dir === 'gw→kit').slice(-30)) {
          const flipped = c.payload.slice();
          flipped[flipped.length - 1]! ^= 0x01;
          await inject('gw→kit', flipped);
        }
      });
      await legit(`after garbage ${round}`);
      checkSends();
      const gw = await status(gwStatusPort);
      expect(gw.radio.dropped.modem.ERR_FRAME_BAD_FCS ?? 0).toBeGreaterThan(0);
      // Thousands of bad inputs, a handful of warning lines (one per reason and minute): the last
      // 20 kB of each process's log would be nothing but warnings otherwise.
      for (const p of [host, gateway]) {
        const warnLines = p.output().split('\n').filter((l) => l.includes('"level":40'));
        expect(warnLines.length, warnLines.slice(-5).join('\n')).toBeLessThan(30);
      }
    }, 120_000);
  }
});
