/**
 * SecureLink.receive for both roles, and the security state snapshots read back from disk
 * (SecureTransport.importState, SecureLink's `restore`).
 *
 * A scripted exchange between a real initiator and responder (XX first contact, IK with 0-RTT
 * data, an IK1 damaged in flight so XXfallback runs, data both ways) leaves both ends with a
 * session and persisted snapshots; every frame on the air is recorded. Each input is then a
 * SEQUENCE of frames (util.ts splitSeq) fed to an end restored from its snapshot, with the
 * clock moving between frames so timers fire. The recorded frames have all been received
 * already, so nothing built from them may be delivered: the oracle is "dropped without
 * exception and without delivering", no handshake completes, and the responder keeps its session.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { TrickleError } from '../../../src/errors.ts';
import { X25519, type KeyPair } from '../../../src/secure/dh.ts';
import { SecureLink, type SecureLinkEvent, type SecureLinkSnapshot } from '../../../src/secure/secure-link.ts';
import { SecureTransport, type TransportMode, type TransportSnapshot } from '../../../src/secure/transport.ts';
import type { RandomBytes } from '../../../src/util/clock.ts';
import { equalBytes, toHex } from '../../../src/util/bytes.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { check, expectCoded, hash32, Rng, type FuzzTarget } from '../engine.ts';
import { joinSeq, mutateJson, show, splitSeq, textOf, utf8Bytes } from '../util.ts';

/** Deterministic RandomBytes: SHA-256(seed ‖ counter). */
function seeded(seed: string): RandomBytes {
  let counter = 0;
  const s = utf8Bytes(seed);
  return (n) => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n; off += 32) {
      const block = new Uint8Array(s.length + 4);
      block.set(s);
      new DataView(block.buffer).setUint32(s.length, counter++);
      out.set(sha256(block).subarray(0, Math.min(32, n - off)), off);
    }
    return out;
  };
}

/** Fast, non-cryptographic RandomBytes for the per-input links (derived from the input). */
function fastRandom(seed: number): RandomBytes {
  const rng = new Rng(seed);
  return (n) => rng.bytes(n);
}

const INITIATOR_KEY: KeyPair = X25519.keyPairFromPrivate(Uint8Array.from({ length: 32 }, (_, i) => i + 1));
const RESPONDER_KEY: KeyPair = X25519.keyPairFromPrivate(Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i));
const isKit = (k: Uint8Array): string | undefined => (equalBytes(k, INITIATOR_KEY.publicKey) ? 'kit-1' : undefined);

export interface SecureWorld {
  readonly mode: TransportMode;
  readonly initiatorSnapshot: SecureLinkSnapshot;
  readonly responderSnapshot: SecureLinkSnapshot;
  /** Frames the responder received (i2r) and the initiators received (r2i), in order. */
  readonly i2r: Uint8Array[];
  readonly r2i: Uint8Array[];
  readonly delivered: { initiator: number; responder: number };
}

const worlds = new Map<TransportMode, SecureWorld>();

/** Run the scripted exchange once per mode (see the module comment). */
export function secureWorld(mode: TransportMode): SecureWorld {
  const known = worlds.get(mode);
  if (known) return known;
  const clock = new FakeClock();
  const rnd = seeded(`fuzz-secure-${mode}`);
  const i2r: Uint8Array[] = [];
  const r2i: Uint8Array[] = [];
  const queue: (() => void)[] = [];
  const delivered = { initiator: 0, responder: 0 };
  let iSnap: SecureLinkSnapshot | undefined;
  let rSnap: SecureLinkSnapshot | undefined;
  /** Damage the next IK1 on the air (flip a bit of its encrypted static key). */
  let damageNextIk1 = false;
  const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

  const responder = new SecureLink({
    role: 'responder', staticKeyPair: RESPONDER_KEY, isAuthorized: isKit, mode, clock, randomBytes: rnd, handshakeRetryMs: 1000,
    send: (f) => { const b = f.slice(); queue.push(() => { r2i.push(b); initiator.receive(b); }); },
    deliver: () => { delivered.responder++; },
    persist: (s) => { rSnap = clone(s); },
  });
  const makeInitiator = (pinned?: Uint8Array): SecureLink => new SecureLink({
    role: 'initiator', staticKeyPair: INITIATOR_KEY, mode, clock, randomBytes: rnd, handshakeRetryMs: 1000,
    ...(pinned ? { remoteStaticPinned: pinned } : {}),
    send: (f) => {
      let b = f.slice();
      if (damageNextIk1 && b[0] === 0x83) { damageNextIk1 = false; b[40] = b[40]! ^ 0x01; }
      queue.push(() => { i2r.push(b); responder.receive(b); });
    },
    deliver: () => { delivered.initiator++; },
    persist: (s) => { iSnap = clone(s); },
  });
  let initiator = makeInitiator();
  const pump = (): void => {
    for (let n = 0; queue.length > 0 && n < 10_000; n++) queue.shift()!();
    clock.advance(10);
    for (let n = 0; queue.length > 0 && n < 10_000; n++) queue.shift()!();
  };
  const talk = (k: number, tag: string): void => {
    for (let i = 0; i < k; i++) {
      initiator.send(utf8Bytes(`${tag} kit ${i}`)); pump();
      responder.send(utf8Bytes(`${tag} gateway ${i}`)); pump();
    }
  };
  // First contact: XX, with the first plaintext in XX3.
  initiator.send(utf8Bytes('hello over XX')); pump();
  talk(6, 'xx');
  // A restarted field kit with the pinned key: IK with 0-RTT data.
  initiator.close();
  initiator = makeInitiator(RESPONDER_KEY.publicKey);
  initiator.send(utf8Bytes('hello over IK')); pump();
  talk(6, 'ik');
  // Another restart whose IK1 is damaged on the air: XXfallback.
  initiator.close();
  initiator = makeInitiator(RESPONDER_KEY.publicKey);
  damageNextIk1 = true;
  initiator.send(utf8Bytes('hello after fallback')); pump();
  talk(6, 'fb');
  initiator.close();
  responder.close();
  if (!iSnap || !rSnap || !rSnap.session) throw new Error(`secure fuzz world (${mode}): the scripted exchange did not leave both ends with a session`);
  const w: SecureWorld = { mode, initiatorSnapshot: iSnap, responderSnapshot: rSnap, i2r, r2i, delivered };
  worlds.set(mode, w);
  return w;
}

interface Probe {
  link: SecureLink;
  clock: FakeClock;
  delivered: Uint8Array[];
  events: SecureLinkEvent[];
  sent: Uint8Array[];
}

function restoredLink(role: 'initiator' | 'responder', mode: TransportMode, restore: unknown, seed: number): Probe {
  const clock = new FakeClock();
  const delivered: Uint8Array[] = [];
  const events: SecureLinkEvent[] = [];
  const sent: Uint8Array[] = [];
  const link = new SecureLink({
    role, mode, clock, randomBytes: fastRandom(seed), handshakeRetryMs: 1000,
    staticKeyPair: role === 'initiator' ? INITIATOR_KEY : RESPONDER_KEY,
    ...(role === 'responder' ? { isAuthorized: isKit } : { remoteStaticPinned: RESPONDER_KEY.publicKey }),
    send: (f) => { sent.push(f.slice()); },
    deliver: (p) => { delivered.push(p.slice()); },
    onEvent: (e) => { events.push(e); },
    persist: () => { /* durable enough */ },
    restore: restore as SecureLinkSnapshot,
  });
  return { link, clock, delivered, events, sent };
}

/** Drops the link explained as "unexpected" hide an exception inside receive(): a bug. */
function unexpected(events: readonly SecureLinkEvent[]): string | undefined {
  for (const e of events) if (e.type === 'frames-dropped' && e.detail?.startsWith('unexpected')) return e.detail;
  return undefined;
}

function seedSequences(frames: readonly Uint8Array[]): Uint8Array[] {
  const ok = frames.filter((f) => f.length >= 1 && f.length <= 255);
  const out: Uint8Array[] = ok.map((f) => joinSeq([f]));
  for (let i = 0; i + 1 < ok.length; i += 2) out.push(joinSeq([ok[i]!, ok[i + 1]!]));
  out.push(joinSeq(ok.filter((f) => f[0]! >= 0x80).slice(0, 8)));
  return out;
}

function linkTarget(name: string, roles: readonly ('initiator' | 'responder')[], mode: TransportMode): FuzzTarget {
  return {
    name,
    description: `SecureLink.receive (${roles.join(' + ')}, ${mode}) restored after a real exchange, fed sequences of frames: never throws, never delivers, no "unexpected" drop, no handshake completes, the responder keeps its session`,
    maxLen: 1024,
    cost: 6,
    slowMs: 250,
    dictionary: [Uint8Array.of(0x80), Uint8Array.of(0x81), Uint8Array.of(0x82), Uint8Array.of(0x83), Uint8Array.of(0x84), Uint8Array.of(0x85),
      Uint8Array.of(0x86), Uint8Array.of(0x01, 0x87), Uint8Array.of(0x01, 0x88), Uint8Array.of(0x21), Uint8Array.of(0x61), Uint8Array.of(0x00)],
    seeds() {
      const w = secureWorld(mode);
      return [...seedSequences(w.i2r), ...seedSequences(w.r2i)];
    },
    run(input) {
      const w = secureWorld(mode);
      const frames = splitSeq(input);
      const outcomes: string[] = [];
      for (const role of roles) {
        const p = restoredLink(role, mode, role === 'initiator' ? w.initiatorSnapshot : w.responderSnapshot, hash32(toHex(input.subarray(0, 32))) ^ input.length);
        const restoreFailed = p.events.find((e) => e.type === 'restore-failed');
        check(restoreFailed === undefined, () => `${role}: its own snapshot does not restore: ${show(restoreFailed)}`);
        check(p.link.established, `${role}: not established after restore`);
        for (const f of frames) {
          p.link.receive(f);
          p.clock.advance(1500);
        }
        const u = unexpected(p.events);
        check(u === undefined, () => `${role}: receive() hid an exception: ${u}`);
        check(p.delivered.length === 0, () => `${role}: delivered ${p.delivered.length} plaintext(s) from recorded or forged frames: ${show(textOf(p.delivered[0]!))}`);
        const bad = p.events.find((e) => e.type === 'established' || e.type === 'pinned' || e.type === 'key-changed');
        check(bad === undefined, () => `${role}: event ${show(bad)} from recorded or forged frames`);
        if (role === 'responder') {
          check(p.link.established && p.link.remoteStatic !== null && equalBytes(p.link.remoteStatic, INITIATOR_KEY.publicKey), 'responder: lost or changed its session');
        }
        const drops = p.events.filter((e): e is Extract<SecureLinkEvent, { type: 'frames-dropped' }> => e.type === 'frames-dropped').map((e) => e.code);
        outcomes.push(`${role[0]}:${[...new Set(drops)].sort().join('+')}:${p.sent.length > 0 ? 'replied' : ''}:${p.link.established ? 'est' : 'lost'}`);
        p.link.close();
      }
      return outcomes.join(',');
    },
  };
}

export const secureResponder = linkTarget('secure-link-responder', ['responder'], 'encrypt');
export const secureInitiator = linkTarget('secure-link-initiator', ['initiator'], 'encrypt');
export const secureAuth = linkTarget('secure-link-auth', ['responder', 'initiator'], 'authenticate');

// ---------------------------------------------------------------------------------------------
// State snapshots from disk

const isNoise = (e: TrickleError): boolean => e.code.startsWith('ERR_NOISE_');

export const transportImport: FuzzTarget = {
  name: 'transport-import',
  description: 'SecureTransport.importState on mutated snapshot JSON: only ERR_NOISE_* TrickleErrors; an imported transport seals, opens (coded errors only, bounded time) and exports a snapshot that imports again',
  maxLen: 4096,
  cost: 2,
  mutate: mutateJson,
  seeds() {
    const out: Uint8Array[] = [];
    for (const mode of ['encrypt', 'authenticate'] as const) {
      const w = secureWorld(mode);
      for (const s of [w.initiatorSnapshot, w.responderSnapshot]) if (s.session) out.push(utf8Bytes(JSON.stringify(s.session.transport)));
    }
    const t = SecureTransport.fromKeys(new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), { nonceBits: 8, rekeyIntervalLog2: 8 });
    out.push(utf8Bytes(JSON.stringify(t.exportState())));
    return out;
  },
  run(input) {
    let snap: unknown;
    try { snap = JSON.parse(textOf(input)); } catch { return 'not-json'; }
    const r = expectCoded(() => SecureTransport.importState(snap as TransportSnapshot, { persist: () => {} }), isNoise);
    if (!r.ok) return r.outcome;
    const t = r.value;
    const w = secureWorld(t.mode);
    const sealed = expectCoded(() => t.seal(new Uint8Array(0), utf8Bytes('probe')), isNoise);
    const opened: string[] = [];
    for (const f of [...w.i2r.slice(-3), ...w.r2i.slice(-3)]) {
      const o = expectCoded(() => t.open(new Uint8Array(0), f), isNoise);
      opened.push(o.ok ? 'ok' : o.outcome);
    }
    const exported = expectCoded(() => JSON.parse(JSON.stringify(t.exportState())) as TransportSnapshot, isNoise);
    if (exported.ok) {
      const again = expectCoded(() => SecureTransport.importState(exported.value, { persist: () => {} }), isNoise);
      check(again.ok, () => `a transport's own export does not import: ${again.ok ? '' : again.outcome} ${show(exported.value)}`);
    }
    t.destroy();
    return `ok:${sealed.ok ? 'seal' : sealed.outcome}:${[...new Set(opened)].sort().join('+')}`;
  },
};

export const linkRestore: FuzzTarget = {
  name: 'secure-link-restore',
  description: 'new SecureLink({ restore }) on mutated snapshot JSON, both roles: the constructor never throws (a bad snapshot is a restore-failed event), and the restored link receives, sends and runs its timers without exceptions',
  maxLen: 8192,
  cost: 4,
  slowMs: 250,
  mutate: mutateJson,
  seeds() {
    return (['encrypt', 'authenticate'] as const).flatMap((m) => {
      const w = secureWorld(m);
      return [utf8Bytes(JSON.stringify(w.initiatorSnapshot)), utf8Bytes(JSON.stringify(w.responderSnapshot))];
    });
  },
  run(input) {
    let snap: unknown;
    try { snap = JSON.parse(textOf(input)); } catch { return 'not-json'; }
    const outcomes: string[] = [];
    for (const role of ['initiator', 'responder'] as const) {
      for (const mode of ['encrypt', 'authenticate'] as const) {
        const w = secureWorld(mode);
        let p: Probe;
        try {
          p = restoredLink(role, mode, snap, hash32(textOf(input.subarray(0, 64))));
        } catch (e) {
          throw new Error(`${role}/${mode}: new SecureLink({ restore }) threw on a snapshot read from disk: ${(e as Error).message}`, { cause: e });
        }
        for (const f of (role === 'initiator' ? w.r2i : w.i2r).slice(-2)) { p.link.receive(f); p.clock.advance(1500); }
        p.link.send(utf8Bytes('probe'));
        p.clock.advance(60_000);
        const u = unexpected(p.events);
        check(u === undefined, () => `${role}/${mode}: receive() hid an exception after restore: ${u}`);
        outcomes.push(`${role[0]}${mode[0]}:${p.events.some((e) => e.type === 'restore-failed') ? 'failed' : p.link.established ? 'est' : 'idle'}`);
        p.link.close();
      }
    }
    return outcomes.join(',');
  },
};

export const SECURE_TARGETS: readonly FuzzTarget[] = [secureResponder, secureInitiator, secureAuth, transportImport, linkRestore];
