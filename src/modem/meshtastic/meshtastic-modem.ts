/**
 * The Meshtastic dialect: a node running Meshtastic firmware, driven through its serial
 * client API (meshtastic-protocol.ts: framing, field numbers, and the route taken regarding
 * the GPL .proto files: hand-encoded from documented field numbers, nothing copied).
 *
 * Trickle's frames travel as Data packets on PortNum PRIVATE_APP (256) to one configured
 * node number (or broadcast), on one channel index. The mesh firmware owns the radio: it
 * picks the LoRa settings from its own config (region, modem preset), encrypts with the
 * channel key, and ENFORCES THE REGION'S DUTY CYCLE ITSELF (capabilities.enforcesDutyCycle):
 * a packet over the limit is refused with a routing NAK, Routing.Error DUTY_CYCLE_LIMIT,
 * which `send` turns into a rejection with code ERR_DUTY_CYCLE that the scheduler sees.
 *
 * Session (the client API's handshake):
 *   32 × 0xC3 (wake the node, resync its reader), ToRadio{want_config_id = nonce} → a stream
 *   of FromRadio (my_info gives our node number; node_info, config, channel … are skipped) →
 *   FromRadio{config_complete_id = nonce}. Only then is the modem ready.
 * Send:
 *   ToRadio{packet: MeshPacket{to, channel, id, hop_limit, want_ack, decoded: Data{PRIVATE_APP, payload}}}.
 *   The node answers with QueueStatus{res, free, maxlen, mesh_packet_id = id}: `send` resolves
 *   when res is 0 (accepted for transmission) and rejects on a routing NAK for that id
 *   (Data.request_id = id on ROUTING_APP): DUTY_CYCLE_LIMIT → ERR_DUTY_CYCLE, TOO_LARGE →
 *   ERR_MODEM_MTU, others → ERR_MODEM_DEVICE. Without an answer in `sendConfirmTimeoutMs`
 *   (old firmware without QueueStatus) it resolves unconfirmed; a NAK arriving later for an
 *   accepted frame is reported through `onDrop` (the frame is lost) with the same code.
 * Receive:
 *   FromRadio{packet} with decoded.portnum PRIVATE_APP on our channel, to our node (or to
 *   broadcast when `destination` is broadcast), from `peer` (default: the destination node)
 *   → onFrame with rx_rssi / rx_snr. All other mesh traffic (positions, telemetry, text,
 *   encrypted packets of channels we lack) is dropped as ERR_MODEM_NOT_OURS.
 * Liveness: a ToRadio heartbeat every `heartbeatIntervalMs` (serial line only, nothing on air).
 *
 * Reconnection contract: as for the RNode (see ../rnode/rnode-modem.ts): a modem lives as
 * long as its link; onClose(ERR_LINK_IO) when the device goes away, onClose(ERR_MODEM_DEVICE)
 * when the node reports it rebooted; the owner reopens with `openMeshtasticModem` and gets a
 * fresh session.
 *
 * Frame size: Data.payload may be 233 bytes (DATA_PAYLOAD_LEN), but the firmware adds a
 * 2-byte bitfield to the Data it sends, and header + Data must fit one 255-byte LoRa packet:
 * 16 + (3 + 3 + 231 + 2) = 255. Default maxFrameLen is therefore 231.
 */
import { ConfigError, TrickleError, type ErrorCode, type WireError } from '../../errors.ts';
import type { Link } from '../../link/link.ts';
import { LinkEvents } from '../../link/link-events.ts';
import { openSerialLink } from '../../link/serial.ts';
import { systemClock, type Clock, type TimerHandle } from '../../util/clock.ts';
import type { Modem, ModemCapabilities, ModemStats, ReceivedFrameMeta, SendReport } from '../modem.ts';
import { ModemCounters } from '../modem-counters.ts';
import {
  BROADCAST_NUM, DATA_PAYLOAD_LEN, PortNum, RoutingError, START2, StreamDecoder, WAKE_BYTES, decodeFromRadio, decodeRoutingError,
  encodeStreamFrame, encodeToRadio, meshtasticOnAirOverhead, meshtasticSerialOverhead, routingErrorName, type MeshPacket, type QueueStatus,
} from './meshtastic-protocol.ts';

/** Default largest payload: 231 (see the module comment). */
export const DEFAULT_MESHTASTIC_MAX_FRAME_LEN = 231;

export interface MeshtasticModemOptions {
  /** Node number of the peer (e.g. 0x1234abcd, the "!1234abcd" of the apps), or 'broadcast'. REQUIRED. */
  destination: number | 'broadcast';
  /** Accept frames only from this node. Default: the destination node (any node when broadcasting). */
  peer?: number;
  /** Channel index on the node, 0..7 (default 0, the primary channel). */
  channel?: number;
  /**
   * Relays allowed, 0..7. Default 0: a direct link; every relay retransmits the whole packet,
   * so raise it only when the peer is out of direct range.
   */
  hopLimit?: number;
  /** Ask the mesh for an ACK (an extra packet on air). Default false: CoAP does reliability. */
  wantAck?: boolean;
  /** Largest payload, 1..233. Default 231. */
  maxFrameLen?: number;
  /** Longest wait for config_complete_id. Default 5000 ms. */
  configTimeoutMs?: number;
  /** Longest wait for the QueueStatus / NAK of a sent packet. Default 2000 ms. */
  sendConfirmTimeoutMs?: number;
  /** ToRadio heartbeat period; 0 disables. Default 300 s. */
  heartbeatIntervalMs?: number;
  clock?: Clock;
  /** 32-bit random numbers for want_config_id and packet ids (default Math.random). */
  random32?: () => number;
}

export interface MeshtasticModemConfig {
  destination: number;
  peer: number | undefined;
  channel: number;
  hopLimit: number;
  wantAck: boolean;
  maxFrameLen: number;
  configTimeoutMs: number;
  sendConfirmTimeoutMs: number;
  heartbeatIntervalMs: number;
}

function intIn(key: string, v: unknown, lo: number, hi: number, allowed = `an integer from ${lo} to ${hi}`): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new ConfigError(`Meshtastic ${key} ${String(v)} is not allowed; allowed: ${allowed}`, { key, value: v, allowed });
  }
  return v;
}

/** Validate options and fill in defaults; throws ConfigError naming the key and the allowed values. */
export function resolveMeshtasticModemConfig(o: MeshtasticModemOptions): MeshtasticModemConfig {
  if (o === undefined || o === null || o.destination === undefined) {
    throw new ConfigError("Meshtastic destination is required: the peer's node number (e.g. 0x1234abcd for !1234abcd) or 'broadcast'", { key: 'destination' });
  }
  const destination = o.destination === 'broadcast' ? BROADCAST_NUM
    : intIn('destination', o.destination, 1, 0xffff_fffe, "a node number 1..0xfffffffe, or 'broadcast'");
  const peer = o.peer !== undefined ? intIn('peer', o.peer, 1, 0xffff_fffe) : destination === BROADCAST_NUM ? undefined : destination;
  return {
    destination, peer,
    channel: intIn('channel', o.channel ?? 0, 0, 7, 'a channel index 0..7'),
    hopLimit: intIn('hopLimit', o.hopLimit ?? 0, 0, 7),
    wantAck: o.wantAck ?? false,
    maxFrameLen: intIn('maxFrameLen', o.maxFrameLen ?? DEFAULT_MESHTASTIC_MAX_FRAME_LEN, 1, DATA_PAYLOAD_LEN,
      `an integer from 1 to ${DATA_PAYLOAD_LEN} (DATA_PAYLOAD_LEN; 231 leaves room for the bitfield the firmware adds)`),
    configTimeoutMs: intIn('configTimeoutMs', o.configTimeoutMs ?? 5_000, 1, 600_000),
    sendConfirmTimeoutMs: intIn('sendConfirmTimeoutMs', o.sendConfirmTimeoutMs ?? 2_000, 1, 600_000),
    heartbeatIntervalMs: intIn('heartbeatIntervalMs', o.heartbeatIntervalMs ?? 300_000, 0, 86_400_000),
  };
}

export interface MeshtasticReceivedFrameMeta extends ReceivedFrameMeta {
  fromNode: number;
  packetId: number;
  hopLimit?: number;
}

interface PendingSend {
  resolve: (r: SendReport) => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
  wireBytes: number;
}

export type MeshtasticModemState = 'starting' | 'ready' | 'closed';

export class MeshtasticModem implements Modem {
  readonly dialect = 'meshtastic';
  readonly config: MeshtasticModemConfig;
  readonly ready: Promise<void>;
  private readonly clock: Clock;
  private readonly random32: () => number;
  private readonly decoder = new StreamDecoder();
  private stateValue: MeshtasticModemState = 'starting';
  private nodeNum: number | undefined;
  private configNonce = 0;
  private configDone: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly pendingSends = new Map<number, PendingSend>();
  /** Ids of packets the node accepted recently, to attribute late NAKs. */
  private readonly accepted: number[] = [];
  private queue: QueueStatus | undefined;
  private heartbeat: TimerHandle | undefined;
  private readonly closeEvents = new LinkEvents();
  private readonly frameListeners: ((frame: Uint8Array, meta: ReceivedFrameMeta) => void)[] = [];
  private readonly book = new ModemCounters();
  private readonly counters = this.book.counters;

  /** Throws ConfigError; starts the config handshake at once (`ready`). */
  constructor(private readonly link: Link, options: MeshtasticModemOptions) {
    this.config = resolveMeshtasticModemConfig(options);
    this.clock = options.clock ?? systemClock;
    this.random32 = options.random32 ?? (() => Math.floor(Math.random() * 0xffff_ffff) >>> 0);
    link.onData((chunk) => this.receive(chunk));
    link.onClose((err) => this.finish(err));
    this.ready = this.handshake().then(() => {
      if (this.stateValue !== 'starting') return;
      this.stateValue = 'ready';
      this.scheduleHeartbeat();
    }, async (err: unknown) => {
      this.finish(err as Error);
      await this.link.close();
      throw err;
    });
    this.ready.catch(() => { /* reported through onClose */ });
  }

  static async start(link: Link, options: MeshtasticModemOptions): Promise<MeshtasticModem> {
    const modem = new MeshtasticModem(link, options);
    await modem.ready;
    return modem;
  }

  get state(): MeshtasticModemState { return this.stateValue; }
  /** Our node number, from my_info. */
  get myNodeNum(): number | undefined { return this.nodeNum; }
  /** The node's last QueueStatus (free / maxlen slots of its transmit queue). */
  get queueStatus(): QueueStatus | undefined { return this.queue ? { ...this.queue } : undefined; }

  get capabilities(): ModemCapabilities {
    // The device runs CAD and a contention window before each transmission; the serial API cannot ask for a sense.
    return { maxFrameLen: this.config.maxFrameLen, enforcesDutyCycle: true, reportsAirtime: false, channelSense: 'firmware' };
  }

  async send(frame: Uint8Array): Promise<SendReport> {
    const { maxFrameLen } = this.config;
    if (frame.length === 0 || frame.length > maxFrameLen) {
      throw new TrickleError('ERR_MODEM_MTU', 'modem',
        `frame of ${frame.length} bytes cannot be sent: the Meshtastic modem carries 1 to ${maxFrameLen} bytes per packet`, { len: frame.length, maxFrameLen });
    }
    if (this.stateValue === 'starting') await this.ready;
    if (this.stateValue === 'closed') throw this.closedError();
    let id = this.random32() >>> 0;
    while (id === 0 || this.pendingSends.has(id)) id = (id + 1) >>> 0;
    const packet = this.packetFor(frame, id);
    const wire = encodeStreamFrame(encodeToRadio({ packet }));
    return new Promise<SendReport>((resolve, reject) => {
      const timer = this.clock.setTimer(this.config.sendConfirmTimeoutMs, () => {
        if (this.pendingSends.get(id)?.timer !== timer) return;
        this.pendingSends.delete(id);
        this.remember(id);
        resolve({ wireBytes: wire.length }); // unconfirmed (see the module comment)
      });
      this.pendingSends.set(id, { resolve, reject, timer, wireBytes: wire.length });
      this.link.write(wire).then(() => {
        this.counters.framesSent++;
        this.counters.wireBytesSent += wire.length;
      }, (e: unknown) => {
        if (this.pendingSends.get(id)?.timer !== timer) return;
        this.pendingSends.delete(id);
        timer.cancel();
        reject(e as Error);
      });
    });
  }

  /**
   * On air: the firmware's 16-byte header, the Data framing and the 2-byte bitfield it adds
   * (23 bytes up to 127 bytes of payload, 24 above). Serial: stream header and the
   * ToRadio/MeshPacket envelope.
   */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number } {
    return { onAir: meshtasticOnAirOverhead(payload.length), serial: meshtasticSerialOverhead(this.packetFor(payload, 0xffff_ffff)) };
  }

  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void { this.frameListeners.push(listener); }
  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.book.onDrop(listener); }
  onClose(listener: (err?: Error) => void): void { this.closeEvents.onClose(listener); }
  stats(): ModemStats { return this.book.snapshot(); }

  /** ToRadio{disconnect}, then close the link. */
  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    await this.link.write(encodeStreamFrame(encodeToRadio({ disconnect: true }))).catch(() => undefined);
    this.finish(undefined);
    await this.link.close();
  }

  // ---------------------------------------------------------------------------------------

  private packetFor(payload: Uint8Array, id: number): MeshPacket {
    const c = this.config;
    const p: MeshPacket = {
      from: 0, to: c.destination, channel: c.channel, id, hopLimit: c.hopLimit,
      decoded: { portnum: PortNum.PRIVATE_APP, payload },
    };
    if (c.wantAck) p.wantAck = true;
    return p;
  }

  private closedError(): TrickleError {
    return new TrickleError('ERR_LINK_CLOSED', 'link', `Meshtastic node on ${this.link.name} is closed; reopen the device (openMeshtasticModem)`, { link: this.link.name });
  }

  private finish(err: Error | undefined): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    this.heartbeat?.cancel();
    const e = err ?? this.closedError();
    this.configDone?.reject(e);
    this.configDone = undefined;
    for (const p of this.pendingSends.values()) { p.timer.cancel(); p.reject(e); }
    this.pendingSends.clear();
    this.closeEvents.emitClose(err);
  }

  private async handshake(): Promise<void> {
    const dev = this.link.name;
    const wake = new Uint8Array(WAKE_BYTES).fill(START2);
    this.configNonce = (this.random32() >>> 0) || 1;
    const done = new Promise<void>((resolve, reject) => { this.configDone = { resolve, reject }; });
    let timer: TimerHandle | undefined;
    const timeout = new Promise<never>((_r, reject) => {
      timer = this.clock.setTimer(this.config.configTimeoutMs, () => reject(new TrickleError('ERR_MODEM_TIMEOUT', 'modem',
        `no config_complete_id from ${dev} within ${this.config.configTimeoutMs} ms after want_config_id: the device is not running ` +
        'Meshtastic firmware, its serial API is off (set serial module mode to PROTO or disable the serial console), or it is still booting',
        { device: dev })));
    });
    try {
      const req = encodeStreamFrame(encodeToRadio({ wantConfigId: this.configNonce }));
      await this.link.write(wake);
      await this.link.write(req);
      this.counters.wireBytesSent += wake.length + req.length;
      await Promise.race([done, timeout]);
    } finally {
      timer?.cancel();
      this.configDone = undefined;
    }
    if (this.nodeNum === undefined) {
      throw new TrickleError('ERR_MODEM_CONFIG', 'modem', `${dev} completed the config handshake without my_info: cannot learn our node number`, { device: dev });
    }
  }

  private scheduleHeartbeat(): void {
    if (this.config.heartbeatIntervalMs <= 0 || this.stateValue === 'closed') return;
    this.heartbeat = this.clock.setTimer(this.config.heartbeatIntervalMs, () => {
      if (this.stateValue !== 'ready') return;
      const hb = encodeStreamFrame(encodeToRadio({ heartbeat: true }));
      this.link.write(hb).then(() => { this.counters.wireBytesSent += hb.length; }, () => undefined);
      this.scheduleHeartbeat();
    });
  }

  private remember(id: number): void {
    this.accepted.push(id);
    if (this.accepted.length > 64) this.accepted.shift();
  }

  private drop(code: ErrorCode, message: string, detail: Readonly<Record<string, unknown>> = {}): void { this.book.drop(code, message, detail); }

  private dropError(err: WireError): void { this.book.dropError(err); }

  private receive(chunk: Uint8Array): void {
    this.counters.wireBytesReceived += chunk.length;
    const { packets, errors } = this.decoder.push(chunk);
    // Debug console text before the session starts is normal, not worth a warning.
    for (const e of errors) if (!(e.code === 'ERR_FRAME_NOISE' && this.stateValue === 'starting')) this.dropError(e);
    for (const buf of packets) {
      let msg;
      try {
        msg = decodeFromRadio(buf);
      } catch (e) {
        this.dropError(e as WireError);
        continue;
      }
      const v = msg.variant;
      switch (v.kind) {
        case 'myInfo': this.nodeNum = v.myNodeNum; break;
        case 'configCompleteId': if (v.configCompleteId === this.configNonce) this.configDone?.resolve(); break;
        case 'queueStatus': this.onQueueStatus(v.queueStatus); break;
        case 'packet': this.onPacket(v.packet); break;
        case 'rebooted':
          if (this.stateValue === 'ready') {
            this.finish(new TrickleError('ERR_MODEM_DEVICE', 'modem', `the Meshtastic node on ${this.link.name} rebooted; reopen it to start a new session`, { device: this.link.name }));
            void this.link.close();
          }
          break;
        default: break; // node_info, config, channel, metadata …: not needed
      }
    }
  }

  private onQueueStatus(q: QueueStatus): void {
    this.queue = q;
    const p = this.pendingSends.get(q.meshPacketId);
    if (!p) return;
    if (q.res === 0) {
      this.pendingSends.delete(q.meshPacketId);
      p.timer.cancel();
      this.remember(q.meshPacketId);
      p.resolve({ wireBytes: p.wireBytes });
      return;
    }
    this.fail(q.meshPacketId, q.res, 'QueueStatus');
  }

  /** The node refused packet `id` with Routing.Error `reason`. */
  private fail(id: number, reason: number, how: string): void {
    const dev = this.link.name;
    const name = routingErrorName(reason);
    const err = reason === RoutingError.DUTY_CYCLE_LIMIT
      ? new TrickleError('ERR_DUTY_CYCLE', 'modem',
        `the Meshtastic node on ${dev} refused to transmit: its duty-cycle limit for the region is reached (Routing.Error DUTY_CYCLE_LIMIT); ` +
        'the frame was not sent: wait for airtime to free up, and check that the scheduler uses the same region rules as the node',
        { device: dev, packetId: id, routingError: name })
      : reason === RoutingError.TOO_LARGE
        ? new TrickleError('ERR_MODEM_MTU', 'modem', `the Meshtastic node on ${dev} refused packet 0x${id.toString(16)} as too large (Routing.Error TOO_LARGE); lower maxFrameLen`,
          { device: dev, packetId: id, routingError: name })
        : new TrickleError('ERR_MODEM_DEVICE', 'modem', `the Meshtastic node on ${dev} refused packet 0x${id.toString(16)}: Routing.Error ${name} (${reason}, via ${how})`,
          { device: dev, packetId: id, routingError: name });
    const p = this.pendingSends.get(id);
    if (p) {
      this.pendingSends.delete(id);
      p.timer.cancel();
      p.reject(err);
      return;
    }
    if (this.accepted.includes(id)) this.drop(err.code, `${err.message} (after the node had accepted it: the frame is lost)`, { ...err.detail, late: true });
  }

  private onPacket(p: MeshPacket): void {
    const me = this.nodeNum;
    const c = this.config;
    const d = p.decoded;
    if (d && d.portnum === PortNum.ROUTING_APP && d.requestId !== undefined && (me === undefined || p.to === me)) {
      let reason: number;
      try { reason = decodeRoutingError(d.payload); } catch (e) { this.dropError(e as WireError); return; }
      if (reason !== RoutingError.NONE) this.fail(d.requestId, reason, 'routing NAK');
      return; // an ACK (NONE) needs no action: send already resolved on QueueStatus
    }
    const detail = { fromNode: p.from, to: p.to, portnum: d?.portnum, channel: p.channel, len: d?.payload.length ?? p.encrypted?.length ?? 0 };
    if (!d) { this.drop('ERR_MODEM_NOT_OURS', `encrypted packet from !${hex8(p.from)} on a channel this node has no key for; dropped`, detail); return; }
    if (d.portnum !== PortNum.PRIVATE_APP) { this.drop('ERR_MODEM_NOT_OURS', `mesh packet from !${hex8(p.from)} on port ${d.portnum}, not PRIVATE_APP (256); dropped`, detail); return; }
    const toUs = p.to === me || (c.destination === BROADCAST_NUM && p.to === BROADCAST_NUM);
    const fromPeer = p.from !== me && (c.peer === undefined || p.from === c.peer);
    if (p.channel !== c.channel || !toUs || !fromPeer) {
      this.drop('ERR_MODEM_NOT_OURS',
        `PRIVATE_APP packet !${hex8(p.from)} → !${hex8(p.to)} on channel ${p.channel} is not for this link ` +
        `(${c.peer === undefined ? 'any node' : `!${hex8(c.peer)}`} → ${me === undefined ? '?' : `!${hex8(me)}`}, channel ${c.channel}); dropped`, detail);
      return;
    }
    if (d.payload.length === 0) { this.drop('ERR_FRAME_EMPTY', `empty PRIVATE_APP packet from !${hex8(p.from)}; dropped`, detail); return; }
    const meta: MeshtasticReceivedFrameMeta = { fromNode: p.from, packetId: p.id };
    // rx_rssi 0 and rx_snr 0 mean "not measured" (a packet that came over MQTT or from the node itself).
    if (p.rxRssi !== undefined && p.rxRssi !== 0) meta.rssiDbm = p.rxRssi;
    if (p.rxSnr !== undefined && (p.rxSnr !== 0 || meta.rssiDbm !== undefined)) meta.snrDb = p.rxSnr;
    meta.hopLimit = p.hopLimit ?? 0; // proto3: absent means 0
    this.counters.framesReceived++;
    for (const l of this.frameListeners) l(d.payload, meta);
  }
}

function hex8(n: number): string { return (n >>> 0).toString(16).padStart(8, '0'); }

/** Validate now; return a `createModem: (link) => Modem` hook. `send` waits for the handshake. */
export function meshtasticModemFactory(options: MeshtasticModemOptions): (link: Link) => MeshtasticModem {
  resolveMeshtasticModemConfig(options);
  return (link) => new MeshtasticModem(link, options);
}

export interface OpenMeshtasticModemOptions extends MeshtasticModemOptions {
  /** Default 115200 (the firmware's serial API speed). */
  baudRate?: number;
}

/** Open `path` and run the config handshake; also how the owner reopens after onClose. */
export async function openMeshtasticModem(path: string, options: OpenMeshtasticModemOptions): Promise<MeshtasticModem> {
  const { baudRate = 115_200, ...modemOptions } = options;
  resolveMeshtasticModemConfig(modemOptions);
  const link = await openSerialLink(path, { baudRate });
  return MeshtasticModem.start(link, modemOptions);
}
