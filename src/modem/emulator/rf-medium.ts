/**
 * A simulated LoRa radio channel joining several emulated modems (see emulated-modem.ts).
 * The model is documented in firmware-protocol/spec/04-emulator.md; in short:
 *
 * - Time on air: `loraAirtime` of src/scheduler/airtime.ts (the Semtech formula) for the
 *   sender's settings. A transmission occupies [startMs, startMs + airtimeMs).
 * - Who hears what: a node hears a transmission when it is configured for the same SF,
 *   bandwidth, sync word and IQ polarity, and the carriers are closer than half the sum of
 *   the two bandwidths (the channels overlap). Other SFs are treated as orthogonal
 *   (LoRa's quasi-orthogonality; the ~16–20 dB inter-SF rejection is not modelled).
 * - Path loss: log-distance model, PL(d) = FSPL(d0, f) + 10·n·log10(d / d0) + X_σ, with
 *   FSPL(d0, f) = 20·log10(4π·d0·f / c) (Friis), d0 = 1 m, exponent n (2 free space,
 *   2.7–3.5 suburban/urban, default 2.7), X_σ optional log-normal shadowing (Gaussian in dB,
 *   σ default 0). RSSI = txPowerDbm − PL(d) (antenna gains 0 dBi, no cable loss).
 * - Noise and SNR: noise floor N = −174 dBm/Hz + 10·log10(BW) + NF (NF default 6 dB, the
 *   SX126x/SX127x figure); SNR = RSSI − N. A frame is lost ("weakSignal") below the chip's
 *   demodulation SNR limit for its SF (SX1276 datasheet table 13; SX1261/2 §6.1.4):
 *   SF5 −2.5, SF6 −5, SF7 −7.5, SF8 −10, SF9 −12.5, SF10 −15, SF11 −17.5, SF12 −20 dB.
 * - Half duplex: a node that transmits at any moment of an incoming frame loses it.
 * - Collisions: two transmissions that overlap in time and channel with the same SF destroy
 *   each other at every receiver. With `capture` on, a receiver still decodes the frame
 *   whose RSSI exceeds the summed power of all overlapping interferers by ≥ thresholdDb
 *   (default 6 dB), whatever the timing (real chips also need the stronger preamble first;
 *   not modelled).
 * - Random loss: each (frame, receiver) pair is lost independently with probability lossRate.
 * - Frequency error: each node has a crystal offset in ppm; the receiver reports
 *   (ppm_tx − ppm_rx) · f / 10^6 Hz.
 * - Reported values are quantised as a chip does: RSSI to 1 dBm, SNR to 0.25 dB.
 *
 * Runs on an injected Clock: the real clock for the demo, a fake one in tests.
 */
import type { NativeRadioSettings } from '../native/native-modem.ts';
import { systemClock, type Clock, type TimerHandle } from '../../util/clock.ts';
import { loraAirtime, exactLoraBandwidthHz, type LoraChip } from '../../scheduler/airtime.ts';

/** The radio settings a board on the medium runs (the native protocol's own settings type). */
export type RfRadioConfig = NativeRadioSettings;

export interface RfPosition { xM: number; yM: number }

export interface RfReceiveMeta {
  rssiDbm: number;
  snrDb: number;
  frequencyErrorHz: number;
  airtimeMs: number;
}

export type RfLossReason = 'random' | 'collision' | 'halfDuplex' | 'weakSignal';

export type RfEvent =
  | { kind: 'txStart'; id: number; from: string; len: number; airtimeMs: number; atMs: number; /** The frame's first byte (a shared channel's link address). */ firstByte: number }
  | { kind: 'txEnd'; id: number; from: string; atMs: number }
  | { kind: 'delivered'; id: number; from: string; to: string; rssiDbm: number; snrDb: number }
  | { kind: 'lost'; id: number; from: string; to: string; reason: RfLossReason };

export interface RfMediumStats {
  transmissions: number;
  delivered: number;
  lost: Record<RfLossReason, number>;
}

export interface RfMediumOptions {
  clock?: Clock;
  /** Uniform random numbers in [0, 1). Default: a mulberry32 PRNG seeded with `seed`. */
  random?: () => number;
  /** Seed for the default PRNG (default 1), so runs are reproducible. */
  seed?: number;
  /** Probability (0..1) that a frame is lost at one receiver for no other reason. Default 0. */
  lossRate?: number;
  /** Path-loss exponent n of the log-distance model. Default 2.7. */
  pathLossExponent?: number;
  /** Standard deviation of log-normal shadowing in dB. Default 0 (deterministic RSSI). */
  shadowingSigmaDb?: number;
  /** Receiver noise figure in dB. Default 6. */
  noiseFigureDb?: number;
  /** Capture effect: a frame this many dB above all interferers survives a collision. Default off. */
  capture?: false | { thresholdDb?: number };
  /**
   * Extra delay before a transmission is declared over, after rounding its airtime up to whole
   * ms. Node timers and Date.now() have 1 ms resolution and may fire up to ~1 ms early against
   * a finer clock, so on the real clock (the default when no clock is injected: 1 ms) TX_DONE
   * would otherwise sometimes precede the true airtime. The reported airtime stays exact.
   * Default 0 with an injected clock.
   */
  realTimeGuardMs?: number;
}

export interface RfNodeOptions {
  name: string;
  positionM?: RfPosition;
  /** Crystal offset in parts per million (default 0). */
  crystalPpm?: number;
  /** Formula family for the airtime (SF5/6 differ). Default 'sx126x'. */
  chip?: LoraChip;
  /** Current settings; undefined when the radio is not configured (it hears nothing). */
  config(): RfRadioConfig | undefined;
  onReceive(frame: Uint8Array, meta: RfReceiveMeta): void;
}

interface Transmission {
  id: number;
  node: RfNode;
  frame: Uint8Array;
  config: RfRadioConfig;
  startMs: number;
  endMs: number;
  airtimeMs: number;
}

/** SNR below which the chip cannot demodulate, by SF (see the module comment). */
export const DEMOD_SNR_LIMIT_DB: Readonly<Record<number, number>> = {
  5: -2.5, 6: -5, 7: -7.5, 8: -10, 9: -12.5, 10: -15, 11: -17.5, 12: -20,
};

const SPEED_OF_LIGHT_M_S = 299_792_458;
const REFERENCE_DISTANCE_M = 1;

/** mulberry32: a small seeded PRNG (public domain), so a failing run can be replayed. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One radio on the medium. Created by `RfMedium.join`. */
export class RfNode {
  position: RfPosition;
  readonly crystalPpm: number;
  readonly chip: LoraChip;
  private txEnd: TimerHandle | undefined;
  private left = false;

  constructor(private readonly medium: RfMedium, readonly options: RfNodeOptions) {
    this.position = options.positionM ?? { xM: 0, yM: 0 };
    this.crystalPpm = options.crystalPpm ?? 0;
    this.chip = options.chip ?? 'sx126x';
  }

  get name(): string { return this.options.name; }
  get transmitting(): boolean { return this.txEnd !== undefined; }

  /** Time on air of a frame of `len` bytes with `config` (Semtech formula, src/scheduler/airtime.ts). */
  airtimeMs(len: number, config: RfRadioConfig): number {
    return loraAirtime({
      payloadBytes: len, sf: config.sf, bandwidthHz: config.bandwidthHz, codingRate: config.codingRate,
      preambleSymbols: config.preambleSymbols, explicitHeader: !config.implicitHeader, crc: config.crcOn, chip: this.chip,
    }).airtimeMs;
  }

  /**
   * Start transmitting `frame` now with the node's current config; `onDone(airtimeMs)` runs when
   * the last symbol has left. Throws if the node is already transmitting or not configured.
   */
  transmit(frame: Uint8Array, onDone: (airtimeMs: number) => void): number {
    const config = this.options.config();
    if (config === undefined) throw new Error(`${this.name}: radio not configured`);
    if (this.transmitting) throw new Error(`${this.name}: already transmitting`);
    if (this.left) throw new Error(`${this.name}: left the medium`);
    const airtimeMs = this.airtimeMs(frame.length, config);
    const tx = this.medium.startTransmission(this, frame.slice(), { ...config }, airtimeMs);
    const guard = this.medium.realTimeGuardMs;
    this.txEnd = this.medium.clock.setTimer(guard > 0 ? Math.ceil(airtimeMs) + guard : airtimeMs, () => {
      this.txEnd = undefined;
      this.medium.endTransmission(tx);
      onDone(airtimeMs);
    });
    return airtimeMs;
  }

  /**
   * Channel activity detection for `symbols` symbols: `onDone(detected, durationMs)` — detected
   * when a transmission this node could demodulate overlaps the detection window.
   */
  cad(symbols: number, onDone: (detected: boolean, durationMs: number) => void): TimerHandle {
    const config = this.options.config();
    if (config === undefined) throw new Error(`${this.name}: radio not configured`);
    const symbolMs = (2 ** config.sf / exactLoraBandwidthHz(config.bandwidthHz)) * 1000;
    // Semtech AN1200.48: CAD takes about (symbols + 0.5) symbol times (detection plus processing).
    const durationMs = (symbols + 0.5) * symbolMs;
    const startMs = this.medium.clock.now();
    return this.medium.clock.setTimer(durationMs, () => {
      onDone(this.medium.activityDetected(this, config, startMs, startMs + durationMs), durationMs);
    });
  }

  /** Leave the medium (a transmission in progress still completes on air, but onDone is not called). */
  leave(): void {
    this.left = true;
    this.txEnd?.cancel();
    this.txEnd = undefined;
    this.medium.remove(this);
  }
}

export class RfMedium {
  readonly clock: Clock;
  readonly lossRate: number;
  /** @internal */
  readonly realTimeGuardMs: number;
  private readonly random: () => number;
  private readonly pathLossExponent: number;
  private readonly shadowingSigmaDb: number;
  private readonly noiseFigureDb: number;
  private readonly captureThresholdDb: number | undefined;
  private readonly nodes = new Set<RfNode>();
  private active: Transmission[] = [];
  /** Finished transmissions that may still overlap an active one. */
  private recent: Transmission[] = [];
  private nextId = 1;
  private readonly listeners: ((e: RfEvent) => void)[] = [];
  private readonly counters: RfMediumStats = {
    transmissions: 0, delivered: 0, lost: { random: 0, collision: 0, halfDuplex: 0, weakSignal: 0 },
  };

  constructor(options: RfMediumOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? mulberry32(options.seed ?? 1);
    const lossRate = options.lossRate ?? 0;
    if (!(lossRate >= 0 && lossRate <= 1)) throw new RangeError(`lossRate must be 0..1, got ${String(lossRate)}`);
    this.lossRate = lossRate;
    this.pathLossExponent = options.pathLossExponent ?? 2.7;
    this.shadowingSigmaDb = options.shadowingSigmaDb ?? 0;
    this.noiseFigureDb = options.noiseFigureDb ?? 6;
    this.captureThresholdDb = options.capture ? (options.capture.thresholdDb ?? 6) : undefined;
    this.realTimeGuardMs = options.realTimeGuardMs ?? (options.clock === undefined ? 1 : 0);
  }

  join(options: RfNodeOptions): RfNode {
    const node = new RfNode(this, options);
    this.nodes.add(node);
    return node;
  }

  onEvent(listener: (e: RfEvent) => void): void { this.listeners.push(listener); }

  stats(): RfMediumStats {
    return { ...this.counters, lost: { ...this.counters.lost } };
  }

  /** Mean received power at `to` from `from` transmitting with `txPowerDbm` at `frequencyHz` (no shadowing). */
  meanRssiDbm(from: RfPosition, to: RfPosition, txPowerDbm: number, frequencyHz: number): number {
    const d = Math.max(REFERENCE_DISTANCE_M, Math.hypot(from.xM - to.xM, from.yM - to.yM));
    const fsplD0 = 20 * Math.log10((4 * Math.PI * REFERENCE_DISTANCE_M * frequencyHz) / SPEED_OF_LIGHT_M_S);
    return txPowerDbm - (fsplD0 + 10 * this.pathLossExponent * Math.log10(d / REFERENCE_DISTANCE_M));
  }

  /** Thermal noise floor in dBm for a bandwidth. */
  noiseFloorDbm(bandwidthHz: number): number {
    return -174 + 10 * Math.log10(exactLoraBandwidthHz(bandwidthHz)) + this.noiseFigureDb;
  }

  /** @internal */
  remove(node: RfNode): void { this.nodes.delete(node); }

  /** @internal */
  startTransmission(node: RfNode, frame: Uint8Array, config: RfRadioConfig, airtimeMs: number): Transmission {
    const now = this.clock.now();
    const tx: Transmission = { id: this.nextId++, node, frame, config, startMs: now, endMs: now + airtimeMs, airtimeMs };
    this.active.push(tx);
    this.counters.transmissions++;
    this.emit({ kind: 'txStart', id: tx.id, from: node.name, len: frame.length, airtimeMs, atMs: now, firstByte: frame[0] ?? 0 });
    return tx;
  }

  /** @internal Decide, for every other node, whether it receives `tx`. */
  endTransmission(tx: Transmission): void {
    this.active = this.active.filter((t) => t !== tx);
    this.recent.push(tx);
    this.emit({ kind: 'txEnd', id: tx.id, from: tx.node.name, atMs: this.clock.now() });
    const all = [...this.recent, ...this.active];
    const overlapping = all.filter((t) => t !== tx && overlapsInTime(t, tx));
    for (const rx of [...this.nodes]) {
      if (rx === tx.node) continue;
      const rxConfig = rx.options.config();
      if (rxConfig === undefined || !hears(rxConfig, tx.config)) continue;
      const outcome = this.receiveOutcome(tx, rx, overlapping);
      if (typeof outcome === 'string') {
        this.counters.lost[outcome]++;
        this.emit({ kind: 'lost', id: tx.id, from: tx.node.name, to: rx.name, reason: outcome });
        continue;
      }
      this.counters.delivered++;
      this.emit({ kind: 'delivered', id: tx.id, from: tx.node.name, to: rx.name, rssiDbm: outcome.rssiDbm, snrDb: outcome.snrDb });
      rx.options.onReceive(tx.frame.slice(), outcome);
    }
    // Keep only finished transmissions that an active (or future) one could still overlap.
    const horizon = Math.min(this.clock.now(), ...this.active.map((t) => t.startMs));
    this.recent = this.recent.filter((t) => t.endMs > horizon);
  }

  /** @internal */
  activityDetected(node: RfNode, config: RfRadioConfig, fromMs: number, toMs: number): boolean {
    return [...this.recent, ...this.active].some((t) => t.node !== node && t.startMs < toMs && fromMs < t.endMs &&
      hears(config, t.config) &&
      this.meanRssiDbm(t.node.position, node.position, t.config.txPowerDbm, t.config.frequencyHz) - this.noiseFloorDbm(config.bandwidthHz)
        >= (DEMOD_SNR_LIMIT_DB[config.sf] ?? 0));
  }

  private receiveOutcome(tx: Transmission, rx: RfNode, overlapping: Transmission[]): RfLossReason | RfReceiveMeta {
    if (overlapping.some((t) => t.node === rx)) return 'halfDuplex';
    const rssi = this.rssiAt(tx, rx);
    const noise = this.noiseFloorDbm(tx.config.bandwidthHz);
    const snr = rssi - noise;
    if (snr < (DEMOD_SNR_LIMIT_DB[tx.config.sf] ?? 0)) return 'weakSignal';
    const interferers = overlapping.filter((t) => t.config.sf === tx.config.sf && channelsOverlap(t.config, tx.config));
    if (interferers.length > 0) {
      if (this.captureThresholdDb === undefined) return 'collision';
      const interferenceMw = interferers.reduce((sum, t) => sum + 10 ** (this.rssiAt(t, rx) / 10), 0);
      if (rssi - 10 * Math.log10(interferenceMw) < this.captureThresholdDb) return 'collision';
    }
    if (this.lossRate > 0 && this.random() < this.lossRate) return 'random';
    return {
      rssiDbm: Math.round(rssi),
      snrDb: Math.round(snr * 4) / 4,
      frequencyErrorHz: Math.round(((tx.node.crystalPpm - rx.crystalPpm) * tx.config.frequencyHz) / 1e6),
      airtimeMs: tx.airtimeMs,
    };
  }

  private rssiAt(tx: Transmission, rx: RfNode): number {
    const mean = this.meanRssiDbm(tx.node.position, rx.position, tx.config.txPowerDbm, tx.config.frequencyHz);
    return this.shadowingSigmaDb > 0 ? mean + this.shadowingSigmaDb * this.gaussian() : mean;
  }

  /** Standard normal deviate (Box–Muller). */
  private gaussian(): number {
    const u = Math.max(this.random(), Number.MIN_VALUE);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.random());
  }

  private emit(e: RfEvent): void { for (const l of this.listeners) l(e); }
}

function overlapsInTime(a: Transmission, b: Transmission): boolean {
  return a.startMs < b.endMs && b.startMs < a.endMs;
}

function channelsOverlap(a: RfRadioConfig, b: RfRadioConfig): boolean {
  return Math.abs(a.frequencyHz - b.frequencyHz) < (a.bandwidthHz + b.bandwidthHz) / 2;
}

/** Could a receiver with `rx` settings demodulate a transmission made with `tx` settings? */
function hears(rx: RfRadioConfig, tx: RfRadioConfig): boolean {
  return rx.sf === tx.sf && exactLoraBandwidthHz(rx.bandwidthHz) === exactLoraBandwidthHz(tx.bandwidthHz) &&
    rx.syncWord === tx.syncWord && rx.invertIq === tx.invertIq && rx.implicitHeader === tx.implicitHeader &&
    channelsOverlap(rx, tx);
}
