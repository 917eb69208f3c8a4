/**
 * The host's local Matrix API is as strict as a homeserver, and survives its clients (issue 11,
 * items 3 and 4). Real parts: one Synapse for the file, `trickle gateway` and `trickle host` as
 * child processes over socat PTYs, encrypted link. Requests are made with node:http (so Host and
 * Origin can be set, and bodies cut short) and raw sockets.
 *
 * "Nothing crossed the radio" is asserted on two counters: the host's carried requests
 * (/_trickle/status requests.requests) and the requests the gateway received over the radio
 * (its requests.byRoute).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { createRadioPath, freePort, pairedStateDirs, spawnTrickle, waitExit, waitForHttp, type RadioPath, type TrickleProcess } from '../helpers/stack.ts';

const ALLOWED_ORIGIN = 'http://app.example:8080';
const RECEIVE_TIMEOUT_MS = 1500;

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; text: string; json: any }

/** One HTTP request over a fresh connection, any headers (Host and Origin included). */
function req(port: number, method: string, path: string, opts: { headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const r = httpRequest({ host: '127.0.0.1', port, method, path, agent: false, headers: { ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => {
        let json: unknown;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    r.on('error', reject);
    r.end(opts.body);
  });
}

/** A raw TCP exchange: what came back and when the server closed. */
function raw(port: number, send: string, opts: { destroyAfterMs?: number; waitMs?: number } = {}): Promise<{ data: string; closedByServer: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = connect(port, '127.0.0.1', () => { s.write(send); });
    let data = '';
    let closedByServer = false;
    let done = false;
    const finish = () => { if (done) return; done = true; s.destroy(); resolve({ data, closedByServer, ms: Date.now() - started }); };
    s.on('data', (d) => { data += d.toString(); });
    s.on('end', () => { closedByServer = true; finish(); });
    s.on('close', () => { closedByServer = true; finish(); });
    s.on('error', () => { closedByServer = true; finish(); });
    if (opts.destroyAfterMs !== undefined) setTimeout(finish, opts.destroyAfterMs);
    if (opts.waitMs !== undefined) setTimeout(finish, opts.waitMs);
  });
}

describe('the host\'s local API: tokens, accounts, origins, and clients that misbehave', () => {
  let hs: SynapseHandle;
  let radio: RadioPath;
  let host: TrickleProcess;
  let gateway: TrickleProcess;
  let port = 0;
  let gatewayStatusUrl = '';
  let state: Awaited<ReturnType<typeof pairedStateDirs>>;
  let alice = { token: '', userId: '' };
  let bob = { token: '', userId: '' };
  let aliceRoom = '';
  let aliceSince = '';

  const hostStatus = async (): Promise<any> => (await fetch(`http://127.0.0.1:${port}/_trickle/status`)).json();
  /** Requests the gateway received over the radio (its background /sync polls for push sync are not among them). */
  const gatewayTotal = async (): Promise<number> => Object.values(((await (await fetch(gatewayStatusUrl)).json()) as { requests: { byRoute: Record<string, number> } }).requests.byRoute).reduce((a, b) => a + b, 0);
  /** Runs fn and returns how many requests the host carried and the gateway performed meanwhile. */
  const radioUse = async (fn: () => Promise<void>): Promise<{ carried: number; performed: number }> => {
    const h0 = (await hostStatus()).requests.requests as number;
    const g0 = await gatewayTotal();
    await fn();
    await new Promise((r) => setTimeout(r, 200)); // anything that did leave has reached the gateway by now
    return { carried: (await hostStatus()).requests.requests - h0, performed: (await gatewayTotal()) - g0 };
  };
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });

  beforeAll(async () => {
    hs = await startSynapse();
    state = await pairedStateDirs();
    radio = await createRadioPath();
    const gp = await freePort();
    port = await freePort();
    gateway = spawnTrickle(['gateway', '--region', 'none', '--state-dir', state.gatewayDir, '--device', radio.gatewayDevice, '--homeserver', hs.baseUrl, '--listen', `127.0.0.1:${gp}`]);
    host = spawnTrickle(['host', '--region', 'none', '--state-dir', state.hostDir, '--device', radio.hostDevice, '--listen', `127.0.0.1:${port}`,
      '--allow-origin', ALLOWED_ORIGIN, '--receive-timeout-ms', String(RECEIVE_TIMEOUT_MS)]);
    gatewayStatusUrl = `http://127.0.0.1:${gp}/_trickle/status`;
    await waitForHttp(`http://127.0.0.1:${port}/_trickle/status`, 30_000, host);
    await waitForHttp(gatewayStatusUrl, 30_000, gateway);
    await hs.registerUser('alice', 'alice-pw');
    const b = await hs.registerUser('bob', 'bob-pw'); // a token the host has never seen
    bob = { token: b.accessToken, userId: b.userId };
  });

  afterAll(async () => {
    await host?.stop();
    await gateway?.stop();
    await radio?.close();
    await hs?.stop();
    state?.cleanup();
  });

  it('no token: 401 M_MISSING_TOKEN, and nothing crosses the radio', async () => {
    const use = await radioUse(async () => {
      for (const [m, p] of [['GET', '/_matrix/client/v3/sync'], ['GET', '/_matrix/client/v3/joined_rooms'], ['POST', '/_matrix/client/v3/createRoom'], ['GET', '/_matrix/client/v3/user/%40alice%3Alocalhost/filter/t1']] as const) {
        const r = await req(port, m, p, m === 'POST' ? { body: '{}' } : {});
        expect(r.status, p).toBe(401);
        expect(r.json.errcode, p).toBe('M_MISSING_TOKEN');
      }
      const basic = await req(port, 'GET', '/_matrix/client/v3/sync', { headers: { authorization: 'Basic YWxpY2U6cHc=' } });
      expect(basic.status).toBe(401);
      expect(basic.json.errcode).toBe('M_MISSING_TOKEN');
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
  });

  it('logs in through the host: the token is learned (hashes only, 0600), well_known names the kit', async () => {
    // A stale token in the header must not stop a client from logging in again (/login is open).
    const r = await req(port, 'POST', '/_matrix/client/v3/login', { headers: auth('syt_stale_token'), body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw' }) });
    expect(r.status).toBe(200);
    alice = { token: r.json.access_token, userId: r.json.user_id };
    expect(alice.userId).toBe('@alice:localhost');
    expect(r.json.well_known?.['m.homeserver']?.base_url).toBe(`http://127.0.0.1:${port}`);
    expect(r.text).not.toContain(hs.baseUrl.replace('http://', ''));
    const wk = await req(port, 'GET', '/.well-known/matrix/client');
    expect(wk.status).toBe(200);
    expect(wk.json).toEqual({ 'm.homeserver': { base_url: `http://127.0.0.1:${port}` } });

    const file = join(state.hostDir, 'tokens-host.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const saved = readFileSync(file, 'utf8');
    expect(saved).toContain('@alice:localhost');
    expect(saved).not.toContain(alice.token);
    expect(saved).not.toContain(alice.token.slice(4, 20));

    // Known from the login answer: her requests need no check over the radio.
    const use = await radioUse(async () => {
      const s = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) });
      expect(s.status).toBe(200);
    });
    expect(use.carried).toBe(0); // answered from the push-sync store (and the registration is an observation, not a carried request)
  });

  it('wrong token: checked once over the radio, 401 M_UNKNOWN_TOKEN; asked again, it costs nothing', async () => {
    const first = await radioUse(async () => {
      const r = await req(port, 'GET', '/_matrix/client/v3/sync', { headers: auth('syt_bogus_0123456789') });
      expect(r.status).toBe(401);
      expect(r.json).toMatchObject({ errcode: 'M_UNKNOWN_TOKEN', soft_logout: false });
    });
    expect(first).toEqual({ carried: 1, performed: 1 }); // the whoami
    const again = await radioUse(async () => {
      for (let i = 0; i < 5; i++) {
        const r = await req(port, 'GET', `/_matrix/client/v3/joined_rooms?access_token=syt_bogus_0123456789`);
        expect(r.status).toBe(401);
        expect(r.json.errcode).toBe('M_UNKNOWN_TOKEN');
      }
    });
    expect(again).toEqual({ carried: 0, performed: 0 });
    const st = await hostStatus();
    expect(st.localApi.tokens.validations).toBeGreaterThanOrEqual(1);
    expect(JSON.stringify(st)).not.toContain('syt_bogus');
  });

  it('alice\'s room and message reach her through the store', async () => {
    const created = await req(port, 'POST', '/_matrix/client/v3/createRoom', { headers: auth(alice.token), body: JSON.stringify({ name: 'alice-only', preset: 'private_chat' }) });
    expect(created.status).toBe(200);
    aliceRoom = created.json.room_id;
    const sent = await req(port, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(aliceRoom)}/send/m.room.message/t1`, { headers: auth(alice.token), body: JSON.stringify({ msgtype: 'm.text', body: 'the cache is under the third pine' }) });
    expect(sent.status).toBe(200);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=2000', { headers: auth(alice.token) });
      expect(s.status).toBe(200);
      aliceSince = s.json.next_batch;
      if (s.json.rooms?.join?.[aliceRoom] && s.text.includes('third pine')) break;
      if (Date.now() > deadline) throw new Error(`alice's room never reached her store: ${s.text.slice(0, 500)}`);
    }
  }, 90_000);

  it('another account\'s token never sees the owner\'s rooms or messages: bob syncs from a store of his own, never from alice\'s', async () => {
    const use = await radioUse(async () => {
      const s = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(bob.token) });
      expect(s.status).toBe(200);
      expect(s.json.rooms?.join?.[aliceRoom]).toBeUndefined();
      expect(s.text).not.toContain(aliceRoom);
      expect(s.text).not.toContain('third pine');
      // alice's store positions mean nothing in bob's store (another epoch): an initial sync of his.
      const inc = await req(port, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(aliceSince)}`, { headers: auth(bob.token) });
      expect(inc.text).not.toContain('third pine');
      const filter = await req(port, 'GET', '/_matrix/client/v3/user/%40alice%3Alocalhost/filter/t1', { headers: auth(bob.token) });
      expect(filter.status).toBeGreaterThanOrEqual(400);
      const msgs = await req(port, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(aliceRoom)}/messages?dir=b&from=trickle_0_0&limit=10`, { headers: auth(bob.token) });
      expect(msgs.text).not.toContain('third pine');
      expect(msgs.status).toBeGreaterThanOrEqual(400);
    });
    // bob's /sync and filters are answered by his own store (issue 12); the /messages with a token
    // that is not his store's crossed the radio, answered by the homeserver for bob.
    expect(use.carried).toBeGreaterThanOrEqual(1);
    expect((await hostStatus()).pushSync.accounts).toBe(2);
    // alice cannot read bob's filters either, even named with her own token.
    const f = await req(port, 'POST', '/_matrix/client/v3/user/%40bob%3Alocalhost/filter', { headers: auth(alice.token), body: '{}' });
    expect(f.status).toBe(403);
  });

  it('bob\'s own room and messages never reach alice\'s store', async () => {
    const created = await req(port, 'POST', '/_matrix/client/v3/createRoom', { headers: auth(bob.token), body: JSON.stringify({ name: 'bob-only', preset: 'private_chat' }) });
    expect(created.status).toBe(200);
    const bobRoom: string = created.json.room_id;
    const sent = await req(port, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(bobRoom)}/send/m.room.message/b1`, { headers: auth(bob.token), body: JSON.stringify({ msgtype: 'm.text', body: 'bob keeps the radio codes in the blue box' }) });
    expect(sent.status).toBe(200);
    // Something alice can see happens after bob's message, so her store moves past it; sent
    // straight to the homeserver (another device of hers), so bob's token was the last one the
    // kit used: the gateway's next /sync poll for alice's store must still be made as alice.
    const marker = await fetch(`${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(aliceRoom)}/send/m.room.message/t2`, { method: 'PUT', headers: { ...auth(alice.token), 'content-type': 'application/json' }, body: JSON.stringify({ msgtype: 'm.text', body: 'marker after bob' }) });
    expect(marker.status).toBe(200);
    let all = '';
    const syncUntil = async (text: string): Promise<void> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const s = await req(port, 'GET', `/_matrix/client/v3/sync?timeout=2000&since=${encodeURIComponent(aliceSince)}`, { headers: auth(alice.token) });
        all += s.text;
        if (s.json?.next_batch) aliceSince = s.json.next_batch;
        if (all.includes(text)) return;
        if (Date.now() > deadline) throw new Error(`${text} never reached alice's store`);
      }
    };
    await syncUntil('marker after bob');
    // Now the gateway polls again for alice's store. Bob speaks in his room (straight to the
    // homeserver), then alice in hers: whatever the poll brings must be alice's alone.
    const later = await fetch(`${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(bobRoom)}/send/m.room.message/b2`, { method: 'PUT', headers: { ...auth(bob.token), 'content-type': 'application/json' }, body: JSON.stringify({ msgtype: 'm.text', body: 'blue box, second shelf' }) });
    expect(later.status).toBe(200);
    await new Promise((r) => setTimeout(r, 1500));
    const marker2 = await fetch(`${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(aliceRoom)}/send/m.room.message/t3`, { method: 'PUT', headers: { ...auth(alice.token), 'content-type': 'application/json' }, body: JSON.stringify({ msgtype: 'm.text', body: 'second marker' }) });
    expect(marker2.status).toBe(200);
    await syncUntil('second marker');
    const full = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) });
    all += full.text;
    expect(all).not.toContain(bobRoom);
    expect(all).not.toContain('blue box');
  }, 60_000);

  it('foreign origin: 403 before anything is read or carried, even with a valid token; preflights too', async () => {
    const use = await radioUse(async () => {
      const s = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: { ...auth(alice.token), origin: 'http://evil.example' } });
      expect(s.status).toBe(403);
      expect(s.json.errcode).toBe('M_FORBIDDEN');
      expect(s.headers['access-control-allow-origin']).toBeUndefined();
      expect(s.text).not.toContain('third pine');
      const login = await req(port, 'POST', '/_matrix/client/v3/login', { headers: { origin: 'http://evil.example' }, body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'guess' }) });
      expect(login.status).toBe(403);
      const pre = await req(port, 'OPTIONS', '/_matrix/client/v3/sync', { headers: { origin: 'http://evil.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
      expect(pre.status).toBe(403);
      expect(pre.headers['access-control-allow-origin']).toBeUndefined();
      // An origin that merely starts like the allowed one is another origin.
      const near = await req(port, 'GET', '/_matrix/client/versions', { headers: { origin: `${ALLOWED_ORIGIN}.evil.example` } });
      expect(near.status).toBe(403);
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
    expect((await hostStatus()).localApi.refusedOrigin).toBeGreaterThanOrEqual(4);
  });

  it('allowed origin: the preflight and the request get CORS headers naming that origin, never *', async () => {
    const pre = await req(port, 'OPTIONS', '/_matrix/client/v3/sync', { headers: { origin: ALLOWED_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    expect(String(pre.headers['access-control-allow-headers'])).toMatch(/Authorization/i);
    expect(pre.headers['vary']).toMatch(/Origin/);
    const s = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: { ...auth(alice.token), origin: ALLOWED_ORIGIN } });
    expect(s.status).toBe(200);
    expect(s.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    // Without an Origin (a native client), no CORS headers at all.
    const n = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) });
    expect(n.headers['access-control-allow-origin']).toBeUndefined();
    // A token-less request from the allowed origin is still refused: the origin is not a credential.
    const anon = await req(port, 'GET', '/_matrix/client/v3/sync', { headers: { origin: ALLOWED_ORIGIN } });
    expect(anon.status).toBe(401);
  });

  it('DNS rebinding: a request naming another host is refused 421 and not carried; IP literals and localhost are served', async () => {
    const use = await radioUse(async () => {
      const r = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: { ...auth(alice.token), host: `rebind.evil.example:${port}` } });
      expect(r.status).toBe(421);
      expect(r.text).not.toContain('third pine');
      const st = await req(port, 'GET', '/_trickle/status', { headers: { host: `rebind.evil.example:${port}` } });
      expect(st.status).toBe(421);
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      const r = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: { ...auth(alice.token), host } });
      expect(r.status, host).toBe(200);
    }
  });

  it('logout ends a token at the host too: the next use is refused without the radio', async () => {
    const login = await req(port, 'POST', '/_matrix/client/v3/login', { body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'alice-pw' }) });
    const second: string = login.json.access_token;
    expect((await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(second) })).status).toBe(200);
    expect((await req(port, 'POST', '/_matrix/client/v3/logout', { headers: auth(second), body: '{}' })).status).toBe(200);
    const use = await radioUse(async () => {
      const r = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(second) });
      expect(r.status).toBe(401);
      expect(r.json.errcode).toBe('M_UNKNOWN_TOKEN');
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
    // Her first session is untouched.
    expect((await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) })).status).toBe(200);
  });

  it('aborted bodies: a client closing mid-body neither crashes the host nor reaches the radio', async () => {
    const use = await radioUse(async () => {
      const sends = [];
      for (let i = 0; i < 50; i++) {
        sends.push(raw(port, `PUT /_matrix/client/v3/rooms/${encodeURIComponent(aliceRoom)}/send/m.room.message/abort${i} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"`, { destroyAfterMs: 50 }));
      }
      await Promise.all(sends);
      await new Promise((r) => setTimeout(r, 300));
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
    expect(host.child.exitCode).toBeNull();
    const st = await hostStatus();
    expect(st.localApi.aborted).toBeGreaterThanOrEqual(50);
    expect(host.output()).not.toMatch(/unhandled|Error: aborted/i);
    expect((await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) })).status).toBe(200);
  });

  it('slow bodies get 408 after the receive deadline, slow headers are closed; a long answer is not cut', async () => {
    const use = await radioUse(async () => {
      const slowBody = await raw(port, `POST /_matrix/client/v3/createRoom HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na`, { waitMs: 15_000 });
      expect(slowBody.data).toMatch(/^HTTP\/1\.1 408 /);
      expect(slowBody.data).toContain('"errcode":"M_UNKNOWN"');
      expect(slowBody.data).toContain(`within ${RECEIVE_TIMEOUT_MS} ms`);
      expect(slowBody.closedByServer).toBe(true);
      expect(slowBody.ms).toBeGreaterThanOrEqual(RECEIVE_TIMEOUT_MS - 100);
      expect(slowBody.ms).toBeLessThan(RECEIVE_TIMEOUT_MS + 3_000);
      const slowHeaders = await raw(port, 'GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor', { waitMs: 15_000 });
      expect(slowHeaders.closedByServer).toBe(true);
      expect(slowHeaders.data).toMatch(/^HTTP\/1\.1 408 /);
      expect(slowHeaders.ms).toBeLessThan(RECEIVE_TIMEOUT_MS + 3_000);
    });
    expect(use).toEqual({ carried: 0, performed: 0 });
    expect((await hostStatus()).localApi.bodyTimeouts).toBeGreaterThanOrEqual(1);
    // The deadline is for receiving: a held /sync (twice the deadline) still gets its answer.
    const now = await req(port, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(aliceSince)}`, { headers: auth(alice.token) });
    aliceSince = now.json.next_batch;
    const started = Date.now();
    const held = await req(port, 'GET', `/_matrix/client/v3/sync?timeout=${RECEIVE_TIMEOUT_MS * 2}&since=${encodeURIComponent(aliceSince)}`, { headers: auth(alice.token) });
    expect(held.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(RECEIVE_TIMEOUT_MS * 2 - 100);
  }, 30_000);

  it('1000 connections at once: the excess is answered 429 or closed, the host lives and serves a good client afterwards', async () => {
    const sockets: Socket[] = [];
    const outcomes = { refused429: 0, closedSilently: 0, open: 0 };
    await new Promise<void>((resolve) => {
      let settled = 0;
      for (let i = 0; i < 1000; i++) {
        const s = connect(port, '127.0.0.1');
        sockets.push(s);
        let data = '';
        let counted = false;
        const count = (k: keyof typeof outcomes) => { if (counted) return; counted = true; outcomes[k]++; if (++settled === 1000) resolve(); };
        s.on('data', (d) => { data += d.toString(); if (data.includes('429')) count('refused429'); });
        s.on('close', () => count(data.includes('429') ? 'refused429' : 'closedSilently'));
        s.on('error', () => { /* counted on close */ });
        s.on('connect', () => setTimeout(() => count('open'), 500)); // still open half a second later: admitted
      }
    });
    expect(outcomes.open + outcomes.refused429 + outcomes.closedSilently).toBe(1000);
    expect(outcomes.open).toBeLessThanOrEqual(256);
    expect(outcomes.open).toBeGreaterThan(100);
    expect(outcomes.refused429).toBeGreaterThan(0);
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(host.child.exitCode).toBeNull();
    const good = await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) });
    expect(good.status).toBe(200);
    expect(good.text).toContain('third pine');
    const st = await hostStatus();
    expect(st.localApi.connectionsRefused + st.localApi.connectionsDropped).toBeGreaterThanOrEqual(1000 - 256);
  }, 30_000);

  it('headers over 16 KiB: 431, and the host goes on', async () => {
    const r = await raw(port, `GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, { waitMs: 5_000 });
    expect(r.data).toMatch(/^HTTP\/1\.1 431 /);
    expect((await req(port, 'GET', '/_matrix/client/v3/sync?timeout=0', { headers: auth(alice.token) })).status).toBe(200);
  });

  it('no access token ever appears in the host\'s log or status', async () => {
    const seen = host.output() + JSON.stringify(await hostStatus()) + readFileSync(join(state.hostDir, 'tokens-host.json'), 'utf8');
    expect(seen.length).toBeGreaterThan(1000);
    for (const t of [alice.token, bob.token, 'syt_bogus_0123456789']) expect(seen).not.toContain(t);
  });

  it('the CLI refuses --listen on a network address without --allow-lan, and warns with it', async () => {
    const refused = spawnTrickle(['host', '--device', '/dev/ttyTRICKLE-NOPE', '--listen', '0.0.0.0:0']);
    expect(await waitExit(refused)).toBe(1);
    expect(refused.output()).toContain('--allow-lan');
    expect(refused.output()).toContain('not a loopback address');
    expect(refused.output()).toContain('ERR_CONFIG');
    // With --allow-lan the listen check passes (and warns); the missing device is what stops it.
    const allowed = spawnTrickle(['host', '--device', '/dev/ttyTRICKLE-NOPE', '--listen', '0.0.0.0:0', '--allow-lan', '--state-dir', join(state.hostDir, '..', 'lan')]);
    expect(await waitExit(allowed)).toBe(1);
    expect(allowed.output()).toMatch(/anyone who can reach this address/);
    expect(allowed.output()).toContain('ERR_LINK_NOT_FOUND');
    const star = spawnTrickle(['host', '--device', '/dev/ttyTRICKLE-NOPE', '--allow-origin', '*']);
    expect(await waitExit(star)).toBe(1);
    expect(star.output()).toContain('--allow-origin');
  }, 60_000);
});
