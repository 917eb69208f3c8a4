/**
 * An emulated RNode: a board running the RNode firmware in host-controlled mode, speaking
 * the RNode command set (src/modem/rnode/rnode-protocol.ts) byte for byte on a Link (the
 * device side of a PTY pair, or a memory link in tests), transmitting on the simulated
 * RfMedium of rf-medium.ts (time on air from src/scheduler/airtime.ts, on the medium's clock:
 * the real one or a FakeClock).
 *
 * Behaviour modelled on the protocol description (not on the GPL firmware source):
 * - CMD_DETECT 0x73 → 0x46; CMD_FW_VERSION → [major, minor]; CMD_PLATFORM / CMD_MCU answered.
 * - Every setting is applied as the chip can and echoed with the value in force: TX power is
 *   clamped to the board's range, the bandwidth snapped to the next LoRa bandwidth, SF and CR
 *   clamped, an out-of-range frequency ignored (the old one echoed). `misreport` makes the
 *   board take and echo another value (the read-back mismatch test).
 * - CMD_RADIO_STATE on → the radio joins the channel (ERROR_INITRADIO if frequency or
 *   bandwidth were never set); off → it hears and sends nothing.
 * - CMD_DATA: queued (ERROR_QUEUE_FULL past `queueLen`) and transmitted as the firmware does
 *   on air: one LoRa packet with a one-byte header (random sequence nibble) up to 254 bytes,
 *   two packets with the split flag above; the receiving emulator reassembles and sends
 *   CMD_STAT_RSSI, CMD_STAT_SNR, then CMD_DATA. CMD_READY after each packet has left.
 * - Airtime locks: CMD_ST_ALOCK / CMD_LT_ALOCK (percent × 100); while own airtime over the
 *   last 15 s / 1 h is at or above a (non-zero) lock, queued packets wait.
 * - CMD_STAT_CHTM every `statsIntervalMs` while the radio is on (11-byte form).
 * - The preamble follows the firmware's rule of thumb (≥ 18 symbols, ≥ 15 ms): approximate.
 *
 * Test hooks: `misreport`, `reboot()` (sends CMD_RESET 0xF8 and forgets the settings),
 * `attach(link, { reboot })` (USB re-enumeration), `detach()`, `shutdown()`.
 */
import type { Link } from '../../link/link.ts';
import type { TimerHandle } from '../../util/clock.ts';
import { LORA_BANDWIDTHS_HZ, type LoraChip } from '../../scheduler/airtime.ts';
import {
  DETECT_REQ, DETECT_RESP, RADIO_STATE_ASK, RADIO_STATE_OFF, RADIO_STATE_ON, RNODE_HW_MTU, RNODE_LONG_TERM_WINDOW_MS,
  RNODE_SHORT_TERM_WINDOW_MS, RNodeAirReassembler, RNodeCmd, RNodeDecoder, RNodeError, decodeAirtimeLock, decodeInt8,
  encodeAirtimeLock, encodeChannelStats, encodeRNodeFrame, encodeRssi, encodeSnr, encodeTxPower, readU32be, rnodeAirPackets, u32be,
} from '../rnode/rnode-protocol.ts';
import type { RfMedium, RfNode, RfPosition, RfRadioConfig } from './rf-medium.ts';

export interface RNodeEmulatorSettings {
  frequencyHz: number | undefined;
  bandwidthHz: number | undefined;
  txPowerDbm: number;
  sf: number;
  codingRate: number;
  shortTermPct: number;
  longTermPct: number;
}

export interface RNodeEmulatorOptions {
  name: string;
  positionM?: RfPosition;
  crystalPpm?: number;
  /** Radio chip family: SX126x (default) or SX127x. */
  chip?: LoraChip;
  firmwareVersion?: readonly [number, number];
  txPowerMinDbm?: number;
  txPowerMaxDbm?: number;
  /** The board takes and echoes these values instead of what it is asked (to test read-back checks). */
  misreport?: Partial<Record<'frequencyHz' | 'bandwidthHz' | 'txPowerDbm' | 'sf' | 'codingRate' | 'shortTermPct' | 'longTermPct', number>>;
  /** CMD_STAT_CHTM period while the radio is on; 0 turns the reports off. Default 1000 ms. */
  statsIntervalMs?: number;
  /** Packets the firmware holds before ERROR_QUEUE_FULL. Default 8. */
  queueLen?: number;
  /** Random sequence nibbles (default Math.random). */
  random?: () => number;
}

const POWER_ON: RNodeEmulatorSettings = {
  frequencyHz: undefined, bandwidthHz: undefined, txPowerDbm: 2, sf: 7, codingRate: 5, shortTermPct: 0, longTermPct: 0,
};

/** Preamble symbols the firmware programs: at least 18 symbols and at least 15 ms (approximation of its rule). */
export function rnodePreambleSymbols(sf: number, bandwidthHz: number): number {
  const symbolMs = (2 ** sf / bandwidthHz) * 1000;
  return Math.max(18, Math.ceil(15 / symbolMs));
}

interface AirtimeEntry { atMs: number; airtimeMs: number }

export class RNodeEmulator {
  readonly node: RfNode;
  readonly options: Required<Omit<RNodeEmulatorOptions, 'misreport' | 'positionM' | 'crystalPpm'>> & Pick<RNodeEmulatorOptions, 'misreport'>;
  private link: Link | undefined;
  private decoder = new RNodeDecoder({ maxFrameLen: RNODE_HW_MTU });
  private settings: RNodeEmulatorSettings = { ...POWER_ON };
  private radioOn = false;
  private readonly queue: Uint8Array[] = [];
  private sending = false;
  private lockTimer: TimerHandle | undefined;
  private statsTimer: TimerHandle | undefined;
  private ownTx: AirtimeEntry[] = [];
  private heard: AirtimeEntry[] = [];
  private readonly reassembler = new RNodeAirReassembler();
  /** Counters for tests. */
  readonly counters = { txPackets: 0, rxPackets: 0, lockWaits: 0, queueFull: 0, ignoredWhileOff: 0 };

  constructor(private readonly medium: RfMedium, options: RNodeEmulatorOptions) {
    const chip = options.chip ?? 'sx126x';
    this.options = {
      name: options.name,
      chip,
      firmwareVersion: options.firmwareVersion ?? [1, 82],
      txPowerMinDbm: options.txPowerMinDbm ?? (chip === 'sx127x' ? 2 : -9),
      txPowerMaxDbm: options.txPowerMaxDbm ?? (chip === 'sx127x' ? 17 : 22),
      statsIntervalMs: options.statsIntervalMs ?? 1_000,
      queueLen: options.queueLen ?? 8,
      random: options.random ?? Math.random,
      ...(options.misreport ? { misreport: options.misreport } : {}),
    };
    this.node = medium.join({
      name: options.name,
      ...(options.positionM ? { positionM: options.positionM } : {}),
      ...(options.crystalPpm !== undefined ? { crystalPpm: options.crystalPpm } : {}),
      chip,
      config: () => this.rfConfig(),
      onReceive: (frame, meta) => {
        this.heard.push({ atMs: this.medium.clock.now(), airtimeMs: meta.airtimeMs });
        const whole = this.reassembler.push(frame);
        if (!whole) return;
        this.counters.rxPackets++;
        this.send(RNodeCmd.STAT_RSSI, Uint8Array.of(encodeRssi(meta.rssiDbm)));
        this.send(RNodeCmd.STAT_SNR, Uint8Array.of(encodeSnr(meta.snrDb)));
        this.send(RNodeCmd.DATA, whole);
      },
    });
  }

  get name(): string { return this.options.name; }
  /** Settings in force (undefined while the radio is off). */
  get radio(): RNodeEmulatorSettings | undefined { return this.radioOn ? { ...this.settings } : undefined; }
  get airtimeLocks(): { shortTermPct: number; longTermPct: number } {
    return { shortTermPct: this.settings.shortTermPct, longTermPct: this.settings.longTermPct };
  }

  /** Own airtime share over the last 15 s and the last hour, percent. */
  airtimeUsePct(): { shortTerm: number; longTerm: number } {
    return {
      shortTerm: this.share(this.ownTx, RNODE_SHORT_TERM_WINDOW_MS),
      longTerm: this.share(this.ownTx, RNODE_LONG_TERM_WINDOW_MS),
    };
  }

  attach(link: Link, options: { reboot?: boolean } = {}): void {
    if (options.reboot) this.resetState();
    this.link = link;
    this.decoder = new RNodeDecoder({ maxFrameLen: RNODE_HW_MTU });
    link.onData((chunk) => { if (this.link === link) this.onBytes(chunk); });
    link.onClose(() => { if (this.link === link) this.link = undefined; });
  }

  detach(): void { this.link = undefined; }

  /** The firmware restarted: settings lost, CMD_RESET 0xF8 announced. */
  reboot(): void {
    this.resetState();
    this.send(RNodeCmd.RESET, Uint8Array.of(0xf8));
  }

  shutdown(): void {
    this.stopTimers();
    this.node.leave();
    this.link = undefined;
  }

  private resetState(): void {
    this.settings = { ...POWER_ON };
    this.radioOn = false;
    this.queue.length = 0;
    this.ownTx = [];
    this.heard = [];
    this.stopTimers();
  }

  private stopTimers(): void {
    this.lockTimer?.cancel();
    this.lockTimer = undefined;
    this.statsTimer?.cancel();
    this.statsTimer = undefined;
  }

  private rfConfig(): RfRadioConfig | undefined {
    const s = this.settings;
    if (!this.radioOn || s.frequencyHz === undefined || s.bandwidthHz === undefined) return undefined;
    return {
      frequencyHz: s.frequencyHz, bandwidthHz: s.bandwidthHz, sf: s.sf, codingRate: s.codingRate, txPowerDbm: s.txPowerDbm,
      preambleSymbols: rnodePreambleSymbols(s.sf, s.bandwidthHz), syncWord: 0x12, crcOn: true, implicitHeader: false, invertIq: false,
    };
  }

  private send(cmd: number, data: Uint8Array): void {
    const link = this.link;
    if (!link) return;
    link.write(encodeRNodeFrame(cmd, data)).catch(() => { /* the link reports its own close */ });
  }

  private onBytes(chunk: Uint8Array): void {
    const { frames } = this.decoder.push(chunk);
    for (const f of frames) this.handle(f.cmd, f.data);
  }

  private misreported<K extends keyof NonNullable<RNodeEmulatorOptions['misreport']>>(key: K, value: number): number {
    const m = this.options.misreport?.[key];
    return m === undefined ? value : m;
  }

  private handle(cmd: number, d: Uint8Array): void {
    const s = this.settings;
    const o = this.options;
    switch (cmd) {
      case RNodeCmd.DETECT:
        if (d[0] === DETECT_REQ) this.send(RNodeCmd.DETECT, Uint8Array.of(DETECT_RESP));
        return;
      case RNodeCmd.FW_VERSION: this.send(RNodeCmd.FW_VERSION, Uint8Array.from(o.firmwareVersion)); return;
      case RNodeCmd.PLATFORM: this.send(RNodeCmd.PLATFORM, Uint8Array.of(0x80)); return; // ESP32
      case RNodeCmd.MCU: this.send(RNodeCmd.MCU, Uint8Array.of(0x81)); return;
      case RNodeCmd.FREQUENCY: {
        const f = readU32be(d);
        const [lo, hi] = o.chip === 'sx127x' ? [137_000_000, 1_020_000_000] : [150_000_000, 960_000_000];
        if (f !== undefined && f >= lo && f <= hi) s.frequencyHz = this.misreported('frequencyHz', f);
        this.send(RNodeCmd.FREQUENCY, u32be(s.frequencyHz ?? 0));
        return;
      }
      case RNodeCmd.BANDWIDTH: {
        const bw = readU32be(d);
        if (bw !== undefined) {
          const snapped = LORA_BANDWIDTHS_HZ.find((b) => b.nominalHz >= bw) ?? LORA_BANDWIDTHS_HZ[LORA_BANDWIDTHS_HZ.length - 1]!;
          s.bandwidthHz = this.misreported('bandwidthHz', snapped.nominalHz);
        }
        this.send(RNodeCmd.BANDWIDTH, u32be(s.bandwidthHz ?? 0));
        return;
      }
      case RNodeCmd.TXPOWER:
        if (d.length === 1) s.txPowerDbm = this.misreported('txPowerDbm', Math.min(o.txPowerMaxDbm, Math.max(o.txPowerMinDbm, decodeInt8(d[0]!))));
        this.send(RNodeCmd.TXPOWER, encodeTxPower(s.txPowerDbm));
        return;
      case RNodeCmd.SF:
        if (d.length === 1) s.sf = this.misreported('sf', Math.min(12, Math.max(o.chip === 'sx127x' ? 6 : 5, d[0]!)));
        this.send(RNodeCmd.SF, Uint8Array.of(s.sf));
        return;
      case RNodeCmd.CR:
        if (d.length === 1) s.codingRate = this.misreported('codingRate', Math.min(8, Math.max(5, d[0]!)));
        this.send(RNodeCmd.CR, Uint8Array.of(s.codingRate));
        return;
      case RNodeCmd.ST_ALOCK: {
        const v = decodeAirtimeLock(d);
        if (v !== undefined) s.shortTermPct = this.misreported('shortTermPct', v);
        this.send(RNodeCmd.ST_ALOCK, encodeAirtimeLock(s.shortTermPct));
        this.pump();
        return;
      }
      case RNodeCmd.LT_ALOCK: {
        const v = decodeAirtimeLock(d);
        if (v !== undefined) s.longTermPct = this.misreported('longTermPct', v);
        this.send(RNodeCmd.LT_ALOCK, encodeAirtimeLock(s.longTermPct));
        this.pump();
        return;
      }
      case RNodeCmd.RADIO_STATE: {
        const want = d[0];
        if (want === RADIO_STATE_ON) {
          if (s.frequencyHz === undefined || s.bandwidthHz === undefined) { this.send(RNodeCmd.ERROR, Uint8Array.of(RNodeError.INITRADIO)); return; }
          this.radioOn = true;
          this.scheduleStats();
        } else if (want === RADIO_STATE_OFF) {
          this.radioOn = false;
          this.statsTimer?.cancel();
          this.statsTimer = undefined;
        } else if (want !== RADIO_STATE_ASK) {
          return;
        }
        this.send(RNodeCmd.RADIO_STATE, Uint8Array.of(this.radioOn ? RADIO_STATE_ON : RADIO_STATE_OFF));
        return;
      }
      case RNodeCmd.DATA:
        if (!this.radioOn) { this.counters.ignoredWhileOff++; return; }
        if (d.length === 0) return;
        if (this.queue.length >= o.queueLen) { this.counters.queueFull++; this.send(RNodeCmd.ERROR, Uint8Array.of(RNodeError.QUEUE_FULL)); return; }
        this.queue.push(d);
        this.pump();
        return;
      case RNodeCmd.RESET:
        if (d[0] === 0xf8) this.reboot();
        return;
      case RNodeCmd.LEAVE:
      default:
        return; // unknown commands are ignored, as the firmware does
    }
  }

  private locked(): boolean {
    const { shortTerm, longTerm } = this.airtimeUsePct();
    const s = this.settings;
    return (s.shortTermPct > 0 && shortTerm >= s.shortTermPct) || (s.longTermPct > 0 && longTerm >= s.longTermPct);
  }

  /** Transmit the next queued packet if the radio is idle and not airtime-locked. */
  private pump(): void {
    if (this.sending || this.queue.length === 0 || !this.radioOn) return;
    if (this.locked()) {
      if (!this.lockTimer) {
        this.counters.lockWaits++;
        this.lockTimer = this.medium.clock.setTimer(100, () => { this.lockTimer = undefined; this.pump(); });
      }
      return;
    }
    const packet = this.queue.shift()!;
    const seq = Math.floor(this.options.random() * 16) & 0x0f;
    const parts = rnodeAirPackets(packet, seq);
    this.sending = true;
    const next = (i: number): void => {
      if (!this.radioOn || this.rfConfig() === undefined) { this.sending = false; return; }
      this.node.transmit(parts[i]!, (airtimeMs) => {
        this.ownTx.push({ atMs: this.medium.clock.now(), airtimeMs });
        if (i + 1 < parts.length) { next(i + 1); return; }
        this.counters.txPackets++;
        this.sending = false;
        this.send(RNodeCmd.READY, Uint8Array.of(0x01));
        this.pump();
      });
    };
    next(0);
  }

  private share(entries: AirtimeEntry[], windowMs: number): number {
    const now = this.medium.clock.now();
    const from = now - windowMs;
    let ms = 0;
    for (const e of entries) {
      const start = e.atMs - e.airtimeMs;
      ms += Math.max(0, Math.min(e.atMs, now) - Math.max(start, from));
    }
    return (ms / windowMs) * 100;
  }

  private scheduleStats(): void {
    if (this.options.statsIntervalMs <= 0 || this.statsTimer) return;
    this.statsTimer = this.medium.clock.setTimer(this.options.statsIntervalMs, () => {
      this.statsTimer = undefined;
      if (!this.radioOn) return;
      const horizon = this.medium.clock.now() - RNODE_LONG_TERM_WINDOW_MS;
      this.ownTx = this.ownTx.filter((e) => e.atMs > horizon);
      this.heard = this.heard.filter((e) => e.atMs > horizon);
      const cfg = this.rfConfig();
      const noise = cfg ? this.medium.noiseFloorDbm(cfg.bandwidthHz) : -120;
      const own = this.airtimeUsePct();
      this.send(RNodeCmd.STAT_CHTM, encodeChannelStats({
        airtimeShortPct: own.shortTerm,
        airtimeLongPct: own.longTerm,
        channelLoadShortPct: Math.min(100, own.shortTerm + this.share(this.heard, RNODE_SHORT_TERM_WINDOW_MS)),
        channelLoadLongPct: Math.min(100, own.longTerm + this.share(this.heard, RNODE_LONG_TERM_WINDOW_MS)),
        currentRssiDbm: Math.round(noise),
        noiseFloorDbm: Math.round(noise),
      }));
      this.scheduleStats();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// On a real tty

/** Something that serves a protocol on a link (RNodeEmulator, MeshtasticEmulator). */
import { servePtyDevice, type PtyServedDevice, type PtyDevice } from './pty-device.ts';
export { servePtyDevice, type PtyServedDevice, type PtyDevice };

/** One emulated RNode on `medium`, reachable at a tty path. */
export async function startRNodeDevice(medium: RfMedium, options: RNodeEmulatorOptions & { dir?: string }): Promise<PtyDevice<RNodeEmulator>> {
  const { dir, ...emulatorOptions } = options;
  const emulator = new RNodeEmulator(medium, emulatorOptions);
  try {
    return await servePtyDevice(options.name, emulator, dir === undefined ? {} : { dir });
  } catch (e) {
    emulator.shutdown();
    throw e;
  }
}
