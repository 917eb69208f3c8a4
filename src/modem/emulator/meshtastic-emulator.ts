/**
 * An emulated Meshtastic node: the serial client API (src/modem/meshtastic/meshtastic-protocol.ts)
 * byte for byte on a Link, and a LoRa radio on the simulated RfMedium (rf-medium.ts; time on
 * air from src/scheduler/airtime.ts on the medium's clock).
 *
 * What it does, as the protocol description says a node does:
 * - ignores bytes outside 0x94 0xC3 frames (the client's 32 × 0xC3 wake-up);
 * - want_config_id → FromRadio my_info (our node number), a node_info (which clients skip),
 *   then config_complete_id with the same nonce; every FromRadio carries an increasing id;
 * - ToRadio.packet → checks the payload (≤ 233 bytes, header + Data ≤ 255 bytes: else a
 *   routing NAK TOO_LARGE), checks the region's duty cycle over the last hour (own airtime +
 *   this packet > dutyCyclePct: routing NAK DUTY_CYCLE_LIMIT, and QueueStatus res = 9),
 *   otherwise answers QueueStatus{res 0, free, maxlen, mesh_packet_id} and transmits: the
 *   16-byte header (to, from, id, flags, channel hash, next hop, relay node) + the Data with
 *   the bitfield the firmware adds. A routing NAK is a FromRadio packet from and to our own
 *   node, ROUTING_APP, Data.request_id = the refused packet's id, Routing.error_reason;
 * - a packet heard on air for us (or broadcast) → FromRadio packet with rx_time, rx_snr,
 *   rx_rssi, hop_limit, hop_start.
 * Not modelled: encryption (AES-CTR does not change lengths, so airtime is exact), relaying
 * (a two-node link), CSMA, retransmission for want_ack, the node database, config messages.
 *
 * Radio: the modem preset's LoRa settings (default LongFast: SF11, 250 kHz, 4/5), a 16-symbol
 * preamble and sync word 0x2B, as Meshtastic uses.
 */
import type { Link } from '../../link/link.ts';
import { ProtoWriter } from '../meshtastic/protobuf.ts';
import {
  BROADCAST_NUM, DATA_PAYLOAD_LEN, MAX_LORA_PAYLOAD_LEN, MESHTASTIC_HEADER_LEN, PortNum, RoutingError, StreamDecoder,
  decodeAirHeader, decodeData, decodeToRadio, encodeAirHeader, encodeData, encodeFromRadio, encodeRouting, encodeStreamFrame,
  type FromRadioVariant, type MeshPacket,
} from '../meshtastic/meshtastic-protocol.ts';
import { servePtyDevice, type PtyDevice } from './rnode-emulator.ts';
import type { RfMedium, RfNode, RfPosition, RfRadioConfig } from './rf-medium.ts';

export interface MeshtasticPreset { sf: number; bandwidthHz: number; codingRate: number }

/** Modem presets (LoRa settings only), as the Meshtastic documentation lists them. */
export const MESHTASTIC_PRESETS: Readonly<Record<string, MeshtasticPreset>> = {
  SHORT_FAST: { sf: 7, bandwidthHz: 250_000, codingRate: 5 },
  SHORT_SLOW: { sf: 8, bandwidthHz: 250_000, codingRate: 5 },
  MEDIUM_FAST: { sf: 9, bandwidthHz: 250_000, codingRate: 5 },
  MEDIUM_SLOW: { sf: 10, bandwidthHz: 250_000, codingRate: 5 },
  LONG_FAST: { sf: 11, bandwidthHz: 250_000, codingRate: 5 },
  LONG_MODERATE: { sf: 11, bandwidthHz: 125_000, codingRate: 8 },
  LONG_SLOW: { sf: 12, bandwidthHz: 125_000, codingRate: 8 },
};

export interface MeshtasticEmulatorOptions {
  name: string;
  /** This node's number. */
  nodeNum: number;
  positionM?: RfPosition;
  crystalPpm?: number;
  preset?: MeshtasticPreset;
  frequencyHz?: number;
  txPowerDbm?: number;
  /** The region's duty cycle in percent of an hour (EU_868: 10); 0 = none. Default 10. */
  dutyCyclePct?: number;
  /** Transmit queue slots reported in QueueStatus. Default 16. */
  queueLen?: number;
  /** The channel hash byte put in the on-air header. Default 8. */
  channelHash?: number;
  random32?: () => number;
}

interface AirtimeEntry { atMs: number; airtimeMs: number }

const HOUR_MS = 3_600_000;

export class MeshtasticEmulator {
  readonly node: RfNode;
  readonly options: Required<Omit<MeshtasticEmulatorOptions, 'positionM' | 'crystalPpm'>>;
  private link: Link | undefined;
  private decoder = new StreamDecoder();
  private fromRadioId = 0;
  private readonly txQueue: Uint8Array[] = [];
  private sending = false;
  private ownTx: AirtimeEntry[] = [];
  readonly counters = { txPackets: 0, rxPackets: 0, dutyCycleNaks: 0, tooLargeNaks: 0, configRequests: 0, heartbeats: 0 };

  constructor(private readonly medium: RfMedium, options: MeshtasticEmulatorOptions) {
    this.options = {
      name: options.name,
      nodeNum: options.nodeNum >>> 0,
      preset: options.preset ?? MESHTASTIC_PRESETS['LONG_FAST']!,
      frequencyHz: options.frequencyHz ?? 869_525_000,
      txPowerDbm: options.txPowerDbm ?? 14,
      dutyCyclePct: options.dutyCyclePct ?? 10,
      queueLen: options.queueLen ?? 16,
      channelHash: options.channelHash ?? 8,
      random32: options.random32 ?? (() => Math.floor(Math.random() * 0xffff_ffff) >>> 0),
    };
    this.node = medium.join({
      name: options.name,
      ...(options.positionM ? { positionM: options.positionM } : {}),
      ...(options.crystalPpm !== undefined ? { crystalPpm: options.crystalPpm } : {}),
      chip: 'sx126x',
      config: () => this.rfConfig(),
      onReceive: (frame, meta) => this.fromAir(frame, meta.rssiDbm, meta.snrDb),
    });
  }

  get name(): string { return this.options.name; }

  /** Own airtime over the last hour, percent. */
  dutyCycleUsedPct(): number {
    const now = this.medium.clock.now();
    this.ownTx = this.ownTx.filter((e) => e.atMs > now - HOUR_MS);
    return (this.ownTx.reduce((s, e) => s + e.airtimeMs, 0) / HOUR_MS) * 100;
  }

  attach(link: Link, options: { reboot?: boolean } = {}): void {
    if (options.reboot) { this.txQueue.length = 0; this.fromRadioId = 0; }
    this.link = link;
    this.decoder = new StreamDecoder();
    link.onData((chunk) => { if (this.link === link) this.onBytes(chunk); });
    link.onClose(() => { if (this.link === link) this.link = undefined; });
  }

  detach(): void { this.link = undefined; }

  /** Announce a reboot (FromRadio.rebooted), as the firmware does on the serial console. */
  reboot(): void {
    this.txQueue.length = 0;
    this.toPhone({ kind: 'rebooted' });
  }

  shutdown(): void {
    this.node.leave();
    this.link = undefined;
  }

  private rfConfig(): RfRadioConfig {
    const p = this.options.preset;
    return {
      frequencyHz: this.options.frequencyHz, bandwidthHz: p.bandwidthHz, sf: p.sf, codingRate: p.codingRate,
      txPowerDbm: this.options.txPowerDbm, preambleSymbols: 16, syncWord: 0x2b, crcOn: true, implicitHeader: false, invertIq: false,
    };
  }

  private toPhone(variant: FromRadioVariant): void {
    const link = this.link;
    if (!link) return;
    this.fromRadioId++;
    link.write(encodeStreamFrame(encodeFromRadio({ id: this.fromRadioId, variant }))).catch(() => undefined);
  }

  private onBytes(chunk: Uint8Array): void {
    const { packets } = this.decoder.push(chunk);
    for (const buf of packets) {
      let msg;
      try { msg = decodeToRadio(buf); } catch { continue; } // the firmware ignores what it cannot decode
      if (!msg) continue;
      if ('wantConfigId' in msg) {
        this.counters.configRequests++;
        this.toPhone({ kind: 'myInfo', myNodeNum: this.options.nodeNum });
        this.sendNodeInfo();
        this.toPhone({ kind: 'configCompleteId', configCompleteId: msg.wantConfigId });
      } else if ('packet' in msg) {
        this.fromPhone(msg.packet);
      } else if ('heartbeat' in msg) {
        this.counters.heartbeats++;
      }
    }
  }

  /** A NodeInfo for ourselves (field 4), which clients that only want my_info must skip. */
  private sendNodeInfo(): void {
    const link = this.link;
    if (!link) return;
    this.fromRadioId++;
    const nodeInfo = new ProtoWriter().uint(1, this.options.nodeNum).finish();
    const msg = new ProtoWriter().uint(1, this.fromRadioId).bytes(4, nodeInfo).finish();
    link.write(encodeStreamFrame(msg)).catch(() => undefined);
  }

  private nak(id: number, reason: number): void {
    const me = this.options.nodeNum;
    this.toPhone({
      kind: 'packet',
      packet: {
        from: me, to: me, channel: 0, id: this.options.random32() >>> 0 || 1, priority: 120,
        decoded: { portnum: PortNum.ROUTING_APP, payload: encodeRouting(reason), requestId: id },
      },
    });
  }

  private fromPhone(p: MeshPacket): void {
    const id = p.id || (this.options.random32() >>> 0) || 1;
    const d = p.decoded;
    if (!d) return; // phones send decoded packets
    const free = (): number => Math.max(0, this.options.queueLen - this.txQueue.length - (this.sending ? 1 : 0));
    const data = encodeData({ ...d, bitfield: 0 });
    if (d.payload.length > DATA_PAYLOAD_LEN || MESHTASTIC_HEADER_LEN + data.length > MAX_LORA_PAYLOAD_LEN) {
      this.counters.tooLargeNaks++;
      this.nak(id, RoutingError.TOO_LARGE);
      this.toPhone({ kind: 'queueStatus', queueStatus: { res: RoutingError.TOO_LARGE, free: free(), maxlen: this.options.queueLen, meshPacketId: id } });
      return;
    }
    const hopLimit = Math.min(7, p.hopLimit ?? 0); // proto3: absent means 0
    const air = new Uint8Array(MESHTASTIC_HEADER_LEN + data.length);
    air.set(encodeAirHeader({
      to: p.to, from: this.options.nodeNum, id, hopLimit, wantAck: p.wantAck ?? false, viaMqtt: false, hopStart: hopLimit,
      channelHash: this.options.channelHash, nextHop: 0, relayNode: this.options.nodeNum & 0xff,
    }), 0);
    air.set(data, MESHTASTIC_HEADER_LEN);
    const airtimeMs = this.node.airtimeMs(air.length, this.rfConfig());
    const limitMs = (this.options.dutyCyclePct / 100) * HOUR_MS;
    const queuedMs = this.txQueue.reduce((s, f) => s + this.node.airtimeMs(f.length, this.rfConfig()), 0);
    if (this.options.dutyCyclePct > 0 && (this.dutyCycleUsedPct() / 100) * HOUR_MS + queuedMs + airtimeMs > limitMs) {
      this.counters.dutyCycleNaks++;
      this.nak(id, RoutingError.DUTY_CYCLE_LIMIT);
      this.toPhone({ kind: 'queueStatus', queueStatus: { res: RoutingError.DUTY_CYCLE_LIMIT, free: free(), maxlen: this.options.queueLen, meshPacketId: id } });
      return;
    }
    this.txQueue.push(air);
    this.toPhone({ kind: 'queueStatus', queueStatus: { res: 0, free: free(), maxlen: this.options.queueLen, meshPacketId: id } });
    this.pump();
  }

  private pump(): void {
    if (this.sending || this.txQueue.length === 0) return;
    const air = this.txQueue.shift()!;
    this.sending = true;
    this.node.transmit(air, (airtimeMs) => {
      this.ownTx.push({ atMs: this.medium.clock.now(), airtimeMs });
      this.counters.txPackets++;
      this.sending = false;
      this.pump();
    });
  }

  private fromAir(frame: Uint8Array, rssiDbm: number, snrDb: number): void {
    const h = decodeAirHeader(frame);
    if (!h || h.channelHash !== this.options.channelHash) return;
    if (h.to !== this.options.nodeNum && h.to !== BROADCAST_NUM) return;
    let decoded;
    try { decoded = decodeData(frame.subarray(MESHTASTIC_HEADER_LEN)); } catch { return; }
    this.counters.rxPackets++;
    const { bitfield: _b, ...data } = decoded;
    this.toPhone({
      kind: 'packet',
      packet: {
        from: h.from, to: h.to, channel: 0, id: h.id, decoded: data,
        rxTime: Math.floor(this.medium.clock.now() / 1000) >>> 0, rxSnr: snrDb, rxRssi: Math.round(rssiDbm),
        hopLimit: h.hopLimit, hopStart: h.hopStart, ...(h.wantAck ? { wantAck: true } : {}),
      },
    });
  }
}

/** One emulated Meshtastic node on `medium`, reachable at a tty path. */
export async function startMeshtasticDevice(medium: RfMedium, options: MeshtasticEmulatorOptions & { dir?: string }): Promise<PtyDevice<MeshtasticEmulator>> {
  const { dir, ...emulatorOptions } = options;
  const emulator = new MeshtasticEmulator(medium, emulatorOptions);
  try {
    return await servePtyDevice(options.name, emulator, dir === undefined ? {} : { dir });
  } catch (e) {
    emulator.shutdown();
    throw e;
  }
}
