/**
 * PeerTable: a gateway on a shared channel. One Station (one radio, one duty-cycle ledger shared
 * fairly across kits by the queue), and one PeerStack per kit address (./link-address.ts),
 * each with its own security session, CoAP endpoint and state files, so a handshake,
 * a restart or a fault of one kit never touches another's session.
 *
 * A stack is made the first time an uplink with its address is heard (or at start for an
 * address that has saved state), for any of the 127 addresses: nothing of it is trusted before
 * its SecureLink authenticates a kit on the authorized list. What a stranger can make us keep is
 * therefore bounded (127 stacks), and what it can make us send is one shared reply budget for
 * unauthenticated frames (SecureLink's replyBudget), not one per address.
 *
 * Two authorized kits whose keys derive the same address would share one stack and take turns
 * at its session; the table notices (a different kit established on an address within the
 * hour) and says which kit to start with `--link-address`.
 */
import { fingerprint } from '../secure/fingerprint.ts';
import { LINK_FRAME_OVERHEAD, createReplyBudget, type SecureLinkSnapshot } from '../secure/secure-link.ts';
import { equalBytes } from '../util/bytes.ts';
import { formatAddress, MAX_KIT_ADDRESS } from './link-address.ts';
import { openStation, type Station } from './station.ts';
import { createPeerStack, type CoapSessionState, type PeerStack } from './peer-stack.ts';
import { radioStackOf, WIRE_CONTEXT, type RadioStack, type RadioStackOptions, type StateStore } from './radio-stack.ts';

export interface PeerTableOptions extends RadioStackOptions {
  /** Each kit's own state: its CoAP session and its secure-link snapshot. */
  kitStores: (address: number) => { coapStateStore?: StateStore<CoapSessionState>; secure?: { persist: (s: SecureLinkSnapshot) => void; restore: SecureLinkSnapshot | undefined } };
  /** A kit's stack was made (the app attaches its Matrix side to `radio`). */
  onKit: (address: number, radio: RadioStack) => void;
  /** Addresses with saved state, made at start so their sessions resume. */
  knownAddresses?: () => number[];
}

export interface PeerTable {
  station: Station;
  /** The stack of a kit address, if one was made. */
  kit(address: number): RadioStack | undefined;
  /** Per kit: address, key, last heard (with RSSI/SNR), airtime and queue, session; plus what `extra` adds. */
  kitsStatus(extra: (address: number) => Record<string, unknown>): Record<string, unknown>[];
  close(): Promise<void>;
}

/** Replies to unauthenticated frames a gateway may send back to back, on top of the base burst, per kit it has authenticated. */
const BURST_PER_KNOWN_KIT = 2;
const COLLISION_WINDOW_MS = 3_600_000;

export async function openPeerTable(opts: PeerTableOptions): Promise<PeerTable> {
  const station = await openStation({
    ...opts,
    securityOverhead: opts.security ? LINK_FRAME_OVERHEAD : 0,
    addressing: { role: 'gateway' },
  });
  const log = station.log;
  interface Entry { peer: PeerStack; radio: RadioStack; name?: string; lastKit?: { key: Uint8Array; atMs: number } }
  const entries = new Map<number, Entry>();
  // One budget for every address. Its refill, the strangers' share of the airtime, does not
  // grow; its size does, by two replies for each kit this gateway has authenticated, and each
  // newly authenticated kit brings its two replies with it (a full bucket at start for the kits
  // known from disk): a storm of genuine kits restarting at once, each needing an XX2 (perhaps
  // once more), is answered at once, while strangers can never add to it.
  const baseBurst = station.unauthenticatedReplies.burst;
  let knownKits = 0;
  const replyBudget = { ...createReplyBudget(baseBurst, station.clock.now()), burst: () => baseBurst + BURST_PER_KNOWN_KIT * knownKits };
  const countKnown = (): void => {
    const now = [...entries.values()].filter((e) => e.lastKit !== undefined).length;
    if (now > knownKits) replyBudget.anon.tokens = Math.min(replyBudget.burst() + BURST_PER_KNOWN_KIT * (now - knownKits), replyBudget.anon.tokens + BURST_PER_KNOWN_KIT * (now - knownKits));
    knownKits = now;
  };

  const make = (address: number): Entry => {
    const stores = opts.kitStores(address);
    const sec = opts.security;
    // eslint-disable-next-line prefer-const
    let entry: Entry;
    const peer = createPeerStack({
      station, peer: String(address), address, maxBodyBytes: opts.maxBodyBytes, wireContext: WIRE_CONTEXT,
      ...(opts.codec ? { codec: opts.codec } : {}),
      ...(stores.coapStateStore ? { coapStateStore: stores.coapStateStore } : {}),
      replyBudget,
      ...(sec ? {
        security: {
          ...sec,
          ...(stores.secure ? { persist: stores.secure.persist } : {}),
          ...(stores.secure?.restore ? { restore: stores.secure.restore } : {}),
          onEvent: (e) => {
            if (e.type === 'established') {
              const now = station.clock.now();
              const last = entry.lastKit;
              if (last && !equalBytes(last.key, e.remoteStatic) && now - last.atMs < COLLISION_WINDOW_MS) {
                log.warn({ address: formatAddress(address), kits: [fingerprint(last.key), e.fingerprint] },
                  `two field kits use link address ${formatAddress(address)} and take turns at one session: start one of them with --link-address N (a free N from 0 to ${MAX_KIT_ADDRESS}; see "trickle keys list")`);
              }
              entry.lastKit = { key: e.remoteStatic.slice(), atMs: now };
              countKnown();
              if (e.name !== undefined) entry.name = e.name;
            }
            sec.onEvent?.(e);
          },
        },
      } : {}),
    });
    const radio = radioStackOf(station, peer, opts.codec, false);
    entry = { peer, radio };
    entries.set(address, entry);
    const st = peer.peerStatic();
    if (st) { entry.lastKit = { key: st.slice(), atMs: station.clock.now() }; countKnown(); }
    opts.onKit(address, radio);
    return entry;
  };

  for (const a of opts.knownAddresses?.() ?? []) if (Number.isInteger(a) && a >= 0 && a <= MAX_KIT_ADDRESS && !entries.has(a)) make(a);

  station.onFrame((f) => {
    const address = f.address;
    if (address === undefined || address > MAX_KIT_ADDRESS) return; // 127: reserved (relays, issue 13)
    (entries.get(address) ?? make(address)).peer.receive(f);
  });

  return {
    station,
    kit: (address) => entries.get(address)?.radio,
    kitsStatus: (extra) => {
      const now = station.clock.now();
      const queue = station.txQueue?.status().peers ?? [];
      return [...entries.entries()].sort((a, b) => a[0] - b[0]).map(([address, e]) => {
        const heard = e.peer.lastHeard();
        const key = e.peer.peerStatic() ?? e.lastKit?.key;
        const ps = e.peer.status();
        return {
          address: formatAddress(address),
          kit: key ? { fingerprint: fingerprint(key), ...(e.name !== undefined ? { name: e.name } : {}) } : null,
          lastHeard: heard ? { agoS: Math.round((now - heard.atMs) / 100) / 10, ...(heard.rssiDbm !== undefined ? { rssiDbm: heard.rssiDbm } : {}), ...(heard.snrDb !== undefined ? { snrDb: heard.snrDb } : {}) } : null,
          airtime: queue.find((p) => p.peer === String(address)) ?? null,
          security: ps['security'],
          coap: ps['coap'],
          sessionResets: ps['sessionResets'],
          coalesced: ps['coalesced'],
          dropped: { container: ps['containerDrops'], security: ps['securityDropped'], coap: ps['coapDropped'] },
          ...extra(address),
        };
      });
    },
    async close() {
      for (const e of entries.values()) e.peer.close();
      await station.close();
    },
  };
}
