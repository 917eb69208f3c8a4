/**
 * Issue 11 item 8: in authenticate-only mode (amateur bands) every frame is readable on air, so
 * no password and no access token may ever be in one. Real parts: one Synapse for the file, the
 * real `trickle keys bind` (gateway) and `trickle keys local-account` (kit) commands with the
 * passwords on stdin, real `trickle gateway` and `trickle host --security authenticate-only`
 * processes over socat PTYs, matrix-js-sdk through the host. The LinkRelay between the PTYs
 * records every serial byte in both directions, in order; the recording is searched raw and as a
 * listener decodes it (SLIP → packing → security envelope, which hides nothing in this mode →
 * compact CoAP, following both ends' contexts as they evolve → options and bodies, inflated).
 *
 * The recording must show the messages in clear (so it sees what a listener sees) and never the
 * Matrix password, the kit password, the gateway's access token or the kit's local token, as
 * text, hex, base64 or base64url.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createClient, ClientEvent, RoomEvent, type MatrixClient } from 'matrix-js-sdk';
import { startSynapse, type SynapseHandle } from '../../scripts/synapse.ts';
import { SlipDecoder } from '../../src/modem/transparent/slip.ts';
import { isContainer, unpackFrame } from '../../src/scheduler/packing.ts';
import { FrameKind, IK1_OVERHEAD } from '../../src/secure/secure-link.ts';
import { createCompactContext, decodeCompact, encodeCompact } from '../../src/coap/compact.ts';
import { getUintOption, type CoapMessage } from '../../src/coap/message.ts';
import { Opt, TrickleContentFormat } from '../../src/coap/numbers.ts';
import { decompressBody, matrixDictionaryV1 } from '../../src/codec/dictionary.ts';
import { decodeTrickleCbor } from '../../src/codec/trickle-cbor-v1.ts';
import { CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE } from '../../src/matrix/session-wire.ts';
import type { RelayDirection } from '../../src/link/relay.ts';
import { createRadioPath, freePort, pairedStateDirs, spawnTrickle, waitExit, waitForHttp, type RadioPath, type TrickleProcess } from '../helpers/stack.ts';

const MATRIX_PASSWORD = 'alice-matrix-pw-7Hq2';
const KIT_PASSWORD = 'kit-login-pw-Zr91';
const ALICE_SAYS = 'meet at the north ridge at dawn';
const BOB_SAYS = 'bob copies: north ridge, dawn';

function waitFor<T>(what: string, ms: number, register: (done: (v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((v) => { clearTimeout(t); resolve(v); });
  });
}

/** Every form in which a secret could be spotted in a recording. */
function forms(secret: string): string[] {
  const b = Buffer.from(secret, 'utf8');
  const mid = secret.slice(Math.floor(secret.length / 2) - 6, Math.floor(secret.length / 2) + 6);
  return [secret, mid, b.toString('hex'), b.toString('hex').toUpperCase(), b.toString('base64'), b.toString('base64url')];
}

/** A CoAP message as text: every option value and the body, decoded (inflated) where it is a body. */
function describeMessage(msg: CoapMessage): string {
  const dec = new TextDecoder('utf-8', { fatal: false });
  const out = msg.options.map((o) => `option ${o.number} ${dec.decode(o.value)}`);
  const cf = getUintOption(msg.options, Opt.CONTENT_FORMAT);
  const handle = (n: number) => `~${n}`;
  let body: unknown = dec.decode(msg.payload);
  try {
    if (cf === CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE) body = decodeTrickleCbor(decompressBody(msg.payload, matrixDictionaryV1(), 16 << 20), { resolveHandle: handle });
    else if (cf === 60) body = decodeTrickleCbor(msg.payload, { resolveHandle: handle });
    else if (cf === TrickleContentFormat.TEXT_MESSAGE) body = { msgtype: 'm.text', body: dec.decode(msg.payload) };
  } catch (e) { body = `undecodable (${(e as Error).message}): ${dec.decode(msg.payload)}`; }
  out.push(`payload ${typeof body === 'string' ? body : JSON.stringify(body)}`);
  return out.join('\n');
}

/**
 * What a listener in range reads, from the serial bytes in the order they crossed: frames, the
 * messages packed in them, the cleartext of each transport frame (and IK1's 0-RTT request), each
 * compact message decoded with the receiving end's context while the sending end's context is
 * advanced by encoding it again, as the sender did. Returns the text, the number of messages, and
 * why any could not be decoded.
 */
function listen(ordered: readonly { direction: RelayDirection; chunk: Uint8Array }[]): { text: string; errors: string[]; messages: number } {
  const slip = { aToB: new SlipDecoder({ maxFrameLen: 1 << 16 }), bToA: new SlipDecoder({ maxFrameLen: 1 << 16 }) };
  const ctx = { host: createCompactContext(), gateway: createCompactContext() };
  const started = new Set<object>();
  const out: string[] = [];
  const errors: string[] = [];
  let messages = 0;
  for (const { direction, chunk } of ordered) {
    const [sender, receiver] = direction === 'aToB' ? [ctx.host, ctx.gateway] : [ctx.gateway, ctx.host];
    for (const f of slip[direction].push(chunk).frames) {
      const packet = f.subarray(0, f.length - 2); // CRC-16 last
      let parts: Uint8Array[];
      try { parts = isContainer(packet) ? unpackFrame(packet) : [packet]; } catch (e) { errors.push(`${direction} packing: ${(e as Error).message}`); continue; }
      for (const m of parts) {
        let clear: Uint8Array;
        if (m[0]! < 0x80) clear = m.subarray(1, m.length - 16); // [nonce byte][cleartext][tag]
        else if (m[0] === FrameKind.IK1 && m.length > IK1_OVERHEAD) clear = m.subarray(IK1_OVERHEAD);
        else continue; // handshake messages: keys, no content
        if (clear.length === 0) continue; // session confirmation
        messages++;
        try {
          const msg = decodeCompact(clear, receiver);
          if (!started.has(sender) && receiver.rx.ref !== 0) {
            // Each end numbers from a random point: the listener learns it from the first message
            // that carries the sender's S (not from an ACK, which carries none).
            started.add(sender);
            sender.tx.hi = sender.tx.lo = sender.tx.tokenHi = (receiver.rx.ref - 1) >>> 0;
          }
          encodeCompact(msg, sender);
          out.push(describeMessage(msg));
        } catch (e) {
          errors.push(`${direction} ${Buffer.from(clear).toString('hex')}: ${(e as Error).message}`);
          out.push(`undecoded ${Buffer.from(clear).toString('latin1')}`);
        }
      }
    }
  }
  return { text: out.join('\n'), errors, messages };
}

describe('authenticate-only mode: no password or access token crosses the air (issue 11 item 8)', () => {
  let hs: SynapseHandle;
  let radio: RadioPath;
  let host: TrickleProcess;
  let gateway: TrickleProcess;
  let hostUrl = '';
  let gatewayStatusUrl = '';
  let state: Awaited<ReturnType<typeof pairedStateDirs>>;
  const recorded: Record<RelayDirection, Buffer[]> = { aToB: [], bToA: [] };
  const ordered: { direction: RelayDirection; chunk: Uint8Array }[] = [];
  const clients: MatrixClient[] = [];
  let gatewayToken = '';
  let localToken = '';
  let bobToken = '';

  const hostStatus = async (): Promise<any> => (await fetch(`${hostUrl}/_trickle/status`)).json();
  /** Requests the gateway received over the radio. */
  const gatewayReceived = async (): Promise<number> => Object.values(((await (await fetch(gatewayStatusUrl)).json()) as { requests: { byRoute: Record<string, number> } }).requests.byRoute).reduce((a, b) => a + b, 0);
  const airBytes = (): number => recorded.aToB.reduce((n, b) => n + b.length, 0) + recorded.bToA.reduce((n, b) => n + b.length, 0);
  const post = async (path: string, body: unknown, token?: string): Promise<{ status: number; json: any }> => {
    const r = await fetch(`${hostUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
    return { status: r.status, json: await r.json() };
  };
  const loginBody = (password: string) => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password });

  beforeAll(async () => {
    hs = await startSynapse();
    await hs.registerUser('alice', MATRIX_PASSWORD);
    bobToken = (await hs.registerUser('bob', 'bob-pw')).accessToken;
    state = await pairedStateDirs('ridge-kit');
    radio = await createRadioPath();
    radio.relay.onChunk((chunk, direction) => { recorded[direction].push(Buffer.from(chunk)); ordered.push({ direction, chunk: chunk.slice() }); });

    // On the gateway: bind alice's account to the kit (the real CLI logs in at Synapse).
    const bind = spawnTrickle(['keys', 'bind', 'ridge-kit', '@alice:localhost', '--homeserver', hs.baseUrl, '--password-stdin', '--state-dir', state.gatewayDir], { stdin: `${MATRIX_PASSWORD}\n` });
    expect(await waitExit(bind, 60_000), bind.output()).toBe(0);
    expect(bind.output()).toContain('bound ridge-kit');
    const accountsFile = join(state.gatewayDir, 'accounts-gateway.json');
    expect(statSync(accountsFile).mode & 0o777).toBe(0o600);
    gatewayToken = (JSON.parse(readFileSync(accountsFile, 'utf8')) as { accounts: { accessToken: string }[] }).accounts[0]!.accessToken;
    expect(gatewayToken.length).toBeGreaterThan(10);
    // On the kit: the password its local clients log in with.
    const local = spawnTrickle(['keys', 'local-account', '@alice:localhost', '--password-stdin', '--state-dir', state.hostDir], { stdin: `${KIT_PASSWORD}\n` });
    expect(await waitExit(local, 60_000), local.output()).toBe(0);

    const gp = await freePort();
    const hp = await freePort();
    gateway = spawnTrickle(['gateway', '--security', 'authenticate-only', '--region', 'none', '--state-dir', state.gatewayDir, '--device', radio.gatewayDevice, '--homeserver', hs.baseUrl, '--listen', `127.0.0.1:${gp}`]);
    host = spawnTrickle(['host', '--security', 'authenticate-only', '--region', 'none', '--state-dir', state.hostDir, '--device', radio.hostDevice, '--listen', `127.0.0.1:${hp}`]);
    hostUrl = `http://127.0.0.1:${hp}`;
    gatewayStatusUrl = `http://127.0.0.1:${gp}/_trickle/status`;
    await waitForHttp(`${hostUrl}/_trickle/status`, 30_000, host);
    await waitForHttp(gatewayStatusUrl, 30_000, gateway);
  }, 180_000);

  afterAll(async () => {
    for (const c of clients) c.stopClient();
    await host?.stop();
    await gateway?.stop();
    await radio?.close();
    await hs?.stop();
    state?.cleanup();
  });

  it('a wrong local password: 403 M_FORBIDDEN, and not one byte crosses the air', async () => {
    const bytes0 = airBytes();
    const carried0 = (await hostStatus()).requests.requests;
    for (const pw of ['wrong-password', MATRIX_PASSWORD]) { // the Matrix password is not the kit's
      const r = await post('/_matrix/client/v3/login', loginBody(pw));
      expect(r.status).toBe(403);
      expect(r.json.errcode).toBe('M_FORBIDDEN');
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(airBytes()).toBe(bytes0);
    expect((await hostStatus()).requests.requests).toBe(carried0);
  });

  it('matrix-js-sdk logs in on the kit, creates a room, sends, and receives another user\'s message by push sync', async () => {
    const loginClient = createClient({ baseUrl: hostUrl });
    const flows = await loginClient.loginFlows();
    expect(flows.flows.map((f) => f.type)).toEqual(['m.login.password']);
    const login = await loginClient.loginRequest(loginBody(KIT_PASSWORD) as never);
    expect(login.user_id).toBe('@alice:localhost');
    localToken = login.access_token;
    expect(localToken).not.toBe(gatewayToken);
    expect(login.well_known?.['m.homeserver']?.base_url).toBe(hostUrl);
    const bound = JSON.parse(readFileSync(join(state.gatewayDir, 'accounts-gateway.json'), 'utf8')).accounts[0];
    expect(login.device_id).toBe(bound.deviceId); // the gateway's bound device

    const alice = createClient({ baseUrl: hostUrl, accessToken: localToken, userId: login.user_id, deviceId: login.device_id });
    const bob = createClient({ baseUrl: hs.baseUrl, accessToken: bobToken, userId: '@bob:localhost' });
    clients.push(alice, bob);
    const ready = waitFor<void>('alice\'s first sync', 60_000, (done) => alice.on(ClientEvent.Sync, (s) => { if (s === 'PREPARED' || s === 'SYNCING') done(); }));
    await alice.startClient({ initialSyncLimit: 10 });
    await ready;

    const { room_id: roomId } = await alice.createRoom({ name: 'ridge', preset: 'public_chat' as never });
    await alice.sendTextMessage(roomId, ALICE_SAYS);
    await bob.joinRoom(roomId);
    const heard = waitFor<void>('bob\'s message at alice', 60_000, (done) => {
      alice.on(RoomEvent.Timeline, (ev, room) => { if (room?.roomId === roomId && ev.getContent()['body'] === BOB_SAYS) done(); });
    });
    await bob.sendTextMessage(roomId, BOB_SAYS);
    await heard;
    const st = await hostStatus();
    expect(st.pushSync.registered).toBe(true);
    expect(st.pushSync.deltasApplied).toBeGreaterThan(0);
    const gst = await (await fetch(gatewayStatusUrl)).json() as any;
    expect(gst.boundAccount).toMatchObject({ user: '@alice:localhost', secretsRefused: 0 });
  }, 120_000);

  it('requests that would carry a secret are refused on the kit, before the air', async () => {
    // Pushes may still be arriving for alice's store: count what the kit carries and the gateway receives.
    const carried0 = (await hostStatus()).requests.requests;
    const received0 = await gatewayReceived();
    const reg = await post('/_matrix/client/v3/register', { username: 'eve', password: 'pw', auth: { type: 'm.login.dummy' } });
    expect(reg.status).toBe(403);
    const pw = await post('/_matrix/client/v3/account/password', { new_password: 'new', auth: { type: 'm.login.password', password: KIT_PASSWORD } }, localToken);
    expect(pw.status).toBe(403);
    const unknown = await fetch(`${hostUrl}/_matrix/client/v3/joined_rooms`, { headers: { authorization: 'Bearer syt_made_up_token' } });
    expect(unknown.status).toBe(401);
    await new Promise((r) => setTimeout(r, 300));
    expect((await hostStatus()).requests.requests).toBe(carried0);
    expect(await gatewayReceived()).toBe(received0);
  });

  it('a kit with no account bound gets a clear 401 (and a login that says how to bind it)', async () => {
    const unbind = spawnTrickle(['keys', 'unbind', 'ridge-kit', '--state-dir', state.gatewayDir]);
    expect(await waitExit(unbind, 60_000), unbind.output()).toBe(0);
    expect(unbind.output()).toContain('logged out device');
    const r = await fetch(`${hostUrl}/_matrix/client/v3/joined_rooms`, { headers: { authorization: `Bearer ${localToken}` } });
    expect(r.status).toBe(401);
    const body = await r.json() as { errcode: string; error: string };
    expect(body.errcode).toBe('M_UNKNOWN_TOKEN');
    expect(body.error).toContain('trickle keys bind');
    const login = await post('/_matrix/client/v3/login', loginBody(KIT_PASSWORD));
    expect(login.status).toBe(403);
    expect(login.json.error).toContain('trickle keys bind');
  }, 60_000);

  it('the recording: messages in clear both ways, and no password or token in any form, raw or decoded', () => {
    const up = Buffer.concat(recorded.aToB);
    const down = Buffer.concat(recorded.bToA);
    expect(up.length + down.length).toBeGreaterThan(2000);
    const raw = `${up.toString('latin1')}\n${down.toString('latin1')}`;
    const heard = listen(ordered);
    const decoded = heard.text;
    // The recording sees what any listener sees: every message, and the conversation in it.
    expect(heard.messages).toBeGreaterThan(20);
    expect(heard.errors).toEqual([]);
    expect(up.toString('latin1')).toContain(ALICE_SAYS);
    expect(decoded).toContain(ALICE_SAYS);
    expect(decoded).toContain(BOB_SAYS);
    expect(decoded).toContain('"user_id":"@alice:localhost"'); // the whoami answer at login
    expect(decoded).toContain('"m.room.create"'); // a deflated sync body, inflated
    expect(decoded).not.toMatch(/^option 256 /m); // the MSC3079 access-token option never went out
    for (const [what, secret] of [['Matrix password', MATRIX_PASSWORD], ['kit password', KIT_PASSWORD], ['gateway access token', gatewayToken], ['local access token', localToken]] as const) {
      expect(secret.length, what).toBeGreaterThan(12);
      for (const f of forms(secret)) {
        expect(raw.includes(f), `${what} (${f}) in the serial bytes`).toBe(false);
        expect(decoded.includes(f), `${what} (${f}) in the decoded frames`).toBe(false);
      }
    }
  });

  it('no secret is in either end\'s state files or logs, except the gateway token in accounts-gateway.json', () => {
    const dump = (dir: string, skip: string[] = []) => readdirSync(dir).filter((f) => !skip.includes(f) && statSync(join(dir, f)).isFile()).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
    const kit = dump(state.hostDir) + host.output();
    const gw = dump(state.gatewayDir, ['accounts-gateway.json']) + gateway.output();
    for (const s of [MATRIX_PASSWORD, KIT_PASSWORD, gatewayToken, localToken]) {
      expect(kit.includes(s)).toBe(false);
      expect(gw.includes(s)).toBe(false);
    }
  });
});
