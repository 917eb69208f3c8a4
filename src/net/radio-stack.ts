/**
 * The radio stack of one end and one peer: a Station (./station.ts: link, modem, duty-cycle
 * ledger and queue, medium access, the shared-channel address) and one PeerStack
 * (./peer-stack.ts: SecureLink, CoAP endpoint and their state). A field kit uses it for its
 * gateway; a gateway on a point-to-point link for its one kit. A gateway on a shared channel
 * keeps one PeerStack per kit on one Station (./peer-table.ts) and gives each the same face
 * (radioStackOf).
 *
 *   CoapEndpoint ──▶ SecureLink ──▶ TxQueue (duty cycle, fair share, priority, packing) ──▶ ChannelAccess ──▶ [address] ──▶ Modem ──▶ Link
 *   CoapEndpoint ◀── SecureLink ◀── unpack ◀─────────────────────────────────────────────────────────────── [address] ◀── Modem ◀── Link
 */
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import type { ResolvedChannel } from '../scheduler/regions.ts';
import type { CoapEndpoint, CoapRequestInit, CoapResponse, RequestHandler, RequestOptions } from '../coap/endpoint.ts';
import { LINK_FRAME_OVERHEAD, type SecureLink } from '../secure/secure-link.ts';
import { CBOR_KEYMAP_V1_VERSION } from '../codec/keymap-v1.ts';
import { COAP_PATH_ENUM_VERSION } from '../codec/paths-v1.ts';
import { VALUES_V1_VERSION } from '../codec/values-v1.ts';
import { COMPACT_RULES_VERSION } from '../coap/compact-rules-v1.ts';
import { dictionaryContext } from '../codec/dictionary.ts';
import { openStation, type Station, type StationOptions, type RadioSettings, type StateStore } from './station.ts';
import { createPeerStack, type PeerStack, type SecuritySettings, type CoapSessionState, type FrameRecord } from './peer-stack.ts';

export { resolveRadio, unauthenticatedReplyBudget, UNAUTHENTICATED_REPLY_SHARE, type RadioSettings, type StateStore, type AirtimeState } from './station.ts';
export { priorityOfMessage, type SecuritySettings, type CoapSessionState, type FrameRecord } from './peer-stack.ts';

/**
 * Everything both ends must share to read each other's messages. It is bound into the Noise
 * prologue, so two ends with different tables cannot complete a handshake; both log it.
 */
export const WIRE_CONTEXT = `msc3079-keys-v${CBOR_KEYMAP_V1_VERSION} msc3079-paths-v${COAP_PATH_ENUM_VERSION} values-v${VALUES_V1_VERSION} compact-v${COMPACT_RULES_VERSION} ${dictionaryContext()}`;

export const DEFAULT_RADIO: RadioSettings = { region: 'eu868', bandwidthHz: 125_000, sf: 9, codingRate: 5 };

/** The station's options (device or link, modem, radio, clock, airtime store, channel access) plus one peer's. */
export interface RadioStackOptions extends Omit<StationOptions, 'addressing' | 'securityOverhead'> {
  maxBodyBytes: number;
  /** On-air CoAP form: the compact form (default) or plain RFC 7252 (for comparison and debugging). */
  codec?: 'compact' | 'rfc7252';
  /** Noise security (on by default in the apps); omitted only for tests and benches of the layers above. */
  security?: SecuritySettings;
  /** Durable storage for the CoAP session (sequence numbers, compact context), so a restart resumes. */
  coapStateStore?: StateStore<CoapSessionState>;
  /**
   * A field kit on a shared channel (net/link-address.ts): its address, carried in front of
   * every frame (1 byte); it takes only downlinks for this address. Omitted: point-to-point.
   */
  linkAddress?: number;
}

export interface RadioStack {
  link: Link;
  modem: Modem;
  /** The current CoAP endpoint; a new secure session replaces it (use request/onRequest). */
  readonly endpoint: CoapEndpoint;
  secure: SecureLink | undefined;
  /** True when this start resumed the stored link session (the layers above may resume theirs). */
  resumed: boolean;
  request(req: CoapRequestInit, opts?: RequestOptions): Promise<CoapResponse>;
  onRequest(handler: RequestHandler): void;
  /** A new link session began (new handshake): per-session state above must start afresh. */
  onSessionReset(listener: () => void): void;
  /** Frames with the security layer's control kinds (handshakes), both directions; `kind` is their first byte. */
  onControlFrame(listener: (direction: 'tx' | 'rx', onAirBytes: number, kind: number) => void): void;
  channel: ResolvedChannel | undefined;
  /** Largest frame this channel and modem carry (CoAP sizes its blocks to it). */
  maxFrameLen: number;
  /** How long a new interactive request of `len` bytes would wait for the duty cycle, in ms. */
  estimateWaitMs(len: number): number;
  /**
   * How long the peer must wait before it may transmit a frame of `len` bytes, as far as we can
   * tell from its frames we heard (its ledger mirrored from what we received; on a
   * point-to-point link that is all it sent, so this is exact unless frames were lost).
   */
  estimatePeerWaitMs(len: number): number;
  onFrameRecord(listener: (rec: FrameRecord) => void): void;
  /**
   * The highest sequence number S decoded from the peer in this link session (compact codec:
   * the peer numbers every message it originates; undefined with the RFC 7252 codec or before
   * anything arrived). The gateway uses it to notice a field kit whose numbering went back.
   */
  peerSequence(): number | undefined;
  /** The peer's authenticated static key (security on and a session up), else null. */
  peerStatic(): Uint8Array | null;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}


export async function openRadioStack(opts: RadioStackOptions): Promise<RadioStack> {
  const station = await openStation({
    ...opts,
    securityOverhead: opts.security ? LINK_FRAME_OVERHEAD : 0,
    ...(opts.linkAddress !== undefined ? { addressing: { role: 'kit' as const, address: opts.linkAddress } } : {}),
    ...(opts.security?.role === 'responder' ? { answersKits: true } : {}),
  });
  const peer = createPeerStack({
    station, peer: '', maxBodyBytes: opts.maxBodyBytes, wireContext: WIRE_CONTEXT,
    ...(opts.codec ? { codec: opts.codec } : {}),
    ...(opts.security ? { security: opts.security } : {}),
    ...(opts.coapStateStore ? { coapStateStore: opts.coapStateStore } : {}),
  });
  station.onFrame((f) => peer.receive(f));
  return radioStackOf(station, peer, opts.codec);
}

/** The RadioStack face of one peer stack on its station (a kit, a point-to-point gateway, or one kit of a gateway's table). */
export function radioStackOf(station: Station, peer: PeerStack, codec: 'compact' | 'rfc7252' | undefined, closeStation = true): RadioStack {
  const securityOverhead = peer.secure ? LINK_FRAME_OVERHEAD : 0;
  return {
    link: station.link, modem: station.modem, channel: station.channel, maxFrameLen: station.maxFrameLen, secure: peer.secure, resumed: peer.resumed,
    get endpoint() { return peer.endpoint; },
    request: (req, ro) => peer.request(req, ro),
    onRequest: (h) => peer.onRequest(h),
    onSessionReset: (l) => peer.onSessionReset(l),
    onControlFrame: (l) => peer.onControlFrame(l),
    estimateWaitMs: (len) => station.waitFor(len + securityOverhead),
    estimatePeerWaitMs: (len) => peer.estimatePeerWaitMs(len),
    onFrameRecord: (l) => peer.onFrameRecord(l),
    peerSequence: () => peer.peerSequence(),
    peerStatic: () => peer.peerStatic(),
    status: () => {
      const st = station.status();
      const ps = peer.status();
      const modemStats = station.modem.stats();
      return {
        ...st,
        codec: codec ?? 'compact',
        wireContext: WIRE_CONTEXT,
        coap: ps['coap'],
        security: ps['security'],
        sessionResets: ps['sessionResets'],
        coalesced: ps['coalesced'],
        peerDutyCycle: ps['peerDutyCycle'],
        // Every input dropped, by layer and reason: what arrived that was noise, forged or stale.
        dropped: {
          modem: modemStats.dropped,
          container: ps['containerDrops'],
          security: ps['securityDropped'],
          coap: ps['coapDropped'],
        },
      };
    },
    async close() {
      peer.close();
      if (closeStation) await station.close();
    },
  };
}
