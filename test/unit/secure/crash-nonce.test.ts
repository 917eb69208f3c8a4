/**
 * Nonces never repeat across a crash at any point. A field kit's session is resumed from a real
 * state directory by a child process that is killed (SIGKILL, as a power cut) at every step of
 * the snapshot write (open, write, fsync, close, rename, directory fsync; first, second and third
 * write of a run) and between frames; after each death the next child resumes from whatever is
 * on disk. Every frame any child printed before handing it to the radio is recovered to its full
 * nonce by trial decryption under the session key, and no nonce appears twice. The responder
 * accepts every one of them exactly once.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SecureLink } from '../../../src/secure/secure-link.ts';
import { ChaChaPoly } from '../../../src/secure/cipher-functions.ts';
import { loadOrCreateIdentity, savePinnedGatewayKey, sessionStore } from '../../../src/cli/keys.ts';
import { fromHex } from '../../../src/util/bytes.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { seededRandom } from './support.ts';

const root = mkdtempSync(join(tmpdir(), 'trickle-crash-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function child(dir: string, count: number, label: string, env: Record<string, string>): { frames: string[]; status: number | null; signal: NodeJS.Signals | null } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/helpers/crash-child.ts', dir, String(count), label], {
    env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000,
  });
  if (r.status !== null && r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return { frames: r.stdout.split('\n').filter((l) => l !== ''), status: r.status, signal: r.signal };
}

describe('nonces across crashes', () => {
  it('a kit killed at every step of its snapshot writes and between frames never reuses a nonce', () => {
    const kitDir = join(root, 'kit');
    const kit = loadOrCreateIdentity(kitDir).keyPair;
    const gw = loadOrCreateIdentity(join(root, 'gw')).keyPair;
    savePinnedGatewayKey(kitDir, gw.publicKey);
    // One XX handshake in-process; the kit's side persists to its real state directory.
    const clock = new FakeClock();
    const rnd = seededRandom('crash');
    const kitStore = sessionStore(kitDir, 'initiator');
    const toGw: Uint8Array[] = [];
    const toKit: Uint8Array[] = [];
    const delivered: string[] = [];
    const initiator = new SecureLink({ role: 'initiator', staticKeyPair: kit, remoteStaticPinned: gw.publicKey, mode: 'encrypt', clock, randomBytes: rnd,
      handshakeRetryMs: 60_000, persist: kitStore.persist, send: (f) => toGw.push(f), deliver: () => {} });
    const responder = new SecureLink({ role: 'responder', staticKeyPair: gw, isAuthorized: () => 'kit', mode: 'encrypt', clock, randomBytes: rnd,
      handshakeRetryMs: 60_000, send: (f) => toKit.push(f), deliver: (p) => delivered.push(new TextDecoder().decode(p)) });
    initiator.send(new TextEncoder().encode('hello'));
    responder.receive(toGw.shift()!);
    initiator.receive(toKit.shift()!);
    responder.receive(toGw.shift()!);
    expect(delivered).toEqual(['hello']);
    initiator.close();
    const key = fromHex(sessionStore(kitDir, 'initiator').restore!.session!.transport.send.key);

    const frames: string[] = [];
    let crashes = 0;
    for (const step of ['open', 'write', 'fsync', 'close', 'rename', 'dirsync']) {
      for (const n of [1, 2, 3]) {
        const r = child(kitDir, 80, `${step}${n}`, { TRICKLE_TEST_CRASH_AT: `${step}:${n}` });
        expect(r.signal, `${step}:${n}`).toBe('SIGKILL');
        crashes++;
        frames.push(...r.frames);
      }
    }
    for (const k of [1, 5, 31, 32, 33]) {
      const r = child(kitDir, 80, `frame${k}`, { CRASH_AFTER_FRAME: String(k) });
      expect(r.signal).toBe('SIGKILL');
      crashes++;
      frames.push(...r.frames);
    }
    const last = child(kitDir, 10, 'clean', {});
    expect(last.status).toBe(0);
    frames.push(...last.frames);

    // Full nonce of each frame: the unique n ≡ byte 0 (mod 128) under which the tag verifies.
    const nonces = frames.map((hex) => {
      const f = fromHex(hex);
      for (let n = f[0]!; n < 128 * 256; n += 128) {
        try {
          ChaChaPoly.decrypt(key, BigInt(n), new Uint8Array([f[0]!]), f.subarray(1));
          return n;
        } catch { /* next wrap */ }
      }
      throw new Error(`frame ${hex.slice(0, 16)}… matches no nonce of the session key`);
    });
    expect(crashes).toBe(23);
    expect(frames.length).toBeGreaterThan(100);
    expect(new Set(nonces).size).toBe(nonces.length);
    console.log(`[crash] ${crashes} kills, ${frames.length} frames on air, ${new Set(nonces).size} distinct nonces, highest ${Math.max(...nonces)}`);

    // The responder (which kept its session) takes each of them, in order, once.
    const before = delivered.length;
    for (const hex of frames) responder.receive(fromHex(hex));
    expect(delivered.length - before).toBeGreaterThan(0);
    expect(new Set(delivered).size).toBe(delivered.length);
  }, 240_000);
});

describe('a copied state directory', () => {
  it('a session snapshot copied elsewhere (or restored from a backup) is not resumed: pins kept, session and secrets dropped', async () => {
    const { cpSync } = await import('node:fs');
    const kitDir = join(root, 'orig');
    const kit = loadOrCreateIdentity(kitDir).keyPair;
    const gw = loadOrCreateIdentity(join(root, 'gw2')).keyPair;
    const clock = new FakeClock();
    const rnd = seededRandom('copy');
    const store = sessionStore(kitDir, 'initiator');
    const out: Uint8Array[] = [];
    const back: Uint8Array[] = [];
    const i = new SecureLink({ role: 'initiator', staticKeyPair: kit, mode: 'encrypt', clock, randomBytes: rnd, handshakeRetryMs: 1000, persist: store.persist, send: (f) => out.push(f), deliver: () => {} });
    const r = new SecureLink({ role: 'responder', staticKeyPair: gw, isAuthorized: () => 'kit', mode: 'encrypt', clock, randomBytes: rnd, handshakeRetryMs: 1000, send: (f) => back.push(f), deliver: () => {} });
    i.send(new Uint8Array([1]));
    r.receive(out.shift()!);
    i.receive(back.shift()!);
    r.receive(out.shift()!);
    i.close();
    expect(sessionStore(kitDir, 'initiator').restore!.session).not.toBeNull();
    const copy = join(root, 'copy');
    cpSync(kitDir, copy, { recursive: true });
    const errors: string[] = [];
    const copied = sessionStore(copy, 'initiator', (e) => errors.push(e.message));
    expect(copied.restore!.session).toBeNull();
    expect(copied.restore!.resumption).toBeNull();
    expect(copied.restore!.pinnedRemoteStatic).not.toBeNull();
    expect(errors.join()).toMatch(/copied or restored/);
    expect(sessionStore(kitDir, 'initiator', (e) => errors.push(e.message)).restore!.session).not.toBeNull(); // the original still resumes
  });
});
