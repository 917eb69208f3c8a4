/**
 * The Meshtastic serial ("client") API, just the part Trickle uses. Pure.
 *
 * ROUTE TAKEN REGARDING THE GPL-3.0 .proto FILES: none of meshtastic/protobufs is copied,
 * vendored or compiled here. The few messages we need are encoded and decoded by hand
 * (protobuf.ts) from their documented field numbers, which are interface facts. The numbers
 * were read from the published mesh.proto / portnums.proto and cross-checked with
 * independent public descriptions of the protocol (client SDK docs, third-party decoders).
 *
 * Stream framing (meshtastic.org, "Stream protocol" of the Python client docs): every
 * protobuf on a serial or TCP stream is preceded by 4 bytes, START1 0x94, START2 0xC3, and
 * the length as a 16-bit big-endian integer. A length above 512 (the BLE MTU, the protocol's
 * lowest common denominator) means corruption: the reader resumes its search for START1.
 * Bytes outside frames are the node's debug console text (0x94 0xC3 was chosen because it
 * is neither 7-bit ASCII nor valid UTF-8). Host → node frames carry a ToRadio, node → host
 * frames a FromRadio.
 *
 * Fields used (mesh.proto; [f] fixed32, [v] varint, [m] message, [b] bytes, [F] float):
 *   ToRadio     packet=1 [m MeshPacket], want_config_id=3 [v], disconnect=4 [v bool], heartbeat=7 [m]
 *   FromRadio   id=1 [v], packet=2 [m], my_info=3 [m], node_info=4, config=5, log_record=6,
 *               config_complete_id=7 [v], rebooted=8 [v bool], moduleConfig=9, channel=10,
 *               queueStatus=11 [m], metadata=13 … (we read 1, 2, 3, 7, 8, 11; others are skipped)
 *   MeshPacket  from=1 [f], to=2 [f], channel=3 [v], decoded=4 [m Data], encrypted=5 [b], id=6 [f],
 *               rx_time=7 [f], rx_snr=8 [F], hop_limit=9 [v], want_ack=10 [v], priority=11 [v],
 *               rx_rssi=12 [v int32], hop_start=15 [v]
 *   Data        portnum=1 [v], payload=2 [b], want_response=3 [v], dest=4 [f], source=5 [f],
 *               request_id=6 [f], reply_id=7 [f], emoji=8 [f], bitfield=9 [v]
 *   Routing     route_request=1, route_reply=2, error_reason=3 [v Routing.Error]
 *   QueueStatus res=1 [v int32], free=2 [v], maxlen=3 [v], mesh_packet_id=4 [v]
 *   MyNodeInfo  my_node_num=1 [v]
 *   PortNum     TEXT_MESSAGE_APP=1, ROUTING_APP=5, PRIVATE_APP=256
 *   Routing.Error NONE=0, NO_ROUTE=1, GOT_NAK=2, TIMEOUT=3, NO_INTERFACE=4, MAX_RETRANSMIT=5,
 *               NO_CHANNEL=6, TOO_LARGE=7, NO_RESPONSE=8, DUTY_CYCLE_LIMIT=9, BAD_REQUEST=32,
 *               NOT_AUTHORIZED=33, PKI_FAILED=34, PKI_UNKNOWN_PUBKEY=35, ADMIN_BAD_SESSION_KEY=36,
 *               ADMIN_PUBLIC_KEY_UNAUTHORIZED=37, RATE_LIMIT_EXCEEDED=38
 *
 * On air (the firmware's job): a 16-byte packet header (to u32, from u32, id u32, flags u8 =
 * hop_limit | want_ack << 3 | via_mqtt << 4 | hop_start << 5, channel hash u8, next_hop u8,
 * relay_node u8; integers little-endian as the MCUs store them), then the Data message
 * encrypted with the channel key (AES-CTR: no length change). The firmware (≥ 2.5) adds the
 * Data.bitfield (2 bytes) to packets it originates. A LoRa packet holds 255 bytes, so the
 * encoded Data may be 239 bytes; Data.payload is limited to 233 (DATA_PAYLOAD_LEN).
 */
import { WireError } from '../../errors.ts';
import { ProtoMessage, ProtoWriter, varintLen } from './protobuf.ts';

export const START1 = 0x94;
export const START2 = 0xc3;
export const STREAM_HEADER_LEN = 4;
/** Largest protobuf in one stream frame. */
export const MAX_STREAM_PACKET = 512;
/** Clients write this many START2 bytes to wake a sleeping node and resync its reader (Python client's connect). */
export const WAKE_BYTES = 32;

export const PortNum = { TEXT_MESSAGE_APP: 1, ROUTING_APP: 5, PRIVATE_APP: 256 } as const;
export const BROADCAST_NUM = 0xffff_ffff;
/** Largest Data.payload the firmware takes. */
export const DATA_PAYLOAD_LEN = 233;
/** The firmware's on-air packet header. */
export const MESHTASTIC_HEADER_LEN = 16;
export const MAX_LORA_PAYLOAD_LEN = 255;

export const RoutingError = {
  NONE: 0, NO_ROUTE: 1, GOT_NAK: 2, TIMEOUT: 3, NO_INTERFACE: 4, MAX_RETRANSMIT: 5, NO_CHANNEL: 6, TOO_LARGE: 7,
  NO_RESPONSE: 8, DUTY_CYCLE_LIMIT: 9, BAD_REQUEST: 32, NOT_AUTHORIZED: 33, PKI_FAILED: 34, PKI_UNKNOWN_PUBKEY: 35,
  ADMIN_BAD_SESSION_KEY: 36, ADMIN_PUBLIC_KEY_UNAUTHORIZED: 37, RATE_LIMIT_EXCEEDED: 38,
} as const;
const ROUTING_ERROR_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(RoutingError).map(([k, v]) => [v, k]));
export function routingErrorName(code: number): string { return ROUTING_ERROR_NAMES[code] ?? `UNKNOWN_${code}`; }

// ---------------------------------------------------------------------------------------------
// Stream framing

export function encodeStreamFrame(protobuf: Uint8Array): Uint8Array {
  if (protobuf.length > MAX_STREAM_PACKET) throw new RangeError(`protobuf of ${protobuf.length} bytes exceeds the stream limit of ${MAX_STREAM_PACKET}`);
  const out = new Uint8Array(STREAM_HEADER_LEN + protobuf.length);
  out[0] = START1;
  out[1] = START2;
  out[2] = protobuf.length >> 8;
  out[3] = protobuf.length & 0xff;
  out.set(protobuf, STREAM_HEADER_LEN);
  return out;
}

export interface StreamDecodeResult {
  packets: Uint8Array[];
  /** ERR_FRAME_NOISE (bytes outside frames: debug text; detail.bytes), ERR_FRAME_TOO_LONG (length > 512), ERR_FRAME_EMPTY. */
  errors: WireError[];
  /** Bytes outside frames in this chunk (the node's debug console), for logging. */
  text: string;
}

/** Incremental stream deframer; memory bounded by MAX_STREAM_PACKET. */
export class StreamDecoder {
  private state: 'seek' | 'start2' | 'len1' | 'len2' | 'body' = 'seek';
  private len = 0;
  private body = new Uint8Array(MAX_STREAM_PACKET);
  private got = 0;

  push(chunk: Uint8Array): StreamDecodeResult {
    const packets: Uint8Array[] = [];
    const errors: WireError[] = [];
    const text: number[] = [];
    const noise = (n: number): void => {
      if (n > 0) errors.push(new WireError('ERR_FRAME_NOISE', 'modem', `${n} bytes outside Meshtastic stream frames (debug output or line noise); ignored`, { bytes: n }));
    };
    let noiseRun = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      switch (this.state) {
        case 'seek':
          if (b === START1) { noise(noiseRun); noiseRun = 0; this.state = 'start2'; } else { noiseRun++; text.push(b); }
          break;
        case 'start2':
          if (b === START2) this.state = 'len1';
          else if (b === START1) { noiseRun++; } // 0x94 0x94 0xC3: the second START1 may begin the frame
          else { noiseRun += 2; text.push(START1, b); this.state = 'seek'; }
          break;
        case 'len1': this.len = b << 8; this.state = 'len2'; break;
        case 'len2':
          this.len |= b;
          if (this.len > MAX_STREAM_PACKET) {
            errors.push(new WireError('ERR_FRAME_TOO_LONG', 'modem',
              `Meshtastic stream frame claims ${this.len} bytes (limit ${MAX_STREAM_PACKET}): corrupt header; resyncing on the next 0x94 0xC3`, { len: this.len }));
            this.state = 'seek';
          } else if (this.len === 0) {
            errors.push(new WireError('ERR_FRAME_EMPTY', 'modem', 'empty Meshtastic stream frame; ignored'));
            this.state = 'seek';
          } else {
            this.got = 0;
            this.state = 'body';
          }
          break;
        case 'body':
          this.body[this.got++] = b;
          if (this.got === this.len) {
            packets.push(this.body.slice(0, this.len));
            this.state = 'seek';
          }
          break;
      }
    }
    noise(noiseRun);
    return { packets, errors, text: Buffer.from(text).toString('latin1') };
  }
}

// ---------------------------------------------------------------------------------------------
// Messages

export interface MeshData {
  portnum: number;
  payload: Uint8Array;
  wantResponse?: boolean;
  dest?: number;
  source?: number;
  requestId?: number;
  replyId?: number;
  bitfield?: number;
}

export interface MeshPacket {
  from: number;
  to: number;
  /** Channel index (0..7) between host and node; on air the firmware sends a channel hash instead. */
  channel: number;
  decoded?: MeshData;
  encrypted?: Uint8Array;
  id: number;
  rxTime?: number;
  rxSnr?: number;
  hopLimit?: number;
  wantAck?: boolean;
  priority?: number;
  rxRssi?: number;
  hopStart?: number;
}

export interface QueueStatus { res: number; free: number; maxlen: number; meshPacketId: number }

export type ToRadio =
  | { packet: MeshPacket }
  | { wantConfigId: number }
  | { disconnect: true }
  | { heartbeat: true };

export type FromRadioVariant =
  | { kind: 'packet'; packet: MeshPacket }
  | { kind: 'myInfo'; myNodeNum: number }
  | { kind: 'configCompleteId'; configCompleteId: number }
  | { kind: 'rebooted' }
  | { kind: 'queueStatus'; queueStatus: QueueStatus }
  /** A variant we do not use (node_info, config, channel, log_record …): its field number. */
  | { kind: 'other'; field: number }
  | { kind: 'none' };

export interface FromRadio { id: number; variant: FromRadioVariant }

export function encodeData(d: MeshData): Uint8Array {
  const w = new ProtoWriter().uint(1, d.portnum).bytes(2, d.payload);
  if (d.wantResponse) w.bool(3, true);
  if (d.dest !== undefined) w.fixed32(4, d.dest);
  if (d.source !== undefined) w.fixed32(5, d.source);
  if (d.requestId !== undefined) w.fixed32(6, d.requestId);
  if (d.replyId !== undefined) w.fixed32(7, d.replyId);
  if (d.bitfield !== undefined) w.uint(9, d.bitfield);
  return w.finish();
}

export function decodeData(buf: Uint8Array): MeshData {
  const m = new ProtoMessage(buf, 'Data');
  const d: MeshData = { portnum: m.uint32(1) ?? 0, payload: m.bytes(2) ?? new Uint8Array(0) };
  const wr = m.bool(3); if (wr !== undefined) d.wantResponse = wr;
  const dest = m.fixed32(4); if (dest !== undefined) d.dest = dest;
  const source = m.fixed32(5); if (source !== undefined) d.source = source;
  const rq = m.fixed32(6); if (rq !== undefined) d.requestId = rq;
  const rp = m.fixed32(7); if (rp !== undefined) d.replyId = rp;
  const bf = m.uint32(9); if (bf !== undefined) d.bitfield = bf;
  return d;
}

export function encodeMeshPacket(p: MeshPacket): Uint8Array {
  const w = new ProtoWriter();
  if (p.from !== 0) w.fixed32(1, p.from);
  w.fixed32(2, p.to);
  if (p.channel !== 0) w.uint(3, p.channel);
  if (p.decoded) w.bytes(4, encodeData(p.decoded));
  if (p.encrypted) w.bytes(5, p.encrypted);
  if (p.id !== 0) w.fixed32(6, p.id);
  if (p.rxTime !== undefined) w.fixed32(7, p.rxTime);
  if (p.rxSnr !== undefined) w.float(8, p.rxSnr);
  if (p.hopLimit) w.uint(9, p.hopLimit); // proto3: 0 (direct only) is the default, not written
  if (p.wantAck) w.bool(10, true);
  if (p.priority !== undefined) w.uint(11, p.priority);
  if (p.rxRssi !== undefined) w.int32(12, p.rxRssi);
  if (p.hopStart) w.uint(15, p.hopStart);
  return w.finish();
}

export function decodeMeshPacket(buf: Uint8Array): MeshPacket {
  const m = new ProtoMessage(buf, 'MeshPacket');
  const decodedBytes = m.bytes(4);
  const p: MeshPacket = { from: m.fixed32(1) ?? 0, to: m.fixed32(2) ?? 0, channel: m.uint32(3) ?? 0, id: m.fixed32(6) ?? 0 };
  if (decodedBytes !== undefined) p.decoded = decodeData(decodedBytes);
  const enc = m.bytes(5); if (enc !== undefined) p.encrypted = enc;
  const t = m.fixed32(7); if (t !== undefined) p.rxTime = t;
  const snr = m.float(8); if (snr !== undefined) p.rxSnr = snr;
  const hl = m.uint32(9); if (hl !== undefined) p.hopLimit = hl;
  const wa = m.bool(10); if (wa !== undefined) p.wantAck = wa;
  const pr = m.uint32(11); if (pr !== undefined) p.priority = pr;
  const rssi = m.int32(12); if (rssi !== undefined) p.rxRssi = rssi;
  const hs = m.uint32(15); if (hs !== undefined) p.hopStart = hs;
  return p;
}

export function encodeRouting(errorReason: number): Uint8Array { return new ProtoWriter().uint(3, errorReason).finish(); }

/** error_reason of a Routing message (NONE when absent: an ACK). */
export function decodeRoutingError(buf: Uint8Array): number { return new ProtoMessage(buf, 'Routing').uint32(3) ?? RoutingError.NONE; }

export function encodeQueueStatus(q: QueueStatus): Uint8Array {
  const w = new ProtoWriter();
  if (q.res !== 0) w.int32(1, q.res);
  if (q.free !== 0) w.uint(2, q.free);
  if (q.maxlen !== 0) w.uint(3, q.maxlen);
  if (q.meshPacketId !== 0) w.uint(4, q.meshPacketId);
  return w.finish();
}

export function decodeQueueStatus(buf: Uint8Array): QueueStatus {
  const m = new ProtoMessage(buf, 'QueueStatus');
  return { res: m.int32(1) ?? 0, free: m.uint32(2) ?? 0, maxlen: m.uint32(3) ?? 0, meshPacketId: m.uint32(4) ?? 0 };
}

export function encodeToRadio(t: ToRadio): Uint8Array {
  const w = new ProtoWriter();
  if ('packet' in t) w.bytes(1, encodeMeshPacket(t.packet));
  else if ('wantConfigId' in t) w.uint(3, t.wantConfigId);
  else if ('disconnect' in t) w.bool(4, true);
  else w.bytes(7, new Uint8Array(0));
  return w.finish();
}

/** Throws ERR_PROTOBUF_DECODE. Returns undefined for a ToRadio with none of the variants we know. */
export function decodeToRadio(buf: Uint8Array): ToRadio | undefined {
  const m = new ProtoMessage(buf, 'ToRadio');
  const packet = m.bytes(1);
  if (packet !== undefined) return { packet: decodeMeshPacket(packet) };
  const want = m.uint32(3);
  if (want !== undefined) return { wantConfigId: want };
  if (m.bool(4)) return { disconnect: true };
  if (m.has(7)) return { heartbeat: true };
  return undefined;
}

export function encodeFromRadio(f: FromRadio): Uint8Array {
  const w = new ProtoWriter();
  if (f.id !== 0) w.uint(1, f.id);
  const v = f.variant;
  switch (v.kind) {
    case 'packet': w.bytes(2, encodeMeshPacket(v.packet)); break;
    case 'myInfo': w.bytes(3, new ProtoWriter().uint(1, v.myNodeNum).finish()); break;
    case 'configCompleteId': w.uint(7, v.configCompleteId); break;
    case 'rebooted': w.bool(8, true); break;
    case 'queueStatus': w.bytes(11, encodeQueueStatus(v.queueStatus)); break;
    case 'other': w.bytes(v.field, new Uint8Array(0)); break;
    case 'none': break;
  }
  return w.finish();
}

const FROM_RADIO_OTHER = [4, 5, 6, 9, 10, 12, 13, 14, 15, 16, 17];

/** Throws ERR_PROTOBUF_DECODE. */
export function decodeFromRadio(buf: Uint8Array): FromRadio {
  const m = new ProtoMessage(buf, 'FromRadio');
  const id = m.uint32(1) ?? 0;
  const packet = m.bytes(2);
  if (packet !== undefined) return { id, variant: { kind: 'packet', packet: decodeMeshPacket(packet) } };
  const info = m.bytes(3);
  if (info !== undefined) return { id, variant: { kind: 'myInfo', myNodeNum: new ProtoMessage(info, 'MyNodeInfo').uint32(1) ?? 0 } };
  const done = m.uint32(7);
  if (done !== undefined) return { id, variant: { kind: 'configCompleteId', configCompleteId: done } };
  if (m.has(8)) return { id, variant: { kind: 'rebooted' } };
  const qs = m.bytes(11);
  if (qs !== undefined) return { id, variant: { kind: 'queueStatus', queueStatus: decodeQueueStatus(qs) } };
  const other = FROM_RADIO_OTHER.find((f) => m.has(f));
  return { id, variant: other === undefined ? { kind: 'none' } : { kind: 'other', field: other } };
}

// ---------------------------------------------------------------------------------------------
// On air

/** The Data the firmware puts on air for one of our payloads: portnum, payload, and the bitfield it adds. */
export function airData(payload: Uint8Array, portnum: number = PortNum.PRIVATE_APP): MeshData {
  return { portnum, payload, bitfield: 0 };
}

/**
 * Bytes on air beyond the payload for a PRIVATE_APP packet: the 16-byte header, the Data
 * framing (portnum 3 B, payload tag and length 2–3 B) and the 2-byte bitfield the firmware
 * adds; AES-CTR adds nothing. 23 bytes up to 127 bytes of payload, 24 above. PKI-encrypted
 * direct messages (firmware ≥ 2.5 with a known public key) add 12 more (not counted).
 */
export function meshtasticOnAirOverhead(payloadLen: number): number {
  return MESHTASTIC_HEADER_LEN + 3 + 1 + varintLen(payloadLen) + 2;
}

/** Bytes the stream framing and the ToRadio/MeshPacket/Data envelope add on the serial line. */
export function meshtasticSerialOverhead(packet: MeshPacket): number {
  const payloadLen = packet.decoded?.payload.length ?? 0;
  return encodeStreamFrame(encodeToRadio({ packet })).length - payloadLen;
}

export interface AirHeader { to: number; from: number; id: number; hopLimit: number; wantAck: boolean; viaMqtt: boolean; hopStart: number; channelHash: number; nextHop: number; relayNode: number }

export function encodeAirHeader(h: AirHeader): Uint8Array {
  const b = new Uint8Array(MESHTASTIC_HEADER_LEN);
  const v = new DataView(b.buffer);
  v.setUint32(0, h.to, true);
  v.setUint32(4, h.from, true);
  v.setUint32(8, h.id, true);
  b[12] = (h.hopLimit & 0x07) | (h.wantAck ? 0x08 : 0) | (h.viaMqtt ? 0x10 : 0) | ((h.hopStart & 0x07) << 5);
  b[13] = h.channelHash & 0xff;
  b[14] = h.nextHop & 0xff;
  b[15] = h.relayNode & 0xff;
  return b;
}

export function decodeAirHeader(b: Uint8Array): AirHeader | undefined {
  if (b.length < MESHTASTIC_HEADER_LEN) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, MESHTASTIC_HEADER_LEN);
  const flags = b[12]!;
  return {
    to: v.getUint32(0, true), from: v.getUint32(4, true), id: v.getUint32(8, true),
    hopLimit: flags & 0x07, wantAck: (flags & 0x08) !== 0, viaMqtt: (flags & 0x10) !== 0, hopStart: flags >> 5,
    channelHash: b[13]!, nextHop: b[14]!, relayNode: b[15]!,
  };
}
