/**
 * Two SecureLinks joined by a simulated radio channel on a FakeClock: every frame is recorded
 * (direction, bytes, lost or not); a seeded loss rate, a tamper hook and a latency.
 */
import { FakeClock } from '../../helpers/fake-clock.ts';
import { X25519, type KeyPair } from '../../../src/secure/dh.ts';
import { SecureLink, type SecureLinkEvent, type SecureLinkOptions, type SecureLinkSnapshot } from '../../../src/secure/secure-link.ts';
import type { TransportMode } from '../../../src/secure/transport.ts';
import { equalBytes } from '../../../src/util/bytes.ts';
import { seededRandom } from './support.ts';
import { mulberry32 as prng } from '../../helpers/prng.ts';
export { prng };

export type Dir = 'i2r' | 'r2i';

export interface AirFrame {
  dir: Dir;
  bytes: Uint8Array;
  lost: boolean;
  atMs: number;
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);


export interface PairOptions {
  mode?: TransportMode;
  seed?: string;
  lossRate?: number;
  lossSeed?: number;
  latencyMs?: number;
  /** Responder authorizes the initiator (default true). */
  authorized?: boolean;
  /** Initiator starts with this pinned key. */
  pinned?: Uint8Array;
  initiatorKey?: KeyPair;
  responderKey?: KeyPair;
  persist?: boolean;
  /**
   * Start where IKpsk1 applies: one XX handshake (empty payload) has run, then the initiator
   * lost its session but kept its resumption secret (as after a session reset); the air,
   * deliveries and events are cleared. Implies recording snapshots in `disk`.
   */
  resumable?: boolean;
  extra?: Partial<SecureLinkOptions>;
}

export class LinkPair {
  readonly clock = new FakeClock();
  readonly air: AirFrame[] = [];
  readonly delivered: Record<'initiator' | 'responder', string[]> = { initiator: [], responder: [] };
  readonly deliveredBytes: Record<'initiator' | 'responder', Uint8Array[]> = { initiator: [], responder: [] };
  readonly events: Record<'initiator' | 'responder', SecureLinkEvent[]> = { initiator: [], responder: [] };
  readonly disk: { initiator?: SecureLinkSnapshot; responder?: SecureLinkSnapshot } = {};
  readonly rnd;
  readonly initiatorKey: KeyPair;
  responderKey: KeyPair;
  initiator!: SecureLink;
  responder!: SecureLink;
  authorized: boolean;
  /** Return a replacement frame, or null to lose it. */
  tamper: ((f: AirFrame, index: number) => Uint8Array | null) | null = null;
  /** Called after each delivery (e.g. an application that answers). */
  onDeliver: ((side: 'initiator' | 'responder', text: string) => void) | null = null;
  lossRate: number;
  #loss: () => number;
  readonly opts: PairOptions;

  constructor(opts: PairOptions = {}) {
    this.opts = opts;
    this.rnd = seededRandom(opts.seed ?? 'pair');
    this.initiatorKey = opts.initiatorKey ?? X25519.generateKeyPair(seededRandom(`${opts.seed ?? 'pair'}-ikey`));
    this.responderKey = opts.responderKey ?? X25519.generateKeyPair(seededRandom(`${opts.seed ?? 'pair'}-rkey`));
    this.authorized = opts.authorized ?? true;
    this.lossRate = opts.lossRate ?? 0;
    this.#loss = prng(opts.lossSeed ?? 1);
    this.initiator = this.makeInitiator(opts.pinned !== undefined ? { remoteStaticPinned: opts.pinned } : {});
    this.responder = this.makeResponder({});
    if (opts.resumable === true) {
      const loss = this.lossRate;
      this.lossRate = 0;
      this.initiator.send(new Uint8Array(0));
      this.run();
      if (!this.initiator.established || !this.responder.established) throw new Error('resumable: the XX handshake did not complete');
      this.restartWithoutSession('initiator');
      this.lossRate = loss;
      this.air.length = 0;
      this.events.initiator.length = 0;
      this.events.responder.length = 0;
    }
  }

  get #recording(): boolean {
    return this.opts.persist === true || this.opts.resumable === true;
  }

  /** Restart one end from its last snapshot with the session taken out (secrets and caches kept). */
  restartWithoutSession(side: 'initiator' | 'responder'): void {
    const snap = this.disk[side];
    if (snap === undefined) throw new Error(`no snapshot of the ${side}`);
    this[side].close();
    const restore = { ...snap, session: null };
    if (side === 'initiator') this.initiator = this.makeInitiator({ restore });
    else this.responder = this.makeResponder({ restore });
  }

  #transmit(dir: Dir, bytes: Uint8Array): void {
    const f: AirFrame = { dir, bytes: bytes.slice(), lost: false, atMs: this.clock.now() };
    const index = this.air.length;
    this.air.push(f);
    if (this.lossRate > 0 && this.#loss() < this.lossRate) {
      f.lost = true;
      return;
    }
    let out: Uint8Array | null = f.bytes;
    if (this.tamper !== null) out = this.tamper(f, index);
    if (out === null) {
      f.lost = true;
      return;
    }
    const target = dir === 'i2r' ? 'responder' : 'initiator';
    const deliverTo = out;
    this.clock.setTimer(this.opts.latencyMs ?? 50, () => this[target].receive(deliverTo));
  }

  makeInitiator(extra: Partial<SecureLinkOptions>): SecureLink {
    return new SecureLink({
      role: 'initiator',
      staticKeyPair: this.initiatorKey,
      mode: this.opts.mode ?? 'encrypt',
      clock: this.clock,
      randomBytes: this.rnd,
      send: (f) => this.#transmit('i2r', f),
      deliver: (p) => this.#deliver('initiator', p),
      onEvent: (e) => this.events.initiator.push(e),
      handshakeRetryMs: 1000,
      ...(this.#recording ? { persist: (s: SecureLinkSnapshot) => { this.disk.initiator = JSON.parse(JSON.stringify(s)) as SecureLinkSnapshot; } } : {}),
      ...this.opts.extra,
      ...extra,
    });
  }

  makeResponder(extra: Partial<SecureLinkOptions>): SecureLink {
    return new SecureLink({
      role: 'responder',
      staticKeyPair: this.responderKey,
      isAuthorized: (rs) => (this.authorized && equalBytes(rs, this.initiatorKey.publicKey) ? 'kit-1' : undefined),
      mode: this.opts.mode ?? 'encrypt',
      clock: this.clock,
      randomBytes: this.rnd,
      send: (f) => this.#transmit('r2i', f),
      deliver: (p) => this.#deliver('responder', p),
      onEvent: (e) => this.events.responder.push(e),
      handshakeRetryMs: 1000,
      ...(this.#recording ? { persist: (s: SecureLinkSnapshot) => { this.disk.responder = JSON.parse(JSON.stringify(s)) as SecureLinkSnapshot; } } : {}),
      ...this.opts.extra,
      ...extra,
    });
  }

  #deliver(side: 'initiator' | 'responder', p: Uint8Array): void {
    this.delivered[side].push(dec(p));
    this.deliveredBytes[side].push(p.slice());
    this.onDeliver?.(side, dec(p));
  }

  /** Restart one end: a new SecureLink, restored from its last persisted snapshot if `restore`. */
  restart(side: 'initiator' | 'responder', how: { restore: boolean; extra?: Partial<SecureLinkOptions> }): void {
    this[side].close();
    const snap = this.disk[side];
    const extra = { ...(how.restore && snap !== undefined ? { restore: snap } : {}), ...how.extra };
    if (side === 'initiator') this.initiator = this.makeInitiator(extra);
    else this.responder = this.makeResponder(extra);
  }

  run(ms = 60_000): void {
    this.clock.advance(ms);
  }

  /** Frames sent since index `from` (lost ones included). */
  since(from: number): AirFrame[] {
    return this.air.slice(from);
  }

  bytesOnAir(from = 0, to = this.air.length): number {
    return this.air.slice(from, to).reduce((n, f) => n + f.bytes.length, 0);
  }

  kinds(from = 0): string[] {
    return this.air.slice(from).map((f) => kindName(f.bytes));
  }

  eventTypes(side: 'initiator' | 'responder'): string[] {
    return this.events[side].filter((e) => e.type !== 'frames-dropped').map((e) => e.type);
  }

  dropped(side: 'initiator' | 'responder', code: string): number {
    return (this[side].stats().dropped[code] ?? 0);
  }
}

export function kindName(f: Uint8Array): string {
  const b = f[0] ?? -1;
  if (b >= 0 && b < 0x80) return 'T';
  return ({ 0x80: 'XX1', 0x81: 'XX2', 0x82: 'XX3', 0x83: 'IK1', 0x84: 'IK2', 0x85: 'FB1', 0x86: 'FB2', 0x87: 'REFUSED', 0x88: 'UNKNOWN' } as Record<number, string>)[b] ?? `?${b}`;
}
