/**
 * Routes of a field kit on a shared channel with relays (issue 13): which way its own uplinks
 * go, and what it does with relayed frames it hears. Pure logic on an injected clock; the
 * station (./station.ts) puts the bytes on air.
 *
 * UPLINK ROUTE (every kit). A kit that has heard the gateway lately (any downlink, at an SNR at
 * or above `minSnrDb`) sends as on a plain shared channel: one address byte. One that has not,
 * and whose frames go unanswered (`unanswered` frames that asked for an answer, none heard since),
 * SOLICITS: a 5-byte relayed frame to everyone (to = 127, from = end = itself, body RELAY_SOLICIT).
 * Each relay that has a route to the gateway OFFERS itself after a delay that grows with its
 * hops and shrinks with the SNR it heard the solicitation at (the contention window by SNR of
 * Meshtastic's router: the best placed answers first; one that hears an offer for the same kit
 * before its own goes holds it back). The kit takes the first offer (the best placed) and sends
 * through that relay from then on (relay header, ./relay-header.ts), until it hears the gateway
 * again or its frames through the relay go unanswered, when the relay is left out for
 * `avoidMs` and it solicits again.
 *
 * FORWARDING (a kit started with --relay). An uplink for it (to = its address): it learns that
 * the end kit is reached through the last hop (`from`), and sends the frame on toward the
 * gateway with one hop less: to = 127 when it hears the gateway itself, else to its own relay.
 * A downlink for it: to the end kit, as an ordinary downlink (one address byte: the end kit
 * never sees a relay header) when the end kit is its direct neighbour (from = end when learnt),
 * else on to the next relay with one hop less; no route, or no hops left: dropped and counted.
 * Routes learnt from uplinks expire after `routeTtlMs`: a relay cannot authenticate what it
 * hears (only the gateway can), so a forged header costs at most a route that the kit's next
 * genuine uplink corrects.
 */
import type { Clock } from '../util/clock.ts';
import { GATEWAY, MAX_HOPS_LEFT, readRelayed, relayFrame, type RelayedFrame } from './relay-header.ts';
import { addressFrame } from './link-address.ts';

/** Body of a solicitation (a kit looks for a relay): not a secure-link kind (0x00..0x88). */
export const RELAY_SOLICIT = 0xf1;
/** Body of an offer: [RELAY_OFFER, hops from the relay to the gateway (0: it hears the gateway)]. */
export const RELAY_OFFER = 0xf2;

export interface RelayRouterOptions {
  clock: Clock;
  /** This kit's link address. */
  address: number;
  /** Forward for other kits (--relay). */
  relay: boolean;
  /** A gateway heard below this SNR does not count as heard (dB; default −7: a 5 dB margin at SF7). */
  minSnrDb?: number;
  /** The gateway counts as heard for this long after its last frame (default 10 min). */
  gatewayHeardForMs?: number;
  /** Frames asking for an answer, with none heard since, before a kit looks for a relay (default 3). */
  unanswered?: number;
  /** A learnt route lives this long without a frame that renews it (default 30 min). */
  routeTtlMs?: number;
  /** A relay whose route failed is left out for this long (default 10 min). */
  avoidMs?: number;
  /** One slot of the offer delay, ms (a frame's airtime is a good value). */
  slotMs: number;
  random: () => number;
}

export type RelayAction =
  /** Send these bytes on air (a frame to forward, an offer, a solicitation). */
  | { kind: 'send'; bytes: Uint8Array; delayMs: number; forwarded: boolean }
  /** Nothing to do (counted under `reason`). */
  | { kind: 'drop'; reason: 'notForUs' | 'noRoute' | 'hopLimit' | 'notRelaying' | 'header' }
  /** A control frame taken in (an offer chosen, a solicitation noted). */
  | { kind: 'taken' };

interface Route { via: number; hops: number; learntAt: number }

export class RelayRouter {
  private gatewayHeardAt = -Infinity;
  private parent: { address: number; hops: number } | undefined;
  private soliciting = false;
  private askedSinceHeard = 0;
  private readonly avoid = new Map<number, number>();
  private readonly routes = new Map<number, Route>();
  /** Offers this relay has scheduled, by end kit: cancelled when another relay offers first. */
  private readonly pendingOffers = new Map<number, { cancelled: boolean }>();
  readonly counters = { forwardedUp: 0, forwardedDown: 0, solicitations: 0, offersSent: 0, offersHeld: 0, relayChanges: 0,
    dropped: { notForUs: 0, noRoute: 0, hopLimit: 0, notRelaying: 0, header: 0 } };
  private readonly minSnrDb: number;
  private readonly heardForMs: number;
  private readonly unansweredLimit: number;
  private readonly routeTtlMs: number;
  private readonly avoidMs: number;

  constructor(private readonly o: RelayRouterOptions) {
    this.minSnrDb = o.minSnrDb ?? -7;
    this.heardForMs = o.gatewayHeardForMs ?? 600_000;
    this.unansweredLimit = o.unanswered ?? 3;
    this.routeTtlMs = o.routeTtlMs ?? 1_800_000;
    this.avoidMs = o.avoidMs ?? 600_000;
  }

  /** Hops from this kit to the gateway: 0 when it hears the gateway, else its relay's + 1; undefined: no route. */
  get hopsToGateway(): number | undefined {
    if (this.hearsGateway()) return 0;
    return this.parent ? this.parent.hops + 1 : undefined;
  }

  /** The relay this kit sends through (undefined: straight to the gateway, or none found yet). */
  get via(): number | undefined { return this.hearsGateway() ? undefined : this.parent?.address; }

  /** A frame from the gateway was heard (any downlink, for any kit). */
  gatewayHeard(snrDb: number | undefined): void {
    if (snrDb !== undefined && snrDb < this.minSnrDb) return;
    this.gatewayHeardAt = this.o.clock.now();
    this.askedSinceHeard = 0;
    this.soliciting = false;
  }

  /** A frame addressed to this kit was heard (its answers arrive: the route works). */
  answered(): void {
    this.askedSinceHeard = 0;
  }

  /**
   * This kit's own frame, as it goes on air: plain (one address byte) or to its relay. Returns
   * also a solicitation to send first when the kit has gone unanswered too long.
   */
  wrapOwn(frame: Uint8Array, expectsAnswer: boolean): { bytes: Uint8Array; solicit?: Uint8Array } {
    if (expectsAnswer) this.askedSinceHeard++;
    let solicit: Uint8Array | undefined;
    if (this.askedSinceHeard > this.unansweredLimit && !this.soliciting) {
      // Unanswered the way it goes: that relay (if any) is left out, and a new one is sought.
      if (this.parent) {
        this.avoid.set(this.parent.address, this.o.clock.now() + this.avoidMs);
        this.parent = undefined;
        this.counters.relayChanges++;
      }
      this.gatewayHeardAt = -Infinity;
      this.soliciting = true;
      this.counters.solicitations++;
      solicit = relayFrame({ direction: 'up', to: GATEWAY, from: this.o.address, end: this.o.address, hopsLeft: 0 }, Uint8Array.of(RELAY_SOLICIT));
    }
    const p = this.hearsGateway() ? undefined : this.parent;
    const bytes = p === undefined
      ? addressFrame(this.o.address, 'up', frame)
      : relayFrame({ direction: 'up', to: p.address, from: this.o.address, end: this.o.address, hopsLeft: MAX_HOPS_LEFT }, frame);
    return solicit ? { bytes, solicit } : { bytes };
  }

  /** A relayed frame heard (byte 0 is D|127), with the SNR it was heard at. */
  heardRelayed(raw: Uint8Array, snrDb: number | undefined): RelayAction {
    let f: RelayedFrame;
    try { f = readRelayed(raw); } catch { return this.drop('header'); }
    const now = this.o.clock.now();
    const body = f.frame;
    // Control: solicitations and offers.
    if (body.length >= 1 && body[0] === RELAY_SOLICIT && f.direction === 'up' && f.to === GATEWAY) return this.onSolicit(f.end, snrDb);
    if (body.length >= 2 && body[0] === RELAY_OFFER && f.direction === 'down') return this.onOffer(f, body[1]!);
    if (f.to !== this.o.address) return this.drop('notForUs');
    if (!this.o.relay) return this.drop('notRelaying');
    if (f.direction === 'up') {
      this.routes.set(f.end, { via: f.from, hops: 0, learntAt: now });
      if (f.hopsLeft === 0) return this.drop('hopLimit');
      const hops = this.hopsToGateway;
      if (hops === undefined) return this.drop('noRoute');
      const to = hops === 0 ? GATEWAY : this.parent!.address;
      this.counters.forwardedUp++;
      return { kind: 'send', bytes: relayFrame({ direction: 'up', to, from: this.o.address, end: f.end, hopsLeft: f.hopsLeft - 1 }, body), delayMs: 0, forwarded: true };
    }
    const r = this.routes.get(f.end);
    if (r === undefined || now - r.learntAt > this.routeTtlMs) return this.drop('noRoute');
    this.counters.forwardedDown++;
    if (r.via === f.end) return { kind: 'send', bytes: addressFrame(f.end, 'down', body), delayMs: 0, forwarded: true };
    if (f.hopsLeft === 0) return this.drop('hopLimit');
    return { kind: 'send', bytes: relayFrame({ direction: 'down', to: r.via, from: this.o.address, end: f.end, hopsLeft: f.hopsLeft - 1 }, body), delayMs: 0, forwarded: true };
  }

  status(): Record<string, unknown> {
    return {
      relay: this.o.relay, via: this.via ?? null, hopsToGateway: this.hopsToGateway ?? null,
      routes: this.routes.size, ...this.counters, dropped: { ...this.counters.dropped },
    };
  }

  private hearsGateway(): boolean {
    return this.o.clock.now() - this.gatewayHeardAt <= this.heardForMs;
  }

  private drop(reason: keyof RelayRouter['counters']['dropped']): RelayAction {
    this.counters.dropped[reason]++;
    return { kind: 'drop', reason };
  }

  /** A kit looks for a relay: offer, after the delay of our place (hops, SNR), unless someone offers first. */
  private onSolicit(end: number, snrDb: number | undefined): RelayAction {
    if (!this.o.relay || end === this.o.address) return this.drop('notRelaying');
    const hops = this.hopsToGateway;
    if (hops === undefined || hops >= MAX_HOPS_LEFT) return this.drop('noRoute');
    // Contention window by SNR: a strong solicitation (near) waits longer than a weak one (far:
    // the better placed relay for a kit out of range is the one at the edge), 0..8 slots, plus
    // 8 slots per hop to the gateway, plus a random slot against ties.
    const snr = Math.max(-20, Math.min(10, snrDb ?? 0));
    const slots = hops * 8 + ((snr + 20) / 30) * 8 + this.o.random();
    const pending = { cancelled: false };
    this.pendingOffers.set(end, pending);
    this.counters.offersSent++;
    return { kind: 'send', bytes: relayFrame({ direction: 'down', to: end, from: this.o.address, end, hopsLeft: 0 }, Uint8Array.of(RELAY_OFFER, hops)), delayMs: slots * this.o.slotMs, forwarded: false };
  }

  /** True while an offer scheduled for `end` should still go (no other relay offered first). */
  offerStillWanted(end: number): boolean {
    const p = this.pendingOffers.get(end);
    if (p === undefined) return false;
    this.pendingOffers.delete(end);
    if (p.cancelled) { this.counters.offersSent--; this.counters.offersHeld++; }
    return !p.cancelled;
  }

  private onOffer(f: RelayedFrame, relayHops: number): RelayAction {
    // Another relay offered to the same kit first: hold ours back.
    const mine = this.pendingOffers.get(f.end);
    if (mine && f.from !== this.o.address) mine.cancelled = true;
    if (f.end !== this.o.address || f.to !== this.o.address) return { kind: 'taken' };
    const now = this.o.clock.now();
    const avoidUntil = this.avoid.get(f.from);
    if (avoidUntil !== undefined && now < avoidUntil) return { kind: 'taken' };
    if (relayHops + 1 > MAX_HOPS_LEFT) return { kind: 'taken' };
    if (this.parent === undefined || this.soliciting) {
      if (this.parent?.address !== f.from) this.counters.relayChanges++;
      this.parent = { address: f.from, hops: relayHops };
      this.soliciting = false;
      this.askedSinceHeard = 0;
    }
    return { kind: 'taken' };
  }
}
