/**
 * The routing decisions of a kit on a shared channel with relays (src/net/relay-router.ts), on
 * a fake clock: a far kit C (0x05) that cannot hear the gateway, relays B (0x12) and A (0x40).
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { RelayRouter, RELAY_OFFER, RELAY_SOLICIT } from '../../../src/net/relay-router.ts';
import { GATEWAY, readRelayed, relayFrame } from '../../../src/net/relay-header.ts';
import { readAddress } from '../../../src/net/link-address.ts';

const C = 0x05;
const B = 0x12;
const A = 0x40;
const body = Uint8Array.of(0x00, 0xaa, 0xbb);
const router = (clock: FakeClock, address: number, relay: boolean): RelayRouter =>
  new RelayRouter({ clock, address, relay, slotMs: 100, random: () => 0.5 });

/** C goes unanswered until it solicits; returns the solicitation. */
function solicitFrom(c: RelayRouter): Uint8Array {
  for (let i = 0; i < 3; i++) expect(c.wrapOwn(body, true).solicit).toBeUndefined();
  const w = c.wrapOwn(body, true);
  expect(w.solicit).toBeDefined();
  return w.solicit!;
}

describe('relay router', () => {
  it('a kit that goes unanswered solicits, takes the offer of a relay that hears the gateway, and sends through it', () => {
    const clock = new FakeClock();
    const c = router(clock, C, false);
    const b = router(clock, B, true);
    b.gatewayHeard(4);
    // Plain while nothing is known: one address byte.
    expect([...c.wrapOwn(body, false).bytes]).toEqual([C, ...body]);
    const solicit = solicitFrom(c);
    expect(readRelayed(solicit)).toMatchObject({ direction: 'up', to: GATEWAY, from: C, end: C, hopsLeft: 0 });
    expect([...readRelayed(solicit).frame]).toEqual([RELAY_SOLICIT]);

    const offer = b.heardRelayed(solicit, -10);
    expect(offer.kind).toBe('send');
    if (offer.kind !== 'send') return;
    expect(offer.forwarded).toBe(false);
    expect(offer.delayMs).toBeGreaterThan(0);
    expect(b.offerStillWanted(C)).toBe(true);
    expect(readRelayed(offer.bytes)).toMatchObject({ direction: 'down', to: C, from: B, end: C });
    expect([...readRelayed(offer.bytes).frame]).toEqual([RELAY_OFFER, 0]);

    expect(c.heardRelayed(offer.bytes, -9).kind).toBe('taken');
    expect(c.via).toBe(B);
    expect(c.hopsToGateway).toBe(1);
    const up = c.wrapOwn(body, true).bytes;
    expect(readRelayed(up)).toMatchObject({ direction: 'up', to: B, from: C, end: C, hopsLeft: 3 });

    // B forwards it to the gateway, one hop less, naming itself as the last hop.
    const fwd = b.heardRelayed(up, -9);
    expect(fwd.kind).toBe('send');
    if (fwd.kind !== 'send') return;
    expect(readRelayed(fwd.bytes)).toMatchObject({ direction: 'up', to: GATEWAY, from: B, end: C, hopsLeft: 2 });
    expect([...readRelayed(fwd.bytes).frame]).toEqual([...body]);

    // The gateway's answer for C through B: C gets an ordinary downlink (no relay header).
    const down = relayFrame({ direction: 'down', to: B, from: GATEWAY, end: C, hopsLeft: 2 }, Uint8Array.of(0x00, 0xcc));
    const last = b.heardRelayed(down, 3);
    expect(last.kind).toBe('send');
    if (last.kind !== 'send') return;
    const plain = readAddress(last.bytes);
    expect(plain).toMatchObject({ address: C, direction: 'down' });
    expect([...plain.frame]).toEqual([0x00, 0xcc]);
    expect(b.counters).toMatchObject({ forwardedUp: 1, forwardedDown: 1 });
  });

  it('two hops: A relays for B, B for C; downlinks go back the same way', () => {
    const clock = new FakeClock();
    const a = router(clock, A, true);
    const b = router(clock, B, true);
    const c = router(clock, C, false);
    a.gatewayHeard(0);
    // B cannot hear the gateway either: it finds A first.
    for (let i = 0; i < 3; i++) b.wrapOwn(body, true);
    const bSolicit = b.wrapOwn(body, true).solicit!;
    const aOffer = a.heardRelayed(bSolicit, -12);
    if (aOffer.kind !== 'send') throw new Error('A should offer');
    b.heardRelayed(aOffer.bytes, -12);
    expect(b.hopsToGateway).toBe(1);
    // Then C finds B (hops 1 in its offer).
    const bOffer = b.heardRelayed(solicitFrom(c), -12);
    if (bOffer.kind !== 'send') throw new Error('B should offer');
    expect([...readRelayed(bOffer.bytes).frame]).toEqual([RELAY_OFFER, 1]);
    c.heardRelayed(bOffer.bytes, -12);
    expect(c.hopsToGateway).toBe(2);
    const up1 = b.heardRelayed(c.wrapOwn(body, true).bytes, -12);
    if (up1.kind !== 'send') throw new Error('B should forward');
    expect(readRelayed(up1.bytes)).toMatchObject({ to: A, from: B, end: C, hopsLeft: 2 });
    const up2 = a.heardRelayed(up1.bytes, -12);
    if (up2.kind !== 'send') throw new Error('A should forward');
    expect(readRelayed(up2.bytes)).toMatchObject({ to: GATEWAY, from: A, end: C, hopsLeft: 1 });
    // Back down: the gateway names A; A knows C is behind B; B knows C is its neighbour.
    const d1 = a.heardRelayed(relayFrame({ direction: 'down', to: A, from: GATEWAY, end: C, hopsLeft: 3 }, body), 0);
    if (d1.kind !== 'send') throw new Error('A should forward down');
    expect(readRelayed(d1.bytes)).toMatchObject({ direction: 'down', to: B, from: A, end: C, hopsLeft: 2 });
    const d2 = b.heardRelayed(d1.bytes, -12);
    if (d2.kind !== 'send') throw new Error('B should deliver');
    expect(readAddress(d2.bytes)).toMatchObject({ address: C, direction: 'down' });
  });

  it('no loops, no strangers\' work: hop limit, frames for others, a kit that does not relay, unknown and expired routes', () => {
    const clock = new FakeClock();
    const b = router(clock, B, true);
    b.gatewayHeard(0);
    expect(b.heardRelayed(relayFrame({ direction: 'up', to: B, from: C, end: C, hopsLeft: 0 }, body), 0)).toEqual({ kind: 'drop', reason: 'hopLimit' });
    expect(b.heardRelayed(relayFrame({ direction: 'up', to: A, from: C, end: C, hopsLeft: 3 }, body), 0)).toEqual({ kind: 'drop', reason: 'notForUs' });
    expect(b.heardRelayed(relayFrame({ direction: 'down', to: B, from: GATEWAY, end: 0x33, hopsLeft: 3 }, body), 0)).toEqual({ kind: 'drop', reason: 'noRoute' });
    expect(b.heardRelayed(Uint8Array.of(0x7f, 0x12, 0x05), 0)).toEqual({ kind: 'drop', reason: 'header' });
    // A route learnt from an uplink expires.
    b.heardRelayed(relayFrame({ direction: 'up', to: B, from: C, end: C, hopsLeft: 3 }, body), 0);
    clock.advance(31 * 60_000);
    b.gatewayHeard(0);
    expect(b.heardRelayed(relayFrame({ direction: 'down', to: B, from: GATEWAY, end: C, hopsLeft: 3 }, body), 0)).toEqual({ kind: 'drop', reason: 'noRoute' });
    // A kit without --relay forwards nothing and offers nothing.
    const plainKit = router(clock, A, false);
    plainKit.gatewayHeard(0);
    expect(plainKit.heardRelayed(relayFrame({ direction: 'up', to: A, from: C, end: C, hopsLeft: 3 }, body), 0)).toEqual({ kind: 'drop', reason: 'notRelaying' });
    expect(plainKit.heardRelayed(relayFrame({ direction: 'up', to: GATEWAY, from: C, end: C, hopsLeft: 0 }, Uint8Array.of(RELAY_SOLICIT)), 0).kind).toBe('drop');
    // A relay with no way to the gateway offers nothing.
    const lost = router(clock, 0x22, true);
    expect(lost.heardRelayed(relayFrame({ direction: 'up', to: GATEWAY, from: C, end: C, hopsLeft: 0 }, Uint8Array.of(RELAY_SOLICIT)), 0)).toEqual({ kind: 'drop', reason: 'noRoute' });
  });

  it('a relay that hears another offer first holds its own back; the better placed one offers first', () => {
    const clock = new FakeClock();
    const near = router(clock, A, true);
    const edge = router(clock, B, true);
    near.gatewayHeard(0);
    edge.gatewayHeard(0);
    const c = router(clock, C, false);
    const s = solicitFrom(c);
    const fromNear = near.heardRelayed(s, 8); // heard C strongly: close to C, so not the edge
    const fromEdge = edge.heardRelayed(s, -15); // heard C weakly: at the edge, reaches furthest
    if (fromNear.kind !== 'send' || fromEdge.kind !== 'send') throw new Error('both should plan an offer');
    expect(fromEdge.delayMs).toBeLessThan(fromNear.delayMs);
    // The edge relay's offer goes first; the near one hears it and holds its own back.
    near.heardRelayed(fromEdge.bytes, 0);
    expect(near.offerStillWanted(C)).toBe(false);
    expect(edge.offerStillWanted(C)).toBe(true);
    expect(near.counters.offersHeld).toBe(1);
  });

  it('a relay that stops answering is left out: the kit solicits again and takes another', () => {
    const clock = new FakeClock();
    const c = router(clock, C, false);
    const b = router(clock, B, true);
    const a = router(clock, A, true);
    b.gatewayHeard(0);
    a.gatewayHeard(0);
    const o1 = b.heardRelayed(solicitFrom(c), -10);
    if (o1.kind !== 'send') throw new Error('B should offer');
    c.heardRelayed(o1.bytes, -10);
    expect(c.via).toBe(B);
    // B goes away: C's frames go unanswered; C solicits again and leaves B out.
    const s2 = solicitFrom(c);
    expect(c.via).toBeUndefined();
    const again = b.heardRelayed(s2, -10);
    if (again.kind !== 'send') throw new Error('B offers again');
    c.heardRelayed(again.bytes, -10);
    expect(c.via).toBeUndefined(); // B is avoided
    const o2 = a.heardRelayed(s2, -10);
    if (o2.kind !== 'send') throw new Error('A should offer');
    c.heardRelayed(o2.bytes, -10);
    expect(c.via).toBe(A);
    // Answers keep the route: no new solicitation while they come.
    for (let i = 0; i < 10; i++) { expect(c.wrapOwn(body, true).solicit).toBeUndefined(); c.answered(); }
    // Hearing the gateway itself again, C goes straight to it.
    c.gatewayHeard(2);
    expect(c.via).toBeUndefined();
    expect([...c.wrapOwn(body, true).bytes]).toEqual([C, ...body]);
  });
});
