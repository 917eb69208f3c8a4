/**
 * `npm run soak [-- --requests N] [-- --concurrency K] [-- --json]`: a long-lived link at full
 * speed (issue 11 item 7). The REAL `trickle host` and `trickle gateway` processes, joined by a
 * socat PTY pair (`--region none`: a cable, no airtime rules; Noise security and the compact
 * CoAP form as a user gets them), carry N Matrix sends one after another (K at a time). The
 * host's CoAP sequence passes 65,536 several times: before the fix the first wrap killed the
 * link (the gateway took new messages for copies of old ones under the same Message ID).
 *
 *   soak client ──HTTP──▶ trickle host ──PTY═socat═PTY──▶ trickle gateway ──HTTP──▶ stand-in homeserver
 *
 * The homeserver is a stand-in: a small node:http server in this process that answers the
 * Matrix CS-API requests the run makes (login, whoami, send) deterministically, so that every
 * answer can be checked and every event counted. The homeserver is not what is measured here
 * (Synapse would spend the run creating 200,000 events and set the pace); the link is.
 *
 * What the client does, as a Matrix client would: POST /_matrix/client/v3/login through the
 * host, then with that access token PUT /_matrix/client/v3/rooms/!soak:soak.test/send/
 * m.room.message/<txn> with a body unique to each request. The stand-in answers each with an
 * event id derived from the room and the body (a wrong or stale answer shows) and counts how
 * often it created an event for each body (a request carried twice shows). A transaction id
 * seen again is answered with the first event (as a homeserver does), and counted.
 *
 * Prints progress every few seconds on stderr (done/total, rate, ETA, the host's sequence), then
 * a table (or JSON with --json) on stdout: requests, answered correctly, wrong, duplicates at the
 * homeserver, failures, elapsed, requests/s, and both ends' CoAP counters from /_trickle/status
 * (nextSequence, Message ID waits/skips/reuse, the guard in force). Exits 1 on any wrong,
 * duplicate, failed or missing answer.
 *
 * Options: --requests N (200000), --concurrency K (8), --baud N (4000000), --progress-s S (5),
 * --request-timeout-s S (1200: a request may wait a whole Message ID guard, then the host's own
 * 120 s), --json, --keep (leave the state directories and print where they are).
 */
import { request as httpRequest, Agent, createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createPtyPair, type PtyPair } from '../src/link/pty.ts';
import { freePort } from './synapse.ts';
import { pairedStateDirs, spawnTrickle, waitForHttp, type TrickleProcess } from '../test/helpers/stack.ts';

const { values: flags } = parseArgs({
  options: {
    requests: { type: 'string', default: '200000' },
    concurrency: { type: 'string', default: '8' },
    baud: { type: 'string', default: '4000000' },
    'progress-s': { type: 'string', default: '5' },
    'request-timeout-s': { type: 'string', default: '1200' },
    json: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});

function intFlag(name: keyof typeof flags, min: number, max: number): number {
  const v = Number(flags[name]);
  if (!Number.isInteger(v) || v < min || v > max) {
    process.stderr.write(`soak: --${name} must be an integer ${min}..${max}, got ${JSON.stringify(flags[name])}\n`);
    process.exit(2);
  }
  return v;
}
const TOTAL = intFlag('requests', 1, 100_000_000);
const CONCURRENCY = intFlag('concurrency', 1, 200);
const BAUD = intFlag('baud', 50, 4_000_000);
const PROGRESS_MS = intFlag('progress-s', 1, 3600) * 1000;
const REQUEST_TIMEOUT_MS = intFlag('request-timeout-s', 10, 86_400) * 1000;

const ROOM = '!soak:soak.test';
const USER = '@soak:soak.test';
const DEVICE = 'SOAKDEVICE';
const RUN = randomBytes(4).toString('hex');
const bodyOf = (i: number): string => `soak ${RUN} #${i}`;
/** What the stand-in answers for a body: a v3-style event id (unpadded base64url SHA-256). */
const eventIdOf = (room: string, body: string): string => `$${createHash('sha256').update(`${room}\n${body}`).digest('base64url')}`;

// ---------------------------------------------------------------------------
// The homeserver stand-in
// ---------------------------------------------------------------------------

interface StandIn {
  url: string;
  /** Events created per body (more than one: a request carried twice). */
  events: Map<string, number>;
  counters: { logins: number; whoami: number; sends: number; txnRetries: number; duplicates: number; badToken: number; unexpected: number };
  unexpected: string[];
  close(): Promise<void>;
}

async function startStandIn(): Promise<StandIn> {
  const accessToken = `syt_soak_${randomBytes(12).toString('base64url')}`;
  const events = new Map<string, number>();
  const byTxn = new Map<string, string>();
  const counters = { logins: 0, whoami: 0, sends: 0, txnRetries: 0, duplicates: 0, badToken: 0, unexpected: 0 };
  const unexpected: string[] = [];
  const json = (res: ServerResponse, status: number, v: unknown): void => {
    const b = Buffer.from(JSON.stringify(v));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(b.length) });
    res.end(b);
  };
  const authorized = (req: IncomingMessage): boolean => req.headers.authorization === `Bearer ${accessToken}`;
  const send = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/([^/]+)\/send\/([^/]+)\/([^/]+)$/;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0]!;
      let body: Record<string, unknown> = {};
      try { if (chunks.length > 0) body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>; } catch { /* checked below */ }
      if (req.method === 'POST' && /^\/_matrix\/client\/(?:r0|v3)\/login$/.test(path)) {
        counters.logins++;
        const id = body['identifier'] as { user?: string } | undefined;
        if (body['type'] !== 'm.login.password' || id?.user !== 'soak' || body['password'] !== 'soak-pw') {
          json(res, 403, { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' });
          return;
        }
        json(res, 200, { user_id: USER, access_token: accessToken, device_id: DEVICE, home_server: 'soak.test' });
        return;
      }
      if (!authorized(req)) {
        counters.badToken++;
        json(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Unrecognised access token' });
        return;
      }
      if (req.method === 'GET' && /^\/_matrix\/client\/(?:r0|v3)\/account\/whoami$/.test(path)) {
        counters.whoami++;
        json(res, 200, { user_id: USER, device_id: DEVICE });
        return;
      }
      const m = send.exec(path);
      if (req.method === 'PUT' && m) {
        counters.sends++;
        const room = decodeURIComponent(m[1]!);
        const txnKey = `${accessToken} ${decodeURIComponent(m[3]!)}`;
        const text = body['body'];
        if (room !== ROOM || decodeURIComponent(m[2]!) !== 'm.room.message' || typeof text !== 'string') {
          json(res, 400, { errcode: 'M_BAD_JSON', error: 'soak stand-in: unexpected send' });
          return;
        }
        const known = byTxn.get(txnKey);
        if (known !== undefined) {
          counters.txnRetries++; // a homeserver answers a repeated transaction with its first event
          json(res, 200, { event_id: known });
          return;
        }
        const n = (events.get(text) ?? 0) + 1;
        events.set(text, n);
        if (n > 1) counters.duplicates++;
        const eventId = eventIdOf(room, text);
        byTxn.set(txnKey, eventId);
        json(res, 200, { event_id: eventId });
        return;
      }
      counters.unexpected++;
      if (unexpected.length < 20) unexpected.push(`${req.method} ${path}`);
      json(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'soak stand-in: not part of the soak' });
    });
  });
  server.keepAliveTimeout = 120_000;
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${port}`, events, counters, unexpected,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

// ---------------------------------------------------------------------------
// HTTP client (keep-alive, K sockets)
// ---------------------------------------------------------------------------

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY + 2 });

function call(url: string, method: string, opts: { token?: string; body?: unknown; timeoutMs?: number } = {}): Promise<{ status: number; json: Record<string, unknown> | undefined }> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    const req = httpRequest(url, {
      method, agent,
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let json: Record<string, unknown> | undefined;
        try { json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>; } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${(opts.timeoutMs ?? REQUEST_TIMEOUT_MS) / 1000} s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

interface CoapCounters {
  nextSequence?: number; midWaits?: number; midSkips?: number; midReuse?: number; midWaiting?: number; midGuardMs?: number;
  duplicates?: number; retransmissions?: number; timeouts?: number; sent?: number; received?: number; dropped?: Record<string, number>;
}

async function coapStatus(url: string): Promise<CoapCounters> {
  try {
    const r = await call(url, 'GET', { timeoutMs: 10_000 });
    return ((r.json?.['radio'] as { coap?: CoapCounters } | undefined)?.coap) ?? {};
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

const fmt = (n: number): string => n.toLocaleString('en-US');
const dur = (ms: number): string => {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
};
const log = (line: string): void => { process.stderr.write(`${line}\n`); };

const hs = await startStandIn();
const state = await pairedStateDirs('soak-kit');
let pty: PtyPair | undefined;
let host: TrickleProcess | undefined;
let gateway: TrickleProcess | undefined;
let exitCode = 1;

const cleanup = async (): Promise<void> => {
  await host?.stop();
  await gateway?.stop();
  await pty?.close();
  await hs.close();
  agent.destroy();
  if (flags.keep) log(`soak: state directories kept: ${state.hostDir} ${state.gatewayDir}`);
  else state.cleanup();
};
let interrupted = false;
process.once('SIGINT', () => { interrupted = true; log('soak: interrupted; stopping'); });

try {
  pty = await createPtyPair();
  const gp = await freePort();
  const hp = await freePort();
  const common = ['--region', 'none', '--baud', String(BAUD)];
  gateway = spawnTrickle(['gateway', ...common, '--state-dir', state.gatewayDir, '--device', pty.b, '--homeserver', hs.url, '--listen', `127.0.0.1:${gp}`]);
  host = spawnTrickle(['host', ...common, '--state-dir', state.hostDir, '--device', pty.a, '--listen', `127.0.0.1:${hp}`]);
  const hostUrl = `http://127.0.0.1:${hp}`;
  const hostStatus = `${hostUrl}/_trickle/status`;
  const gatewayStatus = `http://127.0.0.1:${gp}/_trickle/status`;
  await waitForHttp(hostStatus, 60_000, host);
  await waitForHttp(gatewayStatus, 60_000, gateway);

  // Log in through the host, as a client would: the login itself crosses the link.
  const login = await call(`${hostUrl}/_matrix/client/v3/login`, 'POST', {
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'soak' }, password: 'soak-pw' }, timeoutMs: 120_000,
  });
  const token = login.json?.['access_token'];
  if (login.status !== 200 || typeof token !== 'string' || login.json?.['user_id'] !== USER) {
    throw new Error(`login through the host failed: ${login.status} ${JSON.stringify(login.json)}\n--- host ---\n${host.output()}\n--- gateway ---\n${gateway.output()}`);
  }
  // A link session starts at a random sequence number: count from here.
  const [hc0, gc0] = await Promise.all([coapStatus(hostStatus), coapStatus(gatewayStatus)]);
  const startSeq = { host: hc0.nextSequence ?? 0, gateway: gc0.nextSequence ?? 0 };
  log(`soak: ${fmt(TOTAL)} requests, ${CONCURRENCY} at a time: soak client → trickle host → PTY (socat, ${fmt(BAUD)} Bd) → trickle gateway → stand-in homeserver`);

  let next = 0;
  let done = 0;
  let correct = 0;
  const wrong: string[] = [];
  const failures: string[] = [];
  let wrongCount = 0;
  let failureCount = 0;
  const answered = new Uint8Array(TOTAL);
  const started = Date.now();
  const path = `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.room.message/`;

  const worker = async (): Promise<void> => {
    while (!interrupted) {
      const i = next++;
      if (i >= TOTAL) return;
      const body = bodyOf(i);
      try {
        const r = await call(`${hostUrl}${path}soak${RUN}-${i}`, 'PUT', { token, body: { msgtype: 'm.text', body } });
        answered[i]!++;
        if (r.status === 200 && r.json?.['event_id'] === eventIdOf(ROOM, body)) correct++;
        else if (r.status === 200) { wrongCount++; if (wrong.length < 10) wrong.push(`#${i}: event_id ${JSON.stringify(r.json?.['event_id'])}, expected ${eventIdOf(ROOM, body)}`); }
        else { failureCount++; if (failures.length < 10) failures.push(`#${i}: HTTP ${r.status} ${JSON.stringify(r.json)}`); }
      } catch (e) {
        failureCount++;
        if (failures.length < 10) failures.push(`#${i}: ${(e as Error).message}`);
      }
      done++;
    }
  };

  let lastDone = 0;
  let lastAt = started;
  const progress = setInterval(() => {
    void coapStatus(hostStatus).then((c) => {
      const now = Date.now();
      const rate = done / ((now - started) / 1000);
      const recent = (done - lastDone) / ((now - lastAt) / 1000);
      lastDone = done;
      lastAt = now;
      const eta = rate > 0 ? dur(((TOTAL - done) / rate) * 1000) : '?';
      const originated = ((c.nextSequence ?? startSeq.host) - startSeq.host) >>> 0;
      log(`[${dur(now - started).padStart(7)}] ${fmt(done).padStart(11)}/${fmt(TOTAL)} (${((100 * done) / TOTAL).toFixed(1).padStart(5)} %)  ${rate.toFixed(0).padStart(5)} req/s (last ${PROGRESS_MS / 1000} s: ${recent.toFixed(0)})  ETA ${eta}  host S +${fmt(originated)} (${(originated / 65_536).toFixed(2)} × 2^16)  waits ${fmt(c.midWaits ?? 0)} waiting ${c.midWaiting ?? 0}  wrong ${wrongCount} failed ${failureCount}`);
    });
  }, PROGRESS_MS);
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));
  clearInterval(progress);
  const elapsedMs = Date.now() - started;

  const [hc, gc] = await Promise.all([coapStatus(hostStatus), coapStatus(gatewayStatus)]);
  let missing = 0;
  let twiceAnswered = 0;
  for (let i = 0; i < TOTAL; i++) {
    if (answered[i] === 0) missing++;
    if (answered[i]! > 1) twiceAnswered++;
  }
  const eventsCreated = [...hs.events.values()].reduce((a, b) => a + b, 0);
  const summary = {
    requests: TOTAL,
    concurrency: CONCURRENCY,
    baud: BAUD,
    answeredCorrectly: correct,
    wrong: wrongCount,
    duplicatesAtHomeserver: hs.counters.duplicates,
    failures: failureCount,
    notAnswered: missing,
    elapsedMs,
    requestsPerSecond: Math.round((done / elapsedMs) * 1000 * 10) / 10,
    homeserver: { eventsCreated, distinctBodies: hs.events.size, ...hs.counters, unexpectedRequests: hs.unexpected },
    host: { ...hc, startSequence: startSeq.host, originated: ((hc.nextSequence ?? 0) - startSeq.host) >>> 0 },
    gateway: { ...gc, startSequence: startSeq.gateway, originated: ((gc.nextSequence ?? 0) - startSeq.gateway) >>> 0 },
    wrongSamples: wrong,
    failureSamples: failures,
  };
  const ok = !interrupted && correct === TOTAL && wrongCount === 0 && failureCount === 0 && missing === 0 && twiceAnswered === 0
    && hs.counters.duplicates === 0 && hs.events.size === TOTAL && eventsCreated === TOTAL;
  exitCode = ok ? 0 : 1;

  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ...summary, ok }, null, 2)}\n`);
  } else {
    const guardS = (c: CoapCounters): string => (c.midGuardMs === undefined ? '?' : (c.midGuardMs / 1000).toFixed(1));
    const drops = (c: CoapCounters): number => Object.values(c.dropped ?? {}).reduce((a, b) => a + b, 0);
    const rows: [string, string][] = [
      ['requests', fmt(TOTAL)],
      ['answered correctly', fmt(correct)],
      ['wrong answers', fmt(wrongCount)],
      ['duplicates at the homeserver', fmt(hs.counters.duplicates)],
      ['failures (HTTP error or no answer)', fmt(failureCount)],
      ['events created / distinct bodies', `${fmt(eventsCreated)} / ${fmt(hs.events.size)}`],
      ['txn ids repeated (answered once)', fmt(hs.counters.txnRetries)],
      ['elapsed', dur(elapsedMs)],
      ['requests/s', summary.requestsPerSecond.toFixed(1)],
    ];
    const w = Math.max(...rows.map(([k]) => k.length));
    const out: string[] = ['', `soak: ${fmt(TOTAL)} Matrix sends through the real trickle host and gateway over a PTY pair (${fmt(BAUD)} Bd, --region none, compact CoAP, Noise), ${CONCURRENCY} at a time`, ''];
    for (const [k, v] of rows) out.push(`  ${k.padEnd(w)}  ${v.padStart(12)}`);
    const ends: [string, (c: CoapCounters & { startSequence: number; originated: number }) => string][] = [
      ['CoAP sequence at start', (c) => fmt(c.startSequence)],
      ['CoAP nextSequence at end', (c) => fmt(c.nextSequence ?? 0)],
      ['  messages originated in the run', (c) => fmt(c.originated)],
      ['  = Message ID space (2^16) ×', (c) => (c.originated / 65_536).toFixed(2)],
      ['Message ID guard (s)', guardS],
      ['  ceiling: 65,536 per guard (msg/s)', (c) => (c.midGuardMs ? (65_536 / (c.midGuardMs / 1000)).toFixed(0) : '?')],
      ['midWaits (originations that waited)', (c) => fmt(c.midWaits ?? 0)],
      ['midSkips', (c) => fmt(c.midSkips ?? 0)],
      ['midReuse (peer reused an id early)', (c) => fmt(c.midReuse ?? 0)],
      ['CoAP duplicates', (c) => fmt(c.duplicates ?? 0)],
      ['retransmissions', (c) => fmt(c.retransmissions ?? 0)],
      ['timeouts', (c) => fmt(c.timeouts ?? 0)],
      ['dropped frames', (c) => fmt(drops(c))],
    ];
    const w2 = Math.max(...ends.map(([k]) => k.length));
    out.push('', `  ${''.padEnd(w2)}  ${'host'.padStart(12)}  ${'gateway'.padStart(12)}`);
    for (const [k, f] of ends) out.push(`  ${k.padEnd(w2)}  ${f(summary.host).padStart(12)}  ${f(summary.gateway).padStart(12)}`);
    if (wrong.length > 0) out.push('', 'wrong answers (first 10):', ...wrong.map((x) => `  ${x}`));
    if (failures.length > 0) out.push('', 'failures (first 10):', ...failures.map((x) => `  ${x}`));
    if (hs.unexpected.length > 0) out.push('', 'requests the stand-in did not expect:', ...hs.unexpected.map((x) => `  ${x}`));
    out.push('', ok ? 'soak: OK — every request answered correctly, none twice' : 'soak: FAILED', '');
    process.stdout.write(out.join('\n'));
  }
  if (!ok && !flags.json) log(`--- host (last output) ---\n${host.output().slice(-4000)}\n--- gateway (last output) ---\n${gateway.output().slice(-4000)}`);
} catch (e) {
  log(`soak: ${(e as Error).message}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
