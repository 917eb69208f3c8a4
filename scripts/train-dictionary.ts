/**
 * Regenerates the preset DEFLATE dictionary from real traffic.
 *
 *   npx tsx scripts/train-dictionary.ts [--id matrix-v1] [--force]
 *       runs a scripted Matrix session through the real stack (Synapse from scripts/synapse.ts,
 *       matrix-js-sdk 37.5.0 → `trickle host` → socat PTY pair → `trickle gateway` → Synapse,
 *       security and region 'none' since only the bodies matter), captures every JSON request
 *       and response body the gateway performs, writes the corpus to
 *       test/vectors/corpus/<id>.json (tokens and passwords removed) and trains from it.
 *   npx tsx scripts/train-dictionary.ts --from-corpus test/vectors/corpus/matrix-v1.json [--id …] [--force]
 *       retrains from a stored corpus only: the same corpus always gives the same bytes.
 *
 * Output: src/codec/dictionaries/<id>.ts (base64, DICTIONARY_ID, DICTIONARY_SHA256, counts,
 * date, trainer parameters). Refuses to overwrite an existing id with different bytes unless
 * --force: a dictionary is wire context, so new bytes deserve a new id (matrix-v2).
 *
 * Each body is encoded exactly as it goes on air apart from session handles:
 * encodeTrickleCbor(value) with no hooks. Strings that belong to this test deployment or to the
 * people in it (ids, tokens, the server name, message text, names) are excluded from training
 * (dictionary-train.ts, matrixTrainingSample), so the dictionary holds only the structure every
 * Matrix deployment shares.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256 } from '@noble/hashes/sha2.js';
import { createClient, Direction, MatrixEvent, Method, ReceiptType, ClientEvent, type MatrixClient } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from './synapse.ts';
import { createPtyPair, type PtyPair } from '../src/link/pty.ts';
import { silentLogger } from '../src/log.ts';
import { startHost, type Host } from '../src/host/host.ts';
import { startGateway, type Gateway } from '../src/gateway/gateway.ts';
import { isJsonContentType, type HttpRequestLike, type HttpResponseLike } from '../src/matrix/http.ts';
import { deflateRaw } from '../src/codec/deflate.ts';
import { compressedSize, matrixTrainingSample, optimizeDictionary, trainDictionary } from '../src/codec/dictionary-train.ts';
import { toHex } from '../src/util/bytes.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');

/** One captured body; `endpoint` is the method and path with ids replaced by placeholders. */
export interface CorpusEntry {
  kind: 'request' | 'response';
  endpoint: string;
  status?: number;
  value: unknown;
}

export interface Corpus {
  id: string;
  generated: string;
  provenance: string;
  /** Substrings that make a string deployment-specific (matrixTrainingSample's `volatile`). */
  volatile: string[];
  entries: CorpusEntry[];
}

const args = process.argv.slice(2);
const argValue = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const id = argValue('--id') ?? 'matrix-v1';
const fromCorpus = argValue('--from-corpus');
const force = args.includes('--force');
const CORPUS_LIMIT_BYTES = 300_000;

// ---------------------------------------------------------------------------------------------
// Capture

const REDACT = new Set(['access_token', 'refresh_token', 'password', 'new_password']);
function redact(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(redact);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = REDACT.has(k) && typeof x === 'string' ? 'REDACTED' : redact(x);
    return out;
  }
  return v;
}

function endpointOf(req: HttpRequestLike): string {
  const segs = req.path.split('/');
  const out = segs.map((s, i) => {
    let d = s;
    try { d = decodeURIComponent(s); } catch { /* keep */ }
    if (/^[!@$#]/.test(d)) return `{${({ '!': 'roomId', '@': 'userId', $: 'eventId', '#': 'alias' } as Record<string, string>)[d[0]!]}}`;
    const prev = segs[i - 2];
    if ((prev === 'send' || prev === 'redact') && i === segs.length - 1) return '{txnId}';
    if (segs[i - 1] === 'filter' && /^\d+$/.test(d)) return '{filterId}';
    return s;
  });
  return `${req.method} ${out.join('/')}`;
}

function parseJson(contentType: string | undefined, body: Uint8Array): unknown {
  if (body.length === 0 || !isJsonContentType(contentType)) return undefined;
  try { return JSON.parse(new TextDecoder().decode(body)); } catch { return undefined; }
}

const MESSAGES = [
  'Morning all. Radio check from the north hut, how copy?',
  'Copy you loud and clear.',
  'Weather turning, wind picking up from the west.',
  'Water filter is broken, does anyone have spare tablets?',
  'I have two packs, will bring them at noon.',
  'Trail to the lake is blocked by a fallen tree near the bridge.',
  'ok',
  'Thanks!',
  'On my way.',
  'Battery at 40 %, switching the repeater to low power until the sun is out.',
  'Can someone check the generator at the base camp? It stopped at 03:10.',
  'Checked. Fuel line was clogged, running again.',
  'Group B reached the summit at 11:42, all well.',
  'Descending now, expect us at the road head by 16:00.',
  'Roger.',
  'Need a ride from the road head for three people and gear.',
  'I can take two, leaving the village at 15:30.',
  'Snow forecast for tonight, 10 to 15 cm above 1800 m.',
  'Please confirm the meeting point for tomorrow.',
  'Meeting point: car park at the end of the forest road, 07:00.',
];
const LONG = 'Trail washed out below the second bridge; we are taking the ridge path instead. Four people, one with a sprained ankle, moving slowly. Water and food for two days. Expect us at the hut around 18:00. Please keep the channel open and tell the team at the road head. Over.';
const EMOJI = ['👍', '❤️', '😂', '🎉', '👀', '✅'];

async function capture(): Promise<Corpus> {
  for (const m of ['log', 'info', 'debug', 'warn'] as const) console[m] = () => {};
  const logger = silentLogger();
  let hs: SynapseHandle | undefined;
  let host: Host | undefined;
  let gateway: Gateway | undefined;
  let pair: PtyPair | undefined;
  const clients: MatrixClient[] = [];
  const entries: CorpusEntry[] = [];
  let seed = 12345;
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  try {
    hs = await startSynapse();
    pair = await createPtyPair();
    const radio = { baudRate: 115_200, maxFrameLen: 255, radio: { region: 'none', bandwidthHz: 125_000, sf: 7, codingRate: 5 }, maxBodyBytes: 16 << 20 };
    gateway = await startGateway({ device: pair.b, homeserverUrl: hs.baseUrl, ...radio, homeserverTimeoutMs: 60_000, logger });
    gateway.homeserver.onPerformed((req: HttpRequestLike, res: HttpResponseLike) => {
      const endpoint = endpointOf(req);
      const q = parseJson(req.contentType ?? 'application/json', req.body);
      if (q !== undefined) entries.push({ kind: 'request', endpoint, value: redact(q) });
      const r = parseJson(res.contentType, res.body);
      if (r !== undefined) entries.push({ kind: 'response', endpoint, status: res.status, value: redact(r) });
    });
    host = await startHost({ device: pair.a, listenHost: '127.0.0.1', listenPort: 0, ...radio, requestTimeoutMs: 60_000, logger, pushSync: false }); // the corpus is request/response traffic, /sync included
    const hostUrl = `http://127.0.0.1:${host.port}`;

    // People, talking to Synapse directly (their traffic is not captured; it shapes alice's).
    const names = ['bob', 'carol', 'dave', 'erin', 'frank', 'grace'];
    const others: MatrixClient[] = [];
    const ids: Record<string, string> = {};
    for (const n of names) {
      const a = await hs.registerUser(n, `${n}-password`);
      const c = createClient({ baseUrl: hs.baseUrl, accessToken: a.accessToken, userId: a.userId });
      await c.setDisplayName(n[0]!.toUpperCase() + n.slice(1));
      others.push(c);
      clients.push(c);
      ids[n] = a.userId;
    }
    await hs.registerUser('alice', 'alice-password');

    // alice, through trickle: what a client does when it starts.
    await fetch(`${hostUrl}/_matrix/client/versions`).then((r) => r.text());
    const login = await createClient({ baseUrl: hostUrl }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-password', initial_device_display_name: 'Field kit' } as never);
    const alice = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    clients.push(alice);
    const aliceId = login.user_id;
    await alice.getVersions();
    await alice.whoami();
    await alice.getCapabilities();
    await alice.getPushRules();
    await alice.setDisplayName('Alice');
    await alice.getProfileInfo(aliceId);
    const filter = await alice.createFilter({ room: { timeline: { limit: 20 }, state: { lazy_load_members: true } } } as never);
    const filterId = filter.filterId!;
    await alice.getAccountDataFromServer('m.direct' as never).catch(() => undefined);

    // Five rooms with five or six members and twenty messages each.
    const rooms: string[] = [];
    const talkersOf: MatrixClient[][] = [];
    const topics = ['Hut logistics', 'Search and rescue coordination', 'Weather and avalanche bulletin', 'Rides and supplies', 'Off topic'];
    for (let r = 0; r < 5; r++) {
      const owner = others[r]!;
      const { room_id } = await owner.createRoom({ name: topics[r]!, topic: `${topics[r]!} for the valley team`, preset: (r % 2 ? 'public_chat' : 'private_chat') as never });
      rooms.push(room_id);
      const members = [0, 1, 2, 3, 4, 5].filter((i) => i !== r && (i + r) % 5 !== 4).slice(0, 4);
      for (const i of members) { await owner.invite(room_id, ids[names[i]!]!); await others[i]!.joinRoom(room_id); }
      await owner.invite(room_id, aliceId);
      await alice.joinRoom(room_id);
      const talkers = [r, ...members];
      talkersOf.push(talkers.map((i) => others[i]!));
      let lastEvent = '';
      for (let m = 0; m < 20; m++) {
        const who = others[talkers[rand(talkers.length)]!]!;
        const kind = rand(10);
        if (kind === 0 && lastEvent) {
          await who.sendEvent(room_id, 'm.reaction' as never, { 'm.relates_to': { rel_type: 'm.annotation', event_id: lastEvent, key: EMOJI[rand(EMOJI.length)]! } } as never).catch(() => undefined);
        } else if (kind === 1 && lastEvent) {
          lastEvent = (await who.sendMessage(room_id, { msgtype: 'm.text', body: `> quoted\n\n${MESSAGES[rand(MESSAGES.length)]!}`, 'm.relates_to': { 'm.in_reply_to': { event_id: lastEvent } } } as never)).event_id;
        } else if (kind === 2) {
          lastEvent = (await who.sendHtmlMessage(room_id, 'Checklist: rope, stove, radio', '<ul><li>rope</li><li>stove</li><li>radio</li></ul>')).event_id;
        } else if (kind === 3) {
          lastEvent = (await who.sendNotice(room_id, 'Bulletin: avalanche danger level 3 above 2000 m.')).event_id;
        } else {
          lastEvent = (await who.sendTextMessage(room_id, MESSAGES[rand(MESSAGES.length)]!)).event_id;
        }
        if (m % 7 === 6) await who.sendReceipt(new MatrixEvent({ event_id: lastEvent, room_id, type: 'm.room.message', sender: who.getUserId()!, content: {} }), ReceiptType.Read);
      }
    }

    // Initial sync, then a day of traffic.
    const sync = (since?: string) => alice.http.authedRequest<{ next_batch: string; rooms?: { join?: Record<string, { timeline?: { prev_batch?: string; events?: { event_id: string }[] } }> } }>(
      Method.Get, '/sync', { filter: filterId, timeout: '0', ...(since ? { since } : {}) });
    let s = await sync();
    let since = s.next_batch;
    const prevBatch: Record<string, string> = {};
    const lastSeen: Record<string, string> = {};
    const remember = (x: typeof s) => {
      for (const [rid, jr] of Object.entries(x.rooms?.join ?? {})) {
        if (jr.timeline?.prev_batch && !prevBatch[rid]) prevBatch[rid] = jr.timeline.prev_batch;
        const evs = jr.timeline?.events ?? [];
        if (evs.length) lastSeen[rid] = evs[evs.length - 1]!.event_id;
      }
    };
    remember(s);
    await alice.getJoinedRooms();
    for (const rid of rooms.slice(0, 3)) await alice.getJoinedRoomMembers(rid);
    await alice.members(rooms[0]!);
    await alice.roomState(rooms[1]!);
    await alice.getStateEvent(rooms[2]!, 'm.room.power_levels', '');
    await alice.getDevices();
    for (const n of names.slice(0, 4)) await alice.getProfileInfo(ids[n]!);
    await alice.getProfileInfo(`@nobody:${hs.serverName}`).catch(() => undefined);
    await alice.searchUserDirectory({ term: 'car', limit: 10 });
    await alice.publicRooms({ limit: 10 });

    let myRoom = '';
    for (let round = 0; round < 60; round++) {
      const ri = rand(rooms.length);
      const rid = rooms[ri]!;
      const who = talkersOf[ri]![rand(talkersOf[ri]!.length)]!;
      const act = round % 12;
      // Someone else does something, then alice's next sync carries it.
      const other = rand(6);
      if (other <= 2) await who.sendTextMessage(rid, MESSAGES[rand(MESSAGES.length)]!).catch(() => undefined);
      else if (other === 3 && lastSeen[rid]) await who.sendEvent(rid, 'm.reaction' as never, { 'm.relates_to': { rel_type: 'm.annotation', event_id: lastSeen[rid], key: EMOJI[rand(EMOJI.length)]! } } as never).catch(() => undefined);
      else if (other === 4) await who.sendTyping(rid, true, 20_000).catch(() => undefined);
      else if (lastSeen[rid]) await who.sendReceipt(new MatrixEvent({ event_id: lastSeen[rid], room_id: rid, type: 'm.room.message', sender: aliceId, content: {} }), ReceiptType.Read).catch(() => undefined);
      s = await sync(since);
      since = s.next_batch;
      remember(s);
      // alice does something.
      const last = lastSeen[rid];
      switch (act) {
        case 0: case 4: case 8: await alice.sendTextMessage(rid, MESSAGES[rand(MESSAGES.length)]!); break;
        case 1: await alice.sendTextMessage(rid, LONG); break;
        case 2: if (last) await alice.sendEvent(rid, 'm.reaction' as never, { 'm.relates_to': { rel_type: 'm.annotation', event_id: last, key: EMOJI[rand(EMOJI.length)]! } } as never).catch(() => undefined); break;
        case 3: if (last) await alice.sendReceipt(new MatrixEvent({ event_id: last, room_id: rid, type: 'm.room.message', sender: ids['bob']!, content: {} }), ReceiptType.Read); break;
        case 5: await alice.sendTyping(rid, true, 30_000); await alice.sendTyping(rid, false, 0); break;
        case 6: if (last) await alice.setRoomReadMarkersHttpRequest(rid, last, last); break;
        case 7: {
          const from = prevBatch[rid] ?? null;
          const page = await alice.createMessagesRequest(rid, from, 10, Direction.Backward);
          if (page.end) prevBatch[rid] = page.end;
          break;
        }
        case 9: await alice.getProfileInfo(ids[names[rand(names.length)]!]!); break;
        case 10: {
          if (!myRoom) {
            myRoom = (await alice.createRoom({ name: 'Alice and friends', invite: [ids['bob']!], preset: 'private_chat' as never })).room_id;
            await others[0]!.joinRoom(myRoom);
          } else {
            const n = names[1 + rand(names.length - 1)]!;
            await alice.invite(myRoom, ids[n]!).catch(() => undefined);
          }
          break;
        }
        case 11: {
          const { room_id } = await others[rand(others.length)]!.createRoom({ name: `Trip ${round}`, invite: [aliceId] });
          s = await sync(since);
          since = s.next_batch;
          await alice.joinRoom(room_id);
          await alice.sendHtmlMessage(room_id, 'Joined, thanks!', '<b>Joined</b>, thanks!');
          break;
        }
      }
      s = await sync(since);
      since = s.next_batch;
      remember(s);
    }

    // The real client's own start-up and sync loop, through trickle, for the request mix it makes.
    const sdk = createClient({ baseUrl: hostUrl, accessToken: login.access_token, userId: aliceId, deviceId: login.device_id });
    clients.push(sdk);
    const prepared = new Promise<void>((resolve) => sdk.on(ClientEvent.Sync, (st) => { if (st === 'PREPARED' || st === 'SYNCING') resolve(); }));
    await sdk.startClient({ initialSyncLimit: 10, lazyLoadMembers: true } as never);
    await Promise.race([prepared, new Promise((r) => setTimeout(r, 60_000))]);
    for (let i = 0; i < 6; i++) {
      const t = talkersOf[i % rooms.length]!;
      await t[i % t.length]!.sendTextMessage(rooms[i % rooms.length]!, MESSAGES[rand(MESSAGES.length)]!);
      await new Promise((r) => setTimeout(r, 1500));
    }
    await sdk.sendTextMessage(rooms[0]!, 'Sent from the field kit.');
    await new Promise((r) => setTimeout(r, 1500));
    sdk.stopClient();

    return {
      id,
      generated: new Date().toISOString(),
      provenance: `scripts/train-dictionary.ts: matrix-js-sdk 37.5.0 through trickle host/gateway (socat PTY) against Synapse ${process.env['TRICKLE_SYNAPSE_VERSION'] ?? '1.163.2'}; every JSON request and response body the gateway performed, access tokens and passwords replaced by "REDACTED"`,
      // Local parts and display names are caught as sigil ids and by their keys; a bare local
      // part here would also mask every string that happens to contain it ("filt-erin-g").
      volatile: [hs.serverName, new URL(hs.baseUrl).host],
      entries,
    };
  } finally {
    for (const c of clients) c.stopClient();
    await host?.close();
    await gateway?.close();
    await pair?.close();
    await hs?.stop();
  }
}

/** Keep the corpus under its size bound: drop the largest entries of the most common endpoints. */
function fitCorpus(c: Corpus): Corpus {
  const size = () => JSON.stringify(c).length;
  if (size() <= CORPUS_LIMIT_BYTES) return c;
  const entries = [...c.entries];
  while (JSON.stringify({ ...c, entries }).length > CORPUS_LIMIT_BYTES) {
    let worst = 0;
    let worstLen = -1;
    entries.forEach((e, i) => { const n = JSON.stringify(e).length; if (n > worstLen) { worst = i; worstLen = n; } });
    const [gone] = entries.splice(worst, 1);
    process.stdout.write(`corpus over ${CORPUS_LIMIT_BYTES} B: left out one ${gone!.kind} of ${gone!.endpoint} (${worstLen} B)\n`);
  }
  return { ...c, entries };
}

// ---------------------------------------------------------------------------------------------
// Train and write

const corpusPath = fromCorpus ?? join(repo, 'test', 'vectors', 'corpus', `${id}.json`);
let corpus: Corpus;
if (fromCorpus) {
  corpus = JSON.parse(readFileSync(fromCorpus, 'utf8')) as Corpus;
} else {
  corpus = fitCorpus(await capture());
  mkdirSync(dirname(corpusPath), { recursive: true });
  writeFileSync(corpusPath, `${JSON.stringify(corpus)}\n`);
}

const samples = corpus.entries.map((e) => matrixTrainingSample(e.value, corpus.volatile));
const opt = optimizeDictionary(samples, { dictionaryBytes: [2048, 4096, 8192], dmerBytes: [4, 5, 6], segmentBytes: [16, 32, 64] });
const dict = opt.dictionary;
const hex = toHex(sha256(dict));

const outPath = join(repo, 'src', 'codec', 'dictionaries', `${id}.ts`);
if (existsSync(outPath) && !force) {
  const old = readFileSync(outPath, 'utf8').match(/DICTIONARY_SHA256 = '([0-9a-f]{64})'/)?.[1];
  if (old && old !== hex) {
    process.stderr.write(`${outPath} already holds ${id} with sha256 ${old}; these bytes hash to ${hex}.\nA dictionary is wire context: give new bytes a new id (--id matrix-v2), or pass --force if ${id} was never released.\n`);
    process.exit(1);
  }
}
const counts = { requests: corpus.entries.filter((e) => e.kind === 'request').length, responses: corpus.entries.filter((e) => e.kind === 'response').length };
const b64 = Buffer.from(dict).toString('base64').replace(/.{1,100}/g, (l) => `  '${l}' +\n`).replace(/ \+\n$/, ',\n');
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, `/**
 * Preset DEFLATE dictionary ${id}: GENERATED by scripts/train-dictionary.ts, do not edit.
 * Regenerate: npx tsx scripts/train-dictionary.ts --from-corpus test/vectors/corpus/${id}.json --id ${id}
 * (same corpus, same bytes). New traffic means new bytes, and new bytes need a new id.
 * src/codec/dictionary.ts checks DICTIONARY_BASE64 against DICTIONARY_SHA256 when it loads it.
 */
export const DICTIONARY_ID = '${id}';
export const DICTIONARY_SHA256 = '${hex}';
export const DICTIONARY_BYTES = ${dict.length};
export const DICTIONARY_TRAINING = {
  corpus: 'test/vectors/corpus/${id}.json',
  corpusGenerated: '${corpus.generated}',
  trained: '${new Date().toISOString().slice(0, 10)}',
  requestSamples: ${counts.requests},
  responseSamples: ${counts.responses},
  params: ${JSON.stringify(opt.params).replace(/"(\w+)":/g, '$1: ').replace(/,/g, ', ')},
} as const;
export const DICTIONARY_BASE64 = [
${b64}].join('');
`);

// ---------------------------------------------------------------------------------------------
// Figures: a dictionary trained on 80 % with the chosen parameters, measured on the other 20 %.

const train = samples.filter((_, i) => i % 5 !== 4);
const heldIdx = corpus.entries.map((_, i) => i).filter((i) => i % 5 === 4);
const held80 = trainDictionary(train, opt.params).dictionary;
const figures = (label: string, idx: number[]) => {
  const bytes = idx.map((i) => samples[i]!.bytes);
  if (bytes.length === 0) return;
  const n = bytes.length;
  const cbor = bytes.reduce((a, b) => a + b.length, 0);
  const plain = compressedSize(bytes);
  const withDict = compressedSize(bytes, held80);
  const always = bytes.reduce((a, b) => a + deflateRaw(b, { dictionary: held80 }).length, 0);
  process.stdout.write(`${label.padEnd(34)} n=${String(n).padStart(4)}  CBOR ${(cbor / n).toFixed(1).padStart(8)}  +DEFLATE ${(plain / n).toFixed(1).padStart(8)}  +dict ${(withDict / n).toFixed(1).padStart(8)}  (dict always ${(always / n).toFixed(1)})\n`);
};
const isSyncOne = (i: number): boolean => {
  const e = corpus.entries[i]!;
  if (e.kind !== 'response' || !e.endpoint.startsWith('GET') || !e.endpoint.endsWith('/sync')) return false;
  const join = (e.value as { rooms?: { join?: Record<string, { timeline?: { events?: { type: string }[] } }> } }).rooms?.join ?? {};
  const evs = Object.values(join).flatMap((r) => r.timeline?.events ?? []);
  return evs.length === 1 && evs[0]!.type === 'm.room.message';
};
process.stdout.write(`\n${id}: ${dict.length} bytes, sha256 ${hex}\nparams ${JSON.stringify(opt.params)}; ${corpus.entries.length} samples (${counts.requests} requests, ${counts.responses} responses)\n`);
process.stdout.write('grid (validation bytes):\n');
for (const t of opt.trials) process.stdout.write(`  ${JSON.stringify(t.params)} → ${t.validationBytes}\n`);
process.stdout.write('\nmean bytes per sample, held-out 20 % (dictionary trained on the other 80 %):\n');
figures('all held-out', heldIdx);
figures('held-out requests', heldIdx.filter((i) => corpus.entries[i]!.kind === 'request'));
figures('held-out responses', heldIdx.filter((i) => corpus.entries[i]!.kind === 'response'));
figures('held-out responses ≤ 512 B CBOR', heldIdx.filter((i) => corpus.entries[i]!.kind === 'response' && samples[i]!.bytes.length <= 512));
figures('sync, one new message (held-out)', heldIdx.filter(isSyncOne));
figures('sync, one new message (all)*', corpus.entries.map((_, i) => i).filter(isSyncOne));
figures('small sends PUT …/send (all)*', corpus.entries.map((_, i) => i).filter((i) => corpus.entries[i]!.kind === 'request' && corpus.entries[i]!.endpoint.includes('/send/')));
figures('send responses (all)*', corpus.entries.map((_, i) => i).filter((i) => corpus.entries[i]!.kind === 'response' && corpus.entries[i]!.endpoint.includes('/send/')));
process.stdout.write('* includes samples the 80 % dictionary was trained on\n');
process.stdout.write(`\nwrote ${outPath}${fromCorpus ? '' : ` and ${corpusPath}`}\n`);
process.exit(0);
