/**
 * Hardware-in-the-loop over real ttys: two TransparentModems on two socat PTY pairs,
 * joined by a LinkRelay that plays a noisy radio channel.
 *
 *   host modem ⇄ ptyA.a —socat— ptyA.b ⇄ LinkRelay ⇄ ptyB.b —socat— ptyB.a ⇄ gateway modem
 *
 * This is the path the demo uses; only the radio is simulated (by the relay).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPtyPair, type PtyPair } from '../../src/link/pty.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import { LinkRelay, type RelayDirection } from '../../src/link/relay.ts';
import type { Link } from '../../src/link/link.ts';
import {
  TransparentModem, TransparentDeframer, encodeTransparentFrame,
} from '../../src/modem/transparent/transparent-modem.ts';
import { END, ESC } from '../../src/modem/transparent/slip.ts';
import { concatBytes, toHex } from '../../src/util/bytes.ts';
import type { ErrorCode } from '../../src/errors.ts';
import { noSocatReason, socatAvailable } from '../helpers/pty.ts';
import { mulberry32Int as prng } from '../helpers/prng.ts';

const MAX_FRAME_LEN = 255;


function randomPayload(rnd: (n: number) => number, len: number): Uint8Array {
  // One byte in four is END or ESC, so escaping is exercised in every frame.
  return Uint8Array.from({ length: len }, () => (rnd(4) === 0 ? [END, ESC][rnd(2)]! : rnd(256)));
}

/** What a receiver drops for `item` sent between two frames (judged as END item END). */
function dropsFor(item: Uint8Array): ErrorCode[] {
  return new TransparentDeframer({ maxFrameLen: MAX_FRAME_LEN })
    .push(concatBytes(Uint8Array.of(END), item, Uint8Array.of(END))).errors.map((e) => e.code);
}

type DamageKind = 'noise' | 'truncated' | 'badFcs' | 'short' | 'badEscape' | 'tooLong';
const KINDS: DamageKind[] = ['noise', 'truncated', 'badFcs', 'short', 'badEscape', 'tooLong'];

function damage(kind: DamageKind, rnd: (n: number) => number): Uint8Array {
  for (;;) {
    let item: Uint8Array;
    switch (kind) {
      case 'noise': item = Uint8Array.from({ length: 1 + rnd(40) }, () => rnd(256)); break;
      case 'truncated': {
        const full = encodeTransparentFrame(randomPayload(rnd, 10 + rnd(100)));
        item = full.subarray(0, 4 + rnd(full.length - 6)); // END + at least 3 bytes, no closing END
        break;
      }
      case 'badFcs': {
        const full = encodeTransparentFrame(randomPayload(rnd, 1 + rnd(100)));
        item = full.slice();
        item[item.length - 2] = item[item.length - 2] === 0x55 ? 0x56 : 0x55; // last FCS byte, never END/ESC
        break;
      }
      case 'short': item = Uint8Array.of(END, 1 + rnd(100)); break;
      case 'badEscape': item = Uint8Array.of(END, 1, 2, ESC, 3 + rnd(100), 4, 5, 6); break;
      case 'tooLong': item = encodeTransparentFrame(randomPayload(rnd, MAX_FRAME_LEN + 1 + rnd(50))); break;
    }
    // Skip the 1-in-65536 garbage that happens to carry a valid FCS: no 16-bit check rejects it.
    const r = new TransparentDeframer({ maxFrameLen: MAX_FRAME_LEN })
      .push(concatBytes(Uint8Array.of(END), item, Uint8Array.of(END)));
    if (r.frames.length === 0) return item;
  }
}

/** Resolves when `count()` reaches `target`, re-checking whenever `subscribe`'s event fires. */
function reach(subscribe: (fn: () => void) => void, count: () => number, target: number): Promise<void> {
  return new Promise((resolve) => {
    if (count() >= target) { resolve(); return; }
    let done = false;
    subscribe(() => { if (!done && count() >= target) { done = true; resolve(); } });
  });
}

describe.skipIf(!socatAvailable)(`transparent modem over socat PTYs and a noisy relay${socatAvailable ? '' : ` (${noSocatReason})`}`, () => {
  let pairA: PtyPair;
  let pairB: PtyPair;
  let links: Link[] = [];
  let relay: LinkRelay;
  let host: TransparentModem;
  let gateway: TransparentModem;
  const bytesIn: Record<RelayDirection, number> = { aToB: 0, bToA: 0 };
  const relayListeners: (() => void)[] = [];

  beforeAll(async () => {
    pairA = await createPtyPair();
    pairB = await createPtyPair();
    const [hostLink, relayA, relayB, gatewayLink] = await Promise.all([
      openSerialLink(pairA.a), openSerialLink(pairA.b), openSerialLink(pairB.b), openSerialLink(pairB.a),
    ]);
    links = [hostLink, relayA, relayB, gatewayLink];
    relay = new LinkRelay(relayA, relayB);
    relay.onChunk((c, d) => { bytesIn[d] += c.length; for (const l of relayListeners) l(); });
    host = new TransparentModem(hostLink, { maxFrameLen: MAX_FRAME_LEN });
    gateway = new TransparentModem(gatewayLink, { maxFrameLen: MAX_FRAME_LEN });
  });

  afterAll(async () => {
    await Promise.all(links.map((l) => l.close()));
    await Promise.all([pairA?.close(), pairB?.close()]);
  });

  async function run(sender: TransparentModem, receiver: TransparentModem, dir: RelayDirection, seed: number, n: number): Promise<void> {
    const rnd = prng(seed);
    const received: string[] = [];
    const frameListeners: (() => void)[] = [];
    receiver.onFrame((f) => { received.push(toHex(f)); for (const l of frameListeners) l(); });
    const before = receiver.stats();
    const relayBefore = relay.stats()[dir];
    const sentBefore = sender.stats().wireBytesSent;

    const sent: string[] = [];
    const expected: Partial<Record<ErrorCode, number>> = {};
    let injected = 0;
    let target = bytesIn[dir];
    for (let i = 0; i < n; i++) {
      const payload = randomPayload(rnd, 1 + rnd(MAX_FRAME_LEN));
      sent.push(toHex(payload));
      const { wireBytes } = await sender.send(payload);
      target += wireBytes;
      // Inject only once the whole good frame has crossed the relay, so damage lands between frames.
      await reach((fn) => relayListeners.push(fn), () => bytesIn[dir], target);
      if (i === n - 1) break; // an unterminated item at the very end would never be judged
      const item = damage(KINDS[i % KINDS.length]!, rnd);
      for (const code of dropsFor(item)) expected[code] = (expected[code] ?? 0) + 1;
      injected += item.length;
      await relay.inject(dir, item);
    }
    await reach((fn) => frameListeners.push(fn), () => received.length, n);

    expect(received).toEqual(sent);
    // The last good frame has arrived and nothing follows it, so every byte is in.
    const after = receiver.stats();
    const dropped: Partial<Record<ErrorCode, number>> = {};
    for (const [code, count] of Object.entries(after.dropped) as [ErrorCode, number][]) {
      const d = count - (before.dropped[code] ?? 0);
      if (d > 0) dropped[code] = d;
    }
    expect(dropped).toEqual(expected);
    for (const code of ['ERR_FRAME_BAD_FCS', 'ERR_FRAME_TOO_SHORT', 'ERR_FRAME_BAD_ESCAPE', 'ERR_FRAME_TOO_LONG'] as const) {
      expect(dropped[code], code).toBeGreaterThan(0);
    }
    expect(after.framesReceived - before.framesReceived).toBe(n);
    // Every byte the sender wrote and the relay injected reached the receiver, and nothing else.
    const sentBytes = sender.stats().wireBytesSent - sentBefore;
    const relayAfter = relay.stats()[dir];
    expect(relayAfter.bytesInjected - relayBefore.bytesInjected).toBe(injected);
    expect(relayAfter.bytesIn - relayBefore.bytesIn).toBe(sentBytes);
    expect(after.wireBytesReceived - before.wireBytesReceived).toBe(sentBytes + injected);
  }

  it('delivers every good frame host → gateway, in order, and counts each damaged one', async () => {
    await run(host, gateway, 'aToB', 0x7121c41e, 60);
  });

  it('does the same gateway → host', async () => {
    await run(gateway, host, 'bToA', 0x5eed, 60);
  });

  it('on a lossy channel (chunks dropped or cut short) delivers only frames that were sent, in order, and recovers', async () => {
    const rnd = prng(42);
    const received: string[] = [];
    const frameListeners: (() => void)[] = [];
    gateway.onFrame((f) => { received.push(toHex(f)); for (const l of frameListeners) l(); });
    let lossy = true;
    // One chunk in five is lost, one in five loses its second half (a cut-off transmission).
    relay.setFilter((chunk, dir) => {
      if (!lossy || dir !== 'aToB') return chunk;
      const fate = rnd(5);
      return fate === 0 ? null : fate === 1 ? chunk.subarray(0, chunk.length >> 1) : chunk;
    });
    const statsBefore = gateway.stats();
    const sent: string[] = [];
    let target = bytesIn.aToB;
    for (let i = 0; i < 80; i++) {
      const p = randomPayload(rnd, 1 + rnd(MAX_FRAME_LEN));
      sent.push(toHex(p));
      target += (await host.send(p)).wireBytes;
      // One frame at a time, so chunks are about one frame each and the losses vary.
      await reach((fn) => relayListeners.push(fn), () => bytesIn.aToB, target);
    }
    // The channel is clean again: the next frame must arrive whatever state the loss left
    // the receiver in.
    lossy = false;
    const last = randomPayload(rnd, 50);
    await host.send(last);
    await reach((fn) => frameListeners.push(fn), () => (received.at(-1) === toHex(last) ? 1 : 0), 1);
    relay.setFilter(undefined);
    const statsAfter = gateway.stats();

    // Received frames are a subsequence of the sent ones (CRC-16 lets 1 in 65536 damaged
    // frames through; with a fixed seed and a few dozen damaged frames that is ~1e-3 per run).
    let k = 0;
    for (const f of received.slice(0, -1)) {
      while (k < sent.length && sent[k] !== f) k++;
      expect(k, `frame ${f.slice(0, 16)}… was never sent`).toBeLessThan(sent.length);
      k++;
    }
    expect(received.length - 1).toBeLessThan(sent.length); // some really were lost
    expect(relay.stats().aToB.chunksDropped).toBeGreaterThan(0);
    expect(statsAfter.framesReceived - statsBefore.framesReceived).toBe(received.length);
    const damaged = Object.values(statsAfter.dropped).reduce((x, y) => x + y, 0)
      - Object.values(statsBefore.dropped).reduce((x, y) => x + y, 0);
    expect(damaged).toBeGreaterThan(0);
  });
});
