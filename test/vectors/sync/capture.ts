/**
 * Captures REAL /sync responses from a throwaway Synapse (scripts/synapse.ts) into
 * test/vectors/sync/synapse-sync.json, for the sync-delta / sync-store tests and the size
 * measurement. Plain fetch, two users, a scripted conversation:
 *
 *   npx tsx test/vectors/sync/capture.ts
 *
 * Every step records bob's /sync twice from the same position: once with the gateway's filter
 * (what SyncReducer ingests) and once with no filter at all (what an ordinary client gets from
 * the homeserver, the baseline for the size comparison).
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startSynapse } from '../../../scripts/synapse.ts';
import { gatewaySyncFilter } from '../../../src/matrix/sync-delta.ts';

const out = fileURLToPath(new URL('./synapse-sync.json', import.meta.url));
const hs = await startSynapse();
let txn = 0;
try {
  const alice = await hs.registerUser('alice', 'alice-pw-1');
  const bob = await hs.registerUser('bob', 'bob-pw-1');
  const call = async (who: { accessToken: string }, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const r = await fetch(hs.baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${who.accessToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const j = (await r.json()) as Record<string, unknown>;
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
    return j;
  };
  const enc = encodeURIComponent;
  const send = async (who: { accessToken: string }, room: string, content: unknown, type = 'm.room.message') =>
    (await call(who, 'PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/${type}/cap${++txn}`, content))['event_id'] as string;
  const text = (body: string) => ({ msgtype: 'm.text', body });
  const bobDevice = (await call(bob, 'GET', '/_matrix/client/v3/account/whoami'))['device_id'] as string;

  const general = (await call(alice, 'POST', '/_matrix/client/v3/createRoom', { name: 'General', preset: 'private_chat', invite: [bob.userId] }))['room_id'] as string;
  await call(bob, 'POST', `/_matrix/client/v3/join/${enc(general)}`, {});
  const quiet = (await call(alice, 'POST', '/_matrix/client/v3/createRoom', { name: 'Quiet', preset: 'private_chat', invite: [bob.userId] }))['room_id'] as string;
  await call(bob, 'POST', `/_matrix/client/v3/join/${enc(quiet)}`, {});
  for (let i = 0; i < 14; i++) await send(alice, quiet, text(`old message ${i}`));
  await send(alice, general, text('welcome'));
  const pending = (await call(alice, 'POST', '/_matrix/client/v3/createRoom', { name: 'Later', preset: 'private_chat', invite: [bob.userId] }))['room_id'] as string;
  await call(bob, 'PUT', `/_matrix/client/v3/user/${enc(bob.userId)}/account_data/m.direct`, {});
  await call(bob, 'PUT', `/_matrix/client/v3/user/${enc(bob.userId)}/rooms/${enc(general)}/tags/u.work`, { order: 0.5 });

  const gatewayInitial = JSON.stringify(gatewaySyncFilter({}, 'initial'));
  const gatewayIncremental = JSON.stringify(gatewaySyncFilter({}, 'incremental'));
  const steps: { name: string; gateway: unknown; raw: unknown }[] = [];
  let gSince: string | undefined;
  let rSince: string | undefined;
  const sync = async (filter: string | undefined, since: string | undefined) => {
    const q = new URLSearchParams({ timeout: since ? '3000' : '0' });
    if (filter) q.set('filter', filter);
    if (since) q.set('since', since);
    return call(bob, 'GET', `/_matrix/client/v3/sync?${q}`);
  };
  const step = async (name: string) => {
    const gateway = await sync(gSince ? gatewayIncremental : gatewayInitial, gSince);
    const raw = await sync(undefined, rSince);
    gSince = gateway['next_batch'] as string;
    rSince = raw['next_batch'] as string;
    steps.push({ name, gateway, raw });
    process.stderr.write(`captured ${name}\n`);
  };

  await step('initial');
  await send(alice, general, text('Hello World'));
  await step('one-text-from-alice');
  const own = await send(bob, general, text('hi alice'));
  await step('own-message-from-bob');
  await call(alice, 'PUT', `/_matrix/client/v3/rooms/${enc(general)}/state/m.room.topic/`, { topic: 'radio talk' });
  await call(alice, 'POST', `/_matrix/client/v3/rooms/${enc(general)}/receipt/m.read/${enc(own)}`, {});
  await call(alice, 'PUT', `/_matrix/client/v3/rooms/${enc(general)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 20000 });
  await step('topic-receipt-typing');
  for (let i = 0; i < 27; i++) await send(alice, general, text(`burst ${i}`));
  await step('burst-limited');
  await call(alice, 'PUT', `/_matrix/client/v3/sendToDevice/m.trickle.test/cap${++txn}`, { messages: { [bob.userId]: { [bobDevice]: { hello: 'device' } } } });
  await call(bob, 'PUT', `/_matrix/client/v3/user/${enc(bob.userId)}/account_data/m.direct`, { [alice.userId]: [general] });
  await step('to-device-and-account-data');
  await call(bob, 'POST', `/_matrix/client/v3/rooms/${enc(quiet)}/leave`, {});
  await call(bob, 'POST', `/_matrix/client/v3/join/${enc(pending)}`, {});
  await step('leave-quiet-join-later');
  await send(alice, pending, text('thanks for joining'));
  const reply = await send(alice, pending, { msgtype: 'm.text', body: 'oops' });
  await call(alice, 'PUT', `/_matrix/client/v3/rooms/${enc(pending)}/redact/${enc(reply)}/cap${++txn}`, { reason: 'typo' });
  await step('message-and-redaction');

  const vector = {
    provenance: {
      source: 'captured from a real Synapse by test/vectors/sync/capture.ts',
      homeserver: `matrix-synapse ${process.env['TRICKLE_SYNAPSE_VERSION'] ?? '1.163.2'} (scripts/synapse.sh)`,
      capturedAt: new Date().toISOString(),
      user: bob.userId, device: bobDevice, other: alice.userId,
      rooms: { general, quiet, later: pending },
      ownEventId: own,
      filters: { gatewayInitial: JSON.parse(gatewayInitial), gatewayIncremental: JSON.parse(gatewayIncremental), raw: null },
    },
    steps,
  };
  writeFileSync(out, JSON.stringify(vector, null, 1) + '\n');
  process.stderr.write(`wrote ${out}\n`);
} finally {
  await hs.stop();
}
